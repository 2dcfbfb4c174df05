"""Deployment controller and kubelet: readiness, rolling updates, failures, GPUs, manual readiness."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from deepseek_sandbox import Sandbox
from deepseek_sandbox.controllers import pod_ready

from .conftest import Kubectl, deployment, eventually


def _pods(sb: Sandbox, app: str) -> list[dict[str, Any]]:
    return sb.objects("pods", "default", f"app={app}")


def _status(sb: Sandbox, name: str) -> dict[str, Any]:
    return (sb.get("deployments", "default", name) or {}).get("status") or {}


def _cond(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("conditions") or []) if c["type"] == kind), {})


async def test_deployment_becomes_ready_with_real_status(sandbox: Sandbox, kubectl: Kubectl) -> None:
    await kubectl("apply", "-f", "-", stdin=deployment("web", replicas=3))
    await eventually(lambda: _status(sandbox, "web").get("readyReplicas") == 3)
    st = _status(sandbox, "web")
    assert st["replicas"] == st["updatedReplicas"] == st["availableReplicas"] == 3
    assert st["observedGeneration"] == 1
    assert _cond(st, "Available")["status"] == "True"
    assert _cond(st, "Progressing")["reason"] == "NewReplicaSetAvailable"
    for pod in _pods(sandbox, "web"):
        md = pod["metadata"]
        assert md["name"].startswith(f"web-{md['labels']['pod-template-hash']}-")
        assert md["ownerReferences"][0]["kind"] == "Deployment" and pod["spec"]["nodeName"]


async def test_rolling_update_goes_replica_by_replica(sandbox: Sandbox, kubectl: Kubectl) -> None:
    await kubectl("apply", "-f", "-", stdin=deployment("roll", replicas=3, surge=0, unavailable=1))
    await eventually(lambda: _status(sandbox, "roll").get("readyReplicas") == 3)
    old_hash = _pods(sandbox, "roll")[0]["metadata"]["labels"]["pod-template-hash"]
    history: list[tuple[int, int, int]] = []  # (old pods, new pods, ready pods) after every pod event

    def record(plural: str, kind: str, obj: dict[str, Any]) -> None:
        if plural == "pods":
            pods = _pods(sandbox, "roll")
            old = sum(1 for p in pods if p["metadata"]["labels"]["pod-template-hash"] == old_hash)
            history.append((old, len(pods) - old, sum(1 for p in pods if pod_ready(p))))

    sandbox.listen(record)
    await kubectl("apply", "-f", "-", stdin=deployment("roll", image="registry.example.com/worker:2",
                                                         replicas=3, surge=0, unavailable=1))
    await eventually(lambda: history and history[-1] == (0, 3, 3), timeout=20)
    assert all(old + new <= 3 and ready >= 2 for old, new, ready in history)  # maxSurge 0, maxUnavailable 1
    new_counts = [new for _, new, _ in history]
    assert sorted(set(new_counts)) == [0, 1, 2, 3]  # new pods arrived one at a time
    assert all(b - a <= 1 for a, b in itertools.pairwise(new_counts))
    assert _status(sandbox, "roll")["observedGeneration"] == 2


async def test_surge_percentages(sandbox: Sandbox, kubectl: Kubectl) -> None:
    await kubectl("apply", "-f", "-", stdin=deployment("pct", replicas=4, surge="'50%'", unavailable="'0%'"))
    await eventually(lambda: _status(sandbox, "pct").get("readyReplicas") == 4)
    peak: list[int] = []
    sandbox.listen(lambda plural, kind, obj: peak.append(len(_pods(sandbox, "pct"))) if plural == "pods" else None)
    await kubectl("apply", "-f", "-", stdin=deployment("pct", image="w:2", replicas=4, surge="'50%'",
                                                         unavailable="'0%'"))
    await eventually(lambda: _status(sandbox, "pct").get("updatedReplicas") == 4
                     and _status(sandbox, "pct").get("readyReplicas") == 4 and len(_pods(sandbox, "pct")) == 4)
    assert max(peak) == 6  # 4 + ceil(50% of 4)


@pytest.mark.parametrize(("image", "check"), [
    ("w:never-ready", lambda cs: cs["state"].get("running") is not None and not cs["ready"]),
    ("w:crashloop", lambda cs: cs["state"]["waiting"]["reason"] == "CrashLoopBackOff" and cs["restartCount"] >= 1),
    ("does-not-exist/w:1", lambda cs: cs["state"]["waiting"]["reason"] == "ImagePullBackOff"
     and "Back-off pulling image" in cs["state"]["waiting"]["message"]),
    ("w:imagepullbackoff", lambda cs: cs["state"]["waiting"]["reason"] == "ImagePullBackOff"),
    ("w:oomkilled", lambda cs: cs["lastState"]["terminated"]["reason"] == "OOMKilled"
     and cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"),
    ("w:modelloadfail", lambda cs: cs["state"]["terminated"]["exitCode"] == 1
     and cs["state"]["terminated"]["message"].startswith("model load failed: ")),
])
async def test_simulated_failures(sandbox: Sandbox, kubectl: Kubectl, image: str, check: Any) -> None:
    # maxUnavailable 0: one unready pod makes the Deployment unavailable (as in a real cluster).
    await kubectl("apply", "-f", "-", stdin=deployment("f", image=image, replicas=1, surge=1, unavailable=0))

    def failed() -> bool:
        pods = _pods(sandbox, "f")
        statuses = pods[0].get("status", {}).get("containerStatuses") if pods else None
        return bool(statuses) and check(statuses[0]) and not pod_ready(pods[0])

    await eventually(failed, timeout=10)
    await eventually(lambda: _cond(_status(sandbox, "f"), "Available").get("status") == "False")


async def test_crashloop_restart_count_grows(sandbox: Sandbox, kubectl: Kubectl) -> None:
    await kubectl("apply", "-f", "-", stdin=deployment("cl", image="w:crashloop", replicas=1))

    def restarts() -> int:
        pods = _pods(sandbox, "cl")
        statuses = pods[0].get("status", {}).get("containerStatuses") if pods else None
        return int(statuses[0]["restartCount"]) if statuses else 0

    await eventually(lambda: restarts() >= 1)
    await eventually(lambda: restarts() >= 3, timeout=10)


async def test_progress_deadline_exceeded(sandbox: Sandbox, kubectl: Kubectl) -> None:
    manifest = deployment("slow", image="w:never-ready", replicas=1).replace(
        "  replicas: 1\n", "  replicas: 1\n  progressDeadlineSeconds: 1\n")
    await kubectl("apply", "-f", "-", stdin=manifest)
    await eventually(lambda: _cond(_status(sandbox, "slow"), "Progressing").get("reason") == "ProgressDeadlineExceeded",
                     timeout=10)


async def test_gpu_capacity_leaves_pods_pending(sandbox: Sandbox, kubectl: Kubectl) -> None:
    await kubectl("apply", "-f", "-", stdin=deployment("big", replicas=3, gpus=8))

    def one_pending() -> dict[str, Any] | None:
        pods = _pods(sandbox, "big")
        pending = [p for p in pods if not p["spec"].get("nodeName") and p.get("status", {}).get("conditions")]
        return pending[0] if len(pods) == 3 and len(pending) == 1 else None

    pod = await eventually(one_pending)
    cond = _cond(pod["status"], "PodScheduled")
    assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
    assert cond["message"] == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    assert pod["status"]["phase"] == "Pending"


async def test_manual_readiness(sandbox: Sandbox, kubectl: Kubectl) -> None:
    await kubectl("apply", "-f", "-", stdin=deployment("canary", replicas=1))
    await eventually(lambda: _status(sandbox, "canary").get("readyReplicas") == 1)
    pod = _pods(sandbox, "canary")[0]["metadata"]["name"]
    sandbox.set_pod_ready("default", pod, False)
    await eventually(lambda: not _status(sandbox, "canary").get("readyReplicas"))
    sandbox.set_pod_ready("default", pod, None)
    await eventually(lambda: _status(sandbox, "canary").get("readyReplicas") == 1)


async def test_ready_annotation_on_template(sandbox: Sandbox, kubectl: Kubectl) -> None:
    manifest = deployment("annot", replicas=1).replace(
        "    metadata: {labels: {app: annot}}", "    metadata: {labels: {app: annot}, annotations: "
        "{sandbox.deepseek.ai/ready: 'false'}}")
    await kubectl("apply", "-f", "-", stdin=manifest)
    await eventually(lambda: _pods(sandbox, "annot") and _pods(sandbox, "annot")[0].get("status", {}).get("podIP"))
    assert not pod_ready(_pods(sandbox, "annot")[0])
    assert not _status(sandbox, "annot").get("readyReplicas")
