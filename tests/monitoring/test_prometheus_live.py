"""A real Prometheus scraping a real tiny-model worker while requests flow.

Prometheus gets the rendered ServiceMonitor's relabelings (translated to relabel_configs, with
the pod-label meta labels a Kubernetes discovery would provide set as static target labels) and
the rendered alert rules. The test then asks the P99 latency question an SRE would, checks the
relabelled target labels, that every rule evaluates with health "ok", and that every dashboard
query is valid PromQL against real data. Every wait polls with a deadline.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from monitoring_cases import OWNER, rendered_rule_groups

from deepseek_operator.api import parse_spec
from deepseek_operator.render.common import Capabilities
from deepseek_operator.render.monitoring import WORKER_METRICS, render_service_monitor

pytestmark = pytest.mark.slow

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "manifests" / "monitoring" / "deepseek-worker-dashboard.json"
P99 = "histogram_quantile(0.99, sum by (le) (rate(deepseek_worker_request_duration_seconds_bucket[1m])))"
POD = "chat-primary-0"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _poll(what: str, probe: Callable[[], T | None], timeout: float, log: Path | None = None) -> T:
    """Call probe until it returns something other than None; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        try:
            result = probe()
        except httpx.HTTPError as exc:  # not up yet
            result, last_error = None, repr(exc)
        if result is not None:
            return result
        time.sleep(0.25)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what} {last_error}\n{tail}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def _serving(what: str, argv: list[str], log: Path, ready_path: str, port: int, timeout: float,
             env: dict[str, str] | None = None) -> Iterator[str]:
    """Start argv (output to log), yield its base URL once GET ready_path succeeds; stop it afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _poll(what, lambda: True if httpx.get(f"{url}{ready_path}").is_success else None, timeout=timeout, log=log)
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def worker_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(API URL, metrics-only URL) of a real worker started as the operator starts it (--metrics-port)."""
    if importlib.util.find_spec("deepseek_worker.cli") is None:
        pytest.skip("the worker package (deepseek_worker.cli) is not installed yet")
    exe = Path(sys.executable).parent / "deepseek-worker"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "deepseek_worker.cli"]
    port, metrics_port = _free_port(), _free_port()
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    argv = [*cmd, "--model", "tiny", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "--metrics-port", str(metrics_port)]
    with _serving("the worker to become ready", argv, log, "/health/ready", port, 180, env) as url:
        yield url, f"http://127.0.0.1:{metrics_port}"


@pytest.fixture(scope="module")
def worker_url(worker_urls: tuple[str, str]) -> str:
    return worker_urls[0]


@pytest.fixture(scope="module")
def metrics_url(worker_urls: tuple[str, str]) -> str:
    """What the ServiceMonitor scrapes: the `metrics` port (docs/security.md: Prometheus only)."""
    return worker_urls[1]


def _scrape_config(worker: str) -> dict[str, Any]:
    """The rendered ServiceMonitor endpoint as a Prometheus scrape config over a static target."""
    spec = parse_spec({"image": "i", "model": {"id": "m"}, "monitoring": {"serviceMonitor": {"interval": "1s"}}})
    (sm,) = render_service_monitor(OWNER, spec, Capabilities(service_monitor=True))
    (endpoint,) = sm["spec"]["endpoints"]
    return {
        "job_name": "deepseek-worker",
        "scrape_interval": endpoint["interval"],
        "metrics_path": endpoint["path"],
        "static_configs": [
            {
                "targets": [worker.removeprefix("http://")],
                # What Kubernetes discovery + the Prometheus Operator would attach to the target.
                "labels": {
                    "namespace": OWNER.namespace,
                    "pod": POD,
                    "service": "chat-primary",
                    "__meta_kubernetes_pod_label_deepseek_ai_variant": "primary",
                    "__meta_kubernetes_pod_label_deepseek_ai_deployment": OWNER.name,
                },
            }
        ],
        "relabel_configs": [
            {"source_labels": r["sourceLabels"], "target_label": r["targetLabel"], "action": r["action"]}
            for r in endpoint["relabelings"]
        ],
    }


