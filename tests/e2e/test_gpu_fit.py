"""Issue 11: the GPU-fit plan before any pod, and scheduler reasons that say what to do.

On the real control plane the two fake GPU nodes (tools/control-plane/gpu-nodes.yaml) have 8 GPUs each
and the label nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3; the sandbox's nodes carry the same labels.
"""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.conftest import Cluster, Kubectl, StartOperator, condition, current, eventually, warnings
from tests.e2e.test_rollouts import ticks

REG = "registry.example.com/deepseek-worker"
H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
OWNED = "deepseek.ai/deployment=chat"


def manifest(model: dict[str, Any], gpus: int = 1, node_selector: dict[str, str] | None = None,
             image: str = f"{REG}:1.0.0") -> str:
    return json.dumps({
        "apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": {"name": "chat"},
        "spec": {
            "image": image, "replicas": 1, "model": {**model, "loadTimeoutSeconds": 10},
            "resources": {"gpus": gpus, "cpu": "8", "memory": "64Gi", "shmSize": "16Gi"},
            "scheduling": {"nodeSelector": node_selector or {}},
            "rollout": {"progressDeadlineSeconds": 60},
        },
    })


async def ready_reason(cluster: Cluster, reason: str, timeout: float = 60) -> dict[str, Any]:
    obj: dict[str, Any] = await eventually(
        lambda: (o := current(cluster)) and condition(o, "Ready").get("reason") == reason and o,
        timeout=timeout, what=f"Ready=False {reason}")
    return obj


async def test_v3_is_refused_before_any_pod_fp8_on_builtin_and_8_h100s_on_vllm(
        cluster: Cluster, kubectl: Kubectl, start_operator: StartOperator) -> None:
    """V3 is stored in FP8: the builtin runtime cannot serve it (UnsupportedCheckpoint, naming spec.runtime);
    with vLLM it is priced as stored (673 GB) and 8 x H100 are short, where 2 x 8 would fit (issue 20)."""
    await start_operator()
    await kubectl("apply", "-f", "-", stdin=manifest({"id": "deepseek-ai/DeepSeek-V3"}, gpus=8, node_selector=H100))
    ready = condition(await ready_reason(cluster, "UnsupportedCheckpoint"), "Ready")
    assert "set spec.runtime.name: vllm or sglang" in ready["message"], ready
    assert cluster.objects("deployments", "default", OWNED) == []
    await eventually(lambda: len(warnings(cluster, "UnsupportedCheckpoint")) == 1, what="one Warning event")

    vllm = json.loads(manifest({"id": "deepseek-ai/DeepSeek-V3"}, gpus=8, node_selector=H100))
    vllm["spec"]["runtime"] = {"name": "vllm"}
    await kubectl("apply", "-f", "-", stdin=json.dumps(vllm))
    obj = await ready_reason(cluster, "InsufficientGPUMemory")
    ready = condition(obj, "Ready")
    # 673.15e9 bytes (FP8 + block scales + bf16 rest) / 8 = 78.4 GiB of weights per GPU; an H100 has 79.6 GiB.
    assert "needs 88.3 GiB per GPU (weights 78.4, KV cache 8.6, margin 1.3) on 8 GPU(s)" in ready["message"]
    assert "would fit: 2 x 8 GPUs (multi-node: resources.gpus 16" in ready["message"], ready
    fit = obj["status"]["gpuFit"]
    assert (fit["fits"], fit["requiredPerGPU"], fit["availablePerGPU"], fit["gpus"]) == ("False", "88.3Gi", "79.6Gi", 8)
    assert obj["status"]["variants"][0]["gpuFit"] == fit
    # Decided in the reconcile that wrote this status, before anything was applied: nothing exists.
    assert cluster.objects("deployments", "default", OWNED) == []
    assert cluster.objects("pods", "default", OWNED) == []
    header, row = (await kubectl("get", "dsd", "chat", "-o", "wide")).splitlines()
    at = header.index("FIT")  # kubectl aligns columns: FIT's cell starts where its header does
    assert "InsufficientGPUMemory" in row.split(), (header, row)
    assert row[at:].split()[:2] == ["False", "88.3/79.6Gi"], (header, row)
    await eventually(lambda: len(warnings(cluster, "InsufficientGPUMemory")) == 1, what="one Warning event")


