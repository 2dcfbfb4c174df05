"""A variant's backends: their addresses, readiness, load, and the least-loaded choice among them.

A backend's load is the gateway's own in-flight count to it plus the queue gauge last polled from
its /metrics (discovery.py: on its metrics port when the document names one; 0 when not polled, not
readable, or the backend is not ready). Readiness comes from its /health/ready alone (discovery.py)
and is lost at once when a request fails to reach it. `changed` wakes held requests when readiness changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterable

from ..server.upstream import Upstream


class Backend:
    """One worker pod (or a fixed server root) and what the gateway knows of it."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.upstream = Upstream(url, timeout)
        self.inflight = 0  # requests this gateway has sent and not yet finished
        self.queue = 0.0  # the backend's own queue gauge, as last polled (0: unknown)
        self.ready = False

    @property
    def load(self) -> float:
        return self.inflight + self.queue


class Pool:
    """The backends of one variant. `start`/`stop` own their HTTP clients (call from the event loop)."""

    def __init__(self, variant: str, timeout: float, rng: random.Random) -> None:
        self.variant = variant
        self.timeout = timeout
        self.rng = rng
        self.backends: dict[str, Backend] = {}
        self.changed = asyncio.Event()  # set (then replaced) whenever the set of ready backends changes

    def ready_backends(self) -> list[Backend]:
        return [b for b in self.backends.values() if b.ready]

    @property
    def has_ready(self) -> bool:
        return any(b.ready for b in self.backends.values())

    @property
    def inflight(self) -> int:
        return sum(b.inflight for b in self.backends.values())

    @property
    def queue(self) -> float:
        return sum(b.queue for b in self.backends.values() if b.ready)

    def least_loaded(self, exclude: Iterable[Backend] = ()) -> Backend | None:
        """The ready backend with the smallest load (ties broken by the seeded RNG), or None."""
        skip = set(map(id, exclude))
        candidates = [b for b in self.ready_backends() if id(b) not in skip]
        if not candidates:
            return None
        lowest = min(b.load for b in candidates)
        return self.rng.choice([b for b in candidates if b.load == lowest])

    def overloaded(self, threshold: int) -> bool:
        """Every ready backend carries at least `threshold` (False without a ready backend)."""
        ready = self.ready_backends()
        return bool(ready) and all(b.load >= threshold for b in ready)

    async def update(self, urls: Iterable[str]) -> None:
        """Make the backend set exactly `urls`: new ones start not ready, gone ones are closed (waking
        the waiters when a ready one went)."""
        wanted = list(dict.fromkeys(urls))
        lost_ready = False
        for url in [u for u in self.backends if u not in wanted]:
            gone = self.backends.pop(url)
            lost_ready = lost_ready or gone.ready
            await gone.upstream.stop()
        for url in wanted:
            if url not in self.backends:
                backend = Backend(url, self.timeout)
                await backend.upstream.start()
                self.backends[url] = backend
        if lost_ready:
            self.notify()

    def set_ready(self, backend: Backend, ready: bool) -> None:
        if backend.ready != ready:
            backend.ready = ready
            self.notify()

    def notify(self) -> None:
        """Wake whoever waits on `changed`."""
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_changed(self, timeout: float) -> None:
        """Until readiness changes or `timeout` seconds pass."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for returns the event's result when a cancellation
        # (the client left) lands as the event fires, and the held request would outlive its client.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.changed.wait()

    async def stop(self) -> None:
        await self.update(())
