"""The GPU-fit plan (gpufit.py) against numbers computed by hand, and the scheduler-reason split (observe.py)."""

from __future__ import annotations

from typing import Any

import pytest

from deepseek_operator import architectures, gpufit
from deepseek_operator.api import InvalidSpec, parse_spec
from deepseek_operator.gpufit import GIB, MIB, Inputs, plan_inputs, plan_variants
from deepseek_operator.observe import VariantObservation, pod_issue, variant_state
from deepseek_operator.status import Rollback, StatusInput, compute_status
from tests.unit.test_observe_status import deployment, pod, state

H200 = (("nvidia.com/gpu.product", "NVIDIA-H200"),)
H100 = (("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3"),)


def inputs(model: str = "deepseek-ai/DeepSeek-V3", **kw: Any) -> Inputs:
    base: dict[str, Any] = {"model_id": model, "dtype": "auto", "quantization": "none", "max_model_len": 8192,
                            "max_batch_size": 16, "gpus": 8, "node_selector": H200}
    return Inputs(**{**base, **kw})


def test_v3_fp8_on_8_h200_fits_with_vllm_the_worked_example() -> None:
    """docs/gpu-sizing.md's worked example: V3 priced as stored (FP8 + block scales + bf16 rest)."""
    fit = plan_inputs(inputs(runtime="vllm"))
    v3 = architectures.CATALOGUE["deepseek-v3"]
    assert v3.stored is not None
    # 669.07e9 FP8 parameters x 1 byte + their float32 scales per 128x128 block + 1.96e9 bf16 x 2 = 673.15e9.
    assert fit.weights == (v3.stored.quantized + v3.stored.quantized * 4 // 16384
                           + (v3.parameters - v3.stored.quantized) * 2) // 8
    assert f"{fit.weights / GIB:.1f}" == "78.4"
    assert fit.available == 143771 * MIB
    assert fit.fits == "True"
    # MLA's latent is on every tensor-parallel rank: 16 x 8192 x 70,272 bytes per GPU, not divided by 8.
    assert "needs 88.3 GiB per GPU (weights 78.4, KV cache 8.6, margin 1.3) on 8 GPU(s)" in fit.message
    assert (fit.kv_slots, fit.kv_pool_tokens) == (16, 16 * 8192)


def test_mla_cache_is_the_latent_and_rope_key_not_the_per_head_formula() -> None:
    v3 = architectures.CATALOGUE["deepseek-v3"]
    # 61 layers x (kv_lora_rank 512 + qk_rope_head_dim 64) x 2 bytes per token.
    assert gpufit.kv_bytes_per_token(v3, "bfloat16") == 61 * 576 * 2 == 70272
    naive = 2 * 61 * 7168 * 2  # 2 (K, V) x layers x hidden x 2 bytes
    assert round(naive / 70272) == 25
    assert plan_inputs(inputs(runtime="vllm")).kv_cache == 8192 * 16 * 70272  # replicated on every TP rank
    # builtin: device_map="auto" puts each layer (and its cache) on one GPU: the pool splits over them.
    v2 = plan_inputs(inputs("deepseek-ai/DeepSeek-V2"))
    assert v2.kv_cache == 8192 * 16 * (60 * 576 * 2) // 8


def test_gqa_cache_of_a_distill() -> None:
    qwen7 = architectures.CATALOGUE["deepseek-r1-distill-qwen-7b"]
    assert gpufit.kv_bytes_per_token(qwen7, "bfloat16") == 2 * 28 * 4 * 128 * 2  # 56 KiB per token


def test_nf4_of_a_dense_distill_fits_where_bf16_does_not() -> None:
    l4 = (("nvidia.com/gpu.product", "NVIDIA-L4"),)
    long = {"gpus": 1, "node_selector": l4, "max_model_len": 131072}
    bf16 = plan_inputs(inputs("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", **long))
    assert bf16.fits == "False"
    assert "would fit: model.quantization int8 or resources.gpus 2 or model.maxModelLen" in bf16.message
    nf4 = plan_inputs(inputs("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", quantization="nf4", **long))
    assert nf4.fits == "True" and nf4.kv_slots == 2
    # Embedding and LM head (2 x 152064 x 3584) stay bf16; the rest at 0.5 + 4/64 bytes.
    kept = 2 * 152064 * 3584
    assert nf4.weights == int(kept * 2 + (7_616_000_000 - kept) * 0.5625)


