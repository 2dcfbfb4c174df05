"""The one deadline-bounded poller every async test uses (no sleep-and-hope)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest


async def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
                     what: str = "condition") -> Any:
    """Poll `check` (sync or async) until it returns something truthy and return it; fail at the deadline."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = check()
                if asyncio.iscoroutine(last):
                    last = await last
                if last:
                    return last
                await asyncio.sleep(interval)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
