"""A LeaderWorkerSet's status read as a Deployment's, so observe.variant_state classifies both. Pure.

The LWS controller (kubernetes-sigs/lws v0.10) reports, counting groups (a leader and its workers):
`replicas`, `readyReplicas` (groups whose every pod is ready), `updatedReplicas` (groups on the current
template), `observedGeneration`, and the conditions Available (AllGroupsReady), Progressing
(GroupsProgressing) and UpdateInProgress (GroupsUpdating). It has no available count, no progress
deadline and no ReplicaFailure: a ready group counts as available, and a settled LeaderWorkerSet
(Available, no update in progress) reads as a Deployment whose new ReplicaSet is available. Available
turns False as soon as a group is not ready, so a group that loses readiness later reads as rolling
out again, not as `Unavailable`. A missing LeaderWorkerSet is None, as a missing Deployment is (the
variant is being created).
"""

from __future__ import annotations

from typing import Any


def _true(obj: dict[str, Any], ctype: str) -> bool:
    return any(c.get("type") == ctype and c.get("status") == "True"
               for c in obj.get("status", {}).get("conditions", []) or [])


def as_deployment(lws: dict[str, Any] | None) -> dict[str, Any] | None:
    """The Deployment-shaped reading of `lws` (module docstring)."""
    if lws is None:
        return None
    st = lws.get("status", {}) or {}
    ready = int(st.get("readyReplicas", 0))
    settled = _true(lws, "Available") and not _true(lws, "UpdateInProgress")
    progressing = {"type": "Progressing", "status": "True",
                   "reason": "NewReplicaSetAvailable" if settled else "ReplicaSetUpdated"}
    return {
        "metadata": dict(lws.get("metadata", {})),
        "spec": {"replicas": lws.get("spec", {}).get("replicas", 1)},
        "status": {
            "observedGeneration": int(st.get("observedGeneration", 0)),
            "replicas": int(st.get("replicas", 0)),
            "readyReplicas": ready,
            "updatedReplicas": int(st.get("updatedReplicas", 0)),
            "availableReplicas": ready,
            "conditions": [progressing],
        },
    }
