"""`kubectl explain dsd...` shows the CRD's descriptions, enums and fields (the sandbox publishes the
CRD's schema as OpenAPI v3, as a real apiserver does)."""

from __future__ import annotations

import os
import pathlib

import pytest

from deepseek_sandbox import Sandbox
from tests.e2e.conftest import free_port
from tests.waiting import run_process

ROOT = pathlib.Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"

CASES = [
    ("dsd.spec.model.quantization", ["FIELD: quantization <string>", "nf4", "bitsandbytes quantization"]),
    ("dsd.spec.rollout", ["autoRollback", "maxSurge", "progressDeadlineSeconds", "then it has failed"]),
    ("deepseekdeployments.status.conditions", ["lastTransitionTime", "observedGeneration"]),
    ("dsd.spec.variants.weight", ["Percent of traffic while this variant is ready"]),
]


async def test_kubectl_explain_shows_the_crd_documentation() -> None:
    if not KUBECTL.exists():
        pytest.fail("kubectl missing at .tools/bin/kubectl: run `make bootstrap`")
    async with Sandbox(ROOT / "crds") as sb:
        env = {**os.environ, **sb.kubectl_env()}
        for path, expected in CASES:
            code, out = await run_process([str(KUBECTL), "explain", path], env, timeout=60)
            assert code == 0, out
            for text in expected:
                assert text in out, f"kubectl explain {path}: {text!r} missing in\n{out}"


async def test_explain_works_on_a_port_an_earlier_sandbox_had(tmp_path: pathlib.Path) -> None:
    """Regression (CI, stop 6): kubectl's discovery cache is keyed by host:port and lives for hours. A
    sandbox on a reused port must not be answered from the cache an earlier sandbox (without our CRD)
    left, which made `kubectl explain dsd` fail with "doesn't have a resource type"."""
    port, kubeconfig = free_port(), tmp_path / "kubeconfig"  # the same --port and --kubeconfig twice
    async with Sandbox(None, port=port, kubeconfig_path=kubeconfig) as first:
        env = {**os.environ, **first.kubectl_env()}
        code, out = await run_process([str(KUBECTL), "api-resources"], env, timeout=60)
        assert code == 0 and "deepseekdeployments" not in out, out
        assert any(first.kubectl_cache_dir.rglob("*.json")), "kubectl cached no discovery: the test proves nothing"
    async with Sandbox(ROOT / "crds", port=port, kubeconfig_path=kubeconfig) as second:
        assert second.kubectl_cache_dir == first.kubectl_cache_dir and not any(second.kubectl_cache_dir.iterdir())
        code, out = await run_process([str(KUBECTL), "explain", "dsd.spec.rollout"],
                                      {**os.environ, **second.kubectl_env()}, timeout=60)
        assert code == 0 and "autoRollback" in out, out
