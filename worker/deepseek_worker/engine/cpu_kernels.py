"""CPU only: run the model's plain linear layers on oneDNN with weights packed once at load.

`torch.nn.functional.linear` re-reads the weight in its row-major layout on every call; for the
skinny matmuls of decoding (a few rows against a 129,280 x hidden LM head) that is 2-2.7x slower on
this project's CPUs than oneDNN's linear over a weight reordered once into its blocked layout
(measured: [8, 128] x [128, 129280] float32, 11.9 ms against 4.4 ms; docs/benchmarks.md). This is
what inductor's CPU "freezing" pass does, and what vLLM's CPU backend does with its oneDNN GEMMs.

Only exact `torch.nn.Linear` modules with float32/bfloat16 weights on the CPU are packed (never
bitsandbytes' quantized subclasses). The module keeps its weight (tied embeddings, state dicts);
its `forward` calls the packed one. Results match `F.linear` to float rounding and do not depend on
the batch size, so a request decodes the same alone or in a batch.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

_PACKABLE = (torch.float32, torch.bfloat16)


def pack_linears(model: Any) -> int:
    """Pack every plain CPU float linear of `model` in place; returns how many were packed (0 when
    oneDNN is unavailable in this torch build: then nothing changes)."""
    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return 0
    packed = 0
    for module in model.modules():
        if type(module) is not torch.nn.Linear or module.weight.device.type != "cpu":
            continue
        if module.weight.dtype not in _PACKABLE:
            continue
        try:
            weight = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), None)
        except RuntimeError as exc:  # an unsupported shape or build: this layer keeps F.linear
            log.debug("linear %s not packed: %s", tuple(module.weight.shape), exc)
            continue
        module.forward = _packed_forward(weight, module.bias)  # type: ignore[method-assign]
        packed += 1
    return packed


def _packed_forward(weight: torch.Tensor, bias: torch.Tensor | None) -> Any:
    def forward(x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
        return out

    return forward
