"""The routes, one module per family. Each API route is served twice: under /v1 (OpenAI's base URL)
and without it (DeepSeek documents https://api.deepseek.com as a base URL too). Same handler, and
API_PATHS in limits.py / metrics.py give both the same admission and metrics."""

from __future__ import annotations

from fastapi import FastAPI

from ...protocol.common import now
from ...settings import Settings
from ...types import EngineProtocol
from ..auth import Authenticator
from ..lifecycle import WorkerState
from ..limits import API_PREFIXES
from ..metrics import Metrics
from . import generation, health, models, token


def add_routes(
    app: FastAPI,
    engine: EngineProtocol,
    settings: Settings,
    state: WorkerState,
    metrics: Metrics,
    auth: Authenticator,
) -> None:
    """Every route of the worker, in the order the OpenAPI document lists them."""
    created = now()
    for prefix in API_PREFIXES:
        models.add(app, prefix, engine, settings, created)
        generation.add(app, prefix, engine, settings, metrics)
    token.add(app, auth)
    health.add(app, engine, state, metrics, settings)
