"""Non-streaming replies: collect the engine's chunks, then one ChatCompletion / Completion.

A client that disconnects while its reply is generated cancels the generation (until_disconnect):
the engine slot is free at once, as for a stream (Starlette cancels those itself).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextlib import aclosing
from typing import Any, TypeVar

from starlette.types import Receive

from ..protocol import features
from ..protocol.chat import AssistantMessage, ChatChoice, ChatCompletion
from ..protocol.common import finish_reason
from ..protocol.completions import Completion, CompletionChoice
from ..settings import Settings
from ..types import EngineProtocol, GenerationChunk
from . import jobs
from .jobs import Job, job_usage, reasoning_parser
from .metrics import Metrics, TokenTimer

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client left before its non-streamed reply was ready; the generation was cancelled."""


async def until_disconnect(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """Await `work` unless the client disconnects first: then cancel it (jobs.chunks closes the
    engine iterator, freeing the slot) and raise ClientDisconnected.

    The body has been read, so the next ASGI message is `http.disconnect`, sent by the server as
    soon as the connection closes.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this request's own task is cancelled (server shutdown)
        for pending in (watcher, task):
            pending.cancel()
        await asyncio.gather(watcher, task, return_exceptions=True)
    if task.cancelled():
        raise ClientDisconnected
    return task.result()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _collect(
    engine: EngineProtocol, settings: Settings, metrics: Metrics, job: Job, started: float
) -> tuple[list[GenerationChunk], GenerationChunk]:
    timer = TokenTimer(metrics, started, job.on_usage)
    got: list[GenerationChunk] = []
    last = GenerationChunk("", prompt_tokens=len(job.prompt_ids))
    async with aclosing(jobs.chunks(engine, settings, job)) as chunks:
        async for chunk in chunks:
            timer.observe(chunk.completion_tokens)
            got.append(chunk)
            last = chunk
    timer.finish(last.prompt_tokens or len(job.prompt_ids))
    return got, last


async def complete_chat(
    engine: EngineProtocol, settings: Settings, metrics: Metrics, job: Job, started: float
) -> ChatCompletion:
    got, last = await _collect(engine, settings, metrics, job, started)
    parser, reasoning, content, seen = reasoning_parser(job), [], [], 0
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
    usage = job_usage(job, last, parser.reasoning_tokens)
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
    return Completion(id=job.id, created=job.created, model=job.model, choices=[choice], usage=job_usage(job, last))
