"""Deadline-bounded waiting for async tests: the one poller, and subprocesses that never block the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
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


async def run_process(argv: list[str], env: Mapping[str, str], stdin: str | None = None,
                      timeout: float = 60) -> tuple[int, str]:
    """Run argv without blocking the event loop; (exit code, stdout+stderr). Killed at the deadline."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=dict(env))
    try:
        out, _ = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode()
