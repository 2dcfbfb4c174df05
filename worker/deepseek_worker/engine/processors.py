"""Per-request logits processing around sampling: grammar masks before, logprobs after.

Only requests that asked for a grammar or logprobs carry `RowExtras`; the runner calls `sample`
only when at least one row of the pass has them, so plain batches keep the plain path (one
batched argmax / per-row sampling, nothing else). In a mixed batch the work is per row: a mask
is written into that row of the shared logits tensor, logprobs are computed for the rows that
asked, in one log-softmax over just those rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..types import SamplingParams, TokenLogprob
from .constrained import Constraint, GrammarError, Grammars
from .logprobs import row_logprobs


@dataclass(eq=False)
class RowExtras:
    """One request's grammar matcher (once prepared) and logprobs bookkeeping."""

    params: SamplingParams
    constraint: Constraint | None = None
    vocab: list[bytes] | None = None
    pending: list[TokenLogprob] = field(default_factory=list)
    error: str | None = None

    @classmethod
    def of(cls, params: SamplingParams) -> RowExtras | None:
        """None for plain requests (no grammar, no logprobs)."""
        if params.grammar is None and params.logprobs is None:
            return None
        return cls(params)

    def prepare(self, grammars: Grammars) -> str | None:
        """Compile the grammar and load the token table (slow; a worker thread, before admission).
        Returns an error message instead of raising."""
        try:
            if self.params.logprobs is not None:
                self.vocab = grammars.token_bytes()
            if self.params.grammar is not None:
                self.constraint = grammars.constraint(self.params.grammar)
        except (GrammarError, ImportError, RuntimeError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def take(self) -> tuple[TokenLogprob, ...]:
        """Logprobs recorded since the last chunk."""
        out, self.pending = tuple(self.pending), []
        return out


def sample(
    logits: torch.Tensor,
    extras: list[RowExtras | None],
    pick: Callable[[torch.Tensor], list[int]],
    eos_ids: frozenset[int],
) -> list[int]:
    """Mask constrained rows of `logits` [B, V] in place, `pick` tokens, record logprobs, advance
    the matchers. A matcher that refuses its token marks only that row's `error`."""
    live = [(row, extra) for row, extra in enumerate(extras) if extra is not None]
    constrained = [(row, e, e.constraint) for row, e in live if e.constraint is not None and e.error is None]
    for row, _, constraint in constrained:
        constraint.mask_row(logits[row])
    tokens = pick(logits)
    wanted = [(row, e) for row, e in live if e.vocab is not None and tokens[row] not in eos_ids]  # EOS: no text
    if wanted:
        vocab = wanted[0][1].vocab
        assert vocab is not None
        rows = [row for row, _ in wanted]
        tops = [e.params.logprobs or 0 for _, e in wanted]
        entries = row_logprobs(logits, rows, [tokens[row] for row in rows], tops, vocab)
        for (_, extra), entry in zip(wanted, entries, strict=True):
            extra.pending.append(entry)
    for row, extra, constraint in constrained:
        try:
            constraint.accept(tokens[row])
        except GrammarError as exc:
            extra.error = str(exc)
    return tokens
