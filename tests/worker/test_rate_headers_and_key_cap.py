"""OpenAI's x-ratelimit-*-requests headers, and the per-key concurrency cap (streamed requests)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from fakes import FakeEngine, make_app, serve_in_thread, wait_until
from pydantic import ValidationError

from deepseek_worker.settings import Settings

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def asgi(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rate(r: httpx.Response) -> tuple[str, str, str]:
    limit, remaining, reset = (r.headers[h] for h in HEADERS)
    return limit, remaining, reset


# -- 3. x-ratelimit-*-requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.0001, "1ms"), (0.012, "12ms"), (0.9995, "1s"), (1, "1s"), (1.5, "1.5s"), (59.25, "59.25s"),
     (60, "1m0s"), (360, "6m0s"), (330, "5m30s"), (3725, "1h2m5s"), (7200, "2h0m0s")],
)
def test_openai_duration_format(seconds: float, text: str) -> None:
    from deepseek_worker.server.limits import openai_duration

    assert openai_duration(seconds) == text


async def test_rate_limit_headers_on_success_and_429() -> None:
    app, _ = make_app(api_keys="k1,k2", rate_limit_rpm=1, rate_limit_burst=6)  # 6 at once, then one a minute
    clock = Clock()
    app.state.rate_limiter.clock = clock
    async with asgi(app) as c:
        replies = [await c.post("/v1/chat/completions", json=CHAT, headers=bearer("k1")) for _ in range(7)]
        assert [r.status_code for r in replies] == [200] * 6 + [429]
        assert [rate(r) for r in replies[:6]] == [
            ("6", "5", "1m0s"), ("6", "4", "2m0s"), ("6", "3", "3m0s"),
            ("6", "2", "4m0s"), ("6", "1", "5m0s"), ("6", "0", "6m0s"),
        ]
        limited = replies[6]
        assert rate(limited) == ("6", "0", "6m0s") and limited.headers["retry-after"] == "60"
        assert limited.json()["error"]["code"] == 429 and limited.json()["error"]["type"] == "rate_limit_error"
        clock.now = 30.0  # half a token back
        later = await c.post("/v1/chat/completions", json=CHAT, headers=bearer("k1"))
        assert later.status_code == 429 and later.headers["retry-after"] == "30"
        assert rate(later) == ("6", "0", "5m30s")
        other = await c.get("/v1/models", headers=bearer("k2"))  # its own bucket
        assert other.status_code == 200 and rate(other) == ("6", "5", "1m0s")
        stream = await c.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=bearer("k2"))
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        assert rate(stream) == ("6", "4", "2m0s")
        for path in ("/health/live", "/metrics"):  # not rate limited: no headers (/metrics needs the key)
            r = await c.get(path, headers=bearer("k1"))
            assert r.status_code == 200 and not set(HEADERS) & set(r.headers), path
        unauthenticated = await c.get("/v1/models")  # refused before the limiter: nothing to report
        assert unauthenticated.status_code == 401 and not set(HEADERS) & set(unauthenticated.headers)


async def test_no_rate_limit_headers_when_limiting_is_off() -> None:
    app, _ = make_app()
    async with asgi(app) as c:
        r = await c.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200 and not set(HEADERS) & set(r.headers)


# -- 6. per-key concurrency cap -----------------------------------------------------------------------


def test_per_key_concurrency_setting() -> None:
    assert Settings().per_key_concurrency == 32  # half of max_concurrent_requests (64)
    assert Settings(max_concurrent_requests=1).per_key_concurrency == 1
    assert Settings(max_concurrent_requests=3).per_key_concurrency == 1
    assert Settings(max_concurrent_requests=8, max_concurrent_requests_per_key=8).per_key_concurrency == 8
    with pytest.raises(ValidationError, match="max_concurrent_requests_per_key must not exceed"):
        Settings(max_concurrent_requests=8, max_concurrent_requests_per_key=9)


async def _open_stream(stack: AsyncExitStack, c: httpx.AsyncClient, key: str) -> httpx.Response:
    """Start a streamed chat and read up to its first token (the fake engine then hangs)."""
    r = await stack.enter_async_context(
        c.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=bearer(key))
    )
    if r.status_code == 200:
        # Not `async for ... break`: closing the iterator closes the stream. The stack keeps it.
        lines = r.aiter_lines()
        stack.push_async_callback(lines.aclose)
        while '"content":"Hello"' not in await anext(lines):
            pass
    return r


async def _until(predicate: Any, what: str) -> None:
    for _ in range(500):  # 10 s
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_per_key_cap_429_while_other_keys_get_slots() -> None:
    engine = FakeEngine(hang_after=1)
    app, _ = make_app(engine, api_keys="k1,k2,k3", max_concurrent_requests=4)  # per-key cap: 2
    with serve_in_thread(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as c, AsyncExitStack() as stack:
            first = AsyncExitStack()
            held = [await _open_stream(first, c, "k1"), await _open_stream(stack, c, "k1")]
            assert [r.status_code for r in held] == [200, 200] and len(engine.active) == 2
            refused = await c.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=bearer("k1"))
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "1"
            assert refused.json() == {
                "error": {
                    "message": "This API key already has 2 requests in flight, its limit on this worker; "
                    "retry when one has finished.",
                    "type": "rate_limit_error",
                    "param": None,
                    "code": 429,
                    "retry_after": 1,
                }
            }
            # Another key still gets the worker's free slots.
            others = [await _open_stream(stack, c, "k2"), await _open_stream(stack, c, "k2")]
            assert [r.status_code for r in others] == [200, 200] and len(engine.active) == 4
            # The worker is full: a key under its own cap meets the worker's cap (503).
            full = await c.post("/v1/chat/completions", json=CHAT, headers=bearer("k3"))
            assert full.status_code == 503 and full.headers["retry-after"] == "1"
            # A finished stream gives k1 its slot back.
            await first.aclose()
            await _until(lambda: app.state.worker.inflight == 3, "k1's first stream to end")
            again = await _open_stream(stack, c, "k1")
            assert again.status_code == 200 and len(engine.active) == 4
        wait_until(lambda: app.state.worker.inflight == 0, 10, "all streams to end")


async def test_no_per_key_cap_without_auth() -> None:
    """Without auth the identity is the client address, shared by everyone behind an ingress."""
    engine = FakeEngine(hang_after=1)
    app, _ = make_app(engine, max_concurrent_requests=4, request_timeout_seconds=5)
    async with asgi(app) as c:
        hung = [asyncio.create_task(c.post("/v1/chat/completions", json=CHAT)) for _ in range(4)]
        await _until(lambda: len(engine.active) == 4, "four requests in the engine")
        refused = await c.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 503  # only the worker's cap applies
        for task in hung:
            task.cancel()
        await asyncio.gather(*hung, return_exceptions=True)

