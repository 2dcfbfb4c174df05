"""Pure GPU-fit plan: will one variant's model fit in the memory of its pod's GPUs? (docs/gpu-sizing.md)

`plan(model, resources, serving, node_selector) -> GpuFit`, no I/O. Per GPU, with the weights split
evenly over `resources.gpus` (the worker loads with `device_map="auto"`, which balances layers), the
worker's own KV-pool rule (worker engine, `--gpu-memory-utilization`):

    budget   = gpuMemoryUtilization x memory          what the worker lets torch allocate (default 0.9)
    slot     = maxModelLen x kv_bytes_per_token / gpus one sequence's reservation in the pool
    slots    = min(maxBatchSize, floor((budget - weights - activations) / slot))
    kv_cache = slots x slot                            (maxBatchSize x slot while the memory is unknown)
    required = weights + kv_cache + margin,  margin = 1 GiB runtime + activations
    fits     = slots >= 1 and required <= memory       (the CUDA runtime lives outside torch's budget)

    weights  = (kept x dtype_bytes + quantizable x quant_bytes) / gpus

- dtype_bytes: float32 4, bfloat16/float16/auto 2 (auto is bfloat16 on GPUs).
- quant_bytes: none = dtype_bytes; int8 1 (+ a float32 scale per output row, counted as 1/256);
  nf4/fp4 0.5 + a float32 absmax per block of 64 = 0.5625 (the worker does not double-quantize).
- kept: what bitsandbytes leaves at dtype: the embedding, an untied LM head, the fused routed experts
  of DeepSeek's MoE layers (transformers >= 5 stores them as 3-D parameters, not nn.Linear), and under
  int8 MLA's kv_b_proj (loading.py skips it).
- kv_bytes_per_token: MLA (V2/V3/R1): layers x (kv_lora_rank + qk_rope_head_dim) x dtype_bytes -- the
  compressed latent and the rope key that transformers caches; GQA (the distills):
  2 x layers x kv_heads x head_dim x dtype_bytes.
- activations: what the worker measures before sizing the pool: the peak of a profile pass that
  prefills maxNumBatchedTokens prompt tokens (12 x hidden x dtype_bytes per token), plus its prefix
  cache (256 MiB). Decode attention over the running batch is not in the budget: it runs in the
  headroom that gpuMemoryUtilization leaves, beside the CUDA runtime.

The models' geometries (`Architecture`, the catalogue, spec.model.architecture) are architectures.py's.

GPU memory per device: `resources.gpuMemory`, else the node selector's `nvidia.com/gpu.memory` (MiB,
as NVIDIA GPU feature discovery sets it), else its `nvidia.com/gpu.product` through PRODUCTS; with
none of them the fit is Unknown and the message says why.

GPUs per node (`node_gpus`): `resources.gpusPerNode`, else the node selector's `nvidia.com/gpu.count`
(workload.gpus_per_node, as render/multinode.py sizes a LeaderWorkerSet group), else NODE_GPUS. A pod beyond
them spans nodes; suggestions of more GPUs stay within one node unless the runtime spans nodes.

Unset lengths are the model family's (family.lengths), so the pool is priced as the worker will get it.
The plan also carries the start-up figures of startup.py (checkpoint size, load estimate, warnings).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from deepseek_operator import family, precision, quantity, startup
from deepseek_operator.architectures import Architecture as Architecture  # what callers size models with
from deepseek_operator.architectures import architecture, lookup
from deepseek_operator.precision import BUILTIN, Stored
from deepseek_operator.resource.workload import GPU_COUNT_LABEL, gpus_per_node

if TYPE_CHECKING:
    from deepseek_operator.api import (
        DeepSeekDeploymentSpec,
        ModelSpec,
        ResolvedVariant,
        Resources,
        RuntimeSpec,
        Serving,
    )

GIB = 1024**3
GB = 10**9
MIB = 1024**2
RUNTIME_BYTES = 1 * GIB  # CUDA context, cuBLAS/NCCL workspaces: outside torch's allocator
ACTIVATION_HIDDEN_FACTOR = 12
PREFIX_CACHE_BYTES = 256 * MIB  # the worker's prefix cache, taken from the pool's budget
# The worker's defaults (worker/deepseek_worker/settings.py) for the knobs a spec may leave unset.
GPU_MEMORY_UTILIZATION = 0.9
MAX_NUM_BATCHED_TOKENS = 2048
PRODUCT_LABEL = "nvidia.com/gpu.product"
MEMORY_LABEL = "nvidia.com/gpu.memory"
Fits = Literal["True", "False", "Unknown"]
DOWNLOADED = "config.json of the downloaded checkpoint"  # GpuFit.model of a plan from the real config
INSUFFICIENT = "InsufficientGPUMemory"
UNSUPPORTED = "UnsupportedCheckpoint"
NODE_GPUS = 8  # a node's GPUs when neither resources.gpusPerNode nor nvidia.com/gpu.count says (node_gpus)
MAX_POD_GPUS = 16  # resources.gpus' maximum (api.Resources): multi-node suggestions stay within it


# nvidia.com/gpu.product values (GPU feature discovery: the product name, spaces as '-') -> MiB the
# driver reports (nvidia-smi's total). MIG slices ("...-MIG-1g.10gb") are read from their suffix.
PRODUCTS: dict[str, int] = {
    "Tesla-T4": 15360,
    "Tesla-V100-SXM2-16GB": 16384,
    "Tesla-V100-SXM2-32GB": 32768,
    "NVIDIA-A10": 23028,
    "NVIDIA-A10G": 23028,
    "NVIDIA-L4": 23034,
    "NVIDIA-L40": 46068,
    "NVIDIA-L40S": 46068,
    "NVIDIA-RTX-A6000": 49140,
    "NVIDIA-RTX-6000-Ada-Generation": 49140,
    "NVIDIA-A100-PCIE-40GB": 40960,
    "NVIDIA-A100-SXM4-40GB": 40960,
    "NVIDIA-A100-80GB-PCIe": 81920,
    "NVIDIA-A100-SXM4-80GB": 81920,
    "NVIDIA-H100-PCIe": 81559,
    "NVIDIA-H100-80GB-HBM3": 81559,
    "NVIDIA-H100-NVL": 95830,
    "NVIDIA-GH200-480GB": 97871,
    "NVIDIA-H200": 143771,
    "NVIDIA-H200-NVL": 143771,
    "NVIDIA-B200": 183359,
}
_MIG = re.compile(r"-MIG-\d+g\.(\d+)gb$")


@dataclass(frozen=True)
class Inputs:
    """One variant's sizing inputs (resolved: the variant's model, the spec's resources and serving)."""

    model_id: str
    dtype: str
    quantization: str
    max_model_len: int
    max_batch_size: int
    gpus: int
    gpu_memory: str | None = None
    node_selector: tuple[tuple[str, str], ...] = ()
    architecture: Architecture | None = None  # spec.model.architecture, overriding the catalogue
    min_model_len: int = 128  # the smallest maxModelLen to suggest (greater than serving.maxNewTokens)
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION
    max_num_batched_tokens: int = MAX_NUM_BATCHED_TOKENS
    max_new_tokens: int = 0  # the effective serving.maxNewTokens, shown beside maxModelLen (0: not shown)
    download: bool = False  # the pod downloads the weights from the hub (startup.downloads_in_pod)
    load_timeout_seconds: int = 0  # model.loadTimeoutSeconds the start-up estimate is held against; 0: none
    downloaded: Architecture | None = None  # the downloaded checkpoint's own config (config_geometry.py)
    runtime: str = BUILTIN  # spec.runtime.name: builtin (our worker), vllm or sglang
    runtime_args: tuple[str, ...] = ()  # spec.runtime.args: speculative decoding (MTP), --kv-cache-dtype
    pipeline: int = 1  # pipeline-parallel stages (the layers split); tensor parallel = gpus / (pipeline x data)
    data: int = 1  # data-parallel ranks in the pod: each holds the weights of gpus / data GPUs
    expert: bool = False  # expert parallelism: the MoE experts (nearly all of V3) spread over every GPU
    gpus_per_node: int = 0  # resources.gpusPerNode; 0: node_selector's nvidia.com/gpu.count, else NODE_GPUS


