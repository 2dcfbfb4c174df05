"""`kubectl explain dsd...` shows the CRD's descriptions, enums and fields (the sandbox publishes the
CRD's schema as OpenAPI v3, as a real apiserver does)."""

from __future__ import annotations

import os
import pathlib

import pytest

from deepseek_operator.sandbox import Sandbox
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
        env = {**os.environ, "KUBECONFIG": str(sb.kubeconfig_path)}
        for path, expected in CASES:
            code, out = await run_process([str(KUBECTL), "explain", path], env, timeout=60)
            assert code == 0, out
            for text in expected:
                assert text in out, f"kubectl explain {path}: {text!r} missing in\n{out}"
