"""The catalog of resources the sandbox serves: built-ins plus those defined by CRDs.

kmock discovers resources only from what is declared on it and guesses kinds from plurals; the
sandbox keeps its own typed catalog (kinds, scopes, subresources, scale paths, printer columns,
the CRD itself for admission) and mirrors it into ``kmock.resources`` for the record.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterable
from typing import Any

import yaml

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclasses.dataclass(frozen=True)
class ScaleSpec:
    """Where the /scale subresource reads and writes (JSONPath-ish dotted paths)."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = ".status.selector"


@dataclasses.dataclass
class ResourceInfo:
    """One served resource (one group/version/plural)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    singular: str = ""
    categories: tuple[str, ...] = ()
    status: bool = False
    scale: ScaleSpec | None = None
    printer_columns: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    crd: dict[str, Any] | None = None

    @property
    def api_version(self) -> str:
        """``apps/v1`` or ``v1``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str, str]:
        """(group, version, plural)."""
        return (self.group, self.version, self.plural)

    @property
    def subresources(self) -> list[str]:
        """Subresources served for this resource."""
        return [name for name, on in (("status", self.status), ("scale", self.scale is not None)) if on]


def _core(plural: str, kind: str, *short: str, namespaced: bool = True, status: bool = False) -> ResourceInfo:
    return ResourceInfo("", "v1", plural, kind, namespaced, tuple(short), kind.lower(), status=status)


def _grp(group: str, plural: str, kind: str, *short: str, **kw: Any) -> ResourceInfo:
    return ResourceInfo(group, "v1", plural, kind, short_names=tuple(short), singular=kind.lower(), **kw)


def builtin_resources() -> list[ResourceInfo]:
    """The built-in resources every sandbox serves."""
    return [
        _core("namespaces", "Namespace", "ns", namespaced=False, status=True),
        _core("pods", "Pod", "po", status=True),
        _core("services", "Service", "svc", status=True),
        _core("configmaps", "ConfigMap", "cm"),
        _core("secrets", "Secret"),
        _core("events", "Event", "ev"),
        _core("serviceaccounts", "ServiceAccount", "sa"),
        _core("nodes", "Node", "no", namespaced=False, status=True),
        _grp("apps", "deployments", "Deployment", "deploy", status=True, scale=ScaleSpec(), categories=("all",)),
        _grp("apps", "replicasets", "ReplicaSet", "rs", status=True, scale=ScaleSpec()),
        _grp("networking.k8s.io", "ingresses", "Ingress", "ing", status=True),
        _grp("networking.k8s.io", "networkpolicies", "NetworkPolicy", "netpol"),
        _grp("networking.k8s.io", "ingressclasses", "IngressClass", namespaced=False),
        _grp("policy", "poddisruptionbudgets", "PodDisruptionBudget", "pdb", status=True),
        _grp("coordination.k8s.io", "leases", "Lease"),
        # Stored, not enforced (docs/sandbox.md): the operator grants its workers' report ConfigMaps.
        _grp("rbac.authorization.k8s.io", "roles", "Role"),
        _grp("rbac.authorization.k8s.io", "rolebindings", "RoleBinding"),
        _grp("events.k8s.io", "events", "Event", "ev"),
        _grp("apiextensions.k8s.io", "customresourcedefinitions", "CustomResourceDefinition",
             "crd", "crds", namespaced=False, status=True),
    ]


def from_crd(crd: dict[str, Any]) -> list[ResourceInfo]:
    """One :class:`ResourceInfo` per served version of a CustomResourceDefinition."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    result = []
    for ver in spec.get("versions", []):
        if not ver.get("served", True):
            continue
        subs = ver.get("subresources") or {}
        scale = subs.get("scale")
        result.append(ResourceInfo(
            group=spec["group"],
            version=ver["name"],
            plural=names["plural"],
            kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            singular=names.get("singular") or names["kind"].lower(),
            categories=tuple(names.get("categories") or ()),
            status="status" in subs,
            scale=None if scale is None else ScaleSpec(
                scale.get("specReplicasPath", ".spec.replicas"),
                scale.get("statusReplicasPath", ".status.replicas"),
                scale.get("labelSelectorPath"),
            ),
            printer_columns=list(ver.get("additionalPrinterColumns") or []),
            crd=crd,
        ))
    return result


def load_crds(paths: Iterable[pathlib.Path]) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition document found in the given YAML files (others skipped)."""
    crds = []
    for path in sorted(paths):
        with path.open(encoding="utf-8") as fh:
            for doc in yaml.safe_load_all(fh):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    crds.append(doc)
    return crds


def crd_files(directory: pathlib.Path | str | None, prefix: str = "") -> list[pathlib.Path]:
    """YAML files in ``directory`` whose names start with ``prefix`` (none if no directory)."""
    if directory is None:
        return []
    root = pathlib.Path(directory)
    return sorted(p for p in root.glob(f"{prefix}*.y*ml") if p.suffix in (".yaml", ".yml"))


def minimal_crd(group: str, version: str, plural: str, kind: str, short: tuple[str, ...] = ()) -> dict[str, Any]:
    """A schema-less CRD used when an optional API is enabled without its upstream CRD files."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "kind": kind, "singular": kind.lower(), "shortNames": list(short)},
            "versions": [{
                "name": version, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }],
        },
    }


MONITORING_FALLBACK = [
    minimal_crd("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor", ("smon",)),
    minimal_crd("monitoring.coreos.com", "v1", "prometheusrules", "PrometheusRule", ("promrule",)),
]
GATEWAY_FALLBACK = [
    minimal_crd("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute"),
    minimal_crd("gateway.networking.k8s.io", "v1", "gateways", "Gateway", ("gtw",)),
]
