"""The gateway's own series, on the worker's registry (server/metrics.py keeps the edge's request,
latency and token series). Labels are bounded: variant names come from the configuration, and
`served_by` is a variant name or `fallback`; no backend address is a label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..server.lifecycle import WorkerState
from ..server.metrics import _gauge
from .backends import Pool
from .hold import Hold

PREFIX = "deepseek_gateway_"
COLD_START_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200)


class GatewayCollector(Collector):
    """Scrape-time gauges: held requests, in-flight and ready backends per variant, the fallback share."""

    def __init__(self, state: WorkerState, max_concurrent: int, pools: Mapping[str, Pool],
                 holds: Mapping[str, Hold], share: Callable[[], float]) -> None:
        self.state, self.max_concurrent, self.pools, self.holds, self.share = (
            state, max_concurrent, pools, holds, share)

    def collect(self) -> Iterator[Metric]:
        # The worker's gauges that dashboards and the operator read, with their gateway meaning.
        yield _gauge("inflight_requests", "API requests admitted and not yet finished.", self.state.inflight)
        yield _gauge("max_concurrent_requests", "Admission cap.", self.max_concurrent)
        yield _gauge("model_loaded", "Always 1 on the gateway (it holds requests itself).", 1)
        yield _gauge("draining", "1 while draining after SIGTERM.", 1 if self.state.draining else 0)
        families: dict[str, tuple[str, Callable[[str], float]]] = {
            "held_requests": ("Requests held for a variant without a ready backend.", lambda v: self.holds[v].held),
            "inflight_requests": ("Requests forwarded to the variant's backends and not finished.",
                                  lambda v: self.pools[v].inflight),
            "ready_backends": ("Backends of the variant answering /health/ready.",
                               lambda v: len(self.pools[v].ready_backends())),
            "backend_queue": ("Sum of the variant's backends' polled queue gauges.", lambda v: self.pools[v].queue),
        }
        for name, (doc, read) in families.items():
            family = GaugeMetricFamily(PREFIX + name, doc, labels=["variant"])
            for variant in self.pools:
                family.add_metric([variant], float(read(variant)))
            yield family
        yield GaugeMetricFamily(PREFIX + "fallback_share", "Share of routed requests sent to the hosted API "
                                "in the sliding window.", value=self.share())


class GatewayMetrics:
    """Counters and histograms the forwarding path updates."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.served = Counter(PREFIX + "requests_served", "Requests answered, by variant or `fallback`.",
                              ["served_by"], registry=r)
        self.cold_start = Histogram(PREFIX + "cold_start_seconds", "From the first request held for a "
                                    "variant at zero to its first byte.", ["variant"],
                                    buckets=COLD_START_BUCKETS, registry=r)
        self.hold_refused = Counter(PREFIX + "hold_refused", "Requests refused 429: the hold queue was full.",
                                    ["variant"], registry=r)
        self.hold_expired = Counter(PREFIX + "hold_expired", "Held requests whose deadline passed (504).",
                                    ["variant"], registry=r)
        self.passed_over = Counter(PREFIX + "passed_over", "Requests drawn for the variant while it had no "
                                   "ready backend, served by another variant (each marks it wanted).",
                                   ["variant"], registry=r)
        self.retries = Counter(PREFIX + "backend_retries", "Requests retried on another backend after one "
                               "failed before sending a byte.", ["variant"], registry=r)
