"""handlers.run(): one reconcile at a time per resource, and triggers coalesce while one is queued."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from deepseek_operator import handlers
from deepseek_operator.reconcile import Outcome

BODY = {"metadata": {"namespace": "default", "name": "chat", "uid": "u", "generation": 1}, "spec": {}}


class FakeApi:
    async def get(self, *_: Any) -> dict[str, Any]:
        return dict(BODY)


async def test_triggers_during_a_reconcile_fold_into_one_queued_reconcile(monkeypatch: pytest.MonkeyPatch) -> None:
    release = asyncio.Event()
    started: list[int] = []

    async def slow_reconcile(body: Any, api: Any, notify: Any) -> Outcome:
        started.append(len(started))
        await release.wait()
        return Outcome({}, True, "Ready")

    monkeypatch.setattr(handlers, "_client", FakeApi())
    monkeypatch.setattr(handlers, "reconcile", slow_reconcile)
    first = asyncio.create_task(handlers.run(BODY))
    async with asyncio.timeout(5):
        while not started:  # the first reconcile holds the lock
            await asyncio.sleep(0)
    queued = asyncio.create_task(handlers.run(BODY))
    async with asyncio.timeout(5):
        while ("default", "chat") not in handlers._waiting:
            await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*(handlers.run(BODY) for _ in range(5))), 5)  # coalesced: return at once
    assert started == [0]
    release.set()
    await asyncio.wait_for(asyncio.gather(first, queued), 5)
    assert started == [0, 1]
    assert not handlers._waiting


async def test_at_most_max_reconciles_run_at_once_across_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many resources triggered together: a bounded number reconcile at once, the rest wait their turn."""
    running, peak, release = 0, 0, asyncio.Event()

    async def tracked_reconcile(body: Any, api: Any, notify: Any) -> Outcome:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        return Outcome({}, True, "Ready")

    class Api:
        async def get(self, _kind: Any, namespace: str, name: str) -> dict[str, Any]:
            return {**BODY, "metadata": {**BODY["metadata"], "name": name}}

    monkeypatch.setattr(handlers, "_client", Api())
    monkeypatch.setattr(handlers, "reconcile", tracked_reconcile)
    monkeypatch.setattr(handlers, "_slots", asyncio.Semaphore(3))
    bodies = [{**BODY, "metadata": {**BODY["metadata"], "name": f"chat-{i}"}} for i in range(10)]
    tasks = [asyncio.create_task(handlers.run(b)) for b in bodies]
    async with asyncio.timeout(5):
        while running < 3:
            await asyncio.sleep(0)
    for _ in range(20):  # let every other task reach the semaphore
        await asyncio.sleep(0)
    assert (running, peak) == (3, 3)
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert peak == 3 and running == 0
