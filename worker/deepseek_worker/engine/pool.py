"""The KV pool: per-layer buffers allocated once after loading, cut into slots, never grown.

Layout: layer l holds `keys[l]` [slots, heads_k, slot_len, dim_k] and `values[l]` [slots, heads_v,
slot_len, dim_v], with whatever head counts and dims the model's own attention hands its cache, so
GQA keys/values and DeepSeek MLA's cached latents (`kv_nope`, `k_rot`) are stored alike. Shapes,
dtypes and devices are read from one probe forward pass (`probe_layers`), so a model split over
several GPUs keeps each layer's KV on that layer's device.

A slot holds one sequence of up to `slot_len` (= max_model_len) tokens. Running sequences always
occupy slots 0..n-1 (`SlotTable` compacts on release), so a decode pass over n rows reads the plain
views `keys[l][:rows, :, :length]`: no gather, no copy, fixed addresses a CUDA graph can replay.
Reserving max_model_len per sequence costs concurrency, not safety: admission is "a slot is free",
and a running sequence can never run out of KV (docs/worker-engine.md, "Memory").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerShape:
    """What one layer's attention stores per token: (heads, dim) of its keys and of its values."""

    keys: tuple[int, int]
    values: tuple[int, int]
    dtype: torch.dtype
    device: torch.device

    @property
    def bytes_per_token(self) -> int:
        size = torch.empty((), dtype=self.dtype).element_size()
        return (self.keys[0] * self.keys[1] + self.values[0] * self.values[1]) * size


def probe_layers(model: Any, device: torch.device) -> list[LayerShape]:
    """Run two tokens through `model` with a DynamicCache and read each layer's cached shapes.

    Raises NotImplementedError for caches the pool cannot hold (sliding-window, linear attention)."""
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        model(input_ids=torch.zeros(1, 2, dtype=torch.long, device=device), past_key_values=cache, use_cache=True)
    shapes = []
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise NotImplementedError(f"the KV pool holds full-attention layers only, got {type(layer).__name__}")
        k, v = layer.keys, layer.values
        assert k is not None and v is not None
        shapes.append(LayerShape((k.shape[1], k.shape[3]), (v.shape[1], v.shape[3]), k.dtype, k.device))
    return shapes


def bytes_per_token(shapes: list[LayerShape], device: torch.device | None = None) -> int:
    """KV bytes one token takes over all layers (or only the layers on `device`)."""
    return sum(s.bytes_per_token for s in shapes if device is None or s.device == device)


def slots_for_bytes(shapes: list[LayerShape], slot_len: int, budget: dict[torch.device, int]) -> int:
    """How many slots of `slot_len` tokens fit when each device may give the pool `budget[device]`
    bytes: the least over the devices that hold layers."""
    fits = []
    for device in {s.device for s in shapes}:
        per_slot = bytes_per_token(shapes, device) * slot_len
        fits.append(max(0, budget.get(device, 0)) // per_slot)
    return int(min(fits)) if fits else 0


class KVPool:
    """The buffers. Allocated in the constructor; nothing here ever allocates again."""

    def __init__(self, shapes: list[LayerShape], slots: int, slot_len: int) -> None:
        if slots < 1:
            raise ValueError("the KV pool needs at least one slot")
        self.shapes = shapes
        self.slots = slots
        self.slot_len = slot_len
        self.keys = [torch.zeros(slots, s.keys[0], slot_len, s.keys[1], dtype=s.dtype, device=s.device) for s in shapes]
        self.values = [
            torch.zeros(slots, s.values[0], slot_len, s.values[1], dtype=s.dtype, device=s.device) for s in shapes
        ]

    @property
    def tokens(self) -> int:
        """Tokens the pool holds, all slots together."""
        return self.slots * self.slot_len

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in [*self.keys, *self.values])

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy slot `src`'s first `length` positions into slot `dst` (compaction)."""
        for k, v in zip(self.keys, self.values, strict=True):
            k[dst, :, :length].copy_(k[src, :, :length])
            v[dst, :, :length].copy_(v[src, :, :length])

    def write(self, slot: int, start: int, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Store per-layer (keys, values) [1, heads, n, dim] at positions start..start+n of `slot`."""
        for (k, v), (pk, pv) in zip(kv, zip(self.keys, self.values, strict=True), strict=True):
            n = k.shape[-2]
            pk[slot, :, start : start + n].copy_(k[0])
            pv[slot, :, start : start + n].copy_(v[0])

    def read(self, slot: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Views [1, heads, length, dim] of `slot`'s first `length` positions, per layer."""
        pairs = zip(self.keys, self.values, strict=True)
        return [(k[slot : slot + 1, :, :length], v[slot : slot + 1, :, :length]) for k, v in pairs]


class SlotTable:
    """Which sequence owns which slot. Occupied slots are always 0..n-1.

    `acquire(key)` hands out slot n; `release(key)` frees a slot and, when it was not the last,
    moves the last slot's sequence into it and reports the move so the caller can copy its KV."""

    def __init__(self, slots: int) -> None:
        self.capacity = slots
        self.owners: list[int] = []  # owners[slot] = sequence key

    def __len__(self) -> int:
        return len(self.owners)

    @property
    def free(self) -> int:
        return self.capacity - len(self.owners)

    def acquire(self, key: int) -> int:
        if not self.free:
            raise RuntimeError("no free KV slot")  # callers check `free` first
        self.owners.append(key)
        return len(self.owners) - 1

    def release(self, key: int) -> tuple[int, int] | None:
        """Free `key`'s slot. Returns (moved key, its new slot) when the last slot moved into it."""
        slot = self.owners.index(key)
        last = self.owners.pop()
        if slot == len(self.owners):
            return None
        self.owners[slot] = last
        return last, slot
