"""Context and completion lengths by model family: what `model.maxModelLen` and `serving.maxNewTokens`
mean when the spec leaves them unset (docs/gpu-sizing.md, "Lengths by model family").

Reasoning models (DeepSeek-R1 and its distills) think for 4k-16k tokens inside `<think>` before they
answer, so the classic defaults (8192 / 2048) end most answers before they start. Contract of
`lengths(model, serving)`:

- both set: the spec's values (the CRD refuses maxNewTokens >= maxModelLen);
- maxModelLen unset: the family's default (reasoning: 32768, at most the model's context window;
  others: 8192), raised to 2 x maxNewTokens when that is set and larger;
- maxNewTokens unset: the family's default (reasoning: 16384; others: 2048), at most half of the
  effective maxModelLen, so the prompt always keeps room.

The family is read from the last path component of `model.id`, as the GPU-fit catalogue reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deepseek_operator.api import ModelSpec, Serving

MAX_MODEL_LEN = 8192
MAX_NEW_TOKENS = 2048
REASONING_MAX_MODEL_LEN = 32768
REASONING_MAX_NEW_TOKENS = 16384
# Reasoning models of the catalogue -> their context window (max_position_embeddings in config.json).
REASONING_CONTEXT: dict[str, int] = {
    **dict.fromkeys(("deepseek-r1", "deepseek-r1-zero", "deepseek-r1-0528"), 163840),
    **dict.fromkeys(("deepseek-r1-distill-qwen-1.5b", "deepseek-r1-distill-qwen-7b", "deepseek-r1-distill-qwen-14b",
                     "deepseek-r1-distill-qwen-32b", "deepseek-r1-distill-llama-8b",
                     "deepseek-r1-distill-llama-70b"), 131072),
}


@dataclass(frozen=True)
class Lengths:
    """The effective lengths of one variant: what the worker is given and the plan prices."""

    max_model_len: int
    max_new_tokens: int
    reasoning: bool  # the defaults came from (or would come from) the reasoning family


def model_key(model_id: str) -> str:
    """The catalogue key of an HF id or a path: its last path component, lower case."""
    return model_id.rstrip("/").rsplit("/", 1)[-1].lower()


def is_reasoning(model_id: str) -> bool:
    return model_key(model_id) in REASONING_CONTEXT


def lengths(model: ModelSpec, serving: Serving) -> Lengths:
    """The effective maxModelLen and maxNewTokens of `model` served with `serving` (module docstring)."""
    context = REASONING_CONTEXT.get(model_key(model.id))
    reasoning = context is not None
    new_default = REASONING_MAX_NEW_TOKENS if reasoning else MAX_NEW_TOKENS
    model_len = model.max_model_len
    if model_len is None:
        model_len = min(REASONING_MAX_MODEL_LEN, context) if context is not None else MAX_MODEL_LEN
        if serving.max_new_tokens is not None:
            model_len = max(model_len, 2 * serving.max_new_tokens)
    new_tokens = serving.max_new_tokens
    if new_tokens is None:
        new_tokens = min(new_default, model_len // 2)
    return Lengths(model_len, new_tokens, reasoning)
