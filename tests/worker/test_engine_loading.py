"""Loading choices: dtype resolution, bitsandbytes settings, attention fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from deepseek_worker.engine.loading import attention_candidates, load, quantization_config, resolve_dtype
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


def test_attention_candidates() -> None:
    assert attention_candidates(EngineConfig(model="m", attention="eager")) == ["eager"]
    # The pool's passes hand attention 4-D masks, which flash_attention_2 cannot take.
    assert attention_candidates(EngineConfig(model="m", attention="flash_attention_2")) == ["sdpa"]
    assert attention_candidates(EngineConfig(model="m", attention="auto")) == ["sdpa"]


@pytest.mark.slow
def test_flash_attention_request_loads_sdpa_with_a_warning(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="deepseek_worker.engine.loading"):
        loaded = load(EngineConfig(model=str(tiny_model_dir), attention="flash_attention_2"))
    assert loaded.attention == "sdpa"
    assert loaded.model.config._attn_implementation == "sdpa"
    assert any("flash_attention_2 cannot take" in r.getMessage() for r in caplog.records)
