"""Property test: arbitrary strings (lone surrogates included), numbers and shapes thrown at every
field of chat and text completion requests never get a 5xx and always get an answer (issue 19).

The body is sent as the JSON text a client could send (`json.dumps`: surrogates as `\\ud800`
escapes, NaN/Infinity as Python writes them); the in-process ASGI transport re-raises anything the
app lets escape, so a reset connection fails the test as surely as a 500.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from fakes import FakeEngine, make_app, sse_events
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"

# Every code point, lone surrogates included (hypothesis leaves category Cs out by default).
ANY_CHAR = st.characters(codec=None, exclude_categories=())
TEXT = st.text(ANY_CHAR, max_size=12) | st.sampled_from(["a\ud800b", "\udfff", "\ud83d", "stop", "", " "])
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([5e-324, 1e-300, 2.0, 1.0, 0.0, -0.0])
SCALARS = TEXT | FLOATS | st.integers(-(2**70), 2**70) | st.booleans() | st.none()
VALUES = SCALARS | st.lists(SCALARS, max_size=3) | st.dictionaries(TEXT, SCALARS, max_size=2)

SHARED = ["model", "max_tokens", "temperature", "top_p", "stop", "stop.0", "seed", "stream",
          "stream_options.include_usage", "user", "n", "frequency_penalty", "presence_penalty", "logit_bias",
          "logit_bias.KEY", "extra"]
CHAT_FIELDS = [*SHARED, "messages", "messages.0", "messages.0.role", "messages.0.content", "messages.0.name",
               "messages.0.content.0.text", "messages.1.prefix", "messages.1.content", "max_completion_tokens",
               "logprobs", "top_logprobs", "tools.0.function.name", "tools.0.function.parameters.properties.KEY",
               "tool_choice", "response_format", "response_format.json_schema.schema.properties.KEY",
               "thinking.type", "metadata.KEY", "service_tier"]
COMPLETION_FIELDS = [*SHARED, "prompt", "prompt.0", "logprobs", "echo", "suffix", "best_of"]


def chat_body() -> dict[str, Any]:
    return {
        "model": "fake", "max_tokens": 4, "stop": ["zz"],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                     {"role": "assistant", "content": "ok"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "properties": {}}}},
        "thinking": {"type": "enabled"},
    }


def completion_body() -> dict[str, Any]:
    return {"model": "fake", "max_tokens": 4, "prompt": ["hi"], "stop": ["zz"]}


def put(body: dict[str, Any], path: str, key: str, value: Any) -> None:
    """Set `value` at a dotted path ("messages.0.content"), making missing objects on the way; KEY is
    replaced by the generated `key`."""
    *parents, last = [key if p == "KEY" else p for p in path.split(".")]
    node: Any = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


app, engine = make_app(FakeEngine(max_model_len=128), max_new_tokens=32, max_concurrent_requests=4)


async def post(body: dict[str, Any], path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker") as client:
        data = json.dumps(body)  # ensure_ascii: a lone surrogate travels as its valid JSON escape
        return await client.post(path, content=data, headers={"content-type": "application/json"})


@settings(max_examples=300, deadline=2000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    completions=st.booleans(),
    data=st.data(),
    key=TEXT,
    value=VALUES,
    stream=st.booleans(),
)
def test_no_field_value_gets_a_5xx_or_no_answer(
    completions: bool, data: st.DataObject, key: str, value: Any, stream: bool
) -> None:
    path, body = (COMPLETIONS, completion_body()) if completions else (CHAT, chat_body())
    body["stream"] = stream
    put(body, data.draw(st.sampled_from(COMPLETION_FIELDS if completions else CHAT_FIELDS), label="field"), key, value)
    r = asyncio.run(post(body, path))
    event(f"status {r.status_code}")
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        error = r.json()["error"]
        assert error["code"] == r.status_code and error["message"], error
    elif r.headers["content-type"].startswith("text/event-stream"):  # the drawn field may be `stream`
        events = sse_events(r.text)
        assert events[-1] == "[DONE]", r.text
        assert not [e for e in events if isinstance(e, dict) and "error" in e], r.text
    else:
        assert r.json()["choices"], r.text
    assert not engine.active  # nothing left generating
