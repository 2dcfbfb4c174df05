"""What chat and text completions share: the common request fields, usage, ids and stream events.

Requests are strict (unknown top-level parameters are refused with 400 naming them) because
silently ignoring e.g. `tools` gives wrong answers; parameters we accept only at their neutral
value (n=1, no penalties...) say so.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import APIError

STRICT = ConfigDict(extra="forbid")

_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(data: Any, path: str = "") -> str | None:
    """The path ("messages[0].content") of the first string holding a lone UTF-16 surrogate, else
    None. A key holding one names the object it is in ("" for the body itself).

    JSON may escape one (`"\\ud800"`) and Python's json module decodes it, but such a string has
    no UTF-8 form: a tokenizer, a stop matcher or a reply that echoes it would raise mid-request.
    """
    if isinstance(data, str):
        return path if _SURROGATE.search(data) else None
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _SURROGATE.search(key):
                return path
            found = lone_surrogate(value, where)
            if found is not None:
                return found
    elif isinstance(data, list):
        for i, item in enumerate(data):
            found = lone_surrogate(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


class StreamOptions(BaseModel):
    """`include_obfuscation` is accepted and ignored: events are never padded (see docs/worker-api.md)."""

    model_config = STRICT
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


Stop = str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)] | None


class GenerationRequest(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = STRICT
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

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        """Before any field: a lone surrogate anywhere is a 400 naming where (see lone_surrogate)."""
        where = lone_surrogate(data)
        if where is not None:
            raise APIError(400, "Strings must be valid Unicode: a lone UTF-16 surrogate (\\ud800-\\udfff) "
                           "has no UTF-8 form.", param=where or None)
        return data

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


def without_none(data: dict[str, Any], keep: frozenset[str]) -> dict[str, Any]:
    """Drop optional keys whose value is None, except those OpenAI's schema requires (`keep`)."""
    return {k: v for k, v in data.items() if v is not None or k in keep}


def stream_event(
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


def finish_reason(engine_reason: str | None) -> str:
    """Engine finish reasons -> OpenAI's ("abort" only reaches a client on drain/timeout)."""
    return "length" if engine_reason == "length" else "stop"
