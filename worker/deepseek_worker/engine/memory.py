"""How big the KV pool is: from exact bytes, or from each GPU's memory left after loading.

The formula (the operator's GPU-fit plan uses the same one, docs/gpu-sizing.md):

    pool bytes on a device = total * gpu_memory_utilization - peak after loading and a profile
                             pass of max_num_batched_tokens prompt tokens - prefix cache bytes
    slots = min(max_batch_size, least over the devices of pool bytes // (max_model_len * KV bytes
            per token of that device's layers))

`kv_cache_bytes` replaces the measured budget by exact bytes (what CPU tests use). On a CPU without
it the pool holds `max_batch_size` slots (host memory is the pod's limit, not a device's). Fewer
than one slot is a start-up error that names the settings to change, never a later OOM.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from ..types import EngineConfig
from .pool import LayerShape, bytes_per_token, probe_layers, slots_for_bytes

log = logging.getLogger(__name__)

GIB = 1024**3


class PoolTooSmall(RuntimeError):
    """Not even one sequence of max_model_len fits: a configuration error, reported at start-up."""


@dataclass(frozen=True)
class PoolPlan:
    """The pool to allocate and the figures behind it (for logs and measurements)."""

    shapes: list[LayerShape]
    slots: int
    slot_len: int
    budget_bytes: int  # what the pool was allowed (0: not limited by memory)

    @property
    def bytes_per_token(self) -> int:
        return bytes_per_token(self.shapes)

    @property
    def pool_bytes(self) -> int:
        return self.slots * self.slot_len * self.bytes_per_token


def plan_pool(model: Any, config: EngineConfig, device: torch.device) -> PoolPlan:
    """Probe the model's KV shapes and size the pool. Raises PoolTooSmall."""
    shapes = probe_layers(model, device)
    per_slot = bytes_per_token(shapes) * config.max_model_len
    if config.kv_cache_bytes is not None:
        slots = config.kv_cache_bytes // per_slot
        budget = config.kv_cache_bytes
        source = f"kv_cache_bytes={config.kv_cache_bytes}"
    elif device.type == "cuda":
        budgets = _device_budgets(model, config, {s.device for s in shapes})
        slots = slots_for_bytes(shapes, config.max_model_len, budgets)
        budget = sum(budgets.values())
        source = f"gpu_memory_utilization={config.gpu_memory_utilization} (left: {budget / GIB:.2f} GiB)"
    else:
        return PoolPlan(shapes, config.max_batch_size, config.max_model_len, 0)
    if slots < 1:
        raise PoolTooSmall(
            f"the KV pool cannot hold one sequence of max_model_len={config.max_model_len} tokens"
            f" ({per_slot / GIB:.2f} GiB each) with {source}: lower max_model_len, or give the pool more"
            " memory (gpu_memory_utilization, kv_cache_bytes, fewer weights via quantization, more GPUs)"
        )
    return PoolPlan(shapes, int(min(slots, config.max_batch_size)), config.max_model_len, budget)


def _device_budgets(model: Any, config: EngineConfig, devices: set[torch.device]) -> dict[torch.device, int]:
    """Bytes each GPU can give the pool after the weights and the activations of a profile pass."""
    _profile_pass(model, config)
    budgets = {}
    for device in devices:
        total = torch.cuda.get_device_properties(device).total_memory
        peak = torch.cuda.max_memory_allocated(device)
        budgets[device] = int(total * config.gpu_memory_utilization) - peak
    first = next(iter(model.parameters())).device
    budgets[first] = budgets.get(first, 0) - config.prefix_cache_bytes
    return budgets


def _profile_pass(model: Any, config: EngineConfig) -> None:
    """The largest prefill a step runs (max_num_batched_tokens), to measure activation memory."""
    device = model.get_input_embeddings().weight.device
    tokens = min(config.max_num_batched_tokens, config.max_model_len)
    with torch.inference_mode():
        model(input_ids=torch.zeros(1, tokens, dtype=torch.long, device=device), use_cache=False, logits_to_keep=1)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
