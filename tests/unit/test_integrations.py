"""Table tests for integrations.integration_conditions (pure): what a missing optional API reports."""

from __future__ import annotations

from typing import Any

import pytest

from deepseek_operator.api import parse_spec
from deepseek_operator.integrations import integration_conditions
from deepseek_operator.render.common import Capabilities

# The ingress and monitoring cases leave the NetworkPolicy out; its own cases come last.
BASE: dict[str, Any] = {"image": "w:1", "model": {"id": "m"}, "networkPolicy": {"enabled": False}}
EDGE = {"kubernetes.io/metadata.name": "ingress-nginx"}
PROMETHEUS = {"kubernetes.io/metadata.name": "monitoring"}
GATEWAY = {"provider": "gateway-api", "host": "h", "gateway": {"parentRefs": [{"name": "public"}]}}
NGINX = {"provider": "ingress-nginx", "host": "h", "className": "nginx"}
NO_MONITORING = {"serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False}}
ALL = Capabilities(service_monitor=True, prometheus_rule=True, gateway_api=True, ingress_classes=frozenset({"nginx"}))
NONE = Capabilities()

CASES = [
    ("no ingress, monitoring off", {"monitoring": NO_MONITORING}, NONE, []),
    ("monitoring wanted, operator missing", {}, NONE,
     [("MonitoringReady", False, "PrometheusOperatorMissing")]),
    ("monitoring wanted and served", {}, ALL, [("MonitoringReady", True, "Configured")]),
    ("only a ServiceMonitor wanted, PrometheusRule API absent", {"monitoring": {"prometheusRule": {"enabled": False}}},
     Capabilities(service_monitor=True), [("MonitoringReady", True, "Configured")]),
    ("gateway-api without the CRDs", {"ingress": GATEWAY, "monitoring": NO_MONITORING}, NONE,
     [("IngressReady", False, "GatewayAPIMissing")]),
    ("gateway-api served", {"ingress": GATEWAY, "monitoring": NO_MONITORING}, ALL,
     [("IngressReady", True, "Configured")]),
    ("ingress class missing", {"ingress": NGINX, "monitoring": NO_MONITORING}, NONE,
     [("IngressReady", False, "IngressClassMissing")]),
    ("ingress class present", {"ingress": NGINX, "monitoring": NO_MONITORING}, ALL,
     [("IngressReady", True, "Configured")]),
    ("ingress classes unreadable (RBAC): not reported missing", {"ingress": NGINX, "monitoring": NO_MONITORING},
     Capabilities(ingress_classes=None), [("IngressReady", True, "Configured")]),
    # spec.networkPolicy (default on): False when the spec needs a namespace the policy does not admit.
    ("network policy on, nothing else: same namespace only", {"monitoring": NO_MONITORING, "networkPolicy": {}},
     NONE, [("NetworkPolicyReady", True, "Configured")]),
    ("ingress but no ingress namespace allowed",
     {"ingress": NGINX, "monitoring": NO_MONITORING, "networkPolicy": {}}, ALL,
     [("IngressReady", True, "Configured"), ("NetworkPolicyReady", False, "IngressNamespaceNotAllowed")]),
    ("ingress namespace allowed",
     {"ingress": NGINX, "monitoring": NO_MONITORING, "networkPolicy": {"ingressNamespaceSelector": EDGE}}, ALL,
     [("IngressReady", True, "Configured"), ("NetworkPolicyReady", True, "Configured")]),
    ("ServiceMonitor applied but Prometheus not allowed", {"networkPolicy": {}}, ALL,
     [("MonitoringReady", True, "Configured"), ("NetworkPolicyReady", False, "MonitoringNamespaceNotAllowed")]),
    ("no ServiceMonitor API: nothing to scrape, nothing blocked", {"networkPolicy": {}}, NONE,
     [("MonitoringReady", False, "PrometheusOperatorMissing"), ("NetworkPolicyReady", True, "Configured")]),
    ("both blocked: the ingress is named first",
     {"ingress": GATEWAY, "networkPolicy": {"monitoringNamespaceSelector": {}}}, ALL,
     [("IngressReady", True, "Configured"), ("MonitoringReady", True, "Configured"),
      ("NetworkPolicyReady", False, "IngressNamespaceNotAllowed")]),
    ("both allowed",
     {"ingress": GATEWAY,
      "networkPolicy": {"ingressNamespaceSelector": EDGE, "monitoringNamespaceSelector": PROMETHEUS}},
     ALL, [("IngressReady", True, "Configured"), ("MonitoringReady", True, "Configured"),
           ("NetworkPolicyReady", True, "Configured")]),
]


@pytest.mark.parametrize(("extra", "caps", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_integration_conditions(extra: dict[str, Any], caps: Capabilities,
                                expected: list[tuple[str, bool, str]]) -> None:
    got = integration_conditions(parse_spec({**BASE, **extra}), caps)
    assert [(t, ok, reason) for t, ok, reason, _ in got] == expected
    assert all(message for *_, message in got)


def test_network_policy_condition_says_whom_it_admits() -> None:
    spec = parse_spec({**BASE, "ingress": GATEWAY, "variants": [{"name": "pvc", "model": {"source": {
        "pvc": {"claimName": "m"}}}}], "networkPolicy": {"ingressNamespaceSelector": EDGE,
                                                         "monitoringNamespaceSelector": PROMETHEUS}})
    ((_, ok, reason, message),) = [c for c in integration_conditions(spec, ALL) if c[0] == "NetworkPolicyReady"]
    assert (ok, reason) == (True, "Configured")
    assert message == ("default-deny; API port from this namespace and namespaces "
                       "kubernetes.io/metadata.name=ingress-nginx; metrics scrapes from namespaces "
                       "kubernetes.io/metadata.name=monitoring; egress: DNS and TCP 443 for primary (huggingFace) only")


def test_network_policy_condition_names_the_clients_and_the_hub_port() -> None:
    """networkPolicy.clients and the hub endpoint's own port (issue 19 item 6, issue 18 item 13) show in
    the message, so a narrowed policy is visible in `kubectl describe`."""
    spec = parse_spec({**BASE, "model": {"id": "m", "source": {"huggingFace": {"endpoint": "http://mirror:8080"}}},
                       "networkPolicy": {"clients": [{"podSelector": {"matchLabels": {"app": "ui"}}}],
                                         "monitoringNamespaceSelector": PROMETHEUS,
                                         "hubEgress": {"cidrs": ["10.8.0.0/24"]}}})
    ((_, ok, _, message),) = [c for c in integration_conditions(spec, ALL) if c[0] == "NetworkPolicyReady"]
    assert ok
    assert "API port from 1 client selector(s) of networkPolicy.clients" in message
    assert "egress: DNS and TCP 8080 to networkPolicy.hubEgress.cidrs for primary (huggingFace) only" in message
    spec = parse_spec({**BASE, "networkPolicy": {"clients": [], "monitoringNamespaceSelector": PROMETHEUS}})
    ((_, _, _, message),) = [c for c in integration_conditions(spec, ALL) if c[0] == "NetworkPolicyReady"]
    assert "API port from no in-cluster client" in message


def test_both_gaps_are_in_the_message() -> None:
    spec = parse_spec({**BASE, "ingress": NGINX, "networkPolicy": {}})
    ((_, ok, _, message),) = [c for c in integration_conditions(spec, ALL) if c[0] == "NetworkPolicyReady"]
    assert not ok
    assert "spec.networkPolicy.ingressNamespaceSelector is empty" in message
    assert "spec.networkPolicy.monitoringNamespaceSelector is empty" in message
