"""Proxy mode (server/proxy.py): our edge in front of a fake engine server (fake_upstream.py), both
under uvicorn on loopback. Bytes are compared exactly; every wait has a deadline."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import CHUNKS, EMBEDDINGS, ENGINE_ERROR, MODELS, REPLY, FakeUpstream
from fakes import free_port, serve_in_thread, wait_until
from fastapi import FastAPI

from deepseek_worker.cli import load_settings
from deepseek_worker.server.proxy import build_proxy_app
from deepseek_worker.server.relay import UsageScanner
from deepseek_worker.settings import Settings

KEY = "sk-proxy-test-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
# Raw bytes with the engine's extras (n, top_k, guided_json): our protocol checks would refuse them.
CHAT = b'{"model": "served", "messages": [{"role": "user", "content": "hi"}], "n": 2, "top_k": 5, "guided_json": {}}'


def chat(scenario: str) -> bytes:
    """A chat request; a stream asks for usage, so the proxy relays it unchanged (without, it asks the
    engine for usage itself and holds the usage event back: test_metering_proxy.py)."""
    stream = scenario in ("stream", "hang")
    extra = {"stream_options": {"include_usage": True}} if stream else {}
    return json.dumps({"model": "served", "messages": [{"role": "user", "content": "hi"}],
                       "stream": stream, "scenario": scenario, **extra}).encode()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def start_upstream(stack: ExitStack) -> tuple[FakeUpstream, str]:
    fake = FakeUpstream()
    stack.callback(fake.release.set)  # never leave a stream waiting when a test fails
    url = stack.enter_context(serve_in_thread(fake))  # type: ignore[arg-type]
    return fake, url


def start_proxy(
    stack: ExitStack, upstream_url: str, *, wait_ready: bool = True, **settings: Any
) -> tuple[str, FastAPI]:
    app = build_proxy_app(Settings(upstream=upstream_url, **settings))
    url = stack.enter_context(serve_in_thread(app))
    if wait_ready:
        wait_until(lambda: app.state.upstream.ready, 30, "the proxy sees the upstream healthy")
    return url, app


@pytest.fixture
def pair(stack: ExitStack) -> tuple[FakeUpstream, str, FastAPI]:
    """A fake upstream and the proxy with one API key in front of it."""
    fake, upstream_url = start_upstream(stack)
    url, app = start_proxy(stack, upstream_url, api_keys=KEY)
    return fake, url, app


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {"content-type": "application/json", **(AUTH if headers is None else headers)}
    return httpx.post(url + "/v1/chat/completions", content=body, headers=sent, timeout=30)


def test_auth_refused_then_accepted_and_bodies_are_byte_exact(pair: tuple[FakeUpstream, str, FastAPI]) -> None:
    fake, url, _ = pair
    refused = post(url, CHAT, headers={})
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert refused.json()["error"]["type"] == "authentication_error"
    assert post(url, CHAT, headers={"Authorization": "Bearer sk-wrong"}).status_code == 401
    assert fake.requests == []  # refused requests never reach the engine

    reply = post(url, CHAT)
    assert reply.status_code == 200 and reply.content == REPLY
    assert reply.headers["content-type"] == "application/json"
    method, path, headers, body = fake.requests[0]
    assert (method, path, body) == ("POST", "/v1/chat/completions", CHAT)  # the engine's extras pass
    assert "authorization" not in headers  # our callers' keys stay with us


def test_jwt_client_credentials_in_front_of_the_engine(stack: ExitStack, tmp_path: Path) -> None:
    (tmp_path / "key").write_text("k" * 64 + "\n")
    (tmp_path / "clients").write_text("svc:svc-secret\n")
    fake, upstream_url = start_upstream(stack)
    url, _ = start_proxy(stack, upstream_url, jwt_secret_file=tmp_path / "key", jwt_clients_file=tmp_path / "clients")
    form = {"grant_type": "client_credentials", "client_id": "svc", "client_secret": "svc-secret"}
    token = httpx.post(url + "/auth/v1/token", data=form).json()["access_token"]
    assert post(url, chat("reply"), headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    assert post(url, chat("reply"), headers={"Authorization": f"Bearer {token}"}).content == REPLY
    assert len(fake.requests) == 1 and "authorization" not in fake.requests[0][2]


def test_models_embeddings_completions_and_unprefixed_routes(pair: tuple[FakeUpstream, str, FastAPI]) -> None:
    fake, url, _ = pair
    assert httpx.get(url + "/v1/models", headers=AUTH).content == MODELS
    assert httpx.get(url + "/models", headers=AUTH).content == MODELS
    embeddings = httpx.post(url + "/v1/embeddings", content=b'{"model":"served","input":"x"}', headers=AUTH)
    assert embeddings.content == EMBEDDINGS
    assert httpx.post(url + "/completions", content=chat("reply"), headers=AUTH).content == REPLY
    retrieved = httpx.get(url + "/v1/models/org/served", headers=AUTH)
    assert retrieved.status_code == 404 and retrieved.content == b'{"detail":"Not Found"}'  # the engine's answer
    assert [r[1] for r in fake.requests] == ["/v1/models", "/v1/models", "/v1/embeddings", "/v1/completions",
                                              "/v1/models/org/served"]
    # The engine's other routes are not reachable through the edge.
    assert httpx.post(url + "/v1/load_lora_adapter", content=b"{}", headers=AUTH).status_code == 404
    assert len(fake.requests) == 5


def test_engine_error_passed_through(pair: tuple[FakeUpstream, str, FastAPI]) -> None:
    _, url, _ = pair
    reply = post(url, chat("error"))
    assert reply.status_code == 400 and reply.content == ENGINE_ERROR
    assert reply.headers["content-type"] == "application/json"


def test_stream_is_incremental_and_byte_exact(pair: tuple[FakeUpstream, str, FastAPI]) -> None:
    fake, url, _ = pair
    with httpx.stream("POST", url + "/v1/chat/completions", content=chat("stream"), headers=AUTH,
                      timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        pieces = response.iter_raw()
        first = next(pieces)
        # The engine is still waiting for `release`: this chunk was relayed before it finished.
        assert first == CHUNKS[0] and fake.finished == 0
        fake.release.set()
        rest = b"".join(pieces)
    assert first + rest == b"".join(CHUNKS)
    assert fake.finished == 1


def test_rate_limit_429_with_ratelimit_headers(stack: ExitStack) -> None:
    fake, upstream_url = start_upstream(stack)
    url, _ = start_proxy(stack, upstream_url, api_keys=KEY, rate_limit_rpm=60, rate_limit_burst=1)
    allowed = post(url, chat("reply"))
    assert allowed.status_code == 200 and allowed.content == REPLY
    assert allowed.headers["x-ratelimit-limit-requests"] == "1"
    assert allowed.headers["x-ratelimit-remaining-requests"] == "0"
    refused = post(url, chat("reply"))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert len(fake.requests) == 1


def test_body_cap_applies(stack: ExitStack) -> None:
    fake, upstream_url = start_upstream(stack)
    url, _ = start_proxy(stack, upstream_url, max_body_bytes=1024)
    big = post(url, b'{"pad": "' + b"x" * 2000 + b'"}')
    assert big.status_code == 413 and big.json()["error"]["code"] == 413
    assert fake.requests == []


def test_upstream_down_is_a_503_naming_it(stack: ExitStack) -> None:
    upstream_stack = stack.enter_context(ExitStack())
    _, upstream_url = start_upstream(upstream_stack)
    url, _ = start_proxy(stack, upstream_url)
    assert post(url, chat("reply")).content == REPLY
    upstream_stack.close()  # the engine goes away
    down = post(url, chat("reply"))
    assert down.status_code == 503 and down.headers["retry-after"] == "1"
    error = down.json()["error"]
    assert error["type"] == "overloaded_error" and upstream_url in error["message"]
    assert "unreachable" in error["message"] and "Traceback" not in down.text
    ready = httpx.get(url + "/health/ready")
    assert ready.status_code == 503 and ready.json()["upstream"] == upstream_url


def test_upstream_timeout_is_a_504(stack: ExitStack) -> None:
    fake, upstream_url = start_upstream(stack)
    url, _ = start_proxy(stack, upstream_url, upstream_timeout_seconds=0.5)
    slow = post(url, chat("slow"))
    assert slow.status_code == 504
    error = slow.json()["error"]
    assert error["type"] == "timeout_error" and "DEEPSEEK_UPSTREAM_TIMEOUT_SECONDS" in error["message"]
    wait_until(lambda: fake.cancelled == 1, 10, "the timed-out upstream request closed")


def test_upstream_stalling_mid_stream_ends_it_with_an_error_event(stack: ExitStack) -> None:
    fake, upstream_url = start_upstream(stack)
    url, _ = start_proxy(stack, upstream_url, upstream_timeout_seconds=0.5)
    stalled = post(url, chat("hang"))  # CHUNKS[0], then nothing: the gap exceeds the timeout
    assert stalled.status_code == 200 and stalled.content.startswith(CHUNKS[0])
    events = stalled.content[len(CHUNKS[0]):].decode().split("\n\n")
    assert json.loads(events[0].removeprefix("data: "))["error"]["code"] == 504
    assert events[1:] == ["data: [DONE]", ""]
    wait_until(lambda: fake.cancelled == 1, 10, "the stalled upstream request closed")


def test_client_disconnect_mid_stream_cancels_upstream(pair: tuple[FakeUpstream, str, FastAPI]) -> None:
    fake, url, app = pair
    with httpx.Client(timeout=30) as client, client.stream(
        "POST", url + "/v1/chat/completions", content=chat("hang"), headers=AUTH
    ) as response:
        # Hold the iterator: a dropped httpx iterator is finalized at once and closes the connection,
        # which would make the disconnect race the check below (the flake in CI, 2026-12-05).
        raw = response.iter_raw()
        assert next(raw) == CHUNKS[0]
        wait_until(lambda: app.state.worker.inflight == 1, 10, "the stream holds one of the proxy's slots")
        assert fake.cancelled == 0  # the engine's request still runs while the client is connected
    # The response and its connection are closed: the proxy closes the engine's.
    wait_until(lambda: fake.cancelled == 1, 10, "the upstream request cancelled")
    wait_until(lambda: app.state.worker.inflight == 0, 10, "the proxy's slot freed")


def test_client_disconnect_before_the_reply_cancels_upstream_and_counts_499(
    pair: tuple[FakeUpstream, str, FastAPI],
) -> None:
    fake, url, app = pair
    host, port = url.removeprefix("http://").split(":")
    body = chat("slow")
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode() + body)
        wait_until(lambda: len(fake.requests) == 1, 10, "the request reached the upstream")
    wait_until(lambda: fake.cancelled == 1, 10, "the upstream request cancelled")
    wait_until(lambda: app.state.worker.inflight == 0, 10, "the proxy's slot freed")
    text = httpx.get(url + "/metrics", headers=AUTH).text
    assert 'deepseek_worker_requests_total{code="499",route="/v1/chat/completions"} 1.0' in text


@pytest.mark.parametrize("size", [1, 7, 64, 10_000])
def test_usage_scanner_finds_the_last_usage_across_chunk_boundaries(size: int) -> None:
    stream = b"".join(CHUNKS).replace(b"\n\n", b"\r\n\r\n", 1)  # one CRLF-framed event too
    scanner = UsageScanner()
    for start in range(0, len(stream), size):
        scanner.feed_event_bytes(stream[start : start + size])
    assert scanner.usage == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    whole = UsageScanner()
    whole.feed_body(REPLY)
    assert whole.usage is not None and whole.usage["completion_tokens"] == 5
    nothing = UsageScanner()
    nothing.feed_body(b'{"usage": null}')
    nothing.feed_event_bytes(b'data: {"usage":{"prompt_tokens":1}\n\n')  # cut JSON: ignored, no error
    assert nothing.usage is None


def test_health_503_until_the_upstream_is_healthy(stack: ExitStack) -> None:
    fake, upstream_url = start_upstream(stack)
    fake.health_status = 503
    url, _ = start_proxy(stack, upstream_url, wait_ready=False)
    for path in ("/health/ready", "/health"):
        waiting = httpx.get(url + path)
        assert waiting.status_code == 503 and waiting.json()["upstream"] == upstream_url
        assert "503" in waiting.json()["error"]
    assert httpx.get(url + "/health/live").status_code == 200  # the proxy itself is alive
    gated = post(url, chat("reply"))
    assert gated.status_code == 503 and fake.requests == []  # the API waits for the engine
    fake.health_status = 200
    assert httpx.get(url + "/health/ready").status_code == 200
    assert httpx.get(url + "/health").json()["status"] == "ready"
    assert post(url, chat("reply")).content == REPLY


def test_metrics_count_requests_and_upstream_tokens(pair: tuple[FakeUpstream, str, FastAPI]) -> None:
    fake, url, _ = pair
    assert post(url, chat("reply")).status_code == 200  # usage 7 + 5
    fake.release.set()
    assert post(url, chat("stream")).content == b"".join(CHUNKS)  # usage 3 + 4 in the last event
    assert post(url, chat("error")).status_code == 400
    assert post(url, chat("reply"), headers={}).status_code == 401
    text = httpx.get(url + "/metrics", headers=AUTH).text
    assert 'deepseek_worker_requests_total{code="200",route="/v1/chat/completions"} 2.0' in text
    assert 'deepseek_worker_requests_total{code="400",route="/v1/chat/completions"} 1.0' in text
    assert 'deepseek_worker_requests_total{code="401",route="/v1/chat/completions"} 1.0' in text
    assert "deepseek_worker_prompt_tokens_total 10.0" in text
    assert "deepseek_worker_completion_tokens_total 9.0" in text
    assert "deepseek_worker_time_to_first_token_seconds_count 1.0" in text
    assert "deepseek_worker_model_loaded 1.0" in text


def test_bad_upstream_setting_fails_at_start(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_settings(["--upstream", "http://127.0.0.1:8001/v1"])
    assert exit_info.value.code == 2
    assert "DEEPSEEK_UPSTREAM" in capsys.readouterr().err
    settings, _ = load_settings(["--upstream", "http://127.0.0.1:8001/", "--upstream-timeout-seconds", "30"])
    assert (settings.upstream, settings.upstream_timeout_seconds) == ("http://127.0.0.1:8001", 30)


def test_proxy_path_loads_no_torch() -> None:
    code = ("import sys; from deepseek_worker.cli import _app, load_settings; "
            "_app(load_settings(['--upstream', 'http://127.0.0.1:9'])[0]); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


@contextmanager
def worker_process(upstream_url: str, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`deepseek-worker` in proxy mode, configured by env alone (the operator's contract)."""
    port = free_port()
    env = {**os.environ, "DEEPSEEK_UPSTREAM": upstream_url, "DEEPSEEK_API_KEYS": KEY,
           "DEEPSEEK_HOST": "127.0.0.1", "DEEPSEEK_PORT": str(port), "DEEPSEEK_DRAIN_TIMEOUT_SECONDS": "30"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "deepseek_worker.cli"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            yield proc, f"http://127.0.0.1:{port}"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def test_cli_drains_a_stream_on_sigterm_and_logs_no_key(stack: ExitStack, tmp_path: Path) -> None:
    fake, upstream_url = start_upstream(stack)
    log = tmp_path / "worker.log"
    with worker_process(upstream_url, log) as (proc, url):
        wait_until(lambda: _status(url + "/health/ready") == 200 or proc.poll() is not None, 60, "proxy ready")
        assert proc.poll() is None, log.read_text()
        # A key in the query (where some clients put it) must not reach the access log either.
        keyed = httpx.post(url + "/v1/chat/completions?api_key=" + KEY, content=chat("reply"), headers=AUTH)
        assert keyed.content == REPLY
        received: list[bytes] = []
        first = threading.Event()

        def stream() -> None:
            with httpx.stream("POST", url + "/v1/chat/completions", content=chat("stream"), headers=AUTH,
                              timeout=30) as response:
                for piece in response.iter_raw():
                    received.append(piece)
                    first.set()

        reader = threading.Thread(target=stream, daemon=True)
        reader.start()
        assert first.wait(30), "the stream did not start"
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: _status(url + "/health/ready") == 503, 30, "readiness 503 while draining")
        assert post(url, chat("reply")).status_code == 503  # new requests refused while draining
        fake.release.set()
        reader.join(30)
        assert not reader.is_alive() and b"".join(received) == b"".join(CHUNKS)
        assert proc.wait(30) == 0
    text = log.read_text()
    assert "/v1/chat/completions" in text  # the access log is on
    assert KEY not in text
