"""Prometheus Operator objects: the workers' ServiceMonitor and the alert rules. Pure. With the request
gateway on, its ServiceMonitor and alerts too (render/gateway_monitoring.py).

The metric names are the worker's contract (worker/deepseek_worker/metrics.py, docs/worker-api.md);
the scrape relabels the pod labels `deepseek.ai/variant` and `deepseek.ai/deployment` into `variant`
and `deepseek_deployment`, and every alert matches on `namespace` + `deepseek_deployment` (or, for
kube-state-metrics series, on the variant Deployments' names) so two resources never share alerts.
`rule_groups()` is the plain `{"groups": [...]}` rule file that promtool and Prometheus load.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deepseek_operator.api import (
    AlertThresholds,
    DeepSeekDeploymentSpec,
    PrometheusRuleSpec,
    ResolvedVariant,
    resolve_variants,
)
from deepseek_operator.render.common import (
    LABEL_COMPONENT,
    LABEL_DEPLOYMENT,
    LABEL_VARIANT,
    METRICS_PORT_NAME,
    Capabilities,
    Owner,
    deployment_name,
    metadata,
    selector_labels,
)
from deepseek_operator.render.gateway_monitoring import gateway_alerts, render_gateway_service_monitor

API_VERSION = "monitoring.coreos.com/v1"
COMPONENT = "monitoring"
SCRAPED_COMPONENT = "worker"  # the component label of the variant Services (render/workload.py)
METRICS_PATH = "/metrics"
# Where each alert's runbook section lives unless spec.monitoring.prometheusRule.runbookBaseURL says otherwise.
DEFAULT_RUNBOOK_BASE_URL = "https://github.com/deepseek-ai/deepseek-operator/blob/main/docs/observability.md"
GROUP_BY = "namespace, deepseek_deployment, variant"
POD_BY = f"{GROUP_BY}, pod"
API_ROUTES = 'route=~"/v1/.*"'  # user traffic only: probes and scrapes would dilute the ratios
# The worker's metric names (the stable part of its contract); histograms as their base name.
# The alerts and the Grafana dashboard may use only these; tests enforce it.
WORKER_METRICS = frozenset(
    {
        "deepseek_worker_request_duration_seconds",
        "deepseek_worker_time_to_first_token_seconds",
        "deepseek_worker_inter_token_latency_seconds",
        "deepseek_worker_prompt_tokens_total",
        "deepseek_worker_completion_tokens_total",
        "deepseek_worker_requests_total",
        "deepseek_worker_queue_depth",
        "deepseek_worker_running_requests",
        "deepseek_worker_max_concurrent_requests",
        "deepseek_worker_prefix_cache_bytes",
        "deepseek_worker_prefix_cache_hits_total",
        "deepseek_worker_prefix_cache_lookups_total",
        "deepseek_worker_gpu_memory_used_bytes",
        "deepseek_worker_gpu_memory_total_bytes",
        "deepseek_worker_gpu_utilization_ratio",
        "deepseek_worker_model_loaded",
        "deepseek_worker_draining",
    }
)

# Engine runtimes (spec.runtime vllm | sglang, docs/runtimes.md): the edge's own gauges in proxy mode and
# the engines' series, which the edge re-exposes on its metrics port (the engine listens on loopback only).
# Names from vLLM 0.32's v1/metrics/loggers.py and SGLang's metrics collector; histograms as base names.
PROXY_METRICS = frozenset({"deepseek_worker_inflight_requests", "deepseek_worker_engine_metrics_up"})
ENGINE_METRICS = frozenset(
    {
        "vllm:kv_cache_usage_perc",
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "sglang:token_usage",
        "sglang:num_queue_reqs",
        "sglang:num_running_reqs",
        "sglang:time_to_first_token_seconds",
        "sglang:inter_token_latency_seconds",
    }
)
# One expression per signal over both engines (a pod runs one of them; `or` keeps whichever exists).
ENGINE_KV_USAGE = ("vllm:kv_cache_usage_perc", "sglang:token_usage")
ENGINE_WAITING = ("vllm:num_requests_waiting", "sglang:num_queue_reqs")


def _meta_label(label: str) -> str:
    """Prometheus' service-discovery name of a pod label (every non [a-zA-Z0-9_] char -> '_')."""
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in label)


