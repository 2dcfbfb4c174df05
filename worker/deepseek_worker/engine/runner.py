"""The model side of the engine: prefill, batched decode, per-request finishing. Synchronous.

Only the engine's scheduler calls `Runner.step`, always from a worker thread and never twice at once,
so nothing here is locked. One step = one batched decode pass for every running sequence, then a
prefill for each newly admitted one (they join the batch for the next step).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from ..types import EngineConfig, FinishReason, GenerationChunk, SamplingParams
from .batch import BatchKV, layer_tensors
from .constrained import Grammars
from .loading import Loaded
from .prefix import PrefixCache
from .processors import RowExtras
from .processors import sample as sample_with_extras
from .sampling import make_generator, sample_rows
from .text import IncrementalDetokenizer, StopMatcher

_keys = itertools.count()


@dataclass(eq=False)
class Sequence:
    """One request's generation state. `key` is unique per engine even if request ids repeat."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    max_new: int
    generator: torch.Generator
    detok: IncrementalDetokenizer
    stops: StopMatcher
    key: int = field(default_factory=lambda: next(_keys))
    completion: int = 0
    cached: int = 0
    finish: FinishReason | None = None
    extras: RowExtras | None = None  # grammar / logprobs; None on the plain path

    def chunk(self, text: str, error: str | None = None) -> GenerationChunk:
        """A chunk carrying this sequence's cumulative counters (and logprobs since the last one)."""
        logprobs = self.extras.take() if self.extras is not None else ()
        return GenerationChunk(
            text, self.finish, len(self.prompt_ids), self.completion, self.cached, error, logprobs
        )


Result = tuple[Sequence, GenerationChunk]


class Runner:
    """Owns the model, the running batch and the prefix cache."""

    def __init__(self, loaded: Loaded, config: EngineConfig, step_log_len: int = 4096) -> None:
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.config = config
        self.batch = BatchKV()
        self.prefix = PrefixCache(config.prefix_cache_bytes)
        self.seqs: dict[int, Sequence] = {}
        self.steps = 0
        self.step_log: deque[tuple[int, tuple[str, ...]]] = deque(maxlen=step_log_len)
        self.vocab = int(self.model.get_input_embeddings().weight.shape[0])
        self.input_device = self.model.get_input_embeddings().weight.device
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.grammars = Grammars(self.tokenizer, self.vocab, self.eos_ids)

    def new_sequence(self, prompt_ids: list[int], params: SamplingParams, request_id: str) -> Sequence:
        """Per-request state; cheap, safe to call on the event loop."""
        return Sequence(
            request_id=request_id,
            prompt_ids=list(prompt_ids),
            params=params,
            max_new=min(params.max_tokens, self.config.max_model_len - len(prompt_ids)),
            generator=make_generator(params.seed),
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
        """Drop cancelled rows, decode the running batch once, prefill `admit`; return new chunks.

        Chunks with no text and no finish are not returned. A failing prefill fails only its own
        sequence; a failing decode pass fails every sequence in that pass (it cannot be attributed).
        """
        self.batch.remove(drop)
        for key in drop:
            self.seqs.pop(key, None)
        results: list[Result] = []
        if len(self.batch):
            results += self._decode()
        for seq in admit:
            results.append(self._prefill(seq))
        if len(self.batch) or admit:
            self.steps += 1
        return [(s, c) for s, c in results if c.text or c.finish_reason or c.logprobs]

    def fail_all(self, seqs: list[Sequence], message: str) -> list[Result]:
        """End `seqs` and everything running with "error" and reset the batch (loop-level fallback)."""
        victims = {s.key: s for s in [*seqs, *self.seqs.values()]}
        self.batch = BatchKV()
        self.seqs.clear()
        return [(s, self._finish(s, "error", "", message)) for s in victims.values()]

    def _decode(self) -> list[Result]:
        seqs = [self.seqs[k] for k in self.batch.ids]
        self.step_log.append((self.steps, tuple(s.request_id for s in seqs)))
        try:
            out = self.model(**self.batch.decode_inputs(), logits_to_keep=1)
            tokens = self._sample(out.logits[:, -1], seqs)
        except Exception as exc:  # noqa: BLE001 -- reported to every request of the pass as "error"
            return self.fail_all([], f"decode failed: {exc!r}")
        self.batch.advance(tokens)
        results = [(s, self._emit(s, t)) for s, t in zip(seqs, tokens, strict=True)]
        done = {s.key for s in seqs if s.finish is not None}
        self.batch.remove(done)
        for key in done:
            self.seqs.pop(key, None)
        return results

    def _prefill(self, seq: Sequence) -> Result:
        try:
            self._validate(seq)
            cache, first = self._run_prompt(seq)
        except Exception as exc:  # noqa: BLE001 -- one bad request ends as "error"; the loop goes on
            return seq, self._finish(seq, "error", "", f"{type(exc).__name__}: {exc}")
        chunk = self._emit(seq, first)
        if seq.finish is None:
            self.batch.add(seq.key, cache, first)
            self.seqs[seq.key] = seq
        return seq, chunk

    def _validate(self, seq: Sequence) -> None:
        ids = seq.prompt_ids
        if not ids:
            raise ValueError("empty prompt")
        if seq.params.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if seq.max_new < 1:
            raise ValueError(f"prompt has {len(ids)} tokens; max_model_len is {self.config.max_model_len}")
        # Checked here because an out-of-range id is a device-side assert on CUDA (kills the context).
        if min(ids) < 0 or max(ids) >= self.vocab:
            raise ValueError(f"token id out of range [0, {self.vocab})")

    def _run_prompt(self, seq: Sequence) -> tuple[DynamicCache, int]:
        ids = seq.prompt_ids
        hit, kv = self.prefix.lookup(ids)
        cache = DynamicCache(ddp_cache_data=kv, config=self.model.config) if kv else DynamicCache(
            config=self.model.config
        )
        rest = torch.tensor([ids[hit:]], device=self.input_device)
        positions = torch.arange(hit, len(ids), device=self.input_device)[None]
        out = self.model(
            input_ids=rest, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1
        )
        self.prefix.insert(ids, layer_tensors(cache))
        seq.cached = hit
        first = self._sample(out.logits[:, -1], [seq])[0]
        return cache, first

    def _sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        """One token per row; grammar masks and logprobs only when some row asked for them."""
        params, gens = [s.params for s in seqs], [s.generator for s in seqs]
        if all(s.extras is None for s in seqs):
            return sample_rows(logits, params, gens)
        extras = [s.extras for s in seqs]
        return sample_with_extras(logits, extras, lambda masked: sample_rows(masked, params, gens), self.eos_ids)

    def _emit(self, seq: Sequence, token: int) -> GenerationChunk:
        """Account one generated token; decide whether the sequence finished and what text to send."""
        seq.completion += 1
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
