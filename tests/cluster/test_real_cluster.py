"""End to end on a real cluster (kind, k3d, a GPU cluster). Skipped without KUBECONFIG.

Run: `KUBECONFIG=~/.kube/config DEEPSEEK_E2E_IMAGE=registry/worker:tag .venv/bin/pytest -m e2e_cluster tests/cluster`
with the CRD installed and the operator running (`helm install ...`, see docs/install.md). The test
creates a namespace of its own and deletes it afterwards. With DEEPSEEK_E2E_GPUS=0 the workers run on CPU
with the tiny model (DEEPSEEK_E2E_MODEL=tiny), so a kind cluster without GPUs works too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = [
    pytest.mark.e2e_cluster,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="needs a real cluster: set KUBECONFIG"),
]
IMAGE = os.environ.get("DEEPSEEK_E2E_IMAGE", "registry.example.com/deepseek-worker:1.0.0")
MODEL = os.environ.get("DEEPSEEK_E2E_MODEL", "tiny")
GPUS = int(os.environ.get("DEEPSEEK_E2E_GPUS", "0"))
TIMEOUT = os.environ.get("DEEPSEEK_E2E_TIMEOUT", "15m")


def kubectl(*args: str, stdin: str | None = None) -> str:
    binary = shutil.which("kubectl") or "kubectl"
    done = subprocess.run([binary, *args], input=stdin, capture_output=True, text=True, timeout=1200, check=False)
    if done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr or done.stdout}")
    return done.stdout


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"dsd-e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def manifest(name: str, image: str, auto_rollback: bool = True) -> str:
    return json.dumps({
        "apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": {"name": name},
        "spec": {"image": image, "replicas": 1, "model": {"id": MODEL, "maxModelLen": 512, "loadTimeoutSeconds": 600},
                 "serving": {"maxNewTokens": 64}, "resources": {"gpus": GPUS, "cpu": "1", "memory": "2Gi"},
                 "rollout": {"progressDeadlineSeconds": 600, "autoRollback": auto_rollback}}})


def get(namespace: str, name: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("-n", namespace, "get", "dsd", name, "-o", "json")))


def test_apply_ready_then_bad_image_rolls_back(namespace: str) -> None:
    kubectl("-n", namespace, "apply", "-f", "-", stdin=manifest("chat", IMAGE))
    kubectl("-n", namespace, "wait", "--for=condition=Ready", "dsd/chat", f"--timeout={TIMEOUT}")
    obj = get(namespace, "chat")
    assert obj["status"]["image"] == IMAGE
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]

    bad = IMAGE.rsplit(":", 1)[0] + ":does-not-exist-" + uuid.uuid4().hex[:6]
    kubectl("-n", namespace, "patch", "dsd", "chat", "--type=merge", "-p", json.dumps({"spec": {"image": bad}}))
    kubectl("-n", namespace, "wait", "--for=condition=Degraded", "dsd/chat", f"--timeout={TIMEOUT}")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        obj = get(namespace, "chat")
        degraded = next(c for c in obj["status"]["conditions"] if c["type"] == "Degraded")
        if degraded["reason"] == "RolledBack" and obj["status"]["image"] == IMAGE:
            break
        time.sleep(5)  # polling a real cluster; bounded by the deadline above
    else:
        pytest.fail(f"no rollback to {IMAGE}: {obj['status']}")
    assert obj["status"]["failedImage"] == bad
    kubectl("-n", namespace, "wait", "--for=condition=Available", "dsd/chat", f"--timeout={TIMEOUT}")
