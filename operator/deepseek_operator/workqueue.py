"""A client-go-style work queue of resource keys, for asyncio.

Contract (client-go `workqueue`, the parts the operator uses):
- dedupe: a key added while it waits in the queue is not queued twice (`add` returns False);
- per-key serialization: `get` never hands out a key another worker is processing; a key added
  while it is processed waits, and `done` queues it again, so the change that added it is seen;
- rate-limited requeue: `add_rate_limited` counts a failure and adds the key again after the
  backoff of its count (`retry.Backoff`; the server's Retry-After wins, capped). One pending retry
  per key: a newer one replaces the older. `forget` (on success) resets the count and drops it;
- shutdown: `shutdown` drops the queued keys and pending retries, ignores further adds, and every
  `get` (waiting or later) raises `ShutDown`.

Time is read only through a `Clock`, so tests fire delayed adds without sleeping.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from deepseek_operator.retry import Backoff

K = TypeVar("K", bound=Hashable)


class ShutDown(Exception):
    """The queue was shut down: the worker that got this stops."""


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Call `callback` once, `delay` seconds from now, unless the returned timer is cancelled."""
        ...


class LoopClock:
    """The running event loop's clock (the default)."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


class WorkQueue(Generic[K]):
    """Keys to process, each by at most one worker at a time; see the module docstring."""

    def __init__(self, backoff: Backoff | None = None, clock: Clock | None = None) -> None:
        self.backoff = backoff or Backoff()
        self._clock: Clock = clock or LoopClock()
        self._ready: deque[K] = deque()  # keys a worker may take, in order
        self._dirty: set[K] = set()  # keys that need processing (queued, or waiting for done())
        self._processing: set[K] = set()
        self._failures: dict[K, int] = {}
        self._retries: dict[K, Timer] = {}
        self._getters: deque[asyncio.Future[None]] = deque()
        self._idle: list[asyncio.Future[None]] = []
        self._shut = False

    def __len__(self) -> int:
        """Keys queued for a worker (not those being processed)."""
        return len(self._ready)

    @property
    def shutting_down(self) -> bool:
        return self._shut

    def add(self, key: K) -> bool:
        """Mark `key` for processing; False when it was already marked (or the queue is shut down)."""
        if self._shut or key in self._dirty:
            return False
        self._dirty.add(key)
        if key not in self._processing:
            self._push(key)
        return True

    async def get(self) -> K:
        """The next key to process; the caller must call `done(key)` when finished with it."""
        while not self._ready:
            if self._shut:
                raise ShutDown
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._getters:
                    self._getters.remove(waiter)
                elif self._ready:  # woken, then cancelled: hand the wake-up to the next getter
                    self._wake_getter()
                raise
        if self._shut:
            raise ShutDown
        key = self._ready.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        """Processing of `key` ended; if it was added meanwhile, queue it again."""
        self._processing.discard(key)
        if key in self._dirty and not self._shut:
            self._push(key)
        self._wake_idle()

    def add_rate_limited(self, key: K, retry_after: float | None = None) -> float:
        """Count a failure of `key` and add it again after its backoff; returns the delay in seconds."""
        attempt = self._failures[key] = self._failures.get(key, 0) + 1
        delay = self.backoff.delay(attempt, retry_after)
        self._cancel_retry(key)
        if not self._shut:
            self._retries[key] = self._clock.call_later(delay, lambda: self._retry_due(key))
        return delay

    def forget(self, key: K) -> None:
        """`key` succeeded or is gone: reset its failure count and drop its pending retry."""
        self._failures.pop(key, None)
        self._cancel_retry(key)

    def requeues(self, key: K) -> int:
        """Failures counted for `key` since it was last forgotten."""
        return self._failures.get(key, 0)

    def pending_retries(self) -> int:
        return len(self._retries)

    async def join(self) -> None:
        """Return once no key is queued or processed (pending retries do not count)."""
        while self._ready or self._processing:
            waiter = asyncio.get_running_loop().create_future()
            self._idle.append(waiter)
            await waiter

    def shutdown(self) -> None:
        """Drop queued keys and pending retries, refuse further adds, wake every waiting `get`."""
        self._shut = True
        for key in list(self._retries):
            self._cancel_retry(key)
        self._ready.clear()
        self._dirty.clear()
        while self._getters:
            self._resolve(self._getters.popleft())
        self._wake_idle()

    def _push(self, key: K) -> None:
        self._ready.append(key)
        self._wake_getter()

    def _wake_getter(self) -> None:
        while self._getters:  # wake one live getter (a cancelled one is skipped)
            if self._resolve(self._getters.popleft()):
                break

    def _retry_due(self, key: K) -> None:
        self._retries.pop(key, None)
        self.add(key)

    def _cancel_retry(self, key: K) -> None:
        timer = self._retries.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _wake_idle(self) -> None:
        if self._ready or self._processing:
            return
        waiters, self._idle = self._idle, []
        for waiter in waiters:
            self._resolve(waiter)

    @staticmethod
    def _resolve(waiter: asyncio.Future[None]) -> bool:
        if waiter.done():
            return False
        waiter.set_result(None)
        return True
