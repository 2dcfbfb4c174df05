"""The tiny model: builds atomically and deterministically, loads with HF, renders DeepSeek chat."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

BOS, USER, ASSISTANT, EOS = (
    "<｜begin▁of▁sentence｜>",  # noqa: RUF001 -- DeepSeek's markers use fullwidth bars
    "<｜User｜>",  # noqa: RUF001
    "<｜Assistant｜>",  # noqa: RUF001
    "<｜end▁of▁sentence｜>",  # noqa: RUF001
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _digest(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_concurrent_builds_agree_and_match_cached_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    from deepseek_worker.testing.tiny import build_tiny_model

    dest = tmp_path / "tiny"
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: build_tiny_model(dest), range(2)))
    assert paths == [dest, dest]
    assert (dest / ".complete").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]  # no temp dirs left behind
    assert _digest(dest) == _digest(tiny_model_dir)  # fixed seed: every build is the same model


def test_env_var_overrides_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deepseek_worker.testing.tiny import default_tiny_dir

    monkeypatch.setenv("DEEPSEEK_TINY_DIR", str(tmp_path / "x"))
    assert default_tiny_dir() == tmp_path / "x"


def test_config_is_deepseek_v3_with_tokenizer_vocab(tiny_model_dir: Path, tokenizer: Any) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert config.model_type == "deepseek_v3"
    assert config.vocab_size == len(tokenizer) == 129280
    assert config.n_routed_experts > 1 and config.kv_lora_rank > 0  # MoE + MLA
    assert (tiny_model_dir / "model.safetensors").stat().st_size < 20 * 1024 * 1024


def test_tokenizer_is_the_real_deepseek_one(tokenizer: Any) -> None:
    assert tokenizer.convert_tokens_to_ids([BOS, EOS, USER, ASSISTANT]) == [0, 1, 128803, 128804]
    ids = tokenizer("Hello, world!", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == "Hello, world!"


def test_chat_template_joins_system_prompts_and_adds_generation_prompt(tokenizer: Any) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == f"{BOS}Be brief.\n\nBe kind.{USER}Hi{ASSISTANT}"
    no_prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert no_prompt == f"{BOS}Be brief.\n\nBe kind.{USER}Hi"


def test_chat_template_strips_reasoning_from_history_and_renders_parts(tokenizer: Any) -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "2+2?"}]},
        {"role": "assistant", "content": "<think>add them</think>4"},
        {"role": "user", "content": "Thanks"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == f"{BOS}{USER}2+2?{ASSISTANT}4{EOS}{USER}Thanks{ASSISTANT}"


def test_chat_template_wraps_tool_outputs(tokenizer: Any) -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "20C"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.count("<｜tool▁output▁begin｜>") == 2  # noqa: RUF001
    assert text.count("<｜tool▁outputs▁begin｜>") == 1  # noqa: RUF001
    assert text.endswith(f"sunny<｜tool▁output▁end｜><｜tool▁output▁begin｜>20C<｜tool▁output▁end｜><｜tool▁outputs▁end｜>{ASSISTANT}")  # noqa: RUF001, E501
