"""Incremental detokenization and stop-string matching, per request (no torch, no asyncio).

Both are pure state machines fed one token / one text delta at a time, so they are unit-testable
without a model.
"""

from __future__ import annotations

from typing import Protocol

# Prompt tokens kept as decode context: SentencePiece-style tokenizers drop a word's leading space
# when a token is decoded alone, so the first generated token is decoded after a few prompt tokens.
_CONTEXT_TOKENS = 5
_REPLACEMENT = "\ufffd"


class Decoder(Protocol):
    """The slice of a HF tokenizer that detokenization needs."""

    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    """Turns a growing token list into text deltas that never split a UTF-8 character.

    Contract: the concatenation of all returned deltas equals the decode of all pushed tokens,
    except that a trailing incomplete character (decoded as U+FFFD) is held back until the token
    that completes it arrives. Two offsets (TGI/vLLM scheme) keep each decode O(window), not O(n).
    """

    def __init__(self, tokenizer: Decoder, prompt_ids: list[int]) -> None:
        self._tok = tokenizer
        self._ids: list[int] = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._prefix = 0
        self._read = len(self._ids)

    def push(self, token_id: int) -> str:
        """Add one generated token; return the newly complete text (possibly "")."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        new_text = self._decode(self._ids[self._prefix :])
        if len(new_text) > len(prefix_text) and not new_text.endswith(_REPLACEMENT):
            self._prefix, self._read = self._read, len(self._ids)
            return new_text[len(prefix_text) :]
        return ""

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)


class StopMatcher:
    """Finds stop strings across delta boundaries and holds back text that may start one.

    `feed` returns (text safe to emit, stopped). Once stopped, the emitted text excludes the stop
    string and everything after it (OpenAI semantics). `flush` releases held-back text at the end.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""

    def feed(self, delta: str) -> tuple[str, bool]:
        """Append `delta`; return what can be emitted now and whether a stop string matched."""
        if not self._stops:
            return delta, False
        text = self._pending + delta
        hits = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._pending = ""
            return text[: min(hits)], True
        hold = self._held_suffix(text)
        self._pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold], False

    def flush(self) -> str:
        """Return and clear held-back text (called when the request ends for another reason)."""
        text, self._pending = self._pending, ""
        return text

    def _held_suffix(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
        best = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:k]):
                    best = k
                    break
        return best
