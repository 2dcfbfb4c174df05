"""Grammar-constrained decoding (xgrammar): compiled grammars, per-request matchers, row masks.

Contract with the runner: a constrained request owns one `Constraint` (a grammar matcher). Before
sampling, `mask_row` sets the logits of every token the grammar cannot accept next to -inf, on that
request's row only (other rows of the batch are untouched); after sampling, `accept` advances the
matcher. The grammar's stop tokens are the engine's EOS ids, so a request can end only where its
grammar is complete, and once complete nothing but EOS is allowed.

Compiling (EBNF x vocabulary -> token masks) is the expensive part: `Grammars.compile` caches by
EBNF text (LRU) and is called from a worker thread before the request joins the batch, never
inside a decode step. The vocabulary table (`xgrammar.TokenizerInfo`, ~1 s for a 129k vocabulary)
is built on first use, so engines that never see a grammar or logprobs request never pay for it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import torch

from ..types import GrammarSpec

_CACHE_SIZE = 256


class GrammarError(ValueError):
    """A grammar that cannot be compiled or a token it refuses (fails only that request)."""


class Grammars:
    """The vocabulary as xgrammar sees it, a grammar compiler and a compiled-grammar cache.

    Thread-safe: compiles run in worker threads while the decode thread reads token bytes.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: frozenset[int]) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._stop_ids = sorted(stop_ids)
        self._lock = threading.Lock()
        self._info: Any = None
        self._compiler: Any = None
        self._bytes: list[bytes] | None = None
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self.compiles = 0

    def _ensure(self) -> None:
        with self._lock:
            if self._info is not None:
                return
            import xgrammar as xgr  # lazy: plain serving never imports it

            info = xgr.TokenizerInfo.from_huggingface(
                self._tokenizer, vocab_size=self.vocab_size, stop_token_ids=self._stop_ids
            )
            # `decoded_vocab` rebuilds the whole list on every access: read it once.
            self._bytes = [bytes(b) for b in info.decoded_vocab]
            self._compiler = xgr.GrammarCompiler(info, max_threads=2)
            self._info = info

    def token_bytes(self) -> list[bytes]:
        """Raw bytes of every token id (byte-level BPE pieces decoded; special tokens as text)."""
        self._ensure()
        assert self._bytes is not None
        return self._bytes

    def compile(self, spec: GrammarSpec) -> Any:
        """The compiled grammar of `spec` (cached). Raises GrammarError."""
        self._ensure()
        with self._lock:
            hit = self._cache.get(spec.ebnf)
            if hit is not None:
                self._cache.move_to_end(spec.ebnf)
                return hit
        try:
            compiled = self._compiler.compile_grammar(spec.ebnf)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise GrammarError(f"grammar does not compile: {exc}") from exc
        with self._lock:
            self.compiles += 1
            self._cache[spec.ebnf] = compiled
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return compiled

    def constraint(self, spec: GrammarSpec) -> Constraint:
        """A fresh matcher for one request."""
        return Constraint(self.compile(spec), self.vocab_size)


class Constraint:
    """One request's grammar state. Used only by the decode thread once the request is admitted."""

    def __init__(self, compiled: Any, vocab_size: int) -> None:
        import xgrammar as xgr

        self._matcher = xgr.GrammarMatcher(compiled)
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        self._vocab = vocab_size
        self._shifts = torch.arange(32, dtype=torch.int32)

    def allowed(self) -> torch.Tensor:
        """Bool [vocab] of the tokens the grammar accepts next (CPU)."""
        self._matcher.fill_next_token_bitmask(self._bitmask)
        bits = (self._bitmask[0].unsqueeze(-1) >> self._shifts) & 1
        return bits.flatten()[: self._vocab].bool()

    def mask_row(self, row: torch.Tensor) -> None:
        """Set disallowed tokens of one logits row [V] to -inf, in place, on its device."""
        allowed = self.allowed()
        width = row.shape[-1]
        if width > self._vocab:  # padded LM head: ids past the tokenizer are never allowed
            row[self._vocab :] = float("-inf")
        row[: min(width, self._vocab)].masked_fill_(~allowed[:width].to(row.device, non_blocking=True), float("-inf"))

    def accept(self, token: int) -> None:
        """Advance past `token`; raises GrammarError if the grammar refuses it."""
        if not self._matcher.accept_token(int(token)):
            raise GrammarError(f"token {token} is not allowed by the grammar")

    @property
    def finished(self) -> bool:
        """True once a stop token was accepted at a complete point."""
        return bool(self._matcher.is_terminated())
