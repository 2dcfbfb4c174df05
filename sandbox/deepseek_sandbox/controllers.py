"""The deployment controller (pods per Deployment, rolling updates, status) and the control loop.

No ReplicaSet objects are kept: pods are owned by their Deployment directly and carry the
``pod-template-hash`` label, named ``<deployment>-<hash>-<suffix>`` as in a real cluster. A rolling
update follows kube-controller-manager's arithmetic for maxSurge / maxUnavailable (ints or
percents; surge rounds up, unavailable rounds down), so it proceeds replica by replica.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from typing import Any

from . import errors, meta
from .resources import ResourceInfo
from .store import Store

_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: dict[str, Any]) -> str:
    """A stable 10-character hash of a pod template (the ``pod-template-hash`` label)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:10])


def _resolve(value: Any, total: int, round_up: bool, default: str) -> int:
    value = default if value is None else value
    if isinstance(value, str) and value.endswith("%"):
        exact = total * int(value[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value)


def surge_and_unavailable(dep: dict[str, Any], replicas: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as pod counts; never both zero (the apiserver forbids it)."""
    strategy = (dep.get("spec") or {}).get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0, replicas
    ru = strategy.get("rollingUpdate") or {}
    surge = _resolve(ru.get("maxSurge"), replicas, True, "25%")
    unavailable = _resolve(ru.get("maxUnavailable"), replicas, False, "25%")
    return surge, (1 if surge == 0 and unavailable == 0 else unavailable)


def pod_ready(pod: dict[str, Any]) -> bool:
    """The pod's Ready condition is True."""
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


class DeploymentController:
    """Keeps each Deployment's pods and status in line with its spec."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.progress: dict[str, tuple[Any, float]] = {}  # deployment uid -> (signature, when)

    def _info(self, plural: str, group: str = "") -> ResourceInfo:
        info = self.store.lookup(group, "v1", plural)
        assert info is not None
        return info

    async def sync(self) -> None:
        """One pass over every Deployment."""
        pods = self.store.items(self._info("pods"))
        for dep in self.store.items(self._info("deployments", "apps")):
            if dep["metadata"].get("deletionTimestamp"):
                continue
            uid = dep["metadata"]["uid"]
            owned = [p for p in pods if uid in meta.owner_uids(p) and not p["metadata"].get("deletionTimestamp")]
            with contextlib.suppress(_Gone):
                await self._reconcile(dep, owned)

    async def _reconcile(self, dep: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        spec = dep.get("spec") or {}
        want = int(spec.get("replicas", 1))
        current = template_hash(spec.get("template") or {})
        new = [p for p in pods if (p["metadata"].get("labels") or {}).get("pod-template-hash") == current]
        old = [p for p in pods if p not in new]
        if not spec.get("paused"):
            await self._scale(dep, want, new, old, current)
        await self._write_status(dep, want, current)

    async def _scale(self, dep: dict[str, Any], want: int, new: list[dict[str, Any]],
                     old: list[dict[str, Any]], current: str) -> None:
        surge, unavailable = surge_and_unavailable(dep, want)
        total = len(new) + len(old)
        creatable = min(want - len(new), want + surge - total)
        for _ in range(max(creatable, 0)):
            await self._create_pod(dep, current)
        if not old and len(new) > want:
            extra = sorted(new, key=lambda p: (pod_ready(p), p["metadata"]["creationTimestamp"]))
            for pod in extra[: len(new) - want]:
                await self._delete_pod(pod)
            return
        await self._scale_down_old(want, unavailable, new, old)

    async def _scale_down_old(self, want: int, unavailable: int, new: list[dict[str, Any]],
                              old: list[dict[str, Any]]) -> None:
        min_available = want - unavailable
        new_unavailable = sum(1 for p in new if not pod_ready(p))
        budget = len(new) + len(old) - min_available - new_unavailable
        # First old pods that are not ready (they cost no availability), then ready ones.
        for pod in sorted(old, key=pod_ready):
            if budget <= 0:
                return
            available = sum(1 for p in new + old if pod_ready(p))
            if pod_ready(pod) and available - 1 < min_available:
                return
            await self._delete_pod(pod)
            old = [p for p in old if p is not pod]
            budget -= 1

    async def _create_pod(self, dep: dict[str, Any], current: str) -> None:
        md, template = dep["metadata"], (dep.get("spec") or {}).get("template") or {}
        tmd = template.get("metadata") or {}
        pod = {
            "metadata": {
                "name": f"{md['name']}-{current}-{meta.random_suffix()}",
                "labels": {**(tmd.get("labels") or {}), "pod-template-hash": current},
                "annotations": dict(tmd.get("annotations") or {}),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": md["name"],
                                     "uid": md["uid"], "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": dict(template.get("spec") or {}),
        }
        if not pod["metadata"]["annotations"]:
            del pod["metadata"]["annotations"]
        try:
            await self.store.create(self._info("pods"), md["namespace"], pod)
        except errors.ApiError as exc:
            if exc.code == 404:
                raise _Gone from exc
            raise

    async def _delete_pod(self, pod: dict[str, Any]) -> None:
        with contextlib.suppress(errors.ApiError):
            await self.store.delete(self._info("pods"), pod["metadata"]["namespace"], pod["metadata"]["name"])

    async def _write_status(self, dep: dict[str, Any], want: int, current: str) -> None:
        info = self._info("pods")
        uid = dep["metadata"]["uid"]
        pods = [p for p in self.store.items(info, dep["metadata"]["namespace"])
                if uid in meta.owner_uids(p) and not p["metadata"].get("deletionTimestamp")]
        status = self._status(dep, want, current, pods)
        try:
            await self.store.update(self._info("deployments", "apps"), dep["metadata"]["namespace"],
                                    dep["metadata"]["name"], lambda d: _merge_status(d, status), "status")
        except errors.ApiError as exc:
            if exc.code == 404:
                raise _Gone from exc
            raise

    def _status(self, dep: dict[str, Any], want: int, current: str, pods: list[dict[str, Any]]) -> dict[str, Any]:
        labels_current = [p for p in pods if (p["metadata"].get("labels") or {}).get("pod-template-hash") == current]
        ready = sum(1 for p in pods if pod_ready(p))
        updated = len(labels_current)
        _, unavailable = surge_and_unavailable(dep, want)
        counts = {"replicas": len(pods), "updatedReplicas": updated, "readyReplicas": ready,
                  "availableReplicas": ready, "unavailableReplicas": max(len(pods) - ready, 0)}
        status: dict[str, Any] = {k: v for k, v in counts.items() if v}
        status["observedGeneration"] = dep["metadata"].get("generation", 1)
        complete = updated == want and len(pods) == want and ready == want
        rs_name = f"{dep['metadata']['name']}-{current}"
        status["conditions"] = [
            _cond("Available", ready >= want - unavailable,
                  "MinimumReplicasAvailable" if ready >= want - unavailable else "MinimumReplicasUnavailable",
                  "Deployment has minimum availability." if ready >= want - unavailable
                  else "Deployment does not have minimum availability."),
            self._progressing(dep, complete, (status["observedGeneration"], updated, ready, len(pods)), rs_name),
        ]
        return status

    def _progressing(self, dep: dict[str, Any], complete: bool, signature: Any, rs_name: str) -> dict[str, Any]:
        uid = dep["metadata"]["uid"]
        now = time.monotonic()
        seen = self.progress.get(uid)
        if seen is None or seen[0] != signature:
            self.progress[uid] = seen = (signature, now)
        if complete:
            msg = f'ReplicaSet "{rs_name}" has successfully progressed.'
            return _cond("Progressing", True, "NewReplicaSetAvailable", msg)
        deadline = float((dep.get("spec") or {}).get("progressDeadlineSeconds", 600))
        if now - seen[1] > deadline:
            msg = f'ReplicaSet "{rs_name}" has timed out progressing.'
            return _cond("Progressing", False, "ProgressDeadlineExceeded", msg)
        return _cond("Progressing", True, "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')


class _Gone(Exception):
    """The deployment (or its namespace) vanished mid-pass."""


def _cond(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}


def _merge_status(dep: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """Install ``status`` keeping condition timestamps unless status/reason changed."""
    old = {c["type"]: c for c in (dep.get("status") or {}).get("conditions") or []}
    for cond in status["conditions"]:
        prev = old.get(cond["type"])
        unchanged = prev is not None and (prev.get("status"), prev.get("reason")) == (cond["status"], cond["reason"])
        stamp = meta.now_iso()
        cond["lastTransitionTime"] = prev.get("lastTransitionTime", stamp) if unchanged and prev else stamp
        cond["lastUpdateTime"] = prev.get("lastUpdateTime", stamp) if unchanged and prev else stamp
    dep["status"] = status
    return dep