def render_service_monitor(owner: Owner, spec: DeepSeekDeploymentSpec, caps: Capabilities) -> list[dict[str, Any]]:
    """One ServiceMonitor over every variant Service, and the gateway's when it is on; [] when
    disabled or the CRD is missing.

    It selects the variant Services only (they carry the `deepseek.ai/variant` label, the stable
    Service does not), so each pod is scraped exactly once. User labels from
    spec.monitoring.serviceMonitor.labels go on the metadata, where Prometheus' selector looks.
    """
    sm = spec.monitoring.service_monitor
    if not (sm.enabled and caps.service_monitor):
        return []
    relabelings = [
        {"sourceLabels": [_meta_label(LABEL_VARIANT)], "targetLabel": "variant", "action": "replace"},
        {
            "sourceLabels": [_meta_label(LABEL_DEPLOYMENT)],
            "targetLabel": "deepseek_deployment",
            "action": "replace",
        },
    ]
    return [
        {
            "apiVersion": API_VERSION,
            "kind": "ServiceMonitor",
            "metadata": metadata(owner, owner.name, component=COMPONENT, extra_labels=sm.labels),
            "spec": {
                "selector": {
                    "matchLabels": {**selector_labels(owner), LABEL_COMPONENT: SCRAPED_COMPONENT},
                    "matchExpressions": [{"key": LABEL_VARIANT, "operator": "Exists"}],
                },
                "namespaceSelector": {"matchNames": [owner.namespace]},
                "endpoints": [
                    {
                        "port": METRICS_PORT_NAME,
                        "path": METRICS_PATH,
                        "interval": sm.interval,
                        "relabelings": relabelings,
                    }
                ],
            },
        },
        *render_gateway_service_monitor(owner, spec, sm.interval, sm.labels),
    ]


def render_prometheus_rule(owner: Owner, spec: DeepSeekDeploymentSpec, caps: Capabilities,
                           variants: Sequence[ResolvedVariant] | None = None) -> list[dict[str, Any]]:
    """One PrometheusRule with rule_groups(); [] when disabled or the CRD is missing. `variants`:
    resolve_variants(spec), when the caller resolved them already (desired.py).

    It carries the ServiceMonitor's user labels too: Prometheus' ruleSelector usually matches
    the same `release: ...` label as its serviceMonitorSelector.
    """
    if not (spec.monitoring.prometheus_rule.enabled and caps.prometheus_rule):
        return []
    labels = spec.monitoring.service_monitor.labels
    return [
        {
            "apiVersion": API_VERSION,
            "kind": "PrometheusRule",
            "metadata": metadata(owner, owner.name, component=COMPONENT, extra_labels=labels),
            "spec": rule_groups(owner, spec, variants),
        }
    ]


def rule_groups(owner: Owner, spec: DeepSeekDeploymentSpec,
                variants: Sequence[ResolvedVariant] | None = None) -> dict[str, Any]:
    """The alerting rules as a Prometheus rule file body: {"groups": [{"name", "rules"}]}."""
    rules = _alerts(owner, spec, resolve_variants(spec) if variants is None else variants)
    return {"groups": [{"name": f"deepseek-worker.{owner.namespace}.{owner.name}", "rules": rules}]}


def duration(seconds: int) -> str:
    """Prometheus duration for a whole number of seconds, largest exact unit: 1800 -> '30m'."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _alert(
    name: str, expr: str, for_: str, severity: str, summary: str, description: str
) -> dict[str, Any]:
    """One alerting rule; _alerts() adds the user's labels and the runbook URL."""
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description},
    }


def _routed(alert: dict[str, Any], rule_spec: PrometheusRuleSpec) -> dict[str, Any]:
    """The alert with spec.monitoring.prometheusRule's labels (the CRD refuses `severity` among them)
    and its runbook URL."""
    base = rule_spec.runbook_base_url or DEFAULT_RUNBOOK_BASE_URL
    return {
        **alert,
        "labels": {**rule_spec.labels, **alert["labels"]},
        "annotations": {**alert["annotations"], "runbook_url": f"{base}#{alert['alert'].lower()}"},
    }


