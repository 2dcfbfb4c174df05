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


def apply_thinking(prompt: str, thinking: str | None) -> tuple[str, bool]:
    """DeepSeek's `thinking` parameter on a rendered prompt -> (prompt, output starts in a thought).

    None keeps the template's choice. "enabled" opens a thought when the template did not
    (`<think>\n`, as DeepSeek-V3.1's thinking mode does). "disabled" closes a thought the template
    opened with an empty one (`<think>\n\n</think>\n\n`, the R1 convention); the caller then
    treats the whole output as content.
    """
    opens = prompt_opens_reasoning(prompt)
    if thinking == "enabled" and not opens:
        return prompt + OPEN + "\n", True
    if thinking == "disabled":
        if opens:
            prompt += ("" if prompt.endswith("\n") else "\n") + "\n" + CLOSE + "\n\n"
        return prompt, False
    return prompt, opens


def _held_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ReasoningParser:
    """Feed decoded text chunks; get back (reasoning_delta, content_delta) pairs.

    Contract: the concatenation of all reasoning deltas plus all content deltas (after `flush`)
    equals the input minus the tags and the whitespace right after `</think>`. With `split=False`
    nothing is parsed: every chunk is content, unchanged (thinking disabled).

    `reasoning_tokens` counts the tokens (as passed to `feed`) generated inside the thought, its
    tags included: a chunk that opens or closes the thought counts as reasoning.
    """

    def __init__(self, in_reasoning: bool = False, *, split: bool = True) -> None:
        self._state = "reasoning" if in_reasoning else "start" if split else "content"
        self._buf = ""
        self._content_started = not split
        self._reasoning_started = False
        self.saw_thought = in_reasoning
        self.reasoning_tokens = 0
        self._undecided_tokens = 0  # tokens seen before it is known whether a thought opens

    def feed(self, text: str, tokens: int = 0) -> tuple[str, str]:
        """Consume one chunk of `tokens` generated tokens; return what can be emitted now."""
        before = self._state
        out = self._feed(text)
        if before == "reasoning":
            self.reasoning_tokens += tokens
        elif before == "start":
            if self._state == "start":
                self._undecided_tokens += tokens
            elif self.saw_thought:
                self.reasoning_tokens += self._undecided_tokens + tokens
            self._undecided_tokens = 0 if self._state != "start" else self._undecided_tokens
        return out

    def _feed(self, text: str) -> tuple[str, str]:
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
