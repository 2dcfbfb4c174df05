"""Authentication: static API keys and HS256 JWTs issued by a client-credentials token endpoint.

Off unless keys or a JWT secret are configured. Secrets are compared in constant time
(hmac.compare_digest over SHA-256 digests, so lengths leak nothing either) and every configured
key is compared, so timing does not reveal which one matched. Files are re-read when their mtime
changes, so a rotated Kubernetes Secret takes effect without a restart.

The keys file is either plain (one key per line) or structured (keys.py: an id, a token quota and a
priority per key); `caller(identity)` tells the edge what an admitted identity is allowed.

A 401 carries an RFC 6750 challenge: `Bearer realm="deepseek-worker"` when no bearer credential was
sent (section 3.1: no error code then), plus `error="invalid_token"` when one was sent and refused.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from pathlib import Path
from typing import Any

import jwt
from starlette.datastructures import Headers
from starlette.types import Scope

from ..protocol.errors import APIError
from ..protocol.models import TokenResponse
from ..settings import MIN_JWT_SECRET_BYTES, Settings
from .keys import ANONYMOUS_CALLER, UNNAMED, Caller, KeyEntry, KeysFileError, client_label, parse_keys
from .limits import client_ip

log = logging.getLogger("deepseek_worker.auth")

ALGORITHMS = ["HS256"]  # the allowlist: "none" and asymmetric algorithms are refused
REALM = "deepseek-worker"


class AuthError(APIError):
    """A 401 whose WWW-Authenticate challenge says why (RFC 6750 section 3)."""

    def __init__(self, message: str, *, error: str | None = None) -> None:
        super().__init__(401, message)
        self.error = error

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        challenge = f'Bearer realm="{REALM}"'
        headers["WWW-Authenticate"] = challenge if self.error is None else f'{challenge}, error="{self.error}"'
        return headers


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class _WatchedFile:
    """A small text file re-read whenever its mtime changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime: float | None = None
        self._lines: list[str] = []

    def lines(self) -> list[str]:
        if self.path is None:
            return []
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return self._lines  # a Secret being swapped: keep the last good content
        if mtime != self._mtime:
            text = self.path.read_text(encoding="utf-8")
            self._lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
            self._mtime = mtime
        return self._lines


def key_identity(key: str) -> str:
    """The rate-limit identity of an API key: a short digest, so the key itself is never kept around."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _caller(entry: KeyEntry) -> Caller:
    return Caller(entry.id or UNNAMED, entry.quota, entry.priority)


class _KeysFile:
    """The API keys file (either format), re-read when its mtime changes. A rotation to content that
    does not validate keeps the last good keys and logs why (start-up refuses such a file outright)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime: float | None = None
        self.entries: list[KeyEntry] = []

    def read(self) -> list[KeyEntry]:
        if self.path is None:
            return self.entries
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return self.entries  # a Secret being swapped: keep the last good content
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                self.entries = parse_keys(self.path.read_text(encoding="utf-8"))
            except (KeysFileError, OSError) as exc:
                log.error("keeping the previous API keys: %s: %s", self.path, exc)
        return self.entries