def _latency_limit_seconds(spec: DeepSeekDeploymentSpec) -> float:
    """DeepSeekWorkerHighLatencyP99's threshold: thresholds.p99LatencySeconds, else 80% of the request
    timeout (requests are about to time out there)."""
    chosen = spec.monitoring.prometheus_rule.thresholds.p99_latency_seconds
    return float(chosen) if chosen is not None else 0.8 * spec.serving.request_timeout_seconds


def _alerts(owner: Owner, spec: DeepSeekDeploymentSpec, variants: Sequence[ResolvedVariant]) -> list[dict[str, Any]]:
    # Names are DNS labels ([a-z0-9-]), so they need no escaping inside PromQL strings or regexes.
    sel = f'namespace="{owner.namespace}", deepseek_deployment="{owner.name}"'
    where = f"{owner.namespace}/{owner.name}"
    primary_dep = deployment_name(owner, variants[0].name)
    all_deps = "|".join(deployment_name(owner, v.name) for v in variants)
    canary_deps = "|".join(deployment_name(owner, v.name) for v in variants[1:])
    rule_spec = spec.monitoring.prometheus_rule
    alerts = [
        *_traffic_alerts(sel, where, _latency_limit_seconds(spec), rule_spec.thresholds),
        *_capacity_alerts(sel, where, rule_spec.thresholds),
        *_availability_alerts(sel, where, owner.namespace, primary_dep, canary_deps),
        *_rollout_alerts(owner.namespace, where, all_deps, spec.rollout.progress_deadline_seconds),
    ]
    if any(v.runtime.engine for v in variants):  # builtin-only rule files stay as they were
        alerts += _engine_alerts(sel, where, rule_spec.thresholds, spec.serving.max_batch_size)
    alerts += gateway_alerts(owner, spec)
    return [_routed(alert, rule_spec) for alert in alerts]


def _quantile(q: float, metric: str, matchers: str) -> str:
    return f"histogram_quantile({q}, sum by ({GROUP_BY}, le) (rate({metric}_bucket{{{matchers}}}[5m])))"


def _traffic_alerts(sel: str, where: str, latency_limit: float, limits: AlertThresholds) -> list[dict[str, Any]]:
    requests = "deepseek_worker_requests_total"
    latency = _quantile(0.99, "deepseek_worker_request_duration_seconds", f"{sel}, {API_ROUTES}")
    ttft = limits.p99_time_to_first_token_seconds
    errors = f'sum by ({GROUP_BY}) (rate({requests}{{{sel}, {API_ROUTES}, code=~"5.."}}[5m]))'
    total = f"sum by ({GROUP_BY}) (rate({requests}{{{sel}, {API_ROUTES}}}[5m]))"
    return [
        _alert(
            "DeepSeekWorkerHighLatencyP99",
            f"{latency} > {latency_limit:g}",
            "10m", "warning",
            f"{where}: P99 request latency over {latency_limit:g}s",
            "P99 latency of variant {{ $labels.variant }} is {{ $value | humanizeDuration }}, over "
            f"{latency_limit:g}s (thresholds.p99LatencySeconds; default 80% of serving.requestTimeoutSeconds, "
            "past which requests time out).",
        ),
        _alert(
            "DeepSeekWorkerSlowTimeToFirstToken",
            f"{_quantile(0.99, 'deepseek_worker_time_to_first_token_seconds', sel)} > {ttft}",
            "10m", "warning",
            f"{where}: P99 time to first token over {ttft}s",
            "Variant {{ $labels.variant }} takes {{ $value | humanizeDuration }} (P99) to the first "
            "token: requests queue behind a full batch; add replicas or lower maxNewTokens.",
        ),
        _alert(
            "DeepSeekWorkerHighErrorRatio",
            f"{errors} / {total} > {_ratio(limits.error_percent)}",
            "5m", "critical",
            f"{where}: more than {limits.error_percent}% of API requests fail with 5xx",
            "{{ $value | humanizePercentage }} of variant {{ $labels.variant }}'s API requests "
            "answer 5xx (503 = admission queue full, 500 = engine error).",
        ),
    ]


