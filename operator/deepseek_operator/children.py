"""THE registry of the child kinds the operator owns: prune, the informers, the RBAC test and the docs read it.

One `Child` per kind. Adding a kind is one line in `CHILDREN` plus its renderer (render/); the chart's
RBAC and docs/architecture.md's table of children are checked against this tuple by
tests/unit/test_children.py, so forgetting either fails a test.

- A *core* child (no `crd`) is served by every cluster: its informer starts with the operator.
- An *optional* child is served only where its CRD is installed (`crd`, the CRD's name): its informer
  starts once that CRD serves the kind (cache.py), and prune lists it only while `Capabilities`
  (integrations.py) says its API is served (`capability`, the attribute's name).
- A *pruned* child is one the operator creates: prune deletes those it owns that are no longer desired.
  Pods are watched (their readiness, their volume events) but never created nor pruned.

The order of `CHILDREN` is the order prune lists (and deletes) in.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepseek_operator.k8s import KINDS, Kind
from deepseek_operator.render.common import Capabilities


@dataclass(frozen=True)
class Child:
    """One owned child kind.

    `kind`: its API kind. `purpose`: one line for the docs' table. `pruned`: the operator creates it
    and prune deletes stale ones (False: watched only). `patched`: apply may patch it in place (False:
    created and deleted, never patched: RBAC grants no `patch`). `crd` and `capability` are both set
    for an optional kind (both None for a core one): the CRD that serves it, and the `Capabilities`
    attribute that is True when its API is served.
    """

    kind: Kind
    purpose: str
    pruned: bool = True
    patched: bool = True
    crd: str | None = None
    capability: str | None = None

    @property
    def optional(self) -> bool:
        """Served only where its CRD is installed."""
        return self.crd is not None

    def verbs(self) -> tuple[str, ...]:
        """The RBAC verbs the operator needs on this kind (as the chart grants them)."""
        if not self.pruned:
            return ("list", "watch")
        return ("list", "watch", "create", *(("patch",) if self.patched else ()), "delete")


def _kind(api_version: str, kind: str) -> Kind:
    return KINDS[(api_version, kind)]


CHILDREN: tuple[Child, ...] = (
    Child(_kind("apps/v1", "Deployment"), "a variant's workers (render/workload.py), the gateway (render/gateway.py)"),
    Child(_kind("v1", "Service"),
          "the stable Service, one per variant, the gateway's (render/workload.py, gateway.py)"),
    Child(_kind("v1", "Pod"), "the workers' readiness and volume events (observe.py)", pruned=False, patched=False),
    Child(_kind("policy/v1", "PodDisruptionBudget"), "a variant's and the gateway's disruption budgets"),
    Child(_kind("networking.k8s.io/v1", "Ingress"), "the ingress-nginx pair (render/ingress.py)"),
    Child(_kind("networking.k8s.io/v1", "NetworkPolicy"), "the workers' traffic policies (render/network_policy.py)"),
    Child(_kind("batch/v1", "Job"), "the model cache's download Job (render/model_cache.py)", patched=False),
    Child(_kind("v1", "ConfigMap"),
          "download progress, GPU measurements, the gateway's document (render/model_cache.py, measurements.py, "
          "gateway.py)"),
    Child(_kind("v1", "PersistentVolumeClaim"), "the model cache's claim (render/model_cache.py)"),
    Child(_kind("rbac.authorization.k8s.io/v1", "RoleBinding"), "the download, measurement and gateway pods' RBAC"),
    Child(_kind("rbac.authorization.k8s.io/v1", "Role"), "the download, measurement and gateway pods' RBAC"),
    Child(_kind("v1", "ServiceAccount"), "the download, measurement and gateway pods' identity"),
    Child(_kind("autoscaling/v2", "HorizontalPodAutoscaler"),
          "a variant's autoscaler where KEDA is not installed (render/autoscaling.py)"),
    Child(_kind("gateway.networking.k8s.io/v1", "HTTPRoute"), "the weighted split (Gateway API provider)",
          crd="httproutes.gateway.networking.k8s.io", capability="gateway_api"),
    Child(_kind("monitoring.coreos.com/v1", "ServiceMonitor"), "Prometheus scraping (render/monitoring.py)",
          crd="servicemonitors.monitoring.coreos.com", capability="service_monitor"),
    Child(_kind("monitoring.coreos.com/v1", "PrometheusRule"), "the worker alerts (render/monitoring.py)",
          crd="prometheusrules.monitoring.coreos.com", capability="prometheus_rule"),
    Child(_kind("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"), "multi-node workers (render/multinode.py)",
          crd="leaderworkersets.leaderworkerset.x-k8s.io", capability="leader_worker_set"),
    Child(_kind("keda.sh/v1alpha1", "ScaledObject"), "a variant's autoscaler, from zero (render/autoscaling.py)",
          crd="scaledobjects.keda.sh", capability="keda"),
)


def watched() -> list[Kind]:
    """The core child kinds: their informers start with the operator (optional ones: `optional_by_crd`)."""
    return [c.kind for c in CHILDREN if not c.optional]


def optional_by_crd() -> dict[str, Kind]:
    """The optional child kinds by the name of the CRD that serves them."""
    return {c.crd: c.kind for c in CHILDREN if c.crd is not None}


def served(child: Child, caps: Capabilities) -> bool:
    """A core child is always served; an optional one when its `Capabilities` attribute is True."""
    return child.capability is None or bool(getattr(caps, child.capability))


def pruned(caps: Capabilities) -> list[Kind]:
    """The kinds prune lists, in `CHILDREN` order: every pruned core kind, and the optional ones whose
    API `caps` says is served (listing an unserved one would be a 404)."""
    return [c.kind for c in CHILDREN if c.pruned and served(c, caps)]


def docs_table() -> str:
    """docs/architecture.md's table of owned children (checked by tests/unit/test_children.py)."""
    rows = ["| kind | apiVersion | served | pruned | what |", "|---|---|---|---|---|"]
    for c in CHILDREN:
        served_by = f"where CRD `{c.crd}` is installed" if c.crd else "always"
        rows.append(f"| {c.kind.kind} | `{c.kind.api_version}` | {served_by} | {'yes' if c.pruned else 'no'} "
                    f"| {c.purpose} |")
    return "\n".join(rows) + "\n"
