"""Static-shape decode: batch and KV length in buckets; one CUDA graph per bucket on CUDA.

A decode pass over n running rows runs at `rows = batch_bucket(n)` and attends over `length =
length_bucket(longest row + 1)`, so only a few shapes ever occur. Inputs live in fixed buffers
(`tokens`, `positions`); the pass reads them, writes the logits of its bucket into a fixed output.
On CUDA each (rows, length) bucket is captured once at start-up as a `torch.cuda.CUDAGraph` and
replayed, so a step costs one launch instead of hundreds (the host work that made the old engine
5% of the GPU's bound). On the CPU the same function runs eagerly on the same buffers at the exact
row count and length (`exact`): without a graph to replay, padding would only add work.

Padding rows (n..rows-1) are free slots: they decode token 0 at position 0 of their own slot and
their logits are dropped. Attention reads only `length` positions, never `max_model_len`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from .pool_cache import PoolCache

log = logging.getLogger(__name__)

MIN_LENGTH_BUCKET = 128


def batch_buckets(max_rows: int) -> list[int]:
    """1, 2, 4, 8, then steps of 8 up to 64, then of 32: few graphs, at most 1/8 padding past 8."""
    sizes = [1, 2, 4, 8]
    while sizes[-1] < max_rows:
        sizes.append(sizes[-1] + (8 if sizes[-1] < 64 else 32))
    return sorted({min(s, max_rows) for s in sizes})


def length_buckets(max_len: int) -> list[int]:
    """Powers of two from 128 up to `max_len` (always included)."""
    sizes, size = [], MIN_LENGTH_BUCKET
    while size < max_len:
        sizes.append(size)
        size *= 2
    return [*sizes, max_len]


def bucket(value: int, buckets: list[int]) -> int:
    """The smallest bucket >= value."""
    for size in buckets:
        if size >= value:
            return size
    raise ValueError(f"{value} exceeds the largest bucket {buckets[-1]}")


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean `allowed` -> the additive mask transformers' eager and SDPA attention both take."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


class DecodeStep:
    """Runs decode passes over the pool's first rows. Build once; `capture()` on CUDA."""

    def __init__(self, model: Any, cache: PoolCache, device: torch.device, dtype: torch.dtype) -> None:
        pool = cache.pool
        self.model, self.cache, self.dtype = model, cache, dtype
        self.row_buckets = batch_buckets(pool.slots)
        self.len_buckets = length_buckets(pool.slot_len)
        self.tokens = torch.zeros(pool.slots, dtype=torch.long, device=device)
        self.positions = torch.zeros(pool.slots, dtype=torch.long, device=device)
        self.columns = torch.arange(pool.slot_len, device=device)
        self.graphs: dict[tuple[int, int], tuple[Any, torch.Tensor]] = {}
        self.exact = device.type != "cuda"  # the CPU runs exact shapes; CUDA runs buckets

    def run(self, tokens: torch.Tensor, positions: torch.Tensor, longest: int) -> torch.Tensor:
        """Logits [n, vocab] for n rows whose inputs are `tokens` [n] at `positions` [n] (device
        tensors); `longest` is the largest position + 1 (known on the host, so no sync)."""
        n = int(tokens.shape[0])
        if self.exact:  # eager: no graph to replay, so padding would only add work
            rows, length = n, longest
        else:
            rows, length = bucket(n, self.row_buckets), bucket(longest, self.len_buckets)
        self.tokens[:n].copy_(tokens)
        self.positions[:n].copy_(positions)
        if rows > n:
            self.tokens[n:rows].zero_()
            self.positions[n:rows].zero_()
        graph = self.graphs.get((rows, length))
        if graph is None:
            return self._forward(rows, length)[:n]
        graph[0].replay()
        return graph[1][:n]

    def _forward(self, rows: int, length: int) -> torch.Tensor:
        positions = self.positions[:rows]
        allowed = self.columns[None, :length] <= positions[:, None]
        mask = additive_mask(allowed, self.dtype)[:, None, None, :]
        self.cache.decode(rows, length, positions)
        out = self.model(
            input_ids=self.tokens[:rows, None],
            position_ids=positions[:, None],
            attention_mask=mask,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits: torch.Tensor = out.logits[:, -1]
        return logits

    @torch.inference_mode()
    def capture(self, on_bucket: Callable[[int, int], None] | None = None) -> int:
        """Capture every bucket as a CUDA graph (largest first, so later ones reuse its memory pool).
        Returns the number captured. A bucket that cannot be captured stays eager (logged).

        Every graph writes its logits into one shared buffer [slots, vocab], so the graphs' own
        intermediates are freed at the end of each capture and reused by the next (one memory pool)."""
        pool = None
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        out: torch.Tensor | None = None
        for rows in reversed(self.row_buckets):
            for length in reversed(self.len_buckets):
                try:
                    stream.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(stream):
                        warm = self._forward(rows, length)  # lazy inits and autotuning outside capture
                    torch.cuda.current_stream().wait_stream(stream)
                    if out is None:
                        out = torch.empty(self.tokens.shape[0], warm.shape[-1], dtype=warm.dtype, device=warm.device)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=pool):
                        out[:rows].copy_(self._forward(rows, length))
                    pool = graph.pool()
                except RuntimeError as exc:  # e.g. a host sync inside the model: that bucket stays eager
                    log.warning("decode bucket rows=%d length=%d not captured (%s); it runs eagerly", rows, length, exc)
                    continue
                self.graphs[(rows, length)] = (graph, out[:rows])
                if on_bucket is not None:
                    on_bucket(rows, length)
        torch.cuda.synchronize()
        return len(self.graphs)
