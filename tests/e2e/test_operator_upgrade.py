"""Issue 19 item 2 end to end: upgrading the operator restarts no worker (docs/rollouts.md).

On the real control plane, the previous release's operator (PREVIOUS, taken from git history with
`git archive`) creates a resource's workers and is stopped; this operator then takes over the
unchanged resource. Its rendering differs (checked below), yet the workers keep running: the same
pods, the same ReplicaSet, the Deployment's generation unchanged, and OperatorUpgradePending says an
upgrade is pending. The next spec change rolls the new template out.

The previous operator runs against this commit's CRD (the cluster is shared with other tests): its
models refuse unknown fields, so in its copy `extra="forbid"` becomes `extra="ignore"`, which is what
its own CRD would have done to the fields added since (structural pruning drops them).
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from deepseek_operator.api import parse_spec
from deepseek_operator.render.common import Owner
from deepseek_operator.render.workload import render_workload
from tests.e2e.conftest import ROOT, Cluster, Kubectl, Operator, StartOperator, condition, eventually, free_port
from tests.real_cluster import RealCluster

# The commit before 61a0f24 (workers report their measurements): its worker pods have no report
# ServiceAccount, no token and no DEEPSEEK_REPORT_* env, so this operator renders a different template.
PREVIOUS = "b593cfc"
IMAGE = "registry.example.com/deepseek-worker:1.0.0"
PODS = "deepseek.ai/deployment=chat,deepseek.ai/variant=primary"
SPEC: dict[str, Any] = {
    "image": IMAGE, "replicas": 2,
    "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "loadTimeoutSeconds": 10},
    "resources": {"gpus": 0, "cpu": "1", "memory": "1Gi", "shmSize": "1Gi"},
    # CPU workers on the GPU nodes (their taint tolerated): no GPU taken from tests running alongside.
    "scheduling": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    "rollout": {"strategy": "Replace", "maxUnavailable": 1, "progressDeadlineSeconds": 60},
}

pytestmark = pytest.mark.real_only("runs two operator releases against the real Deployment controller")


def previous_operator(tmp: pathlib.Path) -> pathlib.Path:
    """PREVIOUS's operator package under `tmp` (a full clone has it; a shallow one fails here, loudly)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS, "operator"], capture_output=True,
                             check=False, timeout=60)
    assert archive.returncode == 0, f"git archive {PREVIOUS} (a full clone is needed): {archive.stderr.decode()}"
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True, timeout=60)
    models = tmp / "operator" / "deepseek_operator" / "api.py"
    text = models.read_text()
    assert text.count('extra="forbid"') == 1, "PREVIOUS's models changed: adapt the tolerance patch"
    models.write_text(text.replace('extra="forbid"', 'extra="ignore"'))
    return tmp / "operator"


async def start_previous(cluster: RealCluster, package: pathlib.Path, log_path: pathlib.Path) -> Operator:
    """PREVIOUS's operator as the chart's ServiceAccount, its package first on the path."""
    port = free_port()
    env = {**os.environ, **cluster.operator_env(), "DEEPSEEK_OPERATOR_METRICS_PORT": str(port),
           "DEEPSEEK_OPERATOR_RESYNC_SECONDS": "1", "PYTHONPATH": str(package)}
    code = ("import sys; import deepseek_operator.main as m; "
            f"assert m.__file__.startswith({str(package)!r}), m.__file__; sys.exit(m.cli())")
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, "--standalone", "--namespace=default", "--verbose", stdout=log,
            stderr=asyncio.subprocess.STDOUT, env=env)
    return Operator(proc, port, log_path)


def this_release_template() -> dict[str, Any]:
    owner = Owner("chat", "default", "uid", 1)
    deployment = next(c for c in render_workload(owner, parse_spec(SPEC)) if c["kind"] == "Deployment")
    return dict(deployment["spec"]["template"])


