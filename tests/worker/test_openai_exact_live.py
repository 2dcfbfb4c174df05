"""DeepSeek chat prefix completion and null parameters end to end: the openai SDK (DeepSeek's own
documented client, base URL without /v1) against a running worker with the tiny model and the real
DeepSeek chat template and tokenizer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fakes import serve_in_thread, wait_until

from deepseek_worker.engine import Engine
from deepseek_worker.server import build_app
from deepseek_worker.settings import Settings

pytestmark = pytest.mark.slow
KEY = "sk-live"
MODEL = "deepseek-chat"
QUESTION = {"role": "user", "content": "Please write quick sort code"}
PREFIX = "```python\n"


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path) -> Iterator[tuple[str, Engine]]:
    settings = Settings(
        model=str(tiny_model_dir), served_model_name=MODEL, max_model_len=512, max_new_tokens=16, api_keys=KEY
    )
    engine = Engine(settings.engine_config())
    with serve_in_thread(build_app(engine, settings)) as url:
        wait_until(lambda: httpx.get(url + "/health/ready").status_code == 200, 120, "model load")
        yield url, engine


@pytest.fixture
def sdk(served: tuple[str, Engine]) -> openai.OpenAI:
    return openai.OpenAI(base_url=served[0], api_key=KEY, max_retries=0, timeout=60)  # no /v1, as DeepSeek's docs


def test_prefix_completion_continues_the_assistant_message(sdk: openai.OpenAI, served: tuple[str, Engine]) -> None:
    """DeepSeek's documented example: the reply continues the prefix, exactly as a raw completion
    of the rendered conversation followed by the prefix would."""
    messages = [QUESTION, {"role": "assistant", "content": PREFIX, "prefix": True}]
    chat = sdk.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0, stop=["```"])  # type: ignore[arg-type]
    raw_prompt = served[1].apply_chat_template([QUESTION]) + PREFIX
    assert raw_prompt.endswith("<｜Assistant｜>" + PREFIX)  # noqa: RUF001 -- DeepSeek's fullwidth bars
    raw = sdk.completions.create(model=MODEL, prompt=raw_prompt, max_tokens=8, temperature=0, stop=["```"])
    assert chat.choices[0].message.content == raw.choices[0].text
    assert chat.usage is not None and raw.usage is not None
    assert chat.usage.prompt_tokens == raw.usage.prompt_tokens


def test_prefix_not_on_the_last_assistant_message_is_bad_request(sdk: openai.OpenAI) -> None:
    messages = [{"role": "assistant", "content": PREFIX, "prefix": True}, QUESTION]
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    assert bad.value.body["param"] == "messages[0].prefix"  # type: ignore[index]


def test_sdk_none_parameters_and_developer_role(sdk: openai.OpenAI) -> None:
    """The SDK sends an explicit null for a parameter passed as None; null means the default."""
    messages = [{"role": "developer", "content": "Be brief."}, QUESTION]
    kwargs = {"model": MODEL, "messages": messages, "max_tokens": 6, "seed": 3}
    plain = sdk.chat.completions.create(**kwargs, temperature=0)  # type: ignore[call-overload]
    nulls = sdk.chat.completions.create(
        **kwargs, temperature=0, extra_body={"top_p": None, "n": None, "stop": None, "presence_penalty": None,
                                             "frequency_penalty": None, "user": None, "stream_options": None},
    )  # type: ignore[call-overload]
    assert nulls.choices[0].message.content == plain.choices[0].message.content
    models = sdk.models.retrieve(MODEL)
    assert models.id == MODEL
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("nope")
