"""spec.env, serving's edge settings and the narrowed network policy as a user meets them: `kubectl apply`
with the real operator (issue 18 items 6, 13, 20; issue 19 item 6). On the real control plane the CRD's
CEL rules and the children are the real apiserver's; the sandbox runs the same test on its emulation.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, Kubectl, StartOperator
from tests.waiting import eventually

OWNED = "deepseek.ai/deployment=chat"
PROXY = {"name": "HTTPS_PROXY", "value": "http://10.0.0.5:3128"}


def resource(**spec: Any) -> str:
    return json.dumps({
        "apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": {"name": "chat"},
        "spec": {"image": "registry.example.com/deepseek-worker:1.0.0",
                 "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "loadTimeoutSeconds": 10},
                 "resources": {"gpus": 1, "cpu": "8", "memory": "64Gi"},
                 "rollout": {"progressDeadlineSeconds": 60}, **spec},
    })


async def test_env_edge_settings_and_policy_reach_the_children(cluster: Cluster, kubectl: Kubectl,
                                                               start_operator: StartOperator) -> None:
    refused = await kubectl("apply", "-f", "-", stdin=resource(env=[{"name": "HF_TOKEN", "value": "x"}]),
                            check=False)
    assert "spec.env[0].name" in refused and "HF_TOKEN is set by the operator" in refused, refused

    operator = await start_operator()
    await kubectl("apply", "-f", "-", stdin=resource(
        env=[PROXY, {"name": "NCCL_DEBUG", "value": "WARN"}],
        variants=[{"name": "canary", "env": [{"name": "NCCL_DEBUG", "value": "INFO"}]}],
        serving={"maxConcurrentRequestsPerKey": 8, "forwardedAllowIPs": ["10.244.0.0/16"]},
        networkPolicy={"clients": [{"podSelector": {"matchLabels": {"app": "chat-ui"}}}],
                       "monitoringNamespaceSelector": {"kubernetes.io/metadata.name": "monitoring"}}))

    def env(name: str) -> dict[str, Any] | None:
        deployment = cluster.get("deployments", "default", name)
        if deployment is None:
            return None
        return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}

    def rendered(name: str) -> dict[str, Any] | None:
        found = env(name)
        return found if found and "FORWARDED_ALLOW_IPS" in found else None

    try:
        primary = await eventually(lambda: rendered("chat-primary"), timeout=60, what="the primary Deployment")
    except pytest.fail.Exception:
        status = await kubectl("get", "dsd", "chat", "-o", "jsonpath={.status.conditions}", check=False)
        pytest.fail(f"no primary Deployment with the env; conditions: {status}\noperator log:\n{operator.log(60)}")
    canary = await eventually(lambda: rendered("chat-canary"), timeout=60, what="the canary Deployment")
    assert primary["HTTPS_PROXY"] == PROXY["value"] and primary["NCCL_DEBUG"] == "WARN"
    assert canary["HTTPS_PROXY"] == PROXY["value"] and canary["NCCL_DEBUG"] == "INFO", "the variant's entry wins"
    assert primary["DEEPSEEK_MAX_CONCURRENT_REQUESTS_PER_KEY"] == "8"
    assert primary["FORWARDED_ALLOW_IPS"] == "10.244.0.0/16"

    def policies() -> dict[str, dict[str, Any]]:
        return {p["metadata"]["name"]: p["spec"] for p in cluster.objects("networkpolicies", "default", OWNED)}

    found = await eventually(lambda: (p := policies()) and "chat-model-hub" in p and p, timeout=60,
                             what="both NetworkPolicies")
    api_peers = [peer for rule in found["chat"]["ingress"] if {"protocol": "TCP", "port": 8000} in rule["ports"]
                 for peer in rule["from"]]
    assert api_peers == [{"podSelector": {"matchLabels": {"app": "chat-ui"}}}], "not every pod of the namespace"
    assert found["chat-model-hub"]["egress"] == [{"to": [{"ipBlock": {"cidr": "10.0.0.5/32"}}],
                                                  "ports": [{"protocol": "TCP", "port": 3128}]}], "the proxy only"