def test_v2_nf4_keeps_the_fused_routed_experts_at_bf16() -> None:
    """transformers >= 5 stores DeepSeek's routed experts as 3-D parameters, which bitsandbytes skips
    (tests/worker/test_gpu_fit_measured.py measures it): nf4 saves little on V2 and 4 H100s are short."""
    v2 = architectures.CATALOGUE["deepseek-v2"]
    assert v2.routed_expert_parameters == 59 * 160 * 3 * 5120 * 1536
    bf16 = plan_inputs(inputs("deepseek-ai/DeepSeek-V2", gpus=4, node_selector=H100))
    fit = plan_inputs(inputs("deepseek-ai/DeepSeek-V2", quantization="nf4", gpus=4, node_selector=H100))
    assert fit.fits == bf16.fits == "False" and fit.weights > 0.95 * bf16.weights
    assert "would fit: resources.gpus 6" in fit.message


def test_gpu_memory_sources_in_order() -> None:
    assert plan_inputs(inputs(gpu_memory="200Gi", gpus=8)).available == 200 * GIB
    labelled = (("nvidia.com/gpu.memory", "81559"), ("nvidia.com/gpu.product", "NVIDIA-H200"))
    assert plan_inputs(inputs(node_selector=labelled)).available == 81559 * MIB
    assert plan_inputs(inputs(node_selector=H100)).available == 81559 * MIB
    mig = (("nvidia.com/gpu.product", "NVIDIA-A100-SXM4-40GB-MIG-3g.20gb"),)
    assert plan_inputs(inputs(node_selector=mig)).available == 20 * 10**9


@pytest.mark.parametrize(("kw", "why"), [
    ({"node_selector": ()}, "set resources.gpuMemory (e.g. 80Gi) or a scheduling.nodeSelector"),
    ({"node_selector": (("nvidia.com/gpu.product", "Acme-X1"),)}, "GPU product Acme-X1 is not in the table"),
    ({"model_id": "my-org/unknown-model"}, "not in the catalogue (docs/gpu-sizing.md): set spec.model.architecture"),
    ({"gpus": 0}, "resources.gpus is 0"),
])
def test_unknown_fit_says_why(kw: dict[str, Any], why: str) -> None:
    fit = plan_inputs(inputs(runtime="vllm", **kw))
    assert fit.fits == "Unknown" and why in fit.message, fit.message


def test_spec_override_plans_an_unknown_model_and_variants_get_their_own_plan() -> None:
    spec = parse_spec({
        "image": "r/w:1", "model": {"id": "my-org/dense-7b", "architecture": {
            "parameters": "7.616B", "layers": 28, "hiddenSize": 3584, "attentionHeads": 28, "kvHeads": 4,
            "vocabSize": 152064}},
        "resources": {"gpus": 1, "gpuMemory": "80Gi"},
        "variants": [{"name": "big", "model": {"id": "deepseek-ai/DeepSeek-R1"}}],
    })
    fits = plan_variants(spec)
    catalogued = plan_inputs(inputs("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", gpus=1, gpu_memory="80Gi"))
    assert fits["primary"].model == "spec.model.architecture"
    assert (fits["primary"].weights, fits["primary"].kv_cache) == (catalogued.weights, catalogued.kv_cache)
    assert fits["primary"].fits == "True"
    # The variant changed id: the primary's geometry is not inherited, the catalogue's V3 entry is used.
    assert fits["big"].model == "deepseek-r1" and fits["big"].fits == "False"


def test_architecture_errors_name_the_field() -> None:
    with pytest.raises(InvalidSpec, match=r"spec.model.architecture: kvLoraRank \(MLA\) needs qkRopeHeadDim"):
        parse_spec({"image": "r/w:1", "model": {"id": "x", "architecture": {
            "parameters": "1B", "layers": 2, "hiddenSize": 64, "attentionHeads": 4, "kvLoraRank": 64}}})
    with pytest.raises(InvalidSpec, match=r"spec.resources.gpuMemory: String should match pattern"):
        parse_spec({"image": "r/w:1", "model": {"id": "x"}, "resources": {"gpuMemory": "80 GB"}})


def test_status_carries_the_plan_for_the_primary_and_each_variant() -> None:
    fit = gpufit.status_of(plan_inputs(inputs(runtime="vllm", node_selector=H100)))
    assert fit["summary"] == "False 88.3/79.6Gi" and fit["requiredPerGPU"] == "88.3Gi"
    inp = StatusInput(generation=1, variants=[state()], weights={"primary": 100}, selector="s", stable_image="",
                      rollback=Rollback(), auto_rollback=True, gpu_fit={"primary": fit})
    status = compute_status(inp, {}, "2026-01-01T00:00:00Z")
    assert status["gpuFit"] == fit and status["variants"][0]["gpuFit"] == fit


