"""A tiny FP8 block-quantized DeepSeek-V3 checkpoint, stored the way DeepSeek-V3/R1 are on the hub.

`build_fp8_model(dest)` takes the tiny model (tiny.py) and rewrites every decoder-layer projection
(`*_proj.weight`: attention, dense MLP, routed and shared experts) as float8_e4m3fn with one float32
`weight_scale_inv` per 128 x 128 block (the dequantized weight is fp8 x scale_inv, block by block),
leaves the embedding, norms and MoE router in bf16, and adds DeepSeek's quantization_config to
config.json. Tests use it to prove the builtin worker refuses FP8 before loading any weight
(engine/checkpoint.py). Never imported by the production engine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .tiny import build_tiny_model

if TYPE_CHECKING:
    import torch

BLOCK = 128
FP8_MAX = 448.0  # the largest float8_e4m3fn value
QUANTIZATION_CONFIG = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                       "weight_block_size": [BLOCK, BLOCK]}


def build_fp8_model(dest: Path) -> Path:
    """Write the FP8 checkpoint into `dest` (created) and return it."""
    from safetensors.torch import load_file, save_file

    source = build_tiny_model()
    dest.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and item.name not in ("model.safetensors", "config.json") and not item.name.startswith("."):
            shutil.copy2(item, dest / item.name)
    tensors = load_file(str(source / "model.safetensors"))
    out = {}
    for name, tensor in tensors.items():
        if name.startswith("model.layers.") and name.endswith("_proj.weight"):
            out[name], out[name.removesuffix("weight") + "weight_scale_inv"] = quantize(tensor)
        else:
            out[name] = tensor
    save_file(out, str(dest / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = QUANTIZATION_CONFIG
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    return dest


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float8_e4m3fn weight, float32 scale_inv per 128 x 128 block) of a 2-D weight."""
    import torch
    rows, cols = weight.shape
    br, bc = -(-rows // BLOCK), -(-cols // BLOCK)
    padded = torch.zeros(br * BLOCK, bc * BLOCK, dtype=torch.float32)
    padded[:rows, :cols] = weight.float()
    blocks = padded.view(br, BLOCK, bc, BLOCK)
    scale_inv = (blocks.abs().amax(dim=(1, 3)) / FP8_MAX).clamp(min=1e-12)
    scaled = blocks / scale_inv[:, None, :, None]
    fp8 = scaled.view(br * BLOCK, bc * BLOCK)[:rows, :cols].contiguous().to(torch.float8_e4m3fn)
    return fp8, scale_inv.contiguous()
