"""Auth: API keys (env list and rotating file), client-credentials JWTs and their validation."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fakes import make_app

SECRET = "test-signing-key-long-enough-even-for-hs512-which-wants-64-bytes-0123"  # >= 64 bytes: no PyJWT warning
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


def client(**settings: Any) -> httpx.AsyncClient:
    app, _ = make_app(**settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker")


@pytest.fixture
def jwt_files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "key").write_text(SECRET + "\n")
    (tmp_path / "clients").write_text("# id:secret\nsvc:svc-secret\n")
    return {"jwt_secret_file": tmp_path / "key", "jwt_clients_file": tmp_path / "clients"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": "deepseek-worker", "aud": "deepseek-api", "sub": "svc", "iat": now, "nbf": now, "exp": now + 60}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


async def test_auth_off_by_default() -> None:
    async with client() as c:
        assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 200


async def test_api_keys_from_env_list() -> None:
    async with client(api_keys="k1, k2") as c:
        missing = await c.post("/v1/chat/completions", json=CHAT)
        wrong = await c.post("/v1/chat/completions", json=CHAT, headers=bearer("k3"))
        basic = await c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Basic azE6"})
        ok1 = await c.post("/v1/chat/completions", json=CHAT, headers=bearer("k1"))
        ok2 = await c.get("/v1/models", headers=bearer("k2"))
    for r in (missing, wrong, basic):
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"]["type"] == "authentication_error" and r.json()["error"]["code"] == 401
    assert ok1.status_code == 200 and ok2.status_code == 200


async def test_health_stays_open_and_metrics_need_a_key() -> None:
    """Probes come from the kubelet without a key; /metrics on the API port is keyed like /docs (issue 19:
    the default ingress path `/` exposed it). Pods the operator renders serve it on 9090 only."""
    async with client(api_keys="k1") as c:
        for path in ("/health/live", "/health/ready"):
            assert (await c.get(path)).status_code == 200, path
        refused = await c.get("/metrics")
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
        assert (await c.get("/metrics", headers=bearer("k1"))).status_code == 200


async def test_api_keys_file_is_reread_on_change(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("old-key\n")
    async with client(api_keys_file=keys) as c:
        assert (await c.get("/v1/models", headers=bearer("old-key"))).status_code == 200
        keys.write_text("new-key\n")
        stamp = keys.stat().st_mtime + 5
        os.utime(keys, (stamp, stamp))  # a Secret update: new content, new mtime
        assert (await c.get("/v1/models", headers=bearer("old-key"))).status_code == 401
        assert (await c.get("/v1/models", headers=bearer("new-key"))).status_code == 200


@pytest.mark.parametrize("encoding", ["form", "json", "basic"])
async def test_client_credentials_token_and_use(jwt_files: dict[str, Path], encoding: str) -> None:
    creds = {"grant_type": "client_credentials", "client_id": "svc", "client_secret": "svc-secret"}
    async with client(**jwt_files, jwt_ttl_seconds=120) as c:
        if encoding == "form":
            r = await c.post("/auth/v1/token", data=creds)
        elif encoding == "json":
            r = await c.post("/auth/v1/token", json=creds)
        else:
            basic = base64.b64encode(b"svc:svc-secret").decode()
            r = await c.post(
                "/auth/v1/token", data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
            )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["token_type"] == "bearer" and body["expires_in"] == 120
        decoded = jwt.decode(body["access_token"], SECRET, algorithms=["HS256"], audience="deepseek-api")
        assert decoded["sub"] == "svc" and decoded["iss"] == "deepseek-worker"
        assert (
            await c.post("/v1/chat/completions", json=CHAT, headers=bearer(body["access_token"]))
        ).status_code == 200


@pytest.mark.parametrize(
    ("form", "status", "param"),
    [
        ({"grant_type": "password", "client_id": "svc", "client_secret": "svc-secret"}, 400, "grant_type"),
        ({"grant_type": "client_credentials", "client_id": "svc", "client_secret": "wrong"}, 401, "client_id"),
        ({"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "svc-secret"}, 401, "client_id"),
        ({"grant_type": "client_credentials"}, 401, "client_id"),
    ],
)
async def test_token_endpoint_refusals(
    jwt_files: dict[str, Path], form: dict[str, str], status: int, param: str
) -> None:
    async with client(**jwt_files) as c:
        r = await c.post("/auth/v1/token", data=form)
    assert r.status_code == status
    assert r.json()["error"]["param"] == param


async def test_token_endpoint_disabled_without_secret() -> None:
    async with client() as c:
        r = await c.post("/auth/v1/token", data={"grant_type": "client_credentials"})
    assert r.status_code == 404 and r.json()["error"]["code"] == 404


BAD_TOKENS = {
    "wrong-secret": lambda: jwt.encode(claims(), "another-secret-of-sufficient-length-xx", algorithm="HS256"),
    "alg-none": lambda: jwt.encode(claims(), None, algorithm="none"),
    "alg-hs512": lambda: jwt.encode(claims(), SECRET, algorithm="HS512"),
    "expired": lambda: jwt.encode(claims(exp=int(time.time()) - 60), SECRET, algorithm="HS256"),
    "not-yet-valid": lambda: jwt.encode(claims(nbf=int(time.time()) + 600), SECRET, algorithm="HS256"),
    "issued-in-future": lambda: jwt.encode(claims(iat=int(time.time()) + 600), SECRET, algorithm="HS256"),
    "wrong-issuer": lambda: jwt.encode(claims(iss="evil"), SECRET, algorithm="HS256"),
    "wrong-audience": lambda: jwt.encode(claims(aud="other-api"), SECRET, algorithm="HS256"),
    "no-exp": lambda: jwt.encode(claims(exp=None), SECRET, algorithm="HS256"),
    "no-sub": lambda: jwt.encode(claims(sub=None), SECRET, algorithm="HS256"),
    "garbage": lambda: "a.b.c",
}


@pytest.mark.parametrize("name", list(BAD_TOKENS))
async def test_invalid_jwts_are_401(jwt_files: dict[str, Path], name: str) -> None:
    async with client(**jwt_files) as c:
        r = await c.get("/v1/models", headers=bearer(BAD_TOKENS[name]()))
    assert r.status_code == 401, name
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_valid_handmade_jwt_accepted(jwt_files: dict[str, Path]) -> None:
    async with client(**jwt_files) as c:
        r = await c.get("/v1/models", headers=bearer(jwt.encode(claims(), SECRET, algorithm="HS256")))
    assert r.status_code == 200


def test_missing_secret_file_is_a_settings_error(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from deepseek_worker.settings import Settings

    with pytest.raises(ValidationError, match="jwt_secret_file"):
        Settings(jwt_secret_file=tmp_path / "absent")
