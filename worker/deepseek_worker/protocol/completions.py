"""POST /v1/completions (legacy text completions): the request, the reply and its stream events."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from .common import GenerationRequest, Usage, stream_event


class CompletionRequest(GenerationRequest):
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
    return stream_event("text_completion", completion_id, created, model, choice, usage, include_usage)
