"""Load a HF-format causal LM + tokenizer from an EngineConfig (dtype, devices, attention, bnb).

Contract: `load(config)` returns (model in eval mode, tokenizer, resolved settings). It blocks (disk
and weights); the engine calls it through asyncio.to_thread.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from ..types import EngineConfig
from .checkpoint import check_supported
from .cpu_kernels import pack_linears
from .source import resolve_local_model

log = logging.getLogger(__name__)

# from_pretrained flips process-global state (default dtype, init-skipping contexts); two loads in
# parallel threads corrupt each other's weights. Loads in one process are therefore serialized.
_LOAD_LOCK = threading.Lock()

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class Loaded:
    """What loading produced, with the choices actually made (for logs and /health)."""

    model: Any
    tokenizer: Any
    path: str
    dtype: torch.dtype
    attention: str
    device: torch.device
    weight_bytes: int = 0  # measured: parameters, buffers and bitsandbytes' quantization states
    kv_cache_bytes_per_token: int = 0  # measured: what one token adds to the KV cache, all layers


def resolve_model_path(model: str, model_id: str = "", revision: str = "main") -> str:
    """"tiny" -> the locally built tiny model directory; a local directory -> the model folder in it
    (source.py: itself, `<dir>/<model_id>`, or the HF cache layout); anything else is passed to HF."""
    if model == "tiny":
        # Lazy, and only here: the production engine never imports the test model otherwise.
        from ..testing.tiny import build_tiny_model

        return str(build_tiny_model())
    return resolve_local_model(model, model_id, revision)


def resolve_dtype(config: EngineConfig, cuda: bool) -> torch.dtype:
    """auto -> bfloat16 on CUDA, float32 on CPU. int8 on CPU uses float16: bitsandbytes' 8-bit
    matmul casts float32 inputs with a warning on every call."""
    if config.dtype != "auto":
        return _DTYPES[config.dtype]
    if config.quantization == "int8" and not cuda:
        return torch.float16
    return torch.bfloat16 if cuda else torch.float32


# Modules kept in full precision under int8, per model type. DeepSeek MLA feeds kv_b_proj a 4-D
# latent tensor, which bitsandbytes' 8-bit matmul cannot take (it assumes 2-D/3-D activations).
_INT8_SKIP = {"deepseek_v2": ["kv_b_proj"], "deepseek_v3": ["kv_b_proj"]}


def quantization_config(
    config: EngineConfig, dtype: torch.dtype, model_type: str = ""
) -> BitsAndBytesConfig | None:
    """bitsandbytes settings: int8 (LLM.int8), nf4 / fp4 (4-bit, compute in the model dtype)."""
    if config.quantization == "none":
        return None
    if config.quantization == "int8":
        skip = _INT8_SKIP.get(model_type)
        return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_8bit=True, llm_int8_skip_modules=["lm_head", *skip] if skip else None
        )
    return BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True, bnb_4bit_quant_type=config.quantization, bnb_4bit_compute_dtype=dtype
    )


def attention_implementation(config: EngineConfig) -> str | None:
    """What to ask transformers for. The engine's passes hand attention a prepared 4-D mask over the
    KV pool (padded batches, chunked prefill), which flash_attention_2 cannot take: auto and
    flash_attention_2 (logged) both mean None, transformers' default: sdpa, or eager for a model
    class that does not support sdpa (transformers decides that from the class, not from an error).
    An explicit sdpa or eager is passed as is, so a model without sdpa fails with transformers' own
    message when sdpa was asked for."""
    if config.attention == "flash_attention_2":
        log.warning("attention flash_attention_2 cannot take the KV pool's 4-D masks; using sdpa")
    return config.attention if config.attention in ("sdpa", "eager") else None


def gpu_max_memory(totals: list[int]) -> dict[int | str, int]:
    """`max_memory` for device_map="auto": every visible GPU's total bytes, and no "cpu" key, so
    accelerate never places layers in host memory (unusably slow, then OOM-killed by the pod's memory
    limit). accelerate caps each GPU at its free memory itself."""
    return dict(enumerate(totals))


def offloaded_modules(device_map: dict[str, Any] | None) -> list[str]:
    """Modules accelerate placed off the GPUs. With GPU-only `max_memory` that is only ever "disk"
    (accelerate always appends it as the last resort), which load() refuses."""
    return sorted(name or "<model>" for name, where in (device_map or {}).items() if where in ("cpu", "disk"))


def does_not_fit(offloaded: list[str], weights: int, max_memory: dict[int | str, int]) -> torch.cuda.OutOfMemoryError:
    """The error of a model whose weights do not fit on the GPUs. An OutOfMemoryError, so the worker
    exits as a CUDA out-of-memory while loading (the operator's OOMAtLoad, beside its plan's figures)."""
    gib = 1024**3
    shown = ", ".join(offloaded[:5]) + (f" and {len(offloaded) - 5} more" if len(offloaded) > 5 else "")
    return torch.cuda.OutOfMemoryError(
        f"CUDA out of memory at load: the model does not fit on the GPUs: its weights need about "
        f"{weights / gib:.1f} GiB, the {len(max_memory)} visible GPU(s) have {sum(max_memory.values()) / gib:.1f} "
        f"GiB in all; {len(offloaded)} module(s) would be offloaded to disk ({shown}). Use more GPUs, "
        f"a quantization, or a smaller model.")


# transformers' experts implementations for mixture-of-experts layers (DeepSeek V2/V3): "eager"
# loops over the experts that received tokens (a host sync per layer: no CUDA graph), "grouped_mm"
# runs them as one grouped matmul without syncs, "batched_mm" gathers each token's experts' weights.
# Measured on the tiny model's MoE block (CPU, float32; docs/benchmarks.md "Experts"): grouped_mm
# gave bit-identical outputs to eager and was the fastest at decode (32 tokens: 2.4-6.2 ms against
# eager's 37-86 ms and batched_mm's 10-13 ms) and on par at prefill; batched_mm differs by ~1e-4.
EXPERTS_IMPLEMENTATION = "grouped_mm"


def generation_defaults(model: Any) -> dict[str, float]:
    """Sampling defaults the checkpoint ships in generation_config.json (the R1 distills: 0.6 /
    0.95), applied to requests that leave them unset, as vLLM does. Only values that differ from
    transformers' own class defaults count as set by the checkpoint."""
    config = getattr(model, "generation_config", None)
    if config is None:
        return {}
    from transformers import GenerationConfig

    baseline = GenerationConfig()  # type: ignore[no-untyped-call]
    out: dict[str, float] = {}
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(config, name, None)
        if isinstance(value, int | float) and value != getattr(baseline, name, None):
            out[name] = float(value)
    return out