class Authenticator:
    """Checks `Authorization: Bearer <api key | JWT>` and issues JWTs for client credentials."""

    def __init__(self, settings: Settings, clock: Any = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self._static_keys = [KeyEntry(key=k.strip()) for k in (settings.api_keys or "").split(",") if k.strip()]
        self._keys_file = _KeysFile(settings.api_keys_file)
        self._callers: dict[str, Caller] = {}  # identity -> caller, rebuilt when the key list changes
        self._callers_of: list[KeyEntry] | None = None
        self._secret_file = _WatchedFile(settings.jwt_secret_file)
        self._clients_file = _WatchedFile(settings.jwt_clients_file)

    @property
    def enabled(self) -> bool:
        return bool(self._static_keys or self.settings.api_keys_file or self.settings.jwt_secret_file)

    @property
    def jwt_enabled(self) -> bool:
        return self.settings.jwt_secret_file is not None

    def _secret(self) -> str:
        lines = self._secret_file.lines()
        if not lines:
            raise APIError(500, "JWT signing key file is empty.", type_="server_error")
        if len(lines[0].encode()) < MIN_JWT_SECRET_BYTES:  # checked at start-up too; this catches a rotation
            message = f"JWT signing key is shorter than {MIN_JWT_SECRET_BYTES} bytes; refusing to use it."
            raise APIError(500, message, type_="server_error")
        return lines[0]

    def _entries(self) -> list[KeyEntry]:
        return [*self._static_keys, *self._keys_file.read()]

    def _key_identity(self, token: str) -> str | None:
        """Identity for a valid API key, else None. Compares against every key (constant time)."""
        offered = _digest(token)
        matched: str | None = None
        for entry in self._entries():
            if hmac.compare_digest(offered, _digest(entry.key)):
                matched = entry.key
        return None if matched is None else key_identity(matched)

    def caller(self, identity: str) -> Caller:
        """What `identity` (from `identify`) is allowed: its key's id, quota and priority. A key
        rotated away since it was identified is UNNAMED with no quota; callers without auth are
        ANONYMOUS_CALLER; a JWT client is `client:<sub>` (interactive, no quota)."""
        if identity.startswith("key:"):
            from_file = self._keys_file.read()
            if from_file is not self._callers_of:  # a re-read file is a new list
                entries = [*self._static_keys, *from_file]
                self._callers = {key_identity(entry.key): _caller(entry) for entry in entries}
                self._callers_of = from_file
            return self._callers.get(identity, Caller(UNNAMED))
        if identity.startswith("client:"):
            return Caller(client_label(identity.removeprefix("client:")))
        return ANONYMOUS_CALLER

    def _jwt_identity(self, token: str) -> str | None:
        """Identity (`client:<sub>`) for a valid JWT, else None."""
        try:
            claims = jwt.decode(
                token,
                self._secret(),
                algorithms=ALGORITHMS,
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
                leeway=5,
            )
        except jwt.InvalidTokenError:
            return None
        return f"client:{claims['sub']}"

    def identify(self, headers: Headers, scope: Scope) -> str:
        """Rate-limit identity for a request; raises APIError(401) when auth is on and fails.

        With auth off the identity is the client IP. The token endpoint itself is open (it is
        where credentials are presented) and limited per IP.
        """
        if not self.enabled or str(scope["path"]).startswith("/auth/"):
            return "ip:" + client_ip(scope)
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("Missing bearer token (Authorization: Bearer <key>).")
        identity = self._key_identity(token)
        if identity is None and self.jwt_enabled and token.count(".") == 2:
            identity = self._jwt_identity(token)
        if identity is None:
            raise AuthError("Invalid API key or access token.", error="invalid_token")
        return identity

    def _client_ok(self, client_id: str, client_secret: str) -> bool:
        offered = _digest(f"{client_id}:{client_secret}")
        ok = False
        for line in self._clients_file.lines():
            if hmac.compare_digest(offered, _digest(line)):
                ok = True
        return ok

    def issue_token(self, form: dict[str, str]) -> TokenResponse:
        """OAuth2 client-credentials grant -> a signed HS256 access token."""
        if not self.jwt_enabled:
            raise APIError(404, "Token endpoint is disabled (no JWT secret configured).", type_="not_found_error")
        if form.get("grant_type") != "client_credentials":
            raise APIError(400, "grant_type must be client_credentials.", param="grant_type")
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        if not client_id or not client_secret or not self._client_ok(client_id, client_secret):
            raise APIError(401, "Invalid client credentials.", param="client_id")
        now = int(self.clock())
        ttl = self.settings.jwt_ttl_seconds
        claims = {
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "sub": client_id,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
        }
        token = jwt.encode(claims, self._secret(), algorithm="HS256")
        return TokenResponse(access_token=token, expires_in=ttl)
