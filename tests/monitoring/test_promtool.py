"""promtool on the rendered alert rules: `check rules`, and `test rules` with synthetic series.

Expected annotations are expanded from the rendered templates (label and value placeholders
filled in), so the tests pin the alert logic without copying the prose.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring_cases import ROUTING, rendered_engine_rule_groups

pytestmark = pytest.mark.slow

WORKER = 'namespace="llm", deepseek_deployment="chat", variant="primary", pod="chat-primary-1"'
OTHER = 'namespace="llm", deepseek_deployment="other", variant="primary", pod="other-primary-1"'
CANARY = 'namespace="llm", deepseek_deployment="chat", variant="canary", pod="chat-canary-1"'
CHAT = "/v1/chat/completions"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_check_rules(promtool: str, rules_file: Path) -> None:
    result = _run(promtool, "check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


def test_check_rules_can_fail(promtool: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "rate(x[5m]"}]}]}))
    assert _run(promtool, "check", "rules", str(bad)).returncode != 0


def _annotations(rules: dict[str, Any], alert: str, labels: dict[str, str], value: str) -> dict[str, str]:
    """The alert's annotations with {{ $labels.x }} and {{ $value | ... }} filled in."""
    (rule,) = [r for r in rules["groups"][0]["rules"] if r.get("alert") == alert]
    out = {}
    for key, text in rule["annotations"].items():
        for name, label_value in labels.items():
            text = text.replace(f"{{{{ $labels.{name} }}}}", label_value)
        for fn in ("humanizePercentage", "humanizeDuration", "humanize"):
            text = text.replace(f"{{{{ $value | {fn} }}}}", value)
        assert "{{" not in text, f"unexpanded template in {alert}.{key}: {text}"
        out[key] = text
    return out


# The labels every worker alert of the primary variant of llm/chat carries (ROUTING: the spec's).
PRIMARY_LABELS = {"namespace": "llm", "deepseek_deployment": "chat", "variant": "primary", **ROUTING}


def _fires(rules: dict[str, Any], at: str, alert: str, labels: dict[str, str], value: str) -> dict[str, Any]:
    """An alert_rule_test entry: at `at`, `alert` fires once with these labels and its annotations for `value`."""
    expected = {"exp_labels": labels, "exp_annotations": _annotations(rules, alert, labels, value)}
    return {"eval_time": at, "alertname": alert, "exp_alerts": [expected]}


def _silent(at: str, alert: str) -> dict[str, Any]:
    """An alert_rule_test entry: at `at`, `alert` does not fire."""
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def _error_ratio_case(rules: dict[str, Any]) -> dict[str, Any]:
    ok, bad = f'route="{CHAT}", code="200"', f'route="{CHAT}", code="500"'
    labels = {**PRIMARY_LABELS, "severity": "critical"}
    return {
        "interval": "1m",
        "input_series": [
            # chat: 60 ok + 10 failing requests a minute -> 14.29% 5xx.
            {"series": f"deepseek_worker_requests_total{{{WORKER}, {ok}}}", "values": "0+60x30"},
            {"series": f"deepseek_worker_requests_total{{{WORKER}, {bad}}}", "values": "0+10x30"},
            # The canary at 7% 5xx: over the default 5% but under the spec's errorPercent 10, so silent.
            {"series": f"deepseek_worker_requests_total{{{CANARY}, {ok}}}", "values": "0+93x30"},
            {"series": f"deepseek_worker_requests_total{{{CANARY}, {bad}}}", "values": "0+7x30"},
            # 5xx on /metrics is not user traffic and must not count.
            {
                "series": f'deepseek_worker_requests_total{{{WORKER}, route="/metrics", code="500"}}',
                "values": "0+500x30",
            },
            # Another resource in the namespace at 50% errors: its alerts are not ours.
            {"series": f"deepseek_worker_requests_total{{{OTHER}, {ok}}}", "values": "0+99x30"},
            {"series": f"deepseek_worker_requests_total{{{OTHER}, {bad}}}", "values": "0+100x30"},
        ],
        "alert_rule_test": [
            # Pending for its 5m `for` first: nothing fires at 4m.
            _silent("4m", "DeepSeekWorkerHighErrorRatio"),
            _fires(rules, "15m", "DeepSeekWorkerHighErrorRatio", labels, "14.29%"),
        ],
    }


