"""Loading choices: dtype resolution, bitsandbytes settings, attention choice, errors raised as themselves."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from deepseek_worker.engine import loading
from deepseek_worker.engine.loading import (
    attention_implementation,
    does_not_fit,
    gpu_max_memory,
    load,
    offloaded_modules,
    quantization_config,
    resolve_dtype,
)
from deepseek_worker.server.lifecycle import OOM_AT_LOAD_EXIT_CODE, load_failure
from deepseek_worker.types import EngineConfig


@pytest.mark.parametrize(("dtype", "quant", "cuda", "expected"), [
    ("auto", "none", False, torch.float32),
    ("auto", "none", True, torch.bfloat16),
    ("auto", "int8", False, torch.float16),  # bnb 8-bit on CPU wants half inputs
    ("auto", "nf4", False, torch.float32),
    ("float16", "none", False, torch.float16),
])
def test_dtype_resolution(dtype: str, quant: str, cuda: bool, expected: torch.dtype) -> None:
    config = EngineConfig(model="m", dtype=dtype, quantization=quant)  # type: ignore[arg-type]
    assert resolve_dtype(config, cuda) == expected


def test_bitsandbytes_settings() -> None:
    assert quantization_config(EngineConfig(model="m"), torch.float32) is None
    nf4 = quantization_config(EngineConfig(model="m", quantization="nf4"), torch.float32)
    assert nf4 is not None and nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4"
    int8 = quantization_config(EngineConfig(model="m", quantization="int8"), torch.float16, "deepseek_v3")
    assert int8 is not None and int8.load_in_8bit
    assert int8.llm_int8_skip_modules == ["lm_head", "kv_b_proj"]  # 4-D MLA latents: kept unquantized
    other = quantization_config(EngineConfig(model="m", quantization="int8"), torch.float16, "llama")
    assert other is not None and other.llm_int8_skip_modules is None


def test_attention_implementation() -> None:
    assert attention_implementation(EngineConfig(model="m", attention="eager")) == "eager"
    assert attention_implementation(EngineConfig(model="m", attention="sdpa")) == "sdpa"
    # The pool's passes hand attention 4-D masks, which flash_attention_2 cannot take: transformers'
    # default (sdpa, eager for a class without it), as for auto.
    assert attention_implementation(EngineConfig(model="m", attention="flash_attention_2")) is None
    assert attention_implementation(EngineConfig(model="m", attention="auto")) is None


@pytest.mark.slow
def test_flash_attention_request_loads_sdpa_with_a_warning(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="deepseek_worker.engine.loading"):
        loaded = load(EngineConfig(model=str(tiny_model_dir), attention="flash_attention_2"))
    assert loaded.attention == "sdpa"
    assert loaded.model.config._attn_implementation == "sdpa"
    assert any("flash_attention_2 cannot take" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_auto_attention_uses_eager_for_a_model_without_sdpa(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers decides from the model class whether sdpa is there (issue 18, item 4); before, "auto"
    asked for sdpa explicitly and such a model failed to load."""
    from transformers import DeepseekV3ForCausalLM, DeepseekV3Model, DeepseekV3PreTrainedModel

    for cls in (DeepseekV3PreTrainedModel, DeepseekV3Model, DeepseekV3ForCausalLM):
        monkeypatch.setattr(cls, "_supports_sdpa", False)
    with caplog.at_level(logging.WARNING, logger="deepseek_worker.engine.loading"):
        loaded = load(EngineConfig(model=str(tiny_model_dir), attention="auto"))
    assert loaded.attention == "eager" == loaded.model.config._attn_implementation
    assert any("does not support sdpa; using eager" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):  # asked for: not replaced
        load(EngineConfig(model=str(tiny_model_dir), attention="sdpa"))


@pytest.mark.slow
def test_a_quantization_conflict_is_raised_as_itself(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An FP8 checkpoint (DeepSeek-V3's own) with quantization nf4: refused as UnsupportedCheckpoint (a
    ValueError, engine/checkpoint.py) before transformers' own ValueError, never read as "attention
    unavailable" (issue 18, item 4; issue 20 item 6)."""
    model = tmp_path / "fp8"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128],
                                     "activation_scheme": "dynamic"}
    (model / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="deepseek_worker.engine.loading"), \
            pytest.raises(ValueError, match=r"FP8 checkpoint .*bitsandbytes cannot load it; set spec.runtime.name"):
        load(EngineConfig(model=str(model), quantization="nf4"))
    assert not [r.getMessage() for r in caplog.records if "attention" in r.getMessage()]


# --- only the GPUs hold the model (issue 18, item 2) ----------------------------------------------

GIB = 1024**3


def test_max_memory_names_only_the_gpus() -> None:
    assert gpu_max_memory([80 * GIB, 80 * GIB]) == {0: 80 * GIB, 1: 80 * GIB}  # no "cpu", no "disk"
    assert gpu_max_memory([]) == {}


def test_offloaded_modules_and_the_misfit_message() -> None:
    assert offloaded_modules({"": 0}) == offloaded_modules(None) == []
    device_map = {"model.embed_tokens": 0, "model.layers.0": 1, "model.layers.1": "disk", "lm_head": "cpu"}
    assert offloaded_modules(device_map) == ["lm_head", "model.layers.1"]
    error = does_not_fit(["model.layers.1"], 140 * GIB, {0: 80 * GIB})
    assert isinstance(error, torch.cuda.OutOfMemoryError)
    assert str(error).startswith("CUDA out of memory at load: the model does not fit on the GPUs")
    assert "need about 140.0 GiB, the 1 visible GPU(s) have 80.0 GiB" in str(error)


class _Props:
    total_memory = 80 * GIB


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, device_map: dict[str, object]) -> dict[str, object]:
    """Two 80 GiB GPUs; from_pretrained records its kwargs and loads the tiny model on the CPU with
    the given hf_device_map (what accelerate would have planned)."""
    from transformers import AutoModelForCausalLM

    seen: dict[str, object] = {}
    real = AutoModelForCausalLM.from_pretrained

    class Recording:
        @staticmethod
        def from_pretrained(path: str, **kwargs: object) -> object:
            seen.update(kwargs)
            model = real(path)
            model.hf_device_map = device_map
            return model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: _Props())
    monkeypatch.setattr(loading, "AutoModelForCausalLM", Recording)
    return seen


@pytest.mark.slow
def test_load_gives_only_the_gpus_to_max_memory(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _fake_cuda(monkeypatch, {"": 0})
    loaded = load(EngineConfig(model=str(tiny_model_dir)))
    assert seen["device_map"] == "auto"
    assert seen["max_memory"] == {0: 80 * GIB, 1: 80 * GIB}
    assert loaded.weight_bytes > 0


@pytest.mark.slow
def test_a_model_that_does_not_fit_fails_at_load_as_out_of_memory(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, device_map="auto" without max_memory offloaded the rest to the CPU and the worker served,
    unusably slowly, until the pod's memory limit killed it."""
    _fake_cuda(monkeypatch, {"model.embed_tokens": 0, "model.layers": 1, "lm_head": "disk"})
    with pytest.raises(torch.cuda.OutOfMemoryError, match="does not fit on the GPUs") as info:
        load(EngineConfig(model=str(tiny_model_dir)))
    assert "1 module(s) would be offloaded to disk (lm_head)" in str(info.value)
    assert "the 2 visible GPU(s) have 160.0 GiB" in str(info.value)
    # server/app.py records "<type>: <message>": the worker exits as OOMAtLoad.
    assert load_failure(f"{type(info.value).__name__}: {info.value}")[0] == OOM_AT_LOAD_EXIT_CODE
