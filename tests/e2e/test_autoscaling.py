"""Scaling with demand as a user meets it (issue 22), on the real control plane: `kubectl apply` turns the
gateway and `autoscaling` on, the real operator renders the gateway's Deployment, Service, ConfigMap and
budget, points the stable Service at it and adds an HPA for the primary (the shared control plane never
serves keda.sh, so this is the HPA path; the ScaledObject path is checked against KEDA's CRD in
tests/unit/test_render_autoscaling.py and with the real KEDA operator in tests/e2e/test_keda.py);
the gateway's report ConfigMap reaches status.gateway and status.variants[].coldStart (and the gateway's
hold.loadSeconds); removing both prunes them and the operator writes the primary's replicas again.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, Kubectl, StartOperator, condition, current
from tests.waiting import eventually

pytestmark = pytest.mark.real_only(reason="the real HPA API, the real CEL and the Deployment controller's "
                                   "defaulting of a replicas field nobody writes")


def resource(**spec: Any) -> str:
    return json.dumps({
        "apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": {"name": "chat"},
        "spec": {"image": "registry.example.com/deepseek-worker:1.0.0",
                 "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "loadTimeoutSeconds": 10},
                 "resources": {"gpus": 1, "cpu": "8", "memory": "64Gi"},
                 "rollout": {"progressDeadlineSeconds": 60}, **spec},
    })


async def test_gateway_and_hpa_appear_and_are_pruned(cluster: Cluster, kubectl: Kubectl,
                                                     start_operator: StartOperator) -> None:
    refused = await kubectl("apply", "-f", "-", stdin=resource(autoscaling={"minReplicas": 0, "maxReplicas": 2}),
                            check=False)
    assert "spec.autoscaling.minReplicas" in refused and "needs spec.gateway.enabled" in refused, refused

    operator = await start_operator()
    # The test cluster's only nodes are tainted GPU nodes: the gateway tolerates them to be scheduled.
    await kubectl("apply", "-f", "-", stdin=resource(
        gateway={"enabled": True, "scheduling": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}},
        autoscaling={"minReplicas": 1, "maxReplicas": 3, "target": 4}))

    def gateway_children() -> dict[str, Any] | None:
        found = {kind: cluster.get(kind, "default", "chat-gateway")
                 for kind in ("deployments", "services", "configmaps", "poddisruptionbudgets")}
        found["hpa"] = cluster.get("horizontalpodautoscalers", "default", "chat-primary")
        return found if all(found.values()) else None

    try:
        found = await eventually(gateway_children, timeout=90, what="the gateway's children and the HPA")
    except pytest.fail.Exception:
        status = await kubectl("get", "dsd", "chat", "-o", "jsonpath={.status.conditions}", check=False)
        pytest.fail(f"no gateway/HPA; conditions: {status}\noperator log:\n{operator.log(60)}")
    gateway = found["deployments"]["spec"]
    assert gateway["replicas"] == 2 and gateway["selector"]["matchLabels"] == {"deepseek.ai/gateway": "chat"}
    env = {e["name"]: e.get("value") for e in gateway["template"]["spec"]["containers"][0]["env"]}
    assert env["DEEPSEEK_GATEWAY_CONFIG"] == "/etc/deepseek-gateway/gateway.json"
    document = json.loads(found["configmaps"]["data"]["gateway.json"])
    assert [v["name"] for v in document["variants"]] == ["primary"]
    hpa = found["hpa"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat-primary"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 3)
    stable = cluster.get("services", "default", "chat")
    assert stable is not None and stable["spec"]["selector"] == {"deepseek.ai/gateway": "chat"}

    async def autoscaling_ready() -> dict[str, Any] | None:
        obj = current(cluster)
        cond = condition(obj, "AutoscalingReady") if obj else {}
        variants = (obj or {}).get("status", {}).get("variants", [])
        return cond if cond.get("status") == "True" and variants and "autoscaling" in variants[0] else None

    ready = await eventually(autoscaling_ready, timeout=60, what="AutoscalingReady True")
    assert ready["reason"] == "HPA" and "primary: HorizontalPodAutoscaler on queueDepth" in ready["message"]

    async def gateway_ready() -> dict[str, Any] | None:
        obj = current(cluster)
        cond = condition(obj, "GatewayReady") if obj else {}
        return cond if cond.get("reason") == "GatewayAvailable" else None

    assert (await eventually(gateway_ready, timeout=90, what="GatewayReady: both gateway pods ready"))[
        "message"] == "2/2 gateway pods ready"

    # The gateway's report (what worker/deepseek_worker/gateway/report.py writes; kwok runs no gateway, so
    # the test writes it): the watch on the report ConfigMap brings it into status, and the measured p50
    # becomes the re-applied document's hold.loadSeconds.
    # Fresh: the operator ignores an entry silent for 10 minutes (measured.GATEWAY_STALE_SECONDS).
    reported_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = {"pod": "chat-gateway-x", "reportedAt": reported_at, "fallbackShare": 0.07, "requests": 100,
              "fallbackRequests": 7, "coldStarts": {"primary": {"lastSeconds": 33.2, "p50Seconds": 30.4, "count": 2,
                                                               "observedAt": reported_at}}}
    def report_of_this_resource() -> bool:
        """The report ConfigMap owned by this resource: one left by an earlier test's `chat` (another uid)
        is still being garbage-collected, and a write into it would be lost with it."""
        uid = ((current(cluster) or {}).get("metadata") or {}).get("uid")
        refs = ((cluster.get("configmaps", "default", "chat-gateway-report") or {}).get("metadata") or {}).get(
            "ownerReferences") or []
        return bool(uid) and any(ref.get("uid") == uid for ref in refs)

    await eventually(report_of_this_resource, timeout=60, what="the gateway's report ConfigMap of this resource")
    await kubectl("patch", "configmap", "chat-gateway-report", "--type=merge", "-p",
                  json.dumps({"data": {"gateway.chat-gateway-x": json.dumps(report)}}))

    async def reported() -> dict[str, Any] | None:
        status = (current(cluster) or {}).get("status", {})
        cold = (status.get("variants") or [{}])[0].get("coldStart")
        document = json.loads((cluster.get("configmaps", "default", "chat-gateway") or {}).get(
            "data", {}).get("gateway.json", "{}"))
        done = cold and status.get("gateway") and document.get("hold", {}).get("loadSeconds") == 31
        return {"cold": cold, "gateway": status["gateway"]} if done else None

    try:
        seen = await eventually(reported, timeout=60, what="status.gateway, coldStart and hold.loadSeconds 31")
    except pytest.fail.Exception:
        pytest.fail(f"not reported; status: {(current(cluster) or {}).get('status')}\ndocument: "
                    f"{(cluster.get('configmaps', 'default', 'chat-gateway') or {}).get('data')}\n"
                    f"operator log:\n{operator.log(60)}")
    assert seen["gateway"]["fallbackShare"] == "0.07" and seen["cold"]["lastSeconds"] == "33.2"
    assert seen["gateway"]["replicasReporting"] == 1
    assert (cluster.get("configmaps", "default", "chat-gateway-report") or {}).get("data", {}).get(
        "gateway.chat-gateway-x")  # fresh: not pruned

    # Off again: the HPA and the gateway go, the operator owns the primary's replicas once more.
    await kubectl("apply", "-f", "-", stdin=resource(replicas=2))

    def pruned() -> bool:
        primary = cluster.get("deployments", "default", "chat-primary") or {}
        stable = cluster.get("services", "default", "chat") or {}
        return (cluster.get("horizontalpodautoscalers", "default", "chat-primary") is None
                and cluster.get("deployments", "default", "chat-gateway") is None
                and cluster.get("configmaps", "default", "chat-gateway") is None
                and cluster.get("configmaps", "default", "chat-gateway-report") is None
                and primary.get("spec", {}).get("replicas") == 2
                and stable.get("spec", {}).get("selector") == {"deepseek.ai/deployment": "chat"})

    await eventually(pruned, timeout=90, what="the HPA and the gateway pruned, replicas 2 written")
    # The children can be gone before the status of that generation is written: wait for the status too.
    obj = await eventually(lambda: current(cluster), timeout=60, what="the status of the unscaled generation")
    assert not condition(obj, "AutoscalingReady")
