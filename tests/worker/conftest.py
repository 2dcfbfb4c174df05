"""Shared worker-test fixtures. `tiny_model_dir` is session-scoped and used by engine and HTTP tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Never touch the network: a hub lookup would retry for ~50 s before failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny DeepSeek-V3 model directory (built once, cached; see deepseek_worker.tiny)."""
    from deepseek_worker.tiny import build_tiny_model

    return build_tiny_model()
