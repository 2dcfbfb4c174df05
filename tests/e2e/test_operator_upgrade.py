"""Issue 19 item 2 end to end: upgrading the operator restarts no worker (docs/rollouts.md).

On the real control plane, the previous release's operator (PREVIOUS, taken from git history with
`git archive`) creates a resource's workers and is stopped; this operator then takes over the
unchanged resource. Its rendering differs (checked below), yet the workers keep running: the same
pods, the same ReplicaSet, the Deployment not even written, Ready throughout, and
OperatorUpgradePending says an upgrade is pending. The next spec change rolls the new template out.

Then the managedFields rule of stored_defaults.py against what this apiserver records for a field
the CRD defaults (rollout.operatorUpgrades), for each way a user creates a resource; and a stored
`networkPolicy.enabled: false` default reported by this operator, not switched.

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
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from deepseek_operator.api import parse_spec
from deepseek_operator.render.common import Owner
from deepseek_operator.render.workload import render_workload
from deepseek_operator.stored_defaults import chosen_by_user
from deepseek_sandbox.real_cluster import RealCluster
from tests.e2e.conftest import ROOT, Kubectl, Operator, condition, eventually, free_port

# The commit before 61a0f24 (workers report their measurements): its worker pods have no report
# ServiceAccount, no token and no DEEPSEEK_REPORT_* env, so this operator renders a different template.
PREVIOUS = "b593cfc612d9973e276ca63377c7966770a08a97"  # the full hash: a short one may become ambiguous
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

# Real control plane only (two operator releases against the real Deployment controller and the real
# apiserver's managedFields), each test in a namespace of its own: `default`, which the `cluster`
# fixture empties after each test, is left alone.


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


async def start_release(cluster: RealCluster, namespace: str, log_path: pathlib.Path,
                        package: pathlib.Path | None = None) -> Operator:
    """An operator watching `namespace` as the chart's ServiceAccount, once its metrics answer: this
    commit's, or the one in `package` (first on the path)."""
    port = free_port()
    env = {**os.environ, **cluster.operator_env(), "DEEPSEEK_OPERATOR_METRICS_PORT": str(port),
           "DEEPSEEK_OPERATOR_RESYNC_SECONDS": "1", **({"PYTHONPATH": str(package)} if package else {})}
    where = str(package or ROOT / "operator")
    code = ("import sys; import deepseek_operator.main as m; "
            f"assert m.__file__.startswith({where!r}), m.__file__; sys.exit(m.cli())")
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, "--standalone", f"--namespace={namespace}", "--verbose", stdout=log,
            stderr=asyncio.subprocess.STDOUT, env=env)
    op = Operator(proc, port, log_path)

    async def up() -> bool:
        assert proc.returncode is None, f"operator exited {proc.returncode}:\n{op.log()}"
        try:
            await op.metric("deepseek_operator_reconciles_total")
            return True
        except httpx.HTTPError:
            return False

    await eventually(up, timeout=60, what=f"the metrics of the operator in {where}")
    return op


async def stopped(op: Operator) -> None:
    """SIGTERM; a clean exit and no traceback in its log."""
    await op.stop()
    op.check_clean_exit()


def this_release_template(namespace: str) -> dict[str, Any]:
    owner = Owner("chat", namespace, "uid", 1)
    deployment = next(c for c in render_workload(owner, parse_spec(SPEC)) if c["kind"] == "Deployment")
    return dict(deployment["spec"]["template"])


@dataclass
class Watch:
    """What the test reads of the resource `chat` in its namespace."""

    cluster: RealCluster
    namespace: str

    def workers(self) -> dict[str, str]:
        """Running primary pods (not terminating): uid -> their ReplicaSet."""
        pods = self.cluster.objects("pods", self.namespace, PODS)
        return {p["metadata"]["uid"]: p["metadata"]["ownerReferences"][0]["name"] for p in pods
                if not p["metadata"].get("deletionTimestamp")}

    def replica_sets(self) -> set[str]:
        return {rs["metadata"]["name"] for rs in self.cluster.objects("replicasets.apps", self.namespace, PODS)}

    def deployment(self) -> dict[str, Any]:
        return self.cluster.get("deployments.apps", self.namespace, "chat-primary") or {}

    def resource(self) -> dict[str, Any]:
        return self.cluster.get("dsd", self.namespace, "chat") or {}

    def ready_at(self, generation: int) -> dict[str, Any] | None:
        obj = self.resource()
        if obj.get("status", {}).get("observedGeneration") == generation and \
                condition(obj, "Ready").get("status") == "True":
            return obj
        return None

    def pending(self) -> dict[str, Any]:
        cond = condition(self.resource(), "OperatorUpgradePending")
        return cond if cond.get("status") == "True" else {}


