"""Each autoscaled variant's autoscaler (`autoscaling` on spec or a variant; docs/autoscaling.md). Pure.

Contract: `render_autoscalers(owner, spec, caps, variants)` returns, per variant with `autoscaling`, one
KEDA `ScaledObject` (keda.sh/v1alpha1) or one `HorizontalPodAutoscaler` (autoscaling/v2), named like
the variant's Deployment and aimed at it (its LeaderWorkerSet for multi-node workers); nothing for a
variant whose autoscaler cannot work (`choose` says why; `autoscaling_conditions` reports it as
AutoscalingReady False). The worker renderers stop writing such a variant's replicas
(workload.replicas_field): the autoscaler owns them.

Which one (`choose`):
- a ScaledObject where KEDA's API is served and KEDA can read the metric: from the gateway's
  `/scaling/<variant>` (spec.gateway enabled; queueDepth and running) or from Prometheus
  (spec.monitoring.prometheusURL; every metric). With the gateway, a `held` trigger activates the
  variant from zero on the first held request (and asks for one pod); the metric's trigger sizes it;
- else an HPA on Pods metrics (served by a metrics adapter, e.g. prometheus-adapter, under the series'
  names), when minReplicas >= 1 (an HPA cannot scale from zero);
- else nothing: KEDANotInstalled (minReplicas 0 without KEDA) or MetricsSourceMissing (KEDA, but the
  metric is kvCacheUsage and no prometheusURL is set).

scaleDownDelaySeconds is KEDA's cooldownPeriod (the wait before the last pod goes) and the HPA's
scale-down stabilization window (the wait before any pod goes), on both kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from deepseek_operator.api import Autoscaling, DeepSeekDeploymentSpec, ResolvedVariant, resolve_variants
from deepseek_operator.render import multinode
from deepseek_operator.render.common import Capabilities, Owner, deployment_name, metadata
from deepseek_operator.render.gateway import gateway_url
from deepseek_operator.runtimes import SERIES

COMPONENT = "autoscaler"
KEDA_API_VERSION = "keda.sh/v1alpha1"
HPA_API_VERSION = "autoscaling/v2"
# The held trigger asks for ceil(held / this) pods: one for any number of held requests; the metric's
# trigger asks for more once pods serve.
HELD_TARGET = 1000
ZERO_POLLING_SECONDS = 5  # scale-from-zero: KEDA sees a held request within this
POLLING_SECONDS = 15
# The gateway's /scaling fields (worker/deepseek_worker/gateway/app.py): demand = held + in flight.
GATEWAY_VALUE = {"queueDepth": "demand", "running": "inflight"}
Kind = Literal["ScaledObject", "HorizontalPodAutoscaler"]


@dataclass(frozen=True)
class Choice:
    """A variant's autoscaler: `kind`, or None with the reason and message of AutoscalingReady False."""

    kind: Kind | None
    reason: str = ""
    message: str = ""


def choose(spec: DeepSeekDeploymentSpec, variant: ResolvedVariant, caps: Capabilities) -> Choice:
    """The autoscaler `variant` gets (module docstring); raises ValueError without `autoscaling`."""
    a = variant.autoscaling
    if a is None:
        raise ValueError(f"{variant.name} has no autoscaling")
    from_gateway = spec.gateway_enabled and a.metric in GATEWAY_VALUE
    if caps.keda and (from_gateway or spec.monitoring.prometheus_url):
        return Choice("ScaledObject")
    if a.min_replicas >= 1:
        return Choice("HorizontalPodAutoscaler")
    if not caps.keda:
        return Choice(None, "KEDANotInstalled", f"{variant.name}: minReplicas 0 needs KEDA (keda.sh/v1alpha1 "
                      "ScaledObject is not served; an HPA cannot scale from zero): install KEDA or set minReplicas 1")
    return Choice(None, "MetricsSourceMissing", f"{variant.name}: KEDA reads {a.metric} from Prometheus: set "
                  "spec.monitoring.prometheusURL (or minReplicas 1 for an HPA on pods metrics)")