def _ratio(percent: int) -> str:
    """A percent as the ratio PromQL compares with: 5 -> '0.05'."""
    return f"{percent / 100:g}"


def _capacity_alerts(sel: str, where: str, limits: AlertThresholds) -> list[dict[str, Any]]:
    def gauge(name: str) -> str:
        return f"max by ({POD_BY}) (deepseek_worker_{name}{{{sel}}})"

    gpu_by = f"{POD_BY}, gpu"
    used = f"max by ({gpu_by}) (deepseek_worker_gpu_memory_used_bytes{{{sel}}})"
    # `> 0` drops zero-capacity series instead of dividing by zero.
    capacity = f"(max by ({gpu_by}) (deepseek_worker_gpu_memory_total_bytes{{{sel}}}) > 0)"
    return [
        _alert(
            "DeepSeekWorkerQueueSaturated",
            f"({gauge('queue_depth')} + {gauge('running_requests')}) / {gauge('max_concurrent_requests')} "
            f"> {_ratio(limits.queue_saturation_percent)}",
            "10m", "warning",
            f"{where}: worker admission queue above {limits.queue_saturation_percent}%",
            "Pod {{ $labels.pod }} ({{ $labels.variant }}) holds {{ $value | humanizePercentage }} of "
            "serving.maxConcurrentRequests; beyond 100% it answers 503. Add replicas.",
        ),
        _alert(
            "DeepSeekWorkerGpuMemoryHigh",
            f"{used} / {capacity} > {_ratio(limits.gpu_memory_percent)}",
            "15m", "warning",
            f"{where}: GPU memory above {limits.gpu_memory_percent}%",
            "GPU {{ $labels.gpu }} of pod {{ $labels.pod }} is {{ $value | humanizePercentage }} full: "
            "long prompts or large batches may hit CUDA out-of-memory. Lower maxBatchSize or maxModelLen.",
        ),
        _alert(
            "DeepSeekWorkerModelNotLoaded",
            f"{gauge('model_loaded')} == 0 unless {gauge('draining')} == 1",
            "15m", "warning",
            f"{where}: a worker has not loaded its model for 15 minutes",
            "Pod {{ $labels.pod }} ({{ $labels.variant }}) is up but its model is not loaded: check "
            "its logs for download, out-of-memory or quantization errors.",
        ),
    ]


def _availability_alerts(
    sel: str, where: str, namespace: str, primary_dep: str, canary_deps: str
) -> list[dict[str, Any]]:
    def no_ready(deployments: str) -> str:
        ksm = f'namespace="{namespace}", deployment=~"{deployments}"'
        by = "namespace, deployment"
        return (
            f"max by ({by}) (kube_deployment_status_replicas_available{{{ksm}}}) == 0 "
            f"and on ({by}) max by ({by}) (kube_deployment_spec_replicas{{{ksm}}}) > 0"
        )

    alerts = [
        _alert(
            "DeepSeekNoReadyReplicas", no_ready(primary_dep), "5m", "critical",
            f"{where}: the primary has no available worker pods",
            "Deployment {{ $labels.deployment }} wants replicas but none is available: the service is "
            "down. Check the pods' events (GPU scheduling, image pull) and logs.",
        ),
        _alert(
            "DeepSeekWorkerTargetDown", f"up{{{sel}}} == 0", "5m", "warning",
            f"{where}: Prometheus cannot scrape a worker",
            "Scraping {{ $labels.pod }} ({{ $labels.variant }}) fails: the pod is crashing or its "
            "metrics port is blocked (NetworkPolicy monitoringNamespaceSelector).",
        ),
    ]
    if canary_deps:
        alerts.insert(1, _alert(
            "DeepSeekCanaryNoReadyReplicas", no_ready(canary_deps), "15m", "warning",
            f"{where}: a canary has no available worker pods",
            "Canary Deployment {{ $labels.deployment }} has no available pods, so it receives no "
            "traffic (its weight went back to the primary). Users are not affected.",
        ))
    return alerts


