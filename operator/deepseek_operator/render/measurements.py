"""The workers' measurement channel: one report ConfigMap per variant (docs/gpu-sizing.md).

Contract: `render_reports(owner, spec)` returns, for each variant, in this order: the ServiceAccount its
worker pods run as, a Role that lets it patch exactly that variant's report ConfigMap (nothing else: no
read, no other object, no DeepSeekDeployment), the RoleBinding, and the ConfigMap. The ConfigMap is
created once and never patched by the operator (`CREATE_ONLY` in render/model_cache.py): its data is
the worker's. The reconcile applies these before the workload, so a pod never waits for its account.

Why a ConfigMap and not the pod: a Role cannot name pods that do not exist yet, so a "patch my own pod"
grant would be every pod in the namespace (labels included: a worker could move a Service's traffic).
A named ConfigMap is the narrowest grant there is, and the operator's watch-fed cache already holds
ConfigMaps with its label, so a report triggers a reconcile and costs no polling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deepseek_operator.api import DeepSeekDeploymentSpec, ResolvedVariant, resolve_variants
from deepseek_operator.render.common import Owner, child_name, deployment_name, metadata

COMPONENT = "measurements"


def report_name(owner: Owner, variant: str) -> str:
    """The report ConfigMap, ServiceAccount, Role and RoleBinding of one variant (<= 63 characters)."""
    return child_name(deployment_name(owner, variant), "report")


def render_reports(owner: Owner, spec: DeepSeekDeploymentSpec,
                   variants: Sequence[ResolvedVariant] | None = None) -> list[dict[str, Any]]:
    """The report objects of every variant (`variants`: resolve_variants(spec), when resolved already);
    see the module docstring for the order."""
    children: list[dict[str, Any]] = []
    for variant in resolve_variants(spec) if variants is None else variants:
        name = report_name(owner, variant.name)
        def meta(name: str = name, variant: str = variant.name) -> dict[str, Any]:
            return metadata(owner, name, variant, component=COMPONENT)

        children += [
            # The pods ask for the token themselves (render/workload.py); nothing else mounts one.
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(), "automountServiceAccountToken": False},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(),
             "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [name],
                        "verbs": ["patch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(),
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
             "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}]},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta()},
        ]
    return children
