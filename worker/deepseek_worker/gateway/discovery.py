"""Finding and checking backends: DNS resolution of each variant's headless Service, /health/ready
and the queue gauge of each backend, on a loop per variant (faster while a request is held).

The queue gauge is read from the backend's metrics listener when `discovery.metricsPort` is set (the
workers the operator renders serve /metrics there alone), else from its own URL. It only refines the
least-loaded choice and the Overloaded rule: readiness is /health/ready's alone.

A headless Service's DNS name lists the ready pods only, so a pod appears once Ready and is gone
soon after it is deleted; the probe closes the rest of the gap (a pod restarting under the same IP).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .backends import Backend, Pool
from .config import Discovery, Variant

log = logging.getLogger("deepseek_worker.gateway.discovery")

PROBE_TIMEOUT_SECONDS = 2.0
# resolve(host, port) -> the addresses it names now (IPv4 and IPv6 text forms).
Resolve = Callable[[str, int], Awaitable[list[str]]]


async def resolve_dns(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (a headless Service: one per ready pod); [] when it does not."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sorted({str(info[4][0]) for info in infos})


def backend_urls(variant: Variant, addresses: list[str]) -> list[str]:
    """The variant's fixed backends plus one server root per resolved address."""
    urls = list(variant.backends)
    if variant.service is not None:
        for address in addresses:
            host = f"[{address}]" if ":" in address else address
            urls.append(f"{variant.service.scheme}://{host}:{variant.service.port}")
    return urls


def metrics_url(backend_url: str, port: int | None) -> str:
    """Where a backend's queue gauge is read: with `port`, its metrics-only listener (the same host, plain
    http, /metrics: a worker's DEEPSEEK_METRICS_PORT serves no TLS); without, /metrics under its own URL."""
    if port is None:
        return backend_url + "/metrics"
    return str(httpx.URL(backend_url).copy_with(scheme="http", port=port, path="/metrics"))


async def healthy(backend: Backend) -> bool:
    """/health/ready answered 200 within PROBE_TIMEOUT_SECONDS: the one test of readiness."""
    try:
        reply = await backend.upstream.client.get("/health/ready", timeout=PROBE_TIMEOUT_SECONDS)
    except httpx.HTTPError:
        return False
    return reply.status_code == 200


async def polled_queue(backend: Backend, metric: str, port: int | None) -> float:
    """The summed `metric` samples of the backend's /metrics (metrics_url); 0 when they cannot be read
    (refused, filtered, not 200, unparsable, absent). An unknown queue ranks the backend by the gateway's
    in-flight count alone and never costs it readiness: a metrics listener that a NetworkPolicy drops
    must not take a serving pod out of rotation."""
    url = metrics_url(backend.url, port)
    try:
        # An absolute URL: the backend's client reaches the metrics port without a client of its own.
        reply = await backend.upstream.client.get(url, timeout=PROBE_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        log.debug("queue gauge of %s not read from %s: %s", backend.url, url, exc)
        return 0.0
    return queue_depth(reply.text, metric) if reply.status_code == 200 else 0.0


def queue_depth(text: str, name: str) -> float:
    """The sum of the samples named `name` in a Prometheus text exposition (0 when absent or unparsable)."""
    total = 0.0
    try:
        for family in text_string_to_metric_families(text):
            total += sum(s.value for s in family.samples if s.name == name)
    except ValueError:
        return 0.0
    return total


class Discoverer:
    """The loop of one variant: resolve, probe, sleep; `held` says whether to hurry."""

    def __init__(self, variant: Variant, pool: Pool, settings: Discovery, held: Callable[[], int],
                 resolve: Resolve = resolve_dns) -> None:
        self.variant, self.pool, self.settings, self.held, self.resolve = variant, pool, settings, held, resolve

    @property
    def queue_metric(self) -> str | None:
        """The variant's own queue gauge, else the document's (None: in-flight counts alone)."""
        return self.variant.queueMetric or self.settings.queueMetric

    async def refresh(self, resolve: bool) -> None:
        """One round: re-resolve (when `resolve`), probe every backend's readiness concurrently, then
        poll the ready ones' queue gauges. Readiness is applied before the gauges are read, so a slow
        or filtered metrics port never delays a held request's wake-up; a backend not ready carries
        no queue (its last one would be stale when it returns)."""
        if resolve:
            service = self.variant.service
            addresses = await self.resolve(service.host, service.port) if service is not None else []
            await self.pool.update(backend_urls(self.variant, addresses))
        backends = list(self.pool.backends.values())
        results = await asyncio.gather(*(healthy(b) for b in backends))
        for backend, ready in zip(backends, results, strict=True):
            self.pool.set_ready(backend, ready)
            if not ready:
                backend.queue = 0.0
        metric, ready_ones = self.queue_metric, [b for b in backends if b.ready]
        if metric is None:
            return
        queues = await asyncio.gather(*(polled_queue(b, metric, self.settings.metricsPort) for b in ready_ones))
        for backend, queue in zip(ready_ones, queues, strict=True):
            backend.queue = queue

    async def run(self) -> None:
        """Forever (cancelled at shutdown); a failing round is logged and retried."""
        since_resolve = float("inf")
        while True:
            fast = self.held() > 0
            due = since_resolve >= (self.settings.heldProbeSeconds if fast else self.settings.resolveSeconds)
            try:
                await self.refresh(resolve=due)
            except Exception:  # one bad round must not end discovery
                log.exception("discovery of variant %s failed", self.variant.name)
            since_resolve = 0.0 if due else since_resolve
            pause = self.settings.heldProbeSeconds if self.held() > 0 else self.settings.probeSeconds
            slept = 0.0
            # Sleep in short steps so a request that starts being held speeds the loop up.
            while slept < pause and not (self.held() > 0 and slept >= self.settings.heldProbeSeconds):
                step = min(self.settings.heldProbeSeconds, pause - slept)
                await asyncio.sleep(step)
                slept += step
            since_resolve += slept
