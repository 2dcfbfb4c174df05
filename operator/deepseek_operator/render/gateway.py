"""The request gateway (spec.gateway.enabled; docs/autoscaling.md): the worker image in gateway mode in
front of the variants' pods. Pure.

Contract: `render_gateway(owner, spec, image, variants, load_seconds)` returns [] while the gateway is
off, else, in this order: its ServiceAccount, a Role allowing `get` on this DeepSeekDeployment only (a
held request's stream says what it waits for: scheduling, downloading 42%, loading; from the status)
and `patch` on its report ConfigMap only, the RoleBinding, the ConfigMap holding the gateway's JSON
document (worker/deepseek_worker/gateway/config.py), the report ConfigMap (`<gateway>-report`, created
empty and never applied again: the gateway writes its cold starts and fallback share there,
gateway/report.py; the operator reads them into status, measured.py), one headless
`<name>-<variant>-pods` Service per variant (the gateway resolves it to the variant's ready pods), the
gateway Deployment (CPU only, `spec.gateway.replicas`, Pod Security "restricted", probes, a checksum
on the pod template of what the gateway reads only at start: the hosted API's client; the rest of the
document it reloads from the mounted file), its Service and its PodDisruptionBudget.

The gateway's pods carry `deepseek.ai/gateway: <name>`, not `deepseek.ai/deployment`: the worker
Services, the worker NetworkPolicy and the workers' budgets select on that label and must not match
them. The edge (API keys, JWT, rate limits, forwarded addresses) moves to the gateway: the workers
behind it get no credential (the gateway forwards none) and admit only the gateway
(render/network_policy.py).

Weights: the spec's nominal weights (`traffic.effective_weights` with every variant counted ready).
The gateway gates them on readiness itself, by its own probes (within seconds, faster than a ConfigMap
reaches a pod); with the operator's ready-gated weights a canary at zero would get weight 0, never be
drawn (so never held for, so never woken).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from deepseek_operator.api import GROUP, PLURAL, DeepSeekDeploymentSpec, ResolvedVariant, Scheduling
from deepseek_operator.render.common import (
    HTTP_PORT,
    HTTP_PORT_NAME,
    LABEL_GATEWAY,
    MANAGED_BY,
    MAX_DEPLOYMENT_NAME,
    METRICS_PORT,
    METRICS_PORT_NAME,
    Owner,
    child_name,
    metadata,
    selector_labels,
)
from deepseek_operator.render.worker_env import AUTH_MOUNT, edge_env
from deepseek_operator.runtimes import SERIES
from deepseek_operator.traffic import effective_weights

COMPONENT = "gateway"
PODS_COMPONENT = "worker-pods"  # not "worker": the ServiceMonitor scrapes the variant Services only
CONFIG_MOUNT = "/etc/deepseek-gateway"
CONFIG_FILE = "gateway.json"
FALLBACK_KEY_ENV = "GATEWAY_FALLBACK_API_KEY"  # no DEEPSEEK_ prefix: not a worker setting
CONFIG_HASH = "deepseek.ai/gateway-config"
GATEWAY_UID = 10001
PRESTOP_SLEEP_SECONDS = 5


def gateway_name(owner: Owner) -> str:
    """The gateway's Deployment, Service, budget, ConfigMap, account, Role and NetworkPolicy."""
    return child_name(owner.name, COMPONENT, max_len=MAX_DEPLOYMENT_NAME)


def pods_service_name(owner: Owner, variant: str) -> str:
    """The headless Service over one variant's pods that the gateway resolves."""
    return child_name(owner.name, variant, "pods")


def report_configmap(owner: Owner) -> str:
    """The ConfigMap the gateway reports into (measured.read_gateway_report reads it)."""
    return child_name(gateway_name(owner), "report")


def gateway_selector(owner: Owner) -> dict[str, str]:
    """The gateway pods' selector label (see the module docstring for why not deepseek.ai/deployment)."""
    return {LABEL_GATEWAY: owner.name}


def gateway_url(owner: Owner) -> str:
    """The gateway Service's in-cluster root, e.g. http://chat-gateway.default.svc:8000."""
    return f"http://{gateway_name(owner)}.{owner.namespace}.svc:{HTTP_PORT}"


def _pod_labels(owner: Owner) -> dict[str, str]:
    return {"app.kubernetes.io/name": "deepseek-gateway", "app.kubernetes.io/instance": owner.name,
            "app.kubernetes.io/component": COMPONENT, **MANAGED_BY, **gateway_selector(owner)}


