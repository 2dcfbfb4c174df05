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

    async def deploy(self, name: str, image: str, timeout: str | None = "90s") -> tuple[int, str]:
        """deploy.sh; `timeout=None` leaves the deadline to deploy.sh (derived from the resource)."""
        argv = ["bash", str(DEPLOY), name, image, "--namespace", NAMESPACE, "--interval", "1"]
        argv += ["--timeout", timeout] if timeout is not None else []
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


def manifest(name: str, **extra: Any) -> str:
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
                **extra,
            },
        }
    )


async def ready_with(cluster: Cluster, name: str, image: str, **extra: Any) -> None:
    """The first rollout done: deploy.sh starts from a serving resource, like in production."""
    await cluster.kubectl("apply", "-f", "-", stdin=manifest(name, **extra))
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


async def test_the_deadline_is_derived_from_the_stored_resource(cluster: Cluster) -> None:
    """Without --timeout, deploy.sh reads replicas and budgets with the real kubectl's jsonpath (the
    stored defaults included: Auto, surgeTimeoutSeconds 120): the canary, 2 replicas one at a time,
    needs 10 + 10 + 120 s, the primary 10 + 120 s; plus the 300 s margin."""
    canary = {"name": "canary", "weight": 10, "replicas": 2}
    await ready_with(cluster, "chat", OLD, variants=[canary])
    rc, out = await cluster.deploy("chat", GOOD, timeout=None)
    assert rc == 0, out
    assert ("timeout 7m20s derived from the resource (variant canary: 2 replica(s), 1 at a time (Auto), "
            "loadTimeoutSeconds 10, progressDeadlineSeconds 10, surgeTimeoutSeconds 120, margin 300s)") in out, out
