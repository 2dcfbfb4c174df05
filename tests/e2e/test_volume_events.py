"""Issue 18 item 7 on the real control plane: a pod stuck on a volume is reported at once, woken by
the pod's own Warning event, with the event's words (docs/rollouts.md).

The worker pod is scheduled, by the real scheduler, onto a node no kubelet runs (kwok manages only
its annotated nodes): it stays as a pod whose volumes were never mounted, with no container status,
and the test posts the `FailedMount` event its kubelet would. The node is tainted for this test's
pods only, and removed afterwards. The operator runs on its default resync (600 s): only its watch
on the pods' volume events (cache.py) can report the reason in time.
"""

from __future__ import annotations

import datetime
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Kubectl, RealCluster, StartOperator, condition, current, eventually

IMAGE = "registry.example.com/deepseek-worker:1.0.0"
MOUNT = 'MountVolume.SetUp failed for volume "model-cache" : mount failed: exit status 32'
DEFAULT_RESYNC_SECONDS = 600  # settings.Settings.resync_seconds without DEEPSEEK_OPERATOR_RESYNC_SECONDS
NODE_LABEL = "deepseek.ai/test-node"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def node_without_kubelet(cluster: RealCluster) -> Iterator[str]:
    """A GPU node no kubelet (and no kwok) runs, tainted so that only this test's pods go there."""
    name = f"no-kubelet-{secrets.token_hex(3)}"
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {NODE_LABEL: name}},
            "spec": {"taints": [{"key": "deepseek.ai/no-kubelet", "value": "true", "effect": "NoSchedule"}]}}
    created = cluster.http.post("/api/v1/nodes", json=node)
    assert created.status_code == 201, created.text
    try:
        resources = {"cpu": "64", "memory": "1Ti", "ephemeral-storage": "10Ti", "pods": "110",
                     "nvidia.com/gpu": "8"}
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test",
                 "lastHeartbeatTime": now(), "lastTransitionTime": now()}
        status = cluster.http.patch(f"/api/v1/nodes/{name}/status", json={"status": {
            "capacity": resources, "allocatable": resources, "conditions": [ready]}},
            headers={"Content-Type": "application/merge-patch+json"})
        assert status.status_code == 200, status.text
        yield name
    finally:
        # No kubelet confirms a deletion on this node: its pods would stay Terminating until the pod
        # garbage collector finds them orphaned (40 s after the node goes, near the namespace cleanup's
        # 60 s deadline on a loaded machine). The node goes first (nothing binds to it after), then a
        # grace period of 0 removes its pods at once (kubectl --force); a replacement stays Pending,
        # which the cleanup deletes at once.
        cluster.http.delete(f"/api/v1/nodes/{name}")
        bound = cluster.http.get("/api/v1/pods", params={"fieldSelector": f"spec.nodeName={name}"})
        for pod in bound.json().get("items", []) if bound.status_code == 200 else []:
            meta = pod["metadata"]
            cluster.http.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                                params={"gracePeriodSeconds": 0})


def manifest(node: str) -> str:
    return json.dumps({
        "apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": {"name": "chat"},
        "spec": {"image": IMAGE, "replicas": 1,
                 "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "loadTimeoutSeconds": 60},
                 "resources": {"gpus": 1, "cpu": "8", "memory": "64Gi"},
                 "scheduling": {"nodeSelector": {NODE_LABEL: node}, "tolerations": [{"operator": "Exists"}]},
                 "rollout": {"progressDeadlineSeconds": 600}}})


def failed_mount(pod: dict[str, Any]) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = pod["metadata"]
    return {"apiVersion": "v1", "kind": "Event", "type": "Warning", "reason": "FailedMount", "message": MOUNT,
            "metadata": {"name": f"{meta['name']}.failedmount", "namespace": "default"},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": "default", "name": meta["name"],
                               "uid": meta["uid"]},
            "source": {"component": "kubelet", "host": pod["spec"].get("nodeName", "")},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1}


@pytest.mark.real_only(reason="a node without a kubelet and an Event as its kubelet would post it: the "
                       "sandbox's kubelet runs every pod")
async def test_a_failed_mount_is_reported_with_the_kubelets_words_and_not_rolled_back(
        cluster: RealCluster, kubectl: Kubectl, start_operator: StartOperator, node_without_kubelet: str) -> None:
    await start_operator(DEEPSEEK_OPERATOR_RESYNC_SECONDS=str(DEFAULT_RESYNC_SECONDS))
    await kubectl("apply", "-f", "-", stdin=manifest(node_without_kubelet))
    pod = await eventually(lambda: next((p for p in cluster.objects("pods", "default", "deepseek.ai/deployment=chat")
                                         if p["spec"].get("nodeName") == node_without_kubelet), None),
                           timeout=30, what="the worker pod bound to the node without a kubelet")
    obj = await eventually(lambda: (o := current(cluster)) and condition(o, "Ready").get("reason") == "RollingOut"
                           and o, timeout=30, what="Ready=False RollingOut: nothing says why yet")
    posted = cluster.http.post("/api/v1/namespaces/default/events", json=failed_mount(pod))
    assert posted.status_code == 201, posted.text

    obj = await eventually(lambda: (o := current(cluster)) and condition(o, "Ready").get("reason")
                           == "VolumeMountFailed" and o, timeout=30, what="Ready=False VolumeMountFailed")
    assert MOUNT in condition(obj, "Ready")["message"], condition(obj, "Ready")
    assert condition(obj, "Progressing")["reason"] == "VolumeMountFailed"
    assert condition(obj, "Degraded")["status"] == "False"  # a mount may yet succeed: only at the deadline
    assert obj["status"].get("failedImage", "") == ""
