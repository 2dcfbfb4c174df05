"""The builtin worker refuses FP8 checkpoints before loading a weight (issue 20 item 6): a tiny DeepSeek-V3
stored as DeepSeek-V3/R1 are (float8_e4m3fn weights, float32 weight_scale_inv per 128 x 128 block) exits
with status 3 and a termination message whose reason is UnsupportedCheckpoint and that names spec.runtime."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from safetensors import safe_open

from deepseek_worker.engine import loading
from deepseek_worker.engine.checkpoint import UnsupportedCheckpoint
from deepseek_worker.server.lifecycle import MODEL_LOAD_EXIT_CODE, MODEL_LOAD_PREFIX
from deepseek_worker.testing.fp8 import build_fp8_model
from deepseek_worker.testing.tiny import build_tiny_model
from deepseek_worker.types import EngineConfig

WORKER = Path(sys.executable).parent / "deepseek-worker"


@pytest.fixture(scope="module")
def fp8_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fp8_model(tmp_path_factory.mktemp("fp8"))


def test_the_tiny_fp8_checkpoint_is_block_quantized_like_v3(fp8_model: Path) -> None:
    config = json.loads((fp8_model / "config.json").read_text())
    assert config["quantization_config"] == {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                             "weight_block_size": [128, 128]}
    name = "model.layers.0.self_attn.q_b_proj"
    with safe_open(str(fp8_model / "model.safetensors"), "pt") as fp8, \
            safe_open(str(build_tiny_model() / "model.safetensors"), "pt") as bf16:
        weight, scale = fp8.get_tensor(f"{name}.weight"), fp8.get_tensor(f"{name}.weight_scale_inv")
        original = bf16.get_tensor(f"{name}.weight").float()
        assert fp8.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16  # not quantized, as in V3
        assert fp8.get_tensor("model.layers.1.mlp.experts.0.up_proj.weight").dtype == torch.float8_e4m3fn
    assert (weight.dtype, tuple(weight.shape)) == (torch.float8_e4m3fn, (192, 64))
    assert (scale.dtype, tuple(scale.shape)) == (torch.float32, (2, 1))  # ceil(192/128) x ceil(64/128) blocks
    dequantized = weight.float() * scale.repeat_interleave(128, 0)[:192].repeat_interleave(128, 1)[:, :64]
    assert torch.allclose(dequantized, original, rtol=0.07, atol=1e-3 * float(original.abs().max()))


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_load_refuses_fp8_before_reading_a_weight(fp8_model: Path, quantization: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", never)
    with pytest.raises(UnsupportedCheckpoint, match=r"FP8 checkpoint \(quantization_config: fp8 e4m3, 128x128 "
                       r"block scales\).*set spec.runtime.name: vllm or sglang"):
        loading.load(EngineConfig(model=str(fp8_model), quantization=quantization))  # type: ignore[arg-type]


def test_the_worker_exits_3_with_the_reason_unsupported_checkpoint(fp8_model: Path, tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DEEPSEEK_TERMINATION_LOG": str(log)}
    done = subprocess.run([str(WORKER), "--model", str(fp8_model), "--port", str(port), "--host", "127.0.0.1"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == MODEL_LOAD_EXIT_CODE, done.stderr[-2000:]
    message = log.read_text()
    assert message.startswith(f"{MODEL_LOAD_PREFIX}: UnsupportedCheckpoint: FP8 checkpoint"), message
    assert "set spec.runtime.name: vllm or sglang" in message


def test_the_download_publishes_the_stored_format(fp8_model: Path) -> None:
    """The model cache's report carries quant_method/quant_fmt, so the operator plans an uncatalogued FP8
    checkpoint as stored and says UnsupportedCheckpoint on builtin (operator config_geometry.py)."""
    from deepseek_worker.download.geometry import read_geometry

    config = read_geometry(fp8_model)
    assert (config["quant_method"], config["quant_fmt"]) == ("fp8", "e4m3")
    assert "quant_method" not in read_geometry(build_tiny_model())
