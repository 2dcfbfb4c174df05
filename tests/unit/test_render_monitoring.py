"""Table tests of render/monitoring.py, validated against the upstream Prometheus Operator CRDs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from upstream_crds import PROMETHEUS_RULE, SERVICE_MONITOR, validate

from deepseek_operator.api import DeepSeekDeploymentSpec, parse_spec
from deepseek_operator.render.common import Capabilities, Owner
from deepseek_operator.render.monitoring import (
    ENGINE_METRICS,
    PROXY_METRICS,
    WORKER_METRICS,
    duration,
    render_prometheus_rule,
    render_service_monitor,
    rule_groups,
)

OWNER = Owner(name="chat", namespace="llm", uid="uid-1")
ALL = Capabilities(service_monitor=True, prometheus_rule=True)
NONE = Capabilities()


def _spec(monitoring: dict[str, Any] | None = None, canaries: int = 0, **extra: Any) -> DeepSeekDeploymentSpec:
    raw: dict[str, Any] = {"image": "img:1", "model": {"id": "m"}, **extra}
    if monitoring is not None:
        raw["monitoring"] = monitoring
    raw["variants"] = [{"name": f"canary{i or ''}", "weight": 10} for i in range(canaries)]
    return parse_spec(raw)


# name -> (spec.monitoring, caps, expect a ServiceMonitor, expect a PrometheusRule)
PRESENCE = {
    "defaults with both CRDs": (None, ALL, True, True),
    "no Prometheus Operator CRDs": (None, NONE, False, False),
    "only ServiceMonitor CRD": (None, Capabilities(service_monitor=True), True, False),
    "only PrometheusRule CRD": (None, Capabilities(prometheus_rule=True), False, True),
    "ServiceMonitor disabled": ({"serviceMonitor": {"enabled": False}}, ALL, False, True),
    "PrometheusRule disabled": ({"prometheusRule": {"enabled": False}}, ALL, True, False),
}


@pytest.mark.parametrize("monitoring,caps,want_sm,want_rule", list(PRESENCE.values()), ids=list(PRESENCE))
def test_presence(monitoring: dict[str, Any] | None, caps: Capabilities, want_sm: bool, want_rule: bool) -> None:
    spec = _spec(monitoring)
    sms = render_service_monitor(OWNER, spec, caps)
    rules = render_prometheus_rule(OWNER, spec, caps)
    assert [o["kind"] for o in sms] == (["ServiceMonitor"] if want_sm else [])
    assert [o["kind"] for o in rules] == (["PrometheusRule"] if want_rule else [])
    for obj in sms:
        validate(obj, SERVICE_MONITOR)
    for obj in rules:
        validate(obj, PROMETHEUS_RULE)


def test_service_monitor_shape() -> None:
    spec = _spec({"serviceMonitor": {"interval": "15s", "labels": {"release": "kube-prometheus"}}}, canaries=1)
    (sm,) = render_service_monitor(OWNER, spec, ALL)
    validate(sm, SERVICE_MONITOR)
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["name"] == "chat"
    assert sm["metadata"]["namespace"] == "llm"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus"
    assert sm["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert sm["spec"]["selector"] == {
        "matchLabels": {"deepseek.ai/deployment": "chat", "app.kubernetes.io/component": "worker"},
        # Only variant Services: the stable Service would scrape every pod a second time.
        "matchExpressions": [{"key": "deepseek.ai/variant", "operator": "Exists"}],
    }
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["llm"]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"  # the worker's metrics-only listener (NetworkPolicy: Prometheus only)
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"
    assert {(r["sourceLabels"][0], r["targetLabel"]) for r in endpoint["relabelings"]} == {
        ("__meta_kubernetes_pod_label_deepseek_ai_variant", "variant"),
        ("__meta_kubernetes_pod_label_deepseek_ai_deployment", "deepseek_deployment"),
    }


def test_selector_matches_variant_services_not_the_stable_one() -> None:
    """The ServiceMonitor selector against the Services render/workload.py produces."""
    from deepseek_operator.render.workload import render_stable_service, render_variant_service

    (sm,) = render_service_monitor(OWNER, _spec(), ALL)
    selector = sm["spec"]["selector"]

    def selected(service: dict[str, Any]) -> bool:
        labels = service["metadata"]["labels"]
        exprs_ok = all(e["key"] in labels for e in selector["matchExpressions"])
        return exprs_ok and all(labels.get(k) == v for k, v in selector["matchLabels"].items())

    assert selected(render_variant_service(OWNER, "primary"))
    assert selected(render_variant_service(OWNER, "canary"))
    assert not selected(render_stable_service(OWNER))
    assert [p["name"] for p in render_variant_service(OWNER, "primary")["spec"]["ports"]] == ["http", "metrics"]


def test_prometheus_rule_carries_user_labels() -> None:
    spec = _spec({"serviceMonitor": {"labels": {"release": "kube-prometheus"}}})
    (rule,) = render_prometheus_rule(OWNER, spec, ALL)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus"
    assert rule["spec"] == rule_groups(OWNER, spec)


def _alerts(spec: DeepSeekDeploymentSpec) -> dict[str, dict[str, Any]]:
    (group,) = rule_groups(OWNER, spec)["groups"]
    return {r["alert"]: r for r in group["rules"]}


EXPECTED_ALERTS = {
    "DeepSeekWorkerHighLatencyP99": "warning",
    "DeepSeekWorkerSlowTimeToFirstToken": "warning",
    "DeepSeekWorkerHighErrorRatio": "critical",
    "DeepSeekWorkerQueueSaturated": "warning",
    "DeepSeekWorkerGpuMemoryHigh": "warning",
    "DeepSeekWorkerModelNotLoaded": "warning",
    "DeepSeekNoReadyReplicas": "critical",
    "DeepSeekWorkerTargetDown": "warning",
    "DeepSeekRolloutFailed": "warning",
    "DeepSeekRolloutStuck": "warning",
}


EXPECTED_SEVERITY = {**EXPECTED_ALERTS, "DeepSeekCanaryNoReadyReplicas": "warning"}


@pytest.mark.parametrize("canaries", [0, 1], ids=["primary only", "with canary"])
def test_alerts_have_severity_annotations_and_scope(canaries: int) -> None:
    alerts = _alerts(_spec(canaries=canaries))
    expected = dict(EXPECTED_ALERTS)
    if canaries:
        expected["DeepSeekCanaryNoReadyReplicas"] = "warning"
    assert {name: a["labels"]["severity"] for name, a in alerts.items()} == expected
    for name, alert in alerts.items():
        assert set(alert["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert alert["annotations"]["runbook_url"].endswith(f"#{name.lower()}")
        assert "llm/chat" in alert["annotations"]["summary"]
        # Every alert is scoped: worker series by namespace + deepseek_deployment, kube-state-metrics
        # series by namespace + this resource's Deployment names.
        for selector in re.findall(r"\{([^{}]*)\}", alert["expr"]):
            assert 'namespace="llm"' in selector, (name, selector)
            assert 'deepseek_deployment="chat"' in selector or 'deployment=~"chat-' in selector, (name, selector)


def test_alerts_use_only_known_worker_metrics() -> None:
    for alert in _alerts(_spec(canaries=1)).values():
        for metric in re.findall(r"\bdeepseek_worker_[a-z_]+", alert["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", metric)
            assert base in WORKER_METRICS, (alert["alert"], metric)


def test_engine_runtime_alerts_use_the_engines_and_the_edges_metrics() -> None:
    """Only where a variant runs vllm or sglang; builtin rule files are unchanged."""
    builtin = _alerts(_spec(canaries=1))
    engine = _alerts(_spec(canaries=1, runtime={"name": "sglang"}))
    added = {name: alert for name, alert in engine.items() if name not in builtin}
    assert set(added) == {"DeepSeekEdgeQueueSaturated", "DeepSeekEngineKvCacheFull", "DeepSeekEngineQueueBacklog",
                          "DeepSeekEngineMetricsDown"}
    assert all(engine[name] == alert for name, alert in builtin.items())
    used: set[str] = set()
    for alert in added.values():
        used |= {re.sub(r"_(bucket|sum|count)$", "", m)
                 for m in re.findall(r"\b(?:deepseek_worker_[a-z_]+|vllm:[a-z_]+|sglang:[a-z_]+)", alert["expr"])}
    assert used <= WORKER_METRICS | PROXY_METRICS | ENGINE_METRICS, used
    assert {"vllm:kv_cache_usage_perc", "sglang:token_usage", "vllm:num_requests_waiting",
            "sglang:num_queue_reqs"} <= used


def _thresholds(**values: int) -> dict[str, Any]:
    return {"prometheusRule": {"thresholds": values}}


# name -> (spec extra, alert, expected fragment)
FROM_SPEC = {
    "latency threshold is 80% of the request timeout": (
        {"serving": {"requestTimeoutSeconds": 100}}, "DeepSeekWorkerHighLatencyP99", "> 80"
    ),
    "stuck rollout waits the progress deadline": (
        {"rollout": {"progressDeadlineSeconds": 1800}}, "DeepSeekRolloutStuck", "30m"
    ),
    "KSM alerts use the variant Deployment names": ({}, "DeepSeekNoReadyReplicas", 'deployment=~"chat-primary"'),
    "an explicit latency threshold wins over the timeout": (
        {"serving": {"requestTimeoutSeconds": 100}, "monitoring": _thresholds(p99LatencySeconds=30)},
        "DeepSeekWorkerHighLatencyP99", ") > 30",
    ),
    "time-to-first-token threshold": (
        {"monitoring": _thresholds(p99TimeToFirstTokenSeconds=4)}, "DeepSeekWorkerSlowTimeToFirstToken", ") > 4"
    ),
    "error percent becomes a ratio": (
        {"monitoring": _thresholds(errorPercent=2)}, "DeepSeekWorkerHighErrorRatio", "> 0.02"
    ),
    "queue saturation percent": (
        {"monitoring": _thresholds(queueSaturationPercent=75)}, "DeepSeekWorkerQueueSaturated", "> 0.75"
    ),
    "GPU memory percent": ({"monitoring": _thresholds(gpuMemoryPercent=100)}, "DeepSeekWorkerGpuMemoryHigh", ") > 1"),
}


@pytest.mark.parametrize("extra,alert,fragment", list(FROM_SPEC.values()), ids=list(FROM_SPEC))
def test_alerts_follow_the_spec(extra: dict[str, Any], alert: str, fragment: str) -> None:
    rule = _alerts(_spec(**extra))[alert]
    assert fragment in rule["expr"] or fragment == rule["for"], rule["expr"]


# alert -> (thresholds, what its summary says)
SUMMARIES = {
    "DeepSeekWorkerHighLatencyP99": ({"p99LatencySeconds": 30}, "P99 request latency over 30s"),
    "DeepSeekWorkerSlowTimeToFirstToken": ({"p99TimeToFirstTokenSeconds": 4}, "time to first token over 4s"),
    "DeepSeekWorkerHighErrorRatio": ({"errorPercent": 2}, "more than 2% of API requests"),
    "DeepSeekWorkerQueueSaturated": ({"queueSaturationPercent": 75}, "queue above 75%"),
    "DeepSeekWorkerGpuMemoryHigh": ({"gpuMemoryPercent": 80}, "GPU memory above 80%"),
}


@pytest.mark.parametrize("alert", list(SUMMARIES))
def test_summaries_state_the_configured_threshold(alert: str) -> None:
    thresholds, text = SUMMARIES[alert]
    assert text in _alerts(_spec(_thresholds(**thresholds)))[alert]["annotations"]["summary"]


def test_default_thresholds() -> None:
    alerts = _alerts(_spec(serving={"requestTimeoutSeconds": 600}))
    assert alerts["DeepSeekWorkerHighLatencyP99"]["expr"].endswith(") > 480")
    assert alerts["DeepSeekWorkerSlowTimeToFirstToken"]["expr"].endswith(") > 10")
    assert alerts["DeepSeekWorkerHighErrorRatio"]["expr"].endswith("> 0.05")
    assert alerts["DeepSeekWorkerQueueSaturated"]["expr"].endswith("> 0.9")
    assert alerts["DeepSeekWorkerGpuMemoryHigh"]["expr"].endswith("> 0.95")


def test_routing_labels_and_runbook_base_go_on_every_alert() -> None:
    rule_spec = {"labels": {"team": "ml-platform", "service": "chat"}, "runbookBaseURL": "https://wiki.example.com/llm"}
    alerts = _alerts(_spec({"prometheusRule": rule_spec}, canaries=1))
    for name, alert in alerts.items():
        assert alert["labels"] == {"team": "ml-platform", "service": "chat", "severity": EXPECTED_SEVERITY[name]}
        assert alert["annotations"]["runbook_url"] == f"https://wiki.example.com/llm#{name.lower()}"
    (rule,) = render_prometheus_rule(OWNER, _spec({"prometheusRule": rule_spec}), ALL)
    validate(rule, PROMETHEUS_RULE)


def test_canary_alert_names_canary_deployments_only() -> None:
    rule = _alerts(_spec(canaries=2))["DeepSeekCanaryNoReadyReplicas"]
    assert 'deployment=~"chat-canary|chat-canary1"' in rule["expr"]
    assert "chat-primary" not in rule["expr"]


@pytest.mark.parametrize(
    "seconds,expected", [(30, "30s"), (60, "1m"), (90, "90s"), (1800, "30m"), (3600, "1h"), (5400, "90m"), (0, "0s")]
)
def test_duration(seconds: int, expected: str) -> None:
    assert duration(seconds) == expected


def test_schema_validation_can_fail() -> None:
    (sm,) = render_service_monitor(OWNER, _spec(), ALL)
    sm["spec"]["endpoints"][0]["intervall"] = "1s"
    with pytest.raises(AssertionError, match="intervall"):
        validate(sm, SERVICE_MONITOR)
    (rule,) = render_prometheus_rule(OWNER, _spec(), ALL)
    rule["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    with pytest.raises(AssertionError, match="for"):
        validate(rule, PROMETHEUS_RULE)


def test_every_alert_has_a_runbook_section() -> None:
    """runbook_url points at docs/observability.md#<alert>: that heading must exist."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
    headings = set(re.findall(r"^#### (\w+)$", doc, flags=re.MULTILINE))
    engine = _spec(canaries=1, runtime={"name": "vllm"})
    every = _spec(canaries=1, runtime={"name": "vllm"}, gateway={"enabled": True},  # the gateway's alerts too
                  fallback={"apiKeySecretRef": {"name": "deepseek", "key": "api-key"}})
    assert set(_alerts(every)) == headings and set(_alerts(engine)) < headings
