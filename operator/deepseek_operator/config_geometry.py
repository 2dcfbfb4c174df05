"""Plan from the real config: a downloaded checkpoint's own geometry for the GPU-fit plan.

The download pod publishes, with its Complete report, the sizing keys of the model's config.json
and the parameter count of its safetensors files (worker download/geometry.py; the `config` object
of the progress ConfigMap, docs/model-cache.md). `architecture_from_config` turns that into the
plan's Architecture, so a model the catalogue does not know by name (renamed, fine-tuned, private)
gets a real plan instead of Unknown. An explicit `spec.model.architecture` and a catalogue entry
still come first (gpufit.plan_inputs): they are what the user or the catalogue vouched for.

A checkpoint stored in FP8 (`quant_method: fp8` in its quantization_config, published flat as
`quant_method` / `quant_fmt`) is planned as stored (precision.Stored): every parameter but the
embedding and LM head at 1 byte (config.json does not say which small tensors stay bf16), and on the
builtin runtime the plan says UnsupportedCheckpoint with the runtime to set, as for a catalogued one.

The ConfigMap is written by the download pod, so everything is parsed defensively: a missing or
implausible value means no architecture, never an exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deepseek_operator.api import DeepSeekDeploymentSpec, ResolvedVariant, resolve_variants
from deepseek_operator.architectures import Architecture
from deepseek_operator.download import progress_of
from deepseek_operator.k8s import KINDS, K8s
from deepseek_operator.precision import FP8, Stored
from deepseek_operator.render.common import Owner, cache_name

CONFIG_MAP = KINDS[("v1", "ConfigMap")]
LIMIT = 10**15  # no real dimension or parameter count is near this


def _int(config: dict[str, Any], key: str) -> int:
    value = config.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < LIMIT else 0


def architecture_from_config(config: dict[str, Any], checkpoint_bytes: int = 0) -> Architecture | None:
    """The plan's Architecture from a published config (None when a required key is missing)."""
    parameters, layers = _int(config, "parameters"), _int(config, "num_hidden_layers")
    hidden, heads = _int(config, "hidden_size"), _int(config, "num_attention_heads")
    if not (parameters and layers and hidden and heads):
        return None
    rope, nope = _int(config, "qk_rope_head_dim"), _int(config, "qk_nope_head_dim")
    mla = _int(config, "kv_lora_rank") > 0 and rope > 0 and nope > 0 and _int(config, "v_head_dim") > 0
    experts, moe_width = _int(config, "n_routed_experts"), _int(config, "moe_intermediate_size")
    moe_layers = max(layers - _int(config, "first_k_dense_replace"), 0)
    return Architecture(
        parameters=parameters, layers=layers, hidden_size=hidden, attention_heads=heads,
        kv_heads=heads if mla else (_int(config, "num_key_value_heads") or heads),
        head_dim=rope + nope if mla else (_int(config, "head_dim") or hidden // heads),
        vocab_size=_int(config, "vocab_size"), tied_embeddings=config.get("tie_word_embeddings") is True,
        kv_lora_rank=_int(config, "kv_lora_rank") if mla else 0, qk_rope_head_dim=rope if mla else 0,
        qk_nope_head_dim=nope if mla else 0, v_head_dim=_int(config, "v_head_dim") if mla else 0,
        routed_expert_parameters=min(moe_layers * experts * 3 * hidden * moe_width, parameters),
        checkpoint_bytes=max(checkpoint_bytes, 0), stored=_stored(config, parameters, hidden))


def _stored(config: dict[str, Any], parameters: int, hidden: int) -> Stored | None:
    """An FP8 checkpoint's stored format (None for any other): all but the embeddings are FP8."""
    if config.get("quant_method") != FP8:
        return None
    fmt = config.get("quant_fmt")
    embeddings = _int(config, "vocab_size") * hidden * (1 if config.get("tie_word_embeddings") is True else 2)
    return Stored(FP8, fmt=fmt if isinstance(fmt, str) else "e4m3", quantized=max(parameters - embeddings, 0))


async def downloaded_architectures(api: K8s, owner: Owner, spec: DeepSeekDeploymentSpec,
                                   variants: Sequence[ResolvedVariant] | None = None) -> dict[str, Architecture]:
    """Each cached variant's architecture from its download's report (watch-fed: no request);
    `variants`: resolve_variants(spec), when the caller resolved them already (desired.py)."""
    out = {}
    for variant in resolve_variants(spec) if variants is None else variants:
        if not variant.model.cached:
            continue
        report = progress_of(await api.get(CONFIG_MAP, owner.namespace, cache_name(owner, variant.model)))
        config = report.get("config")
        total = report.get("bytesTotal")
        if isinstance(config, dict):
            found = architecture_from_config(config, total if isinstance(total, int) else 0)
            if found is not None:
                out[variant.name] = found
    return out
