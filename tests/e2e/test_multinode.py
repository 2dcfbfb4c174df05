"""Issue 20 item 4 on the real control plane: a DeepSeek-V3 over two 8-GPU nodes is a LeaderWorkerSet.

The real LeaderWorkerSet controller (kubernetes-sigs/lws, run by tools/control-plane/up.sh with its
admission webhooks) makes a leader and a worker pod per group; kwok plays the kubelet of two 8-GPU
nodes this test adds (labelled and tainted for it alone, so that no other test's pods take their GPUs
and no other test waits for GPUs held here). The operator runs as the chart's ServiceAccount.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Kubectl, RealCluster, StartOperator, condition, current, eventually

IMAGE = "registry.example.com/deepseek-worker:1.0.0"
NEW_IMAGE = "registry.example.com/deepseek-worker:1.1.0"
NODE_LABEL = "deepseek.ai/test-node"
TAINT = "deepseek.ai/multinode-test"
LWS_CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/leaderworkersets.leaderworkerset.x-k8s.io"


@pytest.fixture
def gpu_nodes(cluster: RealCluster) -> Iterator[str]:
    """Two kwok GPU nodes of 8 x nvidia.com/gpu, labelled `NODE_LABEL=<group>` and tainted for this test."""
    if cluster.http.get(LWS_CRD).status_code != 200:
        pytest.skip("the test control plane runs no LeaderWorkerSet controller here (tools/control-plane/"
                    "build-lws.sh could not build it: see .cluster/logs/lws-build.log)")
    group = f"lws-{secrets.token_hex(3)}"
    names = [f"{group}-{i}" for i in (1, 2)]
    capacity = {"cpu": "64", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": "8", "ephemeral-storage": "10Ti"}
    try:
        for name in names:
            node = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                                 "labels": {NODE_LABEL: group, "kubernetes.io/hostname": name, "type": "kwok",
                                            "nvidia.com/gpu.count": "8"}},
                    "spec": {"taints": [{"key": TAINT, "value": group, "effect": "NoSchedule"}]},
                    "status": {"capacity": capacity, "allocatable": capacity}}
            created = cluster.http.post("/api/v1/nodes", json=node)
            assert created.status_code == 201, created.text
        yield group
    finally:
        for name in names:
            cluster.http.delete(f"/api/v1/nodes/{name}")


def manifest(group: str, image: str = IMAGE, runtime: str = "vllm") -> str:
    return json.dumps({
        "apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": {"name": "chat"},
        "spec": {"image": image, "replicas": 1, "runtime": {"name": runtime},
                 "model": {"id": "deepseek-ai/DeepSeek-V3", "loadTimeoutSeconds": 60},
                 "resources": {"gpus": 16, "gpusPerNode": 8, "gpuMemory": "80Gi", "cpu": "8", "memory": "64Gi"},
                 "scheduling": {"nodeSelector": {NODE_LABEL: group},
                                "tolerations": [{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}]},
                 # Both nodes hold one group: a new group cannot come up beside the old one.
                 "rollout": {"strategy": "Replace", "progressDeadlineSeconds": 600}}})


def group_pods(cluster: RealCluster) -> list[dict[str, Any]]:
    return cluster.objects("pods", "default", "leaderworkerset.sigs.k8s.io/name=chat-primary-lws")


def endpoints(cluster: RealCluster, service: str) -> set[str]:
    slices = cluster.objects("endpointslices", "default", f"kubernetes.io/service-name={service}")
    return {e["targetRef"]["name"] for s in slices for e in s.get("endpoints") or []}


async def delete_and_wait(cluster: RealCluster, kubectl: Kubectl) -> None:
    """Delete the resource and wait until the garbage collector removed its LeaderWorkerSet, the LWS
    controller's StatefulSets and headless Service, and the pods (before the test's nodes go: a pod on
    a deleted node would stay Terminating, and block the next group's pod of the same name)."""
    await kubectl("delete", "dsd", "chat", "--wait=true", "--timeout=60s")
    selector = "leaderworkerset.sigs.k8s.io/name=chat-primary-lws"
    await eventually(lambda: cluster.get("leaderworkersets", "default", "chat-primary-lws") is None
                     and cluster.get("services", "default", "chat-primary-lws") is None
                     and not cluster.objects("statefulsets", "default", selector) and not group_pods(cluster),
                     timeout=60, what="the LeaderWorkerSet, its StatefulSets, Service and pods garbage-collected")