def gateway_condition(spec: DeepSeekDeploymentSpec, deployment: dict[str, Any] | None,
                      ) -> list[tuple[str, bool, str, str]]:
    """GatewayReady as (type, ok, reason, message), from the gateway's live Deployment; omitted while the
    gateway is off. It does not gate Ready: the workers' rollout is what Ready reports."""
    if spec.gateway is None or not spec.gateway.enabled:
        return []
    wanted = spec.gateway.replicas
    ready = int(((deployment or {}).get("status") or {}).get("readyReplicas", 0))
    if deployment is None:
        return [("GatewayReady", False, "GatewayCreating", "the gateway Deployment does not exist yet")]
    if ready == 0:
        return [("GatewayReady", False, "GatewayUnavailable",
                 f"0/{wanted} gateway pods ready: requests to the Service and ingress fail")]
    ok = ready >= wanted
    return [("GatewayReady", True, "GatewayAvailable" if ok else "GatewayDegraded",
             f"{ready}/{wanted} gateway pods ready")]


def gateway_config(owner: Owner, spec: DeepSeekDeploymentSpec, variants: Sequence[ResolvedVariant],
                   load_seconds: int) -> dict[str, Any]:
    """The gateway's JSON document (gateway/config.py's GatewayConfig, camelCase). `load_seconds`: the
    declared load time a full hold queue's Retry-After starts from (Desired.load_seconds: the longest
    measured p50 cold start in status, else the longest GPU-fit load estimate). A gateway replaces it
    with each cold start it measures itself; this is what a new gateway pod starts from."""
    gateway = spec.gateway
    assert gateway is not None
    weights = effective_weights(variants, {v.name: 1 for v in variants})
    metric = _queue_metric(variants[0])  # the primary's; a variant on another runtime names its own
    doc: dict[str, Any] = {
        "variants": [_variant(owner, v, weights[v.name], metric) for v in variants],
        "hold": {"maxQueue": gateway.max_held_requests, "deadlineSeconds": gateway.hold_timeout_seconds,
                 "loadSeconds": max(1, load_seconds)},
        # Every worker the operator renders sets DEEPSEEK_METRICS_PORT (worker_env.py; the CRD refuses it
        # in spec.env) and then serves /metrics there alone, not on the API port the gateway forwards to
        # (a proxy-mode edge serves its engine's series there too): the gauge is read on that port.
        "discovery": {"queueMetric": metric, "metricsPort": METRICS_PORT},
        "statusFrom": {"name": owner.name, "namespace": owner.namespace},
        "backendTimeoutSeconds": spec.serving.request_timeout_seconds,
    }
    fallback = spec.fallback
    if fallback is not None:
        doc["fallback"] = {"baseURL": fallback.base_url, "model": fallback.model, "apiKeyEnv": FALLBACK_KEY_ENV,
                           "when": list(fallback.when), "maxShare": fallback.max_share,
                           "allowExternal": list(fallback.allow_external),
                           "timeoutSeconds": spec.serving.request_timeout_seconds}
    return doc


def _variant(owner: Owner, variant: ResolvedVariant, weight: int, default_metric: str) -> dict[str, Any]:
    """One variant of the document: its weight, its pods' headless Service, and its queue gauge where its
    runtime names it differently from the document's (`default_metric`: a vLLM canary behind a builtin
    primary)."""
    host = f"{pods_service_name(owner, variant.name)}.{owner.namespace}.svc.cluster.local"
    out: dict[str, Any] = {"name": variant.name, "weight": weight, "service": {"host": host, "port": HTTP_PORT}}
    metric = _queue_metric(variant)
    if metric != default_metric:
        out["queueMetric"] = metric
    return out


def _queue_metric(variant: ResolvedVariant) -> str:
    """The queue gauge of the variant's runtime on its pods' metrics port (runtimes.SERIES, as the
    autoscalers read it; in proxy mode the engine's, re-exposed by the edge)."""
    return SERIES[variant.runtime.name]["queueDepth"]


def config_text(doc: dict[str, Any]) -> str:
    """The document as the ConfigMap holds it (stable key order: the checksum depends on it)."""
    return json.dumps(doc, sort_keys=True, indent=1)


