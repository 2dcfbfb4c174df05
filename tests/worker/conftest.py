"""Shared worker-test fixtures. `tiny_model_dir` is session-scoped and used by engine and HTTP tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from feature_server import sdk, serve

# Never touch the network: a hub lookup would retry for ~50 s before failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny DeepSeek-V3 model directory (built once, cached; see deepseek_worker.testing.tiny)."""
    from deepseek_worker.testing.tiny import build_tiny_model

    return build_tiny_model()


@pytest.fixture(scope="module")
def url(tiny_model_dir: Path) -> Iterator[str]:
    """A worker on the tiny model for one test module (feature_server.serve); modules may define their own."""
    with serve(tiny_model_dir) as base:
        yield base


@pytest.fixture
def client(url: str) -> openai.OpenAI:
    """The openai SDK against `url`."""
    return sdk(url)
