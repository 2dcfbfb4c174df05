"""Issue 5 end to end: rolling image updates, failure reasons, automatic rollback (docs/rollouts.md).

The sandbox plays the cluster (its kubelet fails pods by image name, see docs/sandbox.md), the real
`deepseek-operator` runs in a subprocess with a 1 s resync, and users act through the real kubectl.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import (
    ROOT,
    Cluster,
    Kubectl,
    Operator,
    StartOperator,
    condition,
    current,
    dsd,
    eventually,
    warnings,
)

REG = "registry.example.com/deepseek-worker"
V1, V2, V3 = f"{REG}:1.0.0", f"{REG}:2.0.0", f"{REG}:3.0.0"
PRIMARY_PODS = "deepseek.ai/deployment=chat,deepseek.ai/variant=primary"

# failure kind -> (bad image, the reason the operator reports, a fragment of the pod's own message)
FATAL = {
    "CrashLoop": (f"{REG}:2.0.0-crashloop", "CrashLoop", "back-off 10s restarting failed container"),
    "ImagePullFailed": (f"{REG}:2.0.0-does-not-exist", "ImagePullFailed", "Back-off pulling image"),
    "OOMKilled": (f"{REG}:2.0.0-oomkilled", "OOMKilled", "was OOM-killed; raise resources.memory"),
    "ModelLoadFailed": (f"{REG}:2.0.0-modelloadfail", "ModelLoadFailed", "model load failed: cannot load weights"),
}
# Never Ready: only the Deployment's progress deadline (10 s, the CRD minimum) says it failed.
DEADLINE = (f"{REG}:2.0.0-never-ready", "ProgressDeadlineExceeded", "has timed out progressing")
KINDS = {**FATAL, "ProgressDeadlineExceeded": DEADLINE}


def manifest(image: str = V1, replicas: int = 2, gpus: int = 1, auto_rollback: bool = True,
             max_surge: int = 0, max_unavailable: int = 1, strategy: str = "Auto") -> str:
    """The resource as JSON (kubectl apply takes JSON as YAML)."""
    return json.dumps({
        "apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": {"name": "chat"},
        "spec": {
            "image": image, "replicas": replicas,
            "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "loadTimeoutSeconds": 10},
            "resources": {"gpus": gpus, "cpu": "8", "memory": "64Gi", "shmSize": "16Gi"},
            "rollout": {"strategy": strategy, "maxSurge": max_surge, "maxUnavailable": max_unavailable,
                        "progressDeadlineSeconds": 10, "autoRollback": auto_rollback},
        },
    })



def is_ready(pod: dict[str, Any]) -> bool:
    return condition(pod, "Ready").get("status") == "True"


def primary_images(sb: Cluster) -> list[str]:
    return sorted(p["spec"]["containers"][0]["image"] for p in sb.objects("pods", "default", PRIMARY_PODS))


def serving(sb: Cluster, image: str, replicas: int) -> bool:
    """Exactly `replicas` primary pods, all on `image` and Ready."""
    pods = sb.objects("pods", "default", PRIMARY_PODS)
    return len(pods) == replicas and all(p["spec"]["containers"][0]["image"] == image and is_ready(p) for p in pods)




async def set_image(kubectl: Kubectl, image: str) -> None:
    await kubectl("patch", "dsd", "chat", "--type=merge", "-p", json.dumps({"spec": {"image": image}}))


async def ticks(operator: Operator, n: int = 3) -> None:
    """Wait until the operator has reconciled `n` more times (the resync runs every second)."""
    before = await operator.metric("deepseek_operator_reconciles_total")

    async def advanced() -> bool:
        return await operator.metric("deepseek_operator_reconciles_total") >= before + n

    await eventually(advanced, what=f"{n} more reconciles")


async def start_ready(sb: Cluster, kubectl: Kubectl, start_operator: StartOperator, **spec: Any) -> Operator:
    operator = await start_operator()
    await kubectl("apply", "-f", "-", stdin=manifest(**spec))
    await kubectl("wait", "--for=condition=Ready", "dsd/chat", "--timeout=30s")
    assert dsd(sb)["status"]["image"] == spec.get("image", V1)
    return operator


@pytest.mark.sandbox_only(reason="records every stored change synchronously (Sandbox.listen)")
async def test_rollout_to_a_good_image_reports_progress_and_moves_status_image_last(
        cluster: Cluster, kubectl: Kubectl, start_operator: StartOperator) -> None:
    await start_ready(cluster, kubectl, start_operator, replicas=3)
    seen: list[tuple[str, str, str, str]] = []
    early: list[list[tuple[str, bool]]] = []

    def record(plural: str, _event: str, obj: dict[str, Any]) -> None:
        # Runs synchronously on every stored change: the pods read here are those of that instant.
        if plural != "deepseekdeployments":
            return
        status = obj.get("status") or {}
        ready, progressing = condition(obj, "Ready"), condition(obj, "Progressing")
        seen.append((ready.get("status", ""), ready.get("reason", ""), progressing.get("status", ""),
                     status.get("image", "")))
        if status.get("image") == V2:
            pods = [(p["spec"]["containers"][0]["image"], is_ready(p))
                    for p in cluster.objects("pods", "default", PRIMARY_PODS)]
            if len(pods) != 3 or any(image != V2 or not ok for image, ok in pods):
                early.append(pods)

    cluster.listen(record)
    await set_image(kubectl, V2)
    await kubectl("wait", "--for=condition=Ready", "dsd/chat", "--timeout=30s")

    obj = dsd(cluster)
    assert obj["status"]["image"] == V2 and obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert serving(cluster, V2, 3)
    assert ("False", "RollingOut", "True", V1) in seen, seen  # during: not Ready, Progressing, old image
    assert early == [], f"status.image was {V2} while primary pods were {early[0]}"
    assert condition(obj, "Progressing")["reason"] == "RolloutComplete"
    assert condition(obj, "Degraded")["status"] == "False"
    assert obj["status"].get("failedImage", "") == ""


@pytest.mark.parametrize("kind", list(KINDS))
async def test_failed_rollout_is_rolled_back_and_not_retried(
        cluster: Cluster, kubectl: Kubectl, start_operator: StartOperator, kind: str) -> None:
    bad, reason, pod_message = KINDS[kind]
    operator = await start_ready(cluster, kubectl, start_operator)
    await set_image(kubectl, bad)

    # The old image is back on every primary pod; the status names the bad image.
    obj = await eventually(lambda: (o := current(cluster)) and o["status"].get("failedImage") == bad
                           and serving(cluster, V1, 2) and o, timeout=30, what="rolled back to the old image")
    for ctype in ("Ready", "Degraded"):
        cond = condition(obj, ctype)
        assert cond["reason"] == "RolledBack" and bad in cond["message"], cond
    assert condition(obj, "Degraded")["status"] == "True"
    assert condition(obj, "Available")["status"] == "True"
    assert obj["status"]["image"] == V1
    # The event says why, with the pod's own words.
    events = await eventually(lambda: warnings(cluster, "RolledBack"), what="a RolledBack event")
    assert len(events) == 1 and f"({reason}:" in events[0] and pod_message in events[0], events

    # Settled: several resync ticks later nothing has written the Deployment again (no retry).
    await ticks(operator)
    cluster.reset_stats()
    await ticks(operator)
    assert cluster.stats().count("patch", "deployments.apps") == 0, cluster.stats().to_json()
    assert cluster.stats().total == 0, (cluster.stats().to_json(), operator.log(grep="status changed"))
    assert primary_images(cluster) == [V1, V1]
    assert len(warnings(cluster, "RolledBack")) == 1

    # A new image is rolled out and clears failedImage.
    await set_image(kubectl, V3)
    await kubectl("wait", "--for=condition=Ready", "dsd/chat", "--timeout=30s")
    obj = dsd(cluster)
    assert obj["status"]["image"] == V3 and obj["status"].get("failedImage", "") == ""
    assert condition(obj, "Degraded")["status"] == "False"
    assert serving(cluster, V3, 2)


@pytest.mark.parametrize("kind", list(KINDS))
async def test_failed_rollout_without_auto_rollback_stays_degraded(
        cluster: Cluster, kubectl: Kubectl, start_operator: StartOperator, kind: str) -> None:
    bad, reason, pod_message = KINDS[kind]
    operator = await start_ready(cluster, kubectl, start_operator, auto_rollback=False)
    await set_image(kubectl, bad)

    obj = await eventually(lambda: (o := current(cluster)) and condition(o, "Degraded").get("reason") == reason
                           and o, timeout=30, what=f"Degraded {reason}")
    assert condition(obj, "Degraded")["status"] == "True"
    assert pod_message in condition(obj, "Degraded")["message"]
    assert "autoRollback is off" in condition(obj, "Degraded")["message"]
    ready = condition(obj, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason) and pod_message in ready["message"]
    assert (condition(obj, "Progressing")["status"], condition(obj, "Progressing")["reason"]) == ("False", reason)
    assert obj["status"]["image"] == V1 and obj["status"]["failedImage"] == bad

    await ticks(operator)
    assert bad in primary_images(cluster), primary_images(cluster)  # no rollback: the bad pod stays
    assert (cluster.get("deployments", "default", "chat-primary") or {})["spec"]["template"]["spec"][
        "containers"][0]["image"] == bad
    assert warnings(cluster, "RolledBack") == []
    assert len(warnings(cluster, "RolloutFailed")) == 1
    assert condition(dsd(cluster), "Degraded")["reason"] == reason


async def test_unschedulable_waits_for_the_progress_deadline_then_rolls_back(
        cluster: Cluster, kubectl: Kubectl, start_operator: StartOperator) -> None:
    # Two pods of 8 GPUs fill the sandbox's two 8-GPU nodes; maxSurge 1 needs a third node.
    operator = await start_ready(cluster, kubectl, start_operator, gpus=8, strategy="Surge")
    await set_image(kubectl, V2)

    obj = await eventually(lambda: (o := current(cluster)) and condition(o, "Ready").get("reason") == "InsufficientGPU"
                           and o, timeout=30, what="Ready=False InsufficientGPU")
    assert "Insufficient nvidia.com/gpu" in condition(obj, "Ready")["message"]
    assert condition(obj, "Progressing")["reason"] == "InsufficientGPU"
    # Not a failure yet: a cluster autoscaler may add a GPU node before the deadline.
    await ticks(operator)
    obj = dsd(cluster)
    assert condition(obj, "Degraded")["status"] == "False", condition(obj, "Degraded")
    assert obj["status"].get("failedImage", "") == ""
    assert condition(obj, "Available")["status"] == "True"  # maxUnavailable 0: the old pods serve
    assert V2 in primary_images(cluster)

    obj = await eventually(lambda: (o := current(cluster)) and o["status"].get("failedImage") == V2
                           and serving(cluster, V1, 2) and o, timeout=30, what="rolled back after the deadline")
    assert condition(obj, "Degraded")["reason"] == "RolledBack"
    events = await eventually(lambda: warnings(cluster, "RolledBack"), what="a RolledBack event")
    assert len(events) == 1 and "ProgressDeadlineExceeded" in events[0], events


async def test_clearing_failed_image_by_hand_retries_it(cluster: Cluster, kubectl: Kubectl,
                                                       start_operator: StartOperator) -> None:
    """docs/rollouts.md's escape hatch: the rollback memory is status.failedImage and nothing else."""
    bad = FATAL["CrashLoop"][0]
    await start_ready(cluster, kubectl, start_operator)
    await set_image(kubectl, bad)
    await eventually(lambda: (o := current(cluster)) and o["status"].get("failedImage") == bad
                     and serving(cluster, V1, 2), timeout=30, what="the first rollback")
    await eventually(lambda: len(warnings(cluster, "RolledBack")) == 1, what="the first RolledBack event")

    await kubectl("patch", "dsd", "chat", "--subresource=status", "--type=merge", "-p",
                  '{"status":{"failedImage":""}}')
    # Retried: the bad image goes out again, fails again, and is rolled back again.
    await eventually(lambda: len(warnings(cluster, "RolledBack")) == 2, timeout=30, what="a second RolledBack")
    await eventually(lambda: (o := current(cluster)) and o["status"].get("failedImage") == bad
                     and serving(cluster, V1, 2), timeout=30, what="the second rollback")


def test_docs_name_every_reason_tested_here() -> None:
    """docs/rollouts.md documents each reason these tests expect (and its test names it)."""
    doc = (ROOT / "docs" / "rollouts.md").read_text()
    for reason in [*KINDS, "InsufficientGPU", "RolledBack", "RolloutFailed", "RollingOut", "RolloutComplete"]:
        assert f"`{reason}`" in doc, reason
