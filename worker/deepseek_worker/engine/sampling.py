"""Per-request token sampling from one step's logits (greedy, temperature, top-p, seeded)."""

from __future__ import annotations

import torch

from ..types import SamplingParams


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator for one request: seeded when asked, else from fresh OS entropy.

    Sampling draws on the CPU so a seed gives the same tokens on any device and batch position.
    """
    gen = torch.Generator(device="cpu")
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


def sample_rows(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]
) -> list[int]:
    """Pick one token per row of `logits` [B, V] using each row's own params and generator.

    Greedy rows (temperature <= 0) take one batched argmax on the logits' device; only sampled
    rows are copied to the CPU.
    """
    greedy = logits.argmax(dim=-1).tolist()
    out: list[int] = []
    for row, (p, gen) in enumerate(zip(params, generators, strict=True)):
        if p.temperature <= 0:
            out.append(int(greedy[row]))
        else:
            out.append(_sample_one(logits[row].float().cpu(), p, gen))
    return out


def _sample_one(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator) -> int:
    probs = torch.softmax(logits / p.temperature, dim=-1)
    if p.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest head whose mass reaches top_p (always at least the top token).
        outside = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) >= p.top_p
        sorted_probs[outside] = 0.0
        pick = torch.multinomial(sorted_probs, 1, generator=gen)
        return int(order[pick].item())
    return int(torch.multinomial(probs, 1, generator=gen).item())
