"""Object metadata realism: uids, resourceVersions, timestamps, generations, subresource rules.

kmock 0.8 stores bodies verbatim: no ``uid``, ``resourceVersion``, ``creationTimestamp`` or
``generation``. kopf's finalizer patch starts with ``test /metadata/resourceVersion``, so without
these every kopf patch fails; these helpers stamp and carry them the way kube-apiserver does.
"""

from __future__ import annotations

import copy
import datetime
import secrets
import uuid
from typing import Any

from . import errors
from .resources import ResourceInfo

SERVER_OWNED = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")


def now_iso() -> str:
    """The current UTC time in the API's RFC 3339 second precision."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime.datetime:
    """Parse an RFC 3339 timestamp as written by :func:`now_iso` (or with fractions/offsets)."""
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _payload(obj: dict[str, Any]) -> dict[str, Any]:
    """Everything that counts towards ``generation``: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def stamp_new(info: ResourceInfo, body: dict[str, Any], namespace: str | None, rv: int) -> dict[str, Any]:
    """A freshly created object: identity, timestamps, generation 1, status reset if a subresource."""
    obj = copy.deepcopy(body)
    obj["apiVersion"] = info.api_version
    obj["kind"] = info.kind
    meta = obj.setdefault("metadata", {})
    for key in ("deletionTimestamp", "deletionGracePeriodSeconds"):
        meta.pop(key, None)
    if info.namespaced:
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)
    meta["uid"] = str(uuid.uuid4())
    meta["resourceVersion"] = str(rv)
    meta["creationTimestamp"] = now_iso()
    meta["generation"] = 1
    if info.status and info.kind not in ("Pod", "Service", "Namespace"):
        # The apiserver resets .status on create for resources with a status subresource.
        obj.pop("status", None)
    return obj


def check_resource_version(info: ResourceInfo, old: dict[str, Any], new: dict[str, Any]) -> None:
    """409 Conflict if ``new`` carries a resourceVersion other than the stored one."""
    given = new.get("metadata", {}).get("resourceVersion")
    if given not in (None, "") and str(given) != old["metadata"]["resourceVersion"]:
        raise errors.conflict(info.plural, info.group, old["metadata"]["name"])


def merge_update(
    info: ResourceInfo, old: dict[str, Any], new: dict[str, Any], subresource: str | None
) -> dict[str, Any]:
    """The object to store after an update of the main resource or ``/status``.

    With a status subresource, the main resource ignores ``.status`` and ``/status`` changes only
    ``.status`` (both as kube-apiserver). Server-owned metadata is carried over; generation bumps
    only when the payload outside metadata/status changes. resourceVersion is left to the caller.
    """
    if subresource == "status":
        result = copy.deepcopy(old)
        if "status" in new:
            result["status"] = copy.deepcopy(new["status"])
        else:
            result.pop("status", None)
        return result
    result = copy.deepcopy(new)
    result["apiVersion"], result["kind"] = old["apiVersion"], old["kind"]
    if info.status:
        if "status" in old:
            result["status"] = copy.deepcopy(old["status"])
        else:
            result.pop("status", None)
    meta = result.setdefault("metadata", {})
    old_meta = old["metadata"]
    for key in (*SERVER_OWNED, "name", "namespace"):
        if key in old_meta:
            meta[key] = old_meta[key]
        else:
            meta.pop(key, None)
    if _payload(result) != _payload(old):
        meta["generation"] = int(old_meta.get("generation", 1)) + 1
    return result


def same_content(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether an update changes nothing but the resourceVersion (a no-op write)."""
    a, b = copy.deepcopy(old), copy.deepcopy(new)
    a["metadata"].pop("resourceVersion", None)
    b.get("metadata", {}).pop("resourceVersion", None)
    return a == b


def owner_uids(obj: dict[str, Any]) -> list[str]:
    """uids named by the object's ownerReferences."""
    return [ref.get("uid", "") for ref in obj.get("metadata", {}).get("ownerReferences") or []]


def random_suffix(length: int = 5) -> str:
    """A name suffix from the apiserver's alphabet (no vowels, no look-alike digits)."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))
