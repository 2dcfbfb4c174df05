"""The gateway's measurements, reported to the operator: cold starts per variant and the share of
requests served by the hosted API (docs/gateway.md, "Report").

`ColdStarts` keeps the last KEEP cold starts of each variant (forward.py records one when a request
held while its variant had no ready backend gets its first byte). `document(...)` is what goes into
the replica's own key `data.gateway.<pod>` (`report_key`) of the gateway's report ConfigMap
(`DEEPSEEK_REPORT_CONFIGMAP` / `DEEPSEEK_REPORT_NAMESPACE`, the worker's channel:
report.patch_report): its cold starts, its window's fallback share and the counts that share is of
(`requests`, `fallbackRequests`), so the operator combines the replicas' shares weighted by their
requests (operator/deepseek_operator/measured.py, read_gateway_report, which also drops a replica
silent for 10 minutes and prunes one silent for an hour).

Contract of `GatewayReporter`: at most one write every `interval` seconds, and only when there is
something to say since the last write the API server took:
- news (the fallback share at 2 decimals or the cold starts changed): at the next tick;
- the counts alone changed, or nothing changed while the window has requests: once `refresh` seconds
  passed since the last write. That keeps a busy replica to one write per `refresh` (the counts move
  with every request) and its entry fresher than the operator's staleness bound (a steady load can
  leave the counts unchanged for good).
An idle gateway (no cold start, nothing in its window) writes nothing: one that never had anything to
say makes no request at all, and one whose window emptied writes that once. A failed write is logged
by patch_report and tried again at the next tick, and a last tick runs at shutdown (`flush`);
reporting never stops serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..report import in_cluster, patch_report
from ..settings import Settings

log = logging.getLogger("deepseek_worker.gateway.report")

KEY_PREFIX = "gateway."  # + the pod: operator/deepseek_operator/measured.py reads every such key
MAX_KEY = 253  # a ConfigMap key's longest
KEEP = 20  # cold starts kept per variant (the p50's sample)
INTERVAL_SECONDS = 15.0
# Counts-only changes, and a steady busy window, are written this often: a fifth of the operator's
# staleness bound (measured.GATEWAY_STALE_SECONDS, 600 s), so a live replica with traffic is never
# taken for a dead one, and a busy replica writes (and triggers a reconcile) every 2 minutes, not 15 s.
REFRESH_SECONDS = 120.0
COUNTS = ("requests", "fallbackRequests")  # the document's figures that are not news by themselves


def _stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def report_key(pod: str) -> str:
    """The replica's own data key, `gateway.<pod>`: the pod's name with any character a ConfigMap key
    may not hold (`[-._a-zA-Z0-9]` only) replaced by `_`, cut to MAX_KEY. Pod names are DNS labels,
    so in a cluster the name is kept as it is."""
    return (KEY_PREFIX + (re.sub(r"[^-._a-zA-Z0-9]", "_", pod) or "unknown"))[:MAX_KEY]


class ColdStarts:
    """The last KEEP cold starts of each variant: (seconds, wall-clock time of the first byte)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._seen: dict[str, deque[tuple[float, float]]] = {}

    def record(self, variant: str, seconds: float) -> None:
        self._seen.setdefault(variant, deque(maxlen=KEEP)).append((seconds, self.clock()))

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per variant: lastSeconds, p50Seconds (of the kept ones), count (kept), observedAt (the last)."""
        out = {}
        for variant, seen in self._seen.items():
            last, at = seen[-1]
            out[variant] = {"lastSeconds": round(last, 3),
                            "p50Seconds": round(statistics.median(s for s, _ in seen), 3),
                            "count": len(seen), "observedAt": _stamp(at)}
        return out


def document(cold: ColdStarts, counts: tuple[int, int], pod: str) -> dict[str, Any]:
    """The report without its timestamp (what "changed" compares): the pod, the fallback share in the
    sliding window (2 decimals), the window's routed requests and how many of them went out
    (`counts`: ShareWindow.counts), and each variant's cold starts."""
    outgoing, routed = counts
    return {"pod": pod, "fallbackShare": round(outgoing / routed if routed else 0.0, 2), "requests": routed,
            "fallbackRequests": outgoing, "coldStarts": cold.summary()}


def _news(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without its counts: what is written at the next tick when it changes."""
    return {k: v for k, v in doc.items() if k not in COUNTS}


def _something(doc: dict[str, Any]) -> bool:
    """Whether the document has anything to say: a cold start, or requests (or a share) in the window."""
    return bool(doc["coldStarts"] or doc["fallbackShare"] or doc.get("requests"))


class GatewayReporter:
    """Writes `document(...)` into `report_key(pod)` on change, at most once per `interval` seconds
    (module docstring). `counts`: the fallback window's (sent out, routed) (ShareWindow.counts)."""

    def __init__(self, settings: Settings, cold: ColdStarts, counts: Callable[[], tuple[int, int]],
                 env: Mapping[str, str] | None = None, interval: float | None = None,
                 clock: Callable[[], float] = time.time, refresh: float | None = None) -> None:
        self.settings, self.cold, self.counts, self.clock = settings, cold, counts, clock
        self.interval = INTERVAL_SECONDS if interval is None else interval
        self.refresh = REFRESH_SECONDS if refresh is None else refresh
        self.env = dict(os.environ if env is None else env)
        self.pod = self.env.get("HOSTNAME") or socket.gethostname()
        self.key = report_key(self.pod)
        self.written: dict[str, Any] | None = None  # the last document the API server took
        self.written_at = 0.0  # when (clock) it took it
        self.writes = 0  # tests read it

    @property
    def enabled(self) -> bool:
        """A ConfigMap is configured and an API server known (outside a cluster the loop never starts)."""
        return bool(self.settings.report_configmap and self.settings.report_namespace and in_cluster(self.env))

    def due(self, doc: dict[str, Any], now: float) -> bool:
        """Whether `doc` is to be written now (the module docstring's rules)."""
        if self.written is None:
            return _something(doc)  # nothing at all to say yet: no request
        if _news(doc) != _news(self.written):
            return True
        stale = now - self.written_at >= self.refresh
        return stale and (doc != self.written or bool(doc.get("requests")))

    async def tick(self) -> bool:
        """Write the document if it is due; True when one was written."""
        doc, now = document(self.cold, self.counts(), self.pod), self.clock()
        if not self.due(doc, now):
            return False
        done = await asyncio.to_thread(patch_report, self.key, {**doc, "reportedAt": _stamp(now)},
                                       self.settings, "gateway report", self.env)
        if done:
            self.written, self.written_at = doc, now
            self.writes += 1
        return done

    async def flush(self) -> None:
        """One last tick at shutdown (a cold start measured since the last tick is not lost with the pod);
        never raises."""
        try:
            await self.tick()
        except Exception:
            log.exception("gateway report at shutdown failed")

    async def run(self) -> None:
        """Forever (cancelled at shutdown); a no-op loop is never started without a ConfigMap."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except Exception:  # a report must never end the loop
                log.exception("gateway report failed")
