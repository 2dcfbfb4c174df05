"""Engine on the tiny model: generation, continuous batching, errors, cancellation, stops, seeds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_engine_helpers import DEADLINE, GREEDY, Outcome, chat_ids, collect

from deepseek_worker.engine import Engine
from deepseek_worker.types import EngineConfig, SamplingParams

pytestmark = pytest.mark.slow


@pytest.fixture
async def engine(tiny_model_dir: Path) -> AsyncIterator[Engine]:
    eng = Engine(EngineConfig(model=str(tiny_model_dir), max_batch_size=4, max_model_len=256))
    await asyncio.wait_for(eng.start(), DEADLINE)
    yield eng
    await asyncio.wait_for(eng.stop(), DEADLINE)


async def test_generates_deterministic_greedy_text(engine: Engine) -> None:
    ids = chat_ids(engine, "Hello")
    first = await collect(engine, ids, GREEDY, "r1")
    second = await collect(engine, ids, GREEDY, "r2")
    assert first.text and first.text == second.text
    assert first.last.finish_reason == "length"
    assert (first.last.prompt_tokens, first.last.completion_tokens) == (len(ids), GREEDY.max_tokens)
    assert [c.finish_reason for c in first.chunks[:-1]] == [None] * (len(first.chunks) - 1)


async def test_requests_started_at_different_times_share_decode_steps(engine: Engine) -> None:
    ids = chat_ids(engine, "Tell me a story")
    lengths = {"A": 20, "B": 5, "C": 10}
    outs = {rid: Outcome() for rid in lengths}

    def start(rid: str) -> asyncio.Task[Outcome]:
        params = SamplingParams(max_tokens=lengths[rid], temperature=0)
        return asyncio.create_task(collect(engine, ids, params, rid, outs[rid]))

    tasks = [start("A")]
    await asyncio.wait_for(outs["A"].started.wait(), DEADLINE)
    tasks.append(start("B"))
    await asyncio.wait_for(outs["B"].started.wait(), DEADLINE)
    tasks.append(start("C"))
    await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE)

    for rid, n in lengths.items():
        assert (outs[rid].last.finish_reason, outs[rid].last.completion_tokens) == ("length", n)
    batches = [set(ids_) for _, ids_ in engine.step_log]
    assert {"A"} in batches  # A decoded alone before the others arrived
    assert any({"A", "B"} <= b for b in batches) and any({"A", "C"} <= b for b in batches)
    last_step = {rid: max(i for i, b in enumerate(batches) if rid in b) for rid in lengths}
    assert last_step["B"] < last_step["A"]  # B left while A kept decoding: not a static batch


async def test_greedy_in_a_batch_equals_greedy_alone(engine: Engine) -> None:
    prompts = [chat_ids(engine, u) for u in ("Hi", "What is the capital of France, and why?", "2+2")]
    params = SamplingParams(max_tokens=12, temperature=0)
    alone = [(await collect(engine, p, params, f"alone{i}")).text for i, p in enumerate(prompts)]

    first = Outcome()
    task0 = asyncio.create_task(collect(engine, prompts[0], params, "b0", first))
    await asyncio.wait_for(first.started.wait(), DEADLINE)  # the others join a running batch
    rest = [collect(engine, p, params, f"b{i}") for i, p in enumerate(prompts[1:], 1)]
    batched = await asyncio.wait_for(asyncio.gather(task0, *rest), DEADLINE)
    assert [o.text for o in batched] == alone
    assert any(len(b) == 3 for _, b in engine.step_log)


async def test_failing_requests_end_with_error_and_loop_goes_on(engine: Engine, monkeypatch: Any) -> None:
    runner = engine._runner
    assert runner is not None
    real_batch = runner._run_prompt_batch

    def explode_batch_with_boom(chunks: list[Any]) -> Any:
        if any(seq.request_id == "boom" for seq, _ in chunks):
            raise RuntimeError("prefill exploded")
        return real_batch(chunks)

    monkeypatch.setattr(runner, "_run_prompt_batch", explode_batch_with_boom)
    ids = chat_ids(engine, "Hello")
    good_alone = await collect(engine, ids, GREEDY, "solo")
    good, bad_id, empty, boom = await asyncio.wait_for(asyncio.gather(
        collect(engine, ids, GREEDY, "good"),
        collect(engine, [10**9], GREEDY, "bad-id"),
        collect(engine, [], GREEDY, "empty"),
        collect(engine, ids, GREEDY, "boom"),
    ), DEADLINE)
    for out, needle in ((bad_id, "out of range"), (empty, "empty"), (boom, "prefill exploded")):
        assert out.last.finish_reason == "error"
        assert needle in (out.last.error or "")
    assert good.text == good_alone.text and good.last.finish_reason == "length"
    after = await collect(engine, ids, GREEDY, "after")
    assert after.text == good_alone.text
    assert engine.stats().running == 0


async def test_closing_the_iterator_frees_the_slot(engine: Engine) -> None:
    ids = chat_ids(engine, "Hello")
    stream = engine.generate(ids, SamplingParams(max_tokens=200, temperature=0), "leaver")
    await asyncio.wait_for(anext(stream), DEADLINE)
    assert engine.stats().running == 1
    await stream.aclose()  # type: ignore[attr-defined]
    assert engine.stats().running == 0
    await collect(engine, ids, GREEDY, "next")  # at least one full step ran since the close
    runner = engine._runner
    assert runner is not None and not runner.seqs
    assert sum("leaver" in b for _, b in engine.step_log) < 20


async def test_cancelling_the_consumer_task_frees_the_slot(engine: Engine) -> None:
    ids = chat_ids(engine, "Hello")
    out = Outcome()
    task = asyncio.create_task(collect(engine, ids, SamplingParams(max_tokens=200, temperature=0), "c", out))
    await asyncio.wait_for(out.started.wait(), DEADLINE)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.stats().running == 0
    await collect(engine, ids, GREEDY, "next")
    assert engine._runner is not None and not engine._runner.seqs


async def test_stop_string_truncates_output(engine: Engine) -> None:
    ids = chat_ids(engine, "Hello")
    full = (await collect(engine, ids, SamplingParams(max_tokens=16, temperature=0), "full")).text
    stop = full[6:9]
    assert stop.strip(), f"need a visible stop string in {full!r}"
    got = await collect(engine, ids, SamplingParams(max_tokens=16, temperature=0, stop=(stop,)), "stopped")
    assert got.last.finish_reason == "stop"
    assert got.text == full[: full.find(stop)]


async def test_eos_token_finishes_with_stop(engine: Engine) -> None:
    ids = chat_ids(engine, "Hello")
    runner = engine._runner
    assert runner is not None
    first_token = engine.tokenize((await collect(engine, ids, GREEDY, "probe")).text)[0]
    runner.eos_ids = frozenset({first_token})
    out = await collect(engine, ids, GREEDY, "eos")
    assert (out.last.finish_reason, out.last.completion_tokens, out.text) == ("stop", 1, "")


async def test_seed_makes_sampling_reproducible(engine: Engine) -> None:
    ids = chat_ids(engine, "Hello")
    sampled = SamplingParams(max_tokens=10, temperature=1.0, seed=1234)
    one = await collect(engine, ids, sampled, "s1")
    two, _ = await asyncio.wait_for(asyncio.gather(
        collect(engine, ids, sampled, "s2"), collect(engine, ids, GREEDY, "noise")), DEADLINE)
    other = await collect(engine, ids, replace(sampled, seed=4321), "s3")
    assert one.text == two.text
    assert one.text != other.text


async def test_tiny_top_p_is_greedy(engine: Engine) -> None:
    ids = chat_ids(engine, "Hello")
    greedy = await collect(engine, ids, GREEDY, "g")
    nucleus = await collect(engine, ids, replace(GREEDY, temperature=1.0, top_p=1e-6), "p")
    assert nucleus.text == greedy.text


async def test_max_model_len_caps_generation_and_rejects_long_prompts(engine: Engine) -> None:
    ids = chat_ids(engine, "Hello")
    room = engine.max_model_len - len(ids)
    capped = await collect(engine, ids, SamplingParams(max_tokens=room + 50, temperature=0), "cap")
    assert (capped.last.finish_reason, capped.last.completion_tokens) == ("length", room)
    too_long = await collect(engine, ids * (engine.max_model_len // len(ids) + 1), GREEDY, "long")
    assert too_long.last.finish_reason == "error" and "max_model_len" in (too_long.last.error or "")


async def test_unstarted_engine_reports_error(tiny_model_dir: Path) -> None:
    eng = Engine(EngineConfig(model=str(tiny_model_dir)))
    out = await collect(eng, [1, 2, 3], GREEDY, "x")
    assert out.last.finish_reason == "error" and not eng.ready


async def test_stop_aborts_open_requests(tiny_model_dir: Path) -> None:
    eng = Engine(EngineConfig(model=str(tiny_model_dir), max_model_len=4096))
    await asyncio.wait_for(eng.start(), DEADLINE)
    ids = chat_ids(eng, "Hello")
    out = Outcome()
    task = asyncio.create_task(collect(eng, ids, SamplingParams(max_tokens=4000, temperature=0), "long", out))
    await asyncio.wait_for(out.started.wait(), DEADLINE)
    await asyncio.wait_for(eng.stop(), DEADLINE)
    await asyncio.wait_for(task, DEADLINE)
    assert out.last.finish_reason == "abort" and not eng.ready
