"""A real Prometheus scraping a real gateway process (`deepseek-worker` in gateway mode).

Prometheus gets the rendered gateway ServiceMonitor's relabelings (translated to relabel_configs, the
gateway pod's label set as a static target label, as Kubernetes discovery would) and the rules
rendered for a resource with the gateway and a fallback. The gateway's only variant has no backend
(a dead port) and holds for 1 s: every request expires (504). Checked: the gateway's series carry
`deepseek_gateway` and not `deepseek_deployment` (the worker alerts must not count the gateway), every
rendered rule evaluates with health "ok", and DeepSeekGatewayHeldRequestsExpired fires for real.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from monitoring_cases import OWNER, spec_with_canary
from test_prometheus_live import _free_port, _poll, _query, _serving

from deepseek_operator.api import parse_spec
from deepseek_operator.render.common import Capabilities
from deepseek_operator.render.monitoring import render_service_monitor, rule_groups

pytestmark = pytest.mark.slow


def _spec() -> Any:
    raw = spec_with_canary().model_dump(by_alias=True, exclude_none=True)
    raw.update(gateway={"enabled": True}, monitoring={**raw["monitoring"], "serviceMonitor": {"interval": "1s"}},
               fallback={"apiKeySecretRef": {"name": "deepseek", "key": "api-key"}},
               model={**raw["model"], "source": {"pvc": {"claimName": "models"}}})
    return parse_spec(raw)


@pytest.fixture(scope="module")
def gateway_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(API URL, metrics URL) of a gateway whose variant `primary` never gets a backend."""
    exe = Path(sys.executable).parent / "deepseek-worker"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "deepseek_worker.cli"]
    port, metrics_port, dead = _free_port(), _free_port(), _free_port()
    document = {"variants": [{"name": "primary", "weight": 100, "backends": [f"http://127.0.0.1:{dead}"]}],
                "hold": {"deadlineSeconds": 1}}
    argv = [*cmd, "--gateway-config-json", json.dumps(document), "--host", "127.0.0.1", "--port", str(port),
            "--metrics-port", str(metrics_port), "--log-level", "warning"]
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEEPSEEK_", "KUBERNETES_"))}
    with _serving("the gateway to become ready", argv, log, "/health/ready", port, 60, env) as url:
        yield url, f"http://127.0.0.1:{metrics_port}"


def _scrape_config(target: str) -> dict[str, Any]:
    """The rendered gateway ServiceMonitor endpoint as a Prometheus scrape config over a static target."""
    _, sm = render_service_monitor(OWNER, _spec(), Capabilities(service_monitor=True))
    (endpoint,) = sm["spec"]["endpoints"]
    return {
        "job_name": "chat-gateway", "scrape_interval": endpoint["interval"], "metrics_path": endpoint["path"],
        "static_configs": [{"targets": [target.removeprefix("http://")], "labels": {
            "namespace": OWNER.namespace, "pod": "chat-gateway-0", "service": "chat-gateway",
            "__meta_kubernetes_pod_label_deepseek_ai_gateway": OWNER.name}}],
        "relabel_configs": [{"source_labels": r["sourceLabels"], "target_label": r["targetLabel"],
                             "action": r["action"]} for r in endpoint["relabelings"]],
    }


@pytest.fixture(scope="module")
def prometheus(gateway_metrics: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).is_file():
        pytest.skip("prometheus not installed (tools/install-apt.sh installs Debian's prometheus package)")
    work = tmp_path_factory.mktemp("prometheus")
    (work / "rules.yaml").write_text(yaml.safe_dump(rule_groups(OWNER, _spec())))
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(work / "rules.yaml")], "scrape_configs": [_scrape_config(gateway_metrics[1])]}
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    argv = [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    with _serving("Prometheus to become ready", argv, work / "prometheus.log", "/-/ready", port, 60) as url:
        yield url


@pytest.fixture(scope="module")
def expiring(gateway_metrics: tuple[str, str]) -> Iterator[None]:
    """Requests in a loop, each held for 1 s and answered 504, while the module's tests run."""
    stop = threading.Event()

    def send() -> None:
        body = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
        with httpx.Client(base_url=gateway_metrics[0], timeout=30) as client:
            while not stop.is_set():
                try:
                    client.post("/v1/chat/completions", json=body)
                except httpx.HTTPError:
                    continue

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=35)


def test_gateway_series_carry_the_gateway_label_not_the_workers(prometheus: str, expiring: None) -> None:
    found = _poll("a scraped hold_expired series", lambda: _query(
        prometheus, "deepseek_gateway_hold_expired_total > 0") or None, timeout=60)
    labels = found[0]["metric"]
    assert (labels["deepseek_gateway"], labels["variant"], labels["namespace"]) == ("chat", "primary", "llm")
    assert "deepseek_deployment" not in labels
    edge = _poll("the gateway edge's worker-named series", lambda: _query(
        prometheus, 'deepseek_worker_requests_total{job="chat-gateway"}') or None, timeout=30)
    assert all("deepseek_deployment" not in s["metric"] for s in edge)  # the worker alerts never match them


def test_rendered_rules_evaluate_ok_and_the_expiry_alert_fires(prometheus: str, expiring: None) -> None:
    def firing() -> list[dict[str, Any]] | None:
        alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        mine = [a for a in alerts if a["labels"]["alertname"] == "DeepSeekGatewayHeldRequestsExpired"
                and a["state"] == "firing"]
        return mine or None

    (alert,) = _poll("DeepSeekGatewayHeldRequestsExpired firing", firing, timeout=60)
    assert (alert["labels"]["deepseek_gateway"], alert["labels"]["variant"]) == ("chat", "primary")
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules} >= {"DeepSeekGatewayHeldRequestsExpired", "DeepSeekGatewayFallbackAtCap"}
    assert [r["name"] for r in rules if r["health"] != "ok"] == []
