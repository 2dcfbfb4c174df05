"""Probes and metrics: /health/live (the kubelet restarts the pod on 503), /health/ready (traffic
only when 200), /metrics (Prometheus text).

/metrics is served here only without a metrics port: with `metrics_port` (every pod the operator
renders) it lives on that listener alone (cli.py), which the NetworkPolicy opens to Prometheus only,
so the API port, where the ingress routes `/`, does not expose it. Served here, it needs a key when
auth is on (limits.AdmissionMiddleware), like the docs.

Liveness fails only where a restart helps: the model failed to load, or the engine reports itself
unhealthy (`EngineProtocol.healthy`: its steps failed `max_consecutive_step_failures` times in a
row, a wedged device). Readiness also fails while loading and while draining.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from ...settings import Settings
from ...types import EngineProtocol
from ..lifecycle import WorkerState
from ..metrics import Metrics

UNHEALTHY = "the engine's last steps failed in a row (max_consecutive_step_failures): the device is wedged"


def add(app: FastAPI, engine: EngineProtocol, state: WorkerState, metrics: Metrics, settings: Settings) -> None:
    @app.get("/health/live")
    async def live() -> Response:
        if state.start_error is not None:
            return JSONResponse({"status": "failed", "error": state.start_error}, status_code=503)
        if not engine.healthy:  # a wedged device: only a restart helps
            return JSONResponse({"status": "unhealthy", "error": UNHEALTHY}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/health/ready")
    async def ready() -> Response:
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if not engine.healthy:
            return JSONResponse({"status": "unhealthy", "error": UNHEALTHY}, status_code=503)
        if not engine.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ready"})

    add_metrics(app, metrics, settings)


def add_metrics(app: FastAPI, metrics: Metrics, settings: Settings, *, off_loop: bool = False) -> None:
    """/metrics on the API port, unless the metrics port serves it (module docstring); proxy mode too.

    Rendered on the loop thread (where the builtin engine.stats() must be read), or with `off_loop`
    in a worker thread: proxy mode's collector fetches the engine's /metrics with a blocking client."""
    if settings.metrics_port:
        return

    @app.get("/metrics")
    async def prometheus() -> Response:
        text = await asyncio.to_thread(metrics.render) if off_loop else metrics.render()
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")
