"""POST /auth/v1/token: the client-credentials token endpoint (auth.py issues the JWT)."""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request

from ...protocol.common import lone_surrogate
from ...protocol.errors import APIError
from ...protocol.models import TokenResponse
from ..auth import Authenticator
from ..errors import ERROR_RESPONSES
from ..limits import client_ip


def add(app: FastAPI, auth: Authenticator) -> None:
    @app.post("/auth/v1/token", response_model=TokenResponse, responses=ERROR_RESPONSES)
    async def token(request: Request) -> TokenResponse:
        try:
            return auth.issue_token(await _token_form(request))
        except APIError as err:
            # Wrong client credentials from an address over its failed-auth budget: 429 (limits.py);
            # the right ones are served from any address.
            refusal = request.app.state.auth_throttle.refusal(err, client_ip(request.scope))
            if refusal is err:
                raise
            raise refusal from err


async def _token_form(request: Request) -> dict[str, str]:
    """client-credentials input: JSON or form body, client id/secret optionally via HTTP Basic."""
    raw = await request.body()
    form: dict[str, str] = {}
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            raise APIError(400, "Request body is not valid JSON.") from exc
        if not isinstance(data, dict):
            raise APIError(400, "Request body must be a JSON object.")
        where = lone_surrogate(data)
        if where is not None:  # valid JSON, but no UTF-8 form to hash
            raise APIError(400, "Strings must be valid Unicode (a lone UTF-16 surrogate).", param=where or None)
        form = {str(k): str(v) for k, v in data.items() if isinstance(v, str)}
    else:
        form = dict(parse_qsl(raw.decode("utf-8", errors="replace")))
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            client_id, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise APIError(401, "Malformed Basic credentials.") from exc
        form.setdefault("client_id", client_id)
        form.setdefault("client_secret", secret)
    return form