@dataclass(frozen=True)
class GpuFit:
    """The plan. Byte figures are per GPU; `available` is 0 when unknown."""

    fits: Fits
    weights: int = 0
    kv_cache: int = 0
    margin: int = 0
    available: int = 0
    gpus: int = 0
    model: str = ""  # catalogue key or "spec.model.architecture"
    memory_source: str = ""  # where `available` came from
    message: str = ""
    kv_slots: int = 0  # sequences the KV pool holds (maxBatchSize while the memory is unknown)
    kv_pool_tokens: int = 0  # kv_slots x maxModelLen, all GPUs together
    activations: int = 0  # the part of the margin torch allocates (the worker's peak counts it)
    max_model_len: int = 0  # the effective lengths the plan priced (family.lengths)
    max_new_tokens: int = 0
    checkpoint_bytes: int = 0  # the model's files (0: unknown); startup.py sizes downloads and loads from it
    load_seconds: int = 0  # start-up estimate (startup.load_seconds); 0: unknown
    warnings: tuple[startup.Warning, ...] = ()  # (reason, message): a large per-pod download, a short load budget
    reason: str = INSUFFICIENT  # why a False plan refuses: INSUFFICIENT or UNSUPPORTED (a checkpoint the runtime
    # cannot load, precision.py)

    @property
    def required(self) -> int:
        return self.weights + self.kv_cache + self.margin

    @property
    def peak(self) -> int:
        """What torch's allocator should peak at per GPU: weights, KV pool and activations."""
        return self.weights + self.kv_cache + self.activations


def gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def gpu_memory(inp: Inputs) -> tuple[int, str]:
    """(bytes per GPU, where from), or (0, why unknown)."""
    if inp.gpu_memory:
        return quantity.as_bytes(inp.gpu_memory), f"resources.gpuMemory {inp.gpu_memory}"
    labels = dict(inp.node_selector)
    if MEMORY_LABEL in labels and labels[MEMORY_LABEL].isdigit():
        return int(labels[MEMORY_LABEL]) * MIB, f"{MEMORY_LABEL}={labels[MEMORY_LABEL]}"
    product = labels.get(PRODUCT_LABEL)
    if product is None:
        return 0, (f"set resources.gpuMemory (e.g. 80Gi) or a scheduling.nodeSelector {PRODUCT_LABEL} label "
                   "to know the GPU's memory")
    mig = _MIG.search(product)
    if product in PRODUCTS:
        return PRODUCTS[product] * MIB, product
    if mig:
        return int(mig.group(1)) * 10**9, product
    return 0, f"GPU product {product} is not in the table (docs/gpu-sizing.md): set resources.gpuMemory"


def _dtype_bytes(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


def _quant_bytes(quantization: str, dtype: str) -> float:
    if quantization == "int8":
        return 1 + 4 / 256
    if quantization in ("nf4", "fp4"):
        return 0.5 + 4 / 64
    return float(_dtype_bytes(dtype))


def weight_bytes(arch: Architecture, quantization: str, dtype: str, mtp: bool = False) -> int:
    """All weights of the model (not per GPU); a stored-quantized checkpoint (FP8) as stored, with its MTP
    layer when `mtp` (precision.mtp_loaded)."""
    if arch.stored is not None:
        return arch.stored.weight_bytes(arch.parameters, mtp=mtp)
    kept = arch.kept_parameters(quantization) if quantization != "none" else 0
    return int(kept * _dtype_bytes(dtype) + (arch.parameters - kept) * _quant_bytes(quantization, dtype))


def kv_bytes_per_token(arch: Architecture, dtype: str, fp8: bool = False) -> int:
    """All layers' KV bytes of one token; `fp8`: vLLM's and SGLang's --kv-cache-dtype fp8 (1 byte)."""
    return arch.kv_elements_per_token() * (1 if fp8 else _dtype_bytes(dtype))


def kv_shards(arch: Architecture, inp: Inputs) -> int:
    """How many ways one token's KV is split over the pod's GPUs. builtin: device_map="auto" puts each
    layer on one GPU (gpus ways). vLLM and SGLang: pipeline stages split the layers; tensor parallelism
    splits GQA's KV heads (at most kv_heads ways) but replicates MLA's single latent on every rank."""
    gpus = max(inp.gpus, 1)
    if inp.runtime == BUILTIN:
        return gpus
    pipeline = max(min(inp.pipeline, gpus), 1)
    tensor = max(gpus // pipeline, 1)
    return pipeline * (1 if arch.mla else min(tensor, max(arch.kv_heads, 1)))


@dataclass(frozen=True)
class Figures:
    """One variant's figures per GPU (see the module docstring)."""

    weights: int
    slot: int  # one sequence of maxModelLen tokens in the KV pool
    activations: int
    slots: int  # what the pool holds: min(maxBatchSize, what the budget leaves); 0: not one sequence
    available: int

    @property
    def kv_cache(self) -> int:
        return self.slots * self.slot

    @property
    def margin(self) -> int:
        return RUNTIME_BYTES + self.activations

    @property
    def required(self) -> int:
        return self.weights + self.kv_cache + self.margin

    @property
    def fits(self) -> bool:
        return self.slots >= 1 and self.required <= self.available


def _figures(arch: Architecture, inp: Inputs, available: int) -> Figures:
    """The figures per GPU; with `available` 0 (unknown) the pool is assumed to hold maxBatchSize."""
    gpus = max(inp.gpus, 1)
    size = _dtype_bytes(inp.dtype)
    mtp = precision.mtp_loaded(inp.runtime, inp.runtime_args)
    # Data-parallel ranks replicate the weights unless expert parallelism spreads the experts over them.
    shards = gpus if inp.expert or inp.runtime == BUILTIN else max(gpus // max(inp.data, 1), 1)
    weights = weight_bytes(arch, inp.quantization, inp.dtype, mtp) // shards
    per_token = kv_bytes_per_token(arch, inp.dtype, precision.kv_cache_fp8(inp.runtime, inp.runtime_args))
    slot = inp.max_model_len * per_token // kv_shards(arch, inp)
    prefill = min(inp.max_num_batched_tokens, inp.max_model_len)  # the worker's (or engine's) profile pass
    prefix = PREFIX_CACHE_BYTES if inp.runtime == BUILTIN else 0  # vLLM/SGLang cache prefixes in the KV pool
    activations = prefill * ACTIVATION_HIDDEN_FACTOR * arch.hidden_size * size + prefix
    slots = inp.max_batch_size
    if available:
        budget = int(inp.gpu_memory_utilization * available)
        slots = max(0, min(inp.max_batch_size, (budget - weights - activations) // max(slot, 1)))
    return Figures(weights, slot, activations, slots, available)


def plan(model: ModelSpec, resources: Resources, serving: Serving, node_selector: dict[str, str],
         downloaded: Architecture | None = None, runtime: RuntimeSpec | None = None) -> GpuFit:
    """The fit of one variant's model on its pod's GPUs; a non-fitting plan's message says what would fit.
    `downloaded`: the model cache's checkpoint read after its download, for a model not catalogued.
    `runtime`: the variant's spec.runtime (None: builtin); vLLM and SGLang are planned with their own
    weight and KV layouts (FP8 as stored, MLA's latent on every tensor-parallel rank).

    Unset lengths are the family's (family.lengths): the plan prices the KV pool the worker will get."""
    lengths = family.lengths(model, serving)
    # An unset maxNewTokens follows a smaller maxModelLen down, so only a set one bounds the suggestion.
    new_tokens = serving.max_new_tokens
    return plan_inputs(_with_runtime(runtime, Inputs(
        model_id=model.id, dtype=model.dtype, quantization=model.quantization, max_model_len=lengths.max_model_len,
        max_batch_size=serving.max_batch_size, gpus=resources.gpus, gpu_memory=resources.gpu_memory,
        node_selector=tuple(sorted(node_selector.items())),
        architecture=architecture(model.architecture) if model.architecture else None,
        min_model_len=max(128, new_tokens + 1) if new_tokens is not None else 128,
        gpu_memory_utilization=serving.gpu_memory_utilization or GPU_MEMORY_UTILIZATION,
        max_num_batched_tokens=serving.max_num_batched_tokens or MAX_NUM_BATCHED_TOKENS,
        max_new_tokens=lengths.max_new_tokens, download=startup.downloads_in_pod(model),
        gpus_per_node=resources.gpus_per_node or 0,
        load_timeout_seconds=model.load_timeout_seconds, downloaded=downloaded)))


def _with_runtime(runtime: RuntimeSpec | None, inp: Inputs) -> Inputs:
    """`inp` with the fields of a spec.runtime (unchanged, builtin, when None)."""
    if runtime is None:
        return inp
    p = runtime.parallelism
    return replace(inp, runtime=runtime.name, runtime_args=tuple(runtime.args), pipeline=p.pipeline if p else 1,
                   data=p.data if p else 1, expert=p.expert if p else False)


def status_of(fit: GpuFit) -> dict[str, object]:
    """status.gpuFit (and status.variants[].gpuFit): GiB figures as quantities, e.g. 156.2Gi."""
    out: dict[str, object] = {"fits": fit.fits, "gpus": fit.gpus, "model": fit.model, "message": fit.message}
    if fit.weights:
        out.update(requiredPerGPU=f"{gib(fit.required)}Gi", weightsPerGPU=f"{gib(fit.weights)}Gi",
                   kvCachePerGPU=f"{gib(fit.kv_cache)}Gi", marginPerGPU=f"{gib(fit.margin)}Gi",
                   kvSlots=fit.kv_slots, kvPoolTokens=fit.kv_pool_tokens)
    if fit.available:
        out.update(availablePerGPU=f"{gib(fit.available)}Gi", memorySource=fit.memory_source)
    if fit.max_model_len:
        out.update(maxModelLen=fit.max_model_len, maxNewTokens=fit.max_new_tokens or None)
    if fit.checkpoint_bytes:
        out.update(checkpointSize=f"{gib(fit.checkpoint_bytes)}Gi", loadEstimateSeconds=fit.load_seconds)
    if fit.warnings:
        out["warnings"] = [message for _, message in fit.warnings]
    required = f" {gib(fit.required)}" if fit.weights else ""
    available = f"/{gib(fit.available)}Gi" if fit.available else ("Gi" if fit.weights else "")
    out["summary"] = f"{fit.fits}{required}{available}"
    return {k: v for k, v in out.items() if v not in ("", None)}


def plan_inputs(inp: Inputs) -> GpuFit:
    """The fit of one variant from its resolved inputs, with its lengths and start-up figures."""
    found = ("spec.model.architecture", inp.architecture) if inp.architecture is not None else lookup(inp.model_id)
    if found is None and inp.downloaded is not None:  # plan from the real config (config_geometry.py)
        found = (DOWNLOADED, inp.downloaded)
    fit = _memory_plan(inp, found)
    checkpoint = found[1].checkpoint_size() if found is not None else 0
    return replace(fit, max_model_len=inp.max_model_len, max_new_tokens=inp.max_new_tokens,
                   checkpoint_bytes=checkpoint,
                   load_seconds=startup.load_seconds(checkpoint, inp.download) if checkpoint else 0,
                   warnings=startup.warnings(inp.model_id, checkpoint, inp.download, inp.load_timeout_seconds))


def _memory_plan(inp: Inputs, found: tuple[str, Architecture] | None) -> GpuFit:
    """The memory figures and fit of one variant; `found`: its architecture, None when unknown."""
    if found is None:
        return GpuFit("Unknown", gpus=inp.gpus, message=(
            f"model {inp.model_id} is not in the catalogue (docs/gpu-sizing.md): set "
            "spec.model.architecture to plan its GPU memory"))
    name, arch = found
    if inp.gpus < 1:
        return GpuFit("Unknown", gpus=0, model=name, message="resources.gpus is 0: the worker runs on CPU")
    if arch.stored is not None and (inp.runtime == BUILTIN or inp.quantization != "none"):
        return _unsupported(inp, found, arch.stored)
    available, source = gpu_memory(inp)
    fig = _figures(arch, inp, available)
    wanted = replace(fig, slots=inp.max_batch_size)  # what a non-fitting plan is asked to hold
    shown = fig if fig.slots >= 1 else wanted
    fit = GpuFit("Unknown", shown.weights, shown.kv_cache, shown.margin, available, inp.gpus, name,
                 source if available else "", kv_slots=fig.slots, kv_pool_tokens=fig.slots * inp.max_model_len,
                 activations=shown.activations)
    needs = (f"needs {gib(fit.required)} GiB per GPU (weights {gib(fit.weights)}, KV cache {gib(fit.kv_cache)}, "
             f"margin {gib(fit.margin)}) on {inp.gpus} GPU(s){_nodes(inp)}{_engine_note(arch, inp)}")
    if not available:
        return replace(fit, message=f"{needs}; GPU memory unknown: {source}")
    has = f"{source} has {gib(available)} GiB"
    if fig.fits:
        return replace(fit, fits="True", message=f"{needs}; {has}{_pool_note(fig, inp)}")
    if fig.slots < 1:
        who = "the worker" if inp.runtime == BUILTIN else inp.runtime
        why = (f"{needs} but {has}, of which {who} uses {inp.gpu_memory_utilization:g} "
               f"(serving.gpuMemoryUtilization): not enough for the weights, activations and one sequence of "
               f"maxModelLen {inp.max_model_len} ({gib(fig.weights + fig.activations + fig.slot)} GiB)")
    else:
        why = (f"{needs} but {has}: serving.gpuMemoryUtilization {inp.gpu_memory_utilization:g} leaves less "
               f"than the {gib(RUNTIME_BYTES)} GiB the CUDA runtime needs beside the worker's allocations")
    return replace(fit, fits="False", message=f"{why}; {_alternatives(arch, inp, available)}")


def _unsupported(inp: Inputs, found: tuple[str, Architecture], stored: Stored) -> GpuFit:
    """A stored-quantized (FP8) checkpoint on the builtin runtime or under bitsandbytes (model.quantization):
    refused, with what the engine would need unquantized."""
    runtime = "vllm" if inp.runtime == BUILTIN else inp.runtime
    engine = _memory_plan(replace(inp, runtime=runtime, quantization="none"), found)
    why = precision.unsupported_message(inp.model_id, stored) if inp.runtime == BUILTIN else (
        f"model {inp.model_id} is stored in {stored.describe()}: bitsandbytes (model.quantization "
        f"{inp.quantization}) cannot load it with spec.runtime {inp.runtime} either; set model.quantization none")
    return replace(engine, fits="False", reason=UNSUPPORTED, message=f"{why}; with {runtime}: {engine.message}")


def node_gpus(inp: Inputs) -> tuple[int, str]:
    """(GPUs per node, where from): resources.gpusPerNode, else the node selector's nvidia.com/gpu.count
    (workload.gpus_per_node, ValueError naming it when not a positive integer), else NODE_GPUS."""
    per_node = gpus_per_node(inp.gpus_per_node or None, dict(inp.node_selector))
    if per_node is None:
        return NODE_GPUS, "default"
    return per_node, "resources.gpusPerNode" if inp.gpus_per_node else GPU_COUNT_LABEL


def _nodes(inp: Inputs) -> str:
    """' (2 nodes of 8)' when a pod's GPUs span nodes (a LeaderWorkerSet: vLLM and SGLang only)."""
    node, _ = node_gpus(inp)
    return f" ({-(-inp.gpus // node)} nodes of {node})" if inp.gpus > node else ""


def _engine_note(arch: Architecture, inp: Inputs) -> str:
    """What an engine runtime's plan assumed: FP8 weights, the MTP layer, the KV dtype."""
    if inp.runtime == BUILTIN:
        return ""
    notes = [f"runtime {inp.runtime}"]
    if arch.stored is not None:
        mtp = precision.mtp_loaded(inp.runtime, inp.runtime_args)
        notes.append(f"weights in {arch.stored.method.upper()} as stored"
                     + (" with the MTP layer (speculative decoding)" if mtp else ", MTP layer not loaded"))
    if precision.kv_cache_fp8(inp.runtime, inp.runtime_args):
        notes.append("FP8 KV cache")
    return " [" + ", ".join(notes) + "]"


def _pool_note(fig: Figures, inp: Inputs) -> str:
    """A fitting plan whose pool holds fewer sequences than maxBatchSize says what that means."""
    if fig.slots >= inp.max_batch_size:
        return ""
    return (f"; the KV pool holds {fig.slots} of serving.maxBatchSize {inp.max_batch_size} sequences of "
            f"maxModelLen {inp.max_model_len}: at most {fig.slots} request(s) run at once (a smaller "
            "model.maxModelLen holds more)")


def _fits(arch: Architecture, inp: Inputs, available: int) -> bool:
    return _figures(arch, inp, available).fits


def _alternatives(arch: Architecture, inp: Inputs, available: int) -> str:
    """What would fit: another quantization, more GPUs, a smaller maxModelLen or maxBatchSize, another
    gpuMemoryUtilization."""
    out = []
    for quant in ("int8", "nf4") if arch.stored is None else ():  # bitsandbytes cannot load FP8 checkpoints
        if quant != inp.quantization and _fits(arch, replace(inp, quantization=quant), available):
            out.append(f"model.quantization {quant}")
            break
    gpus = _more_gpus(arch, inp, available)
    if gpus:
        out.append(gpus)
    length = _largest(lambda n: _fits(arch, replace(inp, max_model_len=n), available), inp.min_model_len,
                      inp.max_model_len)
    if length is not None:
        out.append(f"model.maxModelLen {length}")
    batch = _largest(lambda n: _fits(arch, replace(inp, max_batch_size=n), available), 1, inp.max_batch_size)
    if batch is not None:
        out.append(f"serving.maxBatchSize {batch}")
    share = next((u / 100 for u in range(99, 0, -1) if u / 100 != inp.gpu_memory_utilization
                  and _fits(arch, replace(inp, gpu_memory_utilization=u / 100), available)), None)
    if share is not None:
        out.append(f"serving.gpuMemoryUtilization {share:g}")
    if not out:
        node, _ = node_gpus(inp)
        within = f"{MAX_POD_GPUS} GPUs per pod" if inp.runtime != BUILTIN else f"one node's {node} GPUs"
        spans = "" if inp.runtime != BUILTIN else " (only spec.runtime vllm or sglang span nodes)"
        return (f"nothing within {within} fits{spans}: the weights alone need "
                f"{gib(weight_bytes(arch, inp.quantization, inp.dtype))} GiB; use a smaller model or larger GPUs")
    return "would fit: " + " or ".join(out)


def _more_gpus(arch: Architecture, inp: Inputs, available: int) -> str:
    """The fewest GPUs per pod that fit, never more than a node's (node_gpus) unless the runtime spans
    nodes (vllm, sglang: 2 x node, 3 x node, ...). Tensor parallelism needs the attention heads to divide
    evenly, so engines are offered only such counts. A node sized by the nvidia.com/gpu.count label needs
    no resources.gpusPerNode, so the suggestion names the label instead."""
    node, source = node_gpus(inp)
    engine = inp.runtime != BUILTIN
    single = [g for g in range(inp.gpus + 1, node + 1) if not engine or arch.attention_heads % g == 0]
    if (g := next((g for g in single if _fits(arch, replace(inp, gpus=g), available)), None)) is not None:
        return f"resources.gpus {g}"
    for nodes in range(2, MAX_POD_GPUS // node + 1) if engine else ():
        if nodes * node > inp.gpus and _fits(arch, replace(inp, gpus=nodes * node), available):
            per = f"nodes of {GPU_COUNT_LABEL}={node}" if source == GPU_COUNT_LABEL else \
                f"resources.gpusPerNode {node}"
            return f"{nodes} x {node} GPUs (multi-node: resources.gpus {nodes * node} with {per}, a LeaderWorkerSet)"
    return ""


def _largest(ok: Callable[[int], bool], low: int, high: int) -> int | None:
    """The largest n in [low, high) with ok(n) (monotone: smaller n needs less memory), else None."""
    if high <= low or not ok(low):
        return None
    while high - low > 1:
        mid = (low + high) // 2
        if ok(mid):
            low = mid
        else:
            high = mid
    return low


def advisory(spec: DeepSeekDeploymentSpec) -> bool:
    """spec.gpuFit.mode Advisory: a plan that does not fit warns instead of blocking the rollout."""
    return spec.gpu_fit is not None and spec.gpu_fit.mode == "Advisory"


def plan_variants(spec: DeepSeekDeploymentSpec, downloaded: dict[str, Architecture] | None = None,
                  variants: Sequence[ResolvedVariant] | None = None) -> dict[str, GpuFit]:
    """The plan of every variant (the primary first), each with its own model on the spec's resources;
    `downloaded`: variant -> its downloaded checkpoint's architecture (config_geometry.py); `variants`:
    resolve_variants(spec), when the caller resolved them already (desired.py)."""
    from deepseek_operator.api import resolve_variants

    selector = spec.scheduling.node_selector
    return {v.name: plan(v.model, spec.resources, spec.serving, selector, (downloaded or {}).get(v.name),
                         v.runtime) for v in (resolve_variants(spec) if variants is None else variants)}