def _no_ready_case(rules: dict[str, Any]) -> dict[str, Any]:
    def ksm(metric: str, deployment: str, values: str) -> dict[str, str]:
        return {"series": f'{metric}{{namespace="llm", deployment="{deployment}"}}', "values": values}

    primary = {"namespace": "llm", "deployment": "chat-primary", "severity": "critical", **ROUTING}
    canary = {**primary, "deployment": "chat-canary", "severity": "warning"}
    return {
        "interval": "1m",
        "input_series": [
            ksm("kube_deployment_spec_replicas", "chat-primary", "2x30"),
            ksm("kube_deployment_status_replicas_available", "chat-primary", "2 2 0x28"),
            ksm("kube_deployment_spec_replicas", "chat-canary", "1x30"),
            ksm("kube_deployment_status_replicas_available", "chat-canary", "0x30"),
            # Scaled to zero on purpose: no alert.
            ksm("kube_deployment_spec_replicas", "chat-old", "0x30"),
            ksm("kube_deployment_status_replicas_available", "chat-old", "0x30"),
            # Another resource's Deployment with no pods: not ours.
            ksm("kube_deployment_spec_replicas", "other-primary", "2x30"),
            ksm("kube_deployment_status_replicas_available", "other-primary", "0x30"),
        ],
        "alert_rule_test": [
            _silent("5m", "DeepSeekNoReadyReplicas"),
            _fires(rules, "10m", "DeepSeekNoReadyReplicas", primary, "0"),
            _silent("10m", "DeepSeekCanaryNoReadyReplicas"),
            _fires(rules, "20m", "DeepSeekCanaryNoReadyReplicas", canary, "0"),
        ],
    }


def _model_not_loaded_case(rules: dict[str, Any]) -> dict[str, Any]:
    draining = 'namespace="llm", deepseek_deployment="chat", variant="primary", pod="chat-primary-2"'
    labels = {**PRIMARY_LABELS, "pod": "chat-primary-1", "severity": "warning"}
    return {
        "interval": "1m",
        "input_series": [
            {"series": f"deepseek_worker_model_loaded{{{WORKER}}}", "values": "0x30"},
            {"series": f"deepseek_worker_draining{{{WORKER}}}", "values": "0x30"},
            # A draining pod has unloaded its model on purpose: no alert.
            {"series": f"deepseek_worker_model_loaded{{{draining}}}", "values": "0x30"},
            {"series": f"deepseek_worker_draining{{{draining}}}", "values": "1x30"},
        ],
        "alert_rule_test": [
            _fires(rules, "20m", "DeepSeekWorkerModelNotLoaded", labels, "0"),
        ],
    }


def _queue_case(rules: dict[str, Any]) -> dict[str, Any]:
    labels = {**PRIMARY_LABELS, "pod": "chat-primary-1", "severity": "warning"}
    return {
        "interval": "1m",
        "input_series": [
            {"series": f"deepseek_worker_queue_depth{{{WORKER}}}", "values": "44x30"},
            {"series": f"deepseek_worker_running_requests{{{WORKER}}}", "values": "16x30"},
            {"series": f"deepseek_worker_max_concurrent_requests{{{WORKER}}}", "values": "64x30"},
        ],
        "alert_rule_test": [
            _fires(rules, "15m", "DeepSeekWorkerQueueSaturated", labels, "93.75%"),
        ],
    }


