"""Incremental `<think>...</think>` splitter: DeepSeek-R1 output -> (reasoning_content, content).

DeepSeek's API returns the chain of thought in `reasoning_content` and the answer in `content`.
R1-style chat templates often end the prompt with `<think>\\n`, so generation starts inside the
thought without an opening tag: pass `in_reasoning=True` then. Tags may be split across chunks, so
a suffix that could still become a tag is held back until the next chunk (or `flush`).
"""

from __future__ import annotations

OPEN = "<think>"
CLOSE = "</think>"


def prompt_opens_reasoning(prompt: str) -> bool:
    """True when the prompt itself leaves the model inside a `<think>` block."""
    tail = prompt.rstrip()
    return tail.endswith(OPEN)


def _held_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ReasoningParser:
    """Feed decoded text chunks; get back (reasoning_delta, content_delta) pairs.

    Contract: the concatenation of all reasoning deltas plus all content deltas (after `flush`)
    equals the input minus the tags and the whitespace right after `</think>`.
    """

    def __init__(self, in_reasoning: bool = False) -> None:
        self._state = "reasoning" if in_reasoning else "start"
        self._buf = ""
        self._content_started = False
        self._reasoning_started = False
        self.saw_thought = in_reasoning

    def feed(self, text: str) -> tuple[str, str]:
        """Consume one chunk; return what can be emitted now."""
        self._buf += text
        reasoning, content = "", ""
        while True:
            if self._state == "start":
                stripped = self._buf.lstrip()
                if stripped.startswith(OPEN):
                    self._buf = stripped[len(OPEN) :]
                    self._state = "reasoning"
                    self.saw_thought = True
                    continue
                if OPEN.startswith(stripped):  # still possibly an opening tag (or only whitespace)
                    return reasoning, content
                self._state = "content"
                self._content_started = True  # no thought: keep the text exactly as generated
                continue
            if self._state == "reasoning":
                if not self._reasoning_started:  # the newline after <think> may arrive later
                    self._buf = self._buf.lstrip("\n")
                    self._reasoning_started = bool(self._buf)
                end = self._buf.find(CLOSE)
                if end >= 0:
                    reasoning += self._buf[:end]
                    self._buf = self._buf[end + len(CLOSE) :]
                    self._state = "content"
                    continue
                hold = _held_suffix(self._buf, CLOSE)
                reasoning += self._buf[: len(self._buf) - hold]
                self._buf = self._buf[len(self._buf) - hold :]
                return reasoning, content
            # content: drop the separator whitespace between the thought and the answer.
            if not self._content_started:
                self._buf = self._buf.lstrip()
                self._content_started = bool(self._buf)
            content += self._buf
            self._buf = ""
            return reasoning, content

    def flush(self) -> tuple[str, str]:
        """End of output: release anything held back."""
        rest, self._buf = self._buf, ""
        if self._state == "reasoning":
            return rest, ""
        return "", rest


def split_reasoning(text: str, in_reasoning: bool = False) -> tuple[str | None, str]:
    """Whole-output version: (reasoning or None when there was no thought, content)."""
    parser = ReasoningParser(in_reasoning)
    r1, c1 = parser.feed(text)
    r2, c2 = parser.flush()
    reasoning = r1 + r2
    return (reasoning if parser.saw_thought else None), c1 + c2
