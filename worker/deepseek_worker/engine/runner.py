"""The model side of the engine: slots in the KV pool, batched decode, chunked prefill. Synchronous.

Only the engine's scheduler calls `Runner.step`, always from one worker thread at a time, so nothing
here is locked. One step:
1. drop cancelled sequences and admit new ones (each gets a slot; a prefix-cache hit is copied in);
2. one decode pass over every slot (static shapes, a CUDA graph on CUDA) and one batched sampling
   call for the sequences that are decoding; the chosen tokens come to the host in one copy;
3. prefill under the step's token budget (`max_num_batched_tokens`): prompts that start at 0 and fit
   whole go together in one padded pass, a longer one advances by a chunk, so a long prompt never
   stalls the running streams for more than one budget's worth of work.
A sequence whose prompt is complete samples its first token and decodes from the next step.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from ..types import EngineConfig, FinishReason, GenerationChunk, SamplingParams
from .constrained import Grammars
from .decode import DecodeStep, additive_mask
from .loading import Loaded
from .memory import PoolPlan
from .pool import KVPool, SlotTable
from .pool_cache import PoolCache
from .prefix import PrefixCache
from .processors import RowExtras
from .processors import sample as sample_with_extras
from .sampler import RowParams, new_seed
from .sampler import sample as sample_rows
from .text import IncrementalDetokenizer, StopMatcher

_keys = itertools.count()


@dataclass(eq=False)
class Sequence:
    """One request's generation state. `key` is unique per engine even if request ids repeat.

    `filled` counts the prompt tokens whose KV is in the pool; `token` is the next decode input
    (the last sampled token), which the next decode pass writes at position `position`."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    max_new: int
    seed: int
    detok: IncrementalDetokenizer
    stops: StopMatcher
    key: int = field(default_factory=lambda: next(_keys))
    completion: int = 0
    cached: int = 0
    filled: int = 0
    token: int = 0
    finish: FinishReason | None = None
    extras: RowExtras | None = None  # grammar / logprobs; None on the plain path

    @property
    def decoding(self) -> bool:
        return self.filled == len(self.prompt_ids)

    @property
    def position(self) -> int:
        """Where the next decode input goes (while prefilling: where the next chunk starts)."""
        return self.filled + max(0, self.completion - 1) if self.decoding else self.filled

    def row(self) -> RowParams:
        p = self.params
        return RowParams(p.temperature, p.top_p, p.top_k, self.seed, self.completion)

    def chunk(self, text: str, error: str | None = None) -> GenerationChunk:
        """A chunk carrying this sequence's cumulative counters (and logprobs since the last one)."""
        logprobs = self.extras.take() if self.extras is not None else ()
        return GenerationChunk(
            text, self.finish, len(self.prompt_ids), self.completion, self.cached, error, logprobs
        )


Result = tuple[Sequence, GenerationChunk]


