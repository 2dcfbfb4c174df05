"""An uncatalogued FP8 checkpoint, planned from its downloaded config.json: priced as stored, and refused on
the builtin runtime with the runtime to set (config_geometry.py; issue 20 item 5)."""

from __future__ import annotations

from deepseek_operator import gpufit
from deepseek_operator.config_geometry import architecture_from_config
from tests.unit.test_gpufit import inputs

# What the download pod publishes for a renamed DeepSeek-V3 fine-tune stored in FP8 (worker download/geometry.py).
V3_FP8 = {"model_type": "deepseek_v3", "num_hidden_layers": 61, "hidden_size": 7168, "num_attention_heads": 128,
          "num_key_value_heads": 128, "vocab_size": 129280, "kv_lora_rank": 512, "qk_rope_head_dim": 64,
          "qk_nope_head_dim": 128, "v_head_dim": 128, "n_routed_experts": 256, "moe_intermediate_size": 2048,
          "first_k_dense_replace": 3, "quant_method": "fp8", "quant_fmt": "e4m3", "parameters": 684_531_386_000}


def test_an_uncatalogued_fp8_checkpoint_is_planned_as_stored_and_refused_on_builtin() -> None:
    arch = architecture_from_config(V3_FP8, checkpoint_bytes=688_600_000_000)
    assert arch is not None and arch.stored is not None and arch.stored.method == "fp8"
    builtin = gpufit.plan_inputs(inputs("acme/support-bot-v3", downloaded=arch))
    assert (builtin.fits, builtin.reason, builtin.model) == ("False", gpufit.UNSUPPORTED, gpufit.DOWNLOADED)
    assert "model acme/support-bot-v3 is stored in FP8 e4m3" in builtin.message
    assert "set spec.runtime.name: vllm or sglang" in builtin.message
    vllm = gpufit.plan_inputs(inputs("acme/support-bot-v3", downloaded=arch, runtime="vllm"))
    # ~1 byte per parameter (the MTP layer counted: the headers cannot tell it apart), within 1% of the files.
    assert vllm.fits == "True" and abs(vllm.weights * 8 - 688_600_000_000) / 688_600_000_000 < 0.01
    plain = architecture_from_config({k: v for k, v in V3_FP8.items() if not k.startswith("quant_")})
    assert plain is not None and plain.stored is None


def test_bitsandbytes_on_an_uncatalogued_fp8_checkpoint_is_refused_on_an_engine_too() -> None:
    arch = architecture_from_config(V3_FP8, checkpoint_bytes=688_600_000_000)
    fit = gpufit.plan_inputs(inputs("acme/support-bot-v3", downloaded=arch, runtime="vllm", quantization="nf4"))
    assert (fit.fits, fit.reason) == ("False", gpufit.UNSUPPORTED)
    assert "bitsandbytes (model.quantization nf4) cannot load it with spec.runtime vllm" in fit.message
    assert "set model.quantization none; with vllm: needs" in fit.message
