"""Weighted choice of a variant: only variants with a ready backend serve, as in the operator's
traffic split; when none has one, every weighted variant counts (the request is then held for it).

The draw is made in two steps so that a variant at zero behind a ready one is still wanted: first
among every weighted variant (`drawn`), then, when the drawn one has no ready backend but another
has, among the ready ones (`served`). The served variant's distribution is the old one (weights
renormalised over the ready variants), and a drawn variant passed over this way is the demand that
wakes it from zero (Hold.pass_over; the KEDA trigger reads the gateway's `/scaling/<variant>`
`wanted`): without it a canary at zero behind a ready primary was never drawn and never woken.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .config import Variant


@dataclass(frozen=True)
class Draw:
    """`served` gets the request; `drawn` is the variant its weight picked (the same unless `drawn`
    had no ready backend while another variant had one)."""

    served: Variant
    drawn: Variant

    @property
    def passed_over(self) -> bool:
        return self.served is not self.drawn


def choose_variant(variants: Sequence[Variant], has_ready: Callable[[str], bool], rng: random.Random) -> Draw:
    """A variant drawn by weight among all with a weight above 0; when it has no ready backend, one
    drawn by weight among those that have one (if any: else the first is held for)."""
    weighted = [v for v in variants if v.weight > 0]
    drawn = _draw(weighted, rng)
    if has_ready(drawn.name):
        return Draw(drawn, drawn)
    ready = [v for v in weighted if has_ready(v.name)]
    return Draw(_draw(ready, rng), drawn) if ready else Draw(drawn, drawn)


def _draw(pool: Sequence[Variant], rng: random.Random) -> Variant:
    return rng.choices(pool, weights=[v.weight for v in pool])[0]