def serving(cluster: RealCluster, image: str) -> dict[str, Any] | None:
    """The resource when Ready on `image`, its group's two pods Running, Ready and on the test's nodes."""
    obj = current(cluster)
    if not obj or condition(obj, "Ready").get("status") != "True" or obj["status"].get("image") != image:
        return None
    pods = [p for p in group_pods(cluster) if not p["metadata"].get("deletionTimestamp")]
    ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                    for c in p.get("status", {}).get("conditions", []))]
    return obj if len(pods) == len(ready) == 2 else None


@pytest.mark.real_only(reason="the LeaderWorkerSet controller runs on the real control plane only")
async def test_v3_over_two_nodes_is_ready_rolls_out_and_is_deleted(
        cluster: RealCluster, kubectl: Kubectl, start_operator: StartOperator, gpu_nodes: str) -> None:
    # The CRD's CEL refuses a builtin worker whose GPUs exceed a node, naming spec.runtime.
    refused = await kubectl("apply", "-f", "-", stdin=manifest(gpu_nodes, runtime="builtin"), check=False)
    assert "spec.runtime: Invalid value" in refused and "only runtime vllm or sglang spans nodes" in refused, refused

    await start_operator()
    await kubectl("apply", "-f", "-", stdin=manifest(gpu_nodes))
    obj = await eventually(lambda: serving(cluster, IMAGE), timeout=90, what="Ready on two nodes")
    assert obj["status"]["readyReplicas"] == 1 and obj["status"]["ready"] == "1/1", obj["status"]
    assert condition(obj, "MultiNodeReady")["status"] == "True", obj["status"]["conditions"]
    assert obj["status"]["selector"].endswith(",deepseek.ai/role=leader"), obj["status"]  # /scale: one pod a replica
    assert cluster.get("deployments", "default", "chat-primary") is None  # no Deployment besides it

    lws = cluster.get("leaderworkersets", "default", "chat-primary-lws")
    assert lws is not None and lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert any(c["type"] == "Available" and c["status"] == "True" for c in lws["status"]["conditions"])
    pods = {p["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/worker-index"]: p for p in group_pods(cluster)}
    assert sorted(pods) == ["0", "1"]
    assert {p["spec"]["nodeName"] for p in pods.values()} == {f"{gpu_nodes}-1", f"{gpu_nodes}-2"}
    leader, worker = pods["0"], pods["1"]
    assert [c["name"] for c in leader["spec"]["containers"]] == ["worker", "engine"]
    assert [c["name"] for c in worker["spec"]["containers"]] == ["engine"]
    engine_env = {e["name"]: e.get("value") for e in worker["spec"]["containers"][0]["env"]}
    assert engine_env["LWS_LEADER_ADDRESS"] == "chat-primary-lws-0.chat-primary-lws.default"  # the LWS pod webhook's
    assert engine_env["LWS_WORKER_INDEX"] == "1"
    # Our Service selects the leaders only; the LWS controller's headless Service (the pods' DNS) all pods.
    assert (cluster.get("services", "default", "chat-primary") or {})["spec"]["clusterIP"] != "None"
    assert (cluster.get("services", "default", "chat-primary-lws") or {})["spec"]["clusterIP"] == "None"
    await eventually(lambda: endpoints(cluster, "chat-primary") == {leader["metadata"]["name"]}, timeout=30,
                     what="the variant Service's endpoints: the leader alone")

    await kubectl("patch", "dsd", "chat", "--type=merge", "-p", json.dumps({"spec": {"image": NEW_IMAGE}}))
    obj = await eventually(lambda: serving(cluster, NEW_IMAGE), timeout=120, what="the rollout to 1.1.0")
    leader = next(p for p in group_pods(cluster)
                  if p["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/worker-index"] == "0")
    assert leader["spec"]["containers"][0]["image"] == NEW_IMAGE
    assert condition(obj, "Progressing")["reason"] == "RolloutComplete", obj["status"]["conditions"]

    # The scale subresource reaches the LeaderWorkerSet: 0 groups, then one again.
    await kubectl("scale", "dsd", "chat", "--replicas=0")
    await eventually(lambda: (lws := cluster.get("leaderworkersets", "default", "chat-primary-lws")) is not None
                     and lws["spec"]["replicas"] == 0 and not group_pods(cluster), timeout=60,
                     what="scaled to no group")
    await kubectl("scale", "dsd", "chat", "--replicas=1")
    await eventually(lambda: serving(cluster, NEW_IMAGE), timeout=90, what="one group again")

    await delete_and_wait(cluster, kubectl)


