"""The model cache: a PersistentVolumeClaim filled once by a download Job (docs/model-cache.md).

Contract: `render_model_cache(owner, spec, images)` returns, for each distinct cached model among the
variants (`cache_name`: keyed by source, id, revision, class and access modes), in this order: the
ServiceAccount of the download pod, a Role that lets it patch exactly one ConfigMap (its progress
channel, and nothing else: no access to DeepSeekDeployments), the RoleBinding, that ConfigMap, the
PersistentVolumeClaim and the Job. The ConfigMap, the claim and the Job are created once and never
applied again (`CREATE_ONLY`): the downloader owns the ConfigMap's data, and a claim's or a Job pod
template's spec is immutable, which is why their name carries the key. A claim's size is the one
exception, grown in place by cache_claims.py.

The download pod runs the variant's worker image (`deepseek-worker-download`), so pipelines need no
second image; it does not carry the `deepseek.ai/deployment` label, so no worker Service selects it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deepseek_operator.api import DeepSeekDeploymentSpec, ModelSpec, ResolvedVariant, resolve_variants
from deepseek_operator.render.common import MANAGED_BY, Owner, cache_key, cache_name, metadata
from deepseek_operator.render.worker_env import DOWNLOAD_DIR, MODEL_MOUNT
from deepseek_operator.render.workload import WORKER_UID, render_scheduling

COMPONENT = "model-download"
LABEL_DOWNLOAD = "deepseek.ai/model-download"
# The downloader's exit code for failures a retry cannot fix (401/403, 404, a full disk).
PERMANENT_EXIT_CODE = 2
CREATE_ONLY = frozenset({"ConfigMap", "PersistentVolumeClaim", "Job"})
PROGRESS_KEY = "progress"  # the ConfigMap data key the downloader writes


def cached_models(spec: DeepSeekDeploymentSpec, variants: Sequence[ResolvedVariant] | None = None,
                  ) -> dict[str, tuple[ModelSpec, list[ResolvedVariant]]]:
    """Each distinct cached model (by cache key, in variant order) and the variants that load it;
    `variants`: resolve_variants(spec), when the caller resolved them already (desired.py)."""
    out: dict[str, tuple[ModelSpec, list[ResolvedVariant]]] = {}
    for variant in resolve_variants(spec) if variants is None else variants:
        if variant.model.cached:
            out.setdefault(cache_key(variant.model), (variant.model, []))[1].append(variant)
    return out


def render_model_cache(owner: Owner, spec: DeepSeekDeploymentSpec,
                       images: dict[str, str] | None = None,
                       variants: Sequence[ResolvedVariant] | None = None) -> list[dict[str, Any]]:
    """The cache objects of every cached model; see the module docstring for the order."""
    images = images or {}
    children: list[dict[str, Any]] = []
    for model, loading in cached_models(spec, variants).values():
        name = cache_name(owner, model)
        image = images.get(loading[0].name, loading[0].image)
        children += [
            _service_account(owner, name),
            _role(owner, name),
            _role_binding(owner, name),
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(owner, name)},
            render_claim(owner, model),
            render_download_job(owner, spec, model, image),
        ]
    return children


def _meta(owner: Owner, name: str) -> dict[str, Any]:
    return metadata(owner, name, component=COMPONENT, extra_labels={LABEL_DOWNLOAD: name})


def _service_account(owner: Owner, name: str) -> dict[str, Any]:
    # Only the download pod mounts a token (it asks for one itself).
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(owner, name),
            "automountServiceAccountToken": False}


def _role(owner: Owner, name: str) -> dict[str, Any]:
    """Patch of the one progress ConfigMap: the narrowest grant a progress channel can have."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(owner, name),
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [name], "verbs": ["patch"]}]}


def _role_binding(owner: Owner, name: str) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _meta(owner, name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}]}


def render_claim(owner: Owner, model: ModelSpec) -> dict[str, Any]:
    """The cache PersistentVolumeClaim (garbage-collected with the resource)."""
    assert model.cache is not None and model.cache.size is not None  # cached models only (api.py)
    spec: dict[str, Any] = {"accessModes": list(model.cache.access_modes),
                            "resources": {"requests": {"storage": model.cache.size}}}
    if model.cache.storage_class_name is not None:
        spec["storageClassName"] = model.cache.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(owner, cache_name(owner, model)),
            "spec": spec}


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def download_env(owner: Owner, model: ModelSpec) -> list[dict[str, Any]]:
    """The downloader's settings (docs/model-cache.md, "The downloader"); the token from its Secret;
    then the user's model.cache.env."""
    hub = model.source.hub
    assert hub is not None  # cached models come from a hub (api.py)
    name = cache_name(owner, model)
    env = [
        _env("DEEPSEEK_DOWNLOAD_SOURCE", model.source.kind),
        _env("DEEPSEEK_MODEL", model.id),
        _env("DEEPSEEK_MODEL_REVISION", model.revision),
        _env("DEEPSEEK_DOWNLOAD_DIR", DOWNLOAD_DIR),
        _env("DEEPSEEK_PROGRESS_CONFIGMAP", name),
        _env("DEEPSEEK_PROGRESS_NAMESPACE", owner.namespace),
        _env("HF_HUB_OFFLINE", "0"),  # the one pod that must reach the hub, whatever the image's default
        _env("HF_HOME", "/tmp/hf"),
        _env("MODELSCOPE_CACHE", "/tmp/modelscope"),
    ]
    if hub.endpoint:
        env.append(_env("DEEPSEEK_DOWNLOAD_ENDPOINT", hub.endpoint))
    if hub.token_secret_ref is not None:
        ref = hub.token_secret_ref
        env.append({"name": "DEEPSEEK_DOWNLOAD_TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    # cache.env last, whole (envvars.DOWNLOAD_NAMES, the names above, are refused there).
    return env + [e.to_container() for e in (model.cache.env if model.cache else [])]


def render_download_job(owner: Owner, spec: DeepSeekDeploymentSpec, model: ModelSpec, image: str) -> dict[str, Any]:
    """The Job that downloads `model` into its claim. Permanent failures (exit 2) fail the Job at
    once (podFailurePolicy); others are retried `cache.download.backoffLimit` times; evictions are
    not counted. The container gets `cache.download.resources`."""
    assert model.cache is not None  # cached models only (api.py)
    name = cache_name(owner, model)
    download = model.cache.download
    container = {
        "name": "download",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        # The worker image's init (its ENTRYPOINT runs tini too), so SIGTERM reaches the downloader:
        # a process that is PID 1 gets no default signal handling from the kernel.
        "command": ["/usr/bin/tini", "--", "deepseek-worker-download"],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "env": download_env(owner, model),
        "resources": download.resources.model_dump(),
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "model", "mountPath": MODEL_MOUNT}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": name,
        "automountServiceAccountToken": True,  # the progress ConfigMap patch needs the token
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": WORKER_UID, "runAsGroup": WORKER_UID,
                            "fsGroup": WORKER_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "model", "persistentVolumeClaim": {"claimName": name}},
                    {"name": "tmp", "emptyDir": {}}],
        # Where the workers may run: a ReadWriteOnce volume binds on the download pod's node (zone).
        **render_scheduling(spec),
    }
    labels = {"app.kubernetes.io/name": "deepseek-worker", "app.kubernetes.io/instance": owner.name,
              "app.kubernetes.io/component": COMPONENT, **MANAGED_BY, LABEL_DOWNLOAD: name}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(owner, name),
        "spec": {
            "backoffLimit": download.backoff_limit,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": "download", "operator": "In",
                                                      "values": [PERMANENT_EXIT_CODE]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
