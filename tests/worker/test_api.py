"""HTTP layer against FakeEngine, in process: shapes of JSON, SSE, errors, health."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fakes import FakeEngine, asgi_client, make_app, sse_events

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hello there"}]}


client = asgi_client
events = sse_events


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["code"] == status
    assert err["param"] == param
    return dict(err)


async def test_chat_json_shape_and_usage() -> None:
    c, eng = client()
    async with c:
        r = await c.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": eng.reply, "refusal": None}
    assert body["choices"][0]["finish_reason"] == "stop"
    prompt = len(eng.apply_chat_template(CHAT["messages"]).split())
    assert body["usage"]["prompt_tokens"] == prompt
    assert body["usage"]["completion_tokens"] == len(eng.pieces())
    assert body["usage"]["total_tokens"] == prompt + len(eng.pieces())
    assert "reasoning_content" not in body["choices"][0]["message"]


async def test_chat_stream_events_usage_and_done() -> None:
    c, eng = client()
    req = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with c:
        r = await c.post("/v1/chat/completions", json=req)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    evs = events(r.text)
    assert evs[-1] == "[DONE]"
    assert evs[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in evs[:-2])
    assert text == eng.reply
    assert evs[-3]["choices"][0]["finish_reason"] == "stop"
    assert evs[-2]["choices"] == [] and evs[-2]["usage"]["completion_tokens"] == len(eng.pieces())
    assert len({e["id"] for e in evs[:-1]}) == 1


async def test_stream_without_usage_has_no_usage_chunk() -> None:
    c, _ = client()
    async with c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "stream": True})
    evs = events(r.text)
    assert all("usage" not in e for e in evs[:-1])
    assert evs[-2]["choices"][0]["finish_reason"] == "stop"


async def test_reasoning_content_json_and_stream() -> None:
    eng = FakeEngine("<think>Let me think. </think> The answer is 4.")
    c, _ = client(eng)
    async with c:
        r = await c.post("/v1/chat/completions", json=CHAT)
        s = await c.post("/v1/chat/completions", json={**CHAT, "stream": True})
    msg = r.json()["choices"][0]["message"]
    assert msg["reasoning_content"] == "Let me think. "
    assert msg["content"] == "The answer is 4."
    deltas = [e["choices"][0]["delta"] for e in events(s.text)[:-1]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Let me think. "
    assert "".join(d.get("content", "") for d in deltas) == "The answer is 4."


async def test_completions_json_and_stream() -> None:
    c, eng = client()
    async with c:
        r = await c.post("/v1/completions", json={"model": "fake", "prompt": "one two three"})
        s = await c.post(
            "/v1/completions",
            json={"model": "fake", "prompt": ["one two"], "stream": True, "stream_options": {"include_usage": True}},
        )
    body = r.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == eng.reply
    assert body["usage"]["prompt_tokens"] == 3
    evs = events(s.text)
    assert "".join(e["choices"][0]["text"] for e in evs[:-2]) == eng.reply
    assert evs[-2]["usage"]["prompt_tokens"] == 2


async def test_models() -> None:
    c, _ = client(served_model_name="deepseek-chat")
    async with c:
        r = await c.get("/v1/models")
        ok = await c.post("/v1/chat/completions", json={**CHAT, "model": "deepseek-chat"})
        bad = await c.post("/v1/chat/completions", json=CHAT)
    assert r.json()["object"] == "list"
    assert [m["id"] for m in r.json()["data"]] == ["deepseek-chat"]
    assert ok.status_code == 200 and ok.json()["model"] == "deepseek-chat"
    assert assert_error(bad, 404, "model")["type"] == "model_not_found"


async def test_max_tokens_default_cap_and_length() -> None:
    c, eng = client(max_new_tokens=50)
    async with c:
        await c.post("/v1/chat/completions", json=CHAT)
        assert eng.last_params.max_tokens == 50
        r = await c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2})
        too_many = await c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 51})
    assert r.json()["choices"][0]["finish_reason"] == "length"
    assert r.json()["choices"][0]["message"]["content"] == "Hello from"
    assert_error(too_many, 400, "max_tokens")


async def test_default_max_tokens_shrinks_to_fit_context() -> None:
    c, eng = client(FakeEngine(max_model_len=40), max_new_tokens=30)
    messages = [{"role": "user", "content": "w " * 20}]
    async with c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "messages": messages})
    assert r.status_code == 200
    prompt = len(eng.apply_chat_template(messages).split())
    assert eng.last_params.max_tokens == 40 - prompt < 30


async def test_sampling_params_pass_through() -> None:
    c, eng = client()
    async with c:
        await c.post("/v1/chat/completions", json={**CHAT, "temperature": 0, "top_p": 0.5, "seed": 7, "stop": ["x"]})
    p = eng.last_params
    assert (p.temperature, p.top_p, p.seed, p.stop) == (0, 0.5, 7, ("x",))


async def test_stop_string_ends_output() -> None:
    c, _ = client()
    async with c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "stop": "engine"})
    assert r.json()["choices"][0]["message"]["content"] == "Hello from the fake "
    assert r.json()["choices"][0]["finish_reason"] == "stop"


async def test_engine_error_is_500_with_shape_and_stream_error_event() -> None:
    c, _ = client(FakeEngine(fail=True))
    async with c:
        r = await c.post("/v1/chat/completions", json=CHAT)
        s = await c.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert_error(r, 500)
    evs = events(s.text)
    assert evs[-1] == "[DONE]" and evs[-2]["error"]["code"] == 500


async def test_request_timeout_is_504_and_frees_slot() -> None:
    c, eng = client(FakeEngine(hang_after=1), request_timeout_seconds=0.2)
    async with c:
        r = await c.post("/v1/chat/completions", json=CHAT)
        s = await c.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert_error(r, 504)
    assert events(s.text)[-2]["error"]["code"] == 504
    assert eng.active == set() and len(eng.closed) == 2


async def test_not_ready_is_503_and_health() -> None:
    c, _ = client(FakeEngine(ready=False))
    async with c:
        r = await c.post("/v1/chat/completions", json=CHAT)
        ready = await c.get("/health/ready")
        live = await c.get("/health/live")
    assert_error(r, 503)
    assert r.headers["retry-after"] == "5"
    assert ready.status_code == 503 and live.status_code == 200


async def test_ready_when_engine_ready() -> None:
    c, _ = client()
    async with c:
        assert (await c.get("/health/ready")).status_code == 200


async def test_unknown_route_and_method_use_error_shape() -> None:
    c, _ = client()
    async with c:
        assert_error(await c.get("/v1/nope"), 404)
        assert_error(await c.get("/v1/chat/completions"), 405)


async def test_lifespan_starts_and_stops_engine() -> None:
    app, eng = make_app(FakeEngine(ready=False))
    async with app.router.lifespan_context(app):
        for _ in range(500):  # deadline: 5 s
            if eng.ready:
                break
            await asyncio.sleep(0.01)
        assert eng.started and eng.ready
    assert eng.stopped


@pytest.mark.parametrize("content", ["parts", [{"type": "text", "text": "pa"}, {"type": "text", "text": "rts"}]])
async def test_content_string_or_text_parts(content: Any) -> None:
    c, eng = client()
    async with c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 200
    assert r.json()["usage"]["prompt_tokens"] == len(
        eng.apply_chat_template([{"role": "user", "content": "parts"}]).split()
    )


async def test_all_roles_accepted() -> None:
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
        {"role": "tool", "content": "result", "tool_call_id": "t1"},
        {"role": "user", "content": "q2"},
    ]
    c, _ = client()
    async with c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "messages": msgs})
    assert r.status_code == 200
