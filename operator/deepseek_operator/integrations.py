"""Optional cluster APIs: detect them, and say in a condition what is missing (KServe IsCrdAvailable).

A missing Gateway API, IngressClass or Prometheus Operator never fails the reconcile: the workers
and Services still roll out, the renderers skip what cannot be created, and IngressReady /
MonitoringReady carry the reason. NetworkPolicyReady says whom the worker NetworkPolicy admits, and
is False when the ingress or the ServiceMonitor the spec asks for would be blocked by it.
MultiNodeReady (only while a pod's GPUs exceed a node: render/multinode.py) says the group's shape, or
that the LeaderWorkerSet API is missing; then no workload is created at all.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from deepseek_operator.api import DeepSeekDeploymentSpec, ResolvedVariant
from deepseek_operator.k8s import KINDS, ApiError, K8s
from deepseek_operator.render import multinode
from deepseek_operator.render.common import Capabilities
from deepseek_operator.render.network_policy import hub_egress

INGRESS_CLASS = KINDS[("networking.k8s.io/v1", "IngressClass")]
# Discovery answers change only when someone installs CRDs; re-ask at most this often.
CACHE_SECONDS = 30.0


async def detect_capabilities(api: K8s) -> Capabilities:
    """Which optional APIs and IngressClasses the cluster serves; one answer per client per CACHE_SECONDS."""
    hit = api.cache.get("capabilities")
    if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
        cached: Capabilities = hit[1]
        return cached
    monitoring = await api.served("monitoring.coreos.com/v1")
    gateway = await api.served("gateway.networking.k8s.io/v1")
    lws = await api.served("leaderworkerset.x-k8s.io/v1")
    keda = await api.served("keda.sh/v1alpha1")
    classes = await _ingress_classes(api)
    caps = Capabilities(
        service_monitor="servicemonitors" in monitoring,
        prometheus_rule="prometheusrules" in monitoring,
        gateway_api="httproutes" in gateway,
        leader_worker_set="leaderworkersets" in lws,
        keda="scaledobjects" in keda,
        ingress_classes=classes,
    )
    api.cache["capabilities"] = (time.monotonic(), caps)
    return caps


async def _ingress_classes(api: K8s) -> frozenset[str] | None:
    """IngressClass names; None when RBAC forbids reading them (the class check is then skipped)."""
    try:
        return frozenset(c["metadata"]["name"] for c in await api.list(INGRESS_CLASS, None, {}))
    except ApiError as exc:
        if exc.code == 403:
            return None
        raise


def integration_conditions(spec: DeepSeekDeploymentSpec, caps: Capabilities,
                           variants: Sequence[ResolvedVariant] | None = None) -> list[tuple[str, bool, str, str]]:
    """(type, ok, reason, message) for IngressReady and MonitoringReady; omitted when not asked for.
    `variants`: resolve_variants(spec), when the caller resolved them already (desired.py)."""
    out: list[tuple[str, bool, str, str]] = []
    ingress = spec.ingress
    if ingress is not None:
        if ingress.provider == "gateway-api" and not caps.gateway_api:
            out.append(("IngressReady", False, "GatewayAPIMissing",
                        "gateway.networking.k8s.io/v1 HTTPRoute is not served; install the Gateway API CRDs"))
        elif ingress.provider == "ingress-nginx" and ingress.class_name and caps.ingress_classes is not None \
                and ingress.class_name not in caps.ingress_classes:
            out.append(("IngressReady", False, "IngressClassMissing",
                        f"IngressClass {ingress.class_name!r} does not exist; the Ingress is created but "
                        "no controller will serve it"))
        else:
            out.append(("IngressReady", True, "Configured", f"{ingress.provider} routes {ingress.host}"))
    mon = spec.monitoring
    wanted = [("ServiceMonitor", mon.service_monitor.enabled, caps.service_monitor),
              ("PrometheusRule", mon.prometheus_rule.enabled, caps.prometheus_rule)]
    missing = [name for name, enabled, served in wanted if enabled and not served]
    if missing:
        out.append(("MonitoringReady", False, "PrometheusOperatorMissing",
                    f"monitoring.coreos.com/v1 {', '.join(missing)} not served; install the Prometheus Operator "
                    "CRDs or set spec.monitoring.*.enabled=false"))
    elif any(enabled for _, enabled, _ in wanted):
        out.append(("MonitoringReady", True, "Configured", "ServiceMonitor/PrometheusRule applied"))
    out += network_policy_conditions(spec, caps, variants)
    out += multinode_conditions(spec, caps)
    return out


LWS_MISSING_MESSAGE = ("resources.gpus ({gpus}) exceeds a node's GPUs ({per}): the workers are "
                       "LeaderWorkerSets, but leaderworkerset.x-k8s.io/v1 is not served; install the "
                       "LeaderWorkerSet controller (kubernetes-sigs/lws, docs/install.md)")


def multinode_missing(spec: DeepSeekDeploymentSpec) -> str:
    """Why multi-node workers cannot run: the LeaderWorkerSet API is not served."""
    return LWS_MISSING_MESSAGE.format(gpus=spec.resources.gpus, per=multinode.node_gpus(spec))


def multinode_conditions(spec: DeepSeekDeploymentSpec, caps: Capabilities) -> list[tuple[str, bool, str, str]]:
    """MultiNodeReady while a pod's GPUs exceed a node: the group's shape, or the missing LWS API."""
    if not multinode.spans_nodes(spec):
        return []
    gpus, per = spec.resources.gpus, multinode.node_gpus(spec)
    if not caps.leader_worker_set:
        return [("MultiNodeReady", False, "LeaderWorkerSetMissing", multinode_missing(spec))]
    return [("MultiNodeReady", True, "Configured",
             f"each replica is a LeaderWorkerSet group of {multinode.group_size(spec)} pods with {per} GPUs each "
             f"(resources.gpus {gpus}); the Services select the leaders")]


def _labels(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def network_policy_conditions(spec: DeepSeekDeploymentSpec, caps: Capabilities,
                              variants: Sequence[ResolvedVariant] | None = None) -> list[tuple[str, bool, str, str]]:
    """NetworkPolicyReady while spec.networkPolicy is enabled: what the policy admits, or what it blocks
    that the spec needs (an ingress, a ServiceMonitor) because no namespace selector names its namespace."""
    policy = spec.network_policy
    if not policy.enabled:
        return []
    gaps: list[tuple[str, str]] = []
    if spec.ingress is not None and not policy.ingress_namespace_selector:
        gaps.append(("IngressNamespaceNotAllowed",
                     "spec.ingress is set but spec.networkPolicy.ingressNamespaceSelector is empty: the worker "
                     "API port admits pods of this namespace only, so an ingress controller or gateway in "
                     "another namespace cannot connect; set it to that namespace's labels (e.g. "
                     "kubernetes.io/metadata.name: ingress-nginx)"))
    if spec.monitoring.service_monitor.enabled and caps.service_monitor and not policy.monitoring_namespace_selector:
        gaps.append(("MonitoringNamespaceNotAllowed",
                     "a ServiceMonitor is applied but spec.networkPolicy.monitoringNamespaceSelector is empty: "
                     "Prometheus in another namespace cannot scrape the workers; set it to that namespace's "
                     "labels (e.g. kubernetes.io/metadata.name: monitoring)"))
    if gaps:
        return [("NetworkPolicyReady", False, gaps[0][0], "; ".join(message for _, message in gaps))]
    clients = policy.clients
    api = ("this namespace" if clients is None else "no in-cluster client" if not clients
           else f"{len(clients)} client selector(s) of networkPolicy.clients")
    if policy.ingress_namespace_selector:
        api += f" and namespaces {_labels(policy.ingress_namespace_selector)}"
    scrapes = (f"; metrics scrapes from namespaces {_labels(policy.monitoring_namespace_selector)}"
               if policy.monitoring_namespace_selector else "")
    hub, rules = hub_egress(spec, variants)
    ports = ", ".join(str(p) for p in sorted({port["port"] for rule in rules for port in rule["ports"]}))
    where = " to networkPolicy.hubEgress.cidrs" if policy.hub_egress else ""
    egress = "DNS" + (f" and TCP {ports}{where} for {', '.join(hub)} (huggingFace)" if hub else "")
    return [("NetworkPolicyReady", True, "Configured",
             f"default-deny; API port from {api}{scrapes}; egress: {egress} only")]
