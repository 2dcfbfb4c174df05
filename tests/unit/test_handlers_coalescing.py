"""The Controller's work queue: one reconcile at a time per resource, and triggers coalesce while one is queued."""

from __future__ import annotations

import asyncio
from typing import Any

from deepseek_operator import metrics
from deepseek_operator.reconcile import Outcome
from tests.unit.controllers import DEADLINE, build, drained, running

BODY = {"metadata": {"namespace": "default", "name": "chat", "uid": "u", "generation": 1}, "spec": {}}
KEY = ("default", "chat")


class FakeApi:
    async def get(self, _kind: Any, namespace: str, name: str) -> dict[str, Any]:
        return {**BODY, "metadata": {**BODY["metadata"], "name": name}}


def coalesced() -> float:
    return metrics.REGISTRY.get_sample_value("deepseek_operator_triggers_coalesced_total") or 0.0


async def test_triggers_during_a_reconcile_fold_into_one_queued_reconcile() -> None:
    release = asyncio.Event()
    started: list[int] = []

    async def slow_reconcile(body: Any, api: Any, notify: Any) -> Outcome:
        started.append(len(started))
        await release.wait()
        return Outcome({}, True, "Ready")

    async with running(build(FakeApi(), slow_reconcile, max_reconciles=4)) as controller:
        controller.enqueue(KEY)
        async with asyncio.timeout(DEADLINE):
            while not started:  # a worker reconciles the resource
                await asyncio.sleep(0)
        before = coalesced()
        for _ in range(6):  # the first marks one more pass, the other five fold into it
            controller.enqueue(KEY)
        for _ in range(10):
            await asyncio.sleep(0)
        assert started == [0]  # no second worker took the resource meanwhile
        assert coalesced() - before == 5
        release.set()
        await drained(controller)
    assert started == [0, 1]


async def test_at_most_max_reconciles_run_at_once_across_resources() -> None:
    """Many resources triggered together: a bounded number reconcile at once, the rest wait their turn."""
    running_now, peak, release = 0, 0, asyncio.Event()

    async def tracked_reconcile(body: Any, api: Any, notify: Any) -> Outcome:
        nonlocal running_now, peak
        running_now += 1
        peak = max(peak, running_now)
        await release.wait()
        running_now -= 1
        return Outcome({}, True, "Ready")

    async with running(build(FakeApi(), tracked_reconcile, max_reconciles=3)) as controller:
        for i in range(10):
            controller.known[("default", f"chat-{i}")] = BODY  # listed by kopf
            controller.enqueue(("default", f"chat-{i}"))
        async with asyncio.timeout(DEADLINE):
            while running_now < 3:
                await asyncio.sleep(0)
        for _ in range(20):  # let every other worker reach the queue
            await asyncio.sleep(0)
        assert (running_now, peak) == (3, 3) and len(controller.queue) == 7
        release.set()
        await drained(controller)
    assert peak == 3 and running_now == 0
    assert sorted(controller.reconciled) == sorted(("default", f"chat-{i}") for i in range(10))