def on_image(cluster: RealCluster, image: str) -> bool:
    """The group's two pods run `image` (the leader's edge) and are Ready."""
    pods = [p for p in group_pods(cluster) if not p["metadata"].get("deletionTimestamp")]
    leader = [p for p in pods if p["metadata"]["labels"].get("leaderworkerset.sigs.k8s.io/worker-index") == "0"]
    ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                    for c in p.get("status", {}).get("conditions", []))]
    return len(pods) == len(ready) == 2 and [p["spec"]["containers"][0]["image"] for p in leader] == [image]


@pytest.mark.real_only(reason="the LeaderWorkerSet controller runs on the real control plane only")
async def test_a_failed_multinode_rollout_is_rolled_back(
        cluster: RealCluster, kubectl: Kubectl, start_operator: StartOperator, gpu_nodes: str) -> None:
    await start_operator()
    await kubectl("apply", "-f", "-", stdin=manifest(gpu_nodes))
    await eventually(lambda: serving(cluster, IMAGE), timeout=90, what="Ready on two nodes")
    bad = "registry.example.com/deepseek-worker:imagepullbackoff"  # kwok-stages.yaml: ImagePullBackOff
    await kubectl("patch", "dsd", "chat", "--type=merge", "-p", json.dumps({"spec": {"image": bad}}))

    obj = await eventually(lambda: (o := current(cluster)) and o["status"].get("failedImage") == bad
                           and on_image(cluster, IMAGE) and condition(o, "Available")["status"] == "True" and o,
                           timeout=120, what="rolled back to the old image, available again")
    assert condition(obj, "Degraded")["reason"] == "RolledBack", obj["status"]["conditions"]
    assert "ImagePullFailed" in condition(obj, "Degraded")["message"]
    lws = cluster.get("leaderworkersets", "default", "chat-primary-lws") or {}
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    assert leader["image"] == IMAGE and obj["status"]["image"] == IMAGE
    await delete_and_wait(cluster, kubectl)


@pytest.mark.sandbox_only(reason="a cluster without the LeaderWorkerSet API: the sandbox serves none")
async def test_without_the_leader_worker_set_api_nothing_runs_and_the_conditions_say_why(
        cluster: Any, kubectl: Kubectl, start_operator: StartOperator) -> None:
    await start_operator()
    await kubectl("apply", "-f", "-", stdin=manifest("none"))
    obj = await eventually(lambda: (o := current(cluster)) and condition(o, "MultiNodeReady") and o, timeout=30,
                           what="MultiNodeReady reported")
    assert condition(obj, "MultiNodeReady")["status"] == "False"
    assert condition(obj, "MultiNodeReady")["reason"] == "LeaderWorkerSetMissing"
    assert condition(obj, "Ready")["reason"] == "LeaderWorkerSetMissing", obj["status"]["conditions"]
    assert "install the LeaderWorkerSet controller" in condition(obj, "Ready")["message"]
    assert cluster.objects("deployments", "default") == []  # a Deployment could never be scheduled
