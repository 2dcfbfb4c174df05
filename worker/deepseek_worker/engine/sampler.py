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


class Scratch:
    """Two [rows, vocab] float32 buffers on the logits' device, allocated once by the runner.

    Sampling makes several full passes over the logits; writing them into fresh tensors every step
    cost more than the arithmetic on the CPU (a [64, 129280] float32 tensor is 33 MB: glibc maps and
    zero-fills it anew on every allocation), so the passes write into these instead."""

    def __init__(self, rows: int, vocab: int, device: torch.device) -> None:
        self.buffers = torch.empty(2, rows, vocab, dtype=torch.float32, device=device)

    def take(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.buffers[0, :n], self.buffers[1, :n]


def sample(logits: torch.Tensor, rows: list[RowParams], scratch: Scratch | None = None) -> torch.Tensor:
    """Tokens [n] (on the logits' device) for logits [n, vocab], one RowParams per row. `scratch`
    (at least n rows) saves the allocations; without it the buffers are allocated here."""
    greedy_rows = [r.temperature < GREEDY_BELOW for r in rows]
    if all(greedy_rows):
        return logits.argmax(dim=-1)
    n, device = len(rows), logits.device
    probs, work = scratch.take(n) if scratch is not None else Scratch(n, logits.shape[-1], device).take(n)
    temps = torch.tensor([1.0 if greedy else r.temperature for r, greedy in zip(rows, greedy_rows, strict=True)],
                         device=device)
    torch.div(logits, temps[:, None], out=probs)  # float32 whatever the logits' dtype; never in place
    torch.softmax(probs, dim=-1, out=probs)
    if any(r.top_k > 0 for r in rows):
        probs = _top_k(probs, [r.top_k for r in rows])
    top_p = torch.tensor([r.top_p for r in rows], device=device, dtype=torch.float64)  # 1e-300 is 0 in float32
    draws = torch.tensor([uniforms(r.seed, r.index) for r in rows], device=device, dtype=torch.float64)
    tokens = _top_p(probs, top_p, draws, work)
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


def _draw(probs: torch.Tensor, floor: torch.Tensor | None, u: torch.Tensor,
          work: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse-CDF draw from each row's tokens with probability > floor (None: all of them); the CDF
    goes into `work` when given."""
    kept = probs if floor is None else torch.where(probs > floor[:, None], probs, 0.0)
    cdf = torch.cumsum(kept, dim=-1, out=work) if work is not None else kept.cumsum(dim=-1)
    target = (u * cdf[:, -1].double()).to(cdf.dtype)[:, None]
    return torch.searchsorted(cdf, target, right=True).clamp_(max=probs.shape[-1] - 1).squeeze(1)


def _top_p(probs: torch.Tensor, top_p: torch.Tensor, draws: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
    """Exact nucleus sampling by rejection; rows with top_p >= 1 take their first draw. Rounds after
    the first run only on the rows still rejecting (usually one or two of a batch)."""
    chosen = _draw(probs, None, draws[:, 0], work)
    done = (top_p >= 1.0) | _inside(probs, chosen, top_p, work)
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


def _inside(probs: torch.Tensor, token: torch.Tensor, top_p: torch.Tensor,
            work: torch.Tensor | None = None) -> torch.Tensor:
    """Whether each row's `token` is in its nucleus: the tokens strictly more likely hold < top_p.
    (A float mask multiplied in place: `torch.where(p > pivot, p, 0)` was 2x slower on the CPU.)"""
    pivot = probs.gather(1, token[:, None])
    above = torch.gt(probs, pivot, out=work) if work is not None else (probs > pivot).to(probs.dtype)
    return above.mul_(probs).sum(dim=-1) < top_p


def _sorted_top_p(probs: torch.Tensor, top_p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    ordered, order = probs.sort(dim=-1, descending=True)
    outside = (ordered.cumsum(dim=-1) - ordered) >= top_p[:, None]
    outside[:, 0] = False  # the most likely token is always in the nucleus
    ordered = torch.where(outside, 0.0, ordered)
    cdf = ordered.cumsum(dim=-1)
    target = (u * cdf[:, -1].double()).to(cdf.dtype)[:, None]
    pick = torch.searchsorted(cdf, target, right=True).clamp_(max=probs.shape[-1] - 1)
    return order.gather(1, pick).squeeze(1)
