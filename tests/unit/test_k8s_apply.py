"""Table tests for the owned-field diff in k8s.py: when apply writes, and what the patch holds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deepseek_operator.k8s import LAST_APPLIED, apply_patch, is_subset, removals

SUBSET = [
    ("equal", {"a": 1}, {"a": 1}, True),
    ("live has server defaults", {"a": {"b": 1}}, {"a": {"b": 1, "c": 2}, "status": {}}, True),
    ("value differs", {"a": 1}, {"a": 2}, False),
    ("key missing live", {"a": 1}, {}, False),
    ("list items defaulted", {"p": [{"port": 80}]}, {"p": [{"port": 80, "protocol": "TCP"}]}, True),
    ("list length differs", {"p": [1, 2]}, {"p": [1]}, False),
    ("quantity as number vs string", {"replicas": 2}, {"replicas": "2"}, True),
]


@pytest.mark.parametrize(("desired", "live", "expected"), [c[1:] for c in SUBSET], ids=[c[0] for c in SUBSET])
def test_is_subset(desired: Any, live: Any, expected: bool) -> None:
    assert is_subset(desired, live) is expected


def annotated(live: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    return {**live, "metadata": {**live.get("metadata", {}), "annotations": {LAST_APPLIED: json.dumps(previous)}}}


def test_unchanged_object_needs_no_write() -> None:
    desired = {"metadata": {"name": "x"}, "spec": {"replicas": 2}}
    live = annotated({"metadata": {"name": "x", "uid": "u"}, "spec": {"replicas": 2, "paused": False}}, desired)
    assert apply_patch(desired, live) is None


def test_drifted_value_is_patched_back_and_annotation_refreshed() -> None:
    desired = {"metadata": {"name": "x"}, "spec": {"replicas": 2}}
    live = annotated({"metadata": {"name": "x"}, "spec": {"replicas": 5}}, desired)
    patch = apply_patch(desired, live)
    assert patch is not None and patch["spec"] == {"replicas": 2}
    assert json.loads(patch["metadata"]["annotations"][LAST_APPLIED]) == desired
    assert desired == {"metadata": {"name": "x"}, "spec": {"replicas": 2}}, "apply_patch mutated its input"


def test_field_dropped_from_desired_is_nulled_but_foreign_fields_stay() -> None:
    previous = {"spec": {"nodeSelector": {"gpu": "a100"}, "replicas": 1}}
    desired = {"spec": {"replicas": 1}}
    live = annotated({"spec": {"nodeSelector": {"gpu": "a100"}, "replicas": 1, "added_by_someone": True}}, previous)
    patch = apply_patch(desired, live)
    assert patch is not None and patch["spec"] == {"replicas": 1, "nodeSelector": None}


def test_removals_only_for_keys_still_live() -> None:
    assert removals({"a": 1, "b": {"c": 1, "d": 2}}, {"b": {"c": 1}}, {"a": 1, "b": {"c": 1, "d": 2}}) == \
        {"a": None, "b": {"d": None}}
    assert removals({"a": 1}, {}, {}) is None


def test_object_without_annotation_is_patched_once_to_record_it() -> None:
    desired = {"spec": {"replicas": 1}}
    patch = apply_patch(desired, {"spec": {"replicas": 1}})
    assert patch is not None and LAST_APPLIED in patch["metadata"]["annotations"]


async def test_an_unchanged_live_version_is_not_compared_again_but_a_new_one_is(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """K8s.apply remembers (resourceVersion, desired) found in sync: an idle reconcile skips the deep
    comparison, while any new live version (drift) or new desired object is compared, and patched."""
    from deepseek_operator import k8s as k8s_module

    desired = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "namespace": "d"},
               "spec": {"type": "ClusterIP"}}
    live = {**desired, "metadata": {**desired["metadata"], "resourceVersion": "7", "annotations": {
        k8s_module.LAST_APPLIED: k8s_module._canonical(desired)}}, "spec": {"type": "ClusterIP", "x": 1}}
    patches: list[Any] = []
    compared: list[Any] = []

    class Api(k8s_module.K8s):
        async def get(self, *_: Any, **__: Any) -> dict[str, Any]:
            return live

        async def patch(self, *args: Any, **_: Any) -> dict[str, Any]:
            patches.append(args)
            return {}

    def counting(*args: Any) -> Any:
        compared.append(args)
        return apply_patch(*args)

    api = Api(None)
    monkeypatch.setattr(k8s_module, "apply_patch", counting)
    assert await api.apply(desired) == "unchanged"
    assert await api.apply(desired) == "unchanged"
    assert len(compared) == 1  # the second time: same version, same desired object
    live["spec"] = {"type": "NodePort"}  # drift, and the server's new version
    live["metadata"]["resourceVersion"] = "8"
    assert await api.apply(desired) == "patched" and len(patches) == 1
    other = {**desired, "spec": {"type": "ClusterIP", "sessionAffinity": "None"}}
    live["spec"] = {"type": "ClusterIP"}
    live["metadata"]["resourceVersion"] = "9"
    assert await api.apply(desired) == "unchanged"
    assert await api.apply(other) == "patched"  # a new desired object at the same version is compared