class Runner:
    """Owns the model, the KV pool, the slots and the prefix cache."""

    def __init__(self, loaded: Loaded, config: EngineConfig, plan: PoolPlan, step_log_len: int = 4096) -> None:
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.config = config
        self.dtype = loaded.dtype
        self.pool = KVPool(plan.shapes, plan.slots, config.max_model_len)
        self.slots = SlotTable(plan.slots)
        self.cache = PoolCache(self.pool)
        self.input_device = self.model.get_input_embeddings().weight.device
        self.decoder = DecodeStep(self.model, self.cache, self.input_device, self.dtype)
        self.prefix = PrefixCache(config.prefix_cache_bytes)
        self.seqs: dict[int, Sequence] = {}  # running, by key
        self.steps = 0
        self.failures = 0  # consecutive failed steps (a wedged device keeps failing)
        self._passes = [0, 0]
        self.step_log: deque[tuple[int, tuple[str, ...]]] = deque(maxlen=step_log_len)
        self.vocab = int(self.model.get_input_embeddings().weight.shape[0])
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.grammars = Grammars(self.tokenizer, self.vocab, self.eos_ids)

    @property
    def free_slots(self) -> int:
        return self.slots.free

    @property
    def used_tokens(self) -> int:
        return sum(s.position for s in self.seqs.values())

    def new_sequence(self, prompt_ids: list[int], params: SamplingParams, request_id: str) -> Sequence:
        """Per-request state; cheap, safe to call on the event loop."""
        return Sequence(
            request_id=request_id,
            prompt_ids=list(prompt_ids),
            params=params,
            max_new=min(params.max_tokens, self.config.max_model_len - len(prompt_ids)),
            seed=new_seed(params.seed),
            detok=IncrementalDetokenizer(self.tokenizer, list(prompt_ids)),
            stops=StopMatcher(params.stop),
            extras=RowExtras.of(params),
        )

    def prepare(self, seq: Sequence) -> str | None:
        """Compile the sequence's grammar / load the token table (a worker thread, before it is
        queued; the decode thread never compiles). Returns an error message or None."""
        return seq.extras.prepare(self.grammars) if seq.extras is not None else None

    @torch.inference_mode()
    def step(self, admit: list[Sequence], drop: set[int]) -> list[Result]:
        """Drop cancelled sequences, admit `admit` (the caller checked `free_slots`), decode once,
        prefill under the budget; return the new chunks (empty ones are not returned).

        A failing prefill fails only its own sequences; a failing decode pass fails every sequence
        (it cannot be attributed)."""
        for key in drop:
            self._release(key)
        self._passes = [0, 0]  # [succeeded, failed] model passes in this step
        results = [r for seq in admit if (r := self._admit(seq)) is not None]
        decode_failed = False
        if any(s.decoding for s in self.seqs.values()):
            results += self._decode()
            decode_failed = self._passes[1] > 0
        results += self._prefill()
        # A step fails when its decode pass fails or every pass in it failed (a wedged device);
        # one prompt failing beside successful passes is that request's problem.
        succeeded, failed = self._passes
        if decode_failed or (failed and not succeeded):
            self.failures += 1
        elif succeeded:
            self.failures = 0
        if self.seqs or admit:
            self.steps += 1
        return [(s, c) for s, c in results if c.text or c.finish_reason or c.logprobs]

    def fail_all(self, seqs: list[Sequence], message: str) -> list[Result]:
        """End `seqs` and everything running with "error" and free every slot."""
        victims = {s.key: s for s in [*seqs, *self.seqs.values()]}
        self.seqs.clear()
        self.slots = SlotTable(self.pool.slots)
        return [(s, self._finish(s, "error", "", message)) for s in victims.values()]

    # -- admission and slots ------------------------------------------------------------------

    def _admit(self, seq: Sequence) -> Result | None:
        problem = self._problem(seq)
        if problem is not None:
            return seq, self._finish(seq, "error", "", problem)
        slot = self.slots.acquire(seq.key)
        self.seqs[seq.key] = seq
        hit, kv = self.prefix.lookup(seq.prompt_ids)
        if kv is not None:
            self.pool.write(slot, 0, kv)
            seq.filled = seq.cached = hit
        return None

    def _problem(self, seq: Sequence) -> str | None:
        ids = seq.prompt_ids
        if not ids:
            return "ValueError: empty prompt"
        if seq.params.max_tokens < 1:
            return "ValueError: max_tokens must be >= 1"
        if seq.max_new < 1:
            return f"ValueError: prompt has {len(ids)} tokens; max_model_len is {self.config.max_model_len}"
        # Checked here because an out-of-range id is a device-side assert on CUDA (kills the context).
        if min(ids) < 0 or max(ids) >= self.vocab:
            return f"ValueError: token id out of range [0, {self.vocab})"
        return None

    def _release(self, key: int) -> None:
        seq = self.seqs.pop(key, None)
        if seq is None:
            return
        moved = self.slots.release(key)
        if moved is not None:
            other = self.seqs[moved[0]]
            # +1: a row decoded in this step has already written its token at `position`.
            self.pool.move(len(self.slots), moved[1], min(other.position + 1, self.pool.slot_len))

    # -- decode -------------------------------------------------------------------------------

    def _decode(self) -> list[Result]:
        order = [self.seqs[k] for k in self.slots.owners]  # row r = slot r
        rows = [r for r, s in enumerate(order) if s.decoding]
        live = [order[r] for r in rows]
        self.step_log.append((self.steps, tuple(s.request_id for s in live)))
        try:
            inputs = torch.tensor([[s.token if s.decoding else 0 for s in order], [s.position for s in order]],
                                  device=self.input_device)
            logits = self.decoder.run(inputs[0], inputs[1], max(s.position for s in order) + 1)
            if len(rows) < len(order):
                logits = logits[torch.tensor(rows, device=logits.device)]
            tokens = self._sample(logits, live)
        except Exception as exc:  # noqa: BLE001 -- reported to every request of the pass as "error"
            self._passes[1] += 1
            return self.fail_all([], f"decode failed: {exc!r}")
        self._passes[0] += 1
        return [self._emit(s, t) for s, t in zip(live, tokens, strict=True)]

    # -- prefill ------------------------------------------------------------------------------

    def _prefill(self) -> list[Result]:
        """Prefill waiting prompts under the token budget: whole fresh prompts batched, then chunks."""
        budget = self.config.max_num_batched_tokens
        pending = [s for s in self.seqs.values() if not s.decoding]
        fresh: list[Sequence] = []
        chunks: list[tuple[Sequence, int]] = []
        for seq in pending:
            rest = len(seq.prompt_ids) - seq.filled
            if seq.filled == 0 and rest <= budget:
                fresh.append(seq)
            elif budget > 0:
                chunks.append((seq, min(rest, budget)))
            else:
                break
            budget -= min(rest, budget)
            if budget <= 0:
                break
        results = self._run_fresh(fresh) if fresh else []
        for seq, size in chunks:
            results += self._run_chunk(seq, size)
        return results

    def _run_fresh(self, seqs: list[Sequence]) -> list[Result]:
        """One padded pass over whole prompts that start at position 0 (right-padded, masked)."""
        if len(seqs) == 1:
            return self._run_chunk(seqs[0], len(seqs[0].prompt_ids))
        try:
            logits = self._run_prompt_batch(seqs)
        except Exception:  # noqa: BLE001 -- not attributable: each prompt runs alone, so only the
            # request that fails alone ends as "error" (its neighbours are not punished for it).
            for s in seqs:
                s.filled = 0
            return [r for s in seqs for r in self._run_chunk(s, len(s.prompt_ids))]
        return self._first_tokens(seqs, logits)

    def _run_prompt_batch(self, seqs: list[Sequence]) -> torch.Tensor:
        device, width = self.input_device, max(len(s.prompt_ids) for s in seqs)
        ids = torch.tensor([s.prompt_ids + [0] * (width - len(s.prompt_ids)) for s in seqs], device=device)
        lengths = torch.tensor([len(s.prompt_ids) for s in seqs], device=device)
        cols = torch.arange(width, device=device)
        allowed = (cols[None, None, :] <= cols[None, :, None]) & (cols[None, None, :] < lengths[:, None, None])
        self.cache.prefill_fresh(torch.tensor([self.slots.owners.index(s.key) for s in seqs], device=device))
        hidden = self.model.get_decoder()(
            input_ids=ids, position_ids=cols[None].expand(len(seqs), -1),
            attention_mask=additive_mask(allowed, self.dtype)[:, None], past_key_values=self.cache, use_cache=True,
        ).last_hidden_state
        last = hidden[torch.arange(len(seqs), device=device), lengths - 1]
        logits: torch.Tensor = self.model.get_output_embeddings()(last)
        for s in seqs:
            s.filled = len(s.prompt_ids)
        return logits

    def _run_chunk(self, seq: Sequence, size: int) -> list[Result]:
        try:
            logits = self._run_prompt(seq, size)
        except Exception as exc:  # noqa: BLE001 -- this request ends as "error"; the loop goes on
            return self._fail_prefill([seq], exc)
        return self._first_tokens([seq], logits) if logits is not None else []

    def _run_prompt(self, seq: Sequence, size: int) -> torch.Tensor | None:
        """Prefill `size` more prompt tokens of `seq`; the last token's logits when the prompt is done."""
        start, device = seq.filled, self.input_device
        ids = torch.tensor([seq.prompt_ids[start : start + size]], device=device)
        positions = torch.arange(start, start + size, device=device)
        allowed = torch.arange(start + size, device=device)[None, :] <= positions[:, None]
        self.cache.prefill(self.slots.owners.index(seq.key), start)
        mask = additive_mask(allowed, self.dtype)[None, None]
        out = self.model(input_ids=ids, position_ids=positions[None], attention_mask=mask,
                         past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        seq.filled += size
        return out.logits[:, -1] if seq.decoding else None

    def _first_tokens(self, seqs: list[Sequence], logits: torch.Tensor) -> list[Result]:
        self._passes[0] += 1
        slots = self.slots.owners
        for s in seqs:
            self.prefix.insert(s.prompt_ids, self.pool.read(slots.index(s.key), len(s.prompt_ids)))
        tokens = self._sample(logits, seqs)
        return [self._emit(s, t) for s, t in zip(seqs, tokens, strict=True)]

    def _fail_prefill(self, seqs: list[Sequence], exc: Exception) -> list[Result]:
        self._passes[1] += 1
        for s in seqs:
            self._release(s.key)
        return [(s, self._finish(s, "error", "", f"{type(exc).__name__}: {exc}")) for s in seqs]

    # -- sampling and finishing ---------------------------------------------------------------

    def _sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        """One token per row in one batched call; grammar masks and logprobs only when asked."""
        rows = [s.row() for s in seqs]
        if all(s.extras is None for s in seqs):
            return [int(t) for t in sample_rows(logits, rows).tolist()]
        extras = [s.extras for s in seqs]
        pick = lambda masked: [int(t) for t in sample_rows(masked, rows).tolist()]  # noqa: E731
        return sample_with_extras(logits.float(), extras, pick, self.eos_ids)

    def _emit(self, seq: Sequence, token: int) -> Result:
        """Account one generated token; finish (and free the slot) or make it the next input."""
        seq.completion += 1
        seq.token = token
        chunk = self._text(seq, token)
        if seq.finish is not None:
            self._release(seq.key)
        return seq, chunk

    def _text(self, seq: Sequence, token: int) -> GenerationChunk:
        if seq.extras is not None and seq.extras.error is not None:
            return self._finish(seq, "error", seq.stops.flush(), seq.extras.error)
        if token in self.eos_ids:
            return self._finish(seq, "stop", seq.stops.flush())
        text, stopped = seq.stops.feed(seq.detok.push(token))
        if stopped:
            return self._finish(seq, "stop", text)
        if seq.completion >= seq.max_new:
            return self._finish(seq, "length", text + seq.stops.flush())
        return seq.chunk(text)

    @staticmethod
    def _finish(seq: Sequence, reason: FinishReason, text: str, error: str | None = None) -> GenerationChunk:
        seq.finish = reason
        return seq.chunk(text, error)


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """EOS ids from the generation config (int or list) plus the tokenizer's."""
    ids: set[int] = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(int(i) for i in gen_eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)
