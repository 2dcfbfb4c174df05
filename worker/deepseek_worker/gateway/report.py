"""The gateway's measurements, reported to the operator: cold starts per variant and the share of
requests served by the hosted API (docs/gateway.md, "Report").

`ColdStarts` keeps the last KEEP cold starts of each variant (forward.py records one when a request
held while its variant had no ready backend gets its first byte). `document(...)` is what goes into
`data.gateway` of the gateway's report ConfigMap (`DEEPSEEK_REPORT_CONFIGMAP` /
`DEEPSEEK_REPORT_NAMESPACE`, the worker's channel: report.patch_report); the operator reads it into
`status.variants[].coldStart` and `status.gateway` (operator/deepseek_operator/measured.py,
read_gateway_report).

Contract of `GatewayReporter`: at most one write every `interval` seconds, and only when the
document (without its timestamp) changed since the last write the API server took: an idle gateway
(no cold start, a fallback share that stays 0) writes nothing. Each replica writes the same key, so
the last writer wins: its cold starts and its window's fallback share. A failed write is logged by
patch_report and tried again at the next tick, and a last tick runs at shutdown (`flush`); reporting
never stops serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
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

REPORT_KEY = "gateway"  # operator/deepseek_operator/measured.py reads this key
KEEP = 20  # cold starts kept per variant (the p50's sample)
INTERVAL_SECONDS = 15.0


def _stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def document(cold: ColdStarts, share: float, pod: str) -> dict[str, Any]:
    """The report without its timestamp (what "changed" compares): the pod, the fallback share in the
    sliding window (2 decimals) and each variant's cold starts."""
    return {"pod": pod, "fallbackShare": round(share, 2), "coldStarts": cold.summary()}


class GatewayReporter:
    """Writes `document(...)` on change, at most once per `interval` seconds (module docstring)."""

    def __init__(self, settings: Settings, cold: ColdStarts, share: Callable[[], float],
                 env: Mapping[str, str] | None = None, interval: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings, self.cold, self.share, self.clock = settings, cold, share, clock
        self.interval = INTERVAL_SECONDS if interval is None else interval
        self.env = dict(os.environ if env is None else env)
        self.pod = self.env.get("HOSTNAME") or socket.gethostname()
        self.written: dict[str, Any] | None = None  # the last document the API server took
        self.writes = 0  # tests read it

    @property
    def enabled(self) -> bool:
        """A ConfigMap is configured and an API server known (outside a cluster the loop never starts)."""
        return bool(self.settings.report_configmap and self.settings.report_namespace and in_cluster(self.env))

    async def tick(self) -> bool:
        """Write the document if it changed since the last write; True when one was written."""
        doc = document(self.cold, self.share(), self.pod)
        if doc == self.written or (self.written is None and not doc["coldStarts"] and not doc["fallbackShare"]):
            return False  # nothing new; nothing at all to say yet
        done = await asyncio.to_thread(patch_report, REPORT_KEY, {**doc, "reportedAt": _stamp(self.clock())},
                                       self.settings, "gateway report", self.env)
        if done:
            self.written = doc
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