async def test_advisory_warns_and_rolls_out_what_enforce_refuses(cluster: Cluster, kubectl: Kubectl,
                                                                start_operator: StartOperator) -> None:
    await start_operator()
    advisory = json.loads(manifest({"id": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B"}, gpus=1, node_selector=H100))
    advisory["spec"]["gpuFit"] = {"mode": "Advisory"}
    await kubectl("apply", "-f", "-", stdin=json.dumps(advisory))
    await eventually(lambda: cluster.objects("deployments", "default", OWNED), what="the worker Deployment")
    await eventually(lambda: len(warnings(cluster, "InsufficientGPUMemory")) == 1, what="one Warning event")
    obj = await eventually(lambda: (o := current(cluster)) and o.get("status", {}).get("gpuFit") and o,
                           what="status.gpuFit")
    assert obj["status"]["gpuFit"]["fits"] == "False"
    assert condition(obj, "Ready").get("reason") != "InsufficientGPUMemory"


async def test_the_suggested_quantization_fits_and_rolls_out(cluster: Cluster, kubectl: Kubectl,
                                                             start_operator: StartOperator) -> None:
    await start_operator()
    llama = {"id": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B"}
    await kubectl("apply", "-f", "-", stdin=manifest(llama, gpus=1, node_selector=H100))
    refused = condition(await ready_reason(cluster, "InsufficientGPUMemory"), "Ready")["message"]
    assert "would fit: model.quantization nf4" in refused, refused
    assert cluster.objects("deployments", "default", OWNED) == []

    await kubectl("apply", "-f", "-", stdin=manifest({**llama, "quantization": "nf4"}, gpus=1, node_selector=H100))
    await kubectl("wait", "--for=condition=Ready", "dsd/chat", "--timeout=90s")
    obj = current(cluster)
    assert obj is not None
    fit = obj["status"]["gpuFit"]
    assert fit["fits"] == "True" and fit["availablePerGPU"] == "79.6Gi", fit
    assert float(fit["requiredPerGPU"].removesuffix("Gi")) < 79.6
    pods = cluster.objects("pods", "default", OWNED)
    assert len(pods) == 1 and pods[0]["spec"]["nodeSelector"] == H100


async def test_a_node_selector_no_node_matches_is_no_matching_node(cluster: Cluster, kubectl: Kubectl,
                                                                  start_operator: StartOperator) -> None:
    """The real scheduler's own words; the 16-GPU InsufficientGPU case is in test_cluster_semantics.py."""
    await start_operator()
    b200 = {"nvidia.com/gpu.product": "NVIDIA-B200"}  # no such node: both are H100s
    await kubectl("apply", "-f", "-", stdin=manifest({"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"},
                                                     node_selector=b200))
    obj = await ready_reason(cluster, "NoMatchingNode")
    message = condition(obj, "Ready")["message"]
    assert "didn't match Pod's node affinity/selector" in message and "fix spec.scheduling" in message, message
    assert obj["status"]["gpuFit"]["fits"] == "True"  # the plan fits a B200: the nodes are the problem
    assert condition(obj, "Degraded")["status"] == "False"  # not a failure before the progress deadline
    _, row = (await kubectl("get", "dsd", "chat")).splitlines()
    assert "NoMatchingNode" in row.split(), row


async def test_out_of_memory_at_load_is_reported_with_the_plan(cluster: Cluster, kubectl: Kubectl,
                                                               start_operator: StartOperator) -> None:
    await start_operator()
    await kubectl("apply", "-f", "-", stdin=manifest({"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"},
                                                     node_selector=H100, image=f"{REG}:1.0.0-oomatload"))
    obj = await ready_reason(cluster, "OOMAtLoad")
    message = condition(obj, "Ready")["message"]
    assert "out of GPU memory while loading the model: OutOfMemoryError: CUDA out of memory" in message, message
    # R1-Distill-Qwen-7B, a reasoning model: its KV pool is priced at maxModelLen 32768 (family.py).
    assert "GPU-fit plan: needs 43.6 GiB per GPU" in message and "has 79.6 GiB" in message, message
    assert condition(obj, "Degraded")["reason"] == "OOMAtLoad"


async def test_a_reasoning_model_downloading_into_each_pod_is_sized_and_warned_once(
        cluster: Cluster, kubectl: Kubectl, start_operator: StartOperator) -> None:
    """Issue 18 items 1, 5, 9 from the outside: a 70B reasoning model from the hub without a cache gets the
    family's lengths in its worker env and plan, a bounded download volume the scheduler accounts for, and
    one Warning event each for the per-pod download and the load budget below the estimate."""
    operator = await start_operator()
    llama = {"id": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "quantization": "nf4"}
    await kubectl("apply", "-f", "-", stdin=manifest(llama, gpus=1, node_selector=H100))
    obj = await eventually(lambda: (o := current(cluster)) and len(o.get("status", {}).get("gpuFit", {})
                                                                  .get("warnings", [])) == 2 and o,
                           what="status.gpuFit.warnings")
    fit = obj["status"]["gpuFit"]
    assert (fit["maxModelLen"], fit["maxNewTokens"], fit["checkpointSize"]) == (32768, 16384, "131.4Gi"), fit
    assert fit["loadEstimateSeconds"] == 2177 and fit["fits"] == "True", fit
    assert "is ~141 GB and downloads into each pod" in fit["warnings"][0], fit
    assert "estimated at 2177s, more than model.loadTimeoutSeconds 10" in fit["warnings"][1], fit
    pods = await eventually(lambda: cluster.objects("pods", "default", OWNED), what="a worker pod")
    spec = pods[0]["spec"]
    worker = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert (env["DEEPSEEK_MAX_MODEL_LEN"], env["DEEPSEEK_MAX_NEW_TOKENS"]) == ("32768", "16384")
    assert worker["resources"]["requests"]["ephemeral-storage"] == "147Gi"
    assert next(v for v in spec["volumes"] if v["name"] == "cache")["emptyDir"] == {"sizeLimit": "147Gi"}
    await eventually(lambda: len(warnings(cluster, "ModelDownloadPerPod")) == 1
                     and len(warnings(cluster, "LoadTimeoutTooShort")) == 1, what="one Warning event each")
    # The scheduler places the pod with its ephemeral-storage request; later reconciles post no second warning.
    await eventually(lambda: (p := cluster.objects("pods", "default", OWNED)) and p[0]["spec"].get("nodeName"),
                     what="the pod bound to a node")
    await ticks(operator)
    assert len(warnings(cluster, "ModelDownloadPerPod")) == 1 and len(warnings(cluster, "LoadTimeoutTooShort")) == 1
