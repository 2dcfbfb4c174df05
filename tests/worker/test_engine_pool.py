"""The engine on its KV pool: exact against transformers' own `generate`, a pool that never grows,
admission that queues instead of failing, chunked prefill, prefix hits and seeds (tiny model, float32)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import torch
from test_engine_helpers import DEADLINE, Outcome, chat_ids, collect

from deepseek_worker.engine import Engine
from deepseek_worker.engine.memory import PoolTooSmall
from deepseek_worker.types import EngineConfig, SamplingParams

pytestmark = pytest.mark.slow

PROMPTS = ["Hi", "What is the capital of France, and why is it that city?", "2+2", "Tell me a long story " * 6]
NEW = 10


def reference(engine: Engine, ids: list[int], new: int = NEW) -> list[int]:
    """transformers' `generate`, greedy, one prompt alone, EOS off: the tokens the engine must match."""
    assert engine.loaded is not None
    model = engine.loaded.model
    with torch.inference_mode():
        prompt = torch.tensor([ids])
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                             min_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=1)
    return [int(t) for t in out[0, len(ids):]]


async def tokens_of(engine: Engine, ids: list[int], params: SamplingParams, rid: str) -> list[int]:
    out = await collect(engine, ids, params, rid)
    assert out.last.finish_reason == "length", out.last
    return engine.tokenize(out.text)


@pytest.fixture(scope="module")
def per_token(tiny_model_dir: Path) -> int:
    """The KV-cache bytes one token adds, as the engine measures them (one probe engine for the module)."""
    async def probe() -> int:
        engine = Engine(EngineConfig(model=str(tiny_model_dir)))
        await asyncio.wait_for(engine.start(), DEADLINE)
        try:
            return engine.measurements().kv_cache_bytes_per_token
        finally:
            await asyncio.wait_for(engine.stop(), DEADLINE)

    measured = asyncio.run(probe())
    assert measured > 0
    return measured


@pytest.fixture
async def small_pool(tiny_model_dir: Path, per_token: int) -> AsyncIterator[Engine]:
    """Two slots (exact bytes), a 24-token prefill budget (long prompts go in chunks), prefix cache on."""
    config = EngineConfig(model=str(tiny_model_dir), max_model_len=256, max_batch_size=8,
                          kv_cache_bytes=2 * 256 * per_token, max_num_batched_tokens=24)
    eng = Engine(config)
    await asyncio.wait_for(eng.start(), DEADLINE)
    yield eng
    await asyncio.wait_for(eng.stop(), DEADLINE)


def texts_equal_reference(engine: Engine, prompts: list[list[int]], outs: list[Outcome]) -> None:
    assert engine.loaded is not None
    tok = engine.loaded.tokenizer
    for ids, out in zip(prompts, outs, strict=True):
        assert out.last.finish_reason == "length" and out.last.completion_tokens == NEW
        assert out.text == tok.decode(reference(engine, ids), skip_special_tokens=True)


async def test_mixed_batch_with_queueing_chunks_and_prefix_hits_equals_generate(small_pool: Engine) -> None:
    eng = small_pool
    runner = eng._runner
    assert runner is not None and runner.pool.slots == 2
    prompts = [chat_ids(eng, u, system="You are a helpful assistant.") for u in PROMPTS]
    assert max(map(len, prompts)) > eng.config.max_num_batched_tokens  # at least one is chunked
    pointers = [t.data_ptr() for t in [*runner.pool.keys, *runner.pool.values]]
    greedy = SamplingParams(max_tokens=NEW, temperature=0)
    # 8 requests on 2 slots: 6 wait for a slot; the repeated prompts hit the prefix cache.
    outs = await asyncio.wait_for(asyncio.gather(
        *(collect(eng, ids, greedy, f"r{i}") for i, ids in enumerate(prompts * 2))), DEADLINE)
    texts_equal_reference(eng, prompts * 2, outs)
    assert sum(o.last.cached_prompt_tokens > 0 for o in outs) >= 2
    assert [t.data_ptr() for t in [*runner.pool.keys, *runner.pool.values]] == pointers  # never reallocated
    assert max(len(b) for _, b in eng.step_log) <= 2  # never more rows than slots
    assert eng.stats().running == 0 and not runner.seqs and len(runner.slots) == 0


async def test_finishing_rows_compact_the_slots_without_changing_the_others(small_pool: Engine) -> None:
    eng = small_pool
    prompts = [chat_ids(eng, u) for u in PROMPTS[:2]]
    short, long = SamplingParams(max_tokens=3, temperature=0), SamplingParams(max_tokens=NEW, temperature=0)
    first = Outcome()
    # The short request holds slot 0 and leaves first: the long one moves from slot 1 to slot 0.
    task = asyncio.create_task(collect(eng, prompts[0], short, "short", first))
    long_out = await collect(eng, prompts[1], long, "long")
    await asyncio.wait_for(task, DEADLINE)
    texts_equal_reference(eng, prompts[1:], [long_out])


