"""Bad input matrix: every case is a 4xx with the one error shape and the right `param`."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fakes import FakeEngine, make_app, sse_events

USER = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "fake", "messages": USER, **fields}


# (id, path, json body, expected status, expected param)
CASES: list[tuple[str, str, Any, int, str | None]] = [
    ("bad-role", CHAT, chat(messages=[{"role": "wizard", "content": "x"}]), 400, "messages[0].role"),
    ("missing-role", CHAT, chat(messages=[{"content": "x"}]), 400, "messages[0].role"),
    ("empty-messages", CHAT, chat(messages=[]), 400, "messages"),
    ("messages-not-list", CHAT, chat(messages="hi"), 400, "messages"),
    ("missing-messages", CHAT, {"model": "fake"}, 400, "messages"),
    ("user-content-null", CHAT, chat(messages=[{"role": "user", "content": None}]), 400, "messages[0]"),
    ("content-number", CHAT, chat(messages=[{"role": "user", "content": 5}]), 400, "messages[0].content"),
    (
        "image-part",
        CHAT,
        chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
        400,
        "messages[0].content",
    ),
    ("missing-model", CHAT, {"messages": USER}, 400, "model"),
    ("model-not-string", CHAT, chat(model=3), 400, "model"),
    ("unknown-model", CHAT, chat(model="gpt-9"), 404, "model"),
    ("temperature-high", CHAT, chat(temperature=2.5), 400, "temperature"),
    ("temperature-negative", CHAT, chat(temperature=-0.1), 400, "temperature"),
    ("temperature-string", CHAT, chat(temperature="hot"), 400, "temperature"),
    ("top-p-zero", CHAT, chat(top_p=0), 400, "top_p"),
    ("top-p-high", CHAT, chat(top_p=1.5), 400, "top_p"),
    ("max-tokens-zero", CHAT, chat(max_tokens=0), 400, "max_tokens"),
    ("max-tokens-float", CHAT, chat(max_tokens=1.5), 400, "max_tokens"),
    ("max-tokens-over-cap", CHAT, chat(max_tokens=10_000), 400, "max_tokens"),
    ("max-tokens-over-context", CHAT, chat(max_tokens=63), 400, "max_tokens"),
    ("prompt-over-context", CHAT, chat(messages=[{"role": "user", "content": "w " * 300}]), 400, "messages"),
    ("completion-prompt-over-context", COMPLETIONS, {"model": "fake", "prompt": "w " * 300}, 400, "prompt"),
    ("stop-too-many", CHAT, chat(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    ("stop-empty", CHAT, chat(stop=""), 400, "stop"),
    ("stop-wrong-type", CHAT, chat(stop=5), 400, "stop"),
    ("n-two", CHAT, chat(n=2), 400, "n"),
    ("top-logprobs-without-logprobs", CHAT, chat(top_logprobs=3), 400, "top_logprobs"),
    ("top-logprobs-over-20", CHAT, chat(logprobs=True, top_logprobs=21), 400, "top_logprobs"),
    ("logprobs-not-bool", CHAT, chat(logprobs="sometimes"), 400, "logprobs"),
    ("completion-logprobs-over-5", COMPLETIONS, {"model": "fake", "prompt": "a", "logprobs": 6}, 400, "logprobs"),
    ("tools-missing-name", CHAT, chat(tools=[{"type": "function", "function": {}}]), 400, "tools[0].function.name"),
    ("tools-parameters-not-object", CHAT, chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]), 400, "tools[0].function.parameters"),  # noqa: E501
    ("tool-choice-unknown", CHAT, chat(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice={"type": "function", "function": {"name": "g"}}), 400, "tool_choice"),  # noqa: E501
    ("response-format-unsupported", CHAT, chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "not": {}}}}), 400, "response_format"),  # noqa: E501
    ("presence-penalty", CHAT, chat(presence_penalty=1.0), 400, "presence_penalty"),
    ("unknown-parameter", CHAT, chat(frobnicate=True), 400, "frobnicate"),
    ("stream-not-bool", CHAT, chat(stream="yes please"), 400, "stream"),
    ("stream-options-unknown", CHAT, chat(stream=True, stream_options={"x": 1}), 400, "stream_options.x"),
    ("seed-string", CHAT, chat(seed="abc"), 400, "seed"),
    ("body-array", CHAT, [1, 2], 400, None),
    ("body-string", CHAT, "hello", 400, None),
    ("completion-missing-prompt", COMPLETIONS, {"model": "fake"}, 400, "prompt"),
    ("completion-two-prompts", COMPLETIONS, {"model": "fake", "prompt": ["a", "b"]}, 400, "prompt"),
    ("completion-echo", COMPLETIONS, {"model": "fake", "prompt": "a", "echo": True}, 400, "echo"),
]


@pytest.fixture
async def client() -> Any:
    app, _ = make_app(FakeEngine(max_model_len=64), max_new_tokens=32, max_body_bytes=4096)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker") as c:
        yield c


def check(r: httpx.Response, status: int, param: str | None) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["code"] == status and err["param"] == param, err
    assert err["message"]


@pytest.mark.parametrize(("path", "body", "status", "param"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_json_bodies(client: httpx.AsyncClient, path: str, body: Any, status: int, param: str | None) -> None:
    check(await client.post(path, json=body), status, param)


@pytest.mark.parametrize(
    ("content", "ctype"),
    [(b"{not json", "application/json"), (b"", "application/json"), (b"model=fake", "text/plain"), (b"\xff\xfe", "")],
    ids=["broken-json", "empty-body", "text-plain", "binary-no-type"],
)
async def test_non_json_bodies(client: httpx.AsyncClient, content: bytes, ctype: str) -> None:
    headers = {"content-type": ctype} if ctype else {}
    check(await client.post(CHAT, content=content, headers=headers), 400, None)


async def test_a_json_body_without_a_content_type_is_served_and_a_form_one_is_named(client: httpx.AsyncClient) -> None:
    """No Content-Type at all: read as JSON (a client or our gateway relaying one may omit it). A form or
    text Content-Type: a 400 that says what to send, not a pydantic message about dictionaries."""
    served = await client.post(CHAT, content=json.dumps(chat()).encode())  # httpx sends no Content-Type
    assert served.status_code == 200, served.text
    form = await client.post(CHAT, content=json.dumps(chat()).encode(),
                             headers={"content-type": "application/x-www-form-urlencoded"})
    check(form, 400, None)
    assert "Content-Type: application/json" in form.json()["error"]["message"]


async def test_huge_body_is_413(client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json=chat(messages=[{"role": "user", "content": "x" * 10_000}]))
    check(r, 413, None)


async def test_huge_chunked_body_is_413(client: httpx.AsyncClient) -> None:
    async def body() -> Any:  # no Content-Length: the cap is enforced while reading
        for _ in range(10):
            yield b" " * 1000

    check(await client.post(CHAT, content=body(), headers={"content-type": "application/json"}), 413, None)


def raw_post(path: str, body: Any) -> dict[str, Any]:
    """httpx's `json=` cannot encode a lone surrogate; the JSON escape (`"\\ud800"`) is valid JSON."""
    return {"url": path, "content": json.dumps(body), "headers": {"content-type": "application/json"}}


