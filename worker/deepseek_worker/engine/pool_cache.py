"""The KV pool seen through transformers' cache interface, so the models stay transformers' own.

A model's attention calls `past_key_values.update(new_keys, new_values, layer_idx)` and attends over
what it gets back. `PoolCache` answers from the pool according to the pass the runner set up:

- `decode(rows, length, positions)`: every row r (= slot r) writes its one new token at
  `positions[r]` (a scatter, fixed shapes) and attends over `keys[:rows, :, :length]`, a view;
- `prefill_rows(slots, positions, end)`: a right-padded batch of prompt chunks, each row written at
  its own positions of its own slot (after earlier chunks or a prefix hit), attending over its slot.

The runner always passes a prepared 4-D additive mask, so transformers never asks the cache for mask
sizes or sequence lengths (the methods exist for its interface and answer what they can).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from .pool import KVPool

Update = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class _PoolLayer(CacheLayerMixin):  # type: ignore[no-untyped-call]  # transformers' hook is untyped
    """One model layer's view of the pool; `update` defers to the cache's current pass."""

    is_compileable = True
    is_sliding = False

    def __init__(self, owner: PoolCache, index: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.owner, self.index = owner, index
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """The pool is allocated up front; nothing to do."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.owner.pass_update(self.index, key_states, value_states)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.kv_length, 0

    def get_seq_length(self) -> int:
        return self.owner.kv_length

    def get_max_length(self) -> int:
        return self.owner.pool.slot_len


class PoolCache(Cache):
    """A transformers `Cache` over a KVPool. Set a pass (`decode`, `prefill_rows`), then
    call the model with `past_key_values=this`."""

    def __init__(self, pool: KVPool) -> None:
        self.pool = pool
        self.kv_length = 0
        self.pass_update: Update = self._unset
        super().__init__(layers=[_PoolLayer(self, i) for i in range(len(pool.keys))])

    @staticmethod
    def _unset(index: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise RuntimeError("PoolCache used before a pass was set")

    def decode(self, rows: int, length: int, positions: torch.Tensor) -> None:
        """Rows 0..rows-1 each write one token at `positions` [rows] and attend over `length`."""
        self.kv_length = length
        index = positions.view(rows, 1, 1, 1)
        pool = self.pool

        def update(i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            keys, values = pool.keys[i][:rows], pool.values[i][:rows]
            keys.scatter_(2, index.expand(-1, k.shape[1], 1, k.shape[3]), k)
            values.scatter_(2, index.expand(-1, v.shape[1], 1, v.shape[3]), v)
            return keys[:, :, :length], values[:, :, :length]

        self.pass_update = update

    def prefill_rows(self, slots: torch.Tensor, positions: torch.Tensor, end: int) -> None:
        """Row r of a padded batch writes its tokens at `positions[r]` [width] of slot `slots[r]` and
        attends over its slot's first `end` positions (a gathered copy: prefill is compute-bound)."""
        pool = self.pool
        self.kv_length = end

        def update(i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            rows, at = slots.to(k.device), positions.to(k.device)
            keys, values = pool.keys[i], pool.values[i]
            # [slots, length, heads, dim] views: one advanced-index write per tensor, into the pool.
            keys.permute(0, 2, 1, 3)[rows[:, None], at] = k.permute(0, 2, 1, 3)
            values.permute(0, 2, 1, 3)[rows[:, None], at] = v.permute(0, 2, 1, 3)
            return keys[:, :, :end].index_select(0, rows), values[:, :, :end].index_select(0, rows)

        self.pass_update = update
