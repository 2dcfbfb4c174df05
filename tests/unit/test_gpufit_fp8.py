"""The GPU-fit plan of FP8 checkpoints per runtime (precision.py, gpufit.py; docs/gpu-sizing.md "FP8")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deepseek_operator import architectures, gpufit, precision
from deepseek_operator.api import Resources, parse_spec
from deepseek_operator.gpufit import GB, GIB, plan_inputs, plan_variants
from tests.unit.test_gpufit import H100, inputs

L40S = (("nvidia.com/gpu.product", "NVIDIA-L40S"),)


def test_v3_priced_as_stored_is_within_5_percent_of_the_hubs_safetensors() -> None:
    """The arithmetic of docs/gpu-sizing.md: FP8 weights + float32 block scales + bf16 rest + MTP layer."""
    v3 = architectures.CATALOGUE["deepseek-v3"]
    stored = v3.stored
    assert stored is not None and (stored.method, stored.fmt, stored.block) == ("fp8", "e4m3", (128, 128))
    assert round(v3.parameters / 1e9, 2) == 671.03  # the main model, as transformers and the engines load it
    assert round(stored.quantized / 1e9, 2) == 669.07  # every linear layer's weight
    assert round(stored.mtp_quantized / 1e9, 1) == 11.5  # the MTP layer's MoE decoder layer
    assert round(stored.mtp_parameters / 1e9, 1) == 13.5  # ... with its own embedding, head and eh_proj
    computed = stored.checkpoint_bytes(v3.parameters)
    assert v3.checkpoint_bytes == 688_600_000_000  # the hub's total for the repository's safetensors
    assert abs(computed - v3.checkpoint_bytes) / v3.checkpoint_bytes < 0.05
    assert round(computed / GB, 1) == 688.6
    # The runtimes leave the MTP layer out unless they speculate with it: 673.2 GB, not bf16's 1342 GB.
    assert round(gpufit.weight_bytes(v3, "none", "auto") / GB, 1) == 673.2
    assert gpufit.weight_bytes(v3, "none", "auto", mtp=True) == computed


def test_every_fp8_model_is_catalogued_as_stored_fp8() -> None:
    for key in precision.FP8_MODELS:
        found = architectures.lookup(f"deepseek-ai/{key}")
        assert found is not None and found[1].stored is not None, key
    stored = {k for k, a in architectures.CATALOGUE.items() if a.stored is not None}
    assert stored == set(precision.FP8_MODELS)
    pattern = precision.FP8_MODEL_ID
    for model_id in ("deepseek-ai/DeepSeek-V3", "/models/deepseek-r1/", "DeepSeek-V3.1", "x/deepseek-v3-0324"):
        assert re.match(pattern, model_id) and precision.is_fp8_model(model_id), model_id
    for model_id in ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "deepseek-ai/DeepSeek-V3x1", "deepseek-v2"):
        assert not re.match(pattern, model_id) and not precision.is_fp8_model(model_id), model_id


def test_builtin_refuses_an_fp8_checkpoint_naming_spec_runtime() -> None:
    fit = plan_inputs(inputs())
    assert (fit.fits, fit.reason) == ("False", gpufit.UNSUPPORTED)
    assert "stored in FP8 e4m3 with 128x128 block scales" in fit.message
    assert "set spec.runtime.name: vllm or sglang" in fit.message
    assert "with vllm: needs 88.3 GiB per GPU" in fit.message  # what the engine would need instead


@pytest.mark.parametrize("runtime", ["vllm", "sglang"])
def test_v3_fits_8_h200_but_not_8_h100_where_two_nodes_would(runtime: str) -> None:
    assert plan_inputs(inputs(runtime=runtime)).fits == "True"
    h100 = plan_inputs(inputs(runtime=runtime, node_selector=H100))
    assert (h100.fits, h100.reason) == ("False", gpufit.INSUFFICIENT)
    assert "would fit: 2 x 8 GPUs (multi-node: resources.gpus 16 with resources.gpusPerNode 8" in h100.message
    assert "resources.gpus 9" not in h100.message and "quantization" not in h100.message.split("would fit")[1]
    two = plan_inputs(inputs(runtime=runtime, node_selector=H100, gpus=16))
    assert two.fits == "True" and "on 16 GPU(s) (2 nodes of 8)" in two.message
    assert f"{two.weights / GIB:.1f}" == "39.2"


def test_suggestions_stay_within_a_node_unless_the_runtime_spans_nodes() -> None:
    """V2 in bf16 (472 GB) on L40S: 8 per node are short; builtin cannot span nodes, the engines can."""
    builtin = plan_inputs(inputs("deepseek-ai/DeepSeek-V2", node_selector=L40S))
    assert builtin.fits == "False"
    assert "nothing within one node's 8 GPUs fits (only spec.runtime vllm or sglang span nodes)" in builtin.message
    four = plan_inputs(inputs("deepseek-ai/DeepSeek-V2", node_selector=L40S, gpus_per_node=4, gpus=2))
    assert "would fit: model.quantization" not in four.message and "resources.gpus" not in four.message
    vllm = plan_inputs(inputs("deepseek-ai/DeepSeek-V2", node_selector=L40S, runtime="vllm"))
    assert "would fit: 2 x 8 GPUs (multi-node: resources.gpus 16" in vllm.message


def test_the_mtp_layer_and_an_fp8_kv_cache_follow_the_runtime_args() -> None:
    plain = plan_inputs(inputs(runtime="vllm"))
    spec = plan_inputs(inputs(runtime="vllm", runtime_args=("--speculative-config", '{"method":"deepseek_mtp"}')))
    v3 = architectures.CATALOGUE["deepseek-v3"]
    assert v3.stored is not None
    mtp = v3.stored.weight_bytes(v3.parameters, mtp=True) - v3.stored.weight_bytes(v3.parameters, mtp=False)
    assert spec.weights - plain.weights == pytest.approx(mtp / 8, abs=1)
    assert "with the MTP layer (speculative decoding)" in spec.message
    assert precision.mtp_loaded("sglang", ("--speculative-algorithm", "EAGLE"))
    assert not precision.mtp_loaded("builtin", ("--speculative-config", "x"))
    fp8_kv = plan_inputs(inputs(runtime="sglang", runtime_args=("--kv-cache-dtype", "fp8_e4m3")))
    assert fp8_kv.kv_cache * 2 == plain.kv_cache and "FP8 KV cache" in fp8_kv.message
    assert precision.kv_cache_fp8("vllm", ("--kv-cache-dtype=fp8",))


def test_tensor_parallel_splits_gqa_heads_pipeline_splits_layers() -> None:
    """A distill's GQA KV heads split over TP ranks (at most kv_heads ways); MLA's latent does not."""
    llama = architectures.CATALOGUE["deepseek-r1-distill-llama-70b"]  # 8 KV heads
    per_token = gpufit.kv_bytes_per_token(llama, "auto")
    fit = plan_inputs(inputs("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", runtime="vllm", max_batch_size=1))
    assert fit.kv_cache == 8192 * per_token // 8
    v3_pp = plan_inputs(inputs(runtime="vllm", pipeline=2))
    assert v3_pp.kv_cache == 8192 * 16 * 70272 // 2


def test_spec_runtime_and_gpus_per_node_reach_the_plan() -> None:
    spec = parse_spec({"image": "r/w:1", "model": {"id": "deepseek-ai/DeepSeek-R1"},
                       "resources": {"gpus": 8, "gpuMemory": "141Gi"}, "runtime": {"name": "vllm"},
                       "variants": [{"name": "builtin", "runtime": {"name": "builtin"}}]})
    fits = plan_variants(spec)
    assert fits["primary"].fits == "True" and "[runtime vllm, weights in FP8 as stored" in fits["primary"].message
    assert (fits["builtin"].fits, fits["builtin"].reason) == ("False", gpufit.UNSUPPORTED)
    small = parse_spec({"image": "r/w:1", "model": {"id": "deepseek-ai/DeepSeek-R1"}, "runtime": {"name": "sglang"},
                        "resources": {"gpus": 4, "gpusPerNode": 4, "gpuMemory": "141Gi"}})
    assert "would fit: 2 x 4 GPUs (multi-node: resources.gpus 8 with resources.gpusPerNode 4" in \
        plan_variants(small)["primary"].message


def test_multi_node_suggestions_stay_within_resources_gpus_maximum() -> None:
    assert Resources.model_fields["gpus"].metadata[1].le == gpufit.MAX_POD_GPUS
    tiny = plan_inputs(inputs(runtime="vllm", gpus=8, node_selector=(("nvidia.com/gpu.product", "Tesla-T4"),)))
    assert "nothing within 16 GPUs per pod fits" in tiny.message and "2 x 8" not in tiny.message


def test_the_docs_fp8_figures_are_the_plans() -> None:
    """docs/gpu-sizing.md "FP8 checkpoints": the table's totals and the worked example, recomputed."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "gpu-sizing.md").read_text(encoding="utf-8")
    v3 = architectures.CATALOGUE["deepseek-v3"]
    assert v3.stored is not None
    loaded, files = gpufit.weight_bytes(v3, "none", "auto"), v3.stored.checkpoint_bytes(v3.parameters)
    assert f"**{loaded / GB:.2f} GB** ({loaded // 8 / GIB:.1f} GiB per GPU on 8)" in text
    assert f"**{files / GB:.2f} GB**: the hub says 688.6 GB" in text
    h200 = gpufit.status_of(plan_inputs(inputs(runtime="vllm")))
    assert h200["summary"] == "True 88.3/140.4Gi" and "`True 88.3/140.4Gi`" in text
    h100 = plan_inputs(inputs(runtime="vllm", node_selector=H100))
    assert "False 88.3/79.6Gi" in text
    assert "needs 88.3 GiB per GPU (weights 78.4, KV cache 8.6, margin 1.3)" in h100.message
