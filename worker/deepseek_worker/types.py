"""The contract between the engine (engine/, no web imports) and the protocol and server layers
(protocol/, server/).

Both sides import only from here, so either can be tested against a fake of the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

FinishReason = Literal["stop", "length", "abort", "error"]
Dtype = Literal["auto", "bfloat16", "float16", "float32"]
Quantization = Literal["none", "int8", "nf4", "fp4"]
Attention = Literal["auto", "sdpa", "flash_attention_2", "eager"]


@dataclass(frozen=True)
class EngineConfig:
    """How to load and run a model. `model` is a local HF-format directory, a hub id, or "tiny"."""

    model: str
    revision: str = "main"
    served_model_name: str | None = None
    dtype: Dtype = "auto"
    quantization: Quantization = "none"
    attention: Attention = "auto"
    max_model_len: int = 8192
    max_batch_size: int = 16
    prefix_cache_bytes: int = 256 * 1024 * 1024
    # The KV pool (docs/worker-engine.md, "Memory"): exact bytes when set, else this share of each
    # device's total memory minus what loading left allocated. On CPU without kv_cache_bytes the pool
    # holds max_batch_size sequences of max_model_len.
    gpu_memory_utilization: float = 0.9
    kv_cache_bytes: int | None = None
    # Prompt tokens prefilled per engine step, over all admitted requests (chunked prefill).
    max_num_batched_tokens: int = 2048
    # True: never capture CUDA graphs (debugging; the CPU is always eager).
    enforce_eager: bool = False
    # Consecutive failed engine steps after which the engine reports itself unhealthy (/health/live 503).
    max_consecutive_step_failures: int = 3


@dataclass(frozen=True)
class GrammarSpec:
    """A constraint on a request's output: xgrammar EBNF text whose root rule is `root`.

    The engine masks every token the grammar cannot accept and lets the request stop only where
    the grammar is complete (docs/worker-engine.md, "Constrained decoding")."""

    ebnf: str


@dataclass(frozen=True)
class SamplingParams:
    """Per-request generation parameters. temperature == 0 means greedy.

    `logprobs`: None = not requested; n >= 0 = the sampled token's log-probability plus the n
    most likely alternatives. `grammar`: constrain the output (structured output, tool calls)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None
    grammar: GrammarSpec | None = None
    # Admission rank (the API key's priority): the engine admits waiting requests of a lower rank
    # first, FIFO within a rank. 0 interactive, 1 batch.
    priority: int = 0


@dataclass(frozen=True)
class TopLogprob:
    """One candidate token: its text, UTF-8 bytes and log-probability."""

    token: str
    bytes: tuple[int, ...]
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability and the most likely alternatives at that step."""

    token: str
    bytes: tuple[int, ...]
    logprob: float
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class GenerationChunk:
    """One step of one request's output.

    `text` is the newly decoded text since the previous chunk (may be empty while a multi-byte
    character is incomplete or while a possible stop string is held back). The last chunk has a
    `finish_reason`; the counters are cumulative.
    """

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    error: str | None = None
    # Tokens generated since the previous chunk, when logprobs were requested (their text may be
    # partly held back in `text`, e.g. an incomplete character).
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class EngineMeasurements:
    """What the engine measured at start-up, for logs, /health and the operator's status (the GPU-fit
    plan is checked against these: docs/gpu-sizing.md)."""

    weight_bytes: int = 0
    kv_cache_bytes_per_token: int = 0
    kv_pool_tokens: int = 0  # tokens the KV pool holds, all sequences together
    kv_pool_bytes: int = 0
    peak_memory_bytes: int = 0  # the device allocator's peak after warm-up (0 on CPU)
    load_seconds: float = 0.0
    device: str = "cpu"


@dataclass
class EngineStats:
    """Point-in-time engine gauges and counters, read by server/metrics.py."""

    waiting: int = 0
    running: int = 0
    steps: int = 0
    prefix_cache_bytes: int = 0
    prefix_cache_capacity_bytes: int = 0
    prefix_cache_hits: int = 0
    prefix_cache_lookups: int = 0
    kv_pool_tokens: int = 0
    kv_pool_used_tokens: int = 0
    preemptions: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class EngineProtocol(Protocol):
    """What the server (server/) needs from an engine. Cancelling/closing a `generate` iterator frees its slot."""

    model_name: str
    max_model_len: int

    @property
    def ready(self) -> bool: ...

    @property
    def healthy(self) -> bool:
        """False after `max_consecutive_step_failures` failed steps in a row (a wedged device)."""
        ...

    @property
    def generation_defaults(self) -> dict[str, float]:
        """Sampling defaults from the checkpoint's generation_config.json (`temperature`, `top_p`,
        `top_k` when it sets them); the protocol layer applies them to fields a request left unset."""
        ...

    def measurements(self) -> EngineMeasurements: ...

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str: ...

    def tokenize(self, text: str) -> list[int]: ...

    def stats(self) -> EngineStats: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[GenerationChunk]: ...
