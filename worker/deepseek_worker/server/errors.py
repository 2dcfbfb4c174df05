"""Every error leaves as protocol.errors.APIError's one JSON shape; nothing returns FastAPI's
default 422 or a traceback."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..protocol.errors import APIError, ErrorResponse

log = logging.getLogger("deepseek_worker.app")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 429, 500, 503, 504)
}


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict"}
# pydantic's error types for a body that is not an object at all (bytes of a non-JSON content type, a list)
BODY_NOT_AN_OBJECT = frozenset({"model_attributes_type", "dict_type", "model_type"})


def _path(loc: tuple[Any, ...], *, stop_at_union: bool) -> str | None:
    """Pydantic error location -> OpenAI-style param ("messages[0].role").

    Pydantic inserts union branch names into locations (e.g. "str", "list[TextPart]"); for the
    `param` field the path ends there (the field itself is what the client must fix), for the
    message they are skipped so the deeper cause stays visible.
    """
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier() and part not in _UNION_TAGS:
            out += f".{part}" if out else part
        elif stop_at_union:
            break
    return out or None


def _validation_error(errors: list[Any]) -> APIError:
    """The first few pydantic errors -> one 400 naming the first offending parameter."""
    if not errors:
        return APIError(400, "Invalid request.")
    if errors[0].get("type") == "json_invalid":
        return APIError(400, "Request body is not valid JSON.")
    if tuple(errors[0].get("loc", ())) == ("body",) and errors[0].get("type") in BODY_NOT_AN_OBJECT:
        # FastAPI parses JSON only under a JSON Content-Type (or none): a form or text one leaves bytes.
        return APIError(400, "Request body must be a JSON object, sent with Content-Type: application/json.")
    param = _path(tuple(errors[0].get("loc", ())), stop_at_union=True)
    reasons = []
    for error in errors[:3]:
        where = _path(tuple(error.get("loc", ())), stop_at_union=False)
        reasons.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return APIError(400, "Invalid request: " + "; ".join(reasons), param=param)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> Response:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        err = _validation_error(list(exc.errors()))
        return JSONResponse(err.body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        err = APIError(exc.status_code, str(exc.detail))
        return JSONResponse(err.body(), status_code=exc.status_code, headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        err = APIError(500, "Internal server error.")
        return JSONResponse(err.body(), status_code=500)
