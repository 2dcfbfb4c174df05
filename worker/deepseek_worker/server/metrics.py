"""Prometheus metrics (names are a contract with the alert rules and dashboard: keep them stable).

Each app gets its own CollectorRegistry, so tests can build many apps in one process. Engine
gauges are read at scrape time from `engine.stats()` by a custom collector rather than pushed, so
they are never stale. GPU gauges appear only when torch is already loaded and CUDA is available
(importing torch just for /metrics would cost seconds and memory on CPU-only test runs).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..types import EngineProtocol
from .lifecycle import WorkerState

log = logging.getLogger("deepseek_worker.metrics")

PREFIX = "deepseek_worker_"
ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/models/{id}",
        "/chat/completions",
        "/completions",
        "/models",
        "/models/{id}",
        "/v1/embeddings",  # proxy mode only (server/proxy.py)
        "/embeddings",
        "/health",
        "/auth/v1/token",
        "/health/live",
        "/health/ready",
        "/metrics",
    }
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12)


def route_label(path: str) -> str:
    """The `route` label: a path of ROUTES, a model id folded into `{id}`, else "other" (bounded values)."""
    for models in ("/v1/models/", "/models/"):
        if path.startswith(models):
            return models + "{id}"
    return path if path in ROUTES else "other"


class EngineCollector(Collector):
    """Scrape-time gauges from the engine, the worker state and (when present) the GPU."""

    def __init__(self, engine: EngineProtocol, state: WorkerState, max_concurrent: int) -> None:
        self.engine = engine
        self.state = state
        self.max_concurrent = max_concurrent

    def collect(self) -> Iterator[Metric]:
        stats = self.engine.stats()
        yield _gauge("queue_depth", "Requests waiting for a slot in the running batch.", stats.waiting)
        yield _gauge("running_requests", "Requests in the engine's running batch.", stats.running)
        yield _gauge("inflight_requests", "API requests admitted and not yet finished.", self.state.inflight)
        yield _gauge("max_concurrent_requests", "Admission cap (running + queued).", self.max_concurrent)
        yield _gauge("prefix_cache_bytes", "Bytes held by the prefix (KV) cache.", stats.prefix_cache_bytes)
        yield _gauge(
            "prefix_cache_capacity_bytes", "Prefix cache capacity in bytes.", stats.prefix_cache_capacity_bytes
        )
        yield _counter("prefix_cache_hits", "Prefix cache lookups that reused cached tokens.", stats.prefix_cache_hits)
        yield _counter("prefix_cache_lookups", "Prefix cache lookups.", stats.prefix_cache_lookups)
        ratio = stats.prefix_cache_hits / stats.prefix_cache_lookups if stats.prefix_cache_lookups else 0.0
        yield _gauge("prefix_cache_hit_ratio", "Lifetime prefix cache hits / lookups.", ratio)
        yield _gauge("engine_steps", "Scheduler steps run since start.", stats.steps)
        yield _gauge("model_loaded", "1 once the model is loaded and serving.", 1 if self.engine.ready else 0)
        # Measured after loading (engine/loading.py), to check the operator's GPU-fit plan against;
        # engines without a loaded model (test fakes, still loading) report 0.
        loaded = getattr(self.engine, "loaded", None)
        yield _gauge("model_weight_bytes", "Bytes of the loaded weights (parameters, buffers, quantization "
                     "states), all devices.", getattr(loaded, "weight_bytes", 0))
        yield _gauge("kv_cache_bytes_per_token", "KV-cache bytes one token adds, all layers.",
                     getattr(loaded, "kv_cache_bytes_per_token", 0))
        yield _gauge("draining", "1 while draining after SIGTERM.", 1 if self.state.draining else 0)
        yield from _gpu_metrics()


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def _gpu_metrics() -> Iterator[Metric]:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return
    used = GaugeMetricFamily(PREFIX + "gpu_memory_used_bytes", "GPU memory in use (device-wide).", labels=["gpu"])
    total = GaugeMetricFamily(PREFIX + "gpu_memory_total_bytes", "GPU memory capacity.", labels=["gpu"])
    util = GaugeMetricFamily(PREFIX + "gpu_utilization_ratio", "GPU busy fraction (0..1, via NVML).", labels=["gpu"])
    for index in range(torch.cuda.device_count()):
        free, capacity = torch.cuda.mem_get_info(index)
        used.add_metric([str(index)], capacity - free)
        total.add_metric([str(index)], capacity)
        # NVML missing (no pynvml/driver lib): leave the utilization series out.
        with contextlib.suppress(ModuleNotFoundError, RuntimeError, OSError):
            util.add_metric([str(index)], torch.cuda.utilization(index) / 100.0)
    yield used
    yield total
    yield util


class Metrics:
    """All worker metrics on one registry, plus helpers the routes call. `gauges` reads the scrape-time
    gauges: EngineCollector for our engine, proxy.UpstreamCollector in proxy mode."""

    def __init__(self, gauges: Collector) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_duration = Histogram(
            PREFIX + "request_duration_seconds",
            "HTTP request latency (to the last byte for streams).",
            ["route", "code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            PREFIX + "requests", "HTTP requests by route and status.", ["route", "code"], registry=r
        )
        self.ttft = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "Request arrival to first generated token.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            PREFIX + "inter_token_latency_seconds", "Time between generated tokens.", buckets=TOKEN_BUCKETS, registry=r
        )
        self.prompt_tokens = Counter(PREFIX + "prompt_tokens", "Prompt tokens processed.", registry=r)
        self.completion_tokens = Counter(PREFIX + "completion_tokens", "Completion tokens generated.", registry=r)
        r.register(gauges)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class TokenTimer:
    """Per-request TTFT/ITL bookkeeping, fed the engine's cumulative completion token counts.
    `finish` counts the tokens, and reports them to `on_usage(prompt, completion)` when given
    (the caller's meter: metering.py), the same numbers as the response's `usage`."""

    def __init__(self, metrics: Metrics, started: float,
                 on_usage: Callable[[int, int], None] | None = None) -> None:
        self.metrics = metrics
        self.on_usage = on_usage
        self.last: float | None = None
        self.started = started
        self.tokens = 0

    def observe(self, completion_tokens: int) -> None:
        new = completion_tokens - self.tokens
        if new <= 0:
            return
        now = time.perf_counter()
        if self.last is None:
            self.metrics.ttft.observe(now - self.started)
            new -= 1  # the first token's latency is TTFT, not ITL
        else:
            gap = (now - self.last) / new  # a chunk may carry several tokens: spread the gap
            for _ in range(new):
                self.metrics.itl.observe(gap)
        self.last = now
        self.tokens = completion_tokens

    def finish(self, prompt_tokens: int) -> None:
        self.metrics.prompt_tokens.inc(prompt_tokens)
        self.metrics.completion_tokens.inc(self.tokens)
        if self.on_usage is not None:
            self.on_usage(prompt_tokens, self.tokens)


class MetricsMiddleware:
    """Outermost ASGI middleware: latency and count per route and status, refusals included."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_label(str(scope["path"]))
        started = time.perf_counter()
        status = 500  # if the app dies before sending headers, the server answers 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            code = str(status)
            self.metrics.request_duration.labels(route, code).observe(time.perf_counter() - started)
            self.metrics.requests.labels(route, code).inc()
