"""Pure parts of the engine: slots, buckets, the device sampler (no model)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from deepseek_worker.engine.decode import batch_buckets, bucket, length_buckets
from deepseek_worker.engine.pool import KVPool, LayerShape, SlotTable, slots_for_bytes
from deepseek_worker.engine.sampler import RowParams, _sorted_top_p, sample, uniforms


def test_slots_stay_dense_and_report_the_move() -> None:
    table = SlotTable(3)
    assert [table.acquire(k) for k in (10, 11, 12)] == [0, 1, 2]
    assert table.free == 0
    assert table.release(10) == (12, 0)  # the last slot's owner moves into the hole
    assert table.owners == [12, 11]
    assert table.release(11) is None  # the last slot: nothing moves
    assert table.owners == [12] and table.free == 2
    with pytest.raises(ValueError):
        table.release(99)


def test_pool_move_copies_only_the_used_prefix() -> None:
    shape = LayerShape((2, 4), (1, 3), torch.float32, torch.device("cpu"))  # MLA-like: values differ
    pool = KVPool([shape, shape], slots=2, slot_len=8)
    pool.keys[0][1, :, :5] = 7.0
    pool.move(1, 0, 5)
    assert bool((pool.keys[0][0, :, :5] == 7.0).all()) and bool((pool.keys[0][0, :, 5:] == 0).all())
    assert pool.tokens == 16 and pool.nbytes == 2 * 2 * 8 * (2 * 4 + 1 * 3) * 4


def test_slots_for_bytes_takes_the_tightest_device() -> None:
    a, b = torch.device("cpu"), torch.device("meta")
    shapes = [LayerShape((1, 4), (1, 4), torch.float32, a), LayerShape((1, 4), (1, 4), torch.float32, b)]
    per_slot = 32 * 10  # 32 bytes per token per layer, 10 tokens
    assert slots_for_bytes(shapes, 10, {a: 5 * per_slot, b: 3 * per_slot + 1}) == 3
    assert slots_for_bytes(shapes, 10, {a: 5 * per_slot}) == 0  # b has no budget


def test_buckets_cover_every_size_with_few_shapes() -> None:
    rows = batch_buckets(100)
    assert rows[:4] == [1, 2, 4, 8] and rows[-1] == 100 and len(rows) <= 16
    assert all(bucket(n, rows) >= n for n in range(1, 101))
    lengths = length_buckets(1000)
    assert lengths == [128, 256, 512, 1000]
    with pytest.raises(ValueError):
        bucket(1001, lengths)


def test_greedy_rows_take_the_argmax_and_sampled_rows_follow_their_seed() -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    rows = [RowParams(0.0), RowParams(0.8, 0.9, 0, seed=5, index=2), RowParams(0.8, 0.9, 0, seed=5, index=2)]
    tokens = sample(logits, rows).tolist()
    assert tokens[0] == int(logits[0].argmax())
    again = sample(logits[1:2], [rows[1]]).tolist()
    assert again[0] == tokens[1]  # the same draw alone as in a batch


def test_top_k_one_and_a_tiny_top_p_are_greedy() -> None:
    logits = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    argmax = logits.argmax(dim=-1).tolist()
    for i in range(4):
        assert sample(logits[i : i + 1], [RowParams(1.0, 1.0, 1, seed=i)]).tolist() == [argmax[i]]
        assert sample(logits[i : i + 1], [RowParams(1.0, 1e-6, 0, seed=i)]).tolist() == [argmax[i]]


def test_top_p_by_rejection_draws_the_nucleus_distribution() -> None:
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1])
    logits = probs.log()[None]
    counts = Counter(int(sample(logits, [RowParams(1.0, 0.7, 0, seed=s)])[0]) for s in range(3000))
    # Nucleus of 0.7: {0, 1} (0.5 + 0.25 >= 0.7), renormalized to 2/3 and 1/3.
    assert set(counts) == {0, 1}
    assert abs(counts[0] / 3000 - 2 / 3) < 0.04


def test_sorted_fallback_agrees_on_the_nucleus() -> None:
    probs = torch.tensor([[0.5, 0.25, 0.15, 0.1]])
    picks = {int(_sorted_top_p(probs, torch.tensor([0.7]), torch.tensor([u], dtype=torch.float64))[0])
             for u in (0.01, 0.5, 0.7, 0.99)}
    assert picks == {0, 1}


def test_uniforms_are_deterministic_and_in_range() -> None:
    assert uniforms(1, 2) == uniforms(1, 2) and uniforms(1, 2) != uniforms(1, 3)
    assert all(0 < u < 1 for u in uniforms(123, 0, rounds=8))


def test_vanishing_temperature_and_top_p_are_greedy_not_nan() -> None:
    logits = torch.randn(2, 64, generator=torch.Generator().manual_seed(2))
    rows = [RowParams(5e-324, 1.0, 0, seed=1), RowParams(1.0, 1e-300, 0, seed=1)]
    assert sample(logits, rows).tolist() == logits.argmax(dim=-1).tolist()
