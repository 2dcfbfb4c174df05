"""How a checkpoint stores its weights, and what each runtime loads of it (docs/gpu-sizing.md, "FP8").

DeepSeek-V3, -V3-0324, -V3.1, -R1 and -R1-0528 are stored on the hub in FP8 (e4m3) with one float32
scale (`weight_scale_inv`) per 128 x 128 block of every linear layer's weight; the embedding, the LM
head, the norms and the MoE routers stay bf16. They also carry one multi-token-prediction (MTP) layer
(`num_nextn_predict_layers: 1`, model.layers.61: a full MoE decoder layer of 11.5B parameters plus its
own embedding, head and projection, 13.5B in all) that the main model does not use:

    bytes = quantized x 1 + quantized x 4 / (128 x 128) + (parameters - quantized) x 2

`FP8_MODELS` is THE list of catalogued FP8 checkpoints: the CRD's CEL rule against bitsandbytes on them
is generated from it (tools/crd_rules.py, `FP8_MODEL_ID`), and api.cross_field_errors reads it too.
Pure data and arithmetic: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deepseek_operator.family import model_key

FP8 = "fp8"
SCALE_BYTES = 4  # weight_scale_inv is float32
BF16_BYTES = 2
# Catalogue keys (last path component of model.id, lower case) of the checkpoints stored in FP8.
FP8_MODELS = ("deepseek-v3", "deepseek-v3-base", "deepseek-v3-0324", "deepseek-r1", "deepseek-r1-zero",
              "deepseek-r1-0528", "deepseek-v3.1", "deepseek-v3.1-base", "deepseek-v3.1-terminus")
# The same list as a regular expression over a whole model.id (an HF id or a path in the pod), for CEL
# (RE2) and Python alike: '[.]' rather than '\.' (the text is a CEL string literal).
FP8_MODEL_ID = "(?i)^(?:.*/)?(?:" + "|".join(m.replace(".", "[.]") for m in FP8_MODELS) + ")/?$"
RUNTIMES = ("builtin", "vllm", "sglang")
BUILTIN = "builtin"


@dataclass(frozen=True)
class Stored:
    """A checkpoint stored quantized (its config.json's quantization_config)."""

    method: str  # quant_method, e.g. "fp8"
    fmt: str = "e4m3"
    block: tuple[int, int] = (128, 128)  # weight_block_size: one float32 scale per block
    quantized: int = 0  # parameters of the main model stored in `method` (linear layers); the rest bf16
    mtp_parameters: int = 0  # the MTP layer(s), beyond the main model's parameters
    mtp_quantized: int = 0

    def describe(self) -> str:
        return f"{self.method.upper()} {self.fmt} with {self.block[0]}x{self.block[1]} block scales"

    def weight_bytes(self, parameters: int, *, mtp: bool) -> int:
        """Bytes of the main model's `parameters` (and the MTP layer when `mtp`) as stored and as vLLM
        and SGLang keep them on the GPU (FP8 weights, float32 block scales, bf16 rest)."""
        out = _bytes(parameters, self.quantized, self.block)
        return out + (_bytes(self.mtp_parameters, self.mtp_quantized, self.block) if mtp else 0)

    def checkpoint_bytes(self, parameters: int) -> int:
        """The safetensors files: every weight as stored, the MTP layer included."""
        return self.weight_bytes(parameters, mtp=True)


def _bytes(parameters: int, quantized: int, block: tuple[int, int]) -> int:
    scales = quantized * SCALE_BYTES // (block[0] * block[1])
    return quantized + scales + (parameters - quantized) * BF16_BYTES


def deepseek_v3_fp8() -> tuple[int, Stored]:
    """(main-model parameters, Stored) of DeepSeek-V3/R1 from their config.json: vocab 129280, hidden
    7168, 61 layers (3 dense, intermediate 18432), 256 routed experts + 1 shared of width 2048, 128 heads,
    q_lora_rank 1536, kv_lora_rank 512, qk_rope/nope 64/128, v_head_dim 128."""
    vocab, hidden, layers, dense = 129280, 7168, 61, 3
    heads, q_rank, kv_rank, rope, nope, v_dim = 128, 1536, 512, 64, 128, 128
    attention = (hidden * q_rank + q_rank * heads * (nope + rope) + hidden * (kv_rank + rope)
                 + kv_rank * heads * (nope + v_dim) + heads * v_dim * hidden)
    moe = (256 + 1) * 3 * hidden * 2048  # routed + shared experts: all FP8
    router = 256 * hidden + 256  # gate weight and e_score_correction_bias: not quantized
    norms = q_rank + kv_rank + 2 * hidden
    quantized = layers * attention + dense * 3 * hidden * 18432 + (layers - dense) * moe
    parameters = quantized + 2 * vocab * hidden + (layers - dense) * router + layers * norms + hidden
    mtp_quantized = attention + moe
    # The MTP layer's own embedding and head, eh_proj (2 x hidden -> hidden), its router and norms: bf16.
    mtp = mtp_quantized + 2 * vocab * hidden + 2 * hidden * hidden + router + norms + 3 * hidden
    return parameters, Stored(FP8, quantized=quantized, mtp_parameters=mtp, mtp_quantized=mtp_quantized)


def is_fp8_model(model_id: str) -> bool:
    """A catalogued FP8 checkpoint (FP8_MODELS), by the last path component of model.id."""
    return model_key(model_id) in FP8_MODELS


def stored_from_config(config: dict[str, Any]) -> str:
    """quantization_config.quant_method of a config.json ("" when it has none or is not a dict)."""
    qc = config.get("quantization_config")
    method = qc.get("quant_method") if isinstance(qc, dict) else None
    return method if isinstance(method, str) else ""


def mtp_loaded(runtime: str, args: tuple[str, ...]) -> bool:
    """Whether the runtime loads the MTP layer: only vLLM and SGLang, and only for speculative decoding
    (vLLM `--speculative-config` with method deepseek_mtp; SGLang `--speculative-algorithm` EAGLE/NEXTN).
    transformers (builtin) drops model.layers.61 at load."""
    flag = {"vllm": "--speculative-config", "sglang": "--speculative-algorithm"}.get(runtime)
    return flag is not None and any(a == flag or a.startswith(flag + "=") for a in args)


def kv_cache_fp8(runtime: str, args: tuple[str, ...]) -> bool:
    """`--kv-cache-dtype fp8*` (vLLM and SGLang): the KV cache stores 1 byte per element."""
    if runtime == BUILTIN:
        return False
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--kv-cache-dtype=") else (
            args[i + 1] if arg == "--kv-cache-dtype" and i + 1 < len(args) else "")
        if value.startswith("fp8"):
            return True
    return False


def unsupported_message(model: str, stored: Stored) -> str:
    """Why the builtin runtime refuses an FP8 checkpoint, and what to set instead."""
    return (f"model {model} is stored in {stored.describe()}: the builtin runtime (transformers) cannot serve "
            "it offline (its FP8 path fetches a kernel from the hub at the first forward pass) and bitsandbytes "
            "cannot load it; set spec.runtime.name: vllm or sglang (docs/runtimes.md)")
