"""Request features beyond plain text, between the wire and the server's jobs/streaming: tools, response_format and
logprobs -> engine parameters (a grammar, a logprobs count) and back -> OpenAI's shapes.

- `chat_features(body)`: the tool plan and the grammar (forced tool call, else response_format)
  and the logprobs count; bad input is a 400 naming the field.
- `chat_logprobs` / `completion_logprobs`: engine TokenLogprobs -> `choices[].logprobs`.
- `RichChatStream`: SSE events for streams that carry tool calls or logprobs (plain streams keep
  server/streaming.py's pre-serialised fast path).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..types import GrammarSpec, TokenLogprob
from . import tools
from .chat import ChatCompletionRequest
from .completions import CompletionRequest
from .errors import APIError
from .structured import SchemaError, response_grammar


@dataclass(frozen=True)
class ChatFeatures:
    plan: tools.ToolPlan | None
    grammar: GrammarSpec | None
    logprobs: int | None


def chat_features(body: ChatCompletionRequest) -> ChatFeatures:
    """Tools, response_format and logprobs of a chat request. Raises a 400 APIError naming the field."""
    try:
        plan = tools.plan(body.tools, body.tool_choice, body.parallel_tool_calls)
    except tools.FieldError as exc:
        raise APIError(400, str(exc), param=exc.param) from exc
    grammar = plan.grammar if plan is not None else None
    fmt = body.response_format
    if fmt is not None and fmt.type != "text" and grammar is not None:
        raise APIError(400, "response_format cannot be combined with a forced tool call.", param="response_format")
    if grammar is None:
        try:
            grammar = response_grammar(fmt)
        except SchemaError as exc:
            raise APIError(400, f"Unsupported response_format: {exc}", param="response_format") from exc
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    return ChatFeatures(plan, grammar, logprobs)


def completion_features(body: CompletionRequest) -> int | None:
    """The legacy `logprobs` count (0-5), or None."""
    return body.logprobs


# --- logprobs shapes ----------------------------------------------------------------------------


def _top(entry: TokenLogprob) -> list[dict[str, Any]]:
    return [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in entry.top]


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """OpenAI chat: {"content": [{token, logprob, bytes, top_logprobs}], "refusal": null}."""
    content = [
        {"token": e.token, "logprob": e.logprob, "bytes": list(e.bytes), "top_logprobs": _top(e)} for e in entries
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(entries: Sequence[TokenLogprob], offset: int) -> tuple[dict[str, Any], int]:
    """OpenAI legacy completions shape; `offset` is the character offset of the first token (from
    the start of the prompt, as OpenAI counts). Returns the shape and the offset after the last."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(bytes(e.bytes).decode("utf-8", errors="ignore"))
    top = [{**{t.token: t.logprob for t in e.top}, e.token: e.logprob} for e in entries]
    shape = {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": top,
        "text_offset": offsets,
    }
    return shape, offset


# --- tool calls in a finished reply -------------------------------------------------------------


def split_tool_calls(content: str, plan: tools.ToolPlan | None) -> tuple[str | None, list[dict[str, Any]] | None]:
    """(content, tool_calls) of a whole reply; content is None when only calls were made."""
    if plan is None:
        return content, None
    text, calls = tools.parse(content)
    if not calls:
        return text, None
    return (text or None), [c.wire() for c in calls]


def tool_finish(reason: str, called: bool) -> str:
    """OpenAI's finish_reason: "tool_calls" when the reply ended normally after calling tools."""
    return "tool_calls" if called and reason == "stop" else reason


# --- streams ------------------------------------------------------------------------------------


@dataclass
class RichChatStream:
    """Chat SSE events when tool calls or logprobs ride along. `make(delta, finish_reason)` builds
    one chunk dict. Logprobs of tokens whose text is still held back wait for the next event."""

    make: Callable[[dict[str, Any], str | None], dict[str, Any]]
    plan: tools.ToolPlan | None
    logprobs: bool
    parser: tools.ToolCallParser = field(default_factory=tools.ToolCallParser)
    _pending: list[TokenLogprob] = field(default_factory=list)

    def events(self, reasoning: str, content: str, logprobs: Sequence[TokenLogprob] = ()) -> list[str]:
        self._pending.extend(logprobs)
        deltas: list[dict[str, Any]] = []
        if reasoning:
            deltas.append({"reasoning_content": reasoning})
        calls: list[dict[str, Any]] = []
        if self.plan is not None and content:
            content, calls = self.parser.feed(content)
        if content:
            deltas.append({"content": content})
        deltas += [{"tool_calls": [call]} for call in calls]
        return self._serialise([self.make(d, None) for d in deltas])

    def finish(self, reason: str) -> list[str]:
        """Flush the tool parser, then the finish chunk (it carries any logprobs still pending)."""
        out: list[dict[str, Any]] = []
        if self.plan is not None:
            content, calls = self.parser.flush()
            if content:
                out.append(self.make({"content": content}, None))
            out += [self.make({"tool_calls": [call]}, None) for call in calls]
        out.append(self.make({}, tool_finish(reason, bool(self.parser.calls))))
        return self._serialise(out)

    def _serialise(self, chunks: list[dict[str, Any]]) -> list[str]:
        if chunks and self.logprobs and self._pending:
            chunks[0]["choices"][0]["logprobs"] = chat_logprobs(self._pending)
            self._pending = []
        return [f"data: {json.dumps(c, separators=(',', ':'))}\n\n" for c in chunks]
