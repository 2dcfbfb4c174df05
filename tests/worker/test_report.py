"""report.py: the worker's measurements go to its report ConfigMap as the operator reads them, and a
report that cannot be written never raises."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from deepseek_operator.api import parse_spec, resolve_variants
from deepseek_operator.measured import expected_settings, read_report
from deepseek_operator.render.common import Owner
from deepseek_operator.render.workload import render_workload
from deepseek_worker.report import report_measurements
from deepseek_worker.settings import Settings
from deepseek_worker.types import EngineMeasurements

MEASURED = EngineMeasurements(weight_bytes=15_231_000_000, kv_cache_bytes_per_token=57344, kv_pool_tokens=131072,
                              kv_pool_bytes=131072 * 57344, peak_memory_bytes=24_000_000_000, load_seconds=41.27,
                              device="cuda:0")


class Api:
    """A stand-in API server: records each request, answers `status`."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200


@pytest.fixture
def api() -> Iterator[tuple[Api, str]]:
    state = Api()

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
            payload = json.dumps({"kind": "Status", "message": "configmaps is forbidden"}).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def operator_env(tmp_path: Path) -> tuple[Any, dict[str, str]]:
    """The DeepSeekDeployment's spec and the worker env the operator renders for its primary."""
    spec = parse_spec({"image": "r/w:1", "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"},
                       "serving": {"gpuMemoryUtilization": 0.85, "maxNumBatchedTokens": 1024}})
    dep = next(c for c in render_workload(Owner("chat", "team-a", "u"), spec) if c["kind"] == "Deployment")
    env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"] if "value" in e}
    token = tmp_path / "token"
    token.write_text("the-token\n")
    env.update(HOSTNAME="chat-primary-7d9f-abcde", DEEPSEEK_KUBE_TOKEN_FILE=str(token))
    return spec, env


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in env.items():
        if name.startswith("DEEPSEEK_") and not name.startswith("DEEPSEEK_KUBE_"):
            monkeypatch.setenv(name, value)
    return Settings()


def test_the_report_is_what_the_operator_reads(api: tuple[Api, str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    state, url = api
    spec, env = operator_env(tmp_path)
    settings = settings_from(env, monkeypatch)
    assert report_measurements(MEASURED, settings, {**env, "DEEPSEEK_KUBE_API": url}) is True
    [request] = state.requests
    assert request["path"] == "/api/v1/namespaces/team-a/configmaps/chat-primary-report"
    assert request["headers"]["Authorization"] == "Bearer the-token"
    assert request["headers"]["Content-Type"] == "application/merge-patch+json"
    config_map = {"data": request["body"]["data"]}
    found = read_report(config_map, expected_settings(resolve_variants(spec)[0], spec.serving))
    assert found is not None
    assert (found.pod, found.weight_bytes, found.kv_pool_tokens, found.peak_memory_bytes, found.device) == (
        "chat-primary-7d9f-abcde", 15_231_000_000, 131072, 24_000_000_000, "cuda:0")
    assert found.load_seconds == pytest.approx(41.27)


def test_a_refused_or_unreachable_report_logs_and_returns_false(api: tuple[Api, str], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    state, url = api
    state.status = 403
    _, env = operator_env(tmp_path)
    settings = settings_from(env, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="deepseek_worker.report"):
        assert report_measurements(MEASURED, settings, {**env, "DEEPSEEK_KUBE_API": url}) is False
        assert report_measurements(MEASURED, settings, {**env, "DEEPSEEK_KUBE_API": "http://127.0.0.1:1"}) is False
        assert report_measurements(MEASURED, settings, {**env, "DEEPSEEK_KUBE_API": "http://bad host"}) is False
    assert "HTTP 403 Forbidden: configmaps is forbidden" in caplog.text and "serving goes on" in caplog.text


def test_no_report_outside_a_cluster_or_unconfigured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, env = operator_env(tmp_path)
    settings = settings_from(env, monkeypatch)
    outside = {k: v for k, v in env.items() if not k.startswith("KUBERNETES_")}
    assert report_measurements(MEASURED, settings, outside) is False
    assert report_measurements(MEASURED, Settings(report_configmap=None), {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) \
        is False
