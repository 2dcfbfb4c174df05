"""spec.runtime as a user meets it (issue 20 item 1): `kubectl apply` of a vLLM DeepSeekDeployment with a
builtin canary reaches Ready with the real operator; the pods run two containers (our edge in proxy mode,
the engine with the GPU); runtime.args naming a flag the operator sets are refused at apply, naming the
field. On the real control plane kwok plays the kubelet; the sandbox runs the same test on its emulation.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from deepseek_operator.runtimes import DEFAULT_IMAGES
from tests.e2e.conftest import Cluster, Kubectl, StartOperator, condition, current
from tests.waiting import eventually

IMAGE = "registry.example.com/deepseek-worker:1.0.0"


def resource(**spec: Any) -> str:
    return json.dumps({
        "apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": {"name": "chat"},
        "spec": {"image": IMAGE, "runtime": {"name": "vllm"},
                 "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "loadTimeoutSeconds": 10},
                 "resources": {"gpus": 1, "cpu": "8", "memory": "64Gi"},
                 "rollout": {"progressDeadlineSeconds": 60}, **spec},
    })


async def test_a_vllm_deployment_reaches_ready_with_two_containers(cluster: Cluster, kubectl: Kubectl,
                                                                   start_operator: StartOperator) -> None:
    refused = await kubectl("apply", "-f", "-", stdin=resource(
        runtime={"name": "vllm", "args": ["--max-model-len=4096"]}), check=False)
    assert "spec.runtime.args" in refused and "the operator sets these flags" in refused, refused

    operator = await start_operator()
    await kubectl("apply", "-f", "-", stdin=resource(variants=[{"name": "builtin", "weight": 10,
                                                                 "runtime": {"name": "builtin"}}]))

    def ready() -> dict[str, Any] | None:
        obj = current(cluster)
        return obj if obj and condition(obj, "Ready").get("status") == "True" else None

    try:
        obj = await eventually(ready, timeout=90, what="the vLLM DeepSeekDeployment Ready")
    except pytest.fail.Exception:
        status = await kubectl("get", "dsd", "chat", "-o", "jsonpath={.status.conditions}", check=False)
        pytest.fail(f"not Ready; conditions: {status}\noperator log:\n{operator.log(60)}")
    assert obj["status"]["readyReplicas"] == 1
    primary = cluster.get("deployments", "default", "chat-primary")
    canary = cluster.get("deployments", "default", "chat-builtin")
    assert primary is not None and canary is not None
    edge, engine = primary["spec"]["template"]["spec"]["containers"]
    assert (edge["name"], edge["image"], engine["name"], engine["image"]) == (
        "worker", IMAGE, "engine", DEFAULT_IMAGES["vllm"])
    assert {"name": "DEEPSEEK_UPSTREAM", "value": "http://127.0.0.1:8001"} in edge["env"]
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in edge["resources"]["limits"]
    assert [c["name"] for c in canary["spec"]["template"]["spec"]["containers"]] == ["worker"]
