"""Request -> engine job: prompt building (chat template, thinking, prefix), the token budget, and
the engine's chunks under the request timeout.

Contract: the engine iterator is closed in a `finally` (aclose), so a client that disconnects, a
timeout or an error frees the engine slot at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field, replace

from jinja2 import TemplateError

from ..protocol import features, tools
from ..protocol.chat import ChatCompletionRequest
from ..protocol.common import Usage, new_id, now
from ..protocol.completions import CompletionRequest
from ..protocol.errors import APIError
from ..protocol.params import sampling_params
from ..protocol.reasoning import ReasoningParser, apply_thinking
from ..settings import Settings
from ..types import EngineProtocol, GenerationChunk, SamplingParams


@dataclass
class Job:
    """One validated request, ready for the engine."""

    prompt_ids: list[int]
    params: SamplingParams
    model: str
    include_usage: bool
    in_reasoning: bool = False
    split_reasoning: bool = True  # False: thinking disabled or a prefix continued, all output is content
    tools: tools.ToolPlan | None = None  # parse tool calls out of the reply (protocol/features.py)
    prompt_chars: int = 0  # /v1/completions: logprobs' text_offset counts from the prompt's start
    # (prompt, completion) tokens of the finished request, for the caller's meter (metering.py)
    on_usage: Callable[[int, int], None] | None = None
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
    params = sampling_params(
        body, len(ids), settings.max_new_tokens, max_len(engine, settings), engine.generation_defaults
    )
    params = replace(params, grammar=extras.grammar, logprobs=extras.logprobs)
    return Job(ids, params, settings.served_name, body.include_usage(), in_reasoning, split, extras.plan)


async def prepare_completion(engine: EngineProtocol, settings: Settings, body: CompletionRequest) -> Job:
    body.check()
    ids = await asyncio.to_thread(engine.tokenize, body.prompt_text())
    if not ids:  # before any stream starts: a 400, never a 200 followed by an error event
        raise APIError(400, "The prompt is empty after tokenization.", param="prompt")
    params = sampling_params(
        body, len(ids), settings.max_new_tokens, max_len(engine, settings), engine.generation_defaults
    )
    params = replace(params, logprobs=features.completion_features(body))
    job = Job(ids, params, settings.served_name, body.include_usage(), id=new_id("cmpl"))
    job.prompt_chars = len(body.prompt_text())
    return job


def max_len(engine: EngineProtocol, settings: Settings) -> int:
    return min(engine.max_model_len, settings.max_model_len)


async def chunks(engine: EngineProtocol, settings: Settings, job: Job) -> AsyncGenerator[GenerationChunk]:
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


def job_usage(job: Job, last: GenerationChunk, reasoning_tokens: int = 0) -> Usage:
    prompt = last.prompt_tokens or len(job.prompt_ids)
    return Usage.of(prompt, last.completion_tokens, last.cached_prompt_tokens, reasoning_tokens)


def reasoning_parser(job: Job) -> ReasoningParser:
    return ReasoningParser(job.in_reasoning, split=job.split_reasoning)
