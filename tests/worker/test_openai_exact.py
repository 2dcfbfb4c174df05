"""OpenAI/DeepSeek wire details real clients depend on (HTTP layer against FakeEngine, in process).

Each test pins one detail: null fields OpenAI's schema requires, `usage: null` on stream chunks,
explicit nulls meaning "default", the developer role, routes without /v1, model retrieval, the
400s that name their field (empty prompt, stream_options without stream, seed range, prefix,
thinking), DeepSeek's chat prefix completion, thinking on/off and reasoning token counts.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fakes import FakeEngine, asgi_client, sse_events

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hello there"}]}
THOUGHT = "<think>Let me think. </think> The answer is 4."  # pieces: 4 inside the thought, 4 after


class RecordingEngine(FakeEngine):
    """FakeEngine that remembers what the HTTP layer rendered and tokenized."""

    def __init__(self, *args: Any, template_suffix: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.template_suffix = template_suffix
        self.rendered: list[list[dict[str, Any]]] = []
        self.prompts: list[str] = []

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        self.rendered.append(messages)
        return super().apply_chat_template(messages) + self.template_suffix

    def tokenize(self, text: str) -> list[int]:
        self.prompts.append(text)
        return super().tokenize(text)


client = asgi_client
events = sse_events


def error(r: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and err["param"] == param, err
    assert err["message"]
    return dict(err)


# --- 1. fields OpenAI's schema requires, present as null ---------------------------------------


async def test_chat_json_carries_null_logprobs_and_refusal() -> None:
    c, _ = client()
    async with c:
        body = (await c.post("/v1/chat/completions", json=CHAT)).json()
    choice = body["choices"][0]
    assert "logprobs" in choice and choice["logprobs"] is None
    assert "refusal" in choice["message"] and choice["message"]["refusal"] is None
    assert "reasoning_content" not in choice["message"]  # absent without a thought (DeepSeek)
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_stream_chunks_carry_usage_null_with_include_usage(path: str) -> None:
    base = CHAT if "chat" in path else {"model": "fake", "prompt": "one two"}
    c, _ = client()
    async with c:
        on = await c.post(path, json={**base, "stream": True, "stream_options": {"include_usage": True}})
        off = await c.post(path, json={**base, "stream": True})
    chunks = events(on.text)[:-1]
    assert all("usage" in e and e["usage"] is None for e in chunks[:-1]), chunks
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert all("usage" not in e for e in events(off.text)[:-1])


# --- 2. empty prompt: a 400 naming prompt, before any stream -----------------------------------


@pytest.mark.parametrize("prompt", ["", [""], "   "], ids=["empty", "empty-in-list", "no-tokens"])
@pytest.mark.parametrize("stream", [False, True])
async def test_empty_prompt_is_400_naming_prompt(prompt: Any, stream: bool) -> None:
    c, eng = client()
    async with c:
        r = await c.post("/v1/completions", json={"model": "fake", "prompt": prompt, "stream": stream})
        scrape = (await c.get("/metrics")).text
    error(r, 400, "prompt")
    assert not r.headers["content-type"].startswith("text/event-stream")
    assert eng.lookups == 0  # the engine never saw it
    assert 'deepseek_worker_requests_total{code="400",route="/v1/completions"} 1.0' in scrape
    assert 'code="5' not in scrape


# --- 3. explicit null means "default" -----------------------------------------------------------

CHAT_NULLS = [
    "temperature", "top_p", "n", "presence_penalty", "frequency_penalty", "max_tokens", "max_completion_tokens",
    "stop", "seed", "stream", "stream_options", "user", "logprobs", "top_logprobs", "response_format",
    "logit_bias", "tools", "tool_choice", "parallel_tool_calls", "metadata", "store", "service_tier",
    "modalities", "audio", "prediction", "reasoning_effort", "verbosity", "web_search_options",
    "safety_identifier", "prompt_cache_key", "prompt_cache_retention", "thinking",
]
COMPLETION_NULLS = [
    "temperature", "top_p", "n", "presence_penalty", "frequency_penalty", "max_tokens", "stop", "seed", "stream",
    "stream_options", "user", "logprobs", "best_of", "echo", "suffix", "logit_bias",
]


async def test_explicit_null_for_every_nullable_parameter_means_default() -> None:
    c, eng = client()
    async with c:
        await c.post("/v1/chat/completions", json=CHAT)
        default = eng.last_params
        chat = await c.post("/v1/chat/completions", json={**CHAT, **dict.fromkeys(CHAT_NULLS)})
        assert chat.status_code == 200, chat.text
        assert eng.last_params == default
        body = {"model": "fake", "prompt": "one two"}
        await c.post("/v1/completions", json=body)
        default = eng.last_params
        text = await c.post("/v1/completions", json={**body, **dict.fromkeys(COMPLETION_NULLS)})
        assert text.status_code == 200, text.text
        assert eng.last_params == default
        nested = {"include_usage": None, "include_obfuscation": None}
        streamed = await c.post("/v1/chat/completions", json={**CHAT, "stream": True, "stream_options": nested})
    assert streamed.status_code == 200
    assert all("usage" not in e for e in events(streamed.text)[:-1])


# --- 4. developer role, include_obfuscation ------------------------------------------------------


async def test_developer_role_renders_as_system() -> None:
    c, eng = client(RecordingEngine())
    messages = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    async with c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "messages": messages})
    assert r.status_code == 200, r.text
    assert [m["role"] for m in eng.rendered[-1]] == ["system", "user"]


async def test_include_obfuscation_is_accepted_and_adds_nothing() -> None:
    c, _ = client()
    async with c:
        r = await c.post(
            "/v1/chat/completions",
            json={**CHAT, "stream": True, "stream_options": {"include_usage": True, "include_obfuscation": True}},
        )
    assert r.status_code == 200
    assert all("obfuscation" not in e for e in events(r.text)[:-1])


# --- 5/6. routes without /v1, model retrieval -----------------------------------------------------


async def test_unprefixed_routes_answer_like_v1() -> None:
    c, eng = client(served_model_name="deepseek-chat")
    body = {**CHAT, "model": "deepseek-chat"}
    async with c:
        for path in ("/chat/completions", "/v1/chat/completions"):
            r = await c.post(path, json=body)
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == eng.reply
        text = await c.post("/completions", json={"model": "deepseek-chat", "prompt": "a b"})
        listed = await c.get("/models")
        v1_listed = await c.get("/v1/models")
        one = await c.get("/models/deepseek-chat")
        missing = await c.get("/models/nope")
        bad = await c.post("/chat/completions", json={**body, "temperature": 9})
        scrape = (await c.get("/metrics")).text
    assert text.json()["choices"][0]["text"] == eng.reply
    assert listed.json() == v1_listed.json()
    assert one.json()["id"] == "deepseek-chat"
    error(missing, 404, "model")
    error(bad, 400, "temperature")
    for route in ("/chat/completions", "/completions", "/models", "/models/{id}"):
        assert f'route="{route}"' in scrape, route


async def test_unprefixed_routes_have_the_same_auth_limits_and_readiness() -> None:
    c, _ = client(api_keys="sk-1", rate_limit_rpm=60, rate_limit_burst=2)
    key = {"authorization": "Bearer sk-1"}
    async with c:
        error(await c.post("/chat/completions", json=CHAT), 401, None)
        error(await c.get("/models"), 401, None)
        assert (await c.get("/models", headers=key)).status_code == 200
        assert (await c.get("/v1/models", headers=key)).status_code == 200
        limited = await c.post("/completions", json={"model": "fake", "prompt": "a"}, headers=key)
    assert error(limited, 429, None)["retry_after"] >= 1  # one bucket for both spellings
    loading, _ = client(FakeEngine(ready=False))
    async with loading:
        r = await loading.post("/chat/completions", json=CHAT)
    error(r, 503, None)


async def test_model_retrieve_and_unknown_model_404() -> None:
    c, _ = client(served_model_name="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    async with c:
        ok = await c.get("/v1/models/deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
        missing = await c.get("/v1/models/gpt-9")
    assert ok.status_code == 200
    card = ok.json()
    assert (card["id"], card["object"], card["owned_by"]) == ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "model",
                                                               "deepseek-worker")
    err = error(missing, 404, "model")
    assert err["type"] == "model_not_found" and "gpt-9" in err["message"]


# --- 7. stream_options without stream, seed range ----------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("stream", [False, None], ids=["false", "null"])
async def test_stream_options_without_stream_is_400(path: str, stream: bool | None) -> None:
    base = CHAT if "chat" in path else {"model": "fake", "prompt": "a"}
    c, _ = client()
    async with c:
        r = await c.post(path, json={**base, "stream": stream, "stream_options": {"include_usage": True}})
    error(r, 400, "stream_options")


@pytest.mark.parametrize(("seed", "status"), [(2**63 - 1, 200), (-(2**63), 200), (2**63, 400), (-(2**63) - 1, 400),
                                              (2**64 - 1, 400)])
async def test_seed_is_a_signed_64_bit_integer(seed: int, status: int) -> None:
    c, _ = client()
    async with c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "seed": seed})
    if status == 200:
        assert r.status_code == 200, r.text
    else:
        error(r, 400, "seed")


# --- 8. DeepSeek chat prefix completion --------------------------------------------------------------


async def test_prefix_continues_the_last_assistant_message() -> None:
    c, eng = client(RecordingEngine())
    messages = [
        {"role": "user", "content": "Write code"},
        {"role": "assistant", "content": "```python\n", "prefix": True},
    ]
    async with c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "messages": messages})
    assert r.status_code == 200, r.text
    assert eng.rendered[-1] == [{"role": "user", "content": "Write code"}]  # the prefix turn is not closed
    plain = FakeEngine().apply_chat_template([{"role": "user", "content": "Write code"}])
    assert eng.prompts[-1] == plain + "```python\n"
    assert r.json()["choices"][0]["message"]["content"] == eng.reply  # the continuation only


async def test_prefix_closes_a_thought_the_template_opened() -> None:
    c, eng = client(RecordingEngine(THOUGHT, template_suffix="<think>\n"))
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "Sure:", "prefix": True}]
    async with c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "messages": messages})
    assert eng.prompts[-1].endswith("<think>\n\n</think>\n\nSure:")
    message = r.json()["choices"][0]["message"]
    assert message["content"] == THOUGHT and "reasoning_content" not in message  # continued as content


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "assistant", "content": "a", "prefix": True}, {"role": "user", "content": "q"}],
         "messages[0].prefix"),
        ([{"role": "user", "content": "q", "prefix": True}], "messages[0].prefix"),
        ([{"role": "system", "content": "s"}, {"role": "user", "content": "q", "prefix": True}], "messages[1].prefix"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "prefix": "maybe"}],
         "messages[1].prefix"),
    ],
    ids=["not-last", "user", "last-user", "not-bool"],
)
async def test_prefix_anywhere_else_is_400(messages: list[dict[str, Any]], param: str) -> None:
    c, eng = client()
    async with c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "messages": messages})
    error(r, 400, param)
    assert eng.lookups == 0


# --- 9. reasoning tokens, thinking on/off ------------------------------------------------------------


async def test_reasoning_tokens_counted_json_and_stream() -> None:
    c, eng = client(FakeEngine(THOUGHT))
    async with c:
        r = await c.post("/v1/chat/completions", json=CHAT)
        s = await c.post(
            "/v1/chat/completions", json={**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        )
    usage = r.json()["usage"]
    assert usage["completion_tokens"] == len(eng.pieces()) == 8
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 4
    assert events(s.text)[-2]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 4


async def test_thinking_disabled_keeps_output_as_content_and_closes_the_thought() -> None:
    c, eng = client(RecordingEngine(THOUGHT, template_suffix="<think>\n"))
    async with c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "thinking": {"type": "disabled"}})
        s = await c.post("/v1/chat/completions", json={**CHAT, "thinking": {"type": "disabled"}, "stream": True})
    assert eng.prompts[-1].endswith("<think>\n\n</think>\n\n")
    message = r.json()["choices"][0]["message"]
    assert message["content"] == THOUGHT and "reasoning_content" not in message
    assert r.json()["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    deltas = [e["choices"][0]["delta"] for e in events(s.text)[:-1]]
    assert "".join(d.get("content", "") for d in deltas) == THOUGHT
    assert not any("reasoning_content" in d for d in deltas)


async def test_thinking_enabled_opens_a_thought() -> None:
    c, eng = client(RecordingEngine())
    async with c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "thinking": {"type": "enabled"}})
        default = await c.post("/v1/chat/completions", json=CHAT)
    assert eng.prompts[-2].endswith("<|assistant|><think>\n")
    assert eng.prompts[-1].endswith("<|assistant|>")
    message = r.json()["choices"][0]["message"]
    assert message["reasoning_content"] == eng.reply and message["content"] == ""
    usage = r.json()["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == usage["completion_tokens"] == len(eng.pieces())
    assert default.json()["choices"][0]["message"]["content"] == eng.reply


@pytest.mark.parametrize(
    ("thinking", "param"),
    [({"type": "auto"}, "thinking.type"), ({}, "thinking.type"), ({"type": "enabled", "budget_tokens": 9},
                                                                   "thinking.budget_tokens"), ("on", "thinking")],
    ids=["bad-type", "missing-type", "unknown-key", "not-object"],
)
async def test_bad_thinking_is_400(thinking: Any, param: str) -> None:
    c, _ = client()
    async with c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "thinking": thinking})
    error(r, 400, param)


# --- the per-token serialisation shortcut and the reasoning token count, as units ---------------


@pytest.mark.parametrize("text", ["plain", 'quo"te\\', "line\nbreak\t", "ünïcödé 你好 🚀", "\u2028\x00\x1f", ""])
def test_text_events_are_byte_identical_to_full_serialisation(text: str) -> None:
    from deepseek_worker.protocol.chat import chat_chunk
    from deepseek_worker.server.streaming import _MARKER, TextEvents, sse

    for usage in (False, True):
        fast = TextEvents(chat_chunk("id-1", 7, "m", {"content": _MARKER}, include_usage=usage))
        assert fast(text) == sse(chat_chunk("id-1", 7, "m", {"content": text}, include_usage=usage))


@pytest.mark.parametrize(
    ("chunks", "in_reasoning", "expected"),
    [
        ([" ", " <thi", "nk>a", "b</th", "ink>", " c"], False, 5),  # whitespace and split tags count once decided
        (["hello", "<think>x</think>"], False, 0),  # a tag inside content is content
        (["a", "b</think>", "c"], True, 2),  # the template opened the thought
        (["<think>a</think>b"], False, 1),  # opened and closed in one chunk
    ],
)
def test_reasoning_parser_counts_thought_tokens(chunks: list[str], in_reasoning: bool, expected: int) -> None:
    from deepseek_worker.protocol.reasoning import ReasoningParser

    parser = ReasoningParser(in_reasoning)
    for chunk in chunks:
        parser.feed(chunk, 1)
    parser.flush()
    assert parser.reasoning_tokens == expected
