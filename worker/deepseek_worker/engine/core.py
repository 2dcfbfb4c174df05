"""The inference engine: a transformers model behind one continuous-batching scheduler loop.

No web imports: app.py drives it through `EngineProtocol` (types.py).

Scheduling: one asyncio task owns all request state. Between two model steps it drops cancelled
requests, admits waiting ones up to `max_batch_size` running, and hands the step to a worker thread
(`asyncio.to_thread`), so the event loop never blocks on torch. Each step decodes every running
request in one forward pass and prefills the newly admitted ones, which join the next pass. Chunks
flow back to each `generate()` iterator through its own queue. A request that fails (bad input,
error in its prefill) ends with finish_reason "error"; the loop itself never dies on one request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from ..tiny import chat_template as deepseek_chat_template
from ..types import EngineConfig, EngineStats, GenerationChunk, SamplingParams
from .loading import Loaded, load
from .runner import Result, Runner, Sequence

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
        self._waiting: deque[Sequence] = deque()
        self._running: dict[int, Sequence] = {}
        self._queues: dict[int, asyncio.Queue[GenerationChunk]] = {}
        self._cancelled: set[int] = set()
        self._wake = asyncio.Event()
        self._stopping = False

    @property
    def ready(self) -> bool:
        """True once the model is loaded and the scheduler loop is running."""
        return self._task is not None and not self._task.done() and not self._stopping

    @property
    def step_log(self) -> deque[tuple[int, tuple[str, ...]]]:
        """Bounded log of decode passes: (step number, request ids decoded together in it)."""
        return self._runner.step_log if self._runner else deque()

    async def start(self) -> None:
        """Load the model in a worker thread, then start the scheduler loop. Idempotent."""
        if self._task is not None:
            return
        self.loaded = await asyncio.to_thread(load, self.config)
        self._runner = Runner(self.loaded, self.config)
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="engine-scheduler")

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
        runner = self._runner
        assert runner is not None
        while not self._stopping:
            if not (self._waiting or self._running or self._cancelled):
                self._wake.clear()
                await self._wake.wait()
                continue
            drop, self._cancelled = self._cancelled, set()
            admit = self._admit()
            try:
                results = await asyncio.to_thread(runner.step, admit, drop)
            except Exception as exc:  # a bug in a step must not kill serving:
                # every request involved ends with "error" and the loop goes on.
                log.exception("engine step failed")
                results = runner.fail_all(admit, f"engine step failed: {exc!r}")
            self._dispatch(results)

    def _admit(self) -> list[Sequence]:
        admit: list[Sequence] = []
        while self._waiting and len(self._running) < self.config.max_batch_size:
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
