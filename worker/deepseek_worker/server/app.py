"""HTTP transport: build_app(engine, settings) -> FastAPI. Routes stay thin (routes/).

Protocol (models, errors, request -> SamplingParams) lives in ../protocol, generation plumbing in
jobs.py / responses.py / streaming.py, admission in limits.py, auth in auth.py. Every error leaves
as protocol.errors.APIError's one JSON shape (errors.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from ..report import report_measurements
from ..settings import Settings
from ..types import EngineProtocol
from .auth import Authenticator
from .edge import add_edge
from .errors import install_error_handlers
from .lifecycle import WorkerState
from .metrics import EngineCollector, Metrics
from .routes import add_routes

log = logging.getLogger("deepseek_worker.app")


def build_app(engine: EngineProtocol, settings: Settings) -> FastAPI:
    """The worker's ASGI app. The lifespan starts the engine in the background, so the port is
    open (liveness passes) while the model loads; readiness and API routes answer 503 until then."""
    state = WorkerState()
    metrics = Metrics(EngineCollector(engine, state, settings.max_concurrent_requests))
    auth = Authenticator(settings)
    # strict_content_type=False: a body without any Content-Type is read as JSON (FastAPI's strict
    # default answered it with a validation error about dictionaries), so a client that omits the
    # header, and our gateway relaying one, is served; a non-JSON Content-Type is still refused.
    app = FastAPI(title="deepseek-worker", version="1", lifespan=_lifespan(engine, state, settings),
                  strict_content_type=False)
    app.state.engine, app.state.settings, app.state.worker = engine, settings, state
    app.state.metrics, app.state.auth = metrics, auth
    install_error_handlers(app)
    add_routes(app, engine, settings, state, metrics, auth)
    add_edge(app, settings, state, metrics, auth, ready=lambda: engine.ready)
    return app


def _lifespan(engine: EngineProtocol, state: WorkerState, settings: Settings) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def start() -> None:
            try:
                await engine.start()
            except Exception as exc:  # the start task's boundary: every failure must be reported
                # Any exception type: a KeyError from a config lookup is as fatal as an OSError, and an
                # unrecorded one would leave the pod Live and never Ready with no reason. Liveness turns 503
                # with the reason, and DrainingServer exits with it as the termination message.
                state.start_error = f"{type(exc).__name__}: {exc}"
                log.exception("engine failed to start")
            else:
                # What start-up measured goes to the operator, beside its GPU-fit plan (report.py);
                # one blocking request at most, never an exception.
                await asyncio.to_thread(report_measurements, engine.measurements(), settings)

        task = asyncio.create_task(start())
        try:
            yield
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await engine.stop()

    return lifespan
