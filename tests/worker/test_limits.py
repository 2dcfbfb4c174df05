"""Limits: token bucket, 429 + Retry-After, concurrency cap 503, drain gate, disconnect frees the slot."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fakes import FakeEngine, make_app, serve_in_thread, wait_until

from deepseek_worker.server.limits import RateLimiter, TokenBucket

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_rate() -> None:
    bucket = TokenBucket(rate=1.0, capacity=2, now=0.0)
    assert bucket.take(0.0) == 0 and bucket.take(0.0) == 0
    assert bucket.take(0.0) == 1.0
    assert bucket.take(0.5) == 0.5
    assert bucket.take(1.0) == 0


def test_rate_limiter_per_identity_and_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=6, burst=1, clock=clock)  # one token per 10 s
    assert limiter.check("a") is None
    assert limiter.check("a") == 10
    assert limiter.check("b") is None  # separate bucket
    clock.now = 4.5
    assert limiter.check("a") == 6  # ceil(5.5)
    clock.now = 10.0
    assert limiter.check("a") is None


def test_rate_limiter_off_and_bounded_memory() -> None:
    assert RateLimiter(0, 0).check("x") is None
    limiter = RateLimiter(rpm=60, burst=1, max_keys=3)
    for key in "abcdef":
        limiter.check(key)
    assert len(limiter._buckets) == 3


def asgi(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker")


async def test_429_with_retry_after_header_and_body() -> None:
    app, _ = make_app(rate_limit_rpm=30, rate_limit_burst=2, api_keys="k1,k2")
    async with asgi(app) as c:
        h1, h2 = {"Authorization": "Bearer k1"}, {"Authorization": "Bearer k2"}
        codes = [(await c.post("/v1/chat/completions", json=CHAT, headers=h1)).status_code for _ in range(2)]
        limited = await c.post("/v1/chat/completions", json=CHAT, headers=h1)
        other_key = await c.post("/v1/chat/completions", json=CHAT, headers=h2)
    assert codes == [200, 200]
    assert limited.status_code == 429
    err = limited.json()["error"]
    assert err["code"] == 429 and err["type"] == "rate_limit_error" and 1 <= err["retry_after"] <= 2
    assert limited.headers["retry-after"] == str(err["retry_after"])
    assert other_key.status_code == 200


async def test_concurrency_cap_is_503_with_retry_after() -> None:
    engine = FakeEngine(hang_after=1)
    app, _ = make_app(engine, max_concurrent_requests=2, request_timeout_seconds=5)
    async with asgi(app) as c:
        hung = [asyncio.create_task(c.post("/v1/chat/completions", json=CHAT)) for _ in range(2)]
        for _ in range(500):  # deadline 5 s: both requests reach the engine
            if len(engine.active) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(engine.active) == 2
        refused = await c.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == 503
        assert (await c.get("/health/live")).status_code == 200  # health is never capped
        for task in hung:
            task.cancel()
        await asyncio.gather(*hung, return_exceptions=True)


async def test_draining_refuses_new_requests() -> None:
    app, _ = make_app()
    app.state.worker.draining = True
    async with asgi(app) as c:
        r = await c.post("/v1/chat/completions", json=CHAT)
        ready = await c.get("/health/ready")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert ready.status_code == 503 and ready.json()["status"] == "draining"


def test_client_disconnect_mid_stream_frees_engine_slot() -> None:
    engine = FakeEngine(hang_after=2)
    app, _ = make_app(engine)
    with serve_in_thread(app) as url:
        port = int(url.rsplit(":", 1)[1])
        body = json.dumps({**CHAT, "stream": True}).encode()
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        sock.sendall(request)
        received = b""
        while b'"content":" from"' not in received:  # two tokens arrived, the third hangs
            chunk = sock.recv(65536)
            assert chunk, "server closed early"
            received += chunk
        assert len(engine.active) == 1 and app.state.worker.inflight == 1
        sock.close()
        wait_until(lambda: not engine.active and app.state.worker.inflight == 0, 10, "slot freed")
        assert len(engine.closed) == 1


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_client_disconnect_non_streamed_frees_engine_slots_within_a_second(path: str) -> None:
    """Issue 19: six non-streamed requests whose clients leave after 0.3 s used to generate on to
    max_tokens; their slots are free within a second of the disconnect and new requests are served."""
    engine = FakeEngine(step_delay=0.5)  # 10 tokens: 5 s per request unless cancelled
    app, _ = make_app(engine, max_concurrent_requests=6, max_concurrent_requests_per_key=6)
    body = {**CHAT, "stream": False} if path.endswith("chat/completions") else {"model": "fake", "prompt": "hi"}

    def abandon(_: int) -> None:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(url + path, json=body, timeout=httpx.Timeout(10, read=0.3))

    with serve_in_thread(app) as url, ThreadPoolExecutor(6) as pool:
        list(pool.map(abandon, range(6)))  # all six connections are closed when this returns
        left = time.monotonic()
        wait_until(lambda: not engine.active and app.state.worker.inflight == 0, 1.0, "slots freed within 1 s")
        assert time.monotonic() - left < 1.0 and len(engine.closed) == 6
        engine.step_delay = 0.0
        assert httpx.post(url + path, json=body, timeout=10).status_code == 200
