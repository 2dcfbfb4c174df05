"""Probes and metrics: /health/live (the kubelet restarts the pod on 503), /health/ready (traffic
only when 200), /metrics (Prometheus text)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from ...types import EngineProtocol
from ..lifecycle import WorkerState
from ..metrics import Metrics


def add(app: FastAPI, engine: EngineProtocol, state: WorkerState, metrics: Metrics) -> None:
    @app.get("/health/live")
    async def live() -> Response:
        if state.start_error is not None:
            return JSONResponse({"status": "failed", "error": state.start_error}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/health/ready")
    async def ready() -> Response:
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if not engine.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def prometheus() -> Response:  # async: engine.stats() is read on the loop thread
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
