"""Optional APIs end to end (DESIGN principle 7): the Gateway API and the Prometheus Operator.

Without them the workers still roll out and a condition plus ONE Warning event say what is missing;
with them the routing and monitoring objects exist and follow the spec.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, Kubectl, Operator, StartOperator, condition, eventually, warnings

SPEC: dict[str, Any] = {
    "image": "registry.example.com/deepseek-worker:1.0.0", "replicas": 2,
    "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"},
    "ingress": {"provider": "gateway-api", "host": "chat.example.com", "gateway": {"parentRefs": [{"name": "public"}]}},
}
OWNED = "deepseek.ai/deployment=chat"


def manifest(**spec: Any) -> str:
    return json.dumps({"apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment",
                       "metadata": {"name": "chat"}, "spec": {**SPEC, **spec}})




async def ticks(operator: Operator, n: int = 3) -> None:
    """Wait until the operator has reconciled `n` more times (the resync runs every second)."""
    before = await operator.metric("deepseek_operator_reconciles_total")

    async def advanced() -> bool:
        return await operator.metric("deepseek_operator_reconciles_total") >= before + n

    await eventually(advanced, what=f"{n} more reconciles")


def dsd(sb: Cluster) -> dict[str, Any]:
    return sb.get("dsd", "default", "chat") or {}


async def disable(kubectl: Kubectl, part: str) -> None:
    patch = {"spec": {"monitoring": {part: {"enabled": False}}}}
    await kubectl("patch", "dsd", "chat", "--type=merge", "-p", json.dumps(patch))


def monitoring_objects(sb: Cluster) -> list[str]:
    return sorted(o["kind"] + "/" + o["metadata"]["name"]
                  for plural in ("servicemonitors", "prometheusrules") for o in sb.objects(plural, "default", OWNED))


@pytest.mark.sandbox_only(reason="the real cluster always serves the Gateway API and Prometheus Operator CRDs")
async def test_missing_apis_do_not_block_the_rollout_and_warn_once(cluster: Cluster, kubectl: Kubectl,
                                                                   start_operator: StartOperator) -> None:
    operator = await start_operator()
    await kubectl("apply", "-f", "-", stdin=manifest())  # monitoring is on by default
    await kubectl("wait", "--for=condition=Ready", "dsd/chat", "--timeout=30s")

    obj = dsd(cluster)
    assert obj["status"]["readyReplicas"] == 2
    ingress, monitoring = condition(obj, "IngressReady"), condition(obj, "MonitoringReady")
    assert (ingress["status"], ingress["reason"]) == ("False", "GatewayAPIMissing"), ingress
    assert (monitoring["status"], monitoring["reason"]) == ("False", "PrometheusOperatorMissing"), monitoring
    assert "ServiceMonitor" in monitoring["message"] and "PrometheusRule" in monitoring["message"]
    assert "Ready" in await kubectl("get", "dsd", "chat")

    # One Warning per missing API, not one per reconcile.
    await eventually(lambda: warnings(cluster, "GatewayAPIMissing") and warnings(cluster, "PrometheusOperatorMissing"),
                     what="the Warning events")
    await ticks(operator)
    assert len(warnings(cluster, "GatewayAPIMissing")) == 1, warnings(cluster, "GatewayAPIMissing")
    assert len(warnings(cluster, "PrometheusOperatorMissing")) == 1
    described = await kubectl("describe", "dsd", "chat")
    assert "GatewayAPIMissing" in described

    # Monitoring switched off: nothing is missing any more, the condition goes.
    await kubectl("patch", "dsd", "chat", "--type=merge", "-p",
                  '{"spec":{"monitoring":{"serviceMonitor":{"enabled":false},"prometheusRule":{"enabled":false}}}}')
    await eventually(lambda: dsd(cluster).get("status", {}).get("observedGeneration") == dsd(cluster)[
        "metadata"]["generation"] and not condition(dsd(cluster), "MonitoringReady"),
        what="MonitoringReady gone once monitoring is disabled")
    assert condition(dsd(cluster), "Ready")["status"] == "True"


@pytest.mark.sandbox_apis(monitoring=True, gateway=True)
async def test_present_apis_get_their_objects_and_disabling_deletes_them(
        cluster: Cluster, kubectl: Kubectl, start_operator: StartOperator) -> None:
    operator = await start_operator()
    await kubectl("apply", "-f", "-", stdin=manifest())
    await kubectl("wait", "--for=condition=Ready", "dsd/chat", "--timeout=30s")
    await eventually(lambda: monitoring_objects(cluster) == ["PrometheusRule/chat", "ServiceMonitor/chat"],
                     what="the ServiceMonitor and the PrometheusRule")
    obj = dsd(cluster)
    for ctype in ("IngressReady", "MonitoringReady"):
        assert (condition(obj, ctype)["status"], condition(obj, ctype)["reason"]) == ("True", "Configured")
    assert cluster.get("httproutes", "default", "chat") is not None
    assert warnings(cluster, "GatewayAPIMissing") == [] and warnings(cluster, "PrometheusOperatorMissing") == []

    # Idle with the real upstream CRDs (their schema defaults add fields): no write.
    await ticks(operator, 2)
    cluster.reset_stats()
    await ticks(operator)
    assert cluster.stats().total == 0, (cluster.stats().to_json(), operator.log(grep="status changed"))

    await disable(kubectl, "prometheusRule")
    await eventually(lambda: monitoring_objects(cluster) == ["ServiceMonitor/chat"], what="the PrometheusRule deleted")
    await disable(kubectl, "serviceMonitor")
    await eventually(lambda: monitoring_objects(cluster) == [], what="the ServiceMonitor deleted")
    await eventually(lambda: not condition(dsd(cluster), "MonitoringReady"), what="MonitoringReady gone")
    assert cluster.get("httproutes", "default", "chat") is not None
