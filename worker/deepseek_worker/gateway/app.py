"""build_gateway_app(settings, config) -> the gateway: our edge (auth, limits, metrics) in front of
the variants' worker pods, with scale-from-zero hold and spill-over (forward.py). CPU only: nothing
here imports torch.

Routes: the forwarded OpenAI routes (as proxy mode: chat, completions, embeddings, models; under
/v1 and without it), the token endpoint, /health/live, /health/ready and /health (200 unless
draining: the gateway holds requests itself), /metrics, and GET /scaling/{variant} for KEDA's
metrics-api scaler: {"held", "wanted", "inflight", "queue", "demand", "readyBackends"}.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..server.auth import Authenticator
from ..server.edge import add_edge
from ..server.errors import install_error_handlers
from ..server.forwarding import add_forwarded_routes
from ..server.lifecycle import WorkerState
from ..server.metrics import Metrics
from ..server.routes import health, token
from ..settings import Settings
from .backends import Pool
from .config import GatewayConfig
from .discovery import Resolve, resolve_dns
from .fallback import FallbackRule, HostedAPI
from .fleet import Fleet
from .forward import GatewayResponse, Router
from .hold import Hold
from .metrics import GatewayCollector, GatewayMetrics
from .reload import Reloader
from .report import GatewayReporter
from .status import FixedStatus, KubeStatusSource, StatusSource


def build_gateway_app(settings: Settings, config: GatewayConfig, *, config_path: Path | None = None,
                      status: StatusSource | None = None, resolve: Resolve = resolve_dns,
                      seed: int | None = None) -> FastAPI:
    """The gateway app. `config_path`: the file `config` was read from, re-read when it changes
    (reload.py). `status` (default: the DeepSeekDeployment named in the config, else none), `resolve`
    (DNS) and `seed` (the RNG of weighted and tie-breaking choices) are for tests."""
    rng = random.Random(seed)
    state = WorkerState()
    pools: dict[str, Pool] = {}
    holds: dict[str, Hold] = {}  # both filled by Fleet.apply at start-up
    rule = FallbackRule(config.fallback)
    metrics = Metrics(GatewayCollector(state, settings.max_concurrent_requests, pools, holds, rule.window.share))
    if status is None:
        ref = config.statusFrom
        status = KubeStatusSource(ref.name, ref.namespace) if ref is not None else FixedStatus()
    router = Router(config=config, pools=pools, holds=holds, rule=rule,
                    hosted=HostedAPI(config.fallback) if config.fallback is not None else None,
                    metrics=metrics, gateway_metrics=GatewayMetrics(metrics.registry), status=status, rng=rng)
    fleet = Fleet(router, resolve)
    reloader = Reloader(config_path, fleet) if config_path is not None else None
    auth = Authenticator(settings)
    reporter = GatewayReporter(settings, router.cold_starts, rule.window.counts)
    app = FastAPI(title="deepseek-worker (gateway)", version="1",
                  lifespan=_lifespan(router, fleet, reloader, reporter))
    app.state.settings, app.state.worker, app.state.router = settings, state, router
    app.state.reporter = reporter
    app.state.metrics, app.state.auth, app.state.reloader = metrics, auth, reloader
    install_error_handlers(app)
    _add_forwarding(app, router, auth)
    token.add(app, auth)
    _add_health(app, state, router, metrics, settings)
    add_edge(app, settings, state, metrics, auth, ready=lambda: True)
    return app


def _lifespan(router: Router, fleet: Fleet, reloader: Reloader | None, reporter: GatewayReporter) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if router.hosted is not None:
                await router.hosted.start()
                stack.push_async_callback(router.hosted.stop)
            if isinstance(router.status, KubeStatusSource):
                stack.push_async_callback(router.status.close)
            stack.push_async_callback(fleet.close)
            await fleet.apply(router.config)
            if reloader is not None:
                stack.push_async_callback(_cancel, asyncio.create_task(reloader.run()))
            if reporter.enabled:  # at shutdown: the loop ends, then one last report
                stack.push_async_callback(reporter.flush)
                stack.push_async_callback(_cancel, asyncio.create_task(reporter.run()))
            yield

    return lifespan


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


def _add_forwarding(app: FastAPI, router: Router, auth: Authenticator) -> None:
    """Each forwarded route (server/forwarding.py); the caller's identity decides spill-over, its key's
    priority goes to the worker pods (forward.py)."""

    def respond(request: Request, method: str, path: str, body: bytes, hide_usage: bool, started: float) -> Response:
        identity = auth.identify(request.headers, request.scope)  # admitted already: cannot fail here
        caller = auth.caller(identity)
        names = frozenset((identity, caller.label))
        return GatewayResponse(router, method, path, body, request.headers, names, started, hide_usage=hide_usage,
                               priority=caller.priority)

    add_forwarded_routes(app, respond)


def _add_health(app: FastAPI, state: WorkerState, router: Router, metrics: Metrics, settings: Settings) -> None:
    @app.get("/health/live")
    async def live() -> Response:
        return JSONResponse({"status": "ok"})

    async def ready() -> Response:
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ready", "variants": {
            name: len(pool.ready_backends()) for name, pool in router.pools.items()}})

    app.add_api_route("/health/ready", ready, methods=["GET"])
    app.add_api_route("/health", ready, methods=["GET"])
    health.add_metrics(app, metrics, settings)

    @app.get("/scaling/{variant}")
    async def scaling(variant: str) -> Response:
        """For KEDA's metrics-api scaler (valueLocation `wanted`, `demand` or `inflight`): `wanted` is
        held plus passed over in the last minute (hold.py), what wakes a variant from zero."""
        pool, hold = router.pools.get(variant), router.holds.get(variant)
        if pool is None or hold is None:
            return JSONResponse({"error": f"no variant {variant}"}, status_code=404)
        return JSONResponse({"held": hold.held, "wanted": hold.wanted(), "inflight": pool.inflight,
                             "queue": pool.queue, "demand": hold.held + pool.inflight,
                             "readyBackends": len(pool.ready_backends())})