async def test_seeded_sampling_is_the_same_alone_and_in_any_batch(small_pool: Engine) -> None:
    eng = small_pool
    ids = chat_ids(eng, "Hello")
    sampled = SamplingParams(max_tokens=NEW, temperature=0.6, top_p=0.95, top_k=50, seed=99)
    alone = await tokens_of(eng, ids, sampled, "alone")
    noisy = SamplingParams(max_tokens=NEW, temperature=1.0)
    together = await asyncio.wait_for(asyncio.gather(
        tokens_of(eng, chat_ids(eng, "Other"), noisy, "n1"), tokens_of(eng, ids, sampled, "again")), DEADLINE)
    assert together[1] == alone


async def test_requests_beyond_the_pool_wait_instead_of_failing(small_pool: Engine) -> None:
    eng = small_pool
    ids = chat_ids(eng, "Hello")
    params = SamplingParams(max_tokens=eng.max_model_len, temperature=0)  # capped at max_model_len
    outs = await asyncio.wait_for(asyncio.gather(*(collect(eng, ids, params, f"m{i}") for i in range(5))), 3 * DEADLINE)
    assert [o.last.finish_reason for o in outs] == ["length"] * 5
    assert {o.last.completion_tokens for o in outs} == {eng.max_model_len - len(ids)}


async def test_a_pool_too_small_for_one_sequence_fails_start_naming_the_settings(tiny_model_dir: Path) -> None:
    eng = Engine(EngineConfig(model=str(tiny_model_dir), max_model_len=256, kv_cache_bytes=1000))
    with pytest.raises(PoolTooSmall, match=r"max_model_len=256.*kv_cache_bytes=1000"):
        await asyncio.wait_for(eng.start(), DEADLINE)


async def test_repeated_step_failures_make_the_engine_unhealthy(small_pool: Engine) -> None:
    eng = small_pool
    runner = eng._runner
    assert runner is not None and eng.healthy

    def broken(*args: object) -> object:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    # A wedged device: every pass fails, prefill and decode alike.
    runner.decoder.run = broken  # type: ignore[method-assign]
    runner._run_prompt_batch = broken  # type: ignore[method-assign,assignment]
    ids = chat_ids(eng, "Hello")
    for i in range(eng.config.max_consecutive_step_failures):
        out = await collect(eng, ids, SamplingParams(max_tokens=4, temperature=0), f"f{i}")
        assert out.last.finish_reason == "error" and "illegal memory access" in (out.last.error or "")
    assert not eng.healthy


async def test_prefix_hits_and_fresh_prompts_prefill_together_in_one_pass(small_pool: Engine) -> None:
    eng = small_pool
    runner = eng._runner
    assert runner is not None
    system = "You are a helpful assistant who answers briefly, in plain words, and never repeats itself. " * 3
    warm, hit, fresh = chat_ids(eng, "Hi", system), chat_ids(eng, "Bye", system), chat_ids(eng, "2+2")
    await collect(eng, warm, SamplingParams(max_tokens=2, temperature=0), "warm")  # caches the system prompt
    passes: list[list[str]] = []
    real = runner._run_prompt_batch

    def counting(chunks: list[tuple[Any, int]]) -> Any:
        passes.append([seq.request_id for seq, _ in chunks])
        return real(chunks)

    runner._run_prompt_batch = counting  # type: ignore[method-assign]
    params = SamplingParams(max_tokens=NEW, temperature=0)
    both = asyncio.gather(collect(eng, hit, params, "hit"), collect(eng, fresh, params, "fresh"))
    outs = await asyncio.wait_for(both, DEADLINE)
    assert outs[0].last.cached_prompt_tokens > 0 and outs[1].last.cached_prompt_tokens == 0
    assert ["hit", "fresh"] in passes  # one padded pass for both
    texts_equal_reference(eng, [hit, fresh], outs)


async def test_step_n_text_is_made_while_step_n_plus_1_computes(small_pool: Engine, monkeypatch: Any) -> None:
    import threading

    from deepseek_worker.engine import core

    eng = small_pool
    runner = eng._runner
    assert runner is not None
    step_running, texted = threading.Event(), threading.Event()
    overlapped: list[bool] = []
    real_text, real_step = core.text_chunk, runner.step

    def text(event: Any) -> Any:
        if runner.seqs:  # a next step exists: its thread must be running now (bounded wait)
            overlapped.append(step_running.wait(timeout=5))
        texted.set()
        return real_text(event)

    def step(admit: Any, drop: Any) -> Any:
        step_running.set()
        try:
            if any(s.decoding for s in runner.seqs.values()):  # the previous step left text to make
                texted.wait(timeout=5)
            texted.clear()
            return real_step(admit, drop)
        finally:
            step_running.clear()

    monkeypatch.setattr(core, "text_chunk", text)
    monkeypatch.setattr(runner, "step", step)
    out = await collect(eng, chat_ids(eng, "Hello"), SamplingParams(max_tokens=6, temperature=0), "overlap")
    assert out.last.finish_reason == "length" and out.last.completion_tokens == 6
    assert len(overlapped) >= 4 and all(overlapped)  # each token's text was made during the next step