def load(config: EngineConfig) -> Loaded:
    """Load tokenizer and model. Raises whatever HF raises for a missing/invalid model, and
    UnsupportedCheckpoint (checkpoint.py) for an FP8 checkpoint, before reading any weight."""
    path = resolve_model_path(config.model, config.served_model_name or "", config.revision)
    hf_config = AutoConfig.from_pretrained(path, revision=config.revision)
    check_supported(hf_config)
    cuda = torch.cuda.is_available()
    dtype = resolve_dtype(config, cuda)
    with _LOAD_LOCK:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=config.revision)
    kwargs: dict[str, Any] = {"revision": config.revision, "dtype": dtype}
    max_memory: dict[int | str, int] = {}
    if cuda:
        # Shard over every visible GPU, and only them: a misfit fails here, not as CPU offload.
        max_memory = gpu_max_memory([torch.cuda.get_device_properties(i).total_memory
                                     for i in range(torch.cuda.device_count())])
        kwargs["device_map"], kwargs["max_memory"] = "auto", max_memory
    model_type = str(getattr(hf_config, "model_type", ""))
    if getattr(hf_config, "n_routed_experts", None) or getattr(hf_config, "num_experts", None):
        kwargs["experts_implementation"] = EXPERTS_IMPLEMENTATION
    qconfig = quantization_config(config, dtype, model_type)
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
    requested = attention_implementation(config)
    with _LOAD_LOCK:
        # One attempt: every error (a quantization conflict's ValueError too) is raised as itself.
        model: Any = AutoModelForCausalLM.from_pretrained(path, attn_implementation=requested, **kwargs)
    if offloaded := offloaded_modules(getattr(model, "hf_device_map", None)):
        raise does_not_fit(offloaded, sum(p.numel() * p.element_size() for p in model.parameters()), max_memory)
    attention = str(model.config._attn_implementation)
    if requested is None and attention != "sdpa":
        log.warning("attention: %s does not support sdpa; using %s", type(model).__name__, attention)
    model.eval()
    device = next(model.parameters()).device
    weights, per_token = weight_bytes(model), kv_bytes_per_token(model, device)
    if device.type == "cpu" and config.quantization == "none":
        log.info("packed %d linear layers for oneDNN (cpu_kernels.py)", pack_linears(model))
    # The operator's GPU-fit plan (docs/gpu-sizing.md) is checked against these two figures.
    log.info("loaded %s dtype=%s attention=%s quantization=%s device=%s weight_bytes=%d kv_cache_bytes_per_token=%d",
             path, dtype, attention, config.quantization, device, weights, per_token)
    return Loaded(model, tokenizer, path, dtype, attention, device, weights, per_token)


def weight_bytes(model: Any) -> int:
    """Bytes of every parameter and buffer (tied ones once) plus bitsandbytes' quantization states
    (4-bit absmax/code, 8-bit row scales), which live beside the packed weights, not in parameters()."""
    seen: set[tuple[int, int]] = set()
    total = 0

    def add(t: Any) -> None:
        nonlocal total
        if isinstance(t, torch.Tensor) and t.numel() and (key := (t.data_ptr(), t.numel())) not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()

    for tensor in [*model.parameters(), *model.buffers()]:
        add(tensor)
        state = getattr(tensor, "quant_state", None)
        for nested in (state, getattr(state, "state2", None)):
            for name in ("absmax", "code", "offset"):
                add(getattr(nested, name, None))
        add(getattr(tensor, "SCB", None))
    return total


def kv_bytes_per_token(model: Any, device: torch.device) -> int:
    """KV-cache bytes one token adds: a forward pass over two tokens, cache bytes halved. 0 (logged)
    when the model cannot run it (then nothing is claimed)."""
    from transformers import DynamicCache

    try:
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(input_ids=torch.zeros(1, 2, dtype=torch.long, device=device), past_key_values=cache, use_cache=True)
        layers: list[Any] = list(cache.layers)
        size = sum(int(t.numel() * t.element_size()) for layer in layers for t in (layer.keys, layer.values)
                   if isinstance(t, torch.Tensor))
    except (RuntimeError, ValueError, TypeError, AttributeError) as exc:
        log.warning("could not measure the KV cache per token: %s", exc)
        return 0
    return int(size // 2)
