"""A fake engine server for the proxy-mode tests (helpers, no tests): vLLM's OpenAI routes with known
bytes, SSE streams the test paces, cancellations counted, errors on demand.

A raw ASGI app, so that the bytes and their flushes are exactly the ones written here. The request
body's `scenario` picks the behaviour (the proxy forwards unknown fields, as the engine's extras):
- "reply" (default): REPLY, a JSON body with odd spacing, escapes and a usage object;
- "error": the engine's own 400 (ENGINE_ERROR);
- "stream": CHUNKS[0], then the rest once the test sets `release` (so a test can see the first
  chunk arrive while the engine has not finished);
- "hang": CHUNKS[0], then nothing until the connection closes: `cancelled` counts it;
- "slow": no response until the connection closes (the proxy's timeout fires first).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio

REPLY = (b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"served",  "choices":'
         b'[{"index":0,"message":{"role":"assistant","content":"caf\\u00e9 \xe2\x98\x95"},"finish_reason":"stop"}],'
         b'"usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}}')
ENGINE_ERROR = (b'{"object":"error","message":"n must be at most 16","type":"BadRequestError","param":null,'
                b'"code":400}')
MODELS = (b'{"object":"list","data":[{"id":"served","object":"model","created":1,"owned_by":"vllm",'
          b'"max_model_len":512}]}')
EMBEDDINGS = b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.25,-1.5]}],"model":"served"}'
CHUNKS = (
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant",'
    b'"content":""}}],"usage":null}\n\n',
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"h\\u00e9"}}],'
    b'"usage":null}\n\n',
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
    b'"usage":null}\n\n',
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}\n\n',
    b"data: [DONE]\n\n",
)
DEADLINE = 30.0


async def answer_lifespan(receive: Any, send: Any) -> None:
    """The ASGI lifespan protocol of a fake server: started at once, stopped when asked."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})

class FakeUpstream:
    """The ASGI app; its attributes are read and set by the test thread."""

    def __init__(self) -> None:
        self.health_status = 200
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []  # method, path, headers, body
        self.release = threading.Event()
        self.cancelled = 0
        self.finished = 0

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
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        if path != "/health":
            self.requests.append((scope["method"], path, headers, body))
        if path == "/health":
            await _send(send, self.health_status, "application/json", b"")
        elif path == "/v1/models":
            await _send(send, 200, "application/json", MODELS)
        elif path == "/v1/embeddings":
            await _send(send, 200, "application/json", EMBEDDINGS)
        elif path in ("/v1/chat/completions", "/v1/completions"):
            await self._generate(json.loads(body).get("scenario", "reply"), receive, send)
        else:
            await _send(send, 404, "application/json", b'{"detail":"Not Found"}')

    async def _generate(self, scenario: str, receive: Any, send: Any) -> None:
        if scenario == "reply":
            await _send(send, 200, "application/json", REPLY)
        elif scenario == "error":
            await _send(send, 400, "application/json", ENGINE_ERROR)
        elif scenario == "slow":
            await self._until_disconnect(receive)
        else:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
            await send({"type": "http.response.body", "body": CHUNKS[0], "more_body": True})
            if scenario == "hang":
                await self._until_disconnect(receive)
                return
            await anyio.to_thread.run_sync(self.release.wait, DEADLINE)
            for chunk in CHUNKS[1:]:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            self.finished += 1

    async def _until_disconnect(self, receive: Any) -> None:
        with anyio.fail_after(DEADLINE):
            while (await receive())["type"] != "http.disconnect":
                pass
        self.cancelled += 1


async def _send(send: Any, status: int, content_type: str, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
