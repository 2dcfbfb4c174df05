# ruff: noqa: RUF001, RUF002  -- DeepSeek's tool tokens use fullwidth bars (U+FF5C) and U+2581
"""Tool calling at the protocol layer: OpenAI `tools` / `tool_choice` <-> DeepSeek tool-call tokens.

- Wire models for `tools`, `tool_choice` and assistant `tool_calls` (validated by pydantic: a bad
  name or parameters is a 400 naming e.g. `tools[0].function.name`).
- `plan()`: what a request asks for; for a forced call (`required` or a named function) a grammar
  covering the whole tool-call span (DeepSeek's tokens + the function name + JSON matching that
  function's parameters), so forced arguments validate whatever the weights are.
- `chat_messages()`: messages for the chat template. Tool definitions go into the system prompt (in
  DeepSeek's "## Tools" style, since DeepSeek-V3's own template renders none); assistant tool calls
  and tool results are rendered by the template in DeepSeek-V3's format.
- `ToolCallParser`: generated text -> content + OpenAI tool calls, incrementally (streams) or whole.

DeepSeek-V3's format, which its template uses for earlier calls and the model emits:
`<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\nARGS\\n```<｜tool▁call▁end｜>`
(more calls separated by a newline) `<｜tool▁calls▁end｜>`. The parser also reads V3.1's
`<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..types import GrammarSpec
from .structured import SchemaError, ebnf_literal, prefix_rules, schema_ebnf

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"
FENCE_OPEN = "```json\n"
FENCE_CLOSE = "\n```"
MAX_CALLS = 16  # calls in one forced answer: bounds what a looping model can emit


class FieldError(ValueError):
    """A semantic error in the request; `param` names the field (the 400's error.param)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


# --- wire models --------------------------------------------------------------------------------


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, parameters: dict[str, Any] | None) -> dict[str, Any] | None:
        if parameters is not None and parameters and parameters.get("type", "object") != "object":
            raise ValueError("parameters must be a JSON schema of type 'object'")
        return parameters


class ToolDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class CalledFunction(BaseModel):
    name: str
    arguments: str


class ToolCallIn(BaseModel):
    """An assistant message's earlier tool call, fed back in the conversation."""

    id: str | None = None
    type: Literal["function"] = "function"
    function: CalledFunction


# --- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolPlan:
    """What the request's tools mean for generation and parsing."""

    tools: tuple[ToolDef, ...]
    choice: str  # "auto", "required" or the forced function's name
    parallel: bool
    grammar: GrammarSpec | None


def plan(tools: list[ToolDef] | None, choice: ToolChoice | None, parallel: bool | None) -> ToolPlan | None:
    """None when tools play no part (absent, or tool_choice "none"). Raises FieldError."""
    named = choice.function.name if isinstance(choice, NamedToolChoice) else None
    if not tools:
        if named is not None or choice == "required":
            raise FieldError("tool_choice", "tool_choice requires a non-empty `tools` list")
        return None
    if choice == "none":
        return None
    names = [t.function.name for t in tools]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise FieldError(f"tools[{i}].function.name", f"duplicate function name {name!r}")
    if named is not None and named not in names:
        raise FieldError("tool_choice", f"tool_choice names {named!r}, which is not in `tools`")
    mode = named or ("required" if choice == "required" else "auto")
    allow_many = parallel is not False and named is None
    grammar = None if mode == "auto" else _grammar(tools, named, allow_many)
    return ToolPlan(tuple(tools), mode, parallel is not False, grammar)