SCHEDULER = [
    ("0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: 0/2 nodes are available: "
     "2 No preemption victims found for incoming pod.", "InsufficientGPU", "lower resources.gpus"),
    ("0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/2 nodes are "
     "available: 2 Preemption is not helpful for scheduling.", "NoMatchingNode", "fix spec.scheduling"),
    ("0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
     "2 node(s) didn't match Pod's node affinity/selector.", "NoMatchingNode", "untaint"),
    ("0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) didn't match Pod's node affinity/selector.",
     "InsufficientGPU", "add a GPU node"),
    ("0/2 nodes are available: 2 Insufficient cpu.", "Unschedulable", "Insufficient cpu"),
]


@pytest.mark.parametrize(("message", "reason", "fix"), SCHEDULER, ids=[s[1] + str(i) for i, s in enumerate(SCHEDULER)])
def test_unschedulable_is_split_by_the_schedulers_words(message: str, reason: str, fix: str) -> None:
    issue = pod_issue(pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                       "message": message}]), "reg/worker:2")
    assert issue is not None and (issue.reason, issue.fatal) == (reason, False)
    assert fix in issue.message and message in issue.message


def test_oom_at_load_puts_the_plan_beside_the_failure() -> None:
    crashed = pod(containerStatuses=[{"name": "worker", "lastState": {"terminated": {
        "exitCode": 4, "message": "out of GPU memory while loading the model: CUDA out of memory"}}}])
    obs = VariantObservation("primary", "reg/worker:2", 2, deployment(ready=0, updated=1), [crashed],
                             fit_note="needs 93.6 GiB per GPU (weights 76.8, ...)")
    result = variant_state(obs)
    assert (result.phase, result.reason, result.fatal) == ("Failed", "OOMAtLoad", True)
    assert "CUDA out of memory" in result.message and "GPU-fit plan: needs 93.6 GiB per GPU" in result.message


QWEN7 = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
L4 = (("nvidia.com/gpu.product", "NVIDIA-L4"),)


def test_the_pool_holds_what_the_budget_leaves_in_slots_of_max_model_len() -> None:
    """The worker's rule: slots = min(maxBatchSize, (util x memory - weights - activations) / slot)."""
    fit = plan_inputs(inputs(QWEN7, gpus=1, node_selector=L4))
    qwen7 = architectures.CATALOGUE["deepseek-r1-distill-qwen-7b"]
    slot = 8192 * gpufit.kv_bytes_per_token(qwen7, "bfloat16")
    budget = int(0.9 * 23034 * MIB)
    assert fit.kv_slots == (budget - fit.weights - fit.activations) // slot == 12
    assert (fit.kv_cache, fit.kv_pool_tokens) == (12 * slot, 12 * 8192)
    assert fit.fits == "True" and "the KV pool holds 12 of serving.maxBatchSize 16 sequences" in fit.message
    assert fit.margin == gpufit.RUNTIME_BYTES + fit.activations and fit.peak == fit.required - gpufit.RUNTIME_BYTES
    # The worker's profile pass: maxNumBatchedTokens prompt tokens, plus its prefix cache.
    assert fit.activations == 2048 * 12 * 3584 * 2 + gpufit.PREFIX_CACHE_BYTES
    # Half the maxModelLen, twice the sequences (capped at maxBatchSize): the trade-off in docs/gpu-sizing.md.
    assert plan_inputs(inputs(QWEN7, gpus=1, node_selector=L4, max_model_len=4096)).kv_slots == 16
    # On a GPU with room to spare the pool is capped at maxBatchSize and the message says nothing more.
    h100 = plan_inputs(inputs(QWEN7, gpus=1, node_selector=H100))
    assert h100.kv_slots == 16 and "KV pool holds" not in h100.message
    status = gpufit.status_of(fit)
    assert (status["kvSlots"], status["kvPoolTokens"]) == (12, 12 * 8192)


def test_gpu_memory_utilization_sizes_the_pool_and_must_leave_room_for_the_runtime() -> None:
    lower = plan_inputs(inputs(QWEN7, gpus=1, node_selector=L4, gpu_memory_utilization=0.8))
    assert lower.kv_slots == 7 and lower.fits == "True"
    greedy = plan_inputs(inputs(QWEN7, gpus=1, node_selector=L4, gpu_memory_utilization=0.99))
    assert greedy.fits == "False" and "leaves less than the 1.0 GiB the CUDA runtime needs" in greedy.message
    assert "serving.gpuMemoryUtilization 0.96" in greedy.message
    unknown = plan_inputs(inputs(QWEN7, gpus=1, node_selector=()))
    assert (unknown.fits, unknown.kv_slots) == ("Unknown", 16)  # memory unknown: maxBatchSize assumed


