"""Admission control: drain/readiness gate, body size cap, auth, rate limits, concurrency cap.

One pure-ASGI middleware so that every refusal happens before the body is parsed and before any
engine work, and so the in-flight count covers a streamed response until its last byte.
Order: not ready/draining (503) -> Content-Length cap (413) -> auth (401) -> rate limit (429)
-> concurrency cap (503) -> body cap while reading (413).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .lifecycle import WorkerState
from .protocol import APIError

GATED_PREFIXES = ("/v1/", "/auth/")


class TokenBucket:
    """Classic token bucket: `capacity` tokens, refilled at `rate` tokens per second."""

    def __init__(self, rate: float, capacity: int, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = float(capacity)
        self.stamp = now

    def take(self, now: float) -> float:
        """Take one token. Returns 0 when allowed, else seconds until a token is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """Per-identity token buckets (requests per minute + burst). rpm 0 disables it.

    Buckets live in an LRU bounded by `max_keys`, so a flood of distinct client IPs cannot grow
    memory without bound (an evicted identity simply starts with a full bucket).
    """

    def __init__(
        self, rpm: int, burst: int, max_keys: int = 10000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rpm / 60.0
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, identity: str) -> int | None:
        """None when allowed, else whole seconds to wait (>= 1) before retrying."""
        if not self.enabled:
            return None
        now = self.clock()
        bucket = self._buckets.pop(identity, None) or TokenBucket(self.rate, self.burst, now)
        self._buckets[identity] = bucket
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        wait = bucket.take(now)
        return None if wait == 0 else max(1, math.ceil(wait))


def token_endpoint_limiter(rpm: int, burst: int) -> RateLimiter:
    """The token endpoint's own per-IP limiter: on whenever rate limiting is, at least 60/min with a
    burst of 10, so brute-forcing client secrets is slow but a tight API limit does not stop
    clients from fetching tokens."""
    return RateLimiter(max(rpm, 60), max(burst, 10)) if rpm else RateLimiter(0, 0)


class BodyTooLarge(HTTPException):
    """Raised from the wrapped `receive`; FastAPI re-raises HTTPExceptions from body reading."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body is larger than {limit} bytes.")


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None or not value.isdigit():
        return None
    return int(value)


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


# identify(headers, scope) -> identity string for rate limiting; raises APIError(401).
Identify = Callable[[Headers, Scope], str]


class AdmissionMiddleware:
    """Gates API routes; health, metrics and docs pass straight through."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        state: WorkerState,
        ready: Callable[[], bool],
        identify: Identify,
        limiter: RateLimiter,
        token_limiter: RateLimiter | None = None,
        max_concurrent: int,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.state = state
        self.ready = ready
        self.identify = identify
        self.limiter = limiter
        self.token_limiter = token_limiter or limiter
        self.max_concurrent = max_concurrent
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(GATED_PREFIXES):
            await self.app(scope, receive, send)
            return
        try:
            self._admit(scope)
        except APIError as err:
            await send_error(err, scope, receive, send)
            return
        self.state.enter()
        try:
            await self.app(scope, self._capped(receive), send)
        finally:
            self.state.leave()

    def _admit(self, scope: Scope) -> None:
        """Raise the first APIError that refuses this request."""
        headers = Headers(scope=scope)
        if self.state.draining:
            raise APIError(503, "The worker is shutting down; retry on another replica.", retry_after=1)
        if not self.ready() and str(scope["path"]).startswith("/v1/"):
            raise APIError(503, "The model is still loading.", retry_after=5)
        length = _content_length(headers)
        if length is not None and length > self.max_body_bytes:
            raise APIError(413, f"Request body is larger than {self.max_body_bytes} bytes.")
        identity = self.identify(headers, scope)
        limiter = self.token_limiter if str(scope["path"]).startswith("/auth/") else self.limiter
        retry_after = limiter.check(identity)
        if retry_after is not None:
            raise APIError(429, "Rate limit reached; retry later.", retry_after=retry_after)
        if self.state.inflight >= self.max_concurrent:
            raise APIError(503, "The worker is at its concurrency limit; retry later.", retry_after=1)

    def _capped(self, receive: Receive) -> Receive:
        """Count body bytes as they arrive: Content-Length may be absent (chunked) or lie."""
        seen = 0
        limit = self.max_body_bytes

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return wrapped


async def send_error(err: APIError, scope: Scope, receive: Receive, send: Send) -> None:
    """Send `err` as a JSON response (used before the app runs)."""
    headers = err.headers()
    if err.status == 503:
        headers["Connection"] = "close"  # let the client's pool reconnect elsewhere
    response = JSONResponse(err.body(), status_code=err.status, headers=headers)
    await response(scope, receive, send)
