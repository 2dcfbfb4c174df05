"""Minimal OpenAPI v3 documents, enough for kubectl's "does the server validate fields?" probe.

kubectl (``--validate=strict``, the default) refuses to apply anything when ``/openapi/v3`` is
missing. When a group-version document lists the resource's write operations with a
``fieldValidation`` query parameter, kubectl delegates validation to the server instead (and the
sandbox validates custom resources through admission). No schemas are published, so kubectl's
client-side apply falls back to its compiled-in patch metadata (built-ins) or merge patches (CRs).
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
    for info in served:
        base = "/" + _prefix(info.group, info.version) + ("/namespaces/{namespace}" if info.namespaced else "")
        paths[f"{base}/{info.plural}"] = {"post": _operation(info, "post")}
        paths[f"{base}/{info.plural}/{{name}}"] = {"put": _operation(info, "put"), "patch": _operation(info, "patch")}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (deepseek-sandbox)", "version": "v1.33.0"},
            "paths": paths, "components": {"schemas": {}}}
