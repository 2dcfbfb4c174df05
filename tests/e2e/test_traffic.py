"""Issue 4 end to end: the weighted split between the primary and a canary follows the canary's readiness.

Rules (docs/traffic.md): a canary gets its spec weight only while one of its pods is ready, else 0;
the primary gets the rest. What the proxy object says and what status.variants says must agree.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, Kubectl, Operator, StartOperator, condition, eventually

REG = "registry.example.com/deepseek-worker"
V1, CANARY_GOOD, CANARY_BAD = f"{REG}:1.0.0", f"{REG}:1.1.0", f"{REG}:1.1.0-never-ready"
CANARY_PODS = "deepseek.ai/deployment=chat,deepseek.ai/variant=canary"
CANARY_WEIGHT = "nginx.ingress.kubernetes.io/canary-weight"


def manifest(provider: str, canary_image: str, weight: int, tls: bool = False) -> str:
    ingress: dict[str, Any] = {"provider": provider, "host": "chat.example.com", "path": "/v1"}
    if provider == "gateway-api":
        ingress["gateway"] = {"parentRefs": [{"name": "public", "namespace": "gateways"}]}
    if tls:
        ingress["tls"] = {"secretName": "chat-tls"}
    return json.dumps({
        "apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": {"name": "chat"},
        "spec": {
            "image": V1, "replicas": 1, "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"},
            "variants": [{"name": "canary", "weight": weight, "image": canary_image, "replicas": 1}],
            "ingress": ingress,
        },
    })


def route_weights(sb: Cluster) -> dict[str, int] | None:
    route = sb.get("httproutes", "default", "chat")
    if route is None:
        return None
    return {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}


def status_weights(sb: Cluster) -> dict[str, int]:
    obj = sb.get("dsd", "default", "chat") or {}
    return {v["name"]: v["weight"] for v in obj.get("status", {}).get("variants", [])}


def split(sb: Cluster, primary: int, canary: int) -> bool:
    """The HTTPRoute and status.variants both give primary/canary these weights."""
    return route_weights(sb) == {"chat-primary": primary, "chat-canary": canary} \
        and status_weights(sb) == {"primary": primary, "canary": canary}


def nginx_split(sb: Cluster, canary: int) -> bool:
    ing = sb.get("ingresses", "default", "chat-canary")
    return ing is not None and ing["metadata"].get("annotations", {}).get(CANARY_WEIGHT) == str(canary) \
        and status_weights(sb) == {"primary": 100 - canary, "canary": canary}


def ingress_names(sb: Cluster) -> list[str]:
    return sorted(i["metadata"]["name"] for i in sb.objects("ingresses", "default", "deepseek.ai/deployment=chat"))


def canary_ready(sb: Cluster) -> bool:
    pods = sb.objects("pods", "default", CANARY_PODS)
    return bool(pods) and all(condition(p, "Ready").get("status") == "True" for p in pods)


async def ticks(operator: Operator, n: int = 3) -> None:
    """Wait until the operator has reconciled `n` more times (the resync runs every second)."""
    before = await operator.metric("deepseek_operator_reconciles_total")

    async def advanced() -> bool:
        return await operator.metric("deepseek_operator_reconciles_total") >= before + n

    await eventually(advanced, what=f"{n} more reconciles")


def fail_canary(sb: Cluster, ready: bool | None) -> None:
    """Force the canary pods' readiness (both backends: see RealCluster.set_pod_ready)."""
    for pod in sb.objects("pods", "default", CANARY_PODS):
        sb.set_pod_ready("default", pod["metadata"]["name"], ready)


