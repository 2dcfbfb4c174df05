"""Retrying a resource's reconcile after an API error, the way the API asks.

- 429 and 503 with `Retry-After: N`: retry after N seconds (capped), as the apiserver's priority and
  fairness asks of every client.
- Every other failure (5xx, 409 conflicts, 403 until RBAC is fixed, lost connections): exponential
  backoff per resource, `base * factor**(attempt-1)` seconds, capped; the count resets on success.
  No jitter: retries of different resources are already spread by their own failure times.

One pending retry per resource: a newer failure replaces the older timer, a success cancels it, so a
resource that fails on every trigger still retries on one schedule (no retry storm per trigger).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name)
RETRY_AFTER_CODES = frozenset({429, 503})


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts; `cap` bounds both backoff and the server's Retry-After."""

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1 is the first retry)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.cap)
        return float(min(self.base * self.factor ** max(attempt - 1, 0), self.cap))


def server_delay(code: int, retry_after: float | None) -> float | None:
    """The delay the server asked for, honoured only where HTTP defines it for overload (429, 503)."""
    return retry_after if code in RETRY_AFTER_CODES else None


@dataclass
class RetryQueue:
    """Per-resource attempt counts and at most one scheduled retry per resource."""

    run: Callable[[Key], Awaitable[None]]
    backoff: Backoff = field(default_factory=Backoff)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    attempts: dict[Key, int] = field(default_factory=dict)
    _pending: dict[Key, asyncio.Task[None]] = field(default_factory=dict)

    def failure(self, key: Key, retry_after: float | None = None) -> float:
        """Count a failed attempt and schedule the retry; returns its delay in seconds."""
        attempt = self.attempts[key] = self.attempts.get(key, 0) + 1
        delay = self.backoff.delay(attempt, retry_after)
        self._cancel(key)
        self._pending[key] = asyncio.create_task(self._later(key, delay), name=f"retry {key[0]}/{key[1]}")
        return delay

    def success(self, key: Key) -> None:
        """The resource reconciled: reset its count and drop a retry no longer needed."""
        self.attempts.pop(key, None)
        self._cancel(key)

    forget = success  # a deleted resource: the same bookkeeping

    def pending(self) -> int:
        return len(self._pending)

    async def close(self) -> None:
        """Cancel every scheduled retry and wait for them (operator shutdown)."""
        tasks = list(self._pending.values())
        self._pending.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _cancel(self, key: Key) -> None:
        task = self._pending.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _later(self, key: Key, delay: float) -> None:
        await self.sleep(delay)
        self._pending.pop(key, None)  # before run(): its own failure schedules the next retry
        try:
            await self.run(key)
        except Exception:  # a bug: logged with its traceback (a task would drop it), never silenced
            log.exception("retry of %s/%s failed unexpectedly", *key)
