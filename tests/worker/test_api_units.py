"""Units behind the API: the incremental reasoning parser, settings and the CLI's error contract."""

from __future__ import annotations

import pytest

from deepseek_worker.cli import FLAGS, load_settings
from deepseek_worker.protocol.reasoning import ReasoningParser, prompt_opens_reasoning, split_reasoning
from deepseek_worker.settings import Settings


def feed_all(parser: ReasoningParser, chunks: list[str]) -> tuple[str, str]:
    reasoning, content = "", ""
    for chunk in chunks:
        r, c = parser.feed(chunk)
        reasoning, content = reasoning + r, content + c
    r, c = parser.flush()
    return reasoning + r, content + c


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_reasoning_parser_tags_split_anywhere(size: int) -> None:
    text = "<think>\nstep one < two </think>\n\nThe answer </ is 4."
    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    assert feed_all(ReasoningParser(), chunks) == ("step one < two ", "The answer </ is 4.")


def test_reasoning_parser_plain_text_untouched() -> None:
    assert split_reasoning("  plain <thin answer") == (None, "  plain <thin answer")
    assert split_reasoning("") == (None, "")


def test_reasoning_started_by_prompt() -> None:
    assert prompt_opens_reasoning("<|Assistant|><think>\n")
    assert not prompt_opens_reasoning("<|Assistant|>")
    assert split_reasoning("thinking</think>done", in_reasoning=True) == ("thinking", "done")
    assert split_reasoning("never closed", in_reasoning=True) == ("never closed", "")


def test_flags_match_the_settings_contract() -> None:
    fields = {name for name in Settings.model_fields}
    assert {flag[2:].replace("-", "_") for flag in FLAGS} == fields


def test_env_and_flags_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("DEEPSEEK_PORT", "9000")
    settings, _ = load_settings(["--port", "9100", "--served-model-name", "chat"])
    assert (settings.max_batch_size, settings.port, settings.served_name) == (4, 9100, "chat")
    assert settings.engine_config().max_batch_size == 4


@pytest.mark.parametrize(
    ("argv", "env", "name"),
    [
        (["--max-model-len", "abc"], {}, "max_model_len"),
        ([], {"DEEPSEEK_PORT": "70000"}, "port"),
        (["--quantization", "int4"], {}, "quantization"),
        (["--max-new-tokens", "9000"], {}, "(combination)"),
        (["--api-keys-file", "/nonexistent/keys"], {}, "api_keys_file"),
    ],
)
def test_bad_settings_exit_2_with_one_line(
    argv: list[str], env: dict[str, str], name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exit_info:
        load_settings(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"invalid setting {name}" in err


def test_burst_default() -> None:
    assert Settings(rate_limit_rpm=600).burst == 60
    assert Settings(rate_limit_rpm=5).burst == 1
    assert Settings(rate_limit_rpm=5, rate_limit_burst=7).burst == 7
