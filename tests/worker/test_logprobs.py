"""Logprobs: chat (`logprobs` + `top_logprobs` 0-20) and legacy completions (`logprobs` 0-5), streamed
and not, through the openai SDK and raw HTTP on the tiny model; the numbers are log-softmax of the
model's own logits (checked against a direct forward pass), whatever the sampling temperature."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from feature_server import MODEL
from test_engine_helpers import chat_ids, collect

from deepseek_worker.engine import Engine
from deepseek_worker.types import EngineConfig, SamplingParams

pytestmark = pytest.mark.slow
MESSAGES: Any = [{"role": "user", "content": "Count to five."}]


def test_chat_logprobs_shape_and_greedy_consistency(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0,
                                       logprobs=True, top_logprobs=5)
    choice = r.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    entries = choice.logprobs.content
    eos = 1 if choice.finish_reason == "stop" else 0  # the EOS token has no text and no entry
    assert r.usage is not None and len(entries) == r.usage.completion_tokens - eos
    assert "".join(e.token for e in entries) == choice.message.content
    for e in entries:
        assert e.bytes == list(e.token.encode("utf-8"))
        assert e.logprob <= 0 and len(e.top_logprobs) == 5
        values = [t.logprob for t in e.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert e.top_logprobs[0].token == e.token and math.isclose(e.top_logprobs[0].logprob, e.logprob)  # greedy
        assert sum(math.exp(v) for v in values) <= 1 + 1e-4


def test_top_logprobs_zero_and_twenty(client: openai.OpenAI) -> None:
    zero = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, temperature=0, logprobs=True)
    assert zero.choices[0].logprobs is not None
    assert all(e.top_logprobs == [] for e in zero.choices[0].logprobs.content or [])
    twenty = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, temperature=0,
                                            logprobs=True, top_logprobs=20)
    assert twenty.choices[0].logprobs is not None
    assert all(len(e.top_logprobs) == 20 for e in twenty.choices[0].logprobs.content or [])


def test_streamed_chat_logprobs_equal_json(client: openai.OpenAI) -> None:
    kwargs: Any = {"model": MODEL, "messages": MESSAGES, "max_tokens": 12, "temperature": 0, "logprobs": True,
                   "top_logprobs": 2}
    whole = client.chat.completions.create(**kwargs).choices[0].logprobs
    streamed = []
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        if chunk.choices and chunk.choices[0].logprobs is not None:
            streamed += chunk.choices[0].logprobs.content or []
    assert whole is not None and [e.model_dump() for e in streamed] == [e.model_dump() for e in whole.content or []]


def test_not_requested_means_null(url: str) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 3}
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
    assert r.json()["choices"][0]["logprobs"] is None
    r = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 3}, timeout=30)
    assert r.json()["choices"][0]["logprobs"] is None


@pytest.mark.parametrize(
    ("path", "extra", "param"),
    [
        ("/v1/chat/completions", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ("/v1/chat/completions", {"top_logprobs": 2}, "top_logprobs"),
        ("/v1/chat/completions", {"logprobs": False, "top_logprobs": 2}, "top_logprobs"),
        ("/v1/chat/completions", {"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
        ("/v1/completions", {"logprobs": 6}, "logprobs"),
        ("/v1/completions", {"logprobs": True}, "logprobs"),
    ],
)
def test_out_of_range_is_a_400_naming_the_field(url: str, path: str, extra: dict[str, Any], param: str) -> None:
    body: dict[str, Any] = {"model": MODEL, **extra}
    body.update({"messages": MESSAGES} if "chat" in path else {"prompt": "Hi"})
    r = httpx.post(url + path, json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_completions_legacy_shape_streamed_and_not(client: openai.OpenAI) -> None:
    prompt = "The numbers are"
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset
    assert "".join(lp.tokens) == r.choices[0].text
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert lp.text_offset[0] == len(prompt)  # OpenAI counts from the start of the prompt
    for i, token in enumerate(lp.tokens):
        assert lp.text_offset[i] == len(prompt) + len("".join(lp.tokens[:i]))
        assert 1 <= len(lp.top_logprobs[i]) <= 4 and lp.top_logprobs[i][token] == lp.token_logprobs[i]
        assert max(lp.top_logprobs[i].values()) == lp.token_logprobs[i]  # greedy: the top token was chosen
    tokens, offsets = [], []
    for chunk in client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0, logprobs=3,
                                           stream=True):
        if chunk.choices and chunk.choices[0].logprobs is not None:
            tokens += chunk.choices[0].logprobs.tokens or []
            offsets += chunk.choices[0].logprobs.text_offset or []
    assert tokens == lp.tokens and offsets == lp.text_offset


async def test_logprobs_are_the_models_distribution_at_any_temperature(tiny_model_dir: Path) -> None:
    engine = Engine(EngineConfig(model=str(tiny_model_dir), dtype="float32"))
    await engine.start()
    try:
        ids = chat_ids(engine, "Hello there")
        out = await collect(engine, ids, SamplingParams(max_tokens=1, temperature=0.3, seed=5, logprobs=3), "r")
        entry = next(e for c in out.chunks for e in c.logprobs)
        assert engine.loaded is not None
        with torch.inference_mode():
            logits = engine.loaded.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        expected = torch.log_softmax(logits, dim=-1)
        top = expected.topk(3)
        assert [t.logprob for t in entry.top] == pytest.approx(top.values.tolist(), abs=1e-4)
        tok = engine.loaded.tokenizer
        assert [t.token for t in entry.top] == [tok.decode([i]) for i in top.indices.tolist()]
    finally:
        await engine.stop()
