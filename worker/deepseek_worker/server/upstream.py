"""The upstream of proxy mode: an engine's own OpenAI server in the same pod (vLLM, SGLang).

One pooled httpx client per worker. Failures to reach it become our one error shape, naming the
upstream: unreachable (refused, reset, connect timeout) -> 503 with Retry-After, no answer within
`upstream_timeout_seconds` -> 504. Nothing here knows about ASGI; relay.py moves the bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import httpx

from ..protocol.errors import APIError

log = logging.getLogger("deepseek_worker.upstream")

HEALTH_PATH = "/health"  # vLLM's and SGLang's liveness/readiness route: 200 once the model serves
HEALTH_TIMEOUT_SECONDS = 5.0  # a probe must answer well inside the kubelet's own probe timeout
POLL_SECONDS = 0.5  # how often start-up checks the upstream until its first healthy answer
KEEPALIVE_EXPIRY_SECONDS = 2.0  # below the engines' own keep-alive timeout (uvicorn's 5 s)
# Request headers the engine gets. Never Authorization or cookies: our callers' credentials stay here.
# Nor a client's own x-deepseek-priority: the gateway sets that one itself (`open`'s `extra`).
FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "x-request-id")


class Upstream:
    """The engine server at `base_url` (its root: we add /v1/... and /health).

    `ready` turns True at the first 200 from its /health and stays so (the admission gate opens
    once; an engine that dies later answers each request 503 here). `start`/`stop` own the client.
    """

    def __init__(self, base_url: str, timeout: float, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.ready = False
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        # trust_env=False: the pod's HTTP(S)_PROXY (spec.env) is for the hub, never for localhost.
        # No pool cap: admission (max_concurrent_requests) bounds the connections already.
        # Timeout: connect, each read (response head, then every body chunk), write and pool wait.
        # Idle connections are dropped after KEEPALIVE_EXPIRY_SECONDS, before the engine's uvicorn
        # closes them (5 s in vLLM and SGLang): reusing one it is closing fails a POST we cannot retry.
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64,
                                keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS),
            trust_env=False,
            transport=self._transport,
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("Upstream.start() was not awaited")
        return self._client

    async def probe(self) -> str | None:
        """One health check: None when its /health answered 200 (then `ready` is True), else why not."""
        try:
            response = await self.client.get(HEALTH_PATH, timeout=min(self.timeout, HEALTH_TIMEOUT_SECONDS))
        except httpx.HTTPError as exc:
            return _describe(exc)
        if response.status_code != 200:
            return f"{HEALTH_PATH} answered {response.status_code}"
        self.ready = True
        return None

    async def wait_ready(self) -> None:
        """Probe every POLL_SECONDS until the first healthy answer (the lifespan runs this as a task)."""
        while (reason := await self.probe()) is not None:
            log.debug("upstream %s not ready: %s", self.base_url, reason)
            await asyncio.sleep(POLL_SECONDS)
        log.info("upstream %s is healthy", self.base_url)

    async def open(self, method: str, path: str, body: bytes, headers: Mapping[str, str],
                   extra: Mapping[str, str] | None = None) -> httpx.Response:
        """Send one request; the response is open (body unread): the caller must `aclose()` it.
        `headers`: the client's (only FORWARDED_REQUEST_HEADERS pass); `extra`: ours, set over them
        (the gateway's x-deepseek-priority). Raises APIError 503 (unreachable) or 504 (no response head in time)."""
        forwarded = {name: headers[name] for name in FORWARDED_REQUEST_HEADERS if name in headers}
        forwarded.update({name.lower(): value for name, value in (extra or {}).items()})
        # identity: the body bytes we relay are exactly the engine's, never re-encoded.
        forwarded["accept-encoding"] = "identity"
        request = self.client.build_request(method, path, content=body, headers=forwarded)
        try:
            return await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self.failure(exc) from exc

    def failure(self, exc: httpx.HTTPError) -> APIError:
        """What a client gets when talking to the upstream failed with `exc`."""
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return APIError(504, f"The upstream engine at {self.base_url} did not answer within "
                                 f"{self.timeout:g} s (DEEPSEEK_UPSTREAM_TIMEOUT_SECONDS).")
        return APIError(503, f"The upstream engine at {self.base_url} is unreachable ({_describe(exc)}); "
                        "retry later.", retry_after=1)


def _describe(exc: httpx.HTTPError) -> str:
    """`Name: message`, or the exception's name alone when it has no message."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
