"""Building a Controller (controller.py) over fakes, for the unit tests of the operator's runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from deepseek_operator.controller import Controller, Reconcile
from deepseek_operator.reconcile import reconcile as real_reconcile
from deepseek_operator.settings import Settings
from tests.unit.fake_clock import FakeClock

DEADLINE = 5  # seconds; every wait has one


def build(api: Any, reconcile: Reconcile = real_reconcile, clock: FakeClock | None = None,
          **settings: Any) -> Controller:
    """A Controller over the fake `api` (not started); `settings` override Settings' defaults."""
    return Controller(Settings(**settings), client=api, reconcile=reconcile, clock=clock)


@asynccontextmanager
async def running(controller: Controller) -> AsyncIterator[Controller]:
    """The Controller with its workers and resync loop started; stopped (within the deadline) after."""
    await controller.start()
    try:
        yield controller
    finally:
        await asyncio.wait_for(controller.stop(), DEADLINE)


async def drained(controller: Controller) -> None:
    """Wait until the work queue holds nothing and no worker reconciles."""
    await asyncio.wait_for(controller.queue.join(), DEADLINE)
