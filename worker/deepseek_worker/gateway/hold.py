"""Scale-from-zero hold: a bounded count of requests per variant waiting for a ready backend.

`Hold` counts the held requests of one variant (the queue is the waiters themselves: each awaits
its pool's readiness with its own deadline) and measures cold starts: from the first request held
while the variant had no ready backend to that request's first byte. The last measurement (else the
declared load time) gives a full queue's Retry-After.

It also remembers the requests drawn for the variant while it had no ready backend and served by
another variant (choose.py, `passed_over`), for WANT_WINDOW_SECONDS: `wanted()` (held plus those)
is the demand that wakes the variant from zero (the ScaledObject's `wanted` trigger,
operator/deepseek_operator/render/autoscaling.py).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

# How long a passed-over request keeps its variant wanted: well over KEDA's polling interval for a
# variant at zero (5 s), so a poll sees it; after it, only the ScaledObject's cooldown keeps the pods.
WANT_WINDOW_SECONDS = 60.0
MAX_PASSED_OVER = 10_000  # kept timestamps: the count is only ever compared with 0 and divided by 1000


class HoldFull(Exception):
    """The hold queue of a variant is full; `retry_after` is in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"hold queue full; retry after {retry_after} s")
        self.retry_after = retry_after


class Hold:
    """Held requests of one variant, and its cold-start clock."""

    def __init__(self, max_queue: int, load_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_queue = max_queue
        self.load_seconds = load_seconds  # declared; replaced by the last measured cold start
        self.clock = clock
        self.held = 0
        self.cold_since: float | None = None  # when the first request of this cold start was held
        self._passed_over: deque[float] = deque(maxlen=MAX_PASSED_OVER)  # when, oldest first

    def enter(self) -> None:
        """Count one held request, or raise HoldFull."""
        if self.held >= self.max_queue:
            raise HoldFull(self.retry_after())
        if self.cold_since is None:
            self.cold_since = self.clock()
        self.held += 1

    def leave(self) -> None:
        self.held -= 1

    def pass_over(self) -> None:
        """A request drawn for this variant went to another, ready one (it had no ready backend)."""
        self._passed_over.append(self.clock())

    def wanted(self) -> int:
        """Held requests plus those passed over in the last WANT_WINDOW_SECONDS: above 0, the variant
        is wanted and should have a pod."""
        horizon = self.clock() - WANT_WINDOW_SECONDS
        while self._passed_over and self._passed_over[0] < horizon:
            self._passed_over.popleft()
        return self.held + len(self._passed_over)

    def warm(self) -> None:
        """The variant served without holding: a later cold start is timed from its own first request."""
        if self.held == 0:
            self.cold_since = None

    def retry_after(self) -> int:
        """Seconds until a backend is expected: the load time left in this cold start (at least 1)."""
        elapsed = 0.0 if self.cold_since is None else self.clock() - self.cold_since
        return max(1, math.ceil(self.load_seconds - elapsed))

    def first_byte(self) -> float | None:
        """A held request got its first byte: the cold start's duration the first time, else None."""
        if self.cold_since is None:
            return None
        took = self.clock() - self.cold_since
        self.cold_since = None
        self.load_seconds = took
        return took
