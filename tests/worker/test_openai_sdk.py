"""The official openai SDK against a running worker (uvicorn on 127.0.0.1) serving the tiny model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fakes import make_app, serve_in_thread, wait_until

from deepseek_worker.engine import Engine
from deepseek_worker.server import build_app
from deepseek_worker.settings import Settings

pytestmark = pytest.mark.slow
KEY = "sk-test-key"
MODEL = "deepseek-chat"


@pytest.fixture(scope="module")
def base_url(tiny_model_dir: Path) -> Iterator[str]:
    settings = Settings(
        model=str(tiny_model_dir),
        served_model_name=MODEL,
        max_model_len=512,
        max_new_tokens=64,
        api_keys=KEY,
    )
    app = build_app(Engine(settings.engine_config()), settings)
    with serve_in_thread(app) as url:
        wait_until(lambda: httpx.get(url + "/health/ready").status_code == 200, 120, "model load")
        yield url


@pytest.fixture
def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key=KEY, max_retries=0, timeout=60)


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]


def test_chat_json(sdk: openai.OpenAI) -> None:
    r = sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    assert r.object == "chat.completion" and r.model == MODEL
    assert r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str)
    assert r.choices[0].finish_reason in {"stop", "length"}
    assert r.usage is not None and 1 <= r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_greedy_is_deterministic_and_stream_matches_json(sdk: openai.OpenAI) -> None:
    kwargs = {"model": MODEL, "messages": MESSAGES, "max_tokens": 12, "temperature": 0}
    first = sdk.chat.completions.create(**kwargs).choices[0].message.content  # type: ignore[call-overload]
    second = sdk.chat.completions.create(**kwargs).choices[0].message.content  # type: ignore[call-overload]
    stream = sdk.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})  # type: ignore[call-overload]
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert first == second == text
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens >= 1
    assert chunks[-2].choices[0].finish_reason in {"stop", "length"}


def test_completions(sdk: openai.OpenAI) -> None:
    r = sdk.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5, temperature=0)
    assert r.object == "text_completion"
    assert r.usage is not None and r.usage.completion_tokens <= 5
    streamed = sdk.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == r.choices[0].text


def test_models(sdk: openai.OpenAI) -> None:
    assert [m.id for m in sdk.models.list()] == [MODEL]


def test_typed_errors(sdk: openai.OpenAI, base_url: str) -> None:
    bad_key = openai.OpenAI(base_url=base_url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.models.list()
    with pytest.raises(openai.NotFoundError) as not_found:
        sdk.chat.completions.create(model="nope", messages=MESSAGES)  # type: ignore[arg-type]
    assert not_found.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=3)  # type: ignore[arg-type]
    assert bad.value.body["param"] == "temperature"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=100_000)  # type: ignore[arg-type]


def test_rate_limit_error() -> None:
    app, _ = make_app(rate_limit_rpm=1, rate_limit_burst=1)
    with serve_in_thread(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        client.models.list()
        with pytest.raises(openai.RateLimitError) as limited:
            client.models.list()
    assert limited.value.response.headers["retry-after"] == "60"
    assert limited.value.body["retry_after"] == 60  # type: ignore[index]
