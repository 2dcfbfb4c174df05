"""Relaying one upstream exchange to our client, byte for byte (proxy mode).

The engine's status, content type and body bytes reach the client unchanged: an SSE stream
(`text/event-stream`) chunk by chunk as the engine flushes them, any other body (JSON replies, the
engine's own 4xx/5xx) whole, once read. Nothing is parsed and re-serialised on the way; a copy of
the bytes is only scanned for `usage` to count tokens (our counters, and the caller's meter:
metering.py). One exception: a stream whose client did not ask for usage is requested from the engine
with `stream_options.include_usage` (`ask_for_usage`), and the engine's usage-only last event
(`"choices":[]`) is held back from the client, so the client gets what it asked for and the tokens
are still metered; such a stream is relayed event by event (the bytes of every other event unchanged).

A client that disconnects cancels the exchange (responses.until_disconnect): the upstream response
is closed, which closes its connection, and vLLM/SGLang abort a request whose connection closed.
After a stream has started, a failure of the upstream (timeout, reset) ends it the way our own
streams end on errors: one `data: {"error": ...}` event and `data: [DONE]`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ..protocol.errors import APIError
from .metering import report_usage
from .metrics import Metrics
from .responses import ClientDisconnected, until_disconnect
from .upstream import Upstream

# Response headers relayed from the engine. Framing headers (content-length, transfer-encoding,
# connection) are our server's to set; Retry-After tells the client about the engine's own 429/503.
RELAYED_RESPONSE_HEADERS = ("content-type", "content-encoding", "retry-after", "x-request-id")
SSE_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]  # no proxy buffering
_USAGE = re.compile(rb'"usage"\s*:\s*\{')
MAX_SCAN_BYTES = 1 << 20  # an event longer than this is not scanned for usage (never buffered beyond it)


class UsageScanner:
    """The last non-null `usage` object in the JSON or SSE bytes fed to it (OpenAI puts it in the
    reply, or in the last event with include_usage; vLLM's continuous usage stats repeat it, running)."""

    def __init__(self) -> None:
        self.usage: dict[str, Any] | None = None
        self._pending = b""

    def feed_event_bytes(self, chunk: bytes) -> None:
        """SSE: events end at a blank line; only events that hold a usage object are parsed."""
        data = (self._pending + chunk).replace(b"\r\n", b"\n")
        *events, self._pending = data.split(b"\n\n")
        if len(self._pending) > MAX_SCAN_BYTES:
            self._pending = b""
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:") and _USAGE.search(line):
                    self._take(line[5:])

    def feed_body(self, body: bytes) -> None:
        """A whole JSON reply."""
        if _USAGE.search(body):
            self._take(body)

    def _take(self, payload: bytes) -> None:
        try:
            usage = json.loads(payload).get("usage")
        except (ValueError, AttributeError):
            return
        if isinstance(usage, dict):
            self.usage = usage

    def count(self, metrics: Metrics, scope: Scope | None = None) -> None:
        """Add the tokens the engine reported to our counters and to the caller's meter (`scope`'s
        Ticket); nothing when it reported none."""
        usage = self.usage or {}
        counts = [_tokens(usage.get(key)) for key in ("prompt_tokens", "completion_tokens")]
        for value, counter in zip(counts, (metrics.prompt_tokens, metrics.completion_tokens), strict=True):
            if value is not None:
                counter.inc(value)
        if scope is not None and self.usage is not None:
            report_usage(scope, counts[0] or 0, counts[1] or 0)


def _tokens(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def ask_for_usage(body: bytes) -> bytes | None:
    """`body` with `stream_options.include_usage: true` when it asks for a stream without usage (the
    engine then reports it in a last event), else None (forward `body` as it is)."""
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not isinstance(request, dict) or request.get("stream") is not True:
        return None
    options = request.get("stream_options")
    if options is not None and not isinstance(options, dict):
        return None  # the engine's own 400
    if options and options.get("include_usage") is True:
        return None
    request["stream_options"] = {**(options or {}), "include_usage": True}
    return json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode()


class UsageEventFilter:
    """Whole SSE events, minus the usage-only one (`"choices":[]` with a usage) the client did not ask for."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """The complete events of what arrived so far, to send now (an event split across chunks waits)."""
        *events, self._pending = (self._pending + chunk).split(b"\n\n")
        return b"".join(event + b"\n\n" for event in events if not _usage_only(event))

    def rest(self) -> bytes:
        """What is left when the stream ends (an unterminated last event, sent as it came)."""
        rest, self._pending = self._pending, b""
        return rest


def _usage_only(event: bytes) -> bool:
    for line in event.split(b"\n"):
        if line.startswith(b"data:") and _USAGE.search(line):
            try:
                data = json.loads(line[5:])
            except ValueError:
                return False
            return isinstance(data, dict) and data.get("choices") == [] and isinstance(data.get("usage"), dict)
    return False


class RelayResponse(Response):
    """A Starlette response that performs one upstream exchange when sent (returned by the routes)."""

    def __init__(self, upstream: Upstream, metrics: Metrics, method: str, path: str, body: bytes,
                 headers: Mapping[str, str], started: float, hide_usage: bool = False) -> None:
        """`hide_usage`: `body` was rewritten by ask_for_usage; the client must not see the usage event."""
        super().__init__()
        self.upstream, self.metrics = upstream, metrics
        self.method, self.path, self.body_bytes, self.request_headers = method, path, body, headers
        self.started = started
        self.hide_usage = hide_usage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = TrackedSend(send)
        try:
            await until_disconnect(receive, self._exchange(scope, sent))
        except OSError:  # a send after the client left (uvicorn's ClientDisconnected): nobody to tell
            return
        except ClientDisconnected:
            if not sent.started:
                # nginx's "client closed request": reaches nobody but deepseek_worker_requests_total.
                await send({"type": "http.response.start", "status": 499, "headers": []})
                await send({"type": "http.response.body", "body": b""})

    async def _exchange(self, scope: Scope, send: TrackedSend) -> None:
        try:
            response = await self.upstream.open(self.method, self.path, self.body_bytes, self.request_headers)
        except APIError as err:
            await _error_response(err)(scope, _no_receive, send)
            return
        try:  # closed however this ends: done, failed, or cancelled by a client disconnect
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                await self._stream(scope, response, send)
            else:
                await self._whole(scope, response, send)
        finally:
            await response.aclose()

    async def _whole(self, scope: Scope, response: httpx.Response, send: TrackedSend) -> None:
        try:
            body = b"".join([chunk async for chunk in response.aiter_raw()])
        except httpx.HTTPError as exc:
            await _error_response(self.upstream.failure(exc))(scope, _no_receive, send)
            return
        if response.is_success and "content-encoding" not in response.headers:
            scanner = UsageScanner()
            scanner.feed_body(body)
            scanner.count(self.metrics, scope)
        headers = [*relayed_headers(response), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, scope: Scope, response: httpx.Response, send: TrackedSend) -> None:
        scanner = UsageScanner()
        hidden = UsageEventFilter() if self.hide_usage and response.is_success else None
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": [*relayed_headers(response), *SSE_HEADERS]})
        first = True
        try:
            async for chunk in response.aiter_raw():
                if first and response.is_success:
                    self.metrics.ttft.observe(time.perf_counter() - self.started)  # the engine's first event
                    first = False
                scanner.feed_event_bytes(chunk)
                out = chunk if hidden is None else hidden.feed(chunk)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            if hidden is not None and (rest := hidden.rest()):
                await send({"type": "http.response.body", "body": rest, "more_body": True})
        except httpx.HTTPError as exc:
            err = self.upstream.failure(exc)
            await send({"type": "http.response.body", "body": sse_error_tail(err), "more_body": True})
        finally:
            scanner.count(self.metrics, scope)
        await send({"type": "http.response.body", "body": b""})


def sse_error_tail(err: APIError) -> bytes:
    """How a stream whose head went out ends on an error: one SSE error event, then [DONE]."""
    return f"data: {json.dumps(err.body(), separators=(',', ':'))}\n\ndata: [DONE]\n\n".encode()


class TrackedSend:
    """An ASGI send that remembers whether the response has started."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


def relayed_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), response.headers[name].encode("latin-1"))
            for name in RELAYED_RESPONSE_HEADERS if name in response.headers]


def _error_response(err: APIError) -> JSONResponse:
    headers = err.headers()
    if err.status == 503:
        headers["Connection"] = "close"  # as admission's 503s: let the client's pool reconnect elsewhere
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def _no_receive() -> Any:
    raise RuntimeError("an error response reads nothing")
