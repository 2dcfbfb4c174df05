"""One request's generation state, shared by the engine's scheduler and its runner."""

from __future__ import annotations

from dataclasses import dataclass

from ..types import FinishReason, GenerationChunk, SamplingParams
from .processors import RowExtras
from .sampler import RowParams
from .text import IncrementalDetokenizer, StopMatcher


@dataclass(eq=False)
class Sequence:
    """One request's generation state. `key` is unique per runner even if request ids repeat.

    `filled` counts the prompt tokens whose KV is in the pool; `token` is the next decode input
    (the last sampled token), which the next decode pass writes at position `position`."""

    key: int
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    max_new: int
    seed: int
    detok: IncrementalDetokenizer
    stops: StopMatcher
    completion: int = 0
    cached: int = 0
    filled: int = 0
    token: int = 0
    finish: FinishReason | None = None
    extras: RowExtras | None = None  # grammar / logprobs; None on the plain path
    text_done: bool = False  # its last chunk was made (TokenEvent path)

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


@dataclass(frozen=True)
class TokenEvent:
    """A generated token whose text is made later, on the event loop, while the next step computes.

    The runner decides what the token count decides (EOS: "stop", max tokens: "length"); the text,
    stop strings and the chunk come from `text_chunk`, which only the event loop calls, so a
    sequence's detokenizer and stop matcher are never touched by two threads."""

    seq: Sequence
    token: int
    completion: int
    finish: FinishReason | None


def next_text(seq: Sequence, token: int, finish: FinishReason | None) -> tuple[str, FinishReason | None]:
    """The text `token` adds and how the sequence ends, given what its token count decided (`finish`:
    EOS "stop", "length" or None): EOS has no text and flushes what was held back; a stop string
    ends it with "stop"; "length" flushes the held text. The one finishing rule both paths use."""
    if finish == "stop":  # EOS: the token itself has no text
        return seq.stops.flush(), finish
    text, stopped = seq.stops.feed(seq.detok.push(token))
    if stopped:
        return text, "stop"
    if finish == "length":
        return text + seq.stops.flush(), finish
    return text, finish


def text_chunk(event: TokenEvent) -> GenerationChunk | None:
    """The chunk for one TokenEvent, or None when its sequence already ended (a stop string found in
    an earlier token: the runner decoded one more before the sequence was dropped)."""
    seq = event.seq
    if seq.text_done:
        return None
    text, finish = next_text(seq, event.token, event.finish)
    if finish is not None:
        seq.text_done = True
    return GenerationChunk(text, finish, len(seq.prompt_ids), event.completion, seq.cached)