# A lone UTF-16 surrogate anywhere: before the fix, content gave 500 (the tokenizer raised; FakeEngine's
# does too) and stop or a prompt reset the connection on the real engine.
SURROGATES: list[tuple[str, str, Any, str]] = [
    ("content", CHAT, chat(messages=[{"role": "user", "content": "a\ud800b"}]), "messages[0].content"),
    ("content-part", CHAT, chat(messages=[{"role": "user", "content": [{"type": "text", "text": "\udc00"}]}]),
     "messages[0].content[0].text"),
    ("stop", CHAT, chat(stop="a\ud800"), "stop"),
    ("stop-list-stream", CHAT, chat(stop=["x", "\ud800"], stream=True), "stop[1]"),
    ("name", CHAT, chat(messages=[{"role": "user", "content": "hi", "name": "\udfff"}]), "messages[0].name"),
    ("user", CHAT, chat(user="\ud800"), "user"),
    ("tool-schema-key", CHAT, chat(tools=[{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {"\ud800": {"type": "string"}}}}}]),
     "tools[0].function.parameters.properties"),
    ("prompt", COMPLETIONS, {"model": "fake", "prompt": "a\ud800b"}, "prompt"),
    ("prompt-list-stream", COMPLETIONS, {"model": "fake", "prompt": ["\udc00"], "stream": True}, "prompt[0]"),
]


@pytest.mark.parametrize(("path", "body", "param"), [c[1:] for c in SURROGATES], ids=[c[0] for c in SURROGATES])
async def test_lone_surrogate_is_400_naming_the_parameter(path: str, body: Any, param: str) -> None:
    app, _ = make_app(FakeEngine(max_model_len=64), max_new_tokens=32)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker") as c:
        check(await c.request("POST", **raw_post(path, body)), 400, param)


@pytest.mark.slow
@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_real_tokenizer_lone_surrogate_and_tiny_floats(url: str, path: str) -> None:
    """On the tiny model: a surrogate is a 400 before the tokenizer sees it; the smallest positive
    temperature and top_p (in range) are served (the sampler once made NaN of them)."""
    base: dict[str, Any] = {"model": "deepseek-chat", "max_tokens": 3}
    base |= {"messages": [{"role": "user", "content": "hi"}]} if path == CHAT else {"prompt": "hi"}
    field = "messages" if path == CHAT else "prompt"
    bad = base | ({field: [{"role": "user", "content": "a\ud800b"}]} if path == CHAT else {field: "a\ud800b"})
    r = httpx.request("POST", **raw_post(url + path, bad), timeout=60)
    check(r, 400, "messages[0].content" if path == CHAT else "prompt")
    for floats in ({"temperature": 5e-324}, {"top_p": 1e-300}, {"temperature": 5e-324, "top_p": 5e-324}):
        for stream in (False, True):
            r = httpx.request("POST", **raw_post(url + path, base | floats | {"stream": stream}), timeout=60)
            assert r.status_code == 200, (floats, r.text)
            events = sse_events(r.text) if stream else [r.json()]
            assert events[-1] == "[DONE]" if stream else events[0]["choices"], r.text
            assert not [e for e in events if isinstance(e, dict) and "error" in e], r.text
