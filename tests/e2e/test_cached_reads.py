"""Watch-fed caches on the real apiserver: an idle reconcile makes no request, and drift is healed by
the watches alone (the resync set to an hour, so it cannot be what heals it).

Counts come from the apiserver's audit log, filtered to the operator's ServiceAccount: reads as well
as writes, every verb but `watch`.
"""

from __future__ import annotations

import json

import pytest

from deepseek_sandbox.real_cluster import RealCluster
from tests.e2e.conftest import Kubectl, Operator, StartOperator, eventually

OWNED = "deepseek.ai/deployment=chat"
CHAT = json.dumps({
    "apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": {"name": "chat"},
    "spec": {"image": "registry.example.com/deepseek-worker:1.0.0", "replicas": 1,
             "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"},
             "ingress": {"provider": "gateway-api", "host": "chat.example.com",
                         "gateway": {"parentRefs": [{"name": "public"}]}},
             "variants": [{"name": "canary", "weight": 10, "replicas": 1}]}})
# One child of every kind the reconcile writes: (plural, name).
CHILDREN = [("deployments", "chat-canary"), ("services", "chat-canary"), ("poddisruptionbudgets", "chat-primary"),
            ("networkpolicies", "chat"), ("httproutes", "chat"), ("servicemonitors", "chat"),
            ("prometheusrules", "chat")]


async def reconciles(operator: Operator, n: int) -> None:
    before = await operator.metric("deepseek_operator_reconciles_total")

    async def advanced() -> bool:
        return await operator.metric("deepseek_operator_reconciles_total") >= before + n

    await eventually(advanced, what=f"{n} more reconciles")


def not_watches(cluster: RealCluster) -> dict[str, int]:
    return {f"{verb} {resource}": n for (verb, resource), n in cluster.audit.requests().items() if verb != "watch"}


@pytest.mark.real_only(reason="counts every request, reads included, from the real apiserver's audit log")
async def test_an_idle_reconcile_makes_no_api_request(cluster: RealCluster, kubectl: Kubectl,
                                                      start_operator: StartOperator) -> None:
    operator = await start_operator()  # resync every second: each tick reconciles the resource
    await kubectl("apply", "-f", "-", stdin=CHAT)
    await kubectl("wait", "--for=condition=Ready", "dsd/chat", "--timeout=90s")
    await reconciles(operator, 2)  # a reconcile that read the cluster before it settled has written
    cluster.audit.mark()
    await reconciles(operator, 5)
    assert not_watches(cluster) == {}, operator.log(grep="deepseek_operator")


@pytest.mark.real_only(reason="the sandbox has no HTTPRoute/monitoring watch gap to show; this proves the real one")
async def test_drift_of_every_child_kind_is_healed_by_the_watches(cluster: RealCluster, kubectl: Kubectl,
                                                                  start_operator: StartOperator) -> None:
    await start_operator(DEEPSEEK_OPERATOR_RESYNC_SECONDS="3600")
    await kubectl("apply", "-f", "-", stdin=CHAT)
    await kubectl("wait", "--for=condition=Ready", "dsd/chat", "--timeout=90s")
    for plural, name in CHILDREN:
        before = cluster.get(plural, "default", name)
        assert before is not None, (plural, name)
        await kubectl("delete", plural, name, "--wait=true", "--timeout=30s")

        def recreated(plural: str = plural, name: str = name, uid: str = before["metadata"]["uid"]) -> bool:
            now = cluster.get(plural, "default", name)
            return now is not None and now["metadata"]["uid"] != uid

        await eventually(recreated, timeout=20, what=f"{plural}/{name} recreated by a watch-triggered reconcile")
    await kubectl("patch", "networkpolicies", "chat", "--type=merge", "-p",
                  json.dumps({"spec": {"podSelector": {"matchLabels": {"app": "nothing"}}}}))
    await eventually(lambda: (cluster.get("networkpolicies", "default", "chat") or {})["spec"]["podSelector"]
                     != {"matchLabels": {"app": "nothing"}}, timeout=20, what="the NetworkPolicy's selector put back")
