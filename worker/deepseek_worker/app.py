"""HTTP transport: build_app(engine, settings) -> FastAPI. Routes stay thin.

Protocol (models, errors, request -> SamplingParams) lives in protocol.py, generation plumbing in
streams.py, admission in limits.py, auth in auth.py. Every error leaves as
protocol.APIError's one JSON shape; nothing returns FastAPI's default 422 or a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import streams
from .auth import Authenticator
from .lifecycle import WorkerState
from .limits import API_PREFIXES, AdmissionMiddleware, AuthFailureThrottle, RateLimiter, token_endpoint_limiter
from .metrics import Metrics, MetricsMiddleware
from .protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
    TokenResponse,
    now,
)
from .settings import Settings
from .types import EngineProtocol

log = logging.getLogger("deepseek_worker.app")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 500, 503, 504)
}


def build_app(engine: EngineProtocol, settings: Settings) -> FastAPI:
    """The worker's ASGI app. The lifespan starts the engine in the background, so the port is
    open (liveness passes) while the model loads; readiness and API routes answer 503 until then."""
    state = WorkerState()
    metrics = Metrics(engine, state, settings.max_concurrent_requests)
    auth = Authenticator(settings)
    app = FastAPI(title="deepseek-worker", version="1", lifespan=_lifespan(engine, state))
    app.state.engine, app.state.settings, app.state.worker = engine, settings, state
    app.state.metrics, app.state.auth = metrics, auth
    # On app.state so tests can drive their clocks.
    app.state.rate_limiter = RateLimiter(settings.rate_limit_rpm, settings.burst)
    app.state.auth_throttle = AuthFailureThrottle(settings.auth_failures_per_minute)
    _install_error_handlers(app)
    _add_routes(app, engine, settings, state, metrics, auth)
    app.add_middleware(
        AdmissionMiddleware,
        state=state,
        ready=lambda: engine.ready,
        identify=auth.identify,
        limiter=app.state.rate_limiter,
        token_limiter=token_endpoint_limiter(settings.rate_limit_rpm, settings.burst),
        auth_throttle=app.state.auth_throttle,
        max_concurrent=settings.max_concurrent_requests,
        max_concurrent_per_key=settings.per_key_concurrency,
        max_body_bytes=settings.max_body_bytes,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last = outermost
    return app


def _lifespan(engine: EngineProtocol, state: WorkerState) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def start() -> None:
            try:
                await engine.start()
            except (OSError, RuntimeError, ValueError, ImportError) as exc:
                # Liveness turns 503 so the kubelet restarts the pod; the reason is in the log.
                state.start_error = f"{type(exc).__name__}: {exc}"
                log.exception("engine failed to start")

        task = asyncio.create_task(start())
        try:
            yield
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await engine.stop()

    return lifespan


def _add_routes(
    app: FastAPI,
    engine: EngineProtocol,
    settings: Settings,
    state: WorkerState,
    metrics: Metrics,
    auth: Authenticator,
) -> None:
    served = settings.served_name
    created = now()

    def check_model(model: str) -> None:
        if model != served:
            raise APIError(404, f"The model `{model}` does not exist.", param="model", type_="model_not_found")

    def card() -> ModelCard:
        return ModelCard(id=served, created=created, max_model_len=engine.max_model_len)

    async def list_models() -> ModelList:
        return ModelList(data=[card()])

    async def retrieve_model(model_id: str) -> ModelCard:
        check_model(model_id)
        return card()

    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        started = time.perf_counter()
        check_model(body.model)
        job = await streams.prepare_chat(engine, settings, body)
        if body.stream:
            return _sse(streams.stream_chat(engine, settings, metrics, job, started))
        result = await streams.complete_chat(engine, settings, metrics, job, started)
        return JSONResponse(result.model_dump())  # null logprobs/refusal stay: OpenAI requires them

    async def completions(body: CompletionRequest, request: Request) -> Response:
        started = time.perf_counter()
        check_model(body.model)
        job = await streams.prepare_completion(engine, settings, body)
        if body.stream:
            return _sse(streams.stream_completion(engine, settings, metrics, job, started))
        result = await streams.complete_text(engine, settings, metrics, job, started)
        return JSONResponse(result.model_dump())

    # Each API route twice: under /v1 (OpenAI's base URL) and without it (DeepSeek documents
    # https://api.deepseek.com as a base URL too). Same handler, and API_PATHS in limits.py /
    # metrics.py give both the same admission and metrics.
    for prefix in API_PREFIXES:
        app.add_api_route(prefix + "/models", list_models, methods=["GET"], response_model=ModelList,
                          responses=ERROR_RESPONSES)
        app.add_api_route(prefix + "/models/{model_id:path}", retrieve_model, methods=["GET"],
                          response_model=ModelCard, responses=ERROR_RESPONSES)
        app.add_api_route(prefix + "/chat/completions", chat_completions, methods=["POST"], response_model=None,
                          responses=ERROR_RESPONSES)
        app.add_api_route(prefix + "/completions", completions, methods=["POST"], response_model=None,
                          responses=ERROR_RESPONSES)

    @app.post("/auth/v1/token", response_model=TokenResponse, responses=ERROR_RESPONSES)
    async def token(request: Request) -> TokenResponse:
        return auth.issue_token(await _token_form(request))

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


def _sse(events: AsyncIterator[str]) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering of tokens
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


async def _token_form(request: Request) -> dict[str, str]:
    """client-credentials input: JSON or form body, client id/secret optionally via HTTP Basic."""
    raw = await request.body()
    form: dict[str, str] = {}
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            raise APIError(400, "Request body is not valid JSON.") from exc
        if not isinstance(data, dict):
            raise APIError(400, "Request body must be a JSON object.")
        form = {str(k): str(v) for k, v in data.items() if isinstance(v, str)}
    else:
        form = dict(parse_qsl(raw.decode("utf-8", errors="replace")))
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            client_id, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise APIError(401, "Malformed Basic credentials.") from exc
        form.setdefault("client_id", client_id)
        form.setdefault("client_secret", secret)
    return form


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict"}


def _path(loc: tuple[Any, ...], *, stop_at_union: bool) -> str | None:
    """Pydantic error location -> OpenAI-style param ("messages[0].role").

    Pydantic inserts union branch names into locations (e.g. "str", "list[TextPart]"); for the
    `param` field the path ends there (the field itself is what the client must fix), for the
    message they are skipped so the deeper cause stays visible.
    """
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier() and part not in _UNION_TAGS:
            out += f".{part}" if out else part
        elif stop_at_union:
            break
    return out or None


def _validation_error(errors: list[Any]) -> APIError:
    """The first few pydantic errors -> one 400 naming the first offending parameter."""
    if not errors:
        return APIError(400, "Invalid request.")
    if errors[0].get("type") == "json_invalid":
        return APIError(400, "Request body is not valid JSON.")
    param = _path(tuple(errors[0].get("loc", ())), stop_at_union=True)
    reasons = []
    for error in errors[:3]:
        where = _path(tuple(error.get("loc", ())), stop_at_union=False)
        reasons.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return APIError(400, "Invalid request: " + "; ".join(reasons), param=param)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> Response:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        err = _validation_error(list(exc.errors()))
        return JSONResponse(err.body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        err = APIError(exc.status_code, str(exc.detail))
        return JSONResponse(err.body(), status_code=exc.status_code, headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        err = APIError(500, "Internal server error.")
        return JSONResponse(err.body(), status_code=500)
