"""Proxy mode: our edge in front of an engine's own OpenAI server in the same pod (vLLM, SGLang).

build_proxy_app(settings) keeps everything of the edge — API keys, JWT and the token endpoint, rate
limits and their x-ratelimit-* headers, concurrency caps, body caps, drain on SIGTERM, our
Prometheus metrics, the access log without queries — and forwards the OpenAI routes to
`settings.upstream` (relay.py: byte for byte, streams chunk by chunk). No engine is built and nothing
imports torch.

Our protocol validation (protocol/) does not run here: the engine validates its own requests, and
ours would refuse what it serves (n > 1, penalties, top_k, guided decoding, its other extras). What
still protects the pod runs: the body cap, auth and every limit. Only the routes below are
forwarded; the engine's other routes (tokenize, LoRA loading, profiling) are not reachable here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ..settings import Settings
from .auth import Authenticator
from .edge import add_edge
from .engine_metrics import EngineMetricsCollector
from .errors import install_error_handlers
from .forwarding import add_forwarded_routes
from .lifecycle import WorkerState
from .metrics import Metrics, _gauge
from .relay import RelayResponse
from .routes import health, token
from .upstream import Upstream


class UpstreamCollector(Collector):
    """Scrape-time gauges of the proxy (the engine's own queue and KV gauges are on its /metrics)."""

    def __init__(self, upstream: Upstream, state: WorkerState, max_concurrent: int) -> None:
        self.upstream, self.state, self.max_concurrent = upstream, state, max_concurrent

    def collect(self) -> Iterator[Metric]:
        yield _gauge("inflight_requests", "API requests admitted and not yet finished.", self.state.inflight)
        yield _gauge("max_concurrent_requests", "Admission cap (running + queued).", self.max_concurrent)
        yield _gauge("model_loaded", "1 once the model is loaded and serving (proxy: the upstream's /health "
                     "answered 200).", 1 if self.upstream.ready else 0)
        yield _gauge("draining", "1 while draining after SIGTERM.", 1 if self.state.draining else 0)


def build_proxy_app(settings: Settings, upstream: Upstream | None = None) -> FastAPI:
    """The edge in front of `settings.upstream` (or `upstream`, for tests to pass a transport). The
    API gate opens at the upstream's first healthy /health; /health/ready asks it on every probe."""
    if upstream is None:
        if settings.upstream is None:
            raise ValueError("proxy mode needs settings.upstream")
        upstream = Upstream(settings.upstream, settings.upstream_timeout_seconds)
    state = WorkerState()
    metrics = Metrics(UpstreamCollector(upstream, state, settings.max_concurrent_requests))
    # The engine's own series (vllm:*, sglang:*) on our scrape: it listens on loopback only.
    metrics.registry.register(EngineMetricsCollector(upstream.base_url))
    auth = Authenticator(settings)
    app = FastAPI(title="deepseek-worker (proxy)", version="1", lifespan=_lifespan(upstream))
    app.state.settings, app.state.worker, app.state.upstream = settings, state, upstream
    app.state.metrics, app.state.auth = metrics, auth
    install_error_handlers(app)
    _add_forwarding(app, upstream, metrics)
    token.add(app, auth)
    _add_health(app, upstream, state, metrics, settings)
    add_edge(app, settings, state, metrics, auth, ready=lambda: upstream.ready)
    return app


def _lifespan(upstream: Upstream) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await upstream.start()
        waiting = asyncio.create_task(upstream.wait_ready())
        try:
            yield
        finally:
            waiting.cancel()
            with suppress(asyncio.CancelledError):
                await waiting
            await upstream.stop()

    return lifespan


def _add_forwarding(app: FastAPI, upstream: Upstream, metrics: Metrics) -> None:
    """Each forwarded route, relayed to the engine byte for byte (relay.py)."""

    def respond(request: Request, method: str, path: str, body: bytes, hide_usage: bool, started: float) -> Response:
        return RelayResponse(upstream, metrics, method, path, body, request.headers, started, hide_usage=hide_usage)

    add_forwarded_routes(app, respond)


def _add_health(app: FastAPI, upstream: Upstream, state: WorkerState, metrics: Metrics, settings: Settings) -> None:
    """/health/live: this process serves (the engine's container has its own liveness probe).
    /health/ready and /health: 503 while draining, and until the upstream's /health answers 200."""

    @app.get("/health/live")
    async def live() -> Response:
        return JSONResponse({"status": "ok"})

    async def ready() -> Response:
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        reason = await upstream.probe()
        if reason is not None:
            return JSONResponse({"status": "upstream not ready", "upstream": upstream.base_url, "error": reason},
                                status_code=503)
        return JSONResponse({"status": "ready", "upstream": upstream.base_url})

    app.add_api_route("/health/ready", ready, methods=["GET"])
    app.add_api_route("/health", ready, methods=["GET"])
    # As in builtin mode (on the metrics port alone when set); the engine's series are fetched blocking.
    health.add_metrics(app, metrics, settings, off_loop=True)