def workers(cluster: Cluster) -> dict[str, str]:
    """Running primary pods (not terminating): uid -> their ReplicaSet."""
    pods = cluster.objects("pods", "default", PODS)
    return {p["metadata"]["uid"]: p["metadata"]["ownerReferences"][0]["name"] for p in pods
            if not p["metadata"].get("deletionTimestamp")}


def replica_sets(cluster: Cluster) -> set[str]:
    return {rs["metadata"]["name"] for rs in cluster.objects("replicasets.apps", "default", PODS)}


def revision(deployment: dict[str, Any]) -> str:
    return str(deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"])


def ready_at(cluster: Cluster, generation: int) -> dict[str, Any] | None:
    obj = cluster.get("dsd", "default", "chat") or {}
    status = obj.get("status", {})
    if status.get("observedGeneration") == generation and condition(obj, "Ready").get("status") == "True":
        return obj
    return None


async def test_an_operator_upgrade_restarts_no_worker_until_the_next_spec_change(
        cluster: Cluster, kubectl: Kubectl, start_operator: StartOperator, tmp_path: pathlib.Path) -> None:
    assert isinstance(cluster, RealCluster)
    previous = await start_previous(cluster, previous_operator(tmp_path), tmp_path / "previous.log")
    try:
        await kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": {"name": "chat"},
            "spec": SPEC}))
        await eventually(lambda: ready_at(cluster, 1) and len(workers(cluster)) == 2, timeout=60,
                         what=f"Ready under {PREVIOUS}'s operator")
    except BaseException:  # pytest.fail's Failed included: show why
        print(previous.log())
        raise
    finally:
        await previous.stop()
    assert previous.proc.returncode == 0, previous.log()
    before = cluster.get("deployments.apps", "default", "chat-primary") or {}
    running, sets_before = workers(cluster), replica_sets(cluster)
    # The releases really differ: this one renders another template for the same spec.
    assert before["spec"]["template"]["spec"].get("serviceAccountName") is None
    assert this_release_template()["spec"]["serviceAccountName"] == "chat-primary-report"

    await start_operator()

    def pending() -> dict[str, Any]:
        obj = cluster.get("dsd", "default", "chat") or {}
        cond = condition(obj, "OperatorUpgradePending")
        return cond if cond.get("status") == "True" else {}

    cond = await eventually(pending, timeout=30, what="OperatorUpgradePending True")
    assert "primary" in cond["message"] and cond["reason"] == "TemplateHeld", cond
    after = cluster.get("deployments.apps", "default", "chat-primary") or {}
    # 0 worker restarts: the same template, revision and ReplicaSets, the same pods. (Not the generation:
    # a Deployment's counts annotation changes too, and the intent annotation was added.)
    assert after["spec"]["template"] == before["spec"]["template"]
    assert revision(after) == revision(before) and replica_sets(cluster) == sets_before
    assert workers(cluster) == running
    assert ready_at(cluster, 1), "still Ready: the pods serve as before"
    wide = (await kubectl("get", "dsd", "chat", "-o", "wide")).splitlines()
    assert "UPGRADE" in wide[0].split() and "TemplateHeld" in wide[1].split(), wide

    # The next spec change rolls everything, under rollout.strategy (Replace, one pod at a time).
    await kubectl("patch", "dsd", "chat", "--type=merge", "-p",
                  json.dumps({"spec": {"rateLimit": {"requestsPerMinute": 600, "burst": 60}}}))

    def rolled() -> bool:
        dep = cluster.get("deployments.apps", "default", "chat-primary") or {}
        pods = workers(cluster)
        return bool(ready_at(cluster, 2)) and len(pods) == 2 and not set(pods) & set(running) and \
            dep["spec"]["template"]["spec"].get("serviceAccountName") == "chat-primary-report"

    await eventually(rolled, timeout=60, what="the new template rolled out after the spec change")
    done = condition(cluster.get("dsd", "default", "chat") or {}, "OperatorUpgradePending")
    assert (done["status"], done["reason"]) == ("False", "UpToDate"), done
