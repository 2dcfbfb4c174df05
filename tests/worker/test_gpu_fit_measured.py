"""The operator's GPU-fit plan (operator/deepseek_operator/gpufit.py) against what the worker measures
after loading (engine/loading.py), on the tiny DeepSeek-V3 model and a wider random one, on CPU.

Tolerance: weights within 1% (measured: under 0.05%, docs/gpu-sizing.md), KV cache per token exact.
The plan's inputs are what a catalogue entry holds: the parameter count as the checkpoint has it, the
fused routed experts' count and the config.json geometry. On CPU the worker loads float32 (float16
under int8), so the plan is asked for the same dtype; on GPUs both are bfloat16.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from deepseek_operator import gpufit
from deepseek_worker.engine.loading import Loaded, load
from deepseek_worker.server.lifecycle import (
    MODEL_LOAD_EXIT_CODE,
    OOM_AT_LOAD_EXIT_CODE,
    OOM_AT_LOAD_PREFIX,
    load_failure,
)
from deepseek_worker.testing.tiny import build_random_model, build_tiny_model, tiny_config_kwargs
from deepseek_worker.types import EngineConfig

WEIGHT_TOLERANCE = 0.01
WIDE = {"vocab_size": 1024, "hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 128,
        "num_hidden_layers": 4, "first_k_dense_replace": 1, "num_attention_heads": 8, "num_key_value_heads": 8,
        "n_routed_experts": 8, "kv_lora_rank": 128, "q_lora_rank": 128, "qk_rope_head_dim": 32,
        "qk_nope_head_dim": 32, "v_head_dim": 32, "tie_word_embeddings": False}
# Where the wide model differs from the tiny one; the rest of its config is the tiny one's.
MODES = [("none", "float32"), ("nf4", "float32"), ("int8", "float16")]


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_model(tmp_path_factory.mktemp("wide"), **WIDE)


def architecture(config: dict[str, Any], loaded: Loaded) -> gpufit.Architecture:
    """The catalogue entry of a model: counts from the checkpoint (tied weights once), geometry from config."""
    params = {id(p): p for p in loaded.model.parameters()}.values()
    experts = sum(p.numel() for n, p in loaded.model.named_parameters() if ".mlp.experts." in n)
    return gpufit.Architecture(
        parameters=sum(p.numel() for p in params), layers=int(config["num_hidden_layers"]),
        hidden_size=int(config["hidden_size"]), attention_heads=int(config["num_attention_heads"]),
        kv_heads=int(config["num_key_value_heads"]), head_dim=0, vocab_size=int(config["vocab_size"]),
        tied_embeddings=bool(config["tie_word_embeddings"]), kv_lora_rank=int(config["kv_lora_rank"]),
        qk_rope_head_dim=int(config["qk_rope_head_dim"]), qk_nope_head_dim=int(config["qk_nope_head_dim"]),
        v_head_dim=int(config["v_head_dim"]), routed_expert_parameters=experts)


@pytest.mark.parametrize("which", ["tiny", "wide"])
def test_plan_matches_the_measured_weights_and_kv_cache(which: str, wide_model: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    path = str(build_tiny_model()) if which == "tiny" else str(wide_model)
    config = {**tiny_config_kwargs(), **(WIDE if which == "wide" else {})}
    reference = load(EngineConfig(model=path, dtype="float32"))
    arch = architecture(config, reference)
    for quantization, dtype in MODES:
        with caplog.at_level(logging.INFO, logger="deepseek_worker.engine.loading"):
            loaded = load(EngineConfig(model=path, dtype=dtype, quantization=quantization))  # type: ignore[arg-type]
        assert f"weight_bytes={loaded.weight_bytes} kv_cache_bytes_per_token={loaded.kv_cache_bytes_per_token}" \
            in caplog.text
        planned = gpufit.weight_bytes(arch, quantization, dtype)
        error = abs(planned - loaded.weight_bytes) / loaded.weight_bytes
        assert error <= WEIGHT_TOLERANCE, (which, quantization, planned, loaded.weight_bytes, f"{error:.4%}")
        assert gpufit.kv_bytes_per_token(arch, dtype) == loaded.kv_cache_bytes_per_token, (which, quantization)


def test_bitsandbytes_leaves_the_fused_routed_experts_unquantized(wide_model: Path) -> None:
    """Why the catalogue counts V3's routed experts at bfloat16 under nf4/int8 (docs/gpu-sizing.md)."""
    loaded = load(EngineConfig(model=str(wide_model), dtype="float32", quantization="nf4"))
    experts = {n: p for n, p in loaded.model.named_parameters() if ".mlp.experts." in n}
    assert experts and all(p.dtype == torch.float32 for p in experts.values())
    attention = dict(loaded.model.named_parameters())["model.layers.1.self_attn.o_proj.weight"]
    assert attention.dtype == torch.uint8  # packed 4-bit


def test_worker_and_operator_agree_on_the_load_failure_codes() -> None:
    from deepseek_operator import observe

    assert (observe.OOM_AT_LOAD_EXIT_CODE, observe.OOM_AT_LOAD_PREFIX) == (OOM_AT_LOAD_EXIT_CODE, OOM_AT_LOAD_PREFIX)
    assert observe.MODEL_LOAD_EXIT_CODE == MODEL_LOAD_EXIT_CODE


def test_cuda_out_of_memory_at_load_has_its_own_exit_code_and_message() -> None:
    code, message = load_failure("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert (code, message.split(":")[0]) == (OOM_AT_LOAD_EXIT_CODE, OOM_AT_LOAD_PREFIX)
    assert "Tried to allocate 2.00 GiB" in message
    assert load_failure("OSError: no such model")[0] == MODEL_LOAD_EXIT_CODE


async def test_the_server_exits_4_with_the_termination_message_on_oom(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from deepseek_worker.server import lifecycle

    log = tmp_path / "termination-log"
    monkeypatch.setattr(lifecycle, "TERMINATION_LOG", str(log))
    state = lifecycle.WorkerState()
    state.start_error = "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB"  # as app.py words it
    server = lifecycle.DrainingServer(uvicorn.Config(app=lambda *_: None), state, drain_timeout=1)
    assert await server.on_tick(0) is True
    assert server.exit_code == OOM_AT_LOAD_EXIT_CODE == 4
    assert log.read_text() == f"{OOM_AT_LOAD_PREFIX}: {state.start_error}"
