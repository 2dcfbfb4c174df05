"""Helpers (no tests) for the tools / structured output / logprobs suites: the tiny model served by
uvicorn with a context long enough for tool prompts (the `url` and `client` fixtures of conftest.py
serve it), and jsonschema checks."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jsonschema
import openai
from fakes import serve_in_thread, wait_until

from deepseek_worker.engine import Engine
from deepseek_worker.server import build_app
from deepseek_worker.settings import Settings

MODEL = "deepseek-chat"
T = TypeVar("T")


@contextmanager
def serve(model_dir: Path) -> Iterator[str]:
    """Base URL of a ready worker on the tiny model (2048-token context, 256 new tokens)."""
    settings = Settings(model=str(model_dir), served_model_name=MODEL, max_model_len=2048, max_new_tokens=256)
    app = build_app(Engine(settings.engine_config()), settings)
    with serve_in_thread(app) as url:
        wait_until(lambda: httpx.get(url + "/health/ready").status_code == 200, 120, "model load")
        yield url


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


def concurrently(fn: Callable[[int], T], n: int) -> list[T]:
    """fn(0..n-1) from 8 threads: the requests share the engine's batch (and finish sooner)."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(fn, range(n)))


def validates(text: str, schema: dict[str, Any]) -> Any:
    """Parse `text` as JSON and validate it against `schema` (raises with the reason)."""
    value = json.loads(text)
    jsonschema.validate(value, schema)
    return value
