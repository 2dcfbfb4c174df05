"""Proxy mode: the engine's own Prometheus metrics (vllm:*, sglang:*), re-exposed on ours.

The engine listens on 127.0.0.1 only (nothing reaches it but through our edge), so Prometheus cannot
scrape it. EngineMetricsCollector fetches the engine's /metrics at each scrape of ours and yields its
families unchanged, next to our deepseek_worker_* series: one scrape target per pod, the same
ServiceMonitor relabeling (namespace, pod, variant, deepseek_deployment) on both, and the engine's
queue, KV-cache and latency series for the alerts and the dashboard (docs/runtimes.md).

Contract: at most `timeout` seconds per scrape; an engine that does not answer (loading, restarting)
yields only `deepseek_worker_engine_metrics_up 0`, never an error for the rest of our scrape. Runs in
the metrics port's thread (the operator always sets DEEPSEEK_METRICS_PORT), so it never blocks the API.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .metrics import PREFIX

SCRAPE_TIMEOUT_SECONDS = 2.0
UP = PREFIX + "engine_metrics_up"


class EngineMetricsCollector(Collector):
    """The upstream engine's /metrics as collected families (module docstring)."""

    def __init__(self, upstream: str, timeout: float = SCRAPE_TIMEOUT_SECONDS) -> None:
        self.url = upstream.rstrip("/") + "/metrics"
        self.timeout = timeout

    def describe(self) -> list[Metric]:
        # The engine's names are only known at scrape time; none may clash with ours (deepseek_worker_*).
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            # trust_env off: a pod's HTTPS_PROXY must never carry a loopback request.
            reply = httpx.get(self.url, timeout=self.timeout, trust_env=False)
            reply.raise_for_status()
            families = list(text_string_to_metric_families(reply.text))
        except (httpx.HTTPError, ValueError):
            yield _up(0)
            return
        yield _up(1)
        yield from (f for f in families if not f.name.startswith(PREFIX))


def _up(value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(UP, "1 when the engine's own /metrics answered this scrape (proxy mode).", value=value)