CASES = {
    "5xx ratio fires for our API routes only": _error_ratio_case,
    "no ready replicas: primary critical, canary warning, scaled-to-zero and others silent": _no_ready_case,
    "model not loaded fires unless draining": _model_not_loaded_case,
    "queue saturation": _queue_case,
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_alert_unit_tests(
    case: Any, promtool: str, rules_file: Path, rendered_rules: dict[str, Any], tmp_path: Path
) -> None:
    test_file = tmp_path / "test.yaml"
    body = {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": [case(rendered_rules)]}
    test_file.write_text(yaml.safe_dump(body, sort_keys=False))
    result = _run(promtool, "test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# -- engine runtimes (spec.runtime vllm | sglang): the edge's gauges and the engines' own series -----------
@pytest.fixture
def engine_rules(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    rules = rendered_engine_rule_groups()
    path = tmp_path / "engine-rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path, rules


def test_check_engine_rules(promtool: str, engine_rules: tuple[Path, dict[str, Any]]) -> None:
    result = _run(promtool, "check", "rules", str(engine_rules[0]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 15 rules found" in result.stdout  # the 11 of test_check_rules + 4 engine alerts


def _engine_case(rules: dict[str, Any]) -> dict[str, Any]:
    # The engines' own labels (engine, model_name) ride along; the scrape adds ours (namespace, pod, ...).
    vllm = f'{CANARY}, engine="0", model_name="deepseek-ai/DeepSeek-R1"'
    sglang_pod = 'namespace="llm", deepseek_deployment="chat", variant="canary", pod="chat-canary-2"'
    canary = {"namespace": "llm", "deepseek_deployment": "chat", "variant": "canary", **ROUTING,
              "severity": "warning"}
    return {
        "interval": "1m",
        "input_series": [
            {"series": f"vllm:kv_cache_usage_perc{{{vllm}}}", "values": "0.97x30"},
            {"series": f'sglang:token_usage{{{sglang_pod}, model_name="m"}}', "values": "0.99x30"},
            {"series": f"vllm:num_requests_waiting{{{vllm}}}", "values": "20x30"},
            {"series": f'sglang:num_queue_reqs{{{sglang_pod}, model_name="m"}}', "values": "3x30"},
            {"series": f"deepseek_worker_inflight_requests{{{CANARY}}}", "values": "60x30"},
            {"series": f"deepseek_worker_max_concurrent_requests{{{CANARY}}}", "values": "64x30"},
            {"series": f"deepseek_worker_engine_metrics_up{{{CANARY}}}", "values": "1x30"},
            {"series": f"deepseek_worker_engine_metrics_up{{{sglang_pod}}}", "values": "0x30"},
            # Another resource's engine, full: not ours.
            {"series": f'vllm:kv_cache_usage_perc{{{OTHER}, engine="0"}}', "values": "1x30"},
        ],
        "alert_rule_test": [
            {"eval_time": "20m", "alertname": "DeepSeekEngineKvCacheFull", "exp_alerts": [
                {"exp_labels": (labels := {**canary, "pod": pod}),
                 "exp_annotations": _annotations(rules, "DeepSeekEngineKvCacheFull", labels, value)}
                for pod, value in (("chat-canary-1", "97%"), ("chat-canary-2", "99%"))]},
            _fires(rules, "15m", "DeepSeekEngineQueueBacklog", {**canary, "pod": "chat-canary-1"}, "20"),
            _fires(rules, "15m", "DeepSeekEdgeQueueSaturated", {**canary, "pod": "chat-canary-1"}, "93.75%"),
            _fires(rules, "20m", "DeepSeekEngineMetricsDown", {**canary, "pod": "chat-canary-2"}, "0"),
        ],
    }


def test_engine_alert_unit_tests(promtool: str, engine_rules: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, rules = engine_rules
    test_file = tmp_path / "test.yaml"
    body = {"rule_files": [str(path)], "evaluation_interval": "1m", "tests": [_engine_case(rules)]}
    test_file.write_text(yaml.safe_dump(body, sort_keys=False))
    result = _run(promtool, "test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
