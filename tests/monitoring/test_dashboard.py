"""The Grafana dashboard cannot drift from the worker: every query uses known metric names only.

Also: variables, datasource wiring, scoping of every query, layout, and the kustomize-generated
ConfigMap that carries the JSON (label grafana_dashboard: "1").
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepseek_operator.render.monitoring import ENGINE_METRICS, PROXY_METRICS, WORKER_METRICS

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "monitoring"
DASHBOARD = MONITORING / "deepseek-worker-dashboard.json"
SCOPE = ('namespace="$namespace"', 'deepseek_deployment="$deployment"', 'variant=~"$variant"')


# Our names, and the engines' (spec.runtime vllm | sglang: re-exposed by the edge in proxy mode).
METRIC_NAME = r"\b(?:deepseek_worker_\w+|vllm:\w+|sglang:\w+)"


def unknown_metrics(expr: str) -> set[str]:
    """Metric names in expr that neither the worker (builtin or proxy mode) nor the engines' list in
    render/monitoring.py has (histogram suffixes allowed)."""
    names = {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(METRIC_NAME, expr)}
    unknown: set[str] = names - WORKER_METRICS - PROXY_METRICS - ENGINE_METRICS
    return unknown


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _targets() -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in _dashboard()["panels"] for t in p["targets"]]


def test_every_query_uses_known_worker_metrics() -> None:
    targets = _targets()
    assert targets
    for title, target in targets:
        assert re.search(METRIC_NAME, target["expr"]), title
        assert not unknown_metrics(target["expr"]), (title, unknown_metrics(target["expr"]))
    for var in _dashboard()["templating"]["list"]:
        assert not unknown_metrics(json.dumps(var.get("query", ""))), var["name"]


def test_drift_check_can_fail() -> None:
    assert unknown_metrics("rate(deepseek_worker_tokens_total[5m])") == {"deepseek_worker_tokens_total"}
    assert unknown_metrics("vllm:gpu_cache_usage_perc or sglang:token_usage") == {"vllm:gpu_cache_usage_perc"}
    assert not unknown_metrics("rate(deepseek_worker_request_duration_seconds_bucket[5m])")


def test_every_query_is_scoped_by_the_variables() -> None:
    for title, target in _targets():
        for matcher in SCOPE:
            assert matcher in target["expr"], (title, matcher)


def test_required_signals_are_on_the_dashboard() -> None:
    used = {m for _, t in _targets() for m in re.findall(r"\bdeepseek_worker_\w+", t["expr"])}
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for m in used}
    required = {
        "deepseek_worker_requests_total",  # request rate, error ratio
        "deepseek_worker_request_duration_seconds",  # P50/P95/P99
        "deepseek_worker_time_to_first_token_seconds",
        "deepseek_worker_completion_tokens_total",  # tokens/s
        "deepseek_worker_queue_depth",
        "deepseek_worker_running_requests",  # batch size
        "deepseek_worker_gpu_memory_used_bytes",
        "deepseek_worker_gpu_utilization_ratio",
    }
    assert required <= used, required - used
    quantiles = {q for _, t in _targets() for q in re.findall(r"histogram_quantile\((0\.\d+)", t["expr"])}
    assert {"0.5", "0.95", "0.99"} <= quantiles


def test_variables_and_datasource() -> None:
    dash = _dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "deployment", "variant"} <= set(variables)
    assert variables["variant"]["multi"] and variables["variant"]["includeAll"]
    for var in ("namespace", "deployment", "variant"):
        assert variables[var]["datasource"]["uid"] == "${datasource}"
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]


def test_panels_have_unique_ids_refids_and_no_overlap() -> None:
    panels = _dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        xs, ys = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        mine = {(x, y) for x in xs for y in ys}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_kustomization_generates_the_labelled_configmap() -> None:
    kubectl = shutil.which("kubectl") or str(REPO / ".tools" / "bin" / "kubectl")
    if not Path(kubectl).is_file():
        pytest.skip("kubectl not installed (make bootstrap installs it into .tools/bin)")
    result = subprocess.run(
        [kubectl, "kustomize", str(MONITORING)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    (configmap,) = list(yaml.safe_load_all(result.stdout))
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["name"] == "deepseek-worker-dashboard"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["deepseek-worker-dashboard.json"]) == _dashboard()


def test_engine_runtime_signals_are_on_the_dashboard() -> None:
    """ITL, queue, batch and KV usage of vLLM and SGLang pods (issue 20 item 3)."""
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for _, t in _targets() for m in re.findall(METRIC_NAME, t["expr"])}
    assert ENGINE_METRICS - {"vllm:time_to_first_token_seconds", "sglang:time_to_first_token_seconds"} <= used
    assert "deepseek_worker_inflight_requests" in used  # the edge's admission
