"""Leader election (kopf peering) on the real control plane: two replicas, one writes; killing it
hands the work to the other within the peering lifetime (docs/architecture.md, "Leader election")."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest

from deepseek_sandbox.real_cluster import RealCluster
from tests.e2e.conftest import Kubectl, Operator, StartOperator, eventually

PEERING = "deepseek-e2e"
LIFETIME = 10  # seconds; the chart's default is 30
CHAT = {"apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": {"name": "chat"},
        "spec": {"image": "registry.example.com/deepseek-worker:1.0.0", "replicas": 1,
                 "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}}}


@pytest.fixture
async def peering(kubectl: Kubectl) -> AsyncIterator[str]:
    """The namespaced KopfPeering the replicas share (operators started with --namespace=default)."""
    await kubectl("apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING, "namespace": "default"}}))
    yield PEERING
    await kubectl("delete", "kopfpeering", PEERING, "-n", "default", "--ignore-not-found")


async def writes_of(operator: Operator) -> float:
    """Reconciles and child writes this replica did (0 for one that never led)."""
    reconciles = await operator.metric("deepseek_operator_reconciles_total")
    applied = sum([await operator.metric("deepseek_operator_children_applied_total", action=a)
                   for a in ("created", "patched", "deleted")])
    return reconciles + applied


async def replica(start_operator: StartOperator, name: str, priority: int) -> Operator:
    return await start_operator(f"--peering={PEERING}", f"--priority={priority}", POD_ID=name,
                                DEEPSEEK_OPERATOR_PEERING_LIFETIME_SECONDS=str(LIFETIME))


@pytest.mark.real_only(reason="kopf peering heartbeats and the real scheduler; the sandbox is not needed to show it")
async def test_one_replica_writes_and_the_other_takes_over_when_it_dies(
        cluster: RealCluster, kubectl: Kubectl, start_operator: StartOperator, peering: str) -> None:
    leader = await replica(start_operator, "replica-high", 200)
    standby = await replica(start_operator, "replica-low", 100)
    await eventually(lambda: len((cluster.get("kopfpeerings", "default", peering) or {}).get("status") or {}) == 2,
                     timeout=30, what="both replicas' heartbeats in the peering object")
    await kubectl("apply", "-f", "-", stdin=json.dumps(CHAT))
    await kubectl("wait", "--for=condition=Ready", "dsd/chat", "--timeout=90s")
    assert await writes_of(leader) > 0
    assert await writes_of(standby) == 0, standby.log(grep="deepseek_operator")  # only the leader writes

    await leader.kill()  # a crash: no goodbye in the peering object, the heartbeat just stops
    killed = time.monotonic()
    new_image = "registry.example.com/deepseek-worker:2.0.0"
    await kubectl("patch", "dsd", "chat", "--type=merge", "-p", json.dumps({"spec": {"image": new_image}}))

    def rolled_out() -> bool:
        obj = cluster.get("dsd", "default", "chat") or {}
        status = obj.get("status", {})
        return status.get("image") == new_image and status.get("observedGeneration") == obj["metadata"]["generation"]

    await eventually(rolled_out, timeout=LIFETIME + 60, what="the standby rolling out the new image")
    took = time.monotonic() - killed
    print(f"leader killed -> new image rolled out by the standby: {took:.1f} s (lifetime {LIFETIME} s)")
    assert await writes_of(standby) > 0
    assert took < LIFETIME + 45, f"takeover and rollout took {took:.0f}s"
