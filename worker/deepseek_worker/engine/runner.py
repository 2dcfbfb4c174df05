"""The model side of the engine: slots in the KV pool, batched decode, chunked prefill. Synchronous.

Only the engine's scheduler calls `Runner.step`, always from one worker thread at a time, so nothing
here is locked. One step:
1. drop cancelled sequences and admit new ones (each gets a slot; a prefix-cache hit is copied in);
2. one decode pass over every slot (static shapes, a CUDA graph on CUDA) and one batched sampling
   call for the sequences that are decoding; the chosen tokens come to the host in one copy;
3. prefill under the step's token budget (`max_num_batched_tokens`): every waiting prompt advances
   by a chunk (its whole rest when that fits), all in one right-padded pass where each row attends
   over its own slot, so prefix hits and chunks batch like fresh prompts, and a long prompt never
   stalls the running streams for more than one budget's worth of work.
A sequence whose prompt is complete samples its first token and decodes from the next step.
"""

from __future__ import annotations

import itertools
from collections import deque
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
from .sampler import Scratch, new_seed
from .sampler import sample as sample_rows
from .sequence import Result, Sequence, TokenEvent, next_text
from .text import IncrementalDetokenizer, StopMatcher


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
        self._keys = itertools.count()  # Sequence.key: unique per runner
        self.steps = 0
        self.failures = 0  # consecutive failed steps (a wedged device keeps failing)
        self._passes = [0, 0]
        self.step_log: deque[tuple[int, tuple[str, ...]]] = deque(maxlen=step_log_len)
        self.vocab = int(self.model.get_input_embeddings().weight.shape[0])
        self.scratch: Scratch | None = None  # the sampler's buffers, made at the first sampled step
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
            key=next(self._keys),
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
    def step(self, admit: list[Sequence], drop: set[int]) -> list[Result | TokenEvent]:
        """Drop cancelled sequences, admit `admit` (the caller checked `free_slots`), decode once,
        prefill under the budget; return the new chunks (empty ones are not returned) and the new
        tokens whose text the caller makes (`sequence.text_chunk`) while the next step computes.

        A failing prefill fails only its own sequences; a failing decode pass fails every sequence
        (it cannot be attributed)."""
        for key in drop:
            self._release(key)
        self._passes = [0, 0]  # [succeeded, failed] model passes in this step
        results: list[Result | TokenEvent] = [r for seq in admit if (r := self._admit(seq)) is not None]
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
        return [r for r in results if isinstance(r, TokenEvent) or r[1].text or r[1].finish_reason or r[1].logprobs]

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

    def _decode(self) -> list[Result | TokenEvent]:
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
            return list(self.fail_all([], f"decode failed: {exc!r}"))
        self._passes[0] += 1
        return [self._emit(s, t) for s, t in zip(live, tokens, strict=True)]

    # -- prefill ------------------------------------------------------------------------------

    def _prefill(self) -> list[Result | TokenEvent]:
        """Prefill waiting prompts under the token budget, in at most two padded passes: a chunk
        longer than half the budget alone (so short prompts are not padded to its width), the rest
        together."""
        chunks = self._plan_prefill()
        half = self.config.max_num_batched_tokens // 2
        long = [c for c in chunks if c[1] > half]
        short = [c for c in chunks if c[1] <= half]
        return [r for group in (long, short) if group for r in self._run_chunks(group)]

    def _plan_prefill(self) -> list[tuple[Sequence, int]]:
        """(sequence, tokens to prefill now) in admission order, within max_num_batched_tokens."""
        budget = self.config.max_num_batched_tokens
        chunks = []
        for seq in self.seqs.values():
            if seq.decoding:
                continue
            size = min(len(seq.prompt_ids) - seq.filled, budget)
            if size <= 0:
                break
            chunks.append((seq, size))
            budget -= size
        return chunks

    def _run_chunks(self, chunks: list[tuple[Sequence, int]]) -> list[Result | TokenEvent]:
        try:
            done, logits = self._run_prompt_batch(chunks)
        except Exception as exc:  # noqa: BLE001 -- not attributable in a batch: each chunk runs alone,
            # so only the request that fails alone ends as "error" (its neighbours are not punished).
            if len(chunks) == 1:
                return list(self._fail_prefill([chunks[0][0]], exc))
            return [r for chunk in chunks for r in self._run_chunks([chunk])]
        self._passes[0] += 1
        return self._first_tokens(done, logits) if done else []  # none done: chunks of long prompts

    def _run_prompt_batch(self, chunks: list[tuple[Sequence, int]]) -> tuple[list[Sequence], torch.Tensor]:
        """One right-padded pass: row r prefills `size` prompt tokens of its sequence from where it
        stands (after earlier chunks or a prefix hit), attending over its own slot. Returns the
        sequences whose prompt is now complete and their last token's logits."""
        device, slot_len = self.input_device, self.pool.slot_len
        width = max(size for _, size in chunks)
        starts = torch.tensor([seq.filled for seq, _ in chunks], device=device)
        sizes = torch.tensor([size for _, size in chunks], device=device)
        ids = torch.tensor([seq.prompt_ids[seq.filled : seq.filled + size] + [0] * (width - size)
                            for seq, size in chunks], device=device)
        cols = torch.arange(width, device=device)
        # Padding queries write beyond their row's data (overwritten before it is ever attended);
        # clamped so they stay inside the slot (a real prompt token is never at slot_len - 1).
        positions = (starts[:, None] + cols[None, :]).clamp_(max=slot_len - 1)
        end = int(max(seq.filled + size for seq, size in chunks))
        keys = torch.arange(end, device=device)
        filled = (starts + sizes)[:, None, None]
        allowed = (keys[None, None, :] <= positions[:, :, None]) & (keys[None, None, :] < filled)
        slots = torch.tensor([self.slots.owners.index(seq.key) for seq, _ in chunks], device=device)
        self.cache.prefill_rows(slots, positions, end)
        hidden = self.model.get_decoder()(
            input_ids=ids, position_ids=positions, attention_mask=additive_mask(allowed, self.dtype)[:, None],
            past_key_values=self.cache, use_cache=True,
        ).last_hidden_state
        for seq, size in chunks:
            seq.filled += size
        rows = [r for r, (seq, _) in enumerate(chunks) if seq.decoding]
        index = torch.tensor(rows, dtype=torch.long, device=device)
        last = hidden[index, sizes[index] - 1]
        logits: torch.Tensor = self.model.get_output_embeddings()(last)
        return [chunks[r][0] for r in rows], logits

    def _first_tokens(self, seqs: list[Sequence], logits: torch.Tensor) -> list[Result | TokenEvent]:
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
        scratch = self._scratch(logits)
        if all(s.extras is None for s in seqs):
            return [int(t) for t in sample_rows(logits, rows, scratch).tolist()]
        extras = [s.extras for s in seqs]
        pick = lambda masked: [int(t) for t in sample_rows(masked, rows, scratch).tolist()]  # noqa: E731
        return sample_with_extras(logits.float(), extras, pick, self.eos_ids)

    def _scratch(self, logits: torch.Tensor) -> Scratch:
        """Buffers for the most rows a sampling call can have (one per slot), made once."""
        if self.scratch is None:
            self.scratch = Scratch(self.pool.slots, int(logits.shape[-1]), logits.device)
        return self.scratch

    def _emit(self, seq: Sequence, token: int) -> Result | TokenEvent:
        """Account one generated token; finish (and free the slot) or make it the next input.

        Text is left to the caller (a TokenEvent), except for requests with logprobs or a grammar:
        their chunks carry per-token data made in this thread, so their text is made here too."""
        seq.completion += 1
        seq.token = token
        if seq.extras is not None:
            chunk = self._text(seq, token)
            if seq.finish is not None:
                self._release(seq.key)
            return seq, chunk
        finish = self._count_finish(seq, token)
        if finish is not None:
            seq.finish = finish
            self._release(seq.key)
        return TokenEvent(seq, token, seq.completion, finish)

    def _count_finish(self, seq: Sequence, token: int) -> FinishReason | None:
        """What the token alone decides: EOS ends with "stop", the last allowed token with "length"."""
        if token in self.eos_ids:
            return "stop"
        return "length" if seq.completion >= seq.max_new else None

    def _text(self, seq: Sequence, token: int) -> GenerationChunk:
        if seq.extras is not None and seq.extras.error is not None:
            return self._finish(seq, "error", seq.stops.flush(), seq.extras.error)
        text, finish = next_text(seq, token, self._count_finish(seq, token))
        return self._finish(seq, finish, text) if finish is not None else seq.chunk(text)

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
