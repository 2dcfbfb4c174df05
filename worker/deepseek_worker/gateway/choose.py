"""Weighted choice of a variant: only variants with a ready backend count, as in the operator's
traffic split; when none has one, every weighted variant counts (the request is then held for it)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from .config import Variant


def choose_variant(variants: Sequence[Variant], has_ready: Callable[[str], bool], rng: random.Random) -> Variant:
    """A variant drawn by weight among the ready ones, else among all with a weight above 0."""
    ready = [v for v in variants if v.weight > 0 and has_ready(v.name)]
    pool = ready or [v for v in variants if v.weight > 0]
    return rng.choices(pool, weights=[v.weight for v in pool])[0]