def render_gateway(owner: Owner, spec: DeepSeekDeploymentSpec, image: str, variants: Sequence[ResolvedVariant],
                   load_seconds: int = 120,
                   services: Callable[[dict[str, Any]], dict[str, Any]] = lambda s: s) -> list[dict[str, Any]]:
    """The gateway's children (module docstring); [] while spec.gateway is off. `image`: the gateway's
    image when spec.gateway.image is unset (the primary's, as rendered: a rollback's too). `services`
    narrows the headless Services' selectors (multinode.leaders_only for LeaderWorkerSet workers)."""
    if spec.gateway is None or not spec.gateway.enabled:
        return []
    name = gateway_name(owner)
    doc = gateway_config(owner, spec, variants, load_seconds)
    text = config_text(doc)
    meta = metadata(owner, name, component=COMPONENT)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": False},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
         "rules": [{"apiGroups": [GROUP], "resources": [PLURAL], "resourceNames": [owner.name], "verbs": ["get"]},
                   {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [report_configmap(owner)],
                    "verbs": ["patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {CONFIG_FILE: text}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": metadata(owner, report_configmap(owner), component=COMPONENT)},  # no data: the gateway's
        *[services(_pods_service(owner, v.name)) for v in variants],
        _deployment(owner, spec, spec.gateway.image or image, restart_checksum(doc)),
        _service(owner),
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta,
         "spec": {"maxUnavailable": 1, "selector": {"matchLabels": gateway_selector(owner)},
                  "unhealthyPodEvictionPolicy": "AlwaysAllow"}},
    ]


def _pods_service(owner: Owner, variant: str) -> dict[str, Any]:
    """Headless: its DNS name resolves to the ready pods' addresses, one backend each."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": metadata(owner, pods_service_name(owner, variant), variant, component=PODS_COMPONENT),
            "spec": {"clusterIP": "None", "selector": selector_labels(owner, variant),
                     "ports": [{"name": HTTP_PORT_NAME, "port": HTTP_PORT, "targetPort": HTTP_PORT_NAME,
                                "protocol": "TCP"}]}}


def _service(owner: Owner) -> dict[str, Any]:
    meta = metadata(owner, gateway_name(owner), component=COMPONENT)
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"type": "ClusterIP", "selector": gateway_selector(owner),
                     "ports": [{"name": HTTP_PORT_NAME, "port": HTTP_PORT, "targetPort": HTTP_PORT_NAME,
                                "protocol": "TCP"},
                               {"name": METRICS_PORT_NAME, "port": METRICS_PORT, "targetPort": METRICS_PORT_NAME,
                                "protocol": "TCP"}]}}


def concurrency_cap(spec: DeepSeekDeploymentSpec) -> int:
    """The gateway edge's admission cap (DEEPSEEK_MAX_CONCURRENT_REQUESTS): held requests count against
    it, so it is every pod's slots at the variants' most replicas, plus each variant's full hold queue,
    plus as many again as the pods' slots when a hosted API may take the overflow (spec.fallback)."""
    gateway, serving = spec.gateway, spec.serving
    assert gateway is not None
    pods = sum(v.autoscaling.max_replicas if v.autoscaling else v.replicas for v in _all(spec))
    slots = serving.max_concurrent_requests * max(1, pods)
    return int(slots * (2 if spec.fallback is not None else 1) + gateway.max_held_requests * len(_all(spec)))


