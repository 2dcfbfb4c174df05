"""Worker Deployments and Services: pure functions of the spec.

Contract: `render_workload(owner, spec, images)` returns, for the primary and each variant, one
apps/v1 Deployment (a LeaderWorkerSet when a pod's GPUs exceed a node: render/multinode.py), one
Service and one PodDisruptionBudget, plus one stable Service over all variants. `images` overrides a
variant's image (the reconcile passes the rollback image here); everything else comes from the spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deepseek_operator import startup
from deepseek_operator.api import DeepSeekDeploymentSpec, ModelSpec, ResolvedVariant, resolve_variants
from deepseek_operator.architectures import checkpoint_bytes
from deepseek_operator.render import multinode
from deepseek_operator.render.common import (
    HTTP_PORT,
    HTTP_PORT_NAME,
    LABEL_GATEWAY,
    METRICS_PORT,
    METRICS_PORT_NAME,
    Owner,
    cache_name,
    common_labels,
    deployment_name,
    metadata,
    selector_labels,
    stable_service_name,
    variant_service_name,
)
from deepseek_operator.render.engine import engine_containers
from deepseek_operator.render.measurements import report_name
from deepseek_operator.render.worker_env import AUTH_MOUNT, CACHE_MOUNT, MODEL_MOUNT, worker_env
from deepseek_operator.strategy import Strategy, rolling_update

WORKER_UID = 10001
# Time the endpoints controller and ingress need to stop sending new requests before SIGTERM.
PRESTOP_SLEEP_SECONDS = 5
# The worker drains in-flight requests for at most this long after SIGTERM.
MAX_DRAIN_SECONDS = 300
# Model downloads and loads can take long: the startup probe allows model.loadTimeoutSeconds (default
# 30 min) before the worker is restarted and liveness applies; the CRD makes
# rollout.progressDeadlineSeconds at least as long.
STARTUP_PERIOD_SECONDS = 10


def startup_failure_threshold(load_timeout_seconds: int) -> int:
    """Startup probe failures allowed: period * threshold covers the load budget (by less than a period)."""
    return max(1, -(-load_timeout_seconds // STARTUP_PERIOD_SECONDS))


def drain_seconds(spec: DeepSeekDeploymentSpec) -> int:
    """How long the worker waits for in-flight requests on SIGTERM."""
    return min(spec.serving.request_timeout_seconds, MAX_DRAIN_SECONDS)


def render_workload(
    owner: Owner, spec: DeepSeekDeploymentSpec, images: dict[str, str] | None = None,
    strategies: dict[str, Strategy] | None = None, variants: Sequence[ResolvedVariant] | None = None,
) -> list[dict[str, Any]]:
    """Deployment, Service and PodDisruptionBudget of every variant and the stable Service, in order.

    `images` and `strategies` override, per variant, the spec's image (a rollback) and the rolling
    update (strategy.py: Auto's choice); without them: the spec's image, Surge unless Replace is asked.
    `variants`: resolve_variants(spec), when the caller resolved them already (desired.py).
    """
    images = images or {}
    strategies = strategies or {}
    children: list[dict[str, Any]] = []
    # A pod's GPUs beyond a node: a LeaderWorkerSet per variant, Services on the leaders (multinode.py).
    spans = multinode.spans_nodes(spec)
    services = multinode.leaders_only if spans else lambda service: service
    for variant in resolve_variants(spec) if variants is None else variants:
        image = images.get(variant.name, variant.image)
        chosen = strategies.get(variant.name) or ("Replace" if spec.rollout.strategy == "Replace" else "Surge")
        if spans:
            pod = render_pod_spec(owner, spec, variant, image)
            children.append(multinode.render_leader_worker_set(owner, spec, variant, pod, chosen))
        else:
            children.append(render_deployment(owner, spec, variant, image, chosen))
        children.append(services(render_variant_service(owner, variant.name)))
        children.append(render_disruption_budget(owner, variant.name))
    children.append(services(render_stable_service(owner)) if not spec.gateway_enabled
                    else render_stable_service(owner, gateway=True))
    return children


def render_deployment(
    owner: Owner, spec: DeepSeekDeploymentSpec, variant: ResolvedVariant, image: str,
    strategy: Strategy = "Surge",
) -> dict[str, Any]:
    """The worker Deployment of one variant, rolled out with `strategy` (strategy.rolling_update)."""
    rollout = spec.rollout
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, deployment_name(owner, variant.name), variant.name),
        "spec": {
            **replicas_field(variant),
            "selector": {"matchLabels": selector_labels(owner, variant.name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": rolling_update(strategy, rollout.max_surge, rollout.max_unavailable),
            },
            "progressDeadlineSeconds": rollout.progress_deadline_seconds,
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {"labels": common_labels(owner, variant.name)},
                "spec": render_pod_spec(owner, spec, variant, image),
            },
        },
    }


def replicas_field(variant: ResolvedVariant) -> dict[str, int]:
    """`{"replicas": n}`, or {} while the variant has an autoscaler: KEDA or the HPA owns the count
    (render/autoscaling.py), and an operator writing it too would fight them. k8s.apply never nulls a
    replicas field it stops rendering (that would reset the Deployment to 1): the live count stays."""
    return {} if variant.autoscaling is not None else {"replicas": variant.replicas}


def render_pod_spec(owner: Owner, spec: DeepSeekDeploymentSpec, variant: ResolvedVariant, image: str) -> dict[str, Any]:
    """Pod spec: one worker container (two for an engine runtime), Pod Security "restricted", GPU
    scheduling from the spec.

    The pod runs as its variant's report ServiceAccount, whose token may patch one ConfigMap and
    nothing else (render/measurements.py): the worker reports its measurements there once loaded."""
    report = report_name(owner, variant.name)
    pod: dict[str, Any] = {
        "serviceAccountName": report,
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": drain_seconds(spec) + PRESTOP_SLEEP_SECONDS + 10,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "fsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": _containers(spec, variant, render_container(spec, variant, image, (owner.namespace, report))),
        "volumes": render_volumes(owner, spec, variant),
    }
    pod.update(render_scheduling(spec))
    return pod


def _containers(spec: DeepSeekDeploymentSpec, variant: ResolvedVariant, worker: dict[str, Any]) -> list[dict[str, Any]]:
    """The worker alone (builtin), or our worker in proxy mode and the engine (render/engine.py)."""
    if not variant.runtime.engine:
        return [worker]
    return engine_containers(spec, variant, worker, drain_seconds(spec), PRESTOP_SLEEP_SECONDS)


def render_container(spec: DeepSeekDeploymentSpec, variant: ResolvedVariant, image: str,
                     report: tuple[str, str] | None = None) -> dict[str, Any]:
    """The worker container: env settings, ports, probes, resources, mounts; `report` as in worker_env."""
    res = spec.resources
    limits: dict[str, str] = {"cpu": res.cpu, "memory": res.memory}
    if res.gpus > 0:
        limits[res.gpu_resource_name] = str(res.gpus)
    requests = dict(limits)
    download = download_volume(variant.model)
    if download is not None:  # the scheduler picks a node with room for the download (no limit: sizeLimit)
        requests["ephemeral-storage"] = download
    return {
        "name": "worker",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        # The worker writes "model load failed: ..." there (observe.py reports it as ModelLoadFailed).
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "env": worker_env(spec, variant, drain_seconds(spec), report),
        "ports": [{"name": HTTP_PORT_NAME, "containerPort": HTTP_PORT, "protocol": "TCP"},
                  {"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "resources": {"requests": requests, "limits": limits},
        # /health/ready, not /health/live: the worker's port (and liveness) answers at once while the
        # model loads in the background, so only readiness tells a finished load. A worker not ready
        # within model.loadTimeoutSeconds is restarted; afterwards liveness and readiness take over.
        "startupProbe": _probe("/health/ready", STARTUP_PERIOD_SECONDS,
                               startup_failure_threshold(variant.model.load_timeout_seconds)),
        "readinessProbe": _probe("/health/ready", 5, 3),
        "livenessProbe": _probe("/health/live", 10, 6),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": render_volume_mounts(spec, variant),
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": HTTP_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def render_volumes(owner: Owner, spec: DeepSeekDeploymentSpec, variant: ResolvedVariant) -> list[dict[str, Any]]:
    """/dev/shm in memory, the model source, a writable cache and /tmp, and the auth Secrets."""
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shm_size}},
        {"name": "cache", "emptyDir": _cache_dir(variant.model)},
        {"name": "tmp", "emptyDir": {}},
    ]
    claim = model_claim(owner, variant)
    if claim is not None:
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
    if spec.auth.api_keys_secret_ref is not None and not spec.gateway_enabled:  # the gateway's then
        volumes.append({"name": "api-keys", "secret": {"secretName": spec.auth.api_keys_secret_ref.name}})
    if spec.auth.jwt is not None and not spec.gateway_enabled:
        volumes.append({"name": "jwt", "secret": {"secretName": spec.auth.jwt.secret_ref.name}})
    return volumes


def download_volume(model: ModelSpec) -> str | None:
    """The size of the emptyDir a worker downloads its model into (a hub source without model.cache), from
    the checkpoint's size (startup.volume_quantity); None when nothing is downloaded or the size is unknown
    (the emptyDir is then unbounded, as docs/model-cache.md says)."""
    checkpoint = checkpoint_bytes(model)
    if not startup.downloads_in_pod(model) or not checkpoint:
        return None
    return startup.volume_quantity(checkpoint)


def _cache_dir(model: ModelSpec) -> dict[str, Any]:
    """HF_HOME: a hub download lands here, bounded so that it cannot fill the node's disk."""
    size = download_volume(model)
    return {"sizeLimit": size} if size is not None else {}


def model_claim(owner: Owner, variant: ResolvedVariant) -> str | None:
    """The PersistentVolumeClaim a variant loads its model from: its cache, its pvc source, or none."""
    if variant.model.cached:
        return cache_name(owner, variant.model)
    pvc = variant.model.source.pvc
    return pvc.claim_name if pvc is not None else None


def render_volume_mounts(spec: DeepSeekDeploymentSpec, variant: ResolvedVariant) -> list[dict[str, Any]]:
    """Mounts matching render_volumes(); the model is mounted read-only."""
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "cache", "mountPath": CACHE_MOUNT},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    pvc = variant.model.source.pvc
    if pvc is not None or variant.model.cached:
        mount: dict[str, Any] = {"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True}
        if pvc is not None and pvc.sub_path:
            mount["subPath"] = pvc.sub_path
        mounts.append(mount)
    if spec.auth.api_keys_secret_ref is not None and not spec.gateway_enabled:
        mounts.append({"name": "api-keys", "mountPath": f"{AUTH_MOUNT}/api-keys", "readOnly": True})
    if spec.auth.jwt is not None and not spec.gateway_enabled:
        mounts.append({"name": "jwt", "mountPath": f"{AUTH_MOUNT}/jwt", "readOnly": True})
    return mounts


def render_scheduling(spec: DeepSeekDeploymentSpec) -> dict[str, Any]:
    """nodeSelector, tolerations, affinity, priority and runtime class; empty ones are omitted.

    GPU pods get a toleration of the `<gpuResourceName>` NoSchedule taint that GPU node pools carry
    (the NVIDIA GPU operator and GKE/AKS taint GPU nodes so), unless the user already lists one.
    """
    sched = spec.scheduling
    tolerations = [t.model_dump(by_alias=True, exclude_defaults=True) for t in sched.tolerations]
    gpu_key = spec.resources.gpu_resource_name
    if spec.resources.gpus > 0 and not any(t.get("key") == gpu_key for t in tolerations):
        tolerations.append({"key": gpu_key, "operator": "Exists", "effect": "NoSchedule"})
    out: dict[str, Any] = {
        "nodeSelector": dict(sched.node_selector),
        "tolerations": tolerations,
        "affinity": sched.affinity.to_pod_spec() if sched.affinity else {},
        "priorityClassName": sched.priority_class_name,
        "runtimeClassName": sched.runtime_class_name,
    }
    return {key: value for key, value in out.items() if value}


def render_disruption_budget(owner: Owner, variant: str) -> dict[str, Any]:
    """At most one worker of a variant evicted at a time (node drains, autoscaler scale-down).

    Unready pods may always be evicted (unhealthyPodEvictionPolicy AlwaysAllow), so a crash-looping
    worker never blocks a drain; with one replica the budget still allows the eviction.
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(owner, deployment_name(owner, variant), variant),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(owner, variant)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def _service(owner: Owner, name: str, variant: str | None, selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, name, variant),
        "spec": {
            "type": "ClusterIP",
            "selector": selector or selector_labels(owner, variant),
            "ports": [{"name": HTTP_PORT_NAME, "port": HTTP_PORT, "targetPort": HTTP_PORT_NAME, "protocol": "TCP"},
                      {"name": METRICS_PORT_NAME, "port": METRICS_PORT, "targetPort": METRICS_PORT_NAME,
                       "protocol": "TCP"}],
        },
    }


def render_variant_service(owner: Owner, variant: str) -> dict[str, Any]:
    """The Service of one variant: the ingress' weighted backend for it."""
    return _service(owner, variant_service_name(owner, variant), variant)


def render_stable_service(owner: Owner, gateway: bool = False) -> dict[str, Any]:
    """One Service over every variant's pods, for in-cluster clients; over the gateway's pods instead
    while spec.gateway is enabled (render/gateway.py): in-cluster callers then get the gateway's edge,
    weights, hold and spill-over too."""
    return _service(owner, stable_service_name(owner), None, {LABEL_GATEWAY: owner.name} if gateway else None)
