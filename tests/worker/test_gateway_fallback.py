"""Spill-over to a hosted API (gateway/fallback.py): a stub plays the hosted DeepSeek API. ColdStart,
Overloaded and Unavailable each route there when `when` allows, marked `x-served-by: fallback`; a key
without permission never does; the share sent out stays within maxShare."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import CHUNKS
from fakes import wait_until
from gateway_fakes import AUTH, KEY, StubBackend, chat, dead_port, gateway, reply, serve

from deepseek_worker.gateway.fallback import ShareWindow

OTHER = "sk-gateway-resident-9876543210"  # a key whose requests must stay in the cluster
HOSTED_KEY = "sk-hosted-account-key"


def key_id(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[ExitStack]:
    monkeypatch.setenv("TEST_HOSTED_KEY", HOSTED_KEY)
    with ExitStack() as stack:
        yield stack


def config(hosted_url: str, backends: list[str], **fallback: Any) -> dict[str, Any]:
    return {"variants": [{"name": "v", "weight": 100, "backends": backends}],
            "hold": {"deadlineSeconds": 0.5},
            "fallback": {"baseURL": hosted_url, "model": "deepseek-chat", "apiKeyEnv": "TEST_HOSTED_KEY",
                         "allowExternal": [key_id(KEY)], **fallback}}


def post(url: str, body: bytes, key: str = KEY) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", content=body, timeout=30,
                      headers={"content-type": "application/json", "Authorization": f"Bearer {key}"})


def start(stack: ExitStack, name: str) -> tuple[StubBackend, str]:
    backend = StubBackend(name)
    stack.callback(backend.release.set)
    return backend, stack.enter_context(serve(backend))


def test_cold_start_goes_out_for_an_allowed_key_only(stack: ExitStack) -> None:
    hosted, hosted_url = start(stack, "hosted")
    cold = f"http://127.0.0.1:{stack.enter_context(dead_port())}"
    url, _ = stack.enter_context(gateway(config(hosted_url, [cold], when=["ColdStart"], maxShare=1.0),
                                         api_keys=f"{KEY},{OTHER}"))
    out = post(url, chat(model="our-local-name"))
    assert out.status_code == 200 and out.content == reply("hosted")
    assert out.headers["x-served-by"] == "fallback"
    headers, body = hosted.requests[-1]
    assert headers["authorization"] == f"Bearer {HOSTED_KEY}"  # the hosted account's key, never the caller's
    assert json.loads(body)["model"] == "deepseek-chat"
    with httpx.stream("POST", url + "/v1/chat/completions", content=chat("stream", stream=True), headers=AUTH,
                      timeout=30) as streamed:
        assert streamed.headers["x-served-by"] == "fallback"
        assert b"".join(streamed.iter_raw()) == b"".join(CHUNKS)
    # The resident key is held instead (and its deadline passes): nothing of it reaches the hosted API.
    before = len(hosted.requests)
    resident = post(url, chat(), key=OTHER)
    assert resident.status_code == 504 and len(hosted.requests) == before
    metrics = httpx.get(url + "/metrics", headers=AUTH).text
    assert 'deepseek_gateway_requests_served_total{served_by="fallback"} 2.0' in metrics


def test_overloaded_goes_out_within_max_share(stack: ExitStack) -> None:
    _hosted, hosted_url = start(stack, "hosted")
    local, local_url = start(stack, "local")
    local.queue = 20  # its own queue is beyond overloadThreshold
    url, app = stack.enter_context(gateway(config(hosted_url, [local_url], when=["Overloaded"], maxShare=0.5,
                                                  overloadThreshold=8), api_keys=f"{KEY},{OTHER}"))
    pool = app.state.router.pools["v"]
    wait_until(lambda: pool.overloaded(8), 10, "the queue polled")
    served = [post(url, chat()).headers["x-served-by"] for _ in range(10)]
    assert served.count("fallback") == 5 and served.count("v") == 5  # at most half in the window
    assert all(post(url, chat(), key=OTHER).headers["x-served-by"] == "v" for _ in range(5))
    share = float(next(line.split()[1] for line in httpx.get(url + "/metrics", headers=AUTH).text.splitlines()
                       if line.startswith("deepseek_gateway_fallback_share ")))
    assert share == pytest.approx(5 / 15)
    local.queue = 0
    wait_until(lambda: not pool.overloaded(8), 10, "the queue drained")
    assert {post(url, chat()).headers["x-served-by"] for _ in range(5)} == {"v"}


def test_full_hold_queue_counts_as_overloaded(stack: ExitStack) -> None:
    _, hosted_url = start(stack, "hosted")
    cold = f"http://127.0.0.1:{stack.enter_context(dead_port())}"
    document = config(hosted_url, [cold], when=["Overloaded"], maxShare=1.0)
    document["hold"] = {"maxQueue": 0}
    url, _ = stack.enter_context(gateway(document))
    assert post(url, chat()).headers["x-served-by"] == "fallback"


def test_unavailable_when_every_backend_fails(stack: ExitStack) -> None:
    _, hosted_url = start(stack, "hosted")
    broken, broken_url = start(stack, "broken")
    url, app = stack.enter_context(gateway(config(hosted_url, [broken_url], when=["Unavailable"], maxShare=1.0)))
    wait_until(lambda: app.state.router.pools["v"].has_ready, 10, "ready")
    broken.status = 503
    out = post(url, chat())
    assert out.headers["x-served-by"] == "fallback" and out.content == reply("hosted")
    assert broken.requests  # tried locally first


def test_no_fallback_reason_no_fallback(stack: ExitStack) -> None:
    hosted, hosted_url = start(stack, "hosted")
    cold = f"http://127.0.0.1:{stack.enter_context(dead_port())}"
    url, _ = stack.enter_context(gateway(config(hosted_url, [cold], when=["Unavailable"], maxShare=1.0)))
    assert post(url, chat()).status_code == 504 and not hosted.requests


def test_share_window_slides() -> None:
    now = [0.0]
    window = ShareWindow(60, clock=lambda: now[0])
    assert not window.would_stay_within(0.5)  # 1 of 1 would be out
    window.record(False)
    assert window.would_stay_within(0.5)
    window.record(True)
    assert not window.would_stay_within(0.5) and window.share() == 0.5
    now[0] = 61.0
    assert window.share() == 0.0


def test_allow_external_names_key_ids_of_the_structured_keys_file(stack: ExitStack, tmp_path: Path) -> None:
    hosted, hosted_url = start(stack, "hosted")
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"- {{id: team-out, key: {KEY}}}\n- {{id: team-resident, key: {OTHER}}}\n")
    cold = f"http://127.0.0.1:{stack.enter_context(dead_port())}"
    document = config(hosted_url, [cold], when=["ColdStart"], maxShare=1.0, allowExternal=["team-out"])
    url, _ = stack.enter_context(gateway(document, api_keys=None, api_keys_file=keys))
    assert post(url, chat()).headers["x-served-by"] == "fallback"
    assert post(url, chat(), key=OTHER).status_code == 504
    assert len(hosted.requests) == 1
