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
    return cluster.objects("pods", "default", "leaderworkerset.sigs.k8s.io/name=chat-primary")


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

    lws = cluster.get("leaderworkersets", "default", "chat-primary")
    assert lws is not None and lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert any(c["type"] == "Available" and c["status"] == "True" for c in lws["status"]["conditions"])
    pods = {p["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/worker-index"]: p for p in group_pods(cluster)}
    assert sorted(pods) == ["0", "1"]
    assert {p["spec"]["nodeName"] for p in pods.values()} == {f"{gpu_nodes}-1", f"{gpu_nodes}-2"}
    leader, worker = pods["0"], pods["1"]
    assert [c["name"] for c in leader["spec"]["containers"]] == ["worker", "engine"]
    assert [c["name"] for c in worker["spec"]["containers"]] == ["engine"]
    engine_env = {e["name"]: e.get("value") for e in worker["spec"]["containers"][0]["env"]}
    assert engine_env["LWS_LEADER_ADDRESS"] == "chat-primary-0.chat-primary.default"  # the LWS pod webhook's
    assert engine_env["LWS_WORKER_INDEX"] == "1"
    endpoints = cluster.objects("endpointslices", "default", "kubernetes.io/service-name=chat-primary")
    addresses = {e["targetRef"]["name"] for s in endpoints for e in s.get("endpoints") or []}
    assert addresses <= {leader["metadata"]["name"]}, addresses  # the Service selects leaders only

    await kubectl("patch", "dsd", "chat", "--type=merge", "-p", json.dumps({"spec": {"image": NEW_IMAGE}}))
    obj = await eventually(lambda: serving(cluster, NEW_IMAGE), timeout=120, what="the rollout to 1.1.0")
    leader = next(p for p in group_pods(cluster)
                  if p["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/worker-index"] == "0")
    assert leader["spec"]["containers"][0]["image"] == NEW_IMAGE
    assert condition(obj, "Progressing")["reason"] == "RolloutComplete", obj["status"]["conditions"]

    # The scale subresource reaches the LeaderWorkerSet: 0 groups, then one again.
    await kubectl("scale", "dsd", "chat", "--replicas=0")
    await eventually(lambda: (lws := cluster.get("leaderworkersets", "default", "chat-primary")) is not None
                     and lws["spec"]["replicas"] == 0 and not group_pods(cluster), timeout=60,
                     what="scaled to no group")
    await kubectl("scale", "dsd", "chat", "--replicas=1")
    await eventually(lambda: serving(cluster, NEW_IMAGE), timeout=90, what="one group again")

    await kubectl("delete", "dsd", "chat", "--wait=true", "--timeout=60s")
    await eventually(lambda: cluster.get("leaderworkersets", "default", "chat-primary") is None and not
                     group_pods(cluster), timeout=60, what="the LeaderWorkerSet and its pods garbage-collected")


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
