"""Incremental detokenization (no broken UTF-8) and stop-string holding, without a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deepseek_worker.engine.text import IncrementalDetokenizer, StopMatcher


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("text", ["Hello world, how are you?", "日本語のテキスト 🤖🎉 mixed ünïcödé", "a  b\n\nc"])
def test_deltas_join_to_full_text_and_are_never_broken(tokenizer: Any, text: str) -> None:
    prompt = tokenizer("prompt:", add_special_tokens=False)["input_ids"]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer, prompt)
    deltas = [detok.push(i) for i in ids]
    assert "".join(deltas) == tokenizer.decode(ids)
    assert all("\ufffd" not in d for d in deltas)


def test_multibyte_character_split_across_tokens_is_held_back(tokenizer: Any) -> None:
    ids = tokenizer("🤖", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1, "the emoji should span several byte-level tokens"
    detok = IncrementalDetokenizer(tokenizer, [])
    deltas = [detok.push(i) for i in ids]
    assert deltas[:-1] == [""] * (len(ids) - 1)
    assert deltas[-1] == "🤖"


def test_stop_string_split_across_deltas() -> None:
    m = StopMatcher(("STOP",))
    assert m.feed("hello ST") == ("hello ", False)  # "ST" may start STOP: held
    assert m.feed("OP and more") == ("", True)


def test_false_alarm_prefix_is_released() -> None:
    m = StopMatcher(("STOP",))
    assert m.feed("a ST") == ("a ", False)
    assert m.feed("ep") == ("STep", False)
    assert m.feed("S") == ("", False)
    assert m.flush() == "S"


def test_earliest_of_several_stops_wins() -> None:
    m = StopMatcher(("world", "lo w"))
    assert m.feed("hello world") == ("hel", True)


def test_no_stops_passes_through() -> None:
    m = StopMatcher(())
    assert m.feed("anything") == ("anything", False)
    assert m.flush() == ""
