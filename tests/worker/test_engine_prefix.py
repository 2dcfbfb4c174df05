"""Prefix cache: block hashing, leave-one-token lookups, LRU eviction by bytes, and engine reuse."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from test_engine_helpers import DEADLINE, chat_ids, collect

from deepseek_worker.engine import Engine
from deepseek_worker.engine.prefix import KV, PrefixCache
from deepseek_worker.types import EngineConfig, SamplingParams

BLOCK = 4


def _kv(ids: list[int]) -> KV:
    """Fake one-layer KV whose values encode the token id, so reuse is checkable."""
    t = torch.tensor(ids, dtype=torch.float32).view(1, 1, -1, 1)
    return [(t.clone(), -t.clone())]


def _block_bytes() -> int:
    return 2 * BLOCK * 4  # keys + values, BLOCK float32 scalars each


def test_lookup_returns_longest_prefix_leaving_one_token() -> None:
    cache = PrefixCache(10**6, block_size=BLOCK)
    ids = list(range(100, 112))  # three blocks
    cache.insert(ids, _kv(ids))
    hit, kv = cache.lookup([*ids, 7, 8])
    assert hit == 12 and kv is not None
    assert kv[0][0].flatten().tolist() == [float(i) for i in ids]
    hit, _ = cache.lookup(ids)  # all cached, but one token must be left to compute logits
    assert hit == 8
    assert cache.lookup([100, 101, 102, 999, 5])[0] == 0  # first block differs: miss
    assert (cache.hits, cache.lookups) == (2, 3)


def test_shared_prefix_blocks_are_stored_once() -> None:
    cache = PrefixCache(10**6, block_size=BLOCK)
    system = list(range(8))
    for tail in ([50, 51, 52, 53], [60, 61, 62, 63]):
        cache.insert(system + tail, _kv(system + tail))
    assert len(cache) == 4  # two shared system blocks + one tail block each
    assert cache.bytes == 4 * _block_bytes()


def test_lru_evicts_least_recent_leaves_first_and_respects_budget() -> None:
    cache = PrefixCache(3 * _block_bytes(), block_size=BLOCK)
    a, b = list(range(0, 8)), list(range(20, 28))
    cache.insert(a, _kv(a))
    cache.insert(b, _kv(b))  # 4 blocks > budget of 3: a's leaf (least recent) goes
    assert cache.bytes <= cache.capacity_bytes and len(cache) == 3
    assert cache.lookup([*a, 1])[0] == BLOCK  # a's root survived its leaf
    assert cache.lookup([*b, 1])[0] == 8


def test_zero_budget_disables_the_cache() -> None:
    cache = PrefixCache(0, block_size=BLOCK)
    cache.insert(list(range(8)), _kv(list(range(8))))
    assert cache.lookup(list(range(9))) == (0, None) and cache.bytes == 0 and cache.lookups == 0


SYSTEM = ("You are a meticulous assistant. Answer every question with care, cite your sources, "
          "and keep the tone friendly and concise. Never invent facts you cannot verify.")


@pytest.mark.slow
async def test_shared_system_prompt_hits_and_matches_uncached_output(tiny_model_dir: Path) -> None:
    params = SamplingParams(max_tokens=10, temperature=0)
    cached = Engine(EngineConfig(model=str(tiny_model_dir)))
    plain = Engine(EngineConfig(model=str(tiny_model_dir), prefix_cache_bytes=0))
    await asyncio.wait_for(asyncio.gather(cached.start(), plain.start()), DEADLINE)
    try:
        first_ids, second_ids = (chat_ids(cached, u, SYSTEM) for u in ("Hi", "What is MLA?"))
        first = await collect(cached, first_ids, params, "first")
        second = await collect(cached, second_ids, params, "second")
        reference = await collect(plain, second_ids, params, "reference")
    finally:
        await asyncio.wait_for(asyncio.gather(cached.stop(), plain.stop()), DEADLINE)
    assert first.last.cached_prompt_tokens == 0
    assert 16 <= second.last.cached_prompt_tokens < len(second_ids)
    assert reference.last.cached_prompt_tokens == 0
    assert second.text == reference.text
    stats = cached.stats()
    assert (stats.prefix_cache_hits, stats.prefix_cache_lookups) == (1, 2)
    assert 0 < stats.prefix_cache_bytes <= stats.prefix_cache_capacity_bytes


@pytest.mark.slow
async def test_tiny_budget_keeps_cache_bytes_bounded(tiny_model_dir: Path) -> None:
    budget = 40 * 1024  # ~3 blocks of the tiny model's latents (2 layers x 16 tokens x 96 floats)
    eng = Engine(EngineConfig(model=str(tiny_model_dir), prefix_cache_bytes=budget))
    await asyncio.wait_for(eng.start(), DEADLINE)
    try:
        params = SamplingParams(max_tokens=2, temperature=0)
        prompts = [chat_ids(eng, "hello", f"{i} {SYSTEM}") for i in range(4)]
        for i, ids in enumerate(prompts):
            await collect(eng, ids, params, f"p{i}")
            assert 0 < eng.stats().prefix_cache_bytes <= budget
        again = await collect(eng, prompts[0], params, "again")  # its blocks were evicted
    finally:
        await asyncio.wait_for(eng.stop(), DEADLINE)
    assert again.last.cached_prompt_tokens == 0