def _grammar(tools: list[ToolDef], named: str | None, allow_many: bool) -> GrammarSpec:
    """EBNF for the whole tool-call span of a forced answer (then only EOS may follow)."""
    rules, alternatives = [], []
    for i, tool in enumerate(tools):
        fn = tool.function
        if named is not None and fn.name != named:
            continue
        where = f"tools[{i}].function.parameters"
        try:
            body = schema_ebnf(fn.parameters or {"type": "object", "properties": {}}, where)
        except SchemaError as exc:
            raise FieldError(where, str(exc)) from exc
        head = f"{CALL_BEGIN}function{SEP}{fn.name}\n{FENCE_OPEN}"
        rules.append(f"call_{i} ::= {ebnf_literal(head)} f{i}_root {ebnf_literal(FENCE_CLOSE + CALL_END)}")
        rules.append(prefix_rules(body, f"f{i}_"))
        alternatives.append(f"call_{i}")
    more = f' ("\\n" call){{0, {MAX_CALLS - 1}}}' if allow_many else ""
    root = f"root ::= {ebnf_literal(CALLS_BEGIN)} call{more} {ebnf_literal(CALLS_END)}"
    return GrammarSpec("\n".join([root, "call ::= " + " | ".join(alternatives), *rules]))


# --- prompt -------------------------------------------------------------------------------------


def tools_prompt(p: ToolPlan) -> str:
    """The system-prompt section describing the tools and the call format."""
    parts = ["## Tools", "You have access to the following tools:"]
    for tool in p.tools:
        fn = tool.function
        params = json.dumps(fn.parameters or {"type": "object", "properties": {}}, ensure_ascii=False)
        parts.append(f"### {fn.name}\nDescription: {fn.description or ''}\n\nParameters: {params}")
    parts.append(
        "IMPORTANT: ALWAYS adhere to this exact format for tool use:\n"
        f"{CALLS_BEGIN}{CALL_BEGIN}function{SEP}tool_call_name\n{FENCE_OPEN}tool_call_arguments{FENCE_CLOSE}"
        f"{CALL_END}{{additional_tool_calls}}{CALLS_END}\n\n"
        "Where:\n- `tool_call_name` must be an exact match to one of the available tools\n"
        "- `tool_call_arguments` must be valid JSON that strictly follows the tool's Parameters Schema\n"
        "- For multiple tool calls, separate them with a newline"
    )
    if p.choice == "required":
        parts.append("You must call at least one tool now.")
    elif p.choice != "auto":
        parts.append(f"You must call the tool `{p.choice}` now.")
    return "\n\n".join(parts)


def chat_messages(messages: list[Any], p: ToolPlan | None) -> list[dict[str, Any]]:
    """Protocol messages (role, text(), tool_calls, tool_call_id) -> chat-template messages, with
    the tools section appended to the system prompt (or as a first system message)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.template_role() if hasattr(m, "template_role") else m.role  # developer -> system
        item: dict[str, Any] = {"role": role, "content": m.text()}
        calls = getattr(m, "tool_calls", None)
        if m.role == "assistant" and calls:
            item["tool_calls"] = [
                {"id": c.id, "type": "function", "function": c.function.model_dump()} for c in calls
            ]
        if m.role == "tool" and getattr(m, "tool_call_id", None):
            item["tool_call_id"] = m.tool_call_id
        out.append(item)
    if p is not None:
        section = tools_prompt(p)
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{section}" if out[0]["content"] else section
        else:
            out.insert(0, {"role": "system", "content": section})
    return out


# --- parsing ------------------------------------------------------------------------------------


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str = ""

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def _held(text: str, *tags: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of one of `tags`."""
    best = 0
    for tag in tags:
        for size in range(min(len(tag) - 1, len(text)), best, -1):
            if tag.startswith(text[-size:]):
                best = size
                break
    return best


