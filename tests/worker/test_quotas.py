"""Per-key token quotas (server/quotas.py, keys.py): the keys file schema, the 429 at the boundary
with Retry-After and the x-ratelimit-*-tokens headers, per-key and per-window state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import make_app
from pydantic import ValidationError

from deepseek_worker.server.keys import KeysFileError, parse_keys
from deepseek_worker.server.quotas import TokenQuotas
from deepseek_worker.settings import Settings

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 3}
TOKEN_HEADERS = ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def keys_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "api-keys"
    path.write_text(text, encoding="utf-8")
    return path


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def tokens(r: httpx.Response) -> tuple[str, str, str]:
    limit, remaining, reset = (r.headers[h] for h in TOKEN_HEADERS)
    return limit, remaining, reset


def quota_app(tmp_path: Path, text: str) -> tuple[Any, Clock, httpx.AsyncClient]:
    app, _ = make_app(api_keys_file=keys_file(tmp_path, text))
    clock = Clock()
    app.state.metering.quotas.clock = clock
    return app, clock, httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker")


# -- the keys file --------------------------------------------------------------------------------------


def test_plain_keys_file_still_means_one_key_per_line() -> None:
    entries = parse_keys("# team keys\nsk-a\n\n  sk-b  \n")
    assert [(e.key, e.id, e.quota, e.priority) for e in entries] == [
        ("sk-a", None, None, "interactive"), ("sk-b", None, None, "interactive")]


def test_structured_keys_file() -> None:
    entries = parse_keys(
        "- id: team-a\n  key: sk-a\n  priority: batch\n  quota: {tokensPerMinute: 100, tokensPerDay: 1000}\n"
        "- {key: sk-b}\n"
    )
    assert entries[0].id == "team-a" and entries[0].priority == "batch"
    assert entries[0].quota is not None and entries[0].quota.tokens_per_minute == 100
    assert entries[0].quota.tokens_per_day == 1000
    assert entries[1].id is None and entries[1].quota is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- {id: a, key: k1}\n- {id: team-b, key: k2, quota: {tokensPerMinute: 0}}\n",
         "entry 2 (id 'team-b'): quota.tokensPerMinute: Input should be greater than or equal to 1"),
        ("- {id: a, key: k1, quota: {tokensPerHour: 5}}\n", "entry 1 (id 'a'): quota.tokensPerHour: Extra inputs"),
        ("- {id: a, key: k1, priority: urgent}\n", "entry 1 (id 'a'): priority: Input should be 'interactive' or"),
        ("- {key: k1, quota: {tokensPerDay: 5}}\n", "entry 1: entry: Value error, a key with a quota needs an `id`"),
        ("- {id: a, key: k1}\n- {id: a, key: k2}\n", "id: 'a' used by more than one key"),
        ("- {id: 'has space', key: k1}\n", "entry 1 (id 'has space'): id: String should match pattern"),
        ("- {id: a}\n", "entry 1 (id 'a'): key: Field required"),
        ("- {id: a, key: k1}\n- just-a-key\n", "entry 2: expected a mapping with `key`"),
    ],
)
def test_bad_structured_file_names_the_entry_and_field(text: str, message: str) -> None:
    with pytest.raises(KeysFileError) as caught:
        parse_keys(text)
    assert message in str(caught.value)


def test_bad_keys_file_fails_at_start_up_naming_the_setting(tmp_path: Path) -> None:
    path = keys_file(tmp_path, "- {id: a, key: k1, quota: {tokensPerMinute: -5}}\n")
    with pytest.raises(ValidationError) as caught:
        Settings(api_keys_file=path)
    text = str(caught.value)
    assert "api_keys_file" in text and "entry 1 (id 'a'): quota.tokensPerMinute" in text


# -- the quota at the HTTP edge -------------------------------------------------------------------------


async def test_quota_refuses_the_first_request_after_the_boundary(tmp_path: Path) -> None:
    """Usage is charged when a response completes and a request is admitted while its key has at least one
    token left: with a quota of 3 requests' usage the 4th is refused; with one token more it is admitted."""
    probe_app, _ = make_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(probe_app), base_url="http://w") as c:
        one = (await c.post("/v1/chat/completions", json=CHAT)).json()["usage"]["total_tokens"]
    assert one > 1
    for extra, admitted in ((0, 3), (1, 4)):
        limit = 3 * one + extra
        text = f"- {{id: team-a, key: sk-a, quota: {{tokensPerMinute: {limit}}}}}\n- {{id: team-b, key: sk-b}}\n"
        _, _, client = quota_app(tmp_path, text)
        async with client as c:
            replies = [await c.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a")) for _ in range(5)]
            assert [r.status_code for r in replies] == [200] * admitted + [429] * (5 - admitted), extra
            used = [r.json()["usage"]["total_tokens"] for r in replies[:admitted]]
            assert used == [one] * admitted
            # remaining is what the key had at admission: before this request's own usage
            assert [tokens(r)[1] for r in replies[:admitted]] == [str(limit - i * one) for i in range(admitted)]
            assert all(tokens(r)[0] == str(limit) for r in replies)
            refused = replies[admitted]
            debt = admitted * one - limit  # tokens below zero
            rate = limit / 60  # tokens per second
            expected_wait = -(-(debt + 1) // rate) if debt + 1 > 0 else 1
            assert refused.headers["retry-after"] == str(max(1, int(expected_wait)))
            error = refused.json()["error"]
            assert error["code"] == 429 and error["type"] == "rate_limit_error"
            assert error["retry_after"] == int(refused.headers["retry-after"])
            assert "team-a" in error["message"] and "sk-a" not in error["message"]
            assert tokens(refused)[1] == "0"
            other = await c.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-b"))
            assert other.status_code == 200 and not set(TOKEN_HEADERS) & set(other.headers)  # no quota


async def test_retry_after_is_when_a_token_is_back(tmp_path: Path) -> None:
    _, clock, client = quota_app(tmp_path, "- {id: a, key: sk-a, quota: {tokensPerMinute: 6}}\n")
    async with client as c:
        first = await c.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
        assert first.status_code == 200 and tokens(first) == ("6", "6", "0s")
        used = first.json()["usage"]["total_tokens"]
        assert used > 6  # the key is now `used - 6` tokens in debt, refilled at 0.1 token/s
        refused = await c.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
        wait = int(refused.headers["retry-after"])
        assert refused.status_code == 429 and wait == (used - 6 + 1) * 10
        clock.now = wait - 1.0
        assert (await c.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))).status_code == 429
        clock.now = float(wait)
        back = await c.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
        assert back.status_code == 200 and tokens(back)[:2] == ("6", "1")


