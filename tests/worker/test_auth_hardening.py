"""Auth hardening: failed-auth throttle per client address, RFC 6750 challenges, docs behind auth,
and the minimum JWT signing-key length (refused at start-up, and after a rotation)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fakes import make_app
from pydantic import ValidationError

from deepseek_worker.cli import load_settings
from deepseek_worker.settings import Settings

SECRET = "test-signing-key-long-enough-even-for-hs512-which-wants-64-bytes-0123"
ATTACKER, OTHER = ("203.0.113.7", 40000), ("198.51.100.2", 40000)
CHALLENGE = 'Bearer realm="deepseek-worker"'
INVALID_TOKEN = 'Bearer realm="deepseek-worker", error="invalid_token"'


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def asgi(app: Any, client: tuple[str, int] = OTHER) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app, client=client), base_url="http://worker")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def jwt_files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "key").write_text(SECRET + "\n")
    (tmp_path / "clients").write_text("svc:svc-secret\n")
    return {"jwt_secret_file": tmp_path / "key", "jwt_clients_file": tmp_path / "clients"}


# -- 1. failed authentication is throttled per client address ---------------------------------------


async def test_failed_auth_throttled_per_address_others_unaffected() -> None:
    app, _ = make_app(api_keys="good-key")  # auth_failures_per_minute defaults to 10
    clock = Clock()
    app.state.auth_throttle.clock = clock
    async with asgi(app, ATTACKER) as attacker, asgi(app, OTHER) as other:
        replies = [await attacker.get("/v1/models", headers=bearer(f"wrong-{i}")) for i in range(30)]
        assert [r.status_code for r in replies] == [401] * 10 + [429] * 20
        limited = replies[-1]
        assert limited.headers["retry-after"] == "6"  # 10 per minute: one attempt back every 6 s
        assert "www-authenticate" not in limited.headers
        assert limited.json() == {
            "error": {
                "message": "Too many failed authentication attempts from this address; retry later.",
                "type": "rate_limit_error",
                "param": None,
                "code": 429,
                "retry_after": 6,
            }
        }
        # Only failures are throttled: the right key is checked and served, even from this address.
        assert (await attacker.get("/v1/models", headers=bearer("good-key"))).status_code == 200
        # Another address is unaffected, with or without the right key.
        assert (await other.get("/v1/models", headers=bearer("good-key"))).status_code == 200
        assert (await other.get("/v1/models", headers=bearer("wrong"))).status_code == 401
        # One failed attempt comes back every 6 s.
        clock.now += 6
        assert (await attacker.get("/v1/models", headers=bearer("wrong"))).status_code == 401
        assert (await attacker.get("/v1/models", headers=bearer("wrong"))).status_code == 429
        assert (await attacker.get("/v1/models", headers=bearer("good-key"))).status_code == 200


async def test_one_key_guesser_does_not_lock_out_a_valid_key_from_the_same_address() -> None:
    """Issue 18, item 20: behind an ingress every client shares the controller pod's address, so 10
    wrong keys from one client must not turn away the others' correct keys."""
    app, _ = make_app(api_keys="good-key")  # auth_failures_per_minute defaults to 10
    async with asgi(app, ATTACKER) as ingress:
        wrong = [(await ingress.get("/v1/models", headers=bearer(f"wrong-{i}"))).status_code for i in range(10)]
        right = await ingress.get("/v1/models", headers=bearer("good-key"))
        more_wrong = await ingress.get("/v1/models", headers=bearer("wrong-11"))
        missing = await ingress.get("/v1/models")
        chat = await ingress.post("/v1/chat/completions", headers=bearer("good-key"),
                                  json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]})
    assert wrong == [401] * 10
    assert right.status_code == 200 and right.json()["data"][0]["id"] == "fake"
    assert more_wrong.status_code == missing.status_code == 429
    assert chat.status_code == 200


