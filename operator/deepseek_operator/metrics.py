"""The operator's own Prometheus metrics (docs/observability.md lists them).

They live on a dedicated registry (with the process/platform/GC collectors added) so tests and
embedded uses (the sandbox runs an operator in-process with a worker) never collide with other
code's metrics on the global default registry. main.py serves it with `start_metrics_server()`.

Label values are checked against closed sets: a typo in a caller must fail loudly in tests rather
than mint a new time series in production.
"""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

PREFIX = "deepseek_operator_"
RESULTS = frozenset({"success", "error", "invalid", "waiting"})
ACTIONS = frozenset({"created", "patched", "deleted", "unchanged"})
RESYNC_RESULTS = frozenset({"reconciled", "skipped_invalid"})
# A reconcile is a handful of API round trips; a minute means the API server is struggling.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REGISTRY = CollectorRegistry()
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

RECONCILES = Counter(
    PREFIX + "reconciles",
    "Reconciles by result: success, error (API or unexpected), invalid (bad spec), waiting (retry later).",
    ["result"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    PREFIX + "reconcile_duration_seconds",
    "Wall time of one reconcile, any result.",
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
CHILDREN_APPLIED = Counter(
    PREFIX + "children_applied",
    "Child objects the reconcile applied, by kind and action (created, patched, deleted, unchanged).",
    ["kind", "action"],
    registry=REGISTRY,
)
API_ERRORS = Counter(
    PREFIX + "api_errors",
    "Kubernetes API calls that failed, by verb and HTTP status code (0: no response).",
    ["verb", "code"],
    registry=REGISTRY,
)
RESYNCS = Counter(
    PREFIX + "resyncs",
    "Resync timer ticks by result: reconciled, or skipped_invalid (spec already reported invalid).",
    ["result"],
    registry=REGISTRY,
)
COALESCED = Counter(
    PREFIX + "triggers_coalesced",
    "Triggers (child events, timers) dropped because a reconcile of the same resource was already queued.",
    registry=REGISTRY,
)
RETRIES = Counter(
    PREFIX + "retries_scheduled",
    "Reconcile retries scheduled after an API error, by HTTP status code of the error (0: no response).",
    ["code"],
    registry=REGISTRY,
)
RETRY_DELAY = Histogram(
    PREFIX + "retry_delay_seconds",
    "Delay of each scheduled retry (Retry-After when the API sent one, else the backoff).",
    buckets=(1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 300.0),
    registry=REGISTRY,
)
INFORMER_LISTS = Counter(
    PREFIX + "informer_lists",
    "Full lists by the watch-fed caches, by resource: one at startup each, then one per expired watch "
    "or lost connection (a steady rise means the watches keep failing).",
    ["resource"],
    registry=REGISTRY,
)
MANAGED_DEPLOYMENTS = Gauge(
    PREFIX + "managed_deployments",
    "DeepSeekDeployment resources this operator currently manages.",
    registry=REGISTRY,
)


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:
    """Serve REGISTRY at http://addr:port/metrics from a daemon thread (returns at once)."""
    start_http_server(port, addr=addr, registry=REGISTRY)


def record_reconcile(result: str, duration_seconds: float) -> None:
    """Count one finished reconcile and observe its duration. result must be one of RESULTS."""
    _check("result", result, RESULTS)
    RECONCILES.labels(result).inc()
    RECONCILE_DURATION.observe(max(duration_seconds, 0.0))


def record_child(kind: str, action: str) -> None:
    """Count one child object applied by the reconcile. action must be one of ACTIONS."""
    if not kind:
        raise ValueError("kind must not be empty")
    _check("action", action, ACTIONS)
    CHILDREN_APPLIED.labels(kind, action).inc()


def record_api_error(verb: str, code: int) -> None:
    """Count one failed API call: verb (get, list, patch, ...) and HTTP status, 0 without one."""
    if not verb:
        raise ValueError("verb must not be empty")
    API_ERRORS.labels(verb.lower(), str(int(code))).inc()


def record_retry(code: int, delay_seconds: float) -> None:
    """Count one scheduled retry and observe its delay."""
    RETRIES.labels(str(code)).inc()
    RETRY_DELAY.observe(max(delay_seconds, 0.0))


def record_resync(result: str) -> None:
    """Count one resync timer tick: reconciled or skipped_invalid."""
    _check("result", result, RESYNC_RESULTS)
    RESYNCS.labels(result).inc()


def record_coalesced() -> None:
    """Count one trigger folded into an already queued reconcile."""
    COALESCED.inc()


def record_informer_list(resource: str) -> None:
    """Count one complete list by an informer of `resource` (a plural)."""
    if not resource:
        raise ValueError("resource must not be empty")
    INFORMER_LISTS.labels(resource).inc()


def set_managed_deployments(count: int) -> None:
    """Set how many DeepSeekDeployments the operator manages now (never negative)."""
    if count < 0:
        raise ValueError(f"managed deployments cannot be negative: {count}")
    MANAGED_DEPLOYMENTS.set(count)


def _check(label: str, value: str, allowed: frozenset[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{label} must be one of {sorted(allowed)}, got {value!r}")
