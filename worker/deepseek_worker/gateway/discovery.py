"""Finding and checking backends: DNS resolution of each variant's headless Service, /health/ready
and the queue gauge of each backend, on a loop per variant (faster while a request is held).

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


async def probe(backend: Backend, queue_metric: str | None) -> tuple[bool, float]:
    """(ready, queue): /health/ready answered 200, and the summed `queue_metric` samples (0 if absent)."""
    client = backend.upstream.client
    try:
        health = await client.get("/health/ready", timeout=PROBE_TIMEOUT_SECONDS)
        if health.status_code != 200:
            return False, 0.0
        if queue_metric is None:
            return True, 0.0
        text = (await client.get("/metrics", timeout=PROBE_TIMEOUT_SECONDS)).text
    except httpx.HTTPError:
        return False, 0.0
    return True, queue_depth(text, queue_metric)


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

    async def refresh(self, resolve: bool) -> None:
        """One round: re-resolve (when `resolve`), then probe every backend concurrently."""
        if resolve:
            service = self.variant.service
            addresses = await self.resolve(service.host, service.port) if service is not None else []
            await self.pool.update(backend_urls(self.variant, addresses))
        backends = list(self.pool.backends.values())
        results = await asyncio.gather(*(probe(b, self.settings.queueMetric) for b in backends))
        for backend, (ready, queue) in zip(backends, results, strict=True):
            backend.queue = queue
            self.pool.set_ready(backend, ready)

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
