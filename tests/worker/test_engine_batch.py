"""BatchKV bookkeeping without a model: left padding on admission, trimming on removal."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from deepseek_worker.engine.batch import BatchKV, layer_tensors


def _cache(values: list[float]) -> DynamicCache:
    """One-layer batch-1 cache whose keys are `values` (values are their negation)."""
    t = torch.tensor(values).view(1, 1, -1, 1)
    return DynamicCache(ddp_cache_data=[(t, -t)])


def test_rows_are_right_aligned_with_left_padding_masked() -> None:
    batch = BatchKV()
    batch.add(1, _cache([1.0, 2.0, 3.0]), last_token=7)
    batch.add(2, _cache([5.0]), last_token=8)
    keys = layer_tensors(batch.cache)[0][0]  # type: ignore[arg-type]
    assert keys[:, 0, :, 0].tolist() == [[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]]
    assert batch.mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.positions.tolist() == [3, 1]  # each row continues at its own position
    inputs = batch.decode_inputs()
    assert inputs["input_ids"].tolist() == [[7], [8]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]


def test_a_longer_newcomer_pads_the_existing_rows() -> None:
    batch = BatchKV()
    batch.add(1, _cache([1.0]), last_token=0)
    batch.add(2, _cache([4.0, 5.0, 6.0]), last_token=0)
    assert batch.mask.tolist() == [[0, 0, 1], [1, 1, 1]]


def test_removal_trims_columns_that_are_padding_everywhere() -> None:
    batch = BatchKV()
    batch.add(1, _cache([1.0, 2.0, 3.0]), last_token=7)
    batch.add(2, _cache([5.0]), last_token=8)
    batch.remove({1})
    keys, values = layer_tensors(batch.cache)[0]  # type: ignore[arg-type]
    assert keys.flatten().tolist() == [5.0] and values.flatten().tolist() == [-5.0]
    assert batch.mask.tolist() == [[1]] and batch.ids == [2] and batch.last_tokens.tolist() == [8]
    batch.remove({999})  # unknown ids are ignored
    assert batch.ids == [2]
    batch.remove({2})
    assert len(batch) == 0 and batch.cache is None


def test_advance_appends_a_real_column() -> None:
    batch = BatchKV()
    batch.add(1, _cache([1.0, 2.0]), last_token=7)
    batch.advance([9])
    assert batch.mask.tolist() == [[1, 1, 1]] and batch.positions.tolist() == [3]
    assert batch.last_tokens.tolist() == [9]


def test_sliding_window_caches_are_refused() -> None:
    from transformers.cache_utils import DynamicSlidingWindowLayer

    cache = DynamicCache()
    cache.layers = [DynamicSlidingWindowLayer(sliding_window=4)]
    with pytest.raises(NotImplementedError, match="DynamicLayer"):
        BatchKV().add(1, cache, last_token=0)
