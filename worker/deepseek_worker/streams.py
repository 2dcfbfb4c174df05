"""Generation plumbing between the routes and the engine: prompt building, the token budget,
timeouts, JSON results and SSE event streams.

Contract for every path: the engine iterator is closed in a `finally` (aclose), so a client that
disconnects, a timeout or an error frees the engine slot at once. Errors after the first SSE byte
are sent as one `data: {"error": ...}` event followed by `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateError

from .metrics import Metrics, TokenTimer
from .protocol import (
    APIError,
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    Usage,
    chat_chunk,
    completion_chunk,
    finish_reason,
    new_id,
    now,
    sampling_params,
)
from .reasoning import ReasoningParser, prompt_opens_reasoning, split_reasoning
from .settings import Settings
from .types import EngineProtocol, GenerationChunk, SamplingParams


@dataclass
class Job:
    """One validated request, ready for the engine."""

    prompt_ids: list[int]
    params: SamplingParams
    model: str
    include_usage: bool
    in_reasoning: bool = False
    id: str = field(default_factory=lambda: new_id("chatcmpl"))
    created: int = field(default_factory=now)


async def prepare_chat(engine: EngineProtocol, settings: Settings, body: ChatCompletionRequest) -> Job:
    """Render the chat template and tokenize (off the event loop: long prompts take a while)."""
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    try:
        prompt = await asyncio.to_thread(engine.apply_chat_template, messages)
    except (TemplateError, ValueError, TypeError) as exc:
        raise APIError(400, f"Messages cannot be rendered by the chat template: {exc}", param="messages") from exc
    ids = await asyncio.to_thread(engine.tokenize, prompt)
    params = sampling_params(body, len(ids), settings.max_new_tokens, _max_len(engine, settings))
    return Job(ids, params, settings.served_name, body.include_usage(), prompt_opens_reasoning(prompt))


async def prepare_completion(engine: EngineProtocol, settings: Settings, body: CompletionRequest) -> Job:
    ids = await asyncio.to_thread(engine.tokenize, body.prompt_text())
    params = sampling_params(body, len(ids), settings.max_new_tokens, _max_len(engine, settings))
    return Job(ids, params, settings.served_name, body.include_usage(), id=new_id("cmpl"))


def _max_len(engine: EngineProtocol, settings: Settings) -> int:
    return min(engine.max_model_len, settings.max_model_len)


async def _chunks(engine: EngineProtocol, settings: Settings, job: Job) -> AsyncGenerator[GenerationChunk]:
    """Engine chunks until the finish chunk, under the request timeout. Raises APIError."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.request_timeout_seconds
    source = engine.generate(job.prompt_ids, job.params, job.id)
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(anext(source), max(0.0, deadline - loop.time()))
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise APIError(
                    504, f"Request timed out after {settings.request_timeout_seconds:g}s.", type_="timeout_error"
                ) from None
            if chunk.error is not None or chunk.finish_reason == "error":
                raise APIError(500, f"Generation failed: {chunk.error or 'engine error'}", type_="server_error")
            yield chunk
            if chunk.finish_reason is not None:
                return
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()  # frees the engine slot (disconnect, timeout or error)


async def _collect(
    engine: EngineProtocol, settings: Settings, metrics: Metrics, job: Job, started: float
) -> tuple[str, GenerationChunk]:
    timer = TokenTimer(metrics, started)
    parts: list[str] = []
    last = GenerationChunk("", prompt_tokens=len(job.prompt_ids))
    async with aclosing(_chunks(engine, settings, job)) as chunks:
        async for chunk in chunks:
            timer.observe(chunk.completion_tokens)
            parts.append(chunk.text)
            last = chunk
    timer.finish(last.prompt_tokens or len(job.prompt_ids))
    return "".join(parts), last


def _usage(job: Job, last: GenerationChunk) -> Usage:
    return Usage.of(last.prompt_tokens or len(job.prompt_ids), last.completion_tokens, last.cached_prompt_tokens)