@pytest.mark.sandbox_apis(gateway=True)
async def test_httproute_weights_follow_canary_readiness(cluster: Cluster, kubectl: Kubectl,
                                                         start_operator: StartOperator) -> None:
    operator = await start_operator()
    await kubectl("apply", "-f", "-", stdin=manifest("gateway-api", CANARY_BAD, 20))

    # The canary never becomes ready: it gets nothing, however long we look.
    await eventually(lambda: split(cluster, 100, 0), what="100/0 while the canary is not ready")
    await eventually(lambda: (cluster.get("dsd", "default", "chat") or {}).get("status", {}).get("readyReplicas") == 1,
                     what="the primary ready")
    await ticks(operator)
    assert split(cluster, 100, 0), (route_weights(cluster), status_weights(cluster))
    obj = cluster.get("dsd", "default", "chat") or {}
    assert obj["status"]["url"] == "http://chat.example.com/v1"
    assert condition(obj, "IngressReady")["status"] == "True"
    route = cluster.get("httproutes", "default", "chat") or {}
    # The Gateway API CRD's schema defaults group and kind onto the parentRef.
    assert [(r["name"], r["namespace"]) for r in route["spec"]["parentRefs"]] == [("public", "gateways")]
    assert route["spec"]["hostnames"] == ["chat.example.com"]

    # A working canary image: the spec's split.
    await kubectl("apply", "-f", "-", stdin=manifest("gateway-api", CANARY_GOOD, 20))
    await eventually(lambda: split(cluster, 80, 20), what="80/20 once the canary is ready")
    await kubectl("wait", "--for=condition=Ready", "dsd/chat", "--timeout=30s")
    generation = (cluster.get("dsd", "default", "chat") or {})["metadata"]["generation"]

    # The canary fails again without any spec change: back to 100/0, then 80/20 when it recovers.
    fail_canary(cluster, False)
    await eventually(lambda: split(cluster, 100, 0), what="100/0 after the canary's pods turned unready")
    obj = cluster.get("dsd", "default", "chat") or {}
    assert obj["metadata"]["generation"] == generation
    assert condition(obj, "Ready")["status"] == "False"
    fail_canary(cluster, None)
    await eventually(lambda: split(cluster, 80, 20), what="80/20 after the canary recovered")


@pytest.mark.sandbox_apis(gateway=True)
async def test_switching_provider_replaces_the_routing_objects(cluster: Cluster, kubectl: Kubectl,
                                                               start_operator: StartOperator) -> None:
    await start_operator()
    await kubectl("apply", "-f", "-", stdin=manifest("ingress-nginx", CANARY_GOOD, 30))
    await eventually(lambda: nginx_split(cluster, 30), what="nginx canary weight 30")
    assert ingress_names(cluster) == ["chat", "chat-canary"]
    assert cluster.get("httproutes", "default", "chat") is None

    await kubectl("apply", "-f", "-", stdin=manifest("gateway-api", CANARY_GOOD, 30))
    await eventually(lambda: split(cluster, 70, 30) and not ingress_names(cluster),
                     what="the HTTPRoute at 70/30 and no Ingress left")

    await kubectl("apply", "-f", "-", stdin=manifest("ingress-nginx", CANARY_GOOD, 30))
    await eventually(lambda: nginx_split(cluster, 30) and ingress_names(cluster) == ["chat", "chat-canary"]
                     and cluster.get("httproutes", "default", "chat") is None,
                     what="the Ingress pair back and the HTTPRoute removed")


async def test_nginx_canary_weight_follows_readiness(cluster: Cluster, kubectl: Kubectl,
                                                     start_operator: StartOperator) -> None:
    operator = await start_operator()
    await kubectl("apply", "-f", "-", stdin=manifest("ingress-nginx", CANARY_BAD, 10, tls=True))
    await eventually(lambda: nginx_split(cluster, 0), what="canary-weight 0 while the canary is not ready")
    await ticks(operator)
    assert nginx_split(cluster, 0)

    primary = cluster.get("ingresses", "default", "chat") or {}
    assert not any(k.endswith("/canary") or k.endswith("/canary-weight")
                   for k in primary["metadata"].get("annotations", {}))
    assert primary["spec"]["tls"] == [{"hosts": ["chat.example.com"], "secretName": "chat-tls"}]
    assert primary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "chat-primary"
    canary = cluster.get("ingresses", "default", "chat-canary") or {}
    assert canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary"] == "true"
    assert canary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "chat-canary"
    assert (cluster.get("dsd", "default", "chat") or {})["status"]["url"] == "https://chat.example.com/v1"

    await kubectl("apply", "-f", "-", stdin=manifest("ingress-nginx", CANARY_GOOD, 10, tls=True))
    await eventually(lambda: nginx_split(cluster, 10) and canary_ready(cluster), what="canary-weight 10")
    fail_canary(cluster, False)
    await eventually(lambda: nginx_split(cluster, 0), what="canary-weight 0 after the canary turned unready")
