"""Issue 17's server features against FakeEngine: SSE keep-alive while a stream waits, sampling
defaults from the model, and a wedged engine failing the probes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fakes import FakeEngine, asgi_client, make_app, serve_in_thread, sse_events, wait_until

from deepseek_worker.protocol.chat import ChatCompletionRequest
from deepseek_worker.protocol.completions import CompletionRequest
from deepseek_worker.protocol.params import sampling_params
from deepseek_worker.server import keepalive

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hello there"}]}
COMPLETION = {"model": "fake", "prompt": "hello there"}
KEEPALIVE = ": keep-alive\n\n"
REPLY = "Hello from the fake engine, nice to meet you."


@pytest.fixture
def fast_keepalive(monkeypatch: pytest.MonkeyPatch) -> float:
    """Keep-alive every 50 ms instead of 5 s, so a 0.4 s wait sends several."""
    monkeypatch.setattr(keepalive, "KEEPALIVE_SECONDS", 0.05)
    return 0.05


# --- SSE keep-alive ---------------------------------------------------------------------------


async def test_chat_stream_sends_keepalive_while_waiting_for_the_first_token(fast_keepalive: float) -> None:
    c, eng = asgi_client(FakeEngine(first_delay=0.4))
    async with c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "stream": True})
    body = r.text
    first_content = body.index('"content":"Hello"')
    assert KEEPALIVE in body[:first_content]  # after the role chunk, before any token
    assert KEEPALIVE not in body[first_content:]  # tokens flowing: no keep-alive between them
    evs = sse_events(body)
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in evs[:-1] if e["choices"]) == REPLY
    assert evs[-1] == "[DONE]" and eng.active == set()


async def test_completion_stream_starts_with_keepalive_before_the_first_data_line(fast_keepalive: float) -> None:
    c, _ = asgi_client(FakeEngine(first_delay=0.4))
    async with c:
        r = await c.post("/v1/completions", json={**COMPLETION, "stream": True})
    assert r.text.startswith(KEEPALIVE)
    assert r.text.index(KEEPALIVE) < r.text.index("data: ")
    evs = sse_events(r.text)
    assert "".join(e["choices"][0]["text"] for e in evs[:-1]) == REPLY


async def test_no_keepalive_when_tokens_come_in_time() -> None:
    assert keepalive.KEEPALIVE_SECONDS == 5.0
    c, _ = asgi_client(FakeEngine(first_delay=0.05))
    async with c:
        chat = await c.post("/v1/chat/completions", json={**CHAT, "stream": True})
        text = await c.post("/v1/completions", json={**COMPLETION, "stream": True})
    assert ": keep-alive" not in chat.text and ": keep-alive" not in text.text


async def test_keepalive_then_timeout_is_an_error_event_and_frees_the_slot(fast_keepalive: float) -> None:
    c, eng = asgi_client(FakeEngine(hang_after=0), request_timeout_seconds=0.3)
    async with c:
        r = await c.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert r.text.count(KEEPALIVE) >= 2
    evs = sse_events(r.text)
    assert evs[-1] == "[DONE]" and evs[-2]["error"]["code"] == 504
    assert eng.active == set() and len(eng.closed) == 1


async def test_engine_error_after_keepalive_is_an_error_event(fast_keepalive: float) -> None:
    eng = FakeEngine(first_delay=0.2)
    eng.fail = True
    c, _ = asgi_client(eng)
    async with c:
        r = await c.post("/v1/completions", json={**COMPLETION, "stream": True})
    evs = sse_events(r.text)
    assert evs[-1] == "[DONE]" and evs[-2]["error"]["code"] == 500


@pytest.fixture
def waiting_server(fast_keepalive: float) -> Iterator[tuple[str, FakeEngine]]:
    app, eng = make_app(FakeEngine(first_delay=0.4))
    with serve_in_thread(app) as url:
        yield url, eng


def test_openai_sdk_parses_streams_with_keepalives(waiting_server: tuple[str, FakeEngine]) -> None:
    url, _ = waiting_server
    with httpx.stream("POST", url + "/v1/completions", json={**COMPLETION, "stream": True}, timeout=30) as raw:
        assert raw.read().decode().startswith(KEEPALIVE)  # what the SDK below reads too
    sdk = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)
    chat = sdk.chat.completions.create(model="fake", messages=CHAT["messages"], stream=True)  # type: ignore[call-overload]
    assert "".join(c.choices[0].delta.content or "" for c in chat if c.choices) == REPLY
    text = sdk.completions.create(model="fake", prompt="hello there", stream=True)
    assert "".join(c.choices[0].text for c in text) == REPLY


def test_client_gone_during_keepalives_frees_the_engine_slot(fast_keepalive: float) -> None:
    app, eng = make_app(FakeEngine(hang_after=0))
    with serve_in_thread(app) as url:
        with httpx.stream("POST", url + "/v1/completions", json={**COMPLETION, "stream": True}, timeout=30) as r:
            text = r.iter_text()  # kept: dropping the iterator closes the response
            assert next(text).startswith(":")
            assert next(text).startswith(":")  # still waiting, still in the engine
            assert len(eng.active) == 1
        wait_until(lambda: eng.active == set() and len(eng.closed) == 1, 10, "the slot freed after disconnect")


# --- sampling defaults from the model ---------------------------------------------------------

DEFAULTS = {"temperature": 0.6, "top_p": 0.95, "top_k": 20.0}


def _params(body: dict[str, Any], defaults: dict[str, float] | None) -> tuple[float, float, int]:
    request = ChatCompletionRequest(**{**CHAT, **body})
    p = sampling_params(request, prompt_tokens=3, max_new_tokens=16, max_model_len=64, defaults=defaults)
    return p.temperature, p.top_p, p.top_k


@pytest.mark.parametrize(
    ("body", "defaults", "expected"),
    [
        ({}, DEFAULTS, (0.6, 0.95, 20)),  # unset: the model's
        ({"temperature": None, "top_p": None}, DEFAULTS, (0.6, 0.95, 20)),  # null means unset
        ({"temperature": 0, "top_p": 0.5}, DEFAULTS, (0, 0.5, 20)),  # set: the request's
        ({"temperature": 1.2}, {"top_p": 0.9}, (1.2, 0.9, 0)),  # a partial default fills its field only
        ({}, {}, (1.0, 1.0, 0)),  # no defaults: OpenAI's
        ({}, None, (1.0, 1.0, 0)),
    ],
)
def test_sampling_params_apply_model_defaults_to_unset_fields(
    body: dict[str, Any], defaults: dict[str, float] | None, expected: tuple[float, float, int]
) -> None:
    assert _params(body, defaults) == expected


def test_completion_request_takes_the_defaults_too() -> None:
    request = CompletionRequest(**COMPLETION, top_p=0.3)
    p = sampling_params(request, prompt_tokens=2, max_new_tokens=16, max_model_len=64, defaults=DEFAULTS)
    assert (p.temperature, p.top_p, p.top_k) == (0.6, 0.3, 20)


async def test_routes_pass_the_engines_generation_defaults() -> None:
    c, eng = asgi_client(FakeEngine(generation_defaults=DEFAULTS))
    async with c:
        await c.post("/v1/chat/completions", json=CHAT)
        chat = eng.last_params
        await c.post("/v1/completions", json={**COMPLETION, "temperature": 0})
        text = eng.last_params
    assert chat is not None and (chat.temperature, chat.top_p, chat.top_k) == (0.6, 0.95, 20)
    assert text is not None and (text.temperature, text.top_p, text.top_k) == (0, 0.95, 20)


# --- a wedged engine fails the probes --------------------------------------------------------


async def test_unhealthy_engine_fails_liveness_and_readiness_with_a_reason() -> None:
    c, eng = asgi_client()
    async with c:
        assert (await c.get("/health/live")).status_code == 200
        assert (await c.get("/health/ready")).status_code == 200
        eng.healthy = False
        live = await c.get("/health/live")
        ready = await c.get("/health/ready")
        eng.healthy = True  # the property is read per probe
        again = await c.get("/health/live")
    assert live.status_code == 503 and live.json()["status"] == "unhealthy"
    assert "max_consecutive_step_failures" in live.json()["error"]
    assert ready.status_code == 503 and ready.json()["status"] == "unhealthy"
    assert again.status_code == 200


async def test_load_failure_still_reported_first() -> None:
    app, eng = make_app(FakeEngine())
    app.state.worker.start_error = "OSError: no such model"
    eng.healthy = False
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker") as c:
        live = await c.get("/health/live")
    assert live.status_code == 503 and live.json() == {"status": "failed", "error": "OSError: no such model"}
