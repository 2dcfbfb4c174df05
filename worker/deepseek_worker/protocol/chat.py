"""POST /v1/chat/completions: the request (messages, tools, response_format, thinking...), the
reply and its stream chunks.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from .common import STRICT, GenerationRequest, Usage, stream_event, without_none
from .errors import APIError
from .structured import ResponseFormat
from .tools import ToolCallIn, ToolChoice, ToolDef


class TextPart(BaseModel):
    """A text content part; images and audio are not supported by a text-only model."""

    model_config = STRICT
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One chat message. `content` is a string or a list of text parts.

    `developer` (OpenAI's newer name for the system role) is rendered as `system`. `prefix: true`
    (DeepSeek's chat prefix completion) is allowed only on the last message, an assistant one:
    the reply then continues that message (checked by ChatCompletionRequest.check).
    """

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCallIn] | None = None  # an assistant's earlier calls (tools.py renders them)
    prefix: bool | None = None

    def template_role(self) -> str:
        """The role as chat templates know it (developer -> system)."""
        return "system" if self.role == "developer" else self.role

    @model_validator(mode="after")
    def _needs_content(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"content is required for role {self.role!r}")
        return self

    def text(self) -> str:
        """The content flattened to one string."""
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class Thinking(BaseModel):
    """DeepSeek's `thinking` parameter: {"type": "enabled" | "disabled"}."""

    model_config = STRICT
    type: Literal["enabled", "disabled"]


class ChatCompletionRequest(GenerationRequest):
    """POST /v1/chat/completions."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(strict=True, ge=0, le=20)] | None = None
    tools: list[ToolDef] | None = None  # tools.py: prompt, forced-call grammar, parsing
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None  # structured.py
    parallel_tool_calls: bool | None = None
    thinking: Thinking | None = None  # DeepSeek: reasoning on/off (see server/jobs.prepare_chat)
    # OpenAI parameters accepted and ignored: they do not change the output.
    metadata: dict[str, str] | None = None
    store: Literal[False] | None = None  # nothing is stored, so `true` is refused
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None  # the prefix cache is automatic
    prompt_cache_retention: str | None = None
    # OpenAI parameters accepted only as null (their default): anything else would change the output.
    modalities: list[Literal["text"]] | None = None
    audio: None = None
    prediction: None = None
    reasoning_effort: None = None
    verbosity: None = None
    web_search_options: None = None
    moderation: None = None
    prompt_cache_options: None = None
    functions: None = None
    function_call: None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def check(self) -> None:
        """The shared rules, then DeepSeek's prefix rule: only the last message, an assistant one."""
        super().check()
        if self.top_logprobs and not self.logprobs:
            raise APIError(400, "top_logprobs requires logprobs to be true.", param="top_logprobs")
        last = len(self.messages) - 1
        for i, message in enumerate(self.messages):
            if message.prefix and (i != last or message.role != "assistant"):
                raise APIError(
                    400, "prefix: true is only allowed on the last message, and only when its role is assistant.",
                    param=f"messages[{i}].prefix",
                )

    def prefix_message(self) -> ChatMessage | None:
        """The assistant message the reply continues (DeepSeek chat prefix completion), if any."""
        last = self.messages[-1]
        return last if last.prefix and last.role == "assistant" else None


class AssistantMessage(BaseModel):
    """The reply. `content` and `refusal` are always present (OpenAI requires both, nullable);
    other fields (reasoning_content, ...) only when set, as DeepSeek does."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return without_none(handler(self), frozenset({"role", "content", "refusal"}))


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None  # {"content": [...]} when requested (features.py)


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return without_none(handler(self), frozenset({"id", "object", "created", "model", "choices", "usage"}))


def chat_chunk(
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    usage: Usage | None = None,
    *,
    include_usage: bool = False,
) -> dict[str, Any]:
    """One `chat.completion.chunk`."""
    choice = {"delta": delta, "finish_reason": finish_reason}
    return stream_event("chat.completion.chunk", completion_id, created, model, choice, usage, include_usage)
