"""Tokens metered per key in proxy mode, against a stub engine server (fake_upstream.py): the usage of
replies and of streams (asked for from the engine when the client did not, and then held back from the
client), the token quota headers and the 429 at the edge."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import CHUNKS, REPLY, FakeUpstream
from fakes import serve_in_thread, wait_until
from prometheus_client.parser import text_string_to_metric_families

from deepseek_worker.server.proxy import build_proxy_app
from deepseek_worker.server.relay import UsageEventFilter, ask_for_usage
from deepseek_worker.settings import Settings

KEYS = "- {id: team-a, key: sk-a}\n- {id: team-q, key: sk-q, quota: {tokensPerMinute: 20}}\n"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "content-type": "application/json"}


def chat(scenario: str, **extra: Any) -> bytes:
    return json.dumps({"model": "served", "messages": [{"role": "user", "content": "hi"}],
                       "stream": scenario == "stream", "scenario": scenario, **extra}).encode()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[FakeUpstream, str]]:
    keys = tmp_path / "api-keys"
    keys.write_text(KEYS, encoding="utf-8")
    with ExitStack() as stack:
        fake = FakeUpstream()
        fake.release.set()  # streams run straight through
        upstream_url = stack.enter_context(serve_in_thread(fake))
        app = build_proxy_app(Settings(upstream=upstream_url, api_keys_file=keys, variant="v2"))
        url = stack.enter_context(serve_in_thread(app))
        wait_until(lambda: app.state.upstream.ready, 30, "the proxy sees the upstream healthy")
        yield fake, url


def key_tokens(url: str) -> dict[tuple[str, str], float]:
    """(prompt|completion, key) -> value for variant v2."""
    text = httpx.get(url + "/metrics", headers=bearer("sk-a"), timeout=30).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("deepseek_worker_key_") and s.name.endswith("_tokens_total"):
                assert s.labels["variant"] == "v2"
                kind = s.name.removeprefix("deepseek_worker_key_").removesuffix("_tokens_total")
                out[(kind, s.labels["key"])] = s.value
    return out


def post(url: str, body: bytes, key: str = "sk-a") -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", content=body, headers=bearer(key), timeout=30)


def test_reply_and_streams_are_metered_per_key(proxy: tuple[FakeUpstream, str]) -> None:
    fake, url = proxy
    assert post(url, chat("reply")).content == REPLY  # usage 7 + 5
    asked = chat("stream", stream_options={"include_usage": True})
    assert post(url, asked).content == b"".join(CHUNKS)  # usage 3 + 4; relayed unchanged
    assert fake.requests[-1][3] == asked  # the engine got the client's bytes
    assert key_tokens(url) == {("prompt", "team-a"): 10, ("completion", "team-a"): 9}


@pytest.mark.parametrize("options", [None, {"include_usage": False}, {"continuous_usage_stats": False}])
def test_a_stream_without_usage_is_asked_for_it_and_the_client_does_not_see_it(
        proxy: tuple[FakeUpstream, str], options: dict[str, Any] | None) -> None:
    fake, url = proxy
    body = chat("stream") if options is None else chat("stream", stream_options=options)
    reply = post(url, body)
    assert reply.status_code == 200
    # Everything the engine sent but its usage-only event (choices: []), byte for byte.
    assert reply.content == b"".join(chunk for chunk in CHUNKS if b'"choices":[]' not in chunk)
    sent = json.loads(fake.requests[-1][3])
    assert sent["stream_options"] == {**(options or {}), "include_usage": True}
    assert {k: v for k, v in sent.items() if k != "stream_options"} == {
        k: v for k, v in json.loads(body).items() if k != "stream_options"}
    assert key_tokens(url) == {("prompt", "team-a"): 3, ("completion", "team-a"): 4}


def test_quota_headers_and_429_in_proxy_mode(proxy: tuple[FakeUpstream, str]) -> None:
    _, url = proxy
    first = post(url, chat("reply"), "sk-q")  # 12 tokens of 20
    assert first.status_code == 200 and first.content == REPLY
    assert first.headers["x-ratelimit-limit-tokens"] == "20" and first.headers["x-ratelimit-remaining-tokens"] == "20"
    second = post(url, chat("reply"), "sk-q")  # 8 left: admitted, now 4 in debt
    assert second.status_code == 200 and second.headers["x-ratelimit-remaining-tokens"] == "8"
    third = post(url, chat("reply"), "sk-q")
    assert third.status_code == 429 and third.headers["x-ratelimit-remaining-tokens"] == "0"
    assert third.headers["retry-after"] == "15"  # 5 tokens at 1 per 3 s
    assert third.json()["error"]["type"] == "rate_limit_error"
    assert post(url, chat("reply")).status_code == 200  # another key: not limited
    assert key_tokens(url)[("prompt", "team-q")] == 14


def test_ask_for_usage_rewrites_only_streams_without_it() -> None:
    assert ask_for_usage(b'{"stream": false}') is None
    assert ask_for_usage(b'{"stream": true, "stream_options": {"include_usage": true}}') is None
    assert ask_for_usage(b"not json") is None
    assert ask_for_usage(b'{"stream": true, "stream_options": "bad"}') is None  # the engine's own 400
    rewritten = ask_for_usage('{"stream": true, "messages": [{"content": "café"}]}'.encode())
    assert rewritten is not None
    assert json.loads(rewritten) == {"stream": True, "messages": [{"content": "café"}],
                                     "stream_options": {"include_usage": True}}


@pytest.mark.parametrize("size", [1, 7, 64, 1000])
def test_usage_event_filter_across_chunk_boundaries(size: int) -> None:
    data = b"".join(CHUNKS)
    hidden = UsageEventFilter()
    out = b"".join(hidden.feed(data[i:i + size]) for i in range(0, len(data), size)) + hidden.rest()
    assert out == b"".join(chunk for chunk in CHUNKS if chunk is not CHUNKS[3])
