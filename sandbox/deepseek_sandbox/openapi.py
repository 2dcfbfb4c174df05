"""Minimal OpenAPI v3 documents, enough for kubectl's "does the server validate fields?" probe.

kubectl (``--validate=strict``, the default) refuses to apply anything when ``/openapi/v3`` is
missing. When a group-version document lists the resource's write operations with a
``fieldValidation`` query parameter, kubectl delegates validation to the server instead (and the
sandbox validates custom resources through admission). Custom resources' schemas are published
from their CRDs, so `kubectl explain dsd.spec.model` shows the CRD's descriptions as on a real
cluster; built-ins publish none, and kubectl's client-side apply uses its compiled-in patch metadata.
"""

from __future__ import annotations

from typing import Any

from .resources import ResourceInfo


def _prefix(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def root(resources: list[ResourceInfo]) -> dict[str, Any]:
    """``/openapi/v3``: one entry per served group-version."""
    gvs = sorted({_prefix(i.group, i.version) for i in resources})
    return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=sandbox"} for gv in gvs}}


def _operation(info: ResourceInfo, verb: str) -> dict[str, Any]:
    return {
        "operationId": f"{verb}{info.kind}",
        "x-kubernetes-action": verb,
        "x-kubernetes-group-version-kind": {"group": info.group, "version": info.version, "kind": info.kind},
        "parameters": [
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
        ],
        "responses": {"200": {"description": "OK"}},
    }


def group_version(resources: list[ResourceInfo], path: str) -> dict[str, Any] | None:
    """``/openapi/v3/apis/G/V`` (or ``api/v1``), or None when not served."""
    served = [i for i in resources if _prefix(i.group, i.version) == path.strip("/")]
    if not served:
        return None
    paths: dict[str, Any] = {}
    schemas = {_schema_name(i): _crd_schema(i) for i in served if i.crd is not None and _crd_schema(i)}
    for info in served:
        base = "/" + _prefix(info.group, info.version) + ("/namespaces/{namespace}" if info.namespaced else "")
        paths[f"{base}/{info.plural}"] = {"post": _operation(info, "post")}
        paths[f"{base}/{info.plural}/{{name}}"] = {"put": _operation(info, "put"), "patch": _operation(info, "patch")}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (deepseek-sandbox)", "version": "v1.33.0"},
            "paths": paths, "components": {"schemas": schemas}}


def _schema_name(info: ResourceInfo) -> str:
    """Like the apiserver's: reversed group, version, kind (e.g. ai.deepseek.v1alpha1.DeepSeekDeployment)."""
    return ".".join([*reversed(info.group.split(".")), info.version, info.kind])


def _crd_schema(info: ResourceInfo) -> dict[str, Any]:
    """The served version's openAPIV3Schema, tagged with its GVK (what kubectl explain looks up)."""
    assert info.crd is not None
    for version in info.crd.get("spec", {}).get("versions", []):
        if version.get("name") == info.version and "schema" in version:
            schema = dict(version["schema"].get("openAPIV3Schema", {}))
            props = dict(schema.get("properties", {}))
            props.setdefault("apiVersion", {"type": "string", "description": "APIVersion of this representation."})
            props.setdefault("kind", {"type": "string", "description": "Kind of this object."})
            props["metadata"] = {"type": "object", "description": "Standard object metadata."}
            schema["properties"] = props
            schema["x-kubernetes-group-version-kind"] = [
                {"group": info.group, "version": info.version, "kind": info.kind}]
            return schema
    return {}
