"""The one error shape of the API: {"error": {message, type, param, code[, retry_after]}}.

No web-framework imports: the server turns an APIError into a response (status, body, headers).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "overloaded_error",
    504: "timeout_error",
}


class APIError(Exception):
    """An error with the one wire shape: {"error": {message, type, param, code}}.

    `code` is the HTTP status as an integer. 429/503 carry `retry_after` seconds (also sent as a
    Retry-After header by the server, server/errors.py).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        type_: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.type = type_ or ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The JSON body (also the payload of a streamed error event)."""
        err: dict[str, Any] = {"message": self.message, "type": self.type, "param": self.param, "code": self.status}
        if self.retry_after is not None:
            err["retry_after"] = self.retry_after
        return {"error": err}

    def headers(self) -> dict[str, str]:
        """Extra response headers: Retry-After for 429/503, WWW-Authenticate for 401."""
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="deepseek-worker"'
        return headers


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: int
    retry_after: int | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