async def complete_chat(
    engine: EngineProtocol, settings: Settings, metrics: Metrics, job: Job, started: float
) -> ChatCompletion:
    text, last = await _collect(engine, settings, metrics, job, started)
    reasoning, content = split_reasoning(text, job.in_reasoning)
    message = AssistantMessage(content=content, reasoning_content=reasoning)
    choice = ChatChoice(message=message, finish_reason=finish_reason(last.finish_reason))
    return ChatCompletion(id=job.id, created=job.created, model=job.model, choices=[choice], usage=_usage(job, last))


async def complete_text(
    engine: EngineProtocol, settings: Settings, metrics: Metrics, job: Job, started: float
) -> Completion:
    text, last = await _collect(engine, settings, metrics, job, started)
    choice = CompletionChoice(text=text, finish_reason=finish_reason(last.finish_reason))
    return Completion(id=job.id, created=job.created, model=job.model, choices=[choice], usage=_usage(job, last))


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


async def stream_chat(
    engine: EngineProtocol, settings: Settings, metrics: Metrics, job: Job, started: float
) -> AsyncIterator[str]:
    """SSE chat stream: role chunk, reasoning/content deltas, finish chunk, [usage], [DONE]."""
    parser = ReasoningParser(job.in_reasoning)

    def deltas(reasoning: str, content: str) -> list[str]:
        out = []
        if reasoning:
            out.append(sse(chat_chunk(job.id, job.created, job.model, {"reasoning_content": reasoning})))
        if content:
            out.append(sse(chat_chunk(job.id, job.created, job.model, {"content": content})))
        return out

    def finish(last: GenerationChunk) -> list[str]:
        out = deltas(*parser.flush())
        out.append(sse(chat_chunk(job.id, job.created, job.model, {}, finish_reason(last.finish_reason))))
        if job.include_usage:
            out.append(sse(chat_chunk(job.id, job.created, job.model, {}, usage=_usage(job, last))))
        return out

    yield sse(chat_chunk(job.id, job.created, job.model, {"role": "assistant", "content": ""}))
    async for event in _stream(engine, settings, metrics, job, started, lambda c: deltas(*parser.feed(c.text)), finish):
        yield event


async def stream_completion(
    engine: EngineProtocol, settings: Settings, metrics: Metrics, job: Job, started: float
) -> AsyncIterator[str]:
    """SSE text completion stream: text deltas, finish event, [usage], [DONE]."""

    def delta(chunk: GenerationChunk) -> list[str]:
        return [sse(completion_chunk(job.id, job.created, job.model, chunk.text))] if chunk.text else []

    def finish(last: GenerationChunk) -> list[str]:
        out = [sse(completion_chunk(job.id, job.created, job.model, "", finish_reason(last.finish_reason)))]
        if job.include_usage:
            out.append(sse(completion_chunk(job.id, job.created, job.model, "", usage=_usage(job, last))))
        return out

    async for event in _stream(engine, settings, metrics, job, started, delta, finish):
        yield event


async def _stream(
    engine: EngineProtocol,
    settings: Settings,
    metrics: Metrics,
    job: Job,
    started: float,
    on_chunk: Any,
    on_finish: Any,
) -> AsyncIterator[str]:
    """Shared SSE loop; errors become one error event. Always ends with [DONE]."""
    timer = TokenTimer(metrics, started)
    last = GenerationChunk("", prompt_tokens=len(job.prompt_ids))
    try:
        async with aclosing(_chunks(engine, settings, job)) as chunks:
            async for chunk in chunks:
                timer.observe(chunk.completion_tokens)
                last = chunk
                for event in on_chunk(chunk):
                    yield event
        for event in on_finish(last):
            yield event
    except APIError as err:
        yield sse(err.body())
    finally:
        timer.finish(last.prompt_tokens or len(job.prompt_ids))
    yield sse("[DONE]")
