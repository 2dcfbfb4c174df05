"""OpenAI/DeepSeek wire protocol: request and response models, errors, request -> SamplingParams.

No web-framework imports: app.py turns these into HTTP. Requests are strict (unknown top-level
parameters are refused with 400 naming them) because silently ignoring e.g. `tools` gives wrong
answers; parameters we accept only at their neutral value (n=1, no penalties...) say so.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from .structured import ResponseFormat
from .tools import ToolCallIn, ToolChoice, ToolDef
from .types import SamplingParams

# --- errors -----------------------------------------------------------------------------------

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "overloaded_error",
    504: "timeout_error",
}


class APIError(Exception):
    """An error with the one wire shape: {"error": {message, type, param, code}}.

    `code` is the HTTP status as an integer. 429/503 carry `retry_after` seconds (also sent as a
    Retry-After header by app.py).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        type_: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.type = type_ or ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The JSON body (also the payload of a streamed error event)."""
        err: dict[str, Any] = {"message": self.message, "type": self.type, "param": self.param, "code": self.status}
        if self.retry_after is not None:
            err["retry_after"] = self.retry_after
        return {"error": err}

    def headers(self) -> dict[str, str]:
        """Extra response headers: Retry-After for 429/503, WWW-Authenticate for 401."""
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="deepseek-worker"'
        return headers


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: int
    retry_after: int | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# --- requests ---------------------------------------------------------------------------------

_Strict = ConfigDict(extra="forbid")


class TextPart(BaseModel):
    """A text content part; images and audio are not supported by a text-only model."""

    model_config = _Strict
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


class StreamOptions(BaseModel):
    """`include_obfuscation` is accepted and ignored: events are never padded (see docs/worker-api.md)."""

    model_config = _Strict
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


Stop = str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)] | None


class _GenerationRequest(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = _Strict
    # Every optional parameter also takes an explicit null, meaning its default (the openai SDK
    # sends null for a parameter passed as None; OpenAI's spec marks them nullable).
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: Stop = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)  # OpenAI: a signed 64-bit integer
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Accepted only at their neutral values (SDKs send some of them by default).
    n: Literal[1] | None = None
    frequency_penalty: Literal[0] | None = None
    presence_penalty: Literal[0] | None = None
    logit_bias: Annotated[dict[str, float], Field(max_length=0)] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if stop == "":
            raise ValueError("stop must not be empty")
        return stop

    def stop_tuple(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        return self.stream_options is not None and bool(self.stream_options.include_usage)

    def check(self) -> None:
        """Cross-field rules pydantic cannot name a param for; raises a 400 APIError naming it."""
        if self.stream_options is not None and not self.stream:
            raise APIError(400, "stream_options is only allowed when stream is true.", param="stream_options")


class Thinking(BaseModel):
    """DeepSeek's `thinking` parameter: {"type": "enabled" | "disabled"}."""

    model_config = _Strict
    type: Literal["enabled", "disabled"]


class ChatCompletionRequest(_GenerationRequest):
    """POST /v1/chat/completions."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(strict=True, ge=0, le=20)] | None = None
    tools: list[ToolDef] | None = None  # tools.py: prompt, forced-call grammar, parsing
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None  # structured.py
    parallel_tool_calls: bool | None = None
    thinking: Thinking | None = None  # DeepSeek: reasoning on/off (see streams.prepare_chat)
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


class CompletionRequest(_GenerationRequest):
    """POST /v1/completions (one prompt string)."""

    # An empty prompt is refused (OpenAI would generate from <|endoftext|>; there is no such start here).
    prompt: Annotated[str, Field(min_length=1)] | Annotated[
        list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=1)
    ]
    echo: Literal[False] | None = None
    logprobs: Annotated[int, Field(strict=True, ge=0, le=5)] | None = None  # legacy: top-n per token
    best_of: Literal[1] | None = None
    suffix: Literal[""] | None = None

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


def sampling_params(
    request: ChatCompletionRequest | CompletionRequest, prompt_tokens: int, max_new_tokens: int, max_model_len: int
) -> SamplingParams:
    """Request -> engine parameters, enforcing the token budget.

    max_tokens defaults to what fits (at most `max_new_tokens`); an explicit one above the cap or
    one that does not fit next to the prompt is a 400 naming max_tokens; a prompt that leaves no
    room at all is a 400 naming the prompt field.
    """
    prompt_param = "messages" if isinstance(request, ChatCompletionRequest) else "prompt"
    room = max_model_len - prompt_tokens
    if room < 1:
        raise APIError(
            400,
            f"This model's maximum context length is {max_model_len} tokens; the prompt has {prompt_tokens}.",
            param=prompt_param,
            type_="invalid_request_error",
        )
    wanted = request.requested_max_tokens()
    if wanted is None:
        wanted = min(max_new_tokens, room)
    elif wanted > max_new_tokens:
        raise APIError(400, f"max_tokens must be at most {max_new_tokens}, got {wanted}.", param="max_tokens")
    elif wanted > room:
        raise APIError(
            400,
            f"This model's maximum context length is {max_model_len} tokens; the prompt has {prompt_tokens} "
            f"and max_tokens asks for {wanted}.",
            param="max_tokens",
        )
    return SamplingParams(
        max_tokens=wanted,
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        stop=request.stop_tuple(),
        seed=request.seed,
    )


# --- responses --------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    """OpenAI usage plus DeepSeek's cache hit/miss split."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails
    prompt_cache_hit_tokens: int
    prompt_cache_miss_tokens: int

    @classmethod
    def of(cls, prompt: int, completion: int, cached: int, reasoning: int = 0) -> Usage:
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
            completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning),
            prompt_cache_hit_tokens=cached,
            prompt_cache_miss_tokens=prompt - cached,
        )


def _without_none(data: dict[str, Any], keep: frozenset[str]) -> dict[str, Any]:
    """Drop optional keys whose value is None, except those OpenAI's schema requires (`keep`)."""
    return {k: v for k, v in data.items() if v is not None or k in keep}


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
        return _without_none(handler(self), frozenset({"role", "content", "refusal"}))


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
        return _without_none(handler(self), frozenset({"id", "object", "created", "model", "choices", "usage"}))


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None  # tokens, token_logprobs, top_logprobs, text_offset


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "deepseek-worker"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


def _stream_event(
    kind: str,
    completion_id: str,
    created: int,
    model: str,
    choice: dict[str, Any],
    usage: Usage | None,
    include_usage: bool,
) -> dict[str, Any]:
    """One streamed event of `kind`; the usage event has no choices and a usage object. With
    `include_usage` every other event carries `"usage": null`, as OpenAI sends it."""
    out: dict[str, Any] = {
        "id": completion_id,
        "object": kind,
        "created": created,
        "model": model,
        "choices": [] if usage is not None else [{"index": 0, **choice, "logprobs": None}],
    }
    if usage is not None:
        out["usage"] = usage.model_dump()
    elif include_usage:
        out["usage"] = None
    return out


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
    return _stream_event("chat.completion.chunk", completion_id, created, model, choice, usage, include_usage)


def completion_chunk(
    completion_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str | None = None,
    usage: Usage | None = None,
    *,
    include_usage: bool = False,
) -> dict[str, Any]:
    """One streamed `text_completion` event."""
    choice = {"text": text, "finish_reason": finish_reason}
    return _stream_event("text_completion", completion_id, created, model, choice, usage, include_usage)


def finish_reason(engine_reason: str | None) -> str:
    """Engine finish reasons -> OpenAI's ("abort" only reaches a client on drain/timeout)."""
    return "length" if engine_reason == "length" else "stop"
