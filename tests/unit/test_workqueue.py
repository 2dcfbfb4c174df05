"""workqueue.WorkQueue: dedupe, per-key serialization, rate-limited requeue, forget, shutdown.

Time is a FakeClock (tests/unit/fake_clock.py): delayed adds fire when the test advances it. Every
wait has a deadline; "not yet" is checked after the event loop has run every ready task.
"""

from __future__ import annotations

import asyncio

import pytest

from deepseek_operator.retry import Backoff
from deepseek_operator.workqueue import ShutDown, WorkQueue
from tests.unit.fake_clock import FakeClock

DEADLINE = 5  # seconds


async def settle() -> None:
    """Let every task that can run, run (a few passes of the loop): what is still waiting then, waits."""
    for _ in range(10):
        await asyncio.sleep(0)


def queue(clock: FakeClock | None = None, cap: float = 8) -> WorkQueue[str]:
    return WorkQueue(Backoff(base=1, factor=2, cap=cap), clock or FakeClock())


async def test_a_key_added_while_queued_is_queued_once() -> None:
    q = queue()
    assert [q.add("a"), q.add("a"), q.add("b"), q.add("a")] == [True, False, True, False]
    assert len(q) == 2
    assert [await asyncio.wait_for(q.get(), DEADLINE) for _ in range(2)] == ["a", "b"]
    assert len(q) == 0


async def test_a_key_being_processed_is_not_handed_out_again_until_done() -> None:
    q = queue()
    q.add("a")
    key = await asyncio.wait_for(q.get(), DEADLINE)
    assert q.add("a")  # marked again while processed: not coalesced, the change must be seen
    assert not q.add("a")  # ... and further adds fold into that one
    second = asyncio.create_task(q.get())
    await settle()
    assert not second.done() and len(q) == 0  # no second worker gets "a" meanwhile
    q.done(key)
    assert await asyncio.wait_for(second, DEADLINE) == "a"  # processed again, after
    q.done("a")
    assert len(q) == 0


async def test_workers_never_process_one_key_at_once_but_do_process_different_keys_at_once() -> None:
    q = queue()
    running: dict[str, int] = {}
    peak: dict[str, int] = {}
    processed: list[str] = []
    release = asyncio.Event()

    async def worker() -> None:
        while True:
            key = await q.get()
            running[key] = running.get(key, 0) + 1
            peak[key] = max(peak.get(key, 0), running[key])
            await release.wait()
            processed.append(key)
            running[key] -= 1
            q.done(key)

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    try:
        q.add("a")
        q.add("b")
        await settle()
        assert running == {"a": 1, "b": 1}  # two workers busy with two keys
        for _ in range(5):
            q.add("a")  # all while "a" is processed: one more pass of it
        await settle()
        assert running == {"a": 1, "b": 1}
        release.set()
        await asyncio.wait_for(q.join(), DEADLINE)
    finally:
        q.shutdown()
        for task in workers:
            task.cancel()
        await asyncio.wait(workers, timeout=DEADLINE)
    assert peak == {"a": 1, "b": 1}
    assert sorted(processed) == ["a", "a", "b"]


async def test_rate_limited_requeue_backs_off_exponentially_to_its_cap_with_one_pending_retry() -> None:
    clock = FakeClock()
    q = queue(clock, cap=8)
    assert [q.add_rate_limited("a") for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    assert clock.delays == [1, 2, 4, 8, 8, 8] and q.requeues("a") == 6
    assert len(clock.pending()) == 1 and q.pending_retries() == 1  # each failure replaced the older timer
    assert q.add_rate_limited("a", retry_after=3) == 3  # the server's Retry-After wins ...
    assert q.add_rate_limited("a", retry_after=3600) == 8  # ... up to the cap
    assert q.requeues("b") == 0


async def test_a_rate_limited_key_is_added_when_its_delay_has_passed() -> None:
    clock = FakeClock()
    q = queue(clock)
    q.add_rate_limited("a")
    q.add_rate_limited("a")  # due in 2 s
    assert clock.advance(1.9) == 0 and len(q) == 0
    assert clock.advance(0.1) == 1 and len(q) == 1
    assert await asyncio.wait_for(q.get(), DEADLINE) == "a"
    assert q.pending_retries() == 0


async def test_forget_resets_the_backoff_and_drops_the_pending_retry() -> None:
    clock = FakeClock()
    q = queue(clock)
    for _ in range(3):
        q.add_rate_limited("a")
    q.forget("a")
    assert q.requeues("a") == 0 and q.pending_retries() == 0
    assert clock.advance(3600) == 0 and len(q) == 0  # the dropped retry never fires
    assert q.add_rate_limited("a") == 1  # counting starts again


async def test_shutdown_wakes_waiting_workers_drops_queued_keys_and_refuses_adds() -> None:
    clock = FakeClock()
    q = queue(clock)
    waiting = [asyncio.create_task(q.get()) for _ in range(3)]
    await settle()
    q.add_rate_limited("later")
    q.shutdown()
    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), DEADLINE)
    assert all(isinstance(r, ShutDown) for r in results), results
    assert not q.add("a") and len(q) == 0
    assert q.pending_retries() == 0 and clock.advance(3600) == 0
    with pytest.raises(ShutDown):
        await asyncio.wait_for(q.get(), DEADLINE)


async def test_shutdown_drops_what_was_queued() -> None:
    q = queue()
    q.add("a")
    q.shutdown()
    assert len(q) == 0
    with pytest.raises(ShutDown):
        await asyncio.wait_for(q.get(), DEADLINE)


async def test_a_worker_cancelled_after_its_wake_up_passes_the_key_on() -> None:
    q = queue()
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await settle()
    q.add("a")  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it runs
    assert await asyncio.wait_for(second, DEADLINE) == "a"
    assert first.cancelled()


async def test_join_returns_once_nothing_is_queued_or_processed() -> None:
    q = queue()
    q.add("a")
    key = await asyncio.wait_for(q.get(), DEADLINE)
    joined = asyncio.create_task(q.join())
    await settle()
    assert not joined.done()
    q.done(key)
    await asyncio.wait_for(joined, DEADLINE)
