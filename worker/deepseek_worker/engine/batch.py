"""The running batch's KV cache: left-padded, grown by admission, shrunk by removal.

Every running sequence owns one row of a transformers `DynamicCache` whose layers hold tensors
shaped [batch, heads, seq, dim] (for DeepSeek MLA: the compressed latents, heads == 1). Rows are
aligned on the right: a shorter row is padded on the left with zeros that the attention mask hides,
and each row carries its own position id, so one forward pass decodes every row exactly as if it
ran alone (up to float rounding).

Only plain `DynamicLayer`s are supported (no sliding-window / quantized caches); `check_layers`
raises a clear error otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def check_layers(cache: DynamicCache) -> None:
    """Raise NotImplementedError unless every cache layer is a plain growing DynamicLayer."""
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise NotImplementedError(
                f"continuous batching needs full-attention DynamicLayer caches, got {type(layer).__name__}"
            )


def layer_tensors(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) of each layer; batch on dim 0, sequence on dim -2."""
    layers: list[Any] = list(cache.layers)  # check_layers() guarantees DynamicLayer
    return [(layer.keys, layer.values) for layer in layers]


def set_layer_tensors(cache: DynamicCache, tensors: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Replace each layer's (keys, values) in place."""
    layers: list[Any] = list(cache.layers)
    for layer, (k, v) in zip(layers, tensors, strict=True):
        layer.keys, layer.values = k, v


def _left_pad(t: torch.Tensor, n: int, dim: int = -2) -> torch.Tensor:
    """Prepend `n` zeros along `dim` (-2: the sequence axis of KV tensors)."""
    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class BatchKV:
    """Rows of running sequences sharing one cache. Row i belongs to `ids[i]`.

    Invariants: every layer tensor, `mask` [B, L] and `positions` [B] agree on B; `L` equals the
    cached length; column 0 is real for at least one row (all-padding columns are trimmed).
    """

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros(0, 0, dtype=torch.long)
        self.positions = torch.zeros(0, dtype=torch.long)
        self.last_tokens = torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def length(self) -> int:
        """Cached sequence length L (including left padding)."""
        return int(self.mask.shape[1])

    def add(self, seq_id: int, cache: DynamicCache, last_token: int) -> None:
        """Append a freshly prefilled batch-1 cache (no padding) whose next input is `last_token`."""
        check_layers(cache)
        new_len = cache.get_seq_length()
        device = layer_tensors(cache)[0][0].device
        if self.cache is None:
            self.cache = cache
            self.mask = torch.ones(1, new_len, dtype=torch.long, device=device)
            self.positions = torch.tensor([new_len], device=device)
            self.last_tokens = torch.tensor([last_token], device=device)
            self.ids = [seq_id]
            return
        width = max(self.length, new_len)
        pad_old, pad_new = width - self.length, width - new_len
        merged = [
            (torch.cat([_left_pad(k, pad_old), _left_pad(nk.to(k.device), pad_new)]),
             torch.cat([_left_pad(v, pad_old), _left_pad(nv.to(v.device), pad_new)]))
            for (k, v), (nk, nv) in zip(layer_tensors(self.cache), layer_tensors(cache), strict=True)
        ]
        set_layer_tensors(self.cache, merged)
        new_mask = torch.ones(1, new_len, dtype=torch.long, device=device)
        self.mask = torch.cat([_left_pad(self.mask, pad_old, dim=1), _left_pad(new_mask, pad_new, dim=1)])
        self.positions = torch.cat([self.positions, self.positions.new_tensor([new_len])])
        self.last_tokens = torch.cat([self.last_tokens, self.last_tokens.new_tensor([last_token])])
        self.ids.append(seq_id)

    def remove(self, drop: set[int]) -> None:
        """Drop the rows of `drop` (ids not in the batch are ignored) and trim dead padding."""
        keep = [i for i, sid in enumerate(self.ids) if sid not in drop]
        if len(keep) == len(self.ids):
            return
        if not keep:
            self.__init__()  # type: ignore[misc]
            return
        assert self.cache is not None
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        # Columns that are padding in every remaining row carry no information: cut them.
        start = int((mask.sum(dim=0) > 0).nonzero()[0].item())
        set_layer_tensors(
            self.cache,
            [
                (k.index_select(0, index.to(k.device))[..., start:, :],
                 v.index_select(0, index.to(v.device))[..., start:, :])
                for k, v in layer_tensors(self.cache)
            ],
        )
        self.mask = mask[:, start:]
        self.positions = self.positions.index_select(0, index)
        self.last_tokens = self.last_tokens.index_select(0, index)
        self.ids = [self.ids[i] for i in keep]

    def decode_inputs(self) -> dict[str, Any]:
        """Keyword arguments for one decode forward pass of every row (one new token each)."""
        ones = torch.ones(len(self.ids), 1, dtype=self.mask.dtype, device=self.mask.device)
        return {
            "input_ids": self.last_tokens[:, None],
            "attention_mask": torch.cat([self.mask, ones], dim=1),
            "position_ids": self.positions[:, None],
            "past_key_values": self.cache,
            "use_cache": True,
        }

    def advance(self, next_tokens: list[int]) -> None:
        """Record that the decode pass appended one real column; feed `next_tokens` next step."""
        ones = torch.ones(len(self.ids), 1, dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        self.positions = self.positions + 1
        self.last_tokens = torch.tensor(next_tokens, device=self.last_tokens.device)
