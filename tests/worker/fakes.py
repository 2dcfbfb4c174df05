"""Test doubles and harness for the HTTP layer: a deterministic FakeEngine and a uvicorn thread.

FakeEngine implements EngineProtocol with one token per whitespace-separated word of the prompt
and a fixed reply split into word pieces, so token counts in assertions are easy to derive.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from deepseek_worker.server import build_app
from deepseek_worker.settings import Settings
from deepseek_worker.types import EngineMeasurements, EngineStats, GenerationChunk, SamplingParams

DEADLINE = 30.0


class FakeEngine:
    """Deterministic engine: replies with `reply` (word by word), honouring max_tokens and stop."""

    def __init__(
        self,
        reply: str = "Hello from the fake engine, nice to meet you.",
        *,
        max_model_len: int = 256,
        ready: bool = True,
        step_delay: float = 0.0,
        hang_after: int | None = None,
        fail: bool = False,
        first_delay: float = 0.0,
        generation_defaults: dict[str, float] | None = None,
    ) -> None:
        self.model_name = "fake"
        self.max_model_len = max_model_len
        self.reply = reply
        self._ready = ready
        self.step_delay = step_delay
        self.hang_after = hang_after  # after this many tokens, block until cancelled
        self.fail = fail
        self.first_delay = first_delay  # seconds before the first chunk (queued / long prefill)
        self.defaults = dict(generation_defaults or {})
        self.healthy = True  # a test sets False to play a wedged device
        self.active: set[str] = set()
        self.closed: list[str] = []
        self.started = False
        self.stopped = False
        self.last_params: SamplingParams | None = None
        self.lookups = 0

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def generation_defaults(self) -> dict[str, float]:
        return dict(self.defaults)

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        return "".join(f"<|{m['role']}|> {m['content']}\n" for m in messages) + "<|assistant|>"

    def tokenize(self, text: str) -> list[int]:
        text.encode("utf-8")  # raises on a lone surrogate, as a real (Rust) tokenizer does
        return [len(word) for word in text.split()]

    def measurements(self) -> EngineMeasurements:
        return EngineMeasurements(weight_bytes=1000, kv_cache_bytes_per_token=10, kv_pool_tokens=256,
                                  kv_pool_bytes=2560, load_seconds=0.1)

    def stats(self) -> EngineStats:
        return EngineStats(
            running=len(self.active),
            prefix_cache_bytes=1024,
            prefix_cache_capacity_bytes=4096,
            prefix_cache_hits=self.lookups // 2,
            prefix_cache_lookups=self.lookups,
        )

    async def start(self) -> None:
        self.started = True
        self._ready = True

    async def stop(self) -> None:
        self.stopped = True

    def pieces(self) -> list[str]:
        words = self.reply.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[GenerationChunk]:
        self.last_params = params
        self.lookups += 1
        self.active.add(request_id)
        try:
            if self.fail:
                yield GenerationChunk("", "error", len(prompt_ids), error="boom")
                return
            async for chunk in self._script(prompt_ids, params):
                yield chunk
        finally:
            self.active.discard(request_id)
            self.closed.append(request_id)

    async def _script(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        text = ""
        pieces = self.pieces()
        await asyncio.sleep(self.first_delay)
        for count, piece in enumerate(pieces[: params.max_tokens], start=1):
            if self.hang_after is not None and count > self.hang_after:
                await asyncio.Event().wait()  # until cancelled
            await asyncio.sleep(self.step_delay)
            text += piece
            hit = next((s for s in params.stop if s in text), None)
            if hit is not None:
                keep = text[: text.index(hit)]
                yield GenerationChunk(keep[len(text) - len(piece) :], "stop", len(prompt_ids), count)
                return
            last = count == min(len(pieces), params.max_tokens)
            reason = None if not last else ("stop" if count == len(pieces) else "length")
            yield GenerationChunk(piece, reason, len(prompt_ids), count, cached_prompt_tokens=1)


def make_app(engine: Any | None = None, **settings: Any) -> tuple[FastAPI, Any]:
    """build_app with a FakeEngine (unless given) and settings overrides. Returns (app, engine)."""
    engine = engine if engine is not None else FakeEngine()
    settings.setdefault("max_model_len", engine.max_model_len)
    settings.setdefault("max_new_tokens", min(64, engine.max_model_len - 1))
    settings.setdefault("model", "fake")
    return build_app(engine, Settings(**settings)), engine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any, port: int | None = None) -> Iterator[str]:
    """Run `app` under uvicorn on 127.0.0.1:`port` (a free one when None) in a thread; yields the base URL.

    The listening socket is bound here and handed to uvicorn, so no other process (the other pytest
    lane) can take a port between choosing it and listening on it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port given again after a restart
    sock.bind(("127.0.0.1", port or 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + DEADLINE
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(DEADLINE)
        sock.close()


def wait_until(predicate: Any, timeout: float = DEADLINE, what: str = "condition") -> None:
    """Poll `predicate` until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def serve_tiny(model_dir: Any, model: str, api_key: str, max_new_tokens: int) -> Iterator[str]:
    """The real engine on the tiny model behind uvicorn, with one API key; yields the base URL once ready."""
    import httpx

    from deepseek_worker.engine import Engine

    settings = Settings(model=str(model_dir), served_model_name=model, max_model_len=512,
                        max_new_tokens=max_new_tokens, api_keys=api_key)
    app = build_app(Engine(settings.engine_config()), settings)
    with serve_in_thread(app) as url:
        wait_until(lambda: httpx.get(url + "/health/ready").status_code == 200, 120, "model load")
        yield url


def asgi_client(engine: Any | None = None, **settings: Any) -> tuple[Any, Any]:
    """An httpx client talking to make_app() in process (no server), and the engine behind it."""
    import httpx

    app, eng = make_app(engine, **settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker"), eng


def sse_events(body: str) -> list[Any]:
    """Parse an SSE body into JSON payloads (and the literal "[DONE]"); comments (`: keep-alive`)
    are skipped, as SSE clients do."""
    import json

    out: list[Any] = []
    for block in body.strip().split("\n\n"):
        if block.startswith(":"):
            continue
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out
