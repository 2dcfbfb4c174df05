"""Every worker pod the operator renders meets Pod Security "restricted" (checked with tests/pss.py)."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from pss import object_violations

if importlib.util.find_spec("deepseek_operator.render.workload") is None:  # pragma: no cover
    pytest.skip("deepseek_operator.render.workload is not written yet", allow_module_level=True)

from deepseek_operator.api import parse_spec
from deepseek_operator.render.common import Owner
from deepseek_operator.render.workload import render_workload

OWNER = Owner(name="chat", namespace="llm", uid="uid-1")
BASE: dict[str, Any] = {"image": "registry.example.com/deepseek-worker:1.2.0", "model": {"id": "deepseek-ai/m"}}

SPECS: dict[str, dict[str, Any]] = {
    "minimal": BASE,
    "pvc model, gpus, auth secrets": {
        **BASE,
        "model": {"id": "r1-7b", "source": {"pvc": {"claimName": "models", "subPath": "r1-7b"}}},
        "resources": {"gpus": 2, "gpuResourceName": "nvidia.com/gpu", "cpu": "8", "memory": "64Gi", "shmSize": "16Gi"},
        "auth": {"apiKeysSecretRef": {"name": "keys"}, "jwt": {"secretRef": {"name": "jwt"}}},
    },
    "canary variant": {
        **BASE,
        "variants": [{"name": "canary", "weight": 10, "image": "registry.example.com/deepseek-worker:1.3.0"}],
    },
}


@pytest.mark.parametrize("raw", SPECS.values(), ids=SPECS.keys())
def test_worker_pods_meet_restricted(raw: dict[str, Any]) -> None:
    objects = render_workload(OWNER, parse_spec(raw))
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert deployments, "render_workload rendered no Deployment"
    assert [v for o in objects for v in object_violations(o)] == []