def revision(deployment: dict[str, Any]) -> str:
    return str(deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"])


async def test_an_operator_upgrade_restarts_no_worker_until_the_next_spec_change(
        real_cluster: RealCluster, tmp_path: pathlib.Path) -> None:
    cluster, kubectl = real_cluster, Kubectl(real_cluster)
    with cluster.scratch_namespace("upgrade") as namespace:
        try:
            await upgrade_scenario(cluster, kubectl, namespace, previous_operator(tmp_path), tmp_path)
        finally:  # no operator runs now: drop a finalizer left behind, so that the namespace can go
            await kubectl("patch", "dsd", "chat", "-n", namespace, "--type=merge", "-p",
                          '{"metadata":{"finalizers":null}}', check=False)


async def upgrade_scenario(cluster: RealCluster, kubectl: Kubectl, namespace: str, package: pathlib.Path,
                           tmp_path: pathlib.Path) -> None:
    watch = Watch(cluster, namespace)
    previous = await start_release(cluster, namespace, tmp_path / "previous.log", package)
    try:
        await kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps({
            "apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": {"name": "chat"},
            "spec": SPEC}))
        await eventually(lambda: watch.ready_at(1) and len(watch.workers()) == 2, timeout=60,
                         what=f"Ready under {PREVIOUS[:7]}'s operator")
    except BaseException:  # pytest.fail's Failed included: show why
        print(previous.log())
        raise
    finally:
        await stopped(previous)
    before, running, sets_before = watch.deployment(), watch.workers(), watch.replica_sets()
    ready_before = condition(watch.resource(), "Ready")
    # The releases really differ: this one renders another template for the same spec.
    assert before["spec"]["template"]["spec"].get("serviceAccountName") is None
    assert this_release_template(namespace)["spec"]["serviceAccountName"] == "chat-primary-report"

    current = await start_release(cluster, namespace, tmp_path / "current.log")
    try:
        cond = await eventually(watch.pending, timeout=30, what="OperatorUpgradePending True")
        assert "primary" in cond["message"] and cond["reason"] == "TemplateHeld", cond
        # The intent is recorded where the CRD's schema keeps it (not pruned): the next spec change is told apart.
        assert watch.resource()["status"]["variants"][0].get("specHash"), watch.resource()["status"]
        after = watch.deployment()
        # 0 worker restarts: the same template, revision and ReplicaSets, the same pods; the Deployment
        # was not even written (its generation moves with any spec or annotation change).
        assert after["spec"]["template"] == before["spec"]["template"]
        assert after["metadata"]["generation"] == before["metadata"]["generation"]
        assert revision(after) == revision(before) and watch.replica_sets() == sets_before
        assert watch.workers() == running
        # Ready throughout: True, and not since a moment of this operator's (the same transition time).
        ready = condition(watch.resource(), "Ready")
        assert ready["status"] == "True" and ready["lastTransitionTime"] == ready_before["lastTransitionTime"], ready
        wide = (await kubectl("get", "dsd", "chat", "-n", namespace, "-o", "wide")).splitlines()
        assert "UPGRADE" in wide[0].split() and "TemplateHeld" in wide[1].split(), wide

        # The next spec change rolls everything, under rollout.strategy (Replace, one pod at a time).
        await kubectl("patch", "dsd", "chat", "-n", namespace, "--type=merge", "-p",
                      json.dumps({"spec": {"rateLimit": {"requestsPerMinute": 600, "burst": 60}}}))

        def rolled() -> bool:
            pods = watch.workers()
            return bool(watch.ready_at(2)) and len(pods) == 2 and not set(pods) & set(running) and \
                watch.deployment()["spec"]["template"]["spec"].get("serviceAccountName") == "chat-primary-report"

        await eventually(rolled, timeout=60, what="the new template rolled out after the spec change")
        done = condition(watch.resource(), "OperatorUpgradePending")
        assert (done["status"], done["reason"]) == ("False", "UpToDate"), done
    finally:
        # Let the operator drop its finalizer while it still runs: the namespace can then go.
        await kubectl("delete", "dsd", "chat", "-n", namespace, "--wait=true", "--timeout=60s", check=False)
        await stopped(current)


