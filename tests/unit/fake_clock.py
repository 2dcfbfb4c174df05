"""A Clock (workqueue.Clock) whose time moves only when a test says: delayed adds fire without sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class FakeTimer:
    due: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeClock:
    """`delays` records every call_later's delay, in order; `advance` fires what falls due."""

    now: float = 0.0
    delays: list[float] = field(default_factory=list)
    timers: list[FakeTimer] = field(default_factory=list)
    armed: asyncio.Event = field(default_factory=asyncio.Event)  # set by every call_later

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback)
        self.delays.append(delay)
        self.timers.append(timer)
        self.armed.set()
        return timer

    def pending(self) -> list[FakeTimer]:
        return sorted((t for t in self.timers if not t.cancelled), key=lambda t: t.due)

    def advance(self, seconds: float) -> int:
        """Move time on by `seconds`; fire the timers that fell due (in order); how many fired."""
        self.now += seconds
        due = [t for t in self.pending() if t.due <= self.now]
        for timer in due:
            self.timers.remove(timer)
            timer.callback()
        return len(due)

    def fire_next(self) -> float:
        """Advance to the next pending timer and fire it; the time that took."""
        step = self.pending()[0].due - self.now
        self.advance(step)
        return step