def _rollout_alerts(namespace: str, where: str, deployments: str, deadline_seconds: int) -> list[dict[str, Any]]:
    ksm = f'namespace="{namespace}", deployment=~"{deployments}"'
    by = "namespace, deployment"
    return [
        _alert(
            "DeepSeekRolloutFailed",
            f'max by ({by}) (kube_deployment_status_condition{{{ksm}, condition="Progressing", status="false"}}) == 1',
            "1m", "warning",
            f"{where}: a worker rollout exceeded its progress deadline",
            "Deployment {{ $labels.deployment }} reports Progressing=False (ProgressDeadlineExceeded). "
            "With rollout.autoRollback the operator restores the last good image; check status.failedImage.",
        ),
        _alert(
            "DeepSeekRolloutStuck",
            f"max by ({by}) (kube_deployment_spec_replicas{{{ksm}}}) "
            f"!= max by ({by}) (kube_deployment_status_replicas_updated{{{ksm}}})",
            duration(deadline_seconds), "warning",
            f"{where}: a worker rollout has not finished within rollout.progressDeadlineSeconds",
            "Deployment {{ $labels.deployment }} has had pods on an old template for "
            f"{duration(deadline_seconds)}: new pods cannot start or become ready.",
        ),
    ]


def _either(names: tuple[str, ...], sel: str) -> str:
    """max per pod of whichever engine's series exists."""
    return " or ".join(f"max by ({POD_BY}) ({name}{{{sel}}})" for name in names)


def _engine_alerts(sel: str, where: str, limits: AlertThresholds, batch: int) -> list[dict[str, Any]]:
    """Alerts on pods of spec.runtime vllm | sglang: the edge's admission (the builtin queue gauges do not
    exist there), the engine's KV cache and waiting queue, and whether its metrics answer at all."""
    def gauge(name: str) -> str:
        return f"max by ({POD_BY}) (deepseek_worker_{name}{{{sel}}})"

    return [
        _alert(
            "DeepSeekEdgeQueueSaturated",
            f"{gauge('inflight_requests')} / {gauge('max_concurrent_requests')} "
            f"> {_ratio(limits.queue_saturation_percent)}",
            "10m", "warning",
            f"{where}: the API edge in front of the engine above {limits.queue_saturation_percent}% of its cap",
            "Pod {{ $labels.pod }} ({{ $labels.variant }}) holds {{ $value | humanizePercentage }} of "
            "serving.maxConcurrentRequests; beyond 100% it answers 503. Add replicas.",
        ),
        _alert(
            "DeepSeekEngineKvCacheFull",
            f"({_either(ENGINE_KV_USAGE, sel)}) > {_ratio(limits.gpu_memory_percent)}",
            "15m", "warning",
            f"{where}: the engine's KV cache above {limits.gpu_memory_percent}%",
            "The KV cache of pod {{ $labels.pod }} ({{ $labels.variant }}) is {{ $value | humanizePercentage }} "
            "full (vllm:kv_cache_usage_perc / sglang:token_usage): requests are preempted and recomputed. Add "
            "replicas, lower model.maxModelLen or raise serving.gpuMemoryUtilization.",
        ),
        _alert(
            "DeepSeekEngineQueueBacklog",
            f"({_either(ENGINE_WAITING, sel)}) > {batch}",
            "10m", "warning",
            f"{where}: more than serving.maxBatchSize ({batch}) requests waiting in the engine",
            "Pod {{ $labels.pod }} ({{ $labels.variant }}) has {{ $value | humanize }} requests waiting for a "
            "batch slot (vllm:num_requests_waiting / sglang:num_queue_reqs): time to first token grows. Add replicas.",
        ),
        _alert(
            "DeepSeekEngineMetricsDown",
            f"{gauge('engine_metrics_up')} == 0",
            "15m", "warning",
            f"{where}: an engine has not answered its /metrics for 15 minutes",
            "The engine container of pod {{ $labels.pod }} ({{ $labels.variant }}) does not serve /metrics "
            "on 127.0.0.1: it is loading, restarting or wedged. Check `kubectl logs <pod> -c engine`.",
        ),
    ]
