"""The simulated kubelet and scheduler: pods get a node, start, turn Ready, or fail on purpose.

Failures are chosen by image name (case-insensitive substring), so operator rollouts can be
tested end to end without real images:

``never-ready``                        Running, never Ready
``crashloop``                          waiting CrashLoopBackOff, restartCount grows
``imagepullbackoff`` / ``does-not-exist``  Pending, waiting ImagePullBackOff
``oomkilled``                          CrashLoopBackOff, lastState terminated OOMKilled (137)
``modelloadfail``                      terminated exit 1 "model load failed: ...", restarts grow
``oomatload``                          terminated exit 4 "out of GPU memory while loading the model: ..."

GPU capacity is ``nodes`` x ``gpus_per_node`` of ``nvidia.com/gpu``; nodes carry the labels of the real
control plane's fake GPU nodes (NODE_LABELS). A pod whose nodeSelector no node matches, or that does
not fit, stays Pending with PodScheduled=False/Unschedulable and the real scheduler's words ("N node(s)
didn't match Pod's node affinity/selector.", "N Insufficient nvidia.com/gpu."). Readiness can be forced per pod with
:meth:`Kubelet.set_ready` or the annotation ``sandbox.deepseek.ai/ready: "false"``.
"""

from __future__ import annotations

import copy
import hashlib
import time
from typing import Any

from . import errors, meta
from .store import Store

GPU = "nvidia.com/gpu"
READY_ANNOTATION = "sandbox.deepseek.ai/ready"
NODE_PREFIX = "sandbox-node-"
# As tools/control-plane/gpu-nodes.yaml labels its nodes (NVIDIA GPU feature discovery's labels).
NODE_LABELS = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
               "nvidia.com/gpu.memory": "81559"}


def requests_of(pod: dict[str, Any]) -> dict[str, int]:
    """Extended-resource requests (names with a '/') of the pod's containers, limits winning."""
    total: dict[str, int] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        res = container.get("resources") or {}
        merged = {**(res.get("requests") or {}), **(res.get("limits") or {})}
        for name, qty in merged.items():
            if "/" in name:
                total[name] = total.get(name, 0) + int(str(qty))
    return total


def failure_mode(pod: dict[str, Any]) -> str | None:
    """The simulated failure selected by the pod's images, if any."""
    images = " ".join(str(c.get("image", "")) for c in (pod.get("spec") or {}).get("containers") or []).lower()
    for mode in ("imagepullbackoff", "does-not-exist", "crashloop", "oomkilled", "modelloadfail", "oomatload",
                 "never-ready"):
        if mode in images:
            return "imagepullbackoff" if mode == "does-not-exist" else mode
    return None


