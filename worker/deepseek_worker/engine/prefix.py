"""Prefix cache: KV of prompt prefixes in fixed token blocks, reused across requests, LRU-bounded.

A prompt is cut into blocks of `block_size` token ids. Block j's key is a digest of (key of block
j-1, tokens of block j), so a key names the whole prefix up to that block and equal keys mean equal
prefixes (blake2b, 128-bit: collisions are not a practical concern). Each entry stores only its own
block's KV slice per layer, so shared prefixes are stored once.

Eviction is least-recently-used by bytes. A lookup or insert touches a chain leaf-first, so a parent
is always more recent than its children and leaves are evicted before the prefixes they extend.
Positions are part of the key implicitly (block j always sits at tokens j*B..j*B+B-1), which is what
makes reusing rotary-embedded keys exact.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), sequence on dim -2


@dataclass
class _Block:
    kv: KV
    nbytes: int


class PrefixCache:
    """Block-hashed, byte-bounded LRU map from prompt prefixes to their KV. Not thread-safe:
    only the engine's model thread uses it."""

    def __init__(self, capacity_bytes: int, block_size: int = 16) -> None:
        self.capacity_bytes = capacity_bytes
        self.block_size = block_size
        self.bytes = 0
        self.hits = 0
        self.lookups = 0
        self._blocks: OrderedDict[bytes, _Block] = OrderedDict()

    def _keys(self, ids: list[int], n_blocks: int) -> list[bytes]:
        keys, parent = [], b""
        for j in range(n_blocks):
            block = array("q", ids[j * self.block_size : (j + 1) * self.block_size]).tobytes()
            parent = hashlib.blake2b(parent + block, digest_size=16).digest()
            keys.append(parent)
        return keys

    def lookup(self, ids: list[int]) -> tuple[int, KV | None]:
        """Longest cached prefix of `ids` that leaves at least one token to compute.

        Returns (number of cached tokens, per-layer KV concatenated over the hit blocks) or (0, None).
        The returned tensors are fresh (safe for the caller to extend).
        """
        if self.capacity_bytes <= 0:
            return 0, None
        self.lookups += 1
        found: list[_Block] = []
        keys = self._keys(ids, (len(ids) - 1) // self.block_size)
        for key in keys:
            block = self._blocks.get(key)
            if block is None:
                break
            found.append(block)
        if not found:
            return 0, None
        self.hits += 1
        self._touch(keys[: len(found)])
        kv = [
            (torch.cat([b.kv[i][0] for b in found], dim=-2), torch.cat([b.kv[i][1] for b in found], dim=-2))
            for i in range(len(found[0].kv))
        ]
        return len(found) * self.block_size, kv

    def insert(self, ids: list[int], kv: KV) -> None:
        """Store the full blocks of `ids` whose KV (batch 1, positions 0..) is in `kv`."""
        if self.capacity_bytes <= 0:
            return
        keys = self._keys(ids, min(len(ids), kv[0][0].shape[-2]) // self.block_size)
        for j, key in enumerate(keys):
            if key in self._blocks:
                continue
            lo, hi = j * self.block_size, (j + 1) * self.block_size
            # clone(): a slice would keep the whole request's cache tensor alive.
            block_kv = [(k[..., lo:hi, :].clone(), v[..., lo:hi, :].clone()) for k, v in kv]
            nbytes = sum(k.nbytes + v.nbytes for k, v in block_kv)
            if nbytes > self.capacity_bytes:
                return
            self._blocks[key] = _Block(block_kv, nbytes)
            self.bytes += nbytes
        self._touch(keys)
        self._evict()

    def _touch(self, keys: list[bytes]) -> None:
        for key in reversed(keys):  # leaf first: parents end up more recent than children
            if key in self._blocks:
                self._blocks.move_to_end(key)

    def _evict(self) -> None:
        while self.bytes > self.capacity_bytes and self._blocks:
            _, block = self._blocks.popitem(last=False)
            self.bytes -= block.nbytes

    def __len__(self) -> int:
        return len(self._blocks)
