"""SIGTERM drain with a real `deepseek-worker --model tiny` process: in-flight streams complete,
new requests and readiness get 503, and the process exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fakes import free_port, wait_until

pytestmark = pytest.mark.slow
STREAMS = 3
MAX_TOKENS = 300  # about a second or more of generation on a CPU: in flight at SIGTERM


@pytest.fixture
def worker(tiny_model_dir: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DEEPSEEK_MAX_MODEL_LEN": "4096",
        "DEEPSEEK_DRAIN_TIMEOUT_SECONDS": "60",
    }
    cmd = [sys.executable, "-m", "deepseek_worker.cli", "--model", "tiny", "--host", "127.0.0.1", "--port", str(port)]
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _status(url + "/health/ready") == 200 or proc.poll() is not None, 120, "worker ready")
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        log.close()


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


class Stream(threading.Thread):
    """One streaming chat request; records the parsed events and the first-byte moment."""

    def __init__(self, url: str, max_tokens: int = MAX_TOKENS) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.max_tokens = max_tokens
        self.events: list[object] = []
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.done = False

    def run(self) -> None:
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        try:
            with httpx.stream("POST", self.url + "/v1/chat/completions", json=body, timeout=60) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        data = line[len("data: ") :]
                        self.events.append(data if data == "[DONE]" else json.loads(data))
                        self.started.set()
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.done = True
            self.started.set()


def test_sigterm_drains_streams_then_exits_zero(worker: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, url = worker
    streams = [Stream(url) for _ in range(STREAMS)]
    for s in streams:
        s.start()
    for s in streams:
        assert s.started.wait(60), "stream did not start"
    assert not all(s.done for s in streams), "streams finished before SIGTERM: nothing to drain"
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: _status(url + "/health/ready") == 503, 30, "readiness 503")
    refused = httpx.post(url + "/v1/chat/completions", json={"model": "tiny", "messages": []}, timeout=10)
    assert refused.status_code == 503 and "retry-after" in refused.headers
    assert refused.json()["error"]["code"] == 503
    for s in streams:
        s.join(60)
        assert not s.is_alive() and s.error is None, s.error
        assert s.events[-1] == "[DONE]"
        usage = s.events[-2]
        assert isinstance(usage, dict) and usage["usage"]["completion_tokens"] >= 1
        assert s.events[-3]["choices"][0]["finish_reason"] in {"stop", "length"}  # type: ignore[index]
    assert proc.wait(60) == 0


def test_drain_timeout_bounds_the_wait(tiny_model_dir: Path, tmp_path: Path) -> None:
    """With drain_timeout 0 a SIGTERM during a long stream still exits 0, promptly."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DEEPSEEK_DRAIN_TIMEOUT_SECONDS": "0", "DEEPSEEK_MAX_MODEL_LEN": "4096"}
    cmd = [sys.executable, "-m", "deepseek_worker.cli", "--model", "tiny", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _status(url + "/health/ready") == 200 or proc.poll() is not None, 120, "worker ready")
        stream = Stream(url, max_tokens=1500)
        stream.start()
        assert stream.started.wait(60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0  # the stream (1500 tokens) was cut, not awaited
        stream.join(30)
        assert stream.events[-1:] != ["[DONE]"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
