"""The gateway as a real process (`python -m deepseek_worker.cli`, configured by env and a mounted JSON
file, as the operator will run it) in front of our worker on the tiny model; a bad configuration
exits 2; requests keep flowing while a backend pod restarts. Every process is stopped by its PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import free_port, serve_tiny, wait_until
from gateway_fakes import AUTH, KEY, StubBackend, chat, gateway, serve

MODEL = "deepseek-chat"


@contextmanager
def gateway_process(config: dict[str, Any], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`deepseek-worker` in gateway mode on a free port; SIGTERM then SIGKILL by PID when done."""
    port = free_port()
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "DEEPSEEK_GATEWAY_CONFIG": str(path), "DEEPSEEK_API_KEYS": KEY,
           "DEEPSEEK_HOST": "127.0.0.1", "DEEPSEEK_PORT": str(port), "DEEPSEEK_DRAIN_TIMEOUT_SECONDS": "5"}
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "deepseek_worker.cli"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _status(url + "/health/ready") == 200 or proc.poll() is not None, 60, "gateway up")
        assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
        yield proc, url
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(15)
        log.close()


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def events(body: bytes) -> list[Any]:
    """The stream's data events without the per-request id and timestamp."""
    out: list[Any] = []
    for line in body.split(b"\n"):
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            event = json.loads(line[6:])
            for field in ("id", "created", "system_fingerprint"):
                event.pop(field, None)
            out.append(event)
    return out


def test_gateway_process_streams_from_the_tiny_worker(tiny_model_dir: Path, tmp_path: Path) -> None:
    with serve_tiny(tiny_model_dir, MODEL, "", 16) as worker:  # behind the gateway: no key of its own
        config = {"variants": [{"name": "primary", "weight": 100, "backends": [worker]}]}
        with gateway_process(config, tmp_path) as (_, url):
            request = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "stream": True,
                       "temperature": 0, "max_tokens": 12, "stream_options": {"include_usage": True}}
            direct = httpx.post(worker + "/v1/chat/completions", json=request, timeout=120)
            through = httpx.post(url + "/v1/chat/completions", json=request, headers=AUTH, timeout=120)
            assert through.status_code == 200 and through.headers["x-served-by"] == "primary"
            assert events(through.content) == events(direct.content) and len(events(direct.content)) > 2
            assert through.content.endswith(b"data: [DONE]\n\n")
            assert httpx.post(url + "/v1/chat/completions", json=request, timeout=30).status_code == 401
            metrics = httpx.get(url + "/metrics", headers=AUTH).text
            assert 'deepseek_gateway_requests_served_total{served_by="primary"} 1.0' in metrics
            assert "deepseek_worker_completion_tokens_total" in metrics


def test_bad_gateway_configuration_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "DEEPSEEK_GATEWAY_CONFIG_JSON": '{"variants": []}'}
    out = subprocess.run([sys.executable, "-m", "deepseek_worker.cli"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "invalid gateway configuration variants" in out.stderr
    env = {**os.environ, "DEEPSEEK_GATEWAY_CONFIG_JSON": "{}", "DEEPSEEK_UPSTREAM": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-m", "deepseek_worker.cli"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "exclude each other" in out.stderr


def test_gateway_path_loads_no_torch() -> None:
    code = ("import sys; from deepseek_worker.cli import _app, load_settings; "
            "_app(load_settings(['--gateway-config-json', "
            "'{\"variants\": [{\"name\": \"a\", \"weight\": 1, \"backends\": [\"http://127.0.0.1:9\"]}]}'])[0]); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("stream", [False, True])
def test_no_request_lost_while_a_backend_restarts(stream: bool) -> None:
    with ExitStack() as stack:
        stable, restarting = StubBackend("stable"), StubBackend("restarting")
        stable_url = stack.enter_context(serve(stable))
        port = free_port()
        config = {"variants": [{"name": "v", "weight": 100,
                                "backends": [stable_url, f"http://127.0.0.1:{port}"]}]}
        url, app = stack.enter_context(gateway(config))
        pool = app.state.router.pools["v"]
        stop = threading.Event()

        def restarts() -> None:  # the pod goes away and comes back, three times
            for _ in range(3):
                with serve(restarting, port):
                    wait_until(lambda: len(pool.ready_backends()) == 2, 10, "both ready")
                    stop.wait(0.3)
                stop.wait(0.3)

        def one(_: int) -> int:
            body = chat("stream" if stream else "reply", stream=stream)
            return httpx.post(url + "/v1/chat/completions", content=body, headers=AUTH, timeout=30).status_code

        restarter = threading.Thread(target=restarts, daemon=True)
        restarter.start()
        with ThreadPoolExecutor(4) as pool_threads:
            codes = list(pool_threads.map(one, range(100)))
        stop.set()
        restarter.join(30)
        assert codes == [200] * 100
        assert restarting.requests  # it did serve while up