@pytest.mark.parametrize("how, sent, users", [
    (("apply", "--server-side"), False, False),   # SSA owns only what was sent
    (("apply", "--server-side"), True, True),
    (("apply",), False, False),                   # client-side apply: owned, but not in last-applied
    (("apply",), True, True),
    (("create",), False, True),                   # an Update owns the defaults too: cannot tell, the user's
])
async def test_managed_fields_tell_a_stored_default_from_a_users_choice(
        real_cluster: RealCluster, how: tuple[str, ...], sent: bool, users: bool) -> None:
    cluster, kubectl = real_cluster, Kubectl(real_cluster)
    rollout = {**SPEC["rollout"], **({"operatorUpgrades": "OnNextChange"} if sent else {})}
    with cluster.scratch_namespace("stored-defaults") as namespace:
        manifest = {"apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment",
                    "metadata": {"name": "chat", "namespace": namespace}, "spec": {**SPEC, "rollout": rollout}}
        await kubectl(*how, "-f", "-", stdin=json.dumps(manifest))
        obj = cluster.get("dsd", namespace, "chat") or {}
        assert obj["spec"]["rollout"]["operatorUpgrades"] == "OnNextChange"  # stored either way
        assert chosen_by_user(obj, ("spec", "rollout", "operatorUpgrades")) is users, obj["metadata"]


async def test_a_stored_network_policy_default_is_reported_not_switched(real_cluster: RealCluster,
                                                                        tmp_path: pathlib.Path) -> None:
    """A resource as an earlier CRD left it (`networkPolicy.enabled: false` defaulted: the field in the
    object, no manager owning it; made here by server-side apply, then dropping that field from its
    managedFields) gets NetworkPolicyReady False StoredDefaultDisabled from this operator, and no policy;
    once the user writes `false` themselves, the condition goes."""
    cluster, kubectl = real_cluster, Kubectl(real_cluster)
    with cluster.scratch_namespace("stored-default") as namespace:
        manifest = {"apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment",
                    "metadata": {"name": "chat", "namespace": namespace},
                    "spec": {**SPEC, "networkPolicy": {"enabled": False}}}
        await kubectl("apply", "--server-side", "--field-manager=user", "-f", "-", stdin=json.dumps(manifest))
        managed = cluster.get("dsd", namespace, "chat") or {}
        fields = managed["metadata"]["managedFields"]
        for entry in fields:
            entry.get("fieldsV1", {}).get("f:spec", {}).pop("f:networkPolicy", None)
        await kubectl("patch", "dsd", "chat", "-n", namespace, "--type=json", "-p",
                      json.dumps([{"op": "replace", "path": "/metadata/managedFields", "value": fields}]))
        stored = cluster.get("dsd", namespace, "chat") or {}
        assert stored["spec"]["networkPolicy"]["enabled"] is False
        assert not chosen_by_user(stored, ("spec", "networkPolicy", "enabled"))

        operator = await start_release(cluster, namespace, tmp_path / "operator.log")
        try:
            def reported() -> dict[str, Any]:
                cond = condition(cluster.get("dsd", namespace, "chat") or {}, "NetworkPolicyReady")
                return cond if cond.get("reason") == "StoredDefaultDisabled" else {}

            cond = await eventually(reported, timeout=30, what="NetworkPolicyReady StoredDefaultDisabled")
            assert cond["status"] == "False" and "spec.networkPolicy.enabled" in cond["message"], cond
            assert cluster.objects("networkpolicies.networking.k8s.io", namespace) == []

            await kubectl("apply", "--server-side", "--field-manager=user", "-f", "-", stdin=json.dumps(manifest))
            await eventually(lambda: not condition(cluster.get("dsd", namespace, "chat") or {}, "NetworkPolicyReady"),
                             timeout=30, what="the condition gone once the user wrote false")
        finally:
            await kubectl("delete", "dsd", "chat", "-n", namespace, "--wait=true", "--timeout=60s", check=False)
            await stopped(operator)
