"""One request through the gateway: choose, hold, forward with retry, or spill over; relay the bytes.

`Router` holds what every request needs (the variants' pools and holds, the fallback rule and the
hosted API, metrics); `GatewayResponse` performs one request when Starlette sends it:

1. a variant is drawn by weight among those with a ready backend (choose.py); one drawn by weight but
   passed over for want of a ready backend is marked wanted (hold.py), which wakes it from zero;
2. with a ready backend: Overloaded (every backend at the threshold) goes out when the rule allows,
   else the least-loaded backend gets it; a backend that fails before answering (refused, reset, or
   its own 503 while draining) loses its readiness and the next one is tried. When none is left the
   request goes out if Unavailable allows, else it is held;
3. without one: out if ColdStart allows, else held (hold.py) until a backend is ready or the hold's
   deadline passes (504). A full hold queue: out if Overloaded allows, else 429 with Retry-After.
   A held streaming request gets its SSE head at once and `: waiting: <phase>` comment lines;
4. the answer's bytes reach the client unchanged (as relay.py), with `x-served-by: <variant>` or
   `x-served-by: fallback`. The caller's key's tokens are metered under that same name (`variant`).

A worker pod gets the caller's priority (its key's, `interactive` without auth) in
`x-deepseek-priority`, always ours: a client's own header never passes (upstream.py's allow-list).
The hosted API never gets it.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ..protocol.errors import APIError
from ..server.keys import PRIORITY_HEADER, Priority
from ..server.metering import report_served_by
from ..server.metrics import Metrics
from ..server.relay import SSE_HEADERS, TrackedSend, UsageEventFilter, UsageScanner, relayed_headers, sse_error_tail
from ..server.responses import ClientDisconnected, until_disconnect
from ..server.upstream import Upstream
from .backends import Backend, Pool
from .choose import choose_variant
from .config import FallbackReason, GatewayConfig
from .fallback import FallbackRule, HostedAPI
from .hold import Hold, HoldFull
from .metrics import GatewayMetrics
from .report import ColdStarts
from .status import StatusSource

FALLBACK = "fallback"
SSE_CONTENT_TYPE = b"text/event-stream; charset=utf-8"


@dataclass
class Router:
    """Everything shared by the requests of one gateway (built by app.py)."""

    config: GatewayConfig
    pools: dict[str, Pool]
    holds: dict[str, Hold]
    rule: FallbackRule
    hosted: HostedAPI | None
    metrics: Metrics
    gateway_metrics: GatewayMetrics
    status: StatusSource
    rng: random.Random
    cold_starts: ColdStarts = field(default_factory=ColdStarts)  # what report.py sends the operator


def wants_stream(body: bytes) -> bool:
    """Whether the request body asks for an SSE stream (`"stream": true`)."""
    if b'"stream"' not in body:
        return False
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    return isinstance(payload, dict) and payload.get("stream") is True


class _Client(TrackedSend):
    """The ASGI send of one client, remembering whether the head went out (and whether as SSE)."""

    async def start_sse(self, served_by: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = extra if extra is not None else [(b"content-type", SSE_CONTENT_TYPE)]
        await self({"type": "http.response.start", "status": 200,
                    "headers": [*headers, *SSE_HEADERS, (b"x-served-by", served_by.encode())]})

    async def body(self, chunk: bytes, more: bool = True) -> None:
        await self({"type": "http.response.body", "body": chunk, "more_body": more})

    async def error(self, err: APIError, scope: Scope) -> None:
        """As JSON before the head went out, else as one SSE error event and [DONE]."""
        if self.started:
            await self.body(sse_error_tail(err), more=False)
            return
        headers = err.headers()
        if err.status == 503:
            headers["Connection"] = "close"
        await JSONResponse(err.body(), status_code=err.status, headers=headers)(scope, _no_receive, self)


class _Retry(Exception):
    """The backend failed before any byte reached the client: try another."""


class GatewayResponse(Response):
    """A Starlette response that routes and relays one request when sent."""

    def __init__(self, router: Router, method: str, path: str, body: bytes, headers: Mapping[str, str],
                 names: frozenset[str], started: float, hide_usage: bool = False,
                 priority: Priority = "interactive") -> None:
        """`names`: the caller's identity and key id (fallback.allowExternal matches either);
        `hide_usage`: `body` was rewritten by relay.ask_for_usage, so the usage-only event is held back;
        `priority`: the caller's key's, sent to the worker pods (PRIORITY_HEADER)."""
        super().__init__()
        self.router = router
        self.method, self.path, self.body_bytes, self.request_headers = method, path, body, headers
        self.names = names
        self.started = started
        self.hide_usage = hide_usage
        self.backend_headers = {PRIORITY_HEADER: priority}  # set over whatever the client sent
        self.stream = wants_stream(body)
        self.scope: Scope | None = None  # for the caller's meter (metering.report_served_by, report_usage)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = _Client(send)
        self.scope = scope
        try:
            await until_disconnect(receive, self._route(scope, client))
        except OSError:
            return
        except ClientDisconnected:
            if not client.started:
                await send({"type": "http.response.start", "status": 499, "headers": []})
                await send({"type": "http.response.body", "body": b""})

    async def _route(self, scope: Scope, client: _Client) -> None:
        router = self.router
        draw = choose_variant(router.config.variants, lambda name: router.pools[name].has_ready, router.rng)
        if draw.passed_over:  # wake it (its ScaledObject reads `wanted`) while a ready variant serves
            router.holds[draw.drawn.name].pass_over()
            router.gateway_metrics.passed_over.labels(draw.drawn.name).inc()
        variant = draw.served
        pool, hold = router.pools[variant.name], router.holds[variant.name]
        if pool.has_ready:
            hold.warm()
            if router.rule.overloaded(pool.overloaded) and await self._out("Overloaded", scope, client):
                return
            if await self._local(pool, scope, client, held=False):
                return
            if await self._out("Unavailable", scope, client):
                return
        elif await self._out("ColdStart", scope, client):
            return
        try:
            hold.enter()
        except HoldFull as full:
            if await self._out("Overloaded", scope, client):
                return
            router.gateway_metrics.hold_refused.labels(variant.name).inc()
            message = (f"Variant {variant.name} has no ready backend and its hold queue is full "
                       f"({hold.max_queue} requests); retry later.")
            await client.error(APIError(429, message, retry_after=full.retry_after), scope)
            return
        try:
            await self._held(pool, hold, scope, client)
        finally:
            hold.leave()

    async def _held(self, pool: Pool, hold: Hold, scope: Scope, client: _Client) -> None:
        """Wait for a ready backend (with `: waiting:` comments on a stream) until the deadline."""
        settings = self.router.config.hold
        deadline = time.monotonic() + settings.deadlineSeconds
        said, said_at = None, -float("inf")
        while True:
            if pool.has_ready and await self._local(pool, scope, client, held=True, hold=hold):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self.stream:
                phase = await self.router.status.describe(pool.variant)
                text = f": waiting: {phase}" if phase else ": waiting"
                if text != said or time.monotonic() - said_at >= settings.commentSeconds:
                    if not client.started:
                        await client.start_sse(pool.variant)
                    await client.body(text.encode() + b"\n\n")
                    said, said_at = text, time.monotonic()
            await pool.wait_changed(min(left, settings.commentSeconds))
        self.router.gateway_metrics.hold_expired.labels(pool.variant).inc()
        message = (f"No backend of variant {pool.variant} became ready within {settings.deadlineSeconds:g} s "
                   "(scale from zero); retry later.")
        await client.error(APIError(504, message), scope)

    async def _out(self, reason: FallbackReason, scope: Scope, client: _Client) -> bool:
        """Send the request to the hosted API when the rule allows `reason`; False when it does not."""
        router = self.router
        if router.hosted is None or not router.rule.allows(reason, self.names):
            return False
        router.rule.window.record(True)
        await self._relay(router.hosted, FALLBACK, scope, client, retry=False)  # never raises _Retry
        router.gateway_metrics.served.labels(FALLBACK).inc()
        return True

    async def _local(self, pool: Pool, scope: Scope, client: _Client, *, held: bool,
                     hold: Hold | None = None) -> bool:
        """Try the pool's backends, least loaded first; False when none answered before a byte was sent."""
        tried: list[Backend] = []
        while (backend := pool.least_loaded(exclude=tried)) is not None:
            tried.append(backend)
            backend.inflight += 1
            try:
                await self._relay(backend.upstream, pool.variant, scope, client, retry=True, hold=hold,
                                  extra=self.backend_headers)
            except _Retry:
                pool.set_ready(backend, False)  # until its next healthy probe
                self.router.gateway_metrics.retries.labels(pool.variant).inc()
                continue
            finally:
                backend.inflight -= 1
            self.router.rule.window.record(False)
            self.router.gateway_metrics.served.labels(pool.variant).inc()
            return True
        return False

    async def _relay(self, upstream: Upstream, served_by: str, scope: Scope, client: _Client, *, retry: bool,
                     hold: Hold | None = None, extra: Mapping[str, str] | None = None) -> None:
        """One exchange with `upstream` (`extra`: our headers for it); raises _Retry (when `retry`) if
        it failed before any byte."""
        try:
            response = await upstream.open(self.method, self.path, self.body_bytes, self.request_headers, extra)
        except APIError as err:
            if retry and err.status == 503:
                raise _Retry from err
            await client.error(err, scope)
            return
        try:
            if retry and response.status_code == 503:  # a draining or overloaded pod: another may serve
                raise _Retry
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                await self._stream(upstream, response, served_by, client, retry, hold)
            else:
                await self._whole(upstream, response, served_by, scope, client, retry, hold)
        finally:
            await response.aclose()

    def _first_byte(self, served_by: str, hold: Hold | None) -> None:
        took = hold.first_byte() if hold is not None else None
        if took is not None:
            self.router.gateway_metrics.cold_start.labels(served_by).observe(took)
            self.router.cold_starts.record(served_by, took)

    async def _whole(self, upstream: Upstream, response: httpx.Response, served_by: str, scope: Scope,
                     client: _Client, retry: bool, hold: Hold | None) -> None:
        try:
            body = b"".join([chunk async for chunk in response.aiter_raw()])
        except httpx.HTTPError as exc:
            if retry:
                raise _Retry from exc
            await client.error(upstream.failure(exc), scope)
            return
        self._first_byte(served_by, hold)
        if response.is_success and "content-encoding" not in response.headers:
            scanner = UsageScanner()
            scanner.feed_body(body)
            self._meter(scanner, served_by)
        if client.started:  # a held stream whose backend answered JSON (an error): one error event
            await client.body(b"data: " + body.replace(b"\n", b"") + b"\n\ndata: [DONE]\n\n", more=False)
            return
        headers = [*relayed_headers(response), (b"content-length", str(len(body)).encode()),
                   (b"x-served-by", served_by.encode())]
        await client({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await client.body(body, more=False)

    async def _stream(self, upstream: Upstream, response: httpx.Response, served_by: str, client: _Client,
                      retry: bool, hold: Hold | None) -> None:
        scanner = UsageScanner()
        hidden = UsageEventFilter() if self.hide_usage and response.is_success else None
        chunks = response.aiter_raw()
        try:  # the head goes out with the first chunk: a backend that dies before it is retried
            first = await anext(chunks, b"")
        except httpx.HTTPError as exc:
            if retry:
                raise _Retry from exc
            first = b""
        self._first_byte(served_by, hold)
        if response.is_success:
            self.router.metrics.ttft.observe(time.perf_counter() - self.started)
        if not client.started:
            await client.start_sse(served_by, relayed_headers(response))
        try:
            chunk = first
            while chunk:
                scanner.feed_event_bytes(chunk)
                out = chunk if hidden is None else hidden.feed(chunk)
                if out:
                    await client.body(out)
                chunk = await anext(chunks, b"")
            if hidden is not None and (rest := hidden.rest()):
                await client.body(rest)
        except httpx.HTTPError as exc:
            err = upstream.failure(exc)
            await client.body(sse_error_tail(err))
        finally:
            self._meter(scanner, served_by)
        await client.body(b"", more=False)

    def _meter(self, scanner: UsageScanner, served_by: str) -> None:
        """Count the usage `scanner` found, for the caller's key under `served_by` (the variant, or
        `fallback`): the gateway's own DEEPSEEK_VARIANT would label every variant's tokens alike."""
        if self.scope is not None:
            report_served_by(self.scope, served_by)
        scanner.count(self.router.metrics, self.scope)


async def _no_receive() -> Any:
    raise RuntimeError("an error response reads nothing")


