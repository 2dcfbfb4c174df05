"""Prometheus Operator objects for the request gateway (spec.gateway; render/gateway.py): its
ServiceMonitor and its alerts. Pure; render/monitoring.py adds them to the workers' when the gateway
is on.

The gateway's series carry `deepseek_gateway` (its pods' `deepseek.ai/gateway` label), never
`deepseek_deployment`: the gateway's edge exports some of the worker's names too
(deepseek_worker_requests_total, ...), and the worker alerts, which match on `deepseek_deployment`,
must not count the gateway as one more worker. Every gateway alert matches on `namespace` +
`deepseek_gateway`. The metric names are the gateway's contract (worker/deepseek_worker/gateway/
metrics.py, docs/observability.md).
"""

from __future__ import annotations

from typing import Any

from deepseek_operator.api import DeepSeekDeploymentSpec
from deepseek_operator.render.common import (
    LABEL_COMPONENT,
    LABEL_GATEWAY,
    METRICS_PORT_NAME,
    Owner,
    metadata,
    selector_labels,
)
from deepseek_operator.render.gateway import COMPONENT as GATEWAY_COMPONENT
from deepseek_operator.render.gateway import gateway_name

# The gateway's own series (histograms and counters as their base name, as the alerts use them).
GATEWAY_METRICS = frozenset(
    {
        "deepseek_gateway_held_requests",
        "deepseek_gateway_inflight_requests",
        "deepseek_gateway_ready_backends",
        "deepseek_gateway_backend_queue",
        "deepseek_gateway_fallback_share",
        "deepseek_gateway_requests_served_total",
        "deepseek_gateway_cold_start_seconds",
        "deepseek_gateway_hold_refused_total",
        "deepseek_gateway_hold_expired_total",
        "deepseek_gateway_backend_retries_total",
    }
)
GROUP_BY = "namespace, deepseek_gateway, variant"
# Prometheus' service-discovery name of the gateway pods' label (every non [a-zA-Z0-9_] char -> '_').
GATEWAY_POD_LABEL = "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in LABEL_GATEWAY)
NEAR_CAP = 0.9  # DeepSeekGatewayFallbackAtCap fires from this share of fallback.maxShare


def render_gateway_service_monitor(owner: Owner, spec: DeepSeekDeploymentSpec, interval: str,
                                   labels: dict[str, str]) -> list[dict[str, Any]]:
    """The gateway Service's ServiceMonitor (named as the gateway), or [] while the gateway is off.
    `interval` and `labels`: spec.monitoring.serviceMonitor's, as the workers' ServiceMonitor has them."""
    if not spec.gateway_enabled:
        return []
    relabel = {"sourceLabels": [GATEWAY_POD_LABEL], "targetLabel": "deepseek_gateway", "action": "replace"}
    return [{
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(owner, gateway_name(owner), component="monitoring", extra_labels=labels),
        "spec": {
            "selector": {"matchLabels": {**selector_labels(owner), LABEL_COMPONENT: GATEWAY_COMPONENT}},
            "namespaceSelector": {"matchNames": [owner.namespace]},
            "endpoints": [{"port": METRICS_PORT_NAME, "path": "/metrics", "interval": interval,
                           "relabelings": [relabel]}],
        },
    }]


def gateway_alerts(owner: Owner, spec: DeepSeekDeploymentSpec) -> list[dict[str, Any]]:
    """The gateway's alerting rules (unrouted: render/monitoring.py adds the spec's labels and runbook
    links); [] while the gateway is off. DeepSeekGatewayFallbackAtCap only with spec.fallback."""
    if spec.gateway is None or not spec.gateway_enabled:
        return []
    sel = f'namespace="{owner.namespace}", deepseek_gateway="{owner.name}"'
    where = f"{owner.namespace}/{owner.name}"
    timeout = spec.gateway.hold_timeout_seconds
    alerts = [
        _alert("DeepSeekGatewayHeldRequestsExpired",
               f"sum by ({GROUP_BY}) (increase(deepseek_gateway_hold_expired_total{{{sel}}}[10m])) > 0",
               "0m", "warning", f"{where}: held requests expired before a worker was ready",
               "{{ $value | humanize }} requests held for variant {{ $labels.variant }} in the last 10 minutes "
               f"waited gateway.holdTimeoutSeconds ({timeout}s) and got 504: its scale-up takes longer (see "
               "status.variants[].coldStart and the variant's pods' events), or raise holdTimeoutSeconds."),
        _alert("DeepSeekGatewayHoldQueueFull",
               f"sum by ({GROUP_BY}) (increase(deepseek_gateway_hold_refused_total{{{sel}}}[10m])) > 0",
               "0m", "warning", f"{where}: the gateway's hold queue is full",
               "{{ $value | humanize }} requests for variant {{ $labels.variant }} in the last 10 minutes got 429: "
               f"gateway.maxHeldRequests ({spec.gateway.max_held_requests}) were already waiting for a worker. "
               "Raise it, keep autoscaling.minReplicas above 0, or allow ColdStart spill-over (spec.fallback)."),
        _alert("DeepSeekGatewayTargetDown", f"up{{{sel}}} == 0", "5m", "warning",
               f"{where}: Prometheus cannot scrape a gateway pod",
               "Scraping gateway pod {{ $labels.pod }} fails: it is crashing or its metrics port is blocked "
               "(NetworkPolicy monitoringNamespaceSelector)."),
    ]
    if spec.fallback is not None:
        limit = spec.fallback.max_share
        alerts.append(_alert(
            "DeepSeekGatewayFallbackAtCap",
            f"max by (namespace, deepseek_gateway) (deepseek_gateway_fallback_share{{{sel}}}) >= {limit * NEAR_CAP:g}",
            "15m", "warning", f"{where}: the hosted API serves close to fallback.maxShare",
            "{{ $value | humanizePercentage }} of the routed requests went to the hosted API over the gateway's "
            f"window, at {NEAR_CAP:.0%} or more of fallback.maxShare ({limit:g}): the local workers do not keep "
            "up, and past the cap requests are held or refused. Raise autoscaling.maxReplicas or check the "
            "variants' readiness (status.gateway.fallbackShare)."))
    return alerts


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description}}
