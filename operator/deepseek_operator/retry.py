"""Retrying a resource's reconcile after an API error, the way the API asks.

- 429 and 503 with `Retry-After: N`: retry after N seconds (capped), as the apiserver's priority and
  fairness asks of every client.
- Every other failure (5xx, 409 conflicts, 403 until RBAC is fixed, lost connections): exponential
  backoff per resource, `base * factor**(attempt-1)` seconds, capped; the count resets on success.
  No jitter: retries of different resources are already spread by their own failure times.

The work queue (workqueue.py) keeps the counts and one pending retry per resource: a newer failure
replaces the older timer, a success cancels it, so a resource that fails on every trigger still
retries on one schedule (no retry storm per trigger).
"""

from __future__ import annotations

from dataclasses import dataclass

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
