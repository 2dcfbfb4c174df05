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
from dataclasses import dataclass, field, replace
from typing import Any

from jinja2 import TemplateError

from . import features, tools
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
from .reasoning import ReasoningParser, apply_thinking
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
    split_reasoning: bool = True  # False: thinking disabled or a prefix continued, all output is content
    tools: tools.ToolPlan | None = None  # parse tool calls out of the reply (features.py)
    prompt_chars: int = 0  # /v1/completions: logprobs' text_offset counts from the prompt's start
    id: str = field(default_factory=lambda: new_id("chatcmpl"))
    created: int = field(default_factory=now)


async def prepare_chat(engine: EngineProtocol, settings: Settings, body: ChatCompletionRequest) -> Job:
    """Render the chat template and tokenize (off the event loop: long prompts take a while).

    `developer` messages render as `system`. A prefix message (DeepSeek chat prefix completion) is
    left out of the template and its text appended after the generation prompt, so the assistant
    turn stays open and the reply continues it (any thought the template opened is closed first).
    `thinking` then opens or closes the thought (reasoning.apply_thinking).
    """
    body.check()
    extras = features.chat_features(body)  # tools / response_format / logprobs: 400s before any work
    prefix = body.prefix_message()
    shown = body.messages[:-1] if prefix is not None else body.messages
    messages = tools.chat_messages(shown, extras.plan)
    try:
        prompt = await asyncio.to_thread(engine.apply_chat_template, messages)
    except (TemplateError, ValueError, TypeError) as exc:
        raise APIError(400, f"Messages cannot be rendered by the chat template: {exc}", param="messages") from exc
    thinking = body.thinking.type if body.thinking is not None else None
    prompt, in_reasoning = apply_thinking(prompt, "disabled" if prefix is not None else thinking)
    split = thinking != "disabled" and prefix is None
    if prefix is not None:
        prompt += prefix.text()
    ids = await asyncio.to_thread(engine.tokenize, prompt)
    if not ids:
        raise APIError(400, "The messages render to an empty prompt.", param="messages")
    params = sampling_params(body, len(ids), settings.max_new_tokens, _max_len(engine, settings))
    params = replace(params, grammar=extras.grammar, logprobs=extras.logprobs)
    return Job(ids, params, settings.served_name, body.include_usage(), in_reasoning, split, extras.plan)


async def prepare_completion(engine: EngineProtocol, settings: Settings, body: CompletionRequest) -> Job:
    body.check()
    ids = await asyncio.to_thread(engine.tokenize, body.prompt_text())
    if not ids:  # before any stream starts: a 400, never a 200 followed by an error event
        raise APIError(400, "The prompt is empty after tokenization.", param="prompt")
    params = sampling_params(body, len(ids), settings.max_new_tokens, _max_len(engine, settings))
    params = replace(params, logprobs=features.completion_features(body))
    job = Job(ids, params, settings.served_name, body.include_usage(), id=new_id("cmpl"))
    job.prompt_chars = len(body.prompt_text())
    return job


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
                # timeout_at, not wait_for: wait_for wraps every chunk's await in a new Task (per token).
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(source)
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
) -> tuple[list[GenerationChunk], GenerationChunk]:
    timer = TokenTimer(metrics, started)
    got: list[GenerationChunk] = []
    last = GenerationChunk("", prompt_tokens=len(job.prompt_ids))
    async with aclosing(_chunks(engine, settings, job)) as chunks:
        async for chunk in chunks:
            timer.observe(chunk.completion_tokens)
            got.append(chunk)
            last = chunk
    timer.finish(last.prompt_tokens or len(job.prompt_ids))
    return got, last


def _usage(job: Job, last: GenerationChunk, reasoning_tokens: int = 0) -> Usage:
    prompt = last.prompt_tokens or len(job.prompt_ids)
    return Usage.of(prompt, last.completion_tokens, last.cached_prompt_tokens, reasoning_tokens)


def _parser(job: Job) -> ReasoningParser:
    return ReasoningParser(job.in_reasoning, split=job.split_reasoning)


async def complete_chat(
    engine: EngineProtocol, settings: Settings, metrics: Metrics, job: Job, started: float
) -> ChatCompletion:
    got, last = await _collect(engine, settings, metrics, job, started)
    parser, reasoning, content, seen = _parser(job), [], [], 0
    for chunk in got:  # chunk by chunk, as streamed, so reasoning tokens are counted the same way
        r, c = parser.feed(chunk.text, chunk.completion_tokens - seen)
        seen = chunk.completion_tokens
        reasoning.append(r)
        content.append(c)
    r, c = parser.flush()
    text, calls = features.split_tool_calls("".join(content) + c, job.tools)
    message = AssistantMessage(
        content=text, reasoning_content="".join(reasoning) + r if parser.saw_thought else None, tool_calls=calls
    )
    reason = features.tool_finish(finish_reason(last.finish_reason), bool(calls))
    logprobs = features.chat_logprobs([e for g in got for e in g.logprobs]) if job.params.logprobs is not None else None
    choice = ChatChoice(message=message, finish_reason=reason, logprobs=logprobs)
    usage = _usage(job, last, parser.reasoning_tokens)
    return ChatCompletion(id=job.id, created=job.created, model=job.model, choices=[choice], usage=usage)


