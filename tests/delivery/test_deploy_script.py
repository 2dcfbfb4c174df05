"""scripts/deploy.sh end to end: the sandbox cluster in this event loop, the real `deepseek-operator`
in a subprocess, the real kubectl; a good image rolls out (exit 0), a never-ready one is rolled back
(exit 1, the old image back in status.image).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import run_process

from .conftest import ROOT, TOOLS

DEPLOY = ROOT / "scripts" / "deploy.sh"
KUBECTL = TOOLS / "kubectl"
OPERATOR = Path(sys.executable).parent / "deepseek-operator"
OLD = "registry.example.com/deepseek-worker:1.0.0"
GOOD = "registry.example.com/deepseek-worker:1.1.0"
BAD = "registry.example.com/deepseek-worker:never-ready"
NAMESPACE = "default"


def _missing() -> str | None:
    for module in ("deepseek_sandbox.sandbox", "deepseek_operator.handlers", "deepseek_operator.main"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not written yet"
    if not OPERATOR.exists():
        return f"{OPERATOR} is not installed"
    if not KUBECTL.exists():
        return "kubectl is missing: run `make bootstrap`"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@dataclass
class Cluster:
    kubeconfig: Path
    env: dict[str, str]

    async def kubectl(self, *args: str, stdin: str | None = None) -> str:
        code, out = await run_process([str(KUBECTL), "--namespace", NAMESPACE, *args], self.env, stdin, 60)
        assert code == 0, f"kubectl {' '.join(args)}: {out}"
        return out

    async def dsd(self, name: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(
            await self.kubectl("get", "deepseekdeployments.deepseek.ai", name, "-o", "json")
        )
        return loaded

    async def deploy(self, name: str, image: str, timeout: str = "90s") -> tuple[int, str]:
        argv = ["bash", str(DEPLOY), name, image, "--namespace", NAMESPACE, "--timeout", timeout, "--interval", "1"]
        return await run_process(argv, self.env, timeout=150)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    from deepseek_sandbox import Sandbox

    async with Sandbox(ROOT / "crds", ready_delay=0.3) as sandbox:
        env = {
            **os.environ,
            **sandbox.kubectl_env(),
            "KUBECTL": str(KUBECTL),
            "DEEPSEEK_OPERATOR_METRICS_PORT": "0",
            "DEEPSEEK_OPERATOR_RESYNC_SECONDS": "1",
        }
        log_path = tmp_path / "operator.log"
        with log_path.open("wb") as log:
            operator = await asyncio.create_subprocess_exec(
                str(OPERATOR),
                "--standalone",
                f"--namespace={NAMESPACE}",
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
        try:
            yield Cluster(sandbox.kubeconfig_path, env)
        finally:
            if operator.returncode is None:
                operator.terminate()
                try:
                    await asyncio.wait_for(operator.wait(), 20)
                except TimeoutError:
                    operator.kill()
                    await operator.wait()
            print(log_path.read_text(errors="replace")[-4000:])


def manifest(name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "deepseek.ai/v1alpha1",
            "kind": "DeepSeekDeployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "image": OLD,
                "replicas": 1,
                "model": {"id": "deepseek-ai/tiny", "loadTimeoutSeconds": 10},
                "rollout": {"progressDeadlineSeconds": 10, "autoRollback": True},
            },
        }
    )


async def ready_with(cluster: Cluster, name: str, image: str) -> None:
    """The first rollout done: deploy.sh starts from a serving resource, like in production."""
    await cluster.kubectl("apply", "-f", "-", stdin=manifest(name))
    rc, out = await cluster.deploy(name, image, timeout="60s")
    assert rc == 0, out


async def test_good_image_rolls_out(cluster: Cluster) -> None:
    await ready_with(cluster, "chat", OLD)
    rc, out = await cluster.deploy("chat", GOOD)
    assert rc == 0, out
    obj = await cluster.dsd("chat")
    assert obj["status"]["image"] == GOOD
    assert obj["status"]["observedGeneration"] >= obj["metadata"]["generation"]
    assert "chat" in out.splitlines()[-1], "deploy.sh ends with `kubectl get dsd NAME`"


async def test_never_ready_image_is_rolled_back(cluster: Cluster) -> None:
    await ready_with(cluster, "chat", OLD)
    rc, out = await cluster.deploy("chat", BAD)
    assert rc == 1, out
    assert "RolledBack" in out
    obj = await cluster.dsd("chat")
    assert obj["spec"]["image"] == BAD
    assert obj["status"]["image"] == OLD
    assert obj["status"].get("failedImage") == BAD
