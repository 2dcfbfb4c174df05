"""Request -> the engine's SamplingParams: the token budget and the sampling fields."""

from __future__ import annotations

from collections.abc import Mapping

from ..types import SamplingParams
from .chat import ChatCompletionRequest
from .completions import CompletionRequest
from .errors import APIError


def sampling_params(
    request: ChatCompletionRequest | CompletionRequest,
    prompt_tokens: int,
    max_new_tokens: int,
    max_model_len: int,
    defaults: Mapping[str, float] | None = None,
) -> SamplingParams:
    """Request -> engine parameters, enforcing the token budget.

    max_tokens defaults to what fits (at most `max_new_tokens`); an explicit one above the cap or
    one that does not fit next to the prompt is a 400 naming max_tokens; a prompt that leaves no
    room at all is a 400 naming the prompt field.

    `defaults`: the model's sampling defaults (the engine's `generation_defaults`, from the
    checkpoint's generation_config.json, e.g. the R1 distills' temperature 0.6 / top_p 0.95), as
    vLLM applies them: each fills only a field the request left unset (or null); a field the
    request sets always wins. Without one: temperature 1, top_p 1, top_k off (OpenAI's defaults).
    top_k has no request field (neither OpenAI nor DeepSeek has one), so it is the model's or off.
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
    model = defaults or {}
    return SamplingParams(
        max_tokens=wanted,
        temperature=float(model.get("temperature", 1.0)) if request.temperature is None else request.temperature,
        top_p=float(model.get("top_p", 1.0)) if request.top_p is None else request.top_p,
        top_k=int(model.get("top_k", 0)),
        stop=request.stop_tuple(),
        seed=request.seed,
    )
