"""Table tests for integrations.integration_conditions (pure): what a missing optional API reports."""

from __future__ import annotations

from typing import Any

import pytest

from deepseek_operator.api import parse_spec
from deepseek_operator.integrations import integration_conditions
from deepseek_operator.render.common import Capabilities

BASE: dict[str, Any] = {"image": "w:1", "model": {"id": "m"}}
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
]


@pytest.mark.parametrize(("extra", "caps", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_integration_conditions(extra: dict[str, Any], caps: Capabilities,
                                expected: list[tuple[str, bool, str]]) -> None:
    got = integration_conditions(parse_spec({**BASE, **extra}), caps)
    assert [(t, ok, reason) for t, ok, reason, _ in got] == expected
    assert all(message for *_, message in got)
