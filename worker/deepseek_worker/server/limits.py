"""Admission control: drain/readiness gate, body size cap, auth, rate limits, concurrency caps.

One pure-ASGI middleware so that every refusal happens before the body is parsed and before any
engine work, and so the in-flight counts cover a streamed response until its last byte.
Order for API routes (/v1/ and its unprefixed aliases, /auth/): not ready/draining (503) -> Content-Length cap (413)
-> failed-auth throttle per client address (429) -> auth (401) -> rate limit (429)
-> token quota (429, metering.py) -> per-key concurrency cap (429) -> worker concurrency cap (503; a
`batch` key already when only the slots kept for `interactive` keys are free) -> body cap while reading (413).
The generated docs (/docs, /redoc, /openapi.json) and /metrics pass only the throttle and auth.
Every response admitted past the rate limiter carries OpenAI's x-ratelimit-*-requests headers, and
past the quota check (keys with a token quota) the x-ratelimit-*-tokens headers.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..protocol.errors import APIError
from .keys import PRIORITY_HEADER, Priority, header_priority
from .lifecycle import WorkerState

if TYPE_CHECKING:  # metering imports quotas, which imports this module
    from .metering import Metering, Ticket

GATED_PREFIXES = ("/v1/", "/auth/")
# The API routes are served under /v1 (OpenAI's base URL) and without it (DeepSeek documents
# https://api.deepseek.com as a base URL): the unprefixed ones are gated exactly like /v1/.
API_PREFIXES = ("/v1", "")
UNPREFIXED_API_PATHS = ("/chat/completions", "/completions", "/models", "/embeddings")  # embeddings: proxy mode
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")  # FastAPI's generated schema and its two UIs


def is_api_path(path: str) -> bool:
    """A model API path (chat, completions, models), with or without the /v1 prefix."""
    return path.startswith("/v1/") or path in UNPREFIXED_API_PATHS or path.startswith("/models/")


def is_keyed_path(path: str) -> bool:
    """Keyed when auth is on, never rate limited: the generated docs (including
    /docs/oauth2-redirect) and /metrics when served on the API port (the ingress routes `/` here)."""
    return path in DOCS_PATHS or path.startswith("/docs/") or path == "/metrics"


def openai_duration(seconds: float) -> str:
    """A duration the way OpenAI's x-ratelimit-reset-* headers write it (Go style): 12ms, 1s, 1.5s, 6m0s."""
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))  # up, so a client that waits this long is never early
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class TokenBucket:
    """Classic token bucket: `capacity` tokens, refilled at `rate` tokens per second."""

    def __init__(self, rate: float, capacity: int, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = float(capacity)
        self.stamp = now

    def peek(self, now: float) -> float:
        """Refill only. Returns 0 when a token is available, else seconds until one is."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self, now: float) -> float:
        """Take one token. Returns 0 when allowed, else seconds until a token is available."""
        wait = self.peek(now)
        if wait == 0:
            self.tokens -= 1
        return wait

    def full_in(self) -> float:
        """Seconds until the bucket is full again (its initial state), as of the last peek/take."""
        return (self.capacity - self.tokens) / self.rate


@dataclass(frozen=True)
class RateState:
    """One identity's limit after a request was counted: what OpenAI's x-ratelimit headers report."""

    limit: int  # the bucket size: requests permitted before the limit is exhausted
    remaining: int
    reset_seconds: float  # until the bucket is full again
    retry_after: int | None  # None when this request was allowed

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": openai_duration(self.reset_seconds),
        }


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

    def _bucket(self, identity: str, now: float) -> TokenBucket:
        bucket = self._buckets.pop(identity, None) or TokenBucket(self.rate, self.burst, now)
        self._buckets[identity] = bucket
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return bucket

    def take(self, identity: str) -> RateState | None:
        """Count one request. None when limiting is off."""
        if not self.enabled:
            return None
        now = self.clock()
        bucket = self._bucket(identity, now)
        wait = bucket.take(now)
        return RateState(
            limit=self.burst,
            remaining=math.floor(bucket.tokens),
            reset_seconds=bucket.full_in(),
            retry_after=None if wait == 0 else max(1, math.ceil(wait)),
        )

    def check(self, identity: str) -> int | None:
        """None when allowed, else whole seconds to wait (>= 1) before retrying."""
        state = self.take(identity)
        return None if state is None else state.retry_after


class AuthFailureThrottle(RateLimiter):
    """Failed authentications per client address: `per_minute` of them (also the burst), then 429.

    Only failures are throttled: a credential is always checked, a valid one is served from any
    address, and a failure from an address whose bucket is empty is answered 429 instead of 401
    (`refusal`). Behind an ingress every client shares the controller pod's address, so refusing
    before the check would let one key-guesser lock everyone out. Only failures take a token;
    `retry_after` peeks, and addresses that never fail are never tracked.
    """

    def __init__(self, per_minute: int, max_keys: int = 10000, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(per_minute, per_minute, max_keys, clock)

    def retry_after(self, address: str) -> int | None:
        """None while `address` may still try, else whole seconds until its next attempt."""
        bucket = self._buckets.get(address) if self.enabled else None
        if bucket is None:
            return None
        wait = bucket.peek(self.clock())
        return None if wait == 0 else max(1, math.ceil(wait))

    def failed(self, address: str) -> None:
        """Count one failed authentication from `address`."""
        self.take(address)

    def refusal(self, failure: APIError, address: str) -> APIError:
        """What to answer for a failed authentication (`failure`, a 401) from `address`: the 429 when
        the address is over its budget (not counted again), else the 401 itself (counted on sending)."""
        retry_after = self.retry_after(address) if failure.status == 401 else None
        if retry_after is None:
            return failure
        return APIError(
            429, "Too many failed authentication attempts from this address; retry later.", retry_after=retry_after
        )


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


def interactive_reserve(max_concurrent: int) -> int:
    """Worker slots a `batch` key may not take: a quarter of them (none below 4), so interactive keys
    still get in while batch traffic fills the worker."""
    return max_concurrent // 4


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


# identify(headers, scope) -> identity string for rate limiting; raises APIError(401).
# Identities of authenticated callers start "key:" or "client:"; without a credential "ip:".
Identify = Callable[[Headers, Scope], str]


class AdmissionMiddleware:
    """Gates API routes and (auth only) the docs and metrics; health passes straight through."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        state: WorkerState,
        ready: Callable[[], bool],
        identify: Identify,
        limiter: RateLimiter,
        token_limiter: RateLimiter | None = None,
        auth_throttle: AuthFailureThrottle | None = None,
        max_concurrent: int,
        max_concurrent_per_key: int | None = None,
        max_body_bytes: int,
        metering: Metering | None = None,
        trust_priority_header: bool = False,
    ) -> None:
        self.app = app
        self.state = state
        self.ready = ready
        self.identify = identify
        self.limiter = limiter
        self.token_limiter = token_limiter or limiter
        self.auth_throttle = auth_throttle or AuthFailureThrottle(0)
        self.max_concurrent = max_concurrent
        self.max_concurrent_per_key = max_concurrent_per_key or max_concurrent
        self.max_body_bytes = max_body_bytes
        self.metering = metering
        self.trust_priority_header = trust_priority_header  # DEEPSEEK_TRUST_GATEWAY_PRIORITY
        self.reserve = interactive_reserve(max_concurrent)
        self.per_key: dict[str, int] = {}  # in-flight requests per authenticated identity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope["path"]) if scope["type"] == "http" else ""
        if path.startswith(GATED_PREFIXES) or is_api_path(path):
            await self._api(scope, receive, send)
        elif is_keyed_path(path):
            try:
                self._authenticate(scope, Headers(scope=scope))
            except APIError as err:
                await self._refuse(err, scope, receive, send)
                return
            await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        rate: RateState | None = None
        ticket: Ticket | None = None
        try:
            identity = self._precheck(scope)
            token_route = str(scope["path"]).startswith("/auth/")
            limiter = self.token_limiter if token_route else self.limiter
            rate = limiter.take(identity)
            if rate is not None and rate.retry_after is not None:
                raise APIError(429, "Rate limit reached; retry later.", retry_after=rate.retry_after)
            if self.metering is not None and not token_route:
                ticket = self.metering.admit(identity, self._gateway_priority(scope))
            self._check_slots(identity, ticket)
        except APIError as err:
            await self._refuse(err, scope, receive, send, rate, ticket)  # a cap after the quota: its headers too
            return
        keyed = not identity.startswith("ip:")
        if ticket is not None and self.metering is not None:
            self.metering.attach(scope, ticket)
        self.state.enter()
        if keyed:
            self.per_key[identity] = self.per_key.get(identity, 0) + 1
        try:
            await self.app(scope, self._capped(receive), self._sending(scope, send, rate, ticket))
        finally:
            if keyed:
                left = self.per_key.pop(identity, 1) - 1
                if left > 0:
                    self.per_key[identity] = left
            self.state.leave()

    def _gateway_priority(self, scope: Scope) -> Priority | None:
        """The priority our gateway sent (metering.PRIORITY_HEADER), only behind it; else None."""
        if not self.trust_priority_header:
            return None
        return header_priority(Headers(scope=scope).get(PRIORITY_HEADER))

    def _precheck(self, scope: Scope) -> str:
        """Gates before the rate limiter; returns the caller's identity or raises the refusal."""
        headers = Headers(scope=scope)
        if self.state.draining:
            raise APIError(503, "The worker is shutting down; retry on another replica.", retry_after=1)
        if not self.ready() and is_api_path(str(scope["path"])):
            raise APIError(503, "The model is still loading.", retry_after=5)
        length = _content_length(headers)
        if length is not None and length > self.max_body_bytes:
            raise APIError(413, f"Request body is larger than {self.max_body_bytes} bytes.")
        return self._authenticate(scope, headers)

    def _authenticate(self, scope: Scope, headers: Headers) -> str:
        """Auth, then, for a failure only, the failed-auth throttle of this address (a valid credential
        is served from a throttled address too)."""
        try:
            return self.identify(headers, scope)
        except APIError as err:
            refusal = self.auth_throttle.refusal(err, client_ip(scope))
            if refusal is err:
                raise
            raise refusal from err

    def _check_slots(self, identity: str, ticket: Ticket | None = None) -> None:
        """Per-key cap (authenticated callers only: without auth every client behind an ingress shares
        one address), then the worker's own cap, which a `batch` key meets `reserve` slots early."""
        held = self.per_key.get(identity, 0)
        if not identity.startswith("ip:") and held >= self.max_concurrent_per_key:
            raise APIError(
                429,
                f"This API key already has {held} requests in flight, its limit on this worker; "
                "retry when one has finished.",
                retry_after=1,
            )
        if self.state.inflight >= self.max_concurrent:
            raise APIError(503, "The worker is at its concurrency limit; retry later.", retry_after=1)
        if ticket is not None and ticket.caller.priority == "batch" and (
                self.state.inflight >= self.max_concurrent - self.reserve):
            raise APIError(503, f"The worker keeps its last {self.reserve} request slots for interactive "
                           "keys and this key is a batch key; retry later.", retry_after=1)

    async def _refuse(
        self, err: APIError, scope: Scope, receive: Receive, send: Send, rate: RateState | None = None,
        ticket: Ticket | None = None,
    ) -> None:
        if err.status == 401:
            self.auth_throttle.failed(client_ip(scope))
        headers = {**(rate.headers() if rate else {}), **(ticket.headers() if ticket else {})}
        await send_error(err, scope, receive, send, headers)

    def _sending(self, scope: Scope, send: Send, rate: RateState | None, ticket: Ticket | None = None) -> Send:
        """Add the rate-limit and token headers to the response; count a 401 from a route (the token endpoint)."""
        headers = {**(rate.headers() if rate else {}), **(ticket.headers() if ticket else {})}
        extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 401:
                    self.auth_throttle.failed(client_ip(scope))
                if extra:
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return wrapped

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


async def send_error(
    err: APIError, scope: Scope, receive: Receive, send: Send, extra_headers: dict[str, str] | None = None
) -> None:
    """Send `err` as a JSON response (used before the app runs)."""
    headers = {**err.headers(), **(extra_headers or {})}
    if err.status == 503:
        headers["Connection"] = "close"  # let the client's pool reconnect elsewhere
    response = JSONResponse(err.body(), status_code=err.status, headers=headers)
    await response(scope, receive, send)
