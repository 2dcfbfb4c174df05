"""Issue 2 end to end: the sandbox cluster, the real operator process and the real kubectl."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from deepseek_sandbox import customs
from tests.e2e.conftest import Cluster, Kubectl, Operator, RealCluster, StartOperator, condition, eventually, free_port

CHAT = """\
apiVersion: deepseek.ai/v1alpha1
kind: DeepSeekDeployment
metadata: {name: chat}
spec:
  image: registry.example.com/deepseek-worker:1.0.0
  replicas: 2
  model: {id: deepseek-ai/DeepSeek-R1-Distill-Qwen-7B, loadTimeoutSeconds: 60}
  resources: {gpus: 2, cpu: "8", memory: 64Gi, shmSize: 16Gi}
  scheduling:
    nodeSelector: {nvidia.com/gpu.present: "true"}
    tolerations: [{key: dedicated, operator: Equal, value: llm, effect: NoSchedule}]
    priorityClassName: llm-serving
  rollout: {maxSurge: 0, maxUnavailable: 1, progressDeadlineSeconds: 120}
"""
V2 = "registry.example.com/deepseek-worker:2.0.0"
OWNED = "deepseek.ai/deployment=chat"
PRIORITY_CLASS = ('{"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", '
                  '"metadata": {"name": "llm-serving"}, "value": 1000}')


@pytest.fixture
async def priority_class(cluster: Cluster, kubectl: Kubectl) -> AsyncIterator[None]:
    """CHAT's PriorityClass for a test that applies CHAT: the real apiserver refuses pods naming a
    missing one (the sandbox admits them). Made here when absent and then removed again, so no test
    depends on another having made it."""
    if not isinstance(cluster, RealCluster) or cluster.get("priorityclasses", None, "llm-serving"):
        yield
        return
    await kubectl("apply", "-f", "-", stdin=PRIORITY_CLASS)
    yield
    await kubectl("delete", "priorityclass", "llm-serving", "--ignore-not-found", "--wait=false")


def ready_for_generation(sb: Cluster, name: str = "chat") -> dict[str, Any] | None:
    obj = sb.get("dsd", "default", name)
    if obj is None:
        return None
    ready = condition(obj, "Ready")
    gen = obj["metadata"]["generation"]
    if ready.get("status") == "True" and obj["status"].get("observedGeneration") == gen:
        return obj
    return None


def settled(sb: Cluster, replicas: int) -> bool:
    """Ready, every pod belongs to the current Deployment (the deleted one's pods are gone) and is
    Ready, and that Deployment's status says so: nothing in the cluster is left to change.

    The pods' readiness matters: a recreated Deployment's new pods exist some 30 ms before the
    operator writes the status that reflects them, and in that window the status written before the
    deletion (Ready, `replicas` ready) would match (the "idle -> zero writes" flake).
    """
    dep = sb.get("deployments", "default", "chat-primary")
    obj = ready_for_generation(sb)
    if dep is None or obj is None or obj["status"]["readyReplicas"] != replicas:
        return False
    if dep.get("status", {}).get("readyReplicas") != replicas:
        return False
    pods = sb.objects("pods", "default", "deepseek.ai/deployment=chat")
    owners = {ref["uid"] for p in pods for ref in p["metadata"].get("ownerReferences", [])}
    ready = all(condition(p, "Ready").get("status") == "True" for p in pods)
    return len(pods) == replicas and owners and owners <= pod_owners_of(sb, dep) and ready


def pod_owners_of(sb: Cluster, dep: dict[str, Any]) -> set[str]:
    """The uids a pod of `dep` names as owner: its ReplicaSets on a real cluster, the Deployment
    itself in the sandbox (which has no ReplicaSets: docs/sandbox.md)."""
    uid = dep["metadata"]["uid"]
    if not isinstance(sb, RealCluster):
        return {uid}
    return {rs["metadata"]["uid"] for rs in sb.objects("replicasets", "default", "deepseek.ai/deployment=chat")
            if any(ref["uid"] == uid for ref in rs["metadata"].get("ownerReferences", []))}


async def reconciled(operator: Operator, n: int) -> None:
    """Wait until the operator has finished `n` more reconciles."""
    before = await operator.metric("deepseek_operator_reconciles_total")

    async def advanced() -> bool:
        return await operator.metric("deepseek_operator_reconciles_total") >= before + n

    await eventually(advanced, what=f"{n} more reconciles")


async def test_apply_rollout_scale_heal_idle_delete(cluster: Cluster, kubectl: Kubectl,
                                                    start_operator: StartOperator, priority_class: None) -> None:
    operator = await start_operator()
    await kubectl("apply", "-f", "-", stdin=CHAT)

    # Children exist with GPU limits and scheduling from the spec.
    dep = await eventually(lambda: cluster.get("deployments", "default", "chat-primary"), what="chat-primary")
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["priorityClassName"] == "llm-serving"
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "DeepSeekDeployment"
    pdb = await eventually(lambda: cluster.get("poddisruptionbudgets", "default", "chat-primary"), what="the PDB")
    assert pdb["spec"]["maxUnavailable"] == 1
    for svc in ("chat", "chat-primary"):
        assert await eventually(lambda s=svc: cluster.get("services", "default", s), what=f"service {svc}")

    await kubectl("wait", "--for=condition=Ready", "dsd/chat", "--timeout=60s")
    obj = cluster.get("dsd", "default", "chat")
    assert obj is not None
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert obj["status"]["readyReplicas"] == 2
    assert obj["status"]["image"] == "registry.example.com/deepseek-worker:1.0.0"
    table = await kubectl("get", "dsd", "chat")
    assert table.split()[:7] == ["NAME", "READY", "IMAGE", "MODEL", "STATUS", "DOWNLOAD", "URL"]
    assert "2/2" in table and "Ready" in table.splitlines()[1]

    # A new image: Ready goes False (RollingOut) and kubectl wait returns only on the new generation.
    await kubectl("patch", "dsd", "chat", "--type=merge", "-p", f'{{"spec":{{"image":"{V2}"}}}}')
    rolling = await eventually(
        lambda: condition(cluster.get("dsd", "default", "chat") or {}, "Ready").get("reason") == "RollingOut",
        timeout=20, interval=0.02, what="Ready=False RollingOut")
    assert rolling
    await kubectl("wait", "--for=condition=Ready", "dsd/chat", "--timeout=60s")
    obj = cluster.get("dsd", "default", "chat")
    assert obj is not None and obj["status"]["image"] == V2
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    pods = cluster.objects("pods", "default", "deepseek.ai/deployment=chat")
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {V2}

    # The scale subresource.
    await kubectl("scale", "dsd/chat", "--replicas=3")
    await eventually(lambda: (ready_for_generation(cluster) or {}).get("status", {}).get("readyReplicas") == 3,
                     what="3 ready replicas")
    assert (cluster.get("deployments", "default", "chat-primary") or {})["spec"]["replicas"] == 3

    # A child changed by hand is put back (the Deployment event triggers a reconcile).
    await kubectl("set", "image", "deployment/chat-primary", "worker=evil.example.com/miner:1")
    await kubectl("patch", "service", "chat-primary", "--type=merge", "-p",
                  '{"spec":{"selector":{"deepseek.ai/variant":"canary"}}}')
    await eventually(lambda: (cluster.get("deployments", "default", "chat-primary") or {})["spec"]["template"]
                     ["spec"]["containers"][0]["image"] == V2, what="image put back")
    await eventually(lambda: (cluster.get("services", "default", "chat-primary") or {})["spec"]["selector"] == {
        "deepseek.ai/deployment": "chat", "deepseek.ai/variant": "primary"}, what="selector put back")
    await eventually(lambda: settled(cluster, 3), what="Ready after the hand edits")

    # A child deleted by hand comes back.
    await kubectl("delete", "service", "chat-primary")
    await kubectl("delete", "deployment", "chat-primary", "--wait=false")
    await eventually(lambda: cluster.get("services", "default", "chat-primary"), what="service recreated")
    await eventually(lambda: cluster.get("deployments", "default", "chat-primary"), what="deployment recreated")
    await eventually(lambda: settled(cluster, 3), what="Ready again, old pods garbage-collected")

    # Idle: several reconciles (resync every second), zero writes at the API. First let a reconcile
    # that read the cluster before it settled write its (last) status: reconciles of one resource
    # are serialized, so the second to end from here started after the cluster had settled.
    await reconciled(operator, 2)
    cluster.reset_stats()
    await reconciled(operator, 3)
    assert cluster.stats().total == 0, (cluster.stats().to_json(), operator.log(grep="deepseek_operator"))

    # Deleting the resource removes its children.
    await kubectl("delete", "dsd", "chat", "--timeout=30s")
    await eventually(lambda: not cluster.objects("deployments", "default", "deepseek.ai/deployment=chat")
                     and not cluster.objects("services", "default", "deepseek.ai/deployment=chat"),
                     what="children garbage-collected")


async def test_variant_removed_from_spec_loses_children(cluster: Cluster, kubectl: Kubectl,
                                                        start_operator: StartOperator, priority_class: None) -> None:
    await start_operator()
    with_canary = CHAT + "  variants: [{name: canary, weight: 10, replicas: 1}]\n"
    await kubectl("apply", "-f", "-", stdin=with_canary)
    await eventually(lambda: cluster.get("deployments", "default", "chat-canary"), what="canary deployment")
    await eventually(lambda: ready_for_generation(cluster), what="Ready with the canary")
    await kubectl("apply", "-f", "-", stdin=CHAT)
    await eventually(lambda: cluster.get("deployments", "default", "chat-canary") is None
                     and cluster.get("services", "default", "chat-canary") is None, what="canary children pruned")
    assert cluster.get("deployments", "default", "chat-primary") is not None


@pytest.mark.sandbox_only(reason="needs an invalid object past admission; the real apiserver refuses it")
async def test_invalid_spec_is_reported_without_retry_storm(cluster: Cluster, start_operator: StartOperator,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    operator = await start_operator()
    # An old CRD without our CEL rules would let this through: switch the sandbox's admission off.
    monkeypatch.setattr(customs, "admit", lambda info, obj: obj)
    bad = {"apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment",
           "metadata": {"name": "bad", "namespace": "default"},
           "spec": {"image": "x:1", "model": {"id": "m"}, "rollout": {"maxSurge": 0, "maxUnavailable": 0}}}
    await cluster.store.create(cluster.resource("dsd"), "default", bad)
    obj = await eventually(
        lambda: (o := cluster.get("dsd", "default", "bad")) and condition(o, "Ready").get("reason") == "InvalidSpec"
        and o, what="InvalidSpec condition")
    assert "spec.rollout" in condition(obj, "Ready")["message"]
    assert cluster.get("deployments", "default", "bad-primary") is None
    # The status is visible before the reconcile that wrote it has counted itself: wait for the count.
    async def counted() -> bool:
        return await operator.metric("deepseek_operator_reconciles_total", result="invalid") >= 1

    await eventually(counted, what="the invalid reconcile counted")
    cluster.reset_stats()
    invalid_before = await operator.metric("deepseek_operator_reconciles_total", result="invalid")
    skipped_before = await operator.metric("deepseek_operator_resyncs_total", result="skipped_invalid")

    async def ticks_passed() -> bool:
        return await operator.metric("deepseek_operator_resyncs_total", result="skipped_invalid") >= skipped_before + 3

    # The invalid resource is reconciled once per spec change, not on every resync tick.
    await eventually(ticks_passed, what="three resync ticks that skipped the invalid resource")
    assert await operator.metric("deepseek_operator_reconciles_total", result="invalid") == invalid_before
    assert cluster.stats().total == 0, cluster.stats().to_json()


async def test_restart_converges_once_to_the_final_spec(cluster: Cluster, kubectl: Kubectl,
                                                        start_operator: StartOperator, priority_class: None) -> None:
    first = await start_operator()
    await kubectl("apply", "-f", "-", stdin=CHAT)
    await kubectl("wait", "--for=condition=Ready", "dsd/chat", "--timeout=60s")
    await first.stop()

    await kubectl("patch", "dsd", "chat", "--type=merge", "-p", f'{{"spec":{{"image":"{V2}"}}}}')
    final = "registry.example.com/deepseek-worker:3.0.0"
    await kubectl("patch", "dsd", "chat", "--type=merge", "-p", f'{{"spec":{{"image":"{final}","replicas":3}}}}')
    cluster.reset_stats()
    await start_operator()
    await eventually(lambda: (o := ready_for_generation(cluster)) and o["status"]["image"] == final,
                     timeout=60, what="Ready on the final image")
    deployments = cluster.objects("deployments", "default", "deepseek.ai/deployment=chat")
    assert [d["metadata"]["name"] for d in deployments] == ["chat-primary"]
    assert deployments[0]["spec"]["replicas"] == 3
    assert cluster.stats().count("patch", "deployments.apps") == 1, cluster.stats().to_json()
    assert cluster.stats().count("create", "deployments.apps") == 0
    pods = cluster.objects("pods", "default", "deepseek.ai/deployment=chat")
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {final}


async def test_console_script_passes_kopf_options_through(cluster: Cluster, start_operator: StartOperator) -> None:
    """`deepseek-operator --liveness=...` is kopf's own probe endpoint (what the chart's livenessProbe calls)."""
    port = free_port()
    await start_operator(f"--liveness=http://127.0.0.1:{port}/healthz")

    async def healthy() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"http://127.0.0.1:{port}/healthz", timeout=5)).status_code == 200
        except httpx.HTTPError:
            return False

    assert await eventually(healthy, what="kopf's liveness endpoint")


async def test_metadata_only_edits_cost_no_write(cluster: Cluster, kubectl: Kubectl,
                                                 start_operator: StartOperator, priority_class: None) -> None:
    """Labels and annotations do not change the generation: no reconcile, no kopf bookkeeping."""
    operator = await start_operator()
    await kubectl("apply", "-f", "-", stdin=CHAT.replace("replicas: 2", "replicas: 1"))
    await eventually(lambda: settled(cluster, 1), timeout=60, what="Ready")
    await reconciled(operator, 2)
    cluster.reset_stats()
    for i in range(10):
        verb = "label" if i % 2 else "annotate"
        await kubectl(verb, "dsd", "chat", f"team.example.com/edit-{i}=v{i}")
    await reconciled(operator, 3)  # resync ticks after the edits, for good measure
    # The sandbox counts every HTTP write, so the 10 kubectl edits themselves; the real cluster counts
    # the operator's identity only. Either way: nothing beyond the user's own edits.
    users = 0 if isinstance(cluster, RealCluster) else 10
    stats = cluster.stats()
    assert stats.total == stats.count("patch", "deepseekdeployments.deepseek.ai", "") == users, (
        stats.to_json(), operator.log(grep="deepseek_operator"))
    annotations = (cluster.get("dsd", "default", "chat") or {})["metadata"].get("annotations") or {}
    assert not [a for a in annotations if a.startswith(("kopf.zalando.org/", "deepseek.ai/last-handled"))]


async def test_sigkill_mid_reconcile_leaves_exactly_one_child_of_each_kind(
        cluster: Cluster, kubectl: Kubectl, start_operator: StartOperator, priority_class: None) -> None:
    """Killed after its first child exists, the next operator converges without duplicates or orphans."""
    first = await start_operator()
    await kubectl("apply", "-f", "-", stdin=CHAT.replace("replicas: 2", "replicas: 1"))
    await eventually(lambda: cluster.objects("deployments", "default", OWNED)
                     or cluster.objects("services", "default", OWNED), interval=0.005, what="the first child")
    await first.kill()

    await start_operator()
    await eventually(lambda: settled(cluster, 1), timeout=60, what="Ready after the restart")
    kinds = {kind: sorted(o["metadata"]["name"] for o in cluster.objects(kind, "default", OWNED))
             for kind in ("deployments", "poddisruptionbudgets", "services")}
    assert kinds == {"deployments": ["chat-primary"], "poddisruptionbudgets": ["chat-primary"],
                     "services": ["chat", "chat-primary"]}, kinds
