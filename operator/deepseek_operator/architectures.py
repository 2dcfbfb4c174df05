"""Model geometries the GPU-fit plan prices (docs/gpu-sizing.md), known without reading a checkpoint.

`Architecture` is what gpufit.py needs of a model (values from its config.json); `CATALOGUE` holds the
DeepSeek models by their hub repo's name (`lookup`); `architecture()` turns spec.model.architecture
into one, and `checkpoint_bytes()` says how large a model's files are. A downloaded checkpoint's own
config.json becomes an Architecture in config_geometry.py. Pure; no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from deepseek_operator import family, precision
from deepseek_operator.precision import Stored

if TYPE_CHECKING:
    from deepseek_operator.api import ModelArchitecture, ModelSpec

_COUNT = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMBT])?$")
_COUNT_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


@dataclass(frozen=True)
class Architecture:
    """What the plan needs of a model; values from its config.json (sources in docs/gpu-sizing.md)."""

    parameters: int  # total, as loaded (V3/R1: without the multi-token-prediction layer)
    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int = 0
    tied_embeddings: bool = False
    kv_lora_rank: int = 0  # > 0: MLA
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    routed_expert_parameters: int = 0  # fused MoE experts: bitsandbytes leaves them at dtype
    checkpoint_bytes: int = 0  # the files on the hub; 0: 2 bytes per parameter (a bf16/fp16 checkpoint)
    stored: Stored | None = None  # stored quantized (FP8 blocks: precision.py); None: at a 2-byte dtype

    @property
    def mla(self) -> bool:
        return self.kv_lora_rank > 0

    def checkpoint_size(self) -> int:
        """Bytes of the model's files as the hub serves them (what a download fetches and a load reads)."""
        return self.checkpoint_bytes or 2 * self.parameters

    def kv_elements_per_token(self) -> int:
        if self.mla:
            return self.layers * (self.kv_lora_rank + self.qk_rope_head_dim)
        return 2 * self.layers * self.kv_heads * self.head_dim

    def kept_parameters(self, quantization: str) -> int:
        """Parameters bitsandbytes does not quantize (see the module docstring)."""
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)
        kept = embeddings + self.routed_expert_parameters
        if quantization == "int8" and self.mla:
            kept += self.layers * self.kv_lora_rank * self.attention_heads * (self.qk_nope_head_dim + self.v_head_dim)
        return min(kept, self.parameters)


def _mla(parameters: float, layers: int, hidden: int, heads: int, vocab: int, moe_layers: int, experts: int,
         moe_intermediate: int) -> Architecture:
    return Architecture(
        parameters=int(parameters), layers=layers, hidden_size=hidden, attention_heads=heads, kv_heads=heads,
        head_dim=192, vocab_size=vocab, kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
        v_head_dim=128, routed_expert_parameters=moe_layers * experts * 3 * hidden * moe_intermediate)


# config.json of each hub repo; parameters as the hub's safetensors metadata counts them (V3/R1: 671B
# without the 13.5B multi-token-prediction layer, counted in Stored: precision.py).
# V3/R1 ship FP8 blocks with their scales and the MTP layer: the hub's total is 688.6 GB
# (precision.deepseek_v3_fp8 computes 688.57 GB from config.json; tests/unit/test_gpufit_fp8.py).
_V3_PARAMETERS, _V3_STORED = precision.deepseek_v3_fp8()
_V3 = replace(_mla(_V3_PARAMETERS, layers=61, hidden=7168, heads=128, vocab=129280, moe_layers=58, experts=256,
                   moe_intermediate=2048), checkpoint_bytes=688_600_000_000, stored=_V3_STORED)
_V2 = _mla(236e9, layers=60, hidden=5120, heads=128, vocab=102400, moe_layers=59, experts=160, moe_intermediate=1536)
_V2_LITE = _mla(15.7e9, layers=27, hidden=2048, heads=16, vocab=102400, moe_layers=26, experts=64,
                moe_intermediate=1408)


def _gqa(parameters: float, layers: int, hidden: int, heads: int, kv_heads: int, vocab: int,
         tied: bool = False) -> Architecture:
    return Architecture(parameters=int(parameters), layers=layers, hidden_size=hidden, attention_heads=heads,
                        kv_heads=kv_heads, head_dim=hidden // heads, vocab_size=vocab, tied_embeddings=tied)


CATALOGUE: dict[str, Architecture] = {
    **dict.fromkeys(precision.FP8_MODELS, _V3),
    **{name: _V2 for name in ("deepseek-v2", "deepseek-v2-chat", "deepseek-v2.5", "deepseek-coder-v2-instruct")},
    **{name: _V2_LITE for name in ("deepseek-v2-lite", "deepseek-v2-lite-chat", "deepseek-coder-v2-lite-instruct")},
    "deepseek-r1-distill-qwen-1.5b": _gqa(1.777e9, layers=28, hidden=1536, heads=12, kv_heads=2, vocab=151936),
    "deepseek-r1-distill-qwen-7b": _gqa(7.616e9, layers=28, hidden=3584, heads=28, kv_heads=4, vocab=152064),
    "deepseek-r1-distill-qwen-14b": _gqa(14.77e9, layers=48, hidden=5120, heads=40, kv_heads=8, vocab=152064),
    "deepseek-r1-distill-qwen-32b": _gqa(32.76e9, layers=64, hidden=5120, heads=40, kv_heads=8, vocab=152064),
    "deepseek-r1-distill-llama-8b": _gqa(8.03e9, layers=32, hidden=4096, heads=32, kv_heads=8, vocab=128256),
    "deepseek-r1-distill-llama-70b": _gqa(70.55e9, layers=80, hidden=8192, heads=64, kv_heads=8, vocab=128256),
}


def lookup(model_id: str) -> tuple[str, Architecture] | None:
    """The catalogue entry of an HF id or a path ending in a known repo name (case-insensitive)."""
    key = family.model_key(model_id)
    arch = CATALOGUE.get(key)
    return (key, arch) if arch is not None else None


def count(text: str) -> int:
    """A parameter count ("671B", "7.6B", "8430400") as an integer."""
    m = _COUNT.match(text)
    if m is None:
        raise ValueError(f"not a parameter count: {text!r}")
    return int(float(m.group(1)) * _COUNT_SUFFIX[m.group(2) or ""])


def architecture(spec: ModelArchitecture) -> Architecture:
    """spec.model.architecture as the plan's Architecture (unset geometry derived as config.json does)."""
    heads = spec.attention_heads
    return Architecture(
        parameters=count(spec.parameters), layers=spec.layers, hidden_size=spec.hidden_size,
        attention_heads=heads, kv_heads=spec.kv_heads or heads, head_dim=spec.head_dim or spec.hidden_size // heads,
        vocab_size=spec.vocab_size or 0, tied_embeddings=spec.tied_embeddings, kv_lora_rank=spec.kv_lora_rank or 0,
        qk_rope_head_dim=spec.qk_rope_head_dim or 0, qk_nope_head_dim=spec.qk_nope_head_dim or 0,
        v_head_dim=spec.v_head_dim or 0,
        routed_expert_parameters=count(spec.routed_expert_parameters) if spec.routed_expert_parameters else 0)


def checkpoint_bytes(model: ModelSpec) -> int:
    """Bytes of the model's files (0: unknown): spec.model.architecture's (2 bytes per parameter unless
    the catalogue knows better), else the catalogue's."""
    if model.architecture is not None:
        return architecture(model.architecture).checkpoint_size()
    found = lookup(model.id)
    return found[1].checkpoint_size() if found is not None else 0
