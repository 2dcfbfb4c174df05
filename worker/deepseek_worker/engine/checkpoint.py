"""What the builtin engine refuses to load, decided from config.json before any weight is read.

FP8 checkpoints (DeepSeek-V3/R1 and their updates: `quantization_config.quant_method: fp8`, e4m3 with
128 x 128 block scales) take transformers' fine-grained FP8 path, which needs the `kernels` package
and a kernel downloaded from the hub at the first forward pass: the worker image has neither, and a
cached worker runs offline behind a default-deny egress policy. bitsandbytes on such a checkpoint is a
ValueError inside transformers. So the worker fails fast with UnsupportedCheckpoint; its message names
the runtimes that do serve FP8 (the operator says the same earlier, from its catalogue: gpufit.py).
The exception's class name is the reason in the termination message ("model load failed:
UnsupportedCheckpoint: ..."), which the operator reports as UnsupportedCheckpoint (observe.py).
"""

from __future__ import annotations

from typing import Any

# quant_method values the builtin engine cannot load (transformers' HfQuantizer names).
UNSUPPORTED_METHODS = ("fp8",)


class UnsupportedCheckpoint(ValueError):
    """A checkpoint the builtin runtime cannot serve; the message says what to set instead."""


def stored_quantization(hf_config: Any) -> dict[str, Any]:
    """config.json's quantization_config as a dict ({} when absent)."""
    qc = getattr(hf_config, "quantization_config", None)
    if qc is not None and not isinstance(qc, dict):
        qc = qc.to_dict() if hasattr(qc, "to_dict") else vars(qc)
    return dict(qc or {})


def check_supported(hf_config: Any) -> None:
    """Raise UnsupportedCheckpoint for a checkpoint stored in a format the builtin engine cannot load."""
    qc = stored_quantization(hf_config)
    method = str(qc.get("quant_method", "")).lower()
    if method not in UNSUPPORTED_METHODS:
        return
    fmt = qc.get("fmt", "e4m3")
    block = qc.get("weight_block_size")
    blocks = f", {block[0]}x{block[1]} block scales" if isinstance(block, list | tuple) and len(block) == 2 else ""
    raise UnsupportedCheckpoint(
        f"FP8 checkpoint (quantization_config: {method} {fmt}{blocks}): the builtin runtime cannot serve it "
        "offline (transformers' FP8 path fetches a kernel from the hub) and bitsandbytes cannot load it; "
        "set spec.runtime.name: vllm or sglang")
