"""Table tests of render/network_policy.py, validated with kubernetes-validate --strict."""

from __future__ import annotations

from typing import Any

import pytest
from upstream_crds import kube_validate

from deepseek_operator.api import parse_spec
from deepseek_operator.render.common import Owner
from deepseek_operator.render.network_policy import render_network_policy

OWNER = Owner(name="chat", namespace="llm", uid="uid-1")
INGRESS_NS = {"kubernetes.io/metadata.name": "ingress-nginx"}
MONITORING_NS = {"kubernetes.io/metadata.name": "monitoring"}
SAME_NAMESPACE: dict[str, Any] = {"podSelector": {}}


def _render(policy: dict[str, Any] | None) -> list[dict[str, Any]]:
    raw: dict[str, Any] = {"image": "img:1", "model": {"id": "m"}}
    if policy is not None:
        raw["networkPolicy"] = policy
    return render_network_policy(OWNER, parse_spec(raw))


# name -> (spec.networkPolicy, expected `from` peers, or None for no policy)
CASES = {
    "omitted: no policy": (None, None),
    "disabled: no policy": ({"enabled": False, "ingressNamespaceSelector": INGRESS_NS}, None),
    "enabled, no selectors: same namespace only": ({"enabled": True}, [SAME_NAMESPACE]),
    "ingress and monitoring namespaces": (
        {"enabled": True, "ingressNamespaceSelector": INGRESS_NS, "monitoringNamespaceSelector": MONITORING_NS},
        [
            {"namespaceSelector": {"matchLabels": INGRESS_NS}},
            {"namespaceSelector": {"matchLabels": MONITORING_NS}},
            SAME_NAMESPACE,
        ],
    ),
    "monitoring only: empty ingress selector is omitted, never match-all": (
        {"enabled": True, "monitoringNamespaceSelector": MONITORING_NS},
        [{"namespaceSelector": {"matchLabels": MONITORING_NS}}, SAME_NAMESPACE],
    ),
}


@pytest.mark.parametrize("policy,expected_peers", list(CASES.values()), ids=list(CASES))
def test_network_policy(policy: dict[str, Any] | None, expected_peers: list[dict[str, Any]] | None) -> None:
    objs = _render(policy)
    if expected_peers is None:
        assert objs == []
        return
    (obj,) = objs
    kube_validate(obj)
    assert obj["metadata"]["name"] == "chat"
    assert obj["metadata"]["namespace"] == "llm"
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert obj["spec"]["podSelector"] == {"matchLabels": {"deepseek.ai/deployment": "chat"}}
    assert obj["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = obj["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert rule["from"] == expected_peers


def test_no_empty_namespace_selector_ever() -> None:
    """An empty namespaceSelector matches every namespace: it would switch the policy off."""
    (obj,) = _render({"enabled": True, "ingressNamespaceSelector": {}, "monitoringNamespaceSelector": {}})
    for peer in obj["spec"]["ingress"][0]["from"]:
        assert peer.get("namespaceSelector", {"matchLabels": {"x": "y"}})["matchLabels"]


def test_selectors_are_copied_not_shared() -> None:
    spec = parse_spec(
        {"image": "i", "model": {"id": "m"}, "networkPolicy": {"enabled": True, "ingressNamespaceSelector": INGRESS_NS}}
    )
    (obj,) = render_network_policy(OWNER, spec)
    obj["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["x"] = "y"
    assert spec.network_policy.ingress_namespace_selector == INGRESS_NS
