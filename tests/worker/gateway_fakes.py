"""Helpers (no tests) for the gateway suites: stub worker backends, a stub hosted API, and the
gateway itself, each under uvicorn on loopback in a thread. Every wait has a deadline."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import anyio
from fake_upstream import CHUNKS, answer_lifespan
from fakes import serve_in_thread

from deepseek_worker.gateway import build_gateway_app
from deepseek_worker.gateway.config import GatewayConfig
from deepseek_worker.gateway.status import FixedStatus
from deepseek_worker.settings import Settings

DEADLINE = 30.0
KEY = "sk-gateway-test-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def reply(name: str) -> bytes:
    """The JSON reply of stub `name` (odd spacing and an escape: relayed bytes must be identical)."""
    return (b'{"id":"chatcmpl-1","object":"chat.completion",  "served":"' + name.encode() +
            b'","choices":[{"index":0,"message":{"role":"assistant","content":"caf\\u00e9"},'
            b'"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}}')


def chat(scenario: str = "reply", stream: bool = False, model: str = "deepseek-chat") -> bytes:
    """A chat request; a stream asks for usage itself (else the gateway would, and hold CHUNKS[-2] back)."""
    request: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream,
                               "scenario": scenario}
    if stream:
        request["stream_options"] = {"include_usage": True}
    return json.dumps(request).encode()


class StubBackend:
    """A worker pod as the gateway sees it: /health/ready, /metrics with a queue gauge, chat replies.

    Scenarios (the body's `scenario`): "reply" -> reply(name); "stream" -> CHUNKS at once;
    "wait" -> CHUNKS[0], the rest once `release` is set. `status` other than 200 answers every chat
    request with that status (503: a draining pod). Attributes are set by the test thread.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.health = 200
        self.status = 200
        self.queue = 0.0
        self.release = threading.Event()
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if path == "/health/ready":
            await _send(send, self.health, "application/json", b"{}")
            return
        if path == "/metrics":
            await _send(send, 200, "text/plain", f"deepseek_worker_queue_depth {self.queue}\n".encode())
            return
        self.requests.append(({k.decode(): v.decode() for k, v in scope["headers"]}, body))
        if self.status != 200:
            await _send(send, self.status, "application/json", b'{"error":{"message":"draining"}}')
            return
        scenario = json.loads(body).get("scenario", "reply") if body else "reply"
        if scenario == "reply":
            await _send(send, 200, "application/json", reply(self.name))
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        await send({"type": "http.response.body", "body": CHUNKS[0], "more_body": True})
        if scenario == "wait":
            await anyio.to_thread.run_sync(self.release.wait, DEADLINE)
        for chunk in CHUNKS[1:]:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def _send(send: Any, status: int, content_type: str, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def serve(app: Any, port: int | None = None) -> AbstractContextManager[str]:
    """`app` under uvicorn on 127.0.0.1:`port` (a free one when None) in a thread; yields the base URL."""
    return serve_in_thread(app, port)


@contextmanager
def dead_port() -> Iterator[int]:
    """A loopback port that refuses connections for the block: bound here (so no other test process can
    start a server on it) and never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def fast(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with quick discovery (tests wait on it)."""
    return {"discovery": {"probeSeconds": 0.1, "heldProbeSeconds": 0.05, "resolveSeconds": 0.1}, **config}


@contextmanager
def gateway(config: dict[str, Any], *, status: FixedStatus | None = None, seed: int = 7, resolve: Any = None,
            config_path: Path | None = None, **settings: Any) -> Iterator[tuple[str, Any]]:
    """The gateway app (API key KEY) for `config` (a dict of the JSON document); yields (url, app).
    With `config_path`, the document is written there and re-read when it changes."""
    extra: dict[str, Any] = {"resolve": resolve} if resolve is not None else {}
    if config_path is not None:
        config_path.write_text(json.dumps(fast(config)))
        extra["config_path"] = config_path
    app = build_gateway_app(Settings(**{"api_keys": KEY, **settings}), GatewayConfig.model_validate(fast(config)),
                            status=status or FixedStatus(), seed=seed, **extra)
    with serve(app) as url:
        yield url, app
