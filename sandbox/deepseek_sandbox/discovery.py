"""API discovery documents (``/api``, ``/api/v1``, ``/apis``, ``/apis/G``, ``/apis/G/V``, ``/version``).

Served by the sandbox rather than kmock 0.8 because kmock reports the core groupVersion as
``/v1`` (breaking kubectl's mapping of every core resource) and copies a resource's short names
onto its subresource entries (kubectl then warns about ambiguous short names).
"""

from __future__ import annotations

import re
from typing import Any

from .resources import VERBS, ResourceInfo

VERSION_INFO = {
    "major": "1", "minor": "33", "gitVersion": "v1.33.0-sandbox", "gitCommit": "sandbox",
    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
    "compiler": "gc", "platform": "linux/amd64",
}


def _entries(info: ResourceInfo) -> list[dict[str, Any]]:
    main: dict[str, Any] = {
        "name": info.plural, "singularName": info.singular or info.kind.lower(),
        "namespaced": info.namespaced, "kind": info.kind, "verbs": VERBS,
    }
    if info.short_names:
        main["shortNames"] = list(info.short_names)
    if info.categories:
        main["categories"] = list(info.categories)
    subs: list[dict[str, Any]] = [
        {"name": f"{info.plural}/status", "singularName": "", "namespaced": info.namespaced,
         "kind": info.kind, "verbs": ["get", "patch", "update"]},
    ] if info.status else []
    if info.scale is not None:
        subs.append({"name": f"{info.plural}/scale", "singularName": "", "namespaced": info.namespaced,
                     "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]})
    return [main, *subs]


def resource_list(resources: list[ResourceInfo], group: str, version: str) -> dict[str, Any] | None:
    """APIResourceList for one group/version, or None when nothing is served there."""
    served = [info for info in resources if info.group == group and info.version == version]
    if not served and group:
        return None
    return {
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [entry for info in sorted(served, key=lambda i: i.plural) for entry in _entries(info)],
    }


def _versions(resources: list[ResourceInfo], group: str) -> list[str]:
    found = sorted({info.version for info in resources if info.group == group}, key=_version_rank)
    return found


def _version_rank(version: str) -> tuple[int, int, int]:
    """Order like the apiserver: GA > beta > alpha, then higher numbers first."""
    match = re.match(r"v(\d+)(alpha|beta)?(\d*)", version)
    if not match:
        return (3, 0, 0)
    major, stage, minor = match.groups()
    stage_rank = {"alpha": 2, "beta": 1, None: 0}[stage]
    return (stage_rank, -int(major), -int(minor or 0))


def api_group(resources: list[ResourceInfo], group: str) -> dict[str, Any] | None:
    """APIGroup for ``group``, or None if not served."""
    versions = _versions(resources, group)
    if not versions:
        return None
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(resources: list[ResourceInfo]) -> dict[str, Any]:
    """APIGroupList of every non-core group."""
    groups = sorted({info.group for info in resources if info.group})
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [g for g in (api_group(resources, name) for name in groups) if g is not None]}


def api_versions() -> dict[str, Any]:
    """The core ``/api`` document."""
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
