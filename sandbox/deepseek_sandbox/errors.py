"""Kubernetes API errors with standard ``Status`` bodies.

kmock 0.8 renders errors with free-text reasons ("Object Not Found"); clients such as kubectl
and kopf branch on the machine-readable reasons (``NotFound``, ``AlreadyExists``, ``Conflict``,
``Invalid``), so the sandbox raises :class:`ApiError` and renders it itself.
"""

from __future__ import annotations

from typing import Any

import aiohttp.web


class ApiError(Exception):
    """An API failure rendered as a ``v1/Status`` with the given HTTP code and reason."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> dict[str, Any]:
        """The ``Status`` object as kube-apiserver would send it."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body

    def response(self) -> aiohttp.web.Response:
        """The error as an HTTP response."""
        return aiohttp.web.json_response(self.status(), status=self.code)


def qualified(plural: str, group: str) -> str:
    """``deployments.apps`` / ``pods``: the resource name used in error messages."""
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, group: str, name: str) -> ApiError:
    """404 NotFound for a named object."""
    res = qualified(plural, group)
    details = {"name": name, "group": group, "kind": plural}
    return ApiError(404, "NotFound", f'{res} "{name}" not found', details)


def already_exists(plural: str, group: str, name: str) -> ApiError:
    """409 AlreadyExists on create of an existing name."""
    res = qualified(plural, group)
    details = {"name": name, "group": group, "kind": plural}
    return ApiError(409, "AlreadyExists", f'{res} "{name}" already exists', details)


def conflict(plural: str, group: str, name: str) -> ApiError:
    """409 Conflict on a stale resourceVersion (optimistic concurrency)."""
    res = qualified(plural, group)
    msg = (
        f'Operation cannot be fulfilled on {res} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return ApiError(409, "Conflict", msg, {"name": name, "group": group, "kind": plural})


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 Invalid naming every offending field the way kube-apiserver does.

    ``causes`` are ``(field path, message)``; a message that does not start with one of the
    apiserver's own prefixes ("Invalid value", "Required value", ...) gets "Invalid value: ".
    """
    parts = [f"{field}: {_with_prefix(msg)}" if field else _with_prefix(msg) for field, msg in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    qual = f"{kind}.{group}" if group else kind
    details = {
        "name": name,
        "group": group,
        "kind": kind,
        "causes": [
            {"reason": "FieldValueInvalid", "message": _with_prefix(msg), "field": field}
            for field, msg in causes
        ],
    }
    return ApiError(422, "Invalid", f'{qual} "{name}" is invalid: {joined}', details)


_PREFIXES = (
    "Invalid value",
    "Required value",
    "Unsupported value",
    "Forbidden",
    "Too long",
    "Too many",
    "Duplicate value",
    "Not found",
)


def _with_prefix(message: str) -> str:
    return message if message.startswith(_PREFIXES) else f"Invalid value: {message}"


def bad_request(message: str) -> ApiError:
    """400 BadRequest (malformed body, namespace mismatch, unsupported patch type)."""
    return ApiError(400, "BadRequest", message)


def method_not_allowed(message: str) -> ApiError:
    """405 MethodNotAllowed for verbs a resource does not support."""
    return ApiError(405, "MethodNotAllowed", message)
