"""Spill-over against a second local worker playing the hosted API (issue 22): our worker on the tiny
model, with an API key of its own and the served name `deepseek-chat`, speaks DeepSeek's API. Through
the gateway, a cold start and an overload each go there (a real completion, streams included), under
the hosted account's key; a key without permission never does (its request count on the worker stays
put). test_gateway_fallback.py checks the rules in detail against a stub."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from fakes import serve_tiny, wait_until
from gateway_fakes import AUTH, KEY, StubBackend, dead_port, gateway, serve
from test_gateway_fallback import HOSTED_KEY, OTHER, config

HOSTED_MODEL = "deepseek-chat"  # config()'s fallback.model


@pytest.fixture(scope="module")
def hosted(tiny_model_dir: Path) -> Iterator[str]:
    """The 'hosted API': our worker on the tiny model, its key HOSTED_KEY."""
    with serve_tiny(tiny_model_dir, HOSTED_MODEL, HOSTED_KEY, max_new_tokens=8) as url:
        yield url


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[ExitStack]:
    monkeypatch.setenv("TEST_HOSTED_KEY", HOSTED_KEY)  # config()'s fallback.apiKeyEnv
    with ExitStack() as stack:
        yield stack


def ask(stream: bool = False) -> bytes:
    return json.dumps({"model": "our-local-name", "messages": [{"role": "user", "content": "Hello"}],
                       "max_tokens": 4, "temperature": 0, "stream": stream}).encode()


def post(url: str, body: bytes, key: str = KEY) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", content=body, timeout=60,
                      headers={"content-type": "application/json", "Authorization": f"Bearer {key}"})


def served_by_hosted(hosted_url: str) -> int:
    """Chat requests the hosted worker answered 200 (its own counter)."""
    text = httpx.get(hosted_url + "/metrics", headers={"Authorization": f"Bearer {HOSTED_KEY}"}, timeout=10).text
    found = re.search(r'^deepseek_worker_requests_total\{code="200",route="/v1/chat/completions"\} (\S+)$', text,
                      re.M)
    return int(float(found.group(1))) if found else 0


def test_a_cold_start_goes_to_the_hosted_worker_for_an_allowed_key_only(stack: ExitStack, hosted: str) -> None:
    cold = f"http://127.0.0.1:{stack.enter_context(dead_port())}"
    url, _ = stack.enter_context(gateway(config(hosted, [cold], when=["ColdStart"], maxShare=1.0),
                                         api_keys=f"{KEY},{OTHER}"))
    before = served_by_hosted(hosted)
    out = post(url, ask())
    assert out.status_code == 200 and out.headers["x-served-by"] == "fallback", out.text
    reply = out.json()
    assert reply["object"] == "chat.completion" and reply["model"] == HOSTED_MODEL
    assert reply["usage"]["completion_tokens"] >= 1
    with httpx.stream("POST", url + "/v1/chat/completions", content=ask(stream=True), headers=AUTH,
                      timeout=60) as streamed:
        body = streamed.read()
        assert streamed.status_code == 200 and streamed.headers["x-served-by"] == "fallback", body
    assert body.rstrip().endswith(b"data: [DONE]") and b'"chat.completion.chunk"' in body
    assert served_by_hosted(hosted) == before + 2  # both reached the worker, under the hosted account's key
    resident = post(url, ask(), key=OTHER)
    assert resident.status_code == 504  # held until its deadline: never sent out
    assert served_by_hosted(hosted) == before + 2


def test_an_overload_goes_to_the_hosted_worker(stack: ExitStack, hosted: str) -> None:
    local = StubBackend("local")
    stack.callback(local.release.set)
    local.queue = 20  # beyond overloadThreshold
    local_url = stack.enter_context(serve(local))
    url, app = stack.enter_context(gateway(config(hosted, [local_url], when=["Overloaded"], maxShare=1.0,
                                                  overloadThreshold=8),
                                           api_keys=f"{KEY},{OTHER}"))
    pool = app.state.router.pools["v"]
    wait_until(lambda: pool.overloaded(8), 10, "the local pod's queue polled")
    before = served_by_hosted(hosted)
    out = post(url, ask())
    assert out.status_code == 200 and out.headers["x-served-by"] == "fallback"
    assert out.json()["model"] == HOSTED_MODEL and served_by_hosted(hosted) == before + 1
    stays = post(url, ask(), key=OTHER)
    assert stays.headers["x-served-by"] == "v" and served_by_hosted(hosted) == before + 1
