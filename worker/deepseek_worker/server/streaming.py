"""SSE event streams of chat and text completions.

Errors after the first SSE byte are sent as one `data: {"error": ...}` event followed by
`data: [DONE]`. The engine iterator is closed however the stream ends (jobs.chunks). A stream that
waits for the engine sends `: keep-alive` comments (keepalive.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from ..protocol import features
from ..protocol.chat import chat_chunk
from ..protocol.common import finish_reason
from ..protocol.completions import completion_chunk
from ..protocol.errors import APIError
from ..settings import Settings
from ..types import EngineProtocol, GenerationChunk
from . import jobs, keepalive
from .jobs import Job, job_usage, reasoning_parser
from .metrics import Metrics, TokenTimer


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
    parser = reasoning_parser(job)
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
            totals = job_usage(job, last, parser.reasoning_tokens)
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
            out.append(sse(completion_chunk(job.id, job.created, job.model, "", usage=job_usage(job, last))))
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
    """Shared SSE loop; errors become one error event. Always ends with [DONE]. While no chunk
    comes for keepalive.KEEPALIVE_SECONDS, a `: keep-alive` comment goes out instead."""
    timer = TokenTimer(metrics, started, job.on_usage)
    last = GenerationChunk("", prompt_tokens=len(job.prompt_ids))
    source = keepalive.with_keepalive(jobs.chunks(engine, settings, job), keepalive.KEEPALIVE_SECONDS)
    try:
        async with aclosing(source) as chunks:
            async for chunk in chunks:
                if chunk is None:
                    yield keepalive.KEEPALIVE_EVENT
                    continue
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
