"""POST /v1/chat/completions and /v1/completions: validate, build the engine job, then answer
with one JSON reply or an SSE stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from ...protocol.chat import ChatCompletionRequest
from ...protocol.completions import CompletionRequest
from ...settings import Settings
from ...types import EngineProtocol
from .. import jobs, metering, responses, streaming
from ..errors import ERROR_RESPONSES
from ..metrics import Metrics
from .models import check_model


def add(app: FastAPI, prefix: str, engine: EngineProtocol, settings: Settings, metrics: Metrics) -> None:
    served = settings.served_name

    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        started = time.perf_counter()
        check_model(served, body.model)
        job = _metered(await jobs.prepare_chat(engine, settings, body), request)
        if body.stream:
            return _sse(streaming.stream_chat(engine, settings, metrics, job, started))
        return await _reply(request, responses.complete_chat(engine, settings, metrics, job, started))

    async def completions(body: CompletionRequest, request: Request) -> Response:
        started = time.perf_counter()
        check_model(served, body.model)
        job = _metered(await jobs.prepare_completion(engine, settings, body), request)
        if body.stream:
            return _sse(streaming.stream_completion(engine, settings, metrics, job, started))
        return await _reply(request, responses.complete_text(engine, settings, metrics, job, started))

    app.add_api_route(prefix + "/chat/completions", chat_completions, methods=["POST"], response_model=None,
                      responses=ERROR_RESPONSES)
    app.add_api_route(prefix + "/completions", completions, methods=["POST"], response_model=None,
                      responses=ERROR_RESPONSES)


def _metered(job: jobs.Job, request: Request) -> jobs.Job:
    """The caller's priority into the engine's admission, its usage to its meter (the edge's Ticket)."""
    scope = request.scope
    job.params = replace(job.params, priority=metering.priority_rank(scope))
    job.on_usage = lambda prompt, completion: metering.report_usage(scope, prompt, completion)
    return job


async def _reply(request: Request, work: Coroutine[Any, Any, BaseModel]) -> Response:
    """The reply as JSON (null logprobs/refusal stay: OpenAI requires them). A client that left
    cancelled its generation; the 499 (nginx's "client closed request") reaches nobody but
    deepseek_requests_total."""
    try:
        result = await responses.until_disconnect(request.receive, work)
    except responses.ClientDisconnected:
        return Response(status_code=499)
    return JSONResponse(result.model_dump())


def _sse(events: AsyncIterator[str]) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering of tokens
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