async def test_failed_client_credentials_count_too(jwt_files: dict[str, Path]) -> None:
    app, _ = make_app(**jwt_files, auth_failures_per_minute=3)
    bad = {"grant_type": "client_credentials", "client_id": "svc", "client_secret": "guess"}
    good = {**bad, "client_secret": "svc-secret"}
    async with asgi(app, ATTACKER) as attacker, asgi(app, OTHER) as other:
        codes = [(await attacker.post("/auth/v1/token", data=bad)).status_code for _ in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        # The right secret is checked and served from the throttled address too.
        assert (await attacker.post("/auth/v1/token", data=good)).status_code == 200
        assert (await attacker.post("/auth/v1/token", data=bad)).status_code == 429
        assert (await other.post("/auth/v1/token", data=good)).status_code == 200


async def test_failed_auth_throttle_off_with_zero() -> None:
    app, _ = make_app(api_keys="good-key", auth_failures_per_minute=0)
    async with asgi(app, ATTACKER) as attacker:
        codes = {(await attacker.get("/v1/models", headers=bearer("wrong"))).status_code for _ in range(30)}
    assert codes == {401}


# -- 2. RFC 6750 challenges ----------------------------------------------------------------------------


async def test_www_authenticate_challenges_rfc6750(jwt_files: dict[str, Path]) -> None:
    expired = jwt.encode(
        {"iss": "deepseek-worker", "aud": "deepseek-api", "sub": "svc", "iat": 1, "nbf": 1, "exp": 2},
        SECRET,
        algorithm="HS256",
    )
    app, _ = make_app(api_keys="good-key", **jwt_files)
    async with asgi(app) as c:
        missing = await c.get("/v1/models")
        basic = await c.get("/v1/models", headers={"Authorization": "Basic Z29vZC1rZXk6"})
        empty = await c.get("/v1/models", headers={"Authorization": "Bearer "})
        wrong = await c.get("/v1/models", headers=bearer("wrong-key"))
        stale = await c.get("/v1/models", headers=bearer(expired))
    for r in (missing, basic, empty):  # no credential for this scheme: no error code (section 3.1)
        assert r.status_code == 401 and r.headers["www-authenticate"] == CHALLENGE
    for r in (wrong, stale):
        assert r.status_code == 401 and r.headers["www-authenticate"] == INVALID_TOKEN
    for r in (missing, basic, empty, wrong, stale):
        assert r.json()["error"]["code"] == 401 and r.json()["error"]["type"] == "authentication_error"


# -- 4. generated docs are behind auth when auth is on ---------------------------------------------


DOCS = ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"]


async def test_docs_require_a_key_when_auth_is_on() -> None:
    app, _ = make_app(api_keys="good-key")
    async with asgi(app) as c:
        for path in DOCS:
            refused = await c.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"] == CHALLENGE
            assert refused.json()["error"]["code"] == 401
            assert (await c.get(path, headers=bearer("wrong"))).headers["www-authenticate"] == INVALID_TOKEN
            assert (await c.get(path, headers=bearer("good-key"))).status_code == 200, path
        schema = (await c.get("/openapi.json", headers=bearer("good-key"))).json()
    assert "/v1/chat/completions" in schema["paths"]


async def test_docs_open_when_auth_is_off() -> None:
    app, _ = make_app()
    async with asgi(app) as c:
        for path in DOCS:
            assert (await c.get(path)).status_code == 200, path


# -- 5. the JWT signing key must be at least 32 bytes ----------------------------------------------


def test_short_jwt_secret_is_a_settings_error(tmp_path: Path) -> None:
    key = tmp_path / "signing-key"
    key.write_text("# comment lines are skipped\nshort-key-31-bytes-0123456789ab\n")
    with pytest.raises(ValidationError, match="jwt_secret_file") as info:
        Settings(jwt_secret_file=key)
    assert f"the JWT signing key in {key} is 31 bytes; at least 32 are required" in str(info.value)
    key.write_text("exactly-32-bytes-0123456789abcde\n")
    assert Settings(jwt_secret_file=key).jwt_secret_file == key


def test_short_jwt_secret_cli_exits_2_naming_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "signing-key"
    key.write_text("secret\n")
    with pytest.raises(SystemExit) as exit_info:
        load_settings(["--jwt-secret-file", str(key)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "deepseek-worker: invalid setting jwt_secret_file (--jwt-secret-file / DEEPSEEK_JWT_SECRET_FILE): "
        f"the JWT signing key in {key} is 6 bytes; at least 32 are required (e.g. `openssl rand -hex 32`)\n"
    )


def test_short_jwt_secret_process_fails_without_traceback(tmp_path: Path) -> None:
    key = tmp_path / "signing-key"
    key.write_text("secret\n")
    env = {**os.environ, "DEEPSEEK_JWT_SECRET_FILE": str(key)}
    done = subprocess.run(
        [sys.executable, "-m", "deepseek_worker.cli"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "invalid setting jwt_secret_file" in done.stderr and "at least 32 are required" in done.stderr


async def test_jwt_secret_rotated_to_a_short_key_is_not_used(jwt_files: dict[str, Path]) -> None:
    app, _ = make_app(**jwt_files)
    form = {"grant_type": "client_credentials", "client_id": "svc", "client_secret": "svc-secret"}
    async with asgi(app) as c:
        issued = await c.post("/auth/v1/token", data=form)
        assert issued.status_code == 200
        key = jwt_files["jwt_secret_file"]
        key.write_text("short\n")
        stamp = key.stat().st_mtime + 5
        os.utime(key, (stamp, stamp))
        r = await c.post("/auth/v1/token", data=form)
        # Verification needs the key too: no JWT is checked against the short one.
        verify = await c.get("/v1/models", headers=bearer(issued.json()["access_token"]))
    assert verify.status_code == 500
    assert r.status_code == 500 and "access_token" not in r.text
    assert r.json()["error"] == {
        "message": "JWT signing key is shorter than 32 bytes; refusing to use it.",
        "type": "server_error",
        "param": None,
        "code": 500,
    }


@pytest.mark.parametrize("field", ["client_id", "client_secret", "grant_type"])
async def test_token_request_with_a_lone_surrogate_is_400(jwt_files: dict[str, Path], field: str) -> None:
    """Issue 19: `"\\ud800"` is valid JSON but has no UTF-8 form; hashing it gave a 500."""
    app, _ = make_app(**jwt_files)
    body = {"grant_type": "client_credentials", "client_id": "svc", "client_secret": "svc-secret"}
    body[field] = "svc\ud800"
    async with asgi(app) as c:
        r = await c.post("/auth/v1/token", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field