def render_autoscalers(owner: Owner, spec: DeepSeekDeploymentSpec, caps: Capabilities,
                       variants: Sequence[ResolvedVariant] | None = None) -> list[dict[str, Any]]:
    """One ScaledObject or HPA per autoscaled variant that can have one (module docstring), in order."""
    out = []
    for variant in resolve_variants(spec) if variants is None else variants:
        if variant.autoscaling is None:
            continue
        kind = choose(spec, variant, caps).kind
        if kind == "ScaledObject":
            out.append(render_scaled_object(owner, spec, variant))
        elif kind == "HorizontalPodAutoscaler":
            out.append(render_hpa(owner, spec, variant))
    return out


def _target_ref(owner: Owner, spec: DeepSeekDeploymentSpec, variant: str) -> dict[str, str]:
    if multinode.spans_nodes(spec):
        return {"apiVersion": multinode.API_VERSION, "kind": multinode.KIND, "name": multinode.lws_name(owner, variant)}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(owner, variant)}


def _behavior(a: Autoscaling) -> dict[str, Any]:
    return {"scaleDown": {"stabilizationWindowSeconds": a.scale_down_delay_seconds}}


def _selector(owner: Owner, variant: str) -> str:
    return f'namespace="{owner.namespace}",deepseek_deployment="{owner.name}",variant="{variant}"'


def prometheus_query(owner: Owner, variant: ResolvedVariant) -> str:
    """The PromQL KEDA's prometheus trigger reads: the variant's total for queueDepth and running (KEDA
    divides by the pods), the pods' average percent for kvCacheUsage."""
    a = variant.autoscaling
    assert a is not None
    series = SERIES[variant.runtime.name][a.metric]
    if a.metric == "kvCacheUsage":
        return f"100 * avg({series}{{{_selector(owner, variant.name)}}})"
    return f"sum({series}{{{_selector(owner, variant.name)}}})"


def _triggers(owner: Owner, spec: DeepSeekDeploymentSpec, variant: ResolvedVariant) -> list[dict[str, Any]]:
    a = variant.autoscaling
    assert a is not None
    url = f"{gateway_url(owner)}/scaling/{variant.name}"
    triggers = []
    if spec.gateway_enabled:
        # `wanted`: held for the variant, or drawn for it and served by a ready one in the last minute
        # (a canary at zero behind a ready primary): either wakes it.
        triggers.append({"type": "metrics-api", "name": "held", "metricType": "AverageValue",
                         "metadata": {"url": url, "format": "json", "valueLocation": "wanted",
                                      "targetValue": str(HELD_TARGET), "activationTargetValue": "0"}})
    if spec.gateway_enabled and a.metric in GATEWAY_VALUE:
        triggers.append({"type": "metrics-api", "name": "load", "metricType": "AverageValue",
                         "metadata": {"url": url, "format": "json", "valueLocation": GATEWAY_VALUE[a.metric],
                                      "targetValue": str(a.target), "activationTargetValue": "0"}})
    else:
        per_pod = a.metric != "kvCacheUsage"  # a total KEDA divides by the pods, or an average already
        triggers.append({"type": "prometheus", "name": "load", "metricType": "AverageValue" if per_pod else "Value",
                         "metadata": {"serverAddress": spec.monitoring.prometheus_url or "",
                                      "query": prometheus_query(owner, variant), "threshold": str(a.target),
                                      "activationThreshold": "0"}})
    return triggers


