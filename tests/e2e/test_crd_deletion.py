"""Deleting the CRD never waits for the operator (no finalizer on any DeepSeekDeployment).

Runs after every other test (`after_suite`): it deletes the session's CRD, then installs it again.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import ROOT, Kubectl, RealCluster, StartOperator, eventually

CRD = ROOT / "crds" / "deepseek.ai_deepseekdeployments.yaml"


def resource(name: str) -> str:
    return json.dumps({"apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": {"name": name},
                       "spec": {"image": "registry.example.com/deepseek-worker:1.0.0",
                                "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}}})


@pytest.mark.after_suite
@pytest.mark.real_only(reason="CRD deletion and the garbage collector of the real apiserver")
async def test_crd_deletion_with_the_operator_stopped_completes(cluster: RealCluster, kubectl: Kubectl,
                                                               start_operator: StartOperator) -> None:
    operator = await start_operator()
    for name in ("crd-a", "crd-b"):
        await kubectl("apply", "-f", "-", stdin=resource(name))
    await eventually(lambda: len(cluster.objects("deployments", "default", "deepseek.ai/deployment")) == 2,
                     timeout=60, what="both resources reconciled")
    await operator.stop()
    try:
        await kubectl("delete", "crd", "deepseekdeployments.deepseek.ai", "--timeout=60s", timeout=90)
        await eventually(lambda: not cluster.objects("deployments", "default", "deepseek.ai/deployment"),
                         timeout=60, what="the children garbage-collected with their owners")
    finally:  # the CRD back for anyone reusing this cluster
        await kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        await kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/deepseekdeployments.deepseek.ai")
