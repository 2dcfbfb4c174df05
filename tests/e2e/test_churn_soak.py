"""Churn soak on the real control plane: hundreds of create/delete cycles with watch restarts injected.

Guards what holds today: the operator forgets every deleted resource (its managed-resources gauge is
back at 0), its memory stays bounded, no child outlives its owner, and it exits 0 without a
traceback (the `start_operator` fixture checks that for every e2e test).
"""

from __future__ import annotations

import json
import pathlib

import pytest

from tests.e2e.conftest import RealCluster, StartOperator, eventually

CYCLES = 300
NAMES = 5  # resources churned in turn: a create often meets the previous one's deletion
OWNED_KINDS = ("deployments", "services", "poddisruptionbudgets", "pods")


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def resource(name: str) -> dict[str, object]:
    return {"apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment",
            "metadata": {"name": name, "labels": {"soak": "churn"}},
            "spec": {"image": "registry.example.com/deepseek-worker:1.0.0", "replicas": 1,
                     "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}}}


@pytest.mark.real_only(reason="a soak of the real apiserver's watches; the sandbox shares this event loop")
async def test_churn_soak_forgets_everything_with_bounded_memory(cluster: RealCluster,
                                                                 start_operator: StartOperator) -> None:
    operator = await start_operator(DEEPSEEK_OPERATOR_WATCH_TIMEOUT_SECONDS="2")
    dsd = cluster.resource("dsd")
    rss: dict[int, float] = {}
    for i in range(CYCLES):
        name = f"churn-{i % NAMES}"
        created = cluster.http.post(dsd.path("default"), content=json.dumps(resource(name)),
                                    headers={"Content-Type": "application/json"})
        assert created.status_code in (201, 409), created.text  # 409: the previous one is still going
        deleted = cluster.http.delete(dsd.path("default", name))
        assert deleted.status_code in (200, 202, 404), deleted.text
        if i in (100, CYCLES - 1):
            rss[i] = rss_mib(operator.proc.pid)

    await eventually(lambda: not cluster.objects("dsd", "default"), timeout=120, what="every resource deleted")

    async def forgotten() -> bool:
        return await operator.metric("deepseek_operator_managed_deployments") == 0

    await eventually(forgotten, timeout=120, interval=0.5, what="the managed-resources gauge back at 0")
    await eventually(lambda: not any(cluster.objects(kind, "default", "deepseek.ai/deployment")
                                     for kind in OWNED_KINDS), timeout=120, interval=0.5,
                     what="every child garbage-collected")
    # The operator's watch requests on DeepSeekDeployments since the test began, from the audit log.
    watches = [e for e in cluster.audit.events() if e["verb"] == "watch"
               and (e.get("objectRef") or {}).get("resource") == "deepseekdeployments"]
    growth = rss[CYCLES - 1] - rss[100]
    print(f"churn soak: {CYCLES} cycles, operator RSS {rss[100]:.0f} -> {rss[CYCLES - 1]:.0f} MiB, "
          f"{len(watches)} watches of deepseekdeployments")
    assert len(watches) >= 3, "the injected watch restarts did not happen"
    assert growth < 40, f"operator RSS grew {growth:.0f} MiB over {CYCLES - 100} cycles: {rss}"
