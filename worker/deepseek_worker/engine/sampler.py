"""Sampling on the device for the whole batch: greedy, temperature, top-k, top-p, seeds.

One call turns logits [n, vocab] into tokens [n] with tensor ops over all rows at once; the caller
copies the tokens to the host once per step. No sort of the vocabulary: top-p is exact by rejection
(the idea behind FlashInfer's sorting-free sampler): draw a token from the tokens above a floor,
accept it when the tokens strictly more likely than it hold less than top_p of the mass (then it is
inside the nucleus), else raise the floor to its probability and draw again. Every round keeps the
nucleus and its relative probabilities, so an accepted draw is distributed exactly as nucleus
sampling; rows still unaccepted after the last round fall back to the sorted computation.

Randomness is a counter, not a generator: a row's draw in round r of its t-th token is a uniform
number hashed from (seed, t, r) on the host. A seeded request therefore gets the same tokens
whatever else the batch holds, on any device (docs/worker-engine.md, "Sampling").
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from dataclasses import dataclass

import torch

ROUNDS = 4  # top-p rejection rounds before the sorted fallback (rarely reached: see module doc)
# Temperatures below this are greedy: dividing logits by 5e-324 gives inf and a NaN distribution
# (vLLM's _SAMPLING_EPS is the same 1e-5).
GREEDY_BELOW = 1e-5


def new_seed(seed: int | None) -> int:
    """The request's seed, or a fresh random one."""
    return secrets.randbits(63) if seed is None else seed


def uniforms(seed: int, index: int, rounds: int = ROUNDS) -> list[float]:
    """`rounds` uniform numbers in (0, 1) for token `index` of the request seeded `seed`."""
    digest = hashlib.blake2b(struct.pack("<qq", seed & (2**63 - 1), index), digest_size=8 * rounds).digest()
    return [((n >> 11) + 0.5) / 2**53 for n in struct.unpack(f"<{rounds}Q", digest)]  # 53 bits: exact in a double


@dataclass(frozen=True)
class RowParams:
    """What sampling needs of one row. temperature < GREEDY_BELOW means greedy."""

    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    index: int = 0  # how many tokens this request generated before this one


def sample(logits: torch.Tensor, rows: list[RowParams]) -> torch.Tensor:
    """Tokens [n] (on the logits' device) for logits [n, vocab], one RowParams per row."""
    greedy_rows = [r.temperature < GREEDY_BELOW for r in rows]
    if all(greedy_rows):
        return logits.argmax(dim=-1)
    device = logits.device
    temps = torch.tensor([1.0 if greedy else r.temperature for r, greedy in zip(rows, greedy_rows, strict=True)],
                         device=device)
    probs = torch.softmax(logits.float() / temps[:, None], dim=-1)  # never in place: .float() may alias
    if any(r.top_k > 0 for r in rows):
        probs = _top_k(probs, [r.top_k for r in rows])
    top_p = torch.tensor([r.top_p for r in rows], device=device, dtype=torch.float64)  # 1e-300 is 0 in float32
    draws = torch.tensor([uniforms(r.seed, r.index) for r in rows], device=device, dtype=torch.float64)
    tokens = _top_p(probs, top_p, draws)
    if any(greedy_rows):
        tokens = torch.where(torch.tensor(greedy_rows, device=device), logits.argmax(dim=-1), tokens)
    return tokens


def _top_k(probs: torch.Tensor, ks: list[int]) -> torch.Tensor:
    """Zero everything below each row's k-th largest probability (k = 0: keep all)."""
    vocab = probs.shape[-1]
    kmax = min(max(ks), vocab)
    top = probs.topk(kmax, dim=-1).values
    index = torch.tensor([min(k, vocab) - 1 if k > 0 else kmax - 1 for k in ks], device=probs.device)
    floor = top.gather(1, index[:, None])
    keep_all = torch.tensor([k <= 0 for k in ks], device=probs.device)[:, None]
    return torch.where(keep_all | (probs >= floor), probs, 0.0)


def _draw(probs: torch.Tensor, floor: torch.Tensor | None, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw from each row's tokens with probability > floor (None: all of them)."""
    kept = probs if floor is None else torch.where(probs > floor[:, None], probs, 0.0)
    cdf = kept.cumsum(dim=-1)
    target = (u * cdf[:, -1].double()).to(cdf.dtype)[:, None]
    return torch.searchsorted(cdf, target, right=True).clamp_(max=probs.shape[-1] - 1).squeeze(1)


def _top_p(probs: torch.Tensor, top_p: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Exact nucleus sampling by rejection; rows with top_p >= 1 take their first draw. Rounds after
    the first run only on the rows still rejecting (usually one or two of a batch)."""
    chosen = _draw(probs, None, draws[:, 0])
    done = (top_p >= 1.0) | _inside(probs, chosen, top_p)
    # The tokens come to the host right after sampling anyway, so this sync costs no overlap.
    if bool(done.all()):
        return chosen
    rest = (~done).nonzero().squeeze(1)
    sub, sub_p, floor = probs[rest], top_p[rest], probs[rest].gather(1, chosen[rest, None]).squeeze(1)
    picked = torch.full_like(rest, -1)
    for r in range(1, draws.shape[1]):
        token = _draw(sub, floor, draws[rest, r])
        ok = _inside(sub, token, sub_p) & (picked < 0)
        picked = torch.where(ok, token, picked)
        floor = sub.gather(1, token[:, None]).squeeze(1)
        if bool((picked >= 0).all()):
            break
    missing = picked < 0  # rare: the exact sorted computation for those rows
    if bool(missing.any()):
        picked[missing] = _sorted_top_p(sub[missing], sub_p[missing], draws[rest[missing], 0])
    chosen[rest] = picked
    return chosen


def _inside(probs: torch.Tensor, token: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Whether each row's `token` is in its nucleus: the tokens strictly more likely hold < top_p."""
    pivot = probs.gather(1, token[:, None])
    return torch.where(probs > pivot, probs, 0.0).sum(dim=-1) < top_p


def _sorted_top_p(probs: torch.Tensor, top_p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    ordered, order = probs.sort(dim=-1, descending=True)
    outside = (ordered.cumsum(dim=-1) - ordered) >= top_p[:, None]
    outside[:, 0] = False  # the most likely token is always in the nucleus
    ordered = torch.where(outside, 0.0, ordered)
    cdf = ordered.cumsum(dim=-1)
    target = (u * cdf[:, -1].double()).to(cdf.dtype)[:, None]
    pick = torch.searchsorted(cdf, target, right=True).clamp_(max=probs.shape[-1] - 1)
    return order.gather(1, pick).squeeze(1)