def _env(owner: Owner, spec: DeepSeekDeploymentSpec) -> list[dict[str, Any]]:
    """The gateway's settings (docs/gateway.md): the document, ports, admission, timeouts, its report
    ConfigMap, then the edge."""
    gateway, serving = spec.gateway, spec.serving
    assert gateway is not None
    env = [
        {"name": "DEEPSEEK_GATEWAY_CONFIG", "value": f"{CONFIG_MOUNT}/{CONFIG_FILE}"},
        {"name": "DEEPSEEK_PORT", "value": str(HTTP_PORT)},
        {"name": "DEEPSEEK_METRICS_PORT", "value": str(METRICS_PORT)},
        {"name": "DEEPSEEK_MAX_CONCURRENT_REQUESTS", "value": str(concurrency_cap(spec))},
        {"name": "DEEPSEEK_REQUEST_TIMEOUT_SECONDS",
         "value": str(serving.request_timeout_seconds + gateway.hold_timeout_seconds)},
        {"name": "DEEPSEEK_DRAIN_TIMEOUT_SECONDS", "value": str(_drain(spec))},
        {"name": "DEEPSEEK_REPORT_CONFIGMAP", "value": report_configmap(owner)},
        {"name": "DEEPSEEK_REPORT_NAMESPACE", "value": owner.namespace},
        *edge_env(spec),
    ]
    if spec.fallback is not None:
        ref = spec.fallback.api_key_secret_ref
        env.append({"name": FALLBACK_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    return env


def _all(spec: DeepSeekDeploymentSpec) -> list[Any]:
    """The primary's and the canaries' replica settings (objects with `replicas` and `autoscaling`)."""
    return [spec, *spec.variants]


def _drain(spec: DeepSeekDeploymentSpec) -> int:
    return min(spec.serving.request_timeout_seconds, 300)


def _scheduling(sched: Scheduling | None) -> dict[str, Any]:
    """spec.gateway.scheduling as pod fields, empty ones left out (no GPU toleration: it needs no GPU)."""
    if sched is None:
        return {}
    out: dict[str, Any] = {
        "nodeSelector": dict(sched.node_selector),
        "tolerations": [t.model_dump(by_alias=True, exclude_defaults=True) for t in sched.tolerations],
        "affinity": sched.affinity.to_pod_spec() if sched.affinity else {},
        "priorityClassName": sched.priority_class_name,
        "runtimeClassName": sched.runtime_class_name,
    }
    return {key: value for key, value in out.items() if value}


def restart_checksum(doc: dict[str, Any]) -> str:
    """A checksum of the document's parts the gateway reads only at start: the hosted API's client
    (fallback baseURL, key variable, timeout; present or not). Everything else it reloads from the
    mounted file without a restart (docs/gateway.md, Reload), so a weight change restarts nothing."""
    fallback = doc.get("fallback")
    fixed = {k: fallback[k] for k in ("baseURL", "apiKeyEnv", "timeoutSeconds")} if fallback else None
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:16]


def _deployment(owner: Owner, spec: DeepSeekDeploymentSpec, image: str, checksum: str) -> dict[str, Any]:
    gateway = spec.gateway
    assert gateway is not None
    name = gateway_name(owner)
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": name}}, {"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
                                    {"name": "tmp", "mountPath": "/tmp"}]
    if spec.auth.api_keys_secret_ref is not None:
        volumes.append({"name": "api-keys", "secret": {"secretName": spec.auth.api_keys_secret_ref.name}})
        mounts.append({"name": "api-keys", "mountPath": f"{AUTH_MOUNT}/api-keys", "readOnly": True})
    if spec.auth.jwt is not None:
        volumes.append({"name": "jwt", "secret": {"secretName": spec.auth.jwt.secret_ref.name}})
        mounts.append({"name": "jwt", "mountPath": f"{AUTH_MOUNT}/jwt", "readOnly": True})
    probe: dict[str, Any] = {"httpGet": {"path": "/health/ready", "port": HTTP_PORT_NAME}, "periodSeconds": 5,
                             "timeoutSeconds": 3, "failureThreshold": 3}
    container = {
        "name": "gateway",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": _env(owner, spec),
        "ports": [{"name": HTTP_PORT_NAME, "containerPort": HTTP_PORT, "protocol": "TCP"},
                  {"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"}],
        # No CPU limit: throttling a proxy adds latency to every token it relays.
        "resources": {"requests": {"cpu": gateway.resources.cpu, "memory": gateway.resources.memory},
                      "limits": {"memory": gateway.resources.memory}},
        "readinessProbe": probe,
        "livenessProbe": {**probe, "httpGet": {"path": "/health/live", "port": HTTP_PORT_NAME}, "periodSeconds": 10,
                          "failureThreshold": 6},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, name, component=COMPONENT),
        "spec": {
            "replicas": gateway.replicas,
            "selector": {"matchLabels": gateway_selector(owner)},
            # Keep every gateway pod serving while a new one starts: it holds no GPU.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {"labels": _pod_labels(owner), "annotations": {CONFIG_HASH: checksum}},
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": True,  # reads the status, writes its report (the Role)
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": _drain(spec) + PRESTOP_SLEEP_SECONDS + 10,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": GATEWAY_UID, "runAsGroup": GATEWAY_UID,
                                        "fsGroup": GATEWAY_UID, "seccompProfile": {"type": "RuntimeDefault"}},
                    # One gateway pod per node where the cluster allows: a node loss keeps the other.
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                   "whenUnsatisfiable": "ScheduleAnyway",
                                                   "labelSelector": {"matchLabels": gateway_selector(owner)}}],
                    "containers": [container],
                    "volumes": volumes,
                    **_scheduling(gateway.scheduling),
                },
            },
        },
    }