async def complete_text(
    engine: EngineProtocol, settings: Settings, metrics: Metrics, job: Job, started: float
) -> Completion:
    got, last = await _collect(engine, settings, metrics, job, started)
    text = "".join(chunk.text for chunk in got)
    logprobs = None
    if job.params.logprobs is not None:
        logprobs, _ = features.completion_logprobs([e for g in got for e in g.logprobs], job.prompt_chars)
    choice = CompletionChoice(text=text, finish_reason=finish_reason(last.finish_reason), logprobs=logprobs)
    return Completion(id=job.id, created=job.created, model=job.model, choices=[choice], usage=_usage(job, last))


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


_MARKER = "\x00\x01text\x01\x00"
_MARKER_JSON = json.dumps(_MARKER)


class TextEvents:
    """The SSE events of one stream that differ only in one string (a content, reasoning or text
    delta), serialised once: per token only the string is JSON-encoded. Output is byte-identical
    to `sse(payload)` with the string in place of `_MARKER` (json.dumps encodes a string the same
    way inside and outside an object)."""

    def __init__(self, payload: dict[str, Any]) -> None:
        head, tail = sse(payload).split(_MARKER_JSON, 1)
        self._head, self._tail = head, tail

    def __call__(self, text: str) -> str:
        return self._head + json.dumps(text) + self._tail


async def stream_chat(
    engine: EngineProtocol, settings: Settings, metrics: Metrics, job: Job, started: float
) -> AsyncIterator[str]:
    """SSE chat stream: role chunk, reasoning/content deltas, finish chunk, [usage], [DONE].
    With include_usage every chunk but the last carries `"usage": null`."""
    parser = _parser(job)
    seen = 0
    usage = job.include_usage

    def chunk(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return chat_chunk(job.id, job.created, job.model, delta, reason, include_usage=usage)

    content_event = TextEvents(chunk({"content": _MARKER}))
    reasoning_event = TextEvents(chunk({"reasoning_content": _MARKER}))
    rich = None  # tool calls or logprobs: per-event dicts instead of the pre-serialised fast path
    if job.tools is not None or job.params.logprobs is not None:
        rich = features.RichChatStream(chunk, job.tools, job.params.logprobs is not None)

    def deltas(reasoning: str, content: str, logprobs: tuple[Any, ...] = ()) -> list[str]:
        if rich is not None:
            return rich.events(reasoning, content, logprobs)
        out = []
        if reasoning:
            out.append(reasoning_event(reasoning))
        if content:
            out.append(content_event(content))
        return out

    def on_chunk(c: GenerationChunk) -> list[str]:
        nonlocal seen
        tokens, seen = c.completion_tokens - seen, c.completion_tokens
        return deltas(*parser.feed(c.text, tokens), c.logprobs)

    def finish(last: GenerationChunk) -> list[str]:
        out = deltas(*parser.flush())
        if rich is not None:
            out += rich.finish(finish_reason(last.finish_reason))
        else:
            out.append(sse(chunk({}, finish_reason(last.finish_reason))))
        if usage:
            totals = _usage(job, last, parser.reasoning_tokens)
            out.append(sse(chat_chunk(job.id, job.created, job.model, {}, usage=totals)))
        return out

    yield sse(chunk({"role": "assistant", "content": ""}))
    async for event in _stream(engine, settings, metrics, job, started, on_chunk, finish):
        yield event


async def stream_completion(
    engine: EngineProtocol, settings: Settings, metrics: Metrics, job: Job, started: float
) -> AsyncIterator[str]:
    """SSE text completion stream: text deltas, finish event, [usage], [DONE]."""
    usage = job.include_usage
    text_event = TextEvents(completion_chunk(job.id, job.created, job.model, _MARKER, include_usage=usage))

    offset = job.prompt_chars
    pending: list[Any] = []  # logprobs of tokens whose text is still held back

    def delta(chunk: GenerationChunk) -> list[str]:
        nonlocal offset
        if job.params.logprobs is None:
            return [text_event(chunk.text)] if chunk.text else []
        pending.extend(chunk.logprobs)
        if not chunk.text:
            return []
        event = completion_chunk(job.id, job.created, job.model, chunk.text, include_usage=usage)
        event["choices"][0]["logprobs"], offset = features.completion_logprobs(pending, offset)
        pending.clear()
        return [sse(event)]

    def finish(last: GenerationChunk) -> list[str]:
        reason = finish_reason(last.finish_reason)
        event = completion_chunk(job.id, job.created, job.model, "", reason, include_usage=usage)
        if pending:
            event["choices"][0]["logprobs"], _ = features.completion_logprobs(pending, offset)
        out = [sse(event)]
        if usage:
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
