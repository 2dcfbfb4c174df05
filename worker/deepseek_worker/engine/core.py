"""The inference engine: a transformers model behind one continuous-batching scheduler loop.

No web imports: the server (server/) drives it through `EngineProtocol` (types.py).

Scheduling: one asyncio task owns all request state. Between two model steps it drops cancelled
requests, admits waiting ones while the KV pool has a free slot (admission by memory: a request that
does not fit waits, it never causes an out-of-memory error), and hands the step to a worker thread
(`asyncio.to_thread`), so the event loop never blocks on torch. Each step decodes every running
request in one static-shape pass and prefills admitted prompts under the token budget (runner.py).
Chunks flow back to each `generate()` iterator through its own queue. A request that fails (bad
input, error in its prefill) ends with finish_reason "error"; the loop itself never dies on one
request, and `healthy` turns False after `max_consecutive_step_failures` failed steps in a row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import torch

from ..chat_template import chat_template as deepseek_chat_template
from ..types import EngineConfig, EngineMeasurements, EngineStats, GenerationChunk, SamplingParams
from .admission import WaitingQueue
from .loading import Loaded, generation_defaults, load
from .memory import plan_pool
from .runner import Runner
from .sequence import Result, Sequence, TokenEvent, text_chunk

log = logging.getLogger(__name__)


class Engine:
    """Implements EngineProtocol. Construct, `await start()`, then call `generate` concurrently."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.model_name = config.served_model_name or config.model
        self.max_model_len = config.max_model_len
        self.loaded: Loaded | None = None
        self._runner: Runner | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiting = WaitingQueue()  # by priority, then arrival (admission.py)
        self._running: dict[int, Sequence] = {}
        self._queues: dict[int, asyncio.Queue[GenerationChunk]] = {}
        self._cancelled: set[int] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._measured = EngineMeasurements()
        self._defaults: dict[str, float] = {}
        self._loop_failures = 0

    @property
    def ready(self) -> bool:
        """True once the model is loaded and the scheduler loop is running."""
        return self._task is not None and not self._task.done() and not self._stopping

    @property
    def healthy(self) -> bool:
        """False once `max_consecutive_step_failures` steps failed in a row (a wedged device):
        /health/live then answers 503 and the kubelet restarts the pod."""
        runner, limit = self._runner, self.config.max_consecutive_step_failures
        failures = max(self._loop_failures, runner.failures if runner is not None else 0)
        return failures < limit

    @property
    def generation_defaults(self) -> dict[str, float]:
        """temperature / top_p / top_k from the checkpoint's generation_config.json, when set."""
        return dict(self._defaults)

    def measurements(self) -> EngineMeasurements:
        """What start-up measured: weights, KV pool, peak device memory, load seconds."""
        return self._measured

    @property
    def step_log(self) -> deque[tuple[int, tuple[str, ...]]]:
        """Bounded log of decode passes: (step number, request ids decoded together in it)."""
        return self._runner.step_log if self._runner else deque()

    async def start(self) -> None:
        """Load the model in a worker thread, then start the scheduler loop. Idempotent."""
        if self._task is not None:
            return
        began = time.monotonic()
        self.loaded = await asyncio.to_thread(load, self.config)
        self._defaults = generation_defaults(self.loaded.model)
        self._runner = await asyncio.to_thread(self._build_runner, self.loaded)
        self._measured = self._measure(self._runner, time.monotonic() - began)
        log.info("engine ready: %s", self._measured)
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="engine-scheduler")

    def _build_runner(self, loaded: Loaded) -> Runner:
        """Size and allocate the KV pool, then (CUDA, not enforce_eager) capture the decode graphs."""
        plan = plan_pool(loaded.model, self.config, loaded.device)
        runner = Runner(loaded, self.config, plan)
        if loaded.device.type == "cuda" and not self.config.enforce_eager:
            captured = runner.decoder.capture()
            log.info("captured %d decode CUDA graphs", captured)
        return runner

    def _measure(self, runner: Runner, seconds: float) -> EngineMeasurements:
        loaded = self.loaded
        assert loaded is not None
        cuda = loaded.device.type == "cuda"
        peak = sum(torch.cuda.max_memory_reserved(i) for i in range(torch.cuda.device_count())) if cuda else 0
        pool = runner.pool
        return EngineMeasurements(
            weight_bytes=loaded.weight_bytes,
            kv_cache_bytes_per_token=pool.nbytes // pool.tokens,
            kv_pool_tokens=pool.tokens,
            kv_pool_bytes=pool.nbytes,
            peak_memory_bytes=int(peak),
            load_seconds=round(seconds, 2),
            device=str(loaded.device),
        )

    async def stop(self) -> None:
        """Finish the current step, stop the loop and end every open request with "abort"."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        await self._task
        self._task = None
        for seq in [*self._waiting, *self._running.values()]:
            seq.finish = "abort"
            self._deliver(seq, seq.chunk(""))
        self._waiting.clear()
        self._running.clear()

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        """Render chat messages with the model's template (DeepSeek's when it has none), ready for
        the assistant's reply."""
        tok = self._tokenizer()
        template = None if tok.chat_template else deepseek_chat_template()
        text = tok.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=True
        )
        return str(text)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`. BOS is added only when the text does not already start with it
        (chat templates usually render it)."""
        tok = self._tokenizer()
        bos = tok.bos_token
        ids = tok(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
        return [int(i) for i in ids]

    def stats(self) -> EngineStats:
        """Gauges and counters at this instant."""
        stats = EngineStats(waiting=len(self._waiting), running=len(self._running))
        if self._runner is not None:
            prefix = self._runner.prefix
            stats.steps = self._runner.steps
            stats.prefix_cache_bytes = prefix.bytes
            stats.prefix_cache_capacity_bytes = prefix.capacity_bytes
            stats.prefix_cache_hits = prefix.hits
            stats.prefix_cache_lookups = prefix.lookups
            stats.kv_pool_tokens = self._runner.pool.tokens
            stats.kv_pool_used_tokens = self._runner.used_tokens
        return stats

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[GenerationChunk]:
        """Stream chunks for one request; the last has a finish_reason. Closing or cancelling the
        iterator early frees the request's batch slot before the next step."""
        return self._generate(list(prompt_ids), params, request_id)

    async def _generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[GenerationChunk]:
        if self._runner is None or not self.ready:
            yield GenerationChunk("", "error", len(prompt_ids), error="engine is not running")
            return
        seq = self._runner.new_sequence(prompt_ids, params, request_id)
        if seq.extras is not None:  # grammar compile / token table: a worker thread, never a step
            problem = await asyncio.to_thread(self._runner.prepare, seq)
            if problem is not None:
                yield GenerationChunk("", "error", len(prompt_ids), error=problem)
                return
        queue: asyncio.Queue[GenerationChunk] = asyncio.Queue()
        self._queues[seq.key] = queue
        self._waiting.append(seq)
        self._wake.set()
        try:
            while True:
                chunk = await queue.get()
                yield chunk
                if chunk.finish_reason is not None:
                    return
        finally:
            self._queues.pop(seq.key, None)
            if seq.finish is None:
                self._cancel(seq)

    def _cancel(self, seq: Sequence) -> None:
        """Forget a request whose consumer went away; its row is dropped at the next step."""
        seq.finish = "abort"
        if seq in self._waiting:
            self._waiting.remove(seq)
        elif self._running.pop(seq.key, None) is not None:
            self._cancelled.add(seq.key)
            self._wake.set()

    async def _loop(self) -> None:
        """Step N+1 computes in the worker thread while this loop makes step N's text and streams it
        (detokenization and stop strings never delay the device). A stop string found in step N's
        text ends its request at once; the row decoded in step N+1 is dropped in step N+2."""
        runner = self._runner
        assert runner is not None
        pending: list[TokenEvent] = []
        while not self._stopping:
            if not (self._waiting or self._running or self._cancelled or pending):
                self._wake.clear()
                await self._wake.wait()
                continue
            drop, self._cancelled = self._cancelled, set()
            admit = self._admit(len(drop))
            # run_in_executor submits now (a to_thread task would start only at the next await,
            # after the text below: no overlap).
            step = asyncio.get_running_loop().run_in_executor(None, runner.step, admit, drop) if (
                admit or drop or runner.seqs) else None
            self._text(pending)
            pending = [] if step is None else await self._results(step, admit)
        self._text(pending)

    async def _results(self, step: asyncio.Future[list[Result | TokenEvent]], admit: list[Sequence]
                       ) -> list[TokenEvent]:
        """Await a step, deliver its ready chunks, return its tokens that still need text."""
        assert self._runner is not None
        try:
            results = await step
            self._loop_failures = 0
        except Exception as exc:  # a bug in a step must not kill serving:
            # every request involved ends with "error" and the loop goes on.
            log.exception("engine step failed")
            self._loop_failures += 1
            results = list(self._runner.fail_all(admit, f"engine step failed: {exc!r}"))
        events = [r for r in results if isinstance(r, TokenEvent)]
        self._dispatch([r for r in results if not isinstance(r, TokenEvent)])
        return events

    def _text(self, events: list[TokenEvent]) -> None:
        for event in events:
            chunk = text_chunk(event)
            if chunk is None or not (chunk.text or chunk.finish_reason):
                continue
            seq = event.seq
            if chunk.finish_reason is not None and event.finish is None:  # a stop string: end it now
                seq.finish = chunk.finish_reason
                self._cancelled.add(seq.key)
            self._dispatch([(seq, chunk)])

    def _admit(self, dropping: int) -> list[Sequence]:
        """Waiting requests by priority, then arrival order, while the pool has a free slot for each (the slots of
        the `dropping` cancelled requests are freed first in the same step)."""
        assert self._runner is not None
        room = self._runner.free_slots + dropping
        admit: list[Sequence] = []
        while self._waiting and len(admit) < room:
            seq = self._waiting.popleft()
            self._running[seq.key] = seq
            admit.append(seq)
        return admit

    def _dispatch(self, results: list[Result]) -> None:
        for seq, chunk in results:
            if chunk.finish_reason is not None:
                self._running.pop(seq.key, None)
            self._deliver(seq, chunk)

    def _deliver(self, seq: Sequence, chunk: GenerationChunk) -> None:
        queue = self._queues.get(seq.key)
        if queue is not None:  # None: the consumer already left
            queue.put_nowait(chunk)

    def _tokenizer(self) -> Any:
        if self.loaded is None:
            raise RuntimeError("engine not started: call `await engine.start()` first")
        return self.loaded.tokenizer
