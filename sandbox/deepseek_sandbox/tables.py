"""Server-side Table printing (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``).

kmock 0.8 has no Table support, so ``kubectl get`` would print only NAME. Columns come from a
CRD's additionalPrinterColumns (simple JSONPath) or, for built-ins, kubectl's usual defaults.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from typing import Any

from . import meta
from .resources import ResourceInfo

Row = Callable[[dict[str, Any]], list[Any]]
_TOKEN = re.compile(
    r"\.([A-Za-z0-9_\-/]+)"
    r"|\[(\d+)\]"
    r"|\[\?\(@\.([\w.\-]+)\s*==\s*[\"']([^\"']*)[\"']\)\]"
    r"|\[\*\]"
)


def jsonpath(obj: Any, path: str) -> Any:
    """Evaluate the JSONPath subset printer columns use; None when anything is missing.

    Supports ``.a.b``, ``[0]``, ``[*]`` and ``[?(@.type=="Ready")]`` (first match).
    """
    cur: Any = obj
    for match in _TOKEN.finditer(path.strip().lstrip("{").rstrip("}").lstrip("$")):
        field, index, fkey, fval = match.groups()
        if cur is None:
            return None
        if field is not None:
            cur = cur.get(field) if isinstance(cur, dict) else None
        elif index is not None:
            cur = cur[int(index)] if isinstance(cur, list) and int(index) < len(cur) else None
        elif fkey is not None:
            items = cur if isinstance(cur, list) else []
            hits = [i for i in items if isinstance(i, dict) and str(jsonpath(i, "." + fkey)) == fval]
            cur = hits[0] if hits else None
    return cur


def human_age(timestamp: str | None) -> str:
    """kubectl's HumanDuration of the time since ``timestamp`` ("<unknown>" if absent)."""
    if not timestamp:
        return "<unknown>"
    secs = int((datetime.datetime.now(datetime.UTC) - meta.parse_time(timestamp)).total_seconds())
    secs = max(secs, 0)
    mins, hours, days = secs // 60, secs // 3600, secs // 86400
    if secs < 120:
        return f"{secs}s"
    if mins < 10:
        return f"{mins}m{secs % 60}s" if secs % 60 else f"{mins}m"
    if hours < 3:
        return f"{mins}m"
    if hours < 8:
        return f"{hours}h{mins % 60}m" if mins % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def _col(name: str, kind: str = "string", fmt: str = "", priority: int = 0) -> dict[str, Any]:
    return {"name": name, "type": kind, "format": fmt, "description": name, "priority": priority}


def _age(obj: dict[str, Any]) -> str:
    return human_age(obj["metadata"].get("creationTimestamp"))


def _deployment(obj: dict[str, Any]) -> list[Any]:
    st = obj.get("status") or {}
    want = (obj.get("spec") or {}).get("replicas", 1)
    return [obj["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{want}",
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0), _age(obj)]


def pod_status_reason(obj: dict[str, Any]) -> str:
    """The STATUS column of ``kubectl get pods`` (Terminating, waiting/terminated reason, phase)."""
    if obj["metadata"].get("deletionTimestamp"):
        return "Terminating"
    st = obj.get("status") or {}
    for cs in st.get("containerStatuses") or []:
        state = cs.get("state") or {}
        for key in ("waiting", "terminated"):
            if state.get(key, {}).get("reason"):
                return str(state[key]["reason"])
    return str(st.get("phase", "Pending"))


def _pod(obj: dict[str, Any]) -> list[Any]:
    st = obj.get("status") or {}
    statuses = st.get("containerStatuses") or []
    total = len((obj.get("spec") or {}).get("containers") or []) or len(statuses)
    ready = sum(1 for cs in statuses if cs.get("ready"))
    restarts = sum(int(cs.get("restartCount", 0)) for cs in statuses)
    return [obj["metadata"]["name"], f"{ready}/{total}", pod_status_reason(obj), restarts, _age(obj),
            st.get("podIP"), (obj.get("spec") or {}).get("nodeName")]


def _service(obj: dict[str, Any]) -> list[Any]:
    spec = obj.get("spec") or {}
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []) or "<none>"
    return [obj["metadata"]["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP", "<none>"),
            "<none>", ports, _age(obj)]


_BUILTIN: dict[str, tuple[list[dict[str, Any]], Row]] = {
    "apps/v1/deployments": ([_col("Name", fmt="name"), _col("Ready"), _col("Up-to-date", "integer"),
                             _col("Available", "integer"), _col("Age")], _deployment),
    "v1/pods": ([_col("Name", fmt="name"), _col("Ready"), _col("Status"), _col("Restarts", "integer"),
                 _col("Age"), _col("IP", priority=1), _col("Node", priority=1)], _pod),
    "v1/services": ([_col("Name", fmt="name"), _col("Type"), _col("Cluster-IP"), _col("External-IP"),
                     _col("Port(s)"), _col("Age")], _service),
}


def _custom_columns(info: ResourceInfo) -> tuple[list[dict[str, Any]], Row]:
    cols = info.printer_columns
    defs = [_col("Name", fmt="name")] + [
        _col(c["name"], "string" if c.get("type") == "date" else c.get("type", "string"),
             c.get("format", ""), int(c.get("priority", 0)))
        for c in cols
    ]

    def row(obj: dict[str, Any]) -> list[Any]:
        return [obj["metadata"]["name"]] + [_cell(obj, c) for c in cols]

    return defs, row


def _cell(obj: dict[str, Any], column: dict[str, Any]) -> Any:
    value = jsonpath(obj, column.get("jsonPath", ""))
    if column.get("type") == "date":
        return human_age(value) if isinstance(value, str) else None
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return value


def columns(info: ResourceInfo) -> tuple[list[dict[str, Any]], Row]:
    """Column definitions and the row function for ``info``."""
    if info.printer_columns:
        return _custom_columns(info)
    known = _BUILTIN.get(f"{info.api_version}/{info.plural}")
    if known is not None:
        return known
    return [_col("Name", fmt="name"), _col("Age")], lambda o: [o["metadata"]["name"], _age(o)]


def table(info: ResourceInfo, objs: list[dict[str, Any]], rv: str, include: str = "Object") -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table of ``objs``; rows carry the object (or only its metadata)."""
    defs, row = columns(info)
    return {
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
        "columnDefinitions": defs,
        "rows": [{"cells": row(o), "object": _row_object(o, include)} for o in objs],
    }


def _row_object(obj: dict[str, Any], include: str) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Metadata":
        return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
    return obj


def wants_table(accept: str) -> bool:
    """Whether the client asked for a Table rendering."""
    return "as=Table" in accept