def test_max_num_batched_tokens_sizes_the_prefill_activations() -> None:
    small = plan_inputs(inputs(QWEN7, gpus=1, node_selector=H100, max_num_batched_tokens=512))
    big = plan_inputs(inputs(QWEN7, gpus=1, node_selector=H100, max_num_batched_tokens=8192))
    assert big.activations - small.activations == (8192 - 512) * 12 * 3584 * 2


def test_the_spec_knobs_reach_the_plan() -> None:
    spec = parse_spec({"image": "r/w:1", "model": {"id": QWEN7}, "resources": {"gpus": 1},
                       "scheduling": {"nodeSelector": dict(L4)},
                       "serving": {"gpuMemoryUtilization": 0.8, "maxNumBatchedTokens": 512}})
    # maxModelLen and maxNewTokens unset: the reasoning family's lengths (family.py); the hub download
    # and the default load budget reach the start-up estimate.
    assert plan_variants(spec)["primary"] == plan_inputs(inputs(
        QWEN7, gpus=1, node_selector=L4, gpu_memory_utilization=0.8, max_num_batched_tokens=512,
        max_model_len=32768, max_new_tokens=16384, download=True, load_timeout_seconds=1800))


# --- issue 18: lengths by model family, the start-up estimate and its warnings ------------------------


def _plan(model: dict[str, Any], **spec: Any) -> gpufit.GpuFit:
    return plan_variants(parse_spec({"image": "r/w:1", "model": model, "resources": {"gpus": 1},
                                     "scheduling": {"nodeSelector": dict(H100)}, **spec}))["primary"]


def test_reasoning_models_get_room_to_think_and_the_pool_is_priced_with_it() -> None:
    """R1 and its distills: maxModelLen 32768 and maxNewTokens 16384 unless the spec says otherwise; the
    KV pool (status.gpuFit) is priced with the effective maxModelLen. Other families keep 8192 / 2048."""
    fit = _plan({"id": QWEN7})
    assert (fit.max_model_len, fit.max_new_tokens) == (32768, 16384)
    slot = 32768 * gpufit.kv_bytes_per_token(architectures.CATALOGUE["deepseek-r1-distill-qwen-7b"], "auto")
    assert fit.kv_cache == fit.kv_slots * slot and fit.kv_pool_tokens == fit.kv_slots * 32768
    status = gpufit.status_of(fit)
    assert (status["maxModelLen"], status["maxNewTokens"]) == (32768, 16384)
    v2 = _plan({"id": "deepseek-ai/DeepSeek-V2-Lite-Chat"})
    assert (v2.max_model_len, v2.max_new_tokens) == (8192, 2048)


@pytest.mark.parametrize(("model", "serving", "lengths"), [
    ({"maxModelLen": 8192}, {}, (8192, 4096)),  # an unset cap follows a smaller context: half of it
    ({}, {"maxNewTokens": 1024}, (32768, 1024)),
    ({"id": "deepseek-ai/DeepSeek-V3"}, {"maxNewTokens": 16384}, (32768, 16384)),  # context grows to 2x the cap
    ({"maxModelLen": 4096}, {"maxNewTokens": 1000}, (4096, 1000)),  # both set: the spec's
])
def test_set_lengths_win_and_unset_ones_stay_consistent(model: dict[str, Any], serving: dict[str, Any],
                                                      lengths: tuple[int, int]) -> None:
    fit = _plan({"id": QWEN7, **model}, serving=serving)
    assert (fit.max_model_len, fit.max_new_tokens) == lengths


def test_only_two_set_lengths_can_clash() -> None:
    parse_spec({"image": "r/w:1", "model": {"id": QWEN7}, "serving": {"maxNewTokens": 16384}})  # no error
    with pytest.raises(InvalidSpec, match=r"spec\.serving\.maxNewTokens: must be less than model\.maxModelLen"):
        parse_spec({"image": "r/w:1", "model": {"id": QWEN7, "maxModelLen": 8192}, "serving": {"maxNewTokens": 8192}})


