"""Issue 19 item 3: Auto's surge fallback is due at surgeTimeoutSeconds, not at the next resync.

The real reconcile over an in-memory API (tests/unit/test_refused_children.py's FakeApi, with pods):
while a surge pod waits for a GPU, the Outcome asks for a recheck just after the deadline, and the
Controller arms a timer for it; once the deadline has passed the reconcile falls back to Replace.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deepseek_operator.k8s import Kind
from deepseek_operator.reconcile import reconcile
from tests.unit.controllers import build
from tests.unit.fake_clock import FakeClock
from tests.unit.test_refused_children import FakeApi, body, no_events  # noqa: F401 (a fixture)

KEY = ("default", "chat")
IMAGE = "registry.example.com/deepseek-worker:1.1.0"  # body()'s image
AUTO = {"rollout": {"strategy": "Auto", "surgeTimeoutSeconds": 10}}


def pending_pod(image: str, seconds_ago: float) -> dict[str, Any]:
    """A pod the scheduler could not place `seconds_ago` (no free GPU), as the apiserver shows it."""
    since = (datetime.now(UTC) - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": "chat-primary-x", "creationTimestamp": since},
            "spec": {"containers": [{"name": "worker", "image": image}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": since,
                 "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]}}


class PodsApi(FakeApi):
    """FakeApi whose pod listing returns the given pods."""

    def __init__(self, cr: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        super().__init__(cr, lambda _child: None)
        self.pods = pods

    async def list(self, kind: Kind, ns: str | None, selector: dict[str, str]) -> list[dict[str, Any]]:
        return self.pods if kind.kind == "Pod" else await super().list(kind, ns, selector)


async def no_notify(_kind: str, _reason: str, _message: str) -> None: ...


async def test_a_waiting_surge_pod_asks_for_a_recheck_just_after_the_surge_deadline() -> None:
    api = PodsApi(body(AUTO), [pending_pod(IMAGE, seconds_ago=4)])
    outcome = await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    # Due 10 - 4 = 6 s from now, plus the second the timestamps' resolution may hide.
    assert outcome.recheck_seconds is not None and 5.0 <= outcome.recheck_seconds <= 7.5, outcome
    assert api.cr["status"]["variants"][0]["strategy"] == "Surge"


async def test_no_recheck_without_a_waiting_surge_pod_or_once_fallen_back() -> None:
    idle = PodsApi(body(AUTO), [])
    assert (await reconcile(idle.cr, idle, no_notify)).recheck_seconds is None  # type: ignore[arg-type]
    old = PodsApi(body(AUTO), [pending_pod("registry.example.com/deepseek-worker:1.0.0", seconds_ago=4)])
    assert (await reconcile(old.cr, old, no_notify)).recheck_seconds is None  # type: ignore[arg-type]
    overdue = PodsApi(body(AUTO), [pending_pod(IMAGE, seconds_ago=30)])
    outcome = await reconcile(overdue.cr, overdue, no_notify)  # type: ignore[arg-type]
    assert overdue.cr["status"]["variants"][0]["strategy"] == "Replace"
    assert outcome.recheck_seconds is None  # fallen back: nothing left to wait for
    surge = PodsApi(body({"rollout": {"strategy": "Surge", "surgeTimeoutSeconds": 10}}), [pending_pod(IMAGE, 4)])
    assert (await reconcile(surge.cr, surge, no_notify)).recheck_seconds is None  # type: ignore[arg-type]


@pytest.mark.usefixtures("no_events")
async def test_the_controller_arms_a_timer_at_the_surge_deadline() -> None:
    api, clock = PodsApi(body(AUTO), [pending_pod(IMAGE, seconds_ago=4)]), FakeClock()
    controller = build(api, clock=clock)
    await asyncio.wait_for(controller.process(KEY), 5)
    assert controller.pending_recheck(KEY) and len(clock.delays) == 1
    assert 4.5 <= clock.delays[0] <= 7.5, clock.delays  # the deadline, not the resync (600 s by default)
    assert clock.advance(clock.delays[0]) == 1 and len(controller.queue) == 1  # then the resource is reconciled
