"""render/gateway_monitoring.py through render/monitoring.py: the gateway's ServiceMonitor (validated
against the upstream Prometheus Operator CRD) selects the gateway's Service and no worker's, and the
gateway's alerts use only the gateway's metrics, scoped to this resource's gateway."""

from __future__ import annotations

import re
from typing import Any

from upstream_crds import SERVICE_MONITOR, validate

from deepseek_operator.api import parse_spec, resolve_variants
from deepseek_operator.render.common import Capabilities, Owner
from deepseek_operator.render.gateway import render_gateway
from deepseek_operator.render.gateway_monitoring import GATEWAY_METRICS
from deepseek_operator.render.monitoring import render_service_monitor, rule_groups
from deepseek_operator.render.workload import render_workload

OWNER = Owner(name="chat", namespace="llm", uid="uid-1")
ALL = Capabilities(service_monitor=True, prometheus_rule=True)
FALLBACK = {"apiKeySecretRef": {"name": "deepseek", "key": "api-key"}, "maxShare": 0.2}


def _spec(**extra: Any) -> Any:
    return parse_spec({"image": "img:1", "model": {"id": "m", "source": {"pvc": {"claimName": "models"}}},
                       "monitoring": {"serviceMonitor": {"labels": {"release": "prom"}, "interval": "15s"}},
                       **extra})


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    exists = all(e["key"] in labels for e in selector.get("matchExpressions", []) if e["operator"] == "Exists")
    return exists and all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def _alerts(spec: Any) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rule_groups(OWNER, spec)["groups"][0]["rules"]}


def test_the_gateway_gets_its_own_service_monitor_only_while_it_runs() -> None:
    assert [sm["metadata"]["name"] for sm in render_service_monitor(OWNER, _spec(), ALL)] == ["chat"]
    spec = _spec(gateway={"enabled": True})
    workers, gateway = render_service_monitor(OWNER, spec, ALL)
    validate(gateway, SERVICE_MONITOR)
    assert gateway["metadata"]["name"] == "chat-gateway" and gateway["metadata"]["labels"]["release"] == "prom"
    (endpoint,) = gateway["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["interval"]) == ("metrics", "15s")
    assert endpoint["relabelings"] == [{"sourceLabels": ["__meta_kubernetes_pod_label_deepseek_ai_gateway"],
                                        "targetLabel": "deepseek_gateway", "action": "replace"}]
    services = [c for c in render_gateway(OWNER, spec, spec.image, resolve_variants(spec)) + render_workload(
        OWNER, spec) if c["kind"] == "Service"]
    scraped = {name: [s["metadata"]["name"] for s in services if _matches(sm["spec"]["selector"],
                                                                          s["metadata"]["labels"])]
               for name, sm in (("workers", workers), ("gateway", gateway))}
    assert scraped == {"workers": ["chat-primary"], "gateway": ["chat-gateway"]}  # each pod scraped once


def test_gateway_alerts_only_with_the_gateway_and_the_fallback_alert_only_with_a_fallback() -> None:
    builtin = _alerts(_spec())
    gateway = _alerts(_spec(gateway={"enabled": True}))
    spill = _alerts(_spec(gateway={"enabled": True}, fallback=FALLBACK))
    assert set(gateway) - set(builtin) == {"DeepSeekGatewayHeldRequestsExpired", "DeepSeekGatewayHoldQueueFull",
                                           "DeepSeekGatewayTargetDown"}
    assert set(spill) - set(gateway) == {"DeepSeekGatewayFallbackAtCap"}
    assert all(gateway[name] == alert for name, alert in builtin.items())  # the workers' are unchanged
    assert spill["DeepSeekGatewayFallbackAtCap"]["expr"].endswith(">= 0.18")  # 90% of maxShare 0.2


def test_gateway_alerts_use_the_gateways_metrics_scoped_to_this_gateway() -> None:
    alerts = _alerts(_spec(gateway={"enabled": True}, fallback=FALLBACK))
    for name, alert in alerts.items():
        if not name.startswith("DeepSeekGateway"):
            assert "deepseek_gateway" not in alert["expr"], name
            continue
        for metric in re.findall(r"\bdeepseek_[a-z_]+(?=\{)", alert["expr"]):
            assert metric in GATEWAY_METRICS, (name, metric)
        for selector in re.findall(r"\{([^{}]*)\}", alert["expr"]):
            assert selector == 'namespace="llm", deepseek_gateway="chat"', (name, selector)
        assert alert["annotations"]["runbook_url"].endswith(f"#{name.lower()}")