def render_scaled_object(owner: Owner, spec: DeepSeekDeploymentSpec, variant: ResolvedVariant) -> dict[str, Any]:
    """The variant's KEDA ScaledObject. minReplicas 0: minReplicaCount and idleReplicaCount 0 (KEDA scales
    to zero once every trigger has been inactive for cooldownPeriod)."""
    a = variant.autoscaling
    assert a is not None
    body: dict[str, Any] = {
        "scaleTargetRef": _target_ref(owner, spec, variant.name),
        "minReplicaCount": a.min_replicas,
        **({"idleReplicaCount": 0} if a.min_replicas == 0 else {}),
        "maxReplicaCount": a.max_replicas,
        "cooldownPeriod": a.scale_down_delay_seconds,
        "pollingInterval": ZERO_POLLING_SECONDS if a.min_replicas == 0 else POLLING_SECONDS,
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(a)}},
        "triggers": _triggers(owner, spec, variant),
    }
    return {"apiVersion": KEDA_API_VERSION, "kind": "ScaledObject",
            "metadata": metadata(owner, deployment_name(owner, variant.name), variant.name, component=COMPONENT),
            "spec": body}


def hpa_target(variant: ResolvedVariant) -> str:
    """The HPA's averageValue: requests per pod, or the engines' 0..1 KV usage as a quantity (80 -> 800m)."""
    a = variant.autoscaling
    assert a is not None
    return f"{a.target * 10}m" if a.metric == "kvCacheUsage" else str(a.target)


def render_hpa(owner: Owner, spec: DeepSeekDeploymentSpec, variant: ResolvedVariant) -> dict[str, Any]:
    """The variant's HPA on the Pods metric named like the series (a metrics adapter serves it)."""
    a = variant.autoscaling
    assert a is not None
    metric = {"type": "Pods", "pods": {"metric": {"name": SERIES[variant.runtime.name][a.metric]},
                                       "target": {"type": "AverageValue", "averageValue": hpa_target(variant)}}}
    return {"apiVersion": HPA_API_VERSION, "kind": "HorizontalPodAutoscaler",
            "metadata": metadata(owner, deployment_name(owner, variant.name), variant.name, component=COMPONENT),
            "spec": {"scaleTargetRef": _target_ref(owner, spec, variant.name), "minReplicas": a.min_replicas,
                     "maxReplicas": a.max_replicas, "metrics": [metric], "behavior": _behavior(a)}}


def autoscaling_status(spec: DeepSeekDeploymentSpec, caps: Capabilities, variant: ResolvedVariant,
                       desired: int, current: int) -> dict[str, Any]:
    """status.variants[].autoscaling of an autoscaled variant (api.AutoscalingStatus, wire names);
    `desired`: the workload's replicas (the autoscaler's count), `current`: its pods."""
    a = variant.autoscaling
    assert a is not None
    return {"autoscaler": choose(spec, variant, caps).kind or "", "metric": a.metric, "target": a.target,
            "minReplicas": a.min_replicas, "maxReplicas": a.max_replicas, "desiredReplicas": desired,
            "currentReplicas": current}


def autoscaling_conditions(spec: DeepSeekDeploymentSpec, caps: Capabilities,
                           variants: Sequence[ResolvedVariant] | None = None) -> list[tuple[str, bool, str, str]]:
    """AutoscalingReady as (type, ok, reason, message): omitted when no variant autoscales; False naming
    each variant that gets no autoscaler, else True naming what each got."""
    scaled = [v for v in (resolve_variants(spec) if variants is None else variants) if v.autoscaling is not None]
    if not scaled:
        return []
    choices = {v.name: choose(spec, v, caps) for v in scaled}
    blocked = [c for c in choices.values() if c.kind is None]
    if blocked:
        return [("AutoscalingReady", False, blocked[0].reason, "; ".join(c.message for c in blocked))]
    kinds = {c.kind for c in choices.values()}
    reason = "KEDA" if kinds == {"ScaledObject"} else "HPA" if kinds == {"HorizontalPodAutoscaler"} else "KEDAAndHPA"
    parts = []
    for v in scaled:
        a = v.autoscaling
        assert a is not None
        parts.append(f"{v.name}: {choices[v.name].kind} on {a.metric} (target {a.target}, "
                     f"{a.min_replicas}-{a.max_replicas} pods)")
    return [("AutoscalingReady", True, reason, "; ".join(parts))]