def _condition(kind: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    cond: dict[str, Any] = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


class Kubelet:
    """Schedules pods onto simulated GPU nodes and keeps their status moving."""

    def __init__(self, store: Store, ready_delay: float, gpus_per_node: int, nodes: int) -> None:
        self.store = store
        self.ready_delay = ready_delay
        self.gpus_per_node = gpus_per_node
        self.nodes = [f"{NODE_PREFIX}{i}" for i in range(nodes)]
        self.overrides: dict[tuple[str, str], bool] = {}
        self.started: dict[str, float] = {}  # pod uid -> monotonic start time

    def set_ready(self, namespace: str, name: str, ready: bool | None) -> None:
        """Force readiness of one pod; None returns it to the simulation."""
        if ready is None:
            self.overrides.pop((namespace, name), None)
        else:
            self.overrides[(namespace, name)] = ready

    async def seed_nodes(self) -> None:
        """Create the Node objects (capacity and allocatable GPUs, Ready)."""
        info = self.store.lookup("", "v1", "nodes")
        assert info is not None
        for name in self.nodes:
            cap = {"cpu": "64", "memory": "512Gi", "pods": "110", GPU: str(self.gpus_per_node)}
            status = {"capacity": cap, "allocatable": cap,
                      "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}
            await self.store.create(info, None, {"metadata": {"name": name, "labels": self._labels(name)},
                                                 "status": status})

    async def sync(self) -> None:
        """One pass over all pods: schedule the pending, then refresh every status."""
        info = self.store.lookup("", "v1", "pods")
        assert info is not None
        pods = [p for p in self.store.items(info) if not p["metadata"].get("deletionTimestamp")]
        free = self._free_gpus(pods)
        now = time.monotonic()
        for pod in pods:
            md = pod["metadata"]
            if not (pod.get("spec") or {}).get("nodeName"):
                node = self._fit(pod, free)
                if node is not None:
                    await self._write(md, lambda p, n=node: _bind(p, n), None)
                    self.started[md["uid"]] = now
                    continue
            elif md["uid"] not in self.started:
                self.started[md["uid"]] = now
            status = self._status(pod, now)
            await self._write(md, lambda p, s=status: _with_status(p, s), "status")
        live = {p["metadata"]["uid"] for p in pods}
        self.started = {uid: t for uid, t in self.started.items() if uid in live}

    async def _write(self, md: dict[str, Any], change: Any, sub: str | None) -> None:
        info = self.store.lookup("", "v1", "pods")
        assert info is not None
        try:
            await self.store.update(info, md["namespace"], md["name"], change, sub)
        except errors.ApiError as exc:
            if exc.code != 404:  # the pod went away meanwhile: nothing to do
                raise

    def _free_gpus(self, pods: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
        free = {node: {GPU: self.gpus_per_node} for node in self.nodes}
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            if node in free:
                for res, qty in requests_of(pod).items():
                    free[node][res] = free[node].get(res, 0) - qty
        return free

    def _labels(self, node: str) -> dict[str, str]:
        return {"kubernetes.io/hostname": node, **NODE_LABELS, "nvidia.com/gpu.count": str(self.gpus_per_node)}

    def _selected(self, pod: dict[str, Any]) -> list[str]:
        """Nodes whose labels match the pod's nodeSelector (affinity and taints are not emulated)."""
        selector = (pod.get("spec") or {}).get("nodeSelector") or {}
        return [n for n in self.nodes if all(self._labels(n).get(k) == v for k, v in selector.items())]

    def _fit(self, pod: dict[str, Any], free: dict[str, dict[str, int]]) -> str | None:
        wants = requests_of(pod)
        for node in self._selected(pod):
            if all(free[node].get(res, 0) >= qty for res, qty in wants.items()):
                for res, qty in wants.items():
                    free[node][res] = free[node].get(res, 0) - qty
                return node
        return None

    def _unschedulable(self, pod: dict[str, Any]) -> dict[str, Any]:
        wants = requests_of(pod)
        n, selected = len(self.nodes), len(self._selected(pod))
        reasons = [f"{n - selected} node(s) didn't match Pod's node affinity/selector."] if selected < n else []
        if selected:
            reasons += [f"{selected} Insufficient {res}." for res in sorted(wants)]
        msg = f"0/{n} nodes are available: {' '.join(reasons)}"
        return {"phase": "Pending", "conditions": [_condition("PodScheduled", False, "Unschedulable", msg)],
                "qosClass": "Burstable"}

    def _status(self, pod: dict[str, Any], now: float) -> dict[str, Any]:
        spec = pod.get("spec") or {}
        if not spec.get("nodeName"):
            return self._unschedulable(pod)
        age = now - self.started.get(pod["metadata"]["uid"], now)
        mode = failure_mode(pod)
        ready = self._ready(pod, age, mode)
        containers = [self._container(pod, c, age, mode, ready) for c in spec.get("containers") or []]
        phase = "Pending" if mode == "imagepullbackoff" else "Running"
        unready = [c["name"] for c in containers if not c["ready"]]
        msg = f"containers with unready status: [{' '.join(unready)}]" if unready else ""
        reason = "ContainersNotReady" if unready else ""
        return {
            "phase": phase,
            "conditions": [
                _condition("PodReadyToStartContainers", True), _condition("Initialized", True),
                _condition("Ready", not unready, reason, msg), _condition("ContainersReady", not unready, reason, msg),
                _condition("PodScheduled", True),
            ],
            "hostIP": "10.0.0.1", "podIP": _pod_ip(pod["metadata"]["uid"]), "qosClass": "Burstable",
            "containerStatuses": containers,
        }

    def _ready(self, pod: dict[str, Any], age: float, mode: str | None) -> bool:
        md = pod["metadata"]
        forced = self.overrides.get((md["namespace"], md["name"]))
        annotation = (md.get("annotations") or {}).get(READY_ANNOTATION)
        if mode not in (None, "never-ready"):
            return False
        if forced is not None:
            return forced
        if annotation is not None:
            return str(annotation).lower() != "false"
        return mode is None and age >= self.ready_delay

    def _container(self, pod: dict[str, Any], c: dict[str, Any], age: float, mode: str | None,
                   ready: bool) -> dict[str, Any]:
        name, image = c.get("name", "main"), c.get("image", "")
        restarts = 1 + int(age / max(self.ready_delay, 0.2))
        started = mode is None or mode == "never-ready"
        base = {"name": name, "image": image, "imageID": "", "ready": ready, "started": started,
                "restartCount": 0}
        crashed = {"exitCode": 1, "reason": "Error", "startedAt": meta.now_iso(), "finishedAt": meta.now_iso()}
        if mode == "imagepullbackoff":
            return {**base, "state": {"waiting": {"reason": "ImagePullBackOff",
                                                  "message": f'Back-off pulling image "{image}": not found'}}}
        if mode in ("crashloop", "oomkilled"):
            last = {**crashed, "reason": "OOMKilled", "exitCode": 137} if mode == "oomkilled" else crashed
            msg = f"back-off 10s restarting failed container={name} pod={pod['metadata']['name']}"
            return {**base, "restartCount": restarts, "lastState": {"terminated": last},
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": msg}}}
        if mode == "oomatload":
            term = {**crashed, "exitCode": 4, "message": "out of GPU memory while loading the model: OutOfMemoryError: "
                    "CUDA out of memory. Tried to allocate 2.00 GiB"}
            return {**base, "restartCount": restarts, "state": {"terminated": term}, "lastState": {"terminated": term}}
        if mode == "modelloadfail":
            term = {**crashed, "message": f"model load failed: cannot load weights for image {image}"}
            return {**base, "restartCount": restarts, "state": {"terminated": term}, "lastState": {"terminated": term}}
        return {**base, "state": {"running": {"startedAt": pod["metadata"].get("creationTimestamp")}}}


def _pod_ip(uid: str) -> str:
    digest = hashlib.sha256(uid.encode()).digest()
    return f"10.244.{digest[0]}.{max(digest[1], 2)}"


def _bind(pod: dict[str, Any], node: str) -> dict[str, Any]:
    pod.setdefault("spec", {})["nodeName"] = node
    return pod


def _with_status(pod: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """Install ``status``, keeping times of unchanged conditions and states (no needless writes)."""
    old = pod.get("status") or {}
    new = copy.deepcopy(status)
    new["startTime"] = old.get("startTime") or meta.now_iso()
    old_conds = {c["type"]: c for c in old.get("conditions") or []}
    for cond in new.get("conditions") or []:
        prev = old_conds.get(cond["type"])
        same = prev is not None and prev.get("status") == cond["status"]
        cond["lastTransitionTime"] = prev.get("lastTransitionTime") if same and prev else meta.now_iso()
    old_cs = {c["name"]: c for c in old.get("containerStatuses") or []}
    for cs in new.get("containerStatuses") or []:
        prev = old_cs.get(cs["name"])
        if prev is not None and prev.get("restartCount") == cs.get("restartCount"):
            for key in ("state", "lastState"):
                if key in prev and prev[key].keys() == (cs.get(key) or {}).keys():
                    cs[key] = prev[key]  # same state: keep its timestamps
    pod["status"] = new
    return pod
