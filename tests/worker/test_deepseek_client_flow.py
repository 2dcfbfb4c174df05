"""DeepSeek's documented client flow against a running worker with the tiny model:
client-credentials token -> chat with it -> hit the rate limit -> back off by error.retry_after;
an async aiohttp client (streaming); a tenacity retry policy driven by Retry-After."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import tenacity
from fakes import serve_in_thread, wait_until

from deepseek_worker.engine import Engine
from deepseek_worker.server import build_app
from deepseek_worker.settings import Settings

pytestmark = pytest.mark.slow
MODEL = "deepseek-chat"
CLIENTS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def base_url(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    secrets = tmp_path_factory.mktemp("secrets")
    (secrets / "jwt.key").write_text("a-very-long-test-signing-key-0123456789abcdef\n")
    (secrets / "clients").write_text("".join(f"{k}:{v}\n" for k, v in CLIENTS.items()))
    settings = Settings(
        model=str(tiny_model_dir),
        served_model_name=MODEL,
        max_model_len=256,
        max_new_tokens=16,
        jwt_secret_file=secrets / "jwt.key",
        jwt_clients_file=secrets / "clients",
        rate_limit_rpm=60,  # one token per second
        rate_limit_burst=2,
    )
    app = build_app(Engine(settings.engine_config()), settings)
    with serve_in_thread(app) as url:
        wait_until(lambda: httpx.get(url + "/health/ready").status_code == 200, 120, "model load")
        yield url


def token_for(base_url: str, client_id: str) -> str:
    r = httpx.post(
        base_url + "/auth/v1/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": CLIENTS[client_id]},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    return str(body["access_token"])


def test_token_then_chat_then_rate_limit_backoff(base_url: str) -> None:
    headers = {"Authorization": f"Bearer {token_for(base_url, 'alice')}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        assert client.post("/v1/chat/completions", json={**BODY, "messages": []}).status_code == 400
        statuses: list[int] = []
        for _ in range(10):  # burst 2: the limit is hit within a few calls
            r = client.post("/v1/chat/completions", json=BODY)
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
        assert statuses[-1] == 429 and set(statuses[:-1]) == {200}
        err = r.json()["error"]
        assert err["type"] == "rate_limit_error" and err["code"] == 429
        assert r.headers["retry-after"] == str(err["retry_after"])
        time.sleep(err["retry_after"])  # back off exactly as told, then succeed
        assert client.post("/v1/chat/completions", json=BODY).status_code == 200


def test_token_is_required_and_checked(base_url: str) -> None:
    assert httpx.post(base_url + "/v1/chat/completions", json=BODY).status_code == 401
    bad = httpx.post(
        base_url + "/auth/v1/token",
        data={"grant_type": "client_credentials", "client_id": "alice", "client_secret": "nope"},
    )
    assert bad.status_code == 401 and bad.json()["error"]["code"] == 401


async def test_async_aiohttp_streaming_client(base_url: str) -> None:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base_url, timeout=timeout) as session:
        creds = {"grant_type": "client_credentials", "client_id": "bob", "client_secret": CLIENTS["bob"]}
        async with session.post("/auth/v1/token", json=creds) as r:
            assert r.status == 200
            token = (await r.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
        events: list[Any] = []
        async with session.post("/v1/chat/completions", json=body, headers=headers) as r:
            assert r.status == 200
            async for raw in r.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    data = line[len("data: ") :]
                    events.append(data if data == "[DONE]" else json.loads(data))
    assert events[-1] == "[DONE]"
    assert events[-2]["usage"]["completion_tokens"] >= 1


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"429, retry after {retry_after}s")
        self.retry_after = retry_after


def wait_retry_after(state: tenacity.RetryCallState) -> float:
    """tenacity wait strategy: the server's retry_after (bounded), like DeepSeek's SDK examples."""
    exc = state.outcome.exception() if state.outcome else None
    return min(float(exc.retry_after), 5.0) if isinstance(exc, RateLimited) else 0.5


def test_tenacity_retry_on_429(base_url: str) -> None:
    headers = {"Authorization": f"Bearer {token_for(base_url, 'carol')}"}
    attempts: list[int] = []

    @tenacity.retry(
        retry=tenacity.retry_if_exception_type(RateLimited),
        wait=wait_retry_after,
        stop=tenacity.stop_after_attempt(5),
        reraise=True,
    )
    def call() -> dict[str, Any]:
        r = httpx.post(base_url + "/v1/chat/completions", json=BODY, headers=headers, timeout=60)
        attempts.append(r.status_code)
        if r.status_code == 429:
            raise RateLimited(r.json()["error"]["retry_after"])
        r.raise_for_status()
        return dict(r.json())

    results = [call() for _ in range(4)]  # burst 2, so at least one call needs a retry
    assert all(res["object"] == "chat.completion" for res in results)
    assert 429 in attempts and attempts.count(200) == 4
