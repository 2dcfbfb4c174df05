"""Fixtures for the sandbox's own tests: a running sandbox, kubectl, and deadline polling."""

from __future__ import annotations

import os
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from deepseek_sandbox import Sandbox
from tests.waiting import eventually, run_process

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parents[1]
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
STAND_IN_CRDS = HERE / "crds"

Kubectl = Callable[..., Awaitable[tuple[int, str]]]


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """A sandbox with the stand-in CRD, fast readiness, 2 nodes x 8 GPUs."""
    async with Sandbox(STAND_IN_CRDS, ready_delay=0.2) as sb:
        yield sb


@pytest.fixture
def kubectl(sandbox: Sandbox) -> Kubectl:
    """Run the real kubectl against the sandbox without blocking the event loop."""
    if not KUBECTL.exists():
        pytest.skip("kubectl 1.36 not installed at .tools/bin/kubectl")

    async def run(*args: str, stdin: str | None = None, timeout: float = 30) -> tuple[int, str]:
        env = {**os.environ, **sandbox.kubectl_env()}
        return await run_process([str(KUBECTL), "--kubeconfig", str(sandbox.kubeconfig_path), *args], env, stdin,
                                 timeout)

    return run


@pytest.fixture
def wait_for() -> Callable[..., Awaitable[Any]]:
    """The :func:`eventually` poller as a fixture."""
    return eventually


DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: {surge}, maxUnavailable: {unavailable}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
        - name: worker
          image: {image}
          resources: {{limits: {{nvidia.com/gpu: {gpus}}}}}
"""


def deployment(name: str, image: str = "registry.example.com/worker:1", replicas: int = 2,
               surge: Any = 0, unavailable: Any = 1, gpus: int = 0) -> str:
    """A Deployment manifest for kubectl apply."""
    return DEPLOYMENT.format(name=name, image=image, replicas=replicas, surge=surge, unavailable=unavailable, gpus=gpus)