@pytest.fixture(scope="module")
def prometheus(metrics_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).is_file():
        pytest.skip("prometheus not installed (tools/install-apt.sh installs Debian's prometheus package)")
    work = tmp_path_factory.mktemp("prometheus")
    (work / "rules.yaml").write_text(yaml.safe_dump(rendered_rule_groups()))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "rules.yaml")],
        "scrape_configs": [_scrape_config(metrics_url)],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    log = work / "prometheus.log"
    argv = [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    with _serving("Prometheus to become ready", argv, log, "/-/ready", port, 60) as url:
        yield url


@pytest.fixture(scope="module")
def traffic(worker_url: str) -> Iterator[None]:
    """Chat completions in a loop from a background thread for as long as the module's tests run."""
    stop = threading.Event()

    def send() -> None:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
        with httpx.Client(base_url=worker_url, timeout=30) as client:
            while not stop.is_set():
                try:
                    client.post("/v1/chat/completions", json=body)
                except httpx.HTTPError:  # e.g. a slow answer; the next request will do
                    continue

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=35)


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = resp.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_worker_exports_every_contract_metric(metrics_url: str, traffic: None) -> None:
    """The names the alerts and the dashboard use exist on a real worker (GPU ones need a GPU)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{metrics_url}/metrics", timeout=10).text
    exported = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    gpu = {m for m in WORKER_METRICS if "_gpu_" in m}
    # A histogram is exported as its _bucket/_sum/_count series. The readiness probes already made
    # requests, so the route/code-labelled series exist too.
    expected = {f"{m}_count" if m.endswith("_seconds") else m for m in WORKER_METRICS - gpu}
    assert not expected - exported, f"the worker does not export {sorted(expected - exported)}"


def test_the_metrics_port_serves_the_metrics_and_nothing_else(worker_url: str, metrics_url: str,
                                                              traffic: None) -> None:
    """Metrics live on the metrics port alone: the API port (where the ingress routes `/`) answers 404
    (issue 19: it served them without a key)."""
    scrape = httpx.get(f"{metrics_url}/metrics", timeout=10)
    assert scrape.status_code == 200 and "deepseek_worker_requests_total" in scrape.text
    api = httpx.get(f"{worker_url}/metrics", timeout=10)
    assert api.status_code == 404 and api.json()["error"]["code"] == 404
    # prometheus-client's server answers every path with the exposition: no API route lives there.
    other = httpx.get(f"{metrics_url}/v1/models", timeout=10)
    assert other.headers["content-type"].startswith("text/plain") and '"object"' not in other.text


def test_p99_latency_from_a_real_scrape(prometheus: str, traffic: None) -> None:
    def p99() -> float | None:
        result = _query(prometheus, P99)
        value = float(result[0]["value"][1]) if result else math.nan
        return value if math.isfinite(value) else None

    value = _poll("a finite P99 latency", p99, timeout=60)
    assert 0 < value <= 600


def test_relabelled_target_labels(prometheus: str, traffic: None) -> None:
    expr = f'up{{namespace="llm", deepseek_deployment="chat", variant="primary", pod="{POD}"}} == 1'
    (series,) = _poll("the worker target to be up with relabelled labels", lambda: _query(prometheus, expr) or None,
                      timeout=30)
    assert "__meta_kubernetes_pod_label_deepseek_ai_variant" not in series["metric"]


def test_rendered_rules_evaluate_ok(prometheus: str, traffic: None) -> None:
    def evaluated_rules() -> list[dict[str, Any]] | None:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        # Wait until every rule has been evaluated at least once.
        done = rules and all(not r["lastEvaluation"].startswith("0001-") for r in rules)
        return rules if done else None

    rules = _poll("every rule to be evaluated", evaluated_rules, timeout=30)
    assert len(rules) == 11
    bad = {r["name"]: (r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"}
    assert not bad


def test_dashboard_queries_are_valid_promql(prometheus: str, traffic: None) -> None:
    """Every panel query runs without error; the panels a CPU-only worker feeds show data.

    (GPU panels are empty without a GPU; the error ratio is empty without any 5xx.)
    """
    dashboard = json.loads(DASHBOARD.read_text())
    values = {"$namespace": "llm", "$deployment": "chat", "$variant": ".*", "$__rate_interval": "1m"}

    def panels_without_data() -> set[str]:
        """Panels none of whose queries returns data (a builtin worker feeds no engine query)."""
        empty = set()
        for panel in dashboard["panels"]:
            fed = False
            for target in panel["targets"]:
                expr = target["expr"]
                for var, value in values.items():
                    expr = expr.replace(var, value)
                fed = bool(_query(prometheus, expr)) or fed  # every query runs: _query asserts valid PromQL
            if not fed:
                empty.add(panel["title"])
        return empty

    must_have_data = {
        "Request rate",
        "Request latency P50 / P95 / P99",
        "Time to first token P50 / P95 / P99",
        "Tokens per second",
        "Queue depth vs capacity",
        "Batch size (running requests)",
        "Pods serving",
    }
    _poll("the traffic panels to show data", lambda: True if not must_have_data & panels_without_data() else None,
          timeout=60)