async def test_the_day_window_binds_when_it_is_the_tighter(tmp_path: Path) -> None:
    text = "- {id: a, key: sk-a, quota: {tokensPerMinute: 100000, tokensPerDay: 20}}\n"
    _, clock, client = quota_app(tmp_path, text)
    async with client as c:
        ok = await c.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
        assert tokens(ok) == ("20", "20", "0s")
        while (r := await c.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))).status_code == 200:
            assert clock.now == 0.0
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 60  # a day's refill, not a minute's
        assert r.headers["x-ratelimit-limit-tokens"] == "20"


async def test_a_changed_quota_applies_without_a_restart(tmp_path: Path) -> None:
    app, _, client = quota_app(tmp_path, "- {id: a, key: sk-a, quota: {tokensPerMinute: 5}}\n")
    async with client as c:
        assert (await c.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))).status_code == 200
        assert (await c.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))).status_code == 429
        path = app.state.settings.api_keys_file
        path.write_text("- {id: a, key: sk-a, quota: {tokensPerMinute: 500}}\n", encoding="utf-8")
        import os
        os.utime(path, (1, 1))  # a new mtime whatever the file system's resolution
        r = await c.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
        assert r.status_code == 200 and r.headers["x-ratelimit-limit-tokens"] == "500"


async def test_a_stream_is_charged_its_usage(tmp_path: Path) -> None:
    _, _, client = quota_app(tmp_path, "- {id: a, key: sk-a, quota: {tokensPerMinute: 1000}}\n")
    async with client as c:
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        stream = await c.post("/v1/chat/completions", json=body, headers=bearer("sk-a"))
        assert stream.status_code == 200 and tokens(stream)[1] == "1000"
        lines = [line for line in stream.text.splitlines() if '"usage":{' in line]
        import json
        used = json.loads(lines[-1][len("data: "):])["usage"]["total_tokens"]
        after = await c.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
        assert tokens(after)[1] == str(1000 - used)


def test_quota_windows_unit() -> None:
    from deepseek_worker.server.keys import TokenQuota
    from deepseek_worker.server.quotas import QuotaExceeded

    clock = Clock()
    quotas = TokenQuotas(clock)
    quota = TokenQuota(tokensPerMinute=60)
    assert quotas.admit("k", None) is None
    state = quotas.admit("k", quota)
    assert state is not None and (state.limit, state.remaining, state.retry_after) == (60, 60, None)
    quotas.charge("k", quota, 60)
    with pytest.raises(QuotaExceeded) as caught:
        quotas.admit("k", quota)
    assert caught.value.state.retry_after == 1 and caught.value.headers()["Retry-After"] == "1"
    clock.now = 1.0  # one token back (60 per minute)
    state = quotas.admit("k", quota)
    assert state is not None and state.remaining == 1 and state.headers()["x-ratelimit-reset-tokens"] == "59s"
    assert quotas.admit("other", quota) is not None  # its own windows


async def test_a_refusal_after_the_quota_check_carries_the_token_headers(tmp_path: Path) -> None:
    app, _, client = quota_app(tmp_path, "- {id: a, key: sk-a, quota: {tokensPerMinute: 50}}\n")
    for _ in range(app.state.settings.max_concurrent_requests):
        app.state.worker.enter()  # the worker is full
    async with client as c:
        full = await c.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-a"))
    assert full.status_code == 503 and tokens(full) == ("50", "50", "0s")
