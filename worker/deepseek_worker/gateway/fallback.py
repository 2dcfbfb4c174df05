"""Spill-over to a hosted API (DeepSeek's by default): the rule that allows it and the upstream.

A request goes out only when (1) the configuration has a fallback, (2) its reason (ColdStart,
Overloaded, Unavailable) is in `when`, (3) the caller's identity may leave the cluster
(`allowExternal`), and (4) the share of requests sent out in the sliding window stays at most
`maxShare` counting this one. Every routed request, local or not, is recorded in the window.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Mapping

import httpx

from ..server.upstream import Upstream
from .config import Fallback, FallbackReason


class ShareWindow:
    """Routed requests of the last `seconds`, and how many of them went out."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._events: deque[tuple[float, bool]] = deque()

    def _trim(self) -> None:
        horizon = self.clock() - self.seconds
        while self._events and self._events[0][0] < horizon:
            self._events.popleft()

    def record(self, outside: bool) -> None:
        self._events.append((self.clock(), outside))

    def counts(self) -> tuple[int, int]:
        """(sent out, routed) in the window: what the gateway's report weighs replicas' shares by."""
        self._trim()
        return sum(o for _, o in self._events), len(self._events)

    def share(self) -> float:
        """Share sent out in the window (0 when empty)."""
        outgoing, routed = self.counts()
        return outgoing / routed if routed else 0.0

    def would_stay_within(self, max_share: float) -> bool:
        """Whether sending one more request out keeps the share at most `max_share`."""
        self._trim()
        outside = sum(o for _, o in self._events) + 1
        return outside / (len(self._events) + 1) <= max_share + 1e-9


class HostedAPI(Upstream):
    """The hosted API: our client's key is never sent, the fallback's is; `model` is replaced."""

    def __init__(self, config: Fallback) -> None:
        super().__init__(config.baseURL, config.timeoutSeconds)
        self.config = config

    async def start(self) -> None:
        await super().start()
        # Upstream sends no Authorization of the caller; the hosted API's own key rides on the client.
        self.client.headers["authorization"] = f"Bearer {self.config.api_key()}"

    def rewrite(self, body: bytes) -> bytes:
        """The request body with `model` set to the hosted model (unchanged when not a JSON object)."""
        try:
            payload = json.loads(body)
        except ValueError:
            return body
        if not isinstance(payload, dict):
            return body
        payload["model"] = self.config.model
        return json.dumps(payload, separators=(",", ":")).encode()

    async def open(self, method: str, path: str, body: bytes, headers: Mapping[str, str],
                   extra: Mapping[str, str] | None = None) -> httpx.Response:
        return await super().open(method, path, self.rewrite(body) if body else body, headers, extra)


class FallbackRule:
    """Decides, per request, whether it may go out; keeps the share window."""

    def __init__(self, config: Fallback | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.window = ShareWindow(config.windowSeconds if config else 60.0, clock)

    def allows(self, reason: FallbackReason, names: frozenset[str]) -> bool:
        """Whether a request of the caller known by `names` (identity, key id) may go out for `reason`."""
        config = self.config
        return (config is not None and reason in config.when and any(config.allows(n) for n in names)
                and self.window.would_stay_within(config.maxShare))

    def overloaded(self, load_exceeded: Callable[[int], bool]) -> bool:
        """Whether the Overloaded rule's threshold is met (`load_exceeded(threshold)`)."""
        return self.config is not None and load_exceeded(self.config.overloadThreshold)