@dataclass
class ToolCallParser:
    """Feed generated text; get content deltas and tool-call deltas (OpenAI stream shape).

    Contract: content is everything before `<｜tool▁calls▁begin｜>`; each call yields a first delta
    `{index, id, type, function: {name, arguments: ""}}`, then `{index, function: {arguments}}`
    pieces whose concatenation is the arguments text (the ```json fence removed). `calls` holds
    the calls parsed so far.
    """

    calls: list[ToolCall] = field(default_factory=list)
    _buf: str = ""
    _state: str = "content"  # content | between | head | fence | args | done

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        self._buf += text
        content = ""
        deltas: list[dict[str, Any]] = []
        while True:
            step = getattr(self, f"_{self._state}")(deltas)
            if isinstance(step, str):
                content += step
                continue
            if not step:
                return content, deltas

    def flush(self) -> tuple[str, list[dict[str, Any]]]:
        """End of output: release held content, or the rest of a cut-off call's arguments."""
        rest, self._buf = self._buf, ""
        if self._state == "content":
            return rest, []
        if self._state in ("args", "fence") and self.calls:
            self.calls[-1].arguments += rest
            return "", [{"index": len(self.calls) - 1, "function": {"arguments": rest}}] if rest else []
        return "", []

    # Each state handler returns True (progress), False (need more text) or content text.
    def _content(self, deltas: list[dict[str, Any]]) -> bool | str:
        at = self._buf.find(CALLS_BEGIN)
        if at >= 0:
            text, self._buf = self._buf[:at], self._buf[at + len(CALLS_BEGIN) :]
            self._state = "between"
            return text or True
        hold = _held(self._buf, CALLS_BEGIN)
        text, self._buf = self._buf[: len(self._buf) - hold], self._buf[len(self._buf) - hold :]
        return text or False

    def _between(self, deltas: list[dict[str, Any]]) -> bool:
        self._buf = self._buf.lstrip()
        if self._buf.startswith(CALL_BEGIN):
            self._buf = self._buf[len(CALL_BEGIN) :]
            self._state = "head"
            return True
        if self._buf.startswith(CALLS_END):
            self._state, self._buf = "done", ""
            return False
        return False

    def _head(self, deltas: list[dict[str, Any]]) -> bool:
        at = self._buf.find(SEP)
        if at < 0:
            return False
        left, rest = self._buf[:at].strip(), self._buf[at + len(SEP) :]
        if left == "function":  # V3: type<sep>name\n```json\nargs\n```
            if "\n" not in rest:
                return False
            name, rest = rest.split("\n", 1)
            self._state = "fence"
        else:  # V3.1: name<sep>args
            name = left
            self._state = "args"
        self._buf = rest
        call = ToolCall(new_call_id(), name.strip())
        self.calls.append(call)
        deltas.append({"index": len(self.calls) - 1, **call.wire()})
        return True

    def _fence(self, deltas: list[dict[str, Any]]) -> bool:
        if len(self._buf) < len(FENCE_OPEN) and FENCE_OPEN.startswith(self._buf):
            return False
        if self._buf.startswith(FENCE_OPEN):
            self._buf = self._buf[len(FENCE_OPEN) :]
        self._state = "args"
        return True

    def _args(self, deltas: list[dict[str, Any]]) -> bool:
        at = self._buf.find(CALL_END)
        if at >= 0:
            piece, self._buf = self._buf[:at], self._buf[at + len(CALL_END) :]
            piece = piece.removesuffix(FENCE_CLOSE)
            self._state = "between"
        else:
            hold = _held(self._buf, FENCE_CLOSE + CALL_END, CALL_END)
            piece, self._buf = self._buf[: len(self._buf) - hold], self._buf[len(self._buf) - hold :]
        if piece:
            self.calls[-1].arguments += piece
            deltas.append({"index": len(self.calls) - 1, "function": {"arguments": piece}})
        return at >= 0 or False

    def _done(self, deltas: list[dict[str, Any]]) -> bool:
        self._buf = ""  # text after the calls block (DeepSeek ends with EOS) is dropped
        return False


def parse(text: str) -> tuple[str, list[ToolCall]]:
    """Whole-output version: (content, calls)."""
    parser = ToolCallParser()
    c1, _ = parser.feed(text)
    c2, _ = parser.flush()
    return c1 + c2, parser.calls
