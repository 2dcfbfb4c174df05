"""Property-based fuzzing of the app's own OpenAPI schema (schemathesis, in-process ASGI):
valid and invalid inputs never produce a server error, and every 4xx has the one error shape."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fakes import FakeEngine, make_app
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

app, _engine = make_app(FakeEngine(max_model_len=128), max_new_tokens=32)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.mark.slow
@schema.include(path_regex="^/(v1|auth|health)/").parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # reproducible: the same examples on every run
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: Any) -> None:
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"}
        assert error["code"] == response.status_code