def test_the_plan_estimates_the_start_from_the_checkpoint() -> None:
    """bytes / assumed rates (startup.py): a hub download at 100 MB/s, then a read at 200 MB/s, plus 60 s."""
    hub = _plan({"id": QWEN7})
    assert hub.checkpoint_bytes == 2 * 7_616_000_000
    assert hub.load_seconds == -(-(15_232_000_000 / 100e6 + 15_232_000_000 / 200e6 + 60) // 1) == 289
    cached = _plan({"id": QWEN7, "cache": {"enabled": True, "size": "40Gi"}})
    assert cached.load_seconds == 137  # read only: 15.2 GB / 200 MB/s + 60 s
    v3 = _plan({"id": "deepseek-ai/DeepSeek-R1", "cache": {"enabled": True, "size": "800Gi"}})
    assert v3.checkpoint_bytes == 688_600_000_000  # the hub's FP8 files, not 671B x 2 bytes
    status = gpufit.status_of(hub)
    assert (status["checkpointSize"], status["loadEstimateSeconds"]) == ("14.2Gi", 289)
    unknown = _plan({"id": "my-org/my-model", "cache": {"enabled": True, "size": "40Gi"}})
    assert (unknown.checkpoint_bytes, unknown.load_seconds, unknown.warnings) == (0, 0, ())
    # Downloading into each pod, an unknown size is an unbounded emptyDir: said, once, in status.
    unsized = _plan({"id": "my-org/my-model"})
    assert [reason for reason, _ in unsized.warnings] == ["ModelSizeUnknown"]
    assert "emptyDir without a size limit" in unsized.warnings[0][1] and "set model.cache" in unsized.warnings[0][1]


def test_a_load_budget_below_the_estimate_is_a_warning_with_a_suggestion() -> None:
    fit = _plan({"id": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "quantization": "nf4",
                 "cache": {"enabled": True, "size": "200Gi"}})
    # 141.1 GB read at 200 MB/s + 60 s = 766 s: within the default 1800 s.
    assert fit.load_seconds == 766 and fit.warnings == ()
    short = _plan({"id": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "quantization": "nf4", "loadTimeoutSeconds": 600,
                   "cache": {"enabled": True, "size": "200Gi"}})
    assert [reason for reason, _ in short.warnings] == ["LoadTimeoutTooShort"]
    message = short.warnings[0][1]
    assert "estimated at 766s, more than model.loadTimeoutSeconds 600" in message
    assert "at least 1200" in message  # 1.5 x 766 = 1149, rounded up to 5 minutes
    assert gpufit.status_of(short)["warnings"] == [message]


def test_a_large_hub_download_without_a_cache_is_a_warning() -> None:
    fit = _plan({"id": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "quantization": "nf4"})
    reasons = dict(fit.warnings)
    assert "model deepseek-ai/DeepSeek-R1-Distill-Llama-70B is ~141 GB and downloads into each pod (an emptyDir " \
        "of 147Gi, again on every reschedule); set model.cache" in reasons["ModelDownloadPerPod"]
    # 141 GB at 100 MB/s and then read: 2177 s, beyond the default budget too.
    assert "estimated at 2177s" in reasons["LoadTimeoutTooShort"]
    small = _plan({"id": QWEN7})  # 15 GB: below the threshold
    assert "ModelDownloadPerPod" not in dict(small.warnings)


def test_the_start_up_table_in_the_docs_is_the_formula() -> None:
    """docs/gpu-sizing.md's suggested loadTimeoutSeconds per model and source, recomputed from startup.py."""
    from pathlib import Path

    from deepseek_operator import startup

    text = (Path(__file__).resolve().parents[2] / "docs" / "gpu-sizing.md").read_text(encoding="utf-8")
    rows = [line.split("|")[1:-1] for line in text.split("## Start-up budget", 1)[1].splitlines()
            if line.startswith("| DeepSeek-")]
    assert len(rows) == 9
    for name, size, volume, hub, hub_budget, cached, cached_budget in ([c.strip() for c in r] for r in rows):
        checkpoint = architectures.CATALOGUE[name.split(",")[0].lower()].checkpoint_size()
        on_hub, on_volume = startup.load_seconds(checkpoint, True), startup.load_seconds(checkpoint, False)
        assert (size, volume) == (f"{checkpoint / 1e9:.1f}", startup.volume_quantity(checkpoint)), name
        assert (int(hub), int(hub_budget)) == (on_hub, startup.suggested_timeout(on_hub)), name
        assert (int(cached), int(cached_budget)) == (on_volume, startup.suggested_timeout(on_volume)), name
