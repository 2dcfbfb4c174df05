"""Conventions every renderer shares: child names, labels, owner references, capabilities.

Renderers are pure: `(owner, spec, capabilities) -> list[dict]`. Nothing here talks to the API.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from deepseek_operator.api import API_VERSION, KIND, ModelSpec

OPERATOR_NAME = "deepseek-operator"
LABEL_DEPLOYMENT = "deepseek.ai/deployment"
LABEL_VARIANT = "deepseek.ai/variant"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_GATEWAY = "deepseek.ai/gateway"  # the request gateway's pods (render/gateway.py), instead of LABEL_DEPLOYMENT
MANAGED_BY = {"app.kubernetes.io/managed-by": OPERATOR_NAME}
HTTP_PORT = 8000
HTTP_PORT_NAME = "http"
METRICS_PORT = 9090  # the worker's metrics-only listener (DEEPSEEK_METRICS_PORT)
METRICS_PORT_NAME = "metrics"
MAX_NAME = 63
# Pod names are "<deployment>-<10 char hash>-<5 char suffix>"; keep Deployment names short enough.
MAX_DEPLOYMENT_NAME = 47


@dataclass(frozen=True)
class Owner:
    """The DeepSeekDeployment the children belong to."""

    name: str
    namespace: str
    uid: str
    generation: int = 1
    resource_version: str = ""  # of the body reconciled: the status write's optimistic-concurrency precondition
    # Model caches created by a release whose cache key held the claim's size, by today's key: their
    # live name is kept (cache_claims.adopt_legacy_caches), so an operator upgrade downloads nothing.
    legacy_caches: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Capabilities:
    """Optional cluster APIs found by discovery (KServe's IsCrdAvailable idea)."""

    service_monitor: bool = False
    prometheus_rule: bool = False
    gateway_api: bool = False
    leader_worker_set: bool = False  # leaderworkerset.x-k8s.io/v1: multi-node workers (render/multinode.py)
    keda: bool = False  # keda.sh/v1alpha1 ScaledObject: autoscalers (render/autoscaling.py), else an HPA
    ingress_classes: frozenset[str] | None = field(default_factory=frozenset)  # None: not readable (RBAC)


def child_name(*parts: str, max_len: int = MAX_NAME) -> str:
    """Deterministic DNS name from parts; too long -> truncated + 8 hex chars of a hash of the full name."""
    full = "-".join(p for p in parts if p)
    if len(full) <= max_len:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[: max_len - 9].rstrip('-')}-{digest}"


def selector_labels(owner: Owner, variant: str | None = None) -> dict[str, str]:
    """Labels the operator owns and selects on. Without a variant: every variant of the owner."""
    labels = {LABEL_DEPLOYMENT: owner.name}
    if variant is not None:
        labels[LABEL_VARIANT] = variant
    return labels


def common_labels(owner: Owner, variant: str | None = None, component: str = "worker") -> dict[str, str]:
    """Selector labels plus the recommended app.kubernetes.io set."""
    return {
        "app.kubernetes.io/name": "deepseek-worker",
        "app.kubernetes.io/instance": owner.name,
        LABEL_COMPONENT: component,
        **MANAGED_BY,
        **selector_labels(owner, variant),
    }


def owner_reference(owner: Owner) -> dict[str, Any]:
    """Controller owner reference: children are garbage-collected with the resource."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(owner: Owner, name: str, variant: str | None = None, component: str = "worker",
             extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Child metadata: name, namespace, labels, owner reference. Never copies the CR's annotations."""
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": {**(extra_labels or {}), **common_labels(owner, variant, component)},
        "ownerReferences": [owner_reference(owner)],
    }


def variant_service_name(owner: Owner, variant: str) -> str:
    """The Service of one variant (the ingress backends)."""
    return child_name(owner.name, variant)


def stable_service_name(owner: Owner) -> str:
    """The Service over every variant: what in-cluster clients call."""
    return child_name(owner.name)


def deployment_name(owner: Owner, variant: str) -> str:
    """The worker Deployment of one variant."""
    return child_name(owner.name, variant, max_len=MAX_DEPLOYMENT_NAME)


def cache_key(model: ModelSpec, with_size: bool = False) -> str:
    """10 hex chars naming a model cache by what its claim and download cannot change in place:
    source, endpoint, id, revision, class and access modes (a change there is a new cache, downloaded
    anew, and the old one is pruned). Not the size: a claim grows in place (cache_claims.py).
    `with_size`: the key of releases before that, which held the size too."""
    cache = model.cache
    hub = model.source.hub
    parts = [model.source.kind, hub.endpoint if hub else None, model.id, model.revision,
             cache.size if cache else None, cache.storage_class_name if cache else None,
             sorted(cache.access_modes) if cache else None]
    if not with_size:
        del parts[4]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:10]


def cache_name(owner: Owner, model: ModelSpec, with_size: bool = False) -> str:
    """The name of a model cache's PVC, download Job, progress ConfigMap and RBAC objects: an adopted
    legacy cache's name (Owner.legacy_caches), else from cache_key(). 52 characters at most: the
    Job's pods add a 6-character suffix and must stay within 63."""
    key = cache_key(model, with_size)
    adopted = dict(owner.legacy_caches).get(key) if not with_size else None
    return adopted or child_name(owner.name, "model", key, max_len=52)
