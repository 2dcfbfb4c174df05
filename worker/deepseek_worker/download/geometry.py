"""What the operator's GPU-fit plan needs of a downloaded model, read from its own files.

Contract: `read_geometry(directory)` returns the `config` object of the progress document
(docs/model-cache.md): the sizing keys of `config.json` (GEOMETRY_KEYS, those present), the stored
format of a pre-quantized checkpoint (`quant_method`, `quant_fmt`: its quantization_config's
quant_method and fmt, e.g. fp8 / e4m3 for DeepSeek-V3), plus `parameters`, the element count of every
tensor in the `*.safetensors` files (from their headers: 8 bytes of length, then JSON; no weights are
read). {} when there is no readable config.json: the plan then stays what the catalogue says. So a
renamed or fine-tuned model is planned from what it is, not from its name.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

# config.json keys the plan reads (operator gpufit / config_geometry.py); nothing else is published.
GEOMETRY_KEYS = ("model_type", "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                 "head_dim", "vocab_size", "tie_word_embeddings", "kv_lora_rank", "qk_rope_head_dim",
                 "qk_nope_head_dim", "v_head_dim", "n_routed_experts", "moe_intermediate_size",
                 "first_k_dense_replace", "torch_dtype", "dtype")
HEADER_LIMIT = 100 * 1024 * 1024  # safetensors' own cap on a header


def read_geometry(directory: Path) -> dict[str, Any]:
    """The `config` object for the progress document; {} without a readable config.json."""
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(config, dict):
        return {}
    out = {key: config[key] for key in GEOMETRY_KEYS if isinstance(config.get(key), int | str | bool)}
    quantization = config.get("quantization_config")
    if isinstance(quantization, dict):  # flattened: the progress document's `config` holds scalars only
        out.update({name: quantization[key] for name, key in (("quant_method", "quant_method"), ("quant_fmt", "fmt"))
                    if isinstance(quantization.get(key), str)})
    parameters = sum(tensor_elements(path) for path in sorted(directory.glob("*.safetensors")))
    if parameters:
        out["parameters"] = parameters
    return out


def tensor_elements(path: Path) -> int:
    """Elements of every tensor in one safetensors file, from its header; 0 when unreadable."""
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > HEADER_LIMIT:
                return 0
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error):
        return 0
    return sum(math.prod(entry.get("shape", [])) for name, entry in header.items()
               if name != "__metadata__" and isinstance(entry, dict))
