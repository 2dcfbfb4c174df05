"""The routes a relaying front end forwards: proxy mode (to its engine) and gateway mode (to the pods).

`add_forwarded_routes(app, respond)` adds each forwarded route under every API prefix, and the openai
SDK's models.retrieve; `respond` builds the Response of one request from what every relay needs: the
request, the method, the engine's path, the body to send (a stream that did not ask for usage asks for
it all the same, so it can be metered: relay.py) and whether the usage event is then held back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from .limits import API_PREFIXES
from .relay import ask_for_usage

# (method, our path under each API prefix, the engine's path). /v1/models lists the engine's served
# model name (the operator passes spec.model's served name to the engine).
FORWARDED = (
    ("POST", "/chat/completions", "/v1/chat/completions"),
    ("POST", "/completions", "/v1/completions"),
    ("POST", "/embeddings", "/v1/embeddings"),
    ("GET", "/models", "/v1/models"),
)
# (request, method, path, body, hide_usage, started: perf_counter at arrival) -> the Response
Respond = Callable[[Request, str, str, bytes, bool, float], Response]


def add_forwarded_routes(app: FastAPI, respond: Respond) -> None:
    """Each forwarded route under /v1 and without it, as our own routes are (routes/__init__.py)."""

    def forward(method: str, target: str) -> Any:
        async def handler(request: Request) -> Response:
            started = time.perf_counter()
            body = await request.body()  # within the body cap (limits.AdmissionMiddleware)
            path = target + "/" + request.path_params["model_id"] if "model_id" in request.path_params else target
            asked = ask_for_usage(body) if method == "POST" and target != "/v1/embeddings" else None
            return respond(request, method, path, asked or body, asked is not None, started)

        return handler

    for prefix in API_PREFIXES:
        for method, ours, target in FORWARDED:
            app.add_api_route(prefix + ours, forward(method, target), methods=[method], response_model=None)
        # The openai SDK's models.retrieve; an engine without that route answers its own 404.
        app.add_api_route(prefix + "/models/{model_id:path}", forward("GET", "/v1/models"), methods=["GET"],
                          response_model=None)
