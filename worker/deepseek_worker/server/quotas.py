"""Per-key token quotas: tokens per minute and per day, as OpenAI reports them (x-ratelimit-*-tokens).

Each window is a bucket of `limit` tokens refilled continuously (a minute's limit over 60 s, a day's
over 86 400 s). The charge is the usage a response reports (prompt + completion tokens), taken when
the response completes: the edge cannot know a prompt's token count before the route tokenizes it
(and in proxy mode never does), and charging the real usage keeps the quota equal to the metered
counters. A request is admitted while every window of its key has at least one token left; the
first request after the quota is used up is refused with 429 and `Retry-After` (the whole seconds
until a token is back), so a key overshoots by at most the requests it already had in flight.

State is kept per configured key id only (a quota needs an id: keys.py), so it is bounded by the
keys file. No module state: each app owns one TokenQuotas.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..protocol.errors import APIError
from .keys import TokenQuota
from .limits import openai_duration

MINUTE = 60.0
DAY = 86400.0


@dataclass(frozen=True)
class TokenState:
    """A key's tokens at admission: what the x-ratelimit-*-tokens headers report (the binding window:
    the one with the fewest tokens left)."""

    limit: int
    remaining: int
    reset_seconds: float  # until that window is full again
    retry_after: int | None  # None when admitted

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-tokens": str(self.limit),
            "x-ratelimit-remaining-tokens": str(self.remaining),
            "x-ratelimit-reset-tokens": openai_duration(self.reset_seconds),
        }


class QuotaExceeded(APIError):
    """429 for a key whose token quota is used up; carries the token headers with Retry-After."""

    def __init__(self, label: str, state: TokenState) -> None:
        super().__init__(
            429,
            f"Token quota of API key {label!r} reached ({state.limit} tokens); "
            f"retry after {state.retry_after} s.",
            retry_after=state.retry_after,
        )
        self.state = state

    def headers(self) -> dict[str, str]:
        return {**super().headers(), **self.state.headers()}


class _Window:
    """One bucket: `limit` tokens, refilled at limit/period per second; charges may take it below 0."""

    def __init__(self, limit: int, period: float, now: float) -> None:
        self.limit, self.period = limit, period
        self.level = float(limit)
        self.stamp = now

    @property
    def rate(self) -> float:
        return self.limit / self.period

    def refill(self, now: float, limit: int) -> None:
        if limit != self.limit:  # the keys file changed this quota: keep what was used
            self.level += limit - self.limit
            self.limit = limit
        self.level = min(float(self.limit), self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self) -> float:
        """Seconds until one token is available (0 when it is)."""
        return 0.0 if self.level >= 1 else (1 - self.level) / self.rate

    def state(self) -> tuple[int, int, float]:
        return self.limit, max(0, math.floor(self.level)), (self.limit - self.level) / self.rate


class TokenQuotas:
    """The token windows of every key with a quota. `admit` before a request, `charge` after it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._windows: dict[str, dict[float, _Window]] = {}  # key id -> period -> window

    def _current(self, label: str, quota: TokenQuota) -> list[_Window]:
        now = self.clock()
        windows = self._windows.setdefault(label, {})
        current = []
        for period, limit in ((MINUTE, quota.tokens_per_minute), (DAY, quota.tokens_per_day)):
            if limit is None:
                windows.pop(period, None)
                continue
            window = windows.setdefault(period, _Window(limit, period, now))
            window.refill(now, limit)
            current.append(window)
        return current

    def admit(self, label: str, quota: TokenQuota | None) -> TokenState | None:
        """The key's token state (None without a quota); raises QuotaExceeded when a window is empty."""
        windows = self._current(label, quota) if quota is not None else []
        if not windows:
            return None
        limit, remaining, reset = min((w.state() for w in windows), key=lambda s: (s[1], -s[2]))
        wait = max(w.wait() for w in windows)
        state = TokenState(limit, remaining, reset, None if wait == 0 else max(1, math.ceil(wait)))
        if state.retry_after is not None:
            raise QuotaExceeded(label, state)
        return state

    def charge(self, label: str, quota: TokenQuota | None, tokens: int) -> None:
        """Take `tokens` (a response's prompt + completion usage) from every window of the key."""
        if quota is None or tokens <= 0:
            return
        for window in self._current(label, quota):
            window.level -= tokens
