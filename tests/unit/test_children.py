"""The registry of owned child kinds (children.py): what prune and the informers get, and the docs' table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from deepseek_operator import children
from deepseek_operator.k8s import KINDS, Kind
from deepseek_operator.render import multinode
from deepseek_operator.render.common import Capabilities

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
BEGIN = ("<!-- children: generated from operator/deepseek_operator/children.py; "
         "tests/unit/test_children.py checks it -->")
END = "<!-- /children -->"
CORE = [("apps/v1", "Deployment"), ("v1", "Service"), ("policy/v1", "PodDisruptionBudget"),
        ("networking.k8s.io/v1", "Ingress"), ("networking.k8s.io/v1", "NetworkPolicy"), ("batch/v1", "Job"),
        ("v1", "ConfigMap"), ("v1", "PersistentVolumeClaim"), ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("rbac.authorization.k8s.io/v1", "Role"), ("v1", "ServiceAccount"),
        ("autoscaling/v2", "HorizontalPodAutoscaler")]
OPTIONAL = {"gateway_api": ("gateway.networking.k8s.io/v1", "HTTPRoute"),
            "service_monitor": ("monitoring.coreos.com/v1", "ServiceMonitor"),
            "prometheus_rule": ("monitoring.coreos.com/v1", "PrometheusRule"),
            "leader_worker_set": (multinode.API_VERSION, multinode.KIND),
            "keda": ("keda.sh/v1alpha1", "ScaledObject")}


def keys(kinds: list[Kind]) -> list[tuple[str, str]]:
    return [(k.api_version, k.kind) for k in kinds]


def test_without_optional_apis_prune_lists_the_core_kinds_in_order() -> None:
    assert keys(children.pruned(Capabilities())) == CORE


@pytest.mark.parametrize("capability", sorted(OPTIONAL))
def test_an_optional_kind_is_pruned_only_while_its_api_is_served(capability: str) -> None:
    caps = Capabilities(**{capability: True})  # type: ignore[arg-type]
    assert keys(children.pruned(caps)) == [*CORE, OPTIONAL[capability]]


def test_with_every_optional_api_prune_lists_them_all_after_the_core_kinds() -> None:
    caps = Capabilities(**{c: True for c in OPTIONAL})  # type: ignore[arg-type]
    assert keys(children.pruned(caps)) == [*CORE, *OPTIONAL.values()]


def test_pods_are_watched_but_never_pruned() -> None:
    pod = KINDS[("v1", "Pod")]
    assert pod in children.watched()
    assert pod not in children.pruned(Capabilities(**{c: True for c in OPTIONAL}))  # type: ignore[arg-type]


def test_informers_cover_every_child_once() -> None:
    watched, optional = children.watched(), list(children.optional_by_crd().values())
    assert sorted(keys(watched + optional)) == sorted({(c.kind.api_version, c.kind.kind) for c in children.CHILDREN})
    assert not set(watched) & set(optional)


def test_optional_kinds_name_their_crd_and_a_capabilities_field() -> None:
    fields = {f.name for f in dataclasses.fields(Capabilities)}
    for child in children.CHILDREN:
        assert (child.crd is None) == (child.capability is None), child
        if child.crd is not None:
            group = child.kind.api_version.rpartition("/")[0]
            assert child.crd == f"{child.kind.plural}.{group}", child
            assert child.capability in fields, child


def test_verbs_follow_pruned_and_patched() -> None:
    by_kind = {c.kind.kind: c.verbs() for c in children.CHILDREN}
    assert by_kind["Pod"] == ("list", "watch")
    assert by_kind["Job"] == ("list", "watch", "create", "delete")
    assert by_kind["Deployment"] == ("list", "watch", "create", "patch", "delete")


def test_the_docs_table_of_children_is_generated_from_the_registry() -> None:
    text = ARCHITECTURE.read_text()
    assert BEGIN in text and END in text, f"{ARCHITECTURE} lacks the children table's markers"
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].lstrip("\n")
    assert table == children.docs_table(), (
        f"the table of children in {ARCHITECTURE} is stale; replace it with children.docs_table():\n"
        + children.docs_table())
