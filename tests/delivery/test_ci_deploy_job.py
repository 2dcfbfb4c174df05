"""The real `deploy:staging` job of .gitlab-ci.yml, run by gitlab-ci-local (shell executor) against a
cluster with the real `deepseek-operator` in a subprocess, on two backends (ids `sandbox` and `real`):

- sandbox: the emulated API in this event loop (a fresh one per test);
- real: the session's control plane (`real_cluster`: kube-apiserver, controller-manager, scheduler,
  kwok). The test creates namespace deepseek-staging and deletes it at the end (after stopping the
  operator), waiting until it is gone; the operator authenticates as the chart's ServiceAccount.

gitlab-ci-local runs a shell-executor job in the checkout itself (CI_PROJECT_DIR is its --cwd; no copy,
untracked and ignored files included), so the scratch checkout carries the pinned kubectl in .tools/bin
and `tools/install-binaries.sh` has nothing to download. `apt-get` is a stub on PATH that records its
arguments. The `needs:` on the build jobs are not run (`--needs` is opt-in): their dotenv variables
(WORKER_IMAGE) come from `--variable`, and so do KUBECONFIG (the path of the cluster admin's
kubeconfig, which is what a GitLab *File* variable holds too) and KUBECACHEDIR.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deepseek_sandbox import Sandbox
from deepseek_sandbox.real_cluster import RealCluster
from tests.e2e.conftest import Cluster, Kubectl, Operator, clean_namespace, condition
from tests.waiting import eventually

from .conftest import ROOT, TOOLS
from .test_ci import GITLAB_CI_LOCAL, ci_repo  # noqa: F401  (ci_repo: fixture)
from .test_deploy_script import BAD, GOOD, OLD, OPERATOR, _missing, manifest

JOB = "deploy:staging"
NAMESPACE = "deepseek-staging"  # the job's own DSD_NAMESPACE
NAME = "chat"
PRIMARY = f"{NAME}-primary"  # the operator's Deployment of the primary variant
PRIMARY_PODS = f"deepseek.ai/deployment={NAME},deepseek.ai/variant=primary"
GCL_DEADLINE = 150  # seconds for one gitlab-ci-local run; deploy.sh's own --timeout is DEPLOY_TIMEOUT
DEPLOY_TIMEOUT = "60s"
NAMESPACE_DEADLINE = 120  # seconds for the real namespace to be gone (the namespace controller)


def _unavailable() -> str | None:
    if (missing := _missing()) is not None:
        return missing
    if not GITLAB_CI_LOCAL.exists():
        return "gitlab-ci-local is missing: run tools/install-gitlab-ci-local.sh"
    if shutil.which("rsync") is None:
        return "gitlab-ci-local needs rsync (tools/install-apt.sh)"
    return None


pytestmark = pytest.mark.skipif(_unavailable() is not None, reason=_unavailable() or "")


@pytest.fixture
def checkout(ci_repo: Path) -> Path:  # noqa: F811
    """The scratch repository plus what the deploy job runs, and the pinned binaries already in .tools/bin
    (as a cached .tools/ would be); `.gitlab-ci-local/` is where gitlab-ci-local keeps its state."""
    for rel in ("scripts/deploy.sh", "tools/install-binaries.sh"):
        (ci_repo / rel).parent.mkdir(exist_ok=True)
        shutil.copy2(ROOT / rel, ci_repo / rel)
    (ci_repo / ".gitignore").write_text(".tools/\n.venv/\n.gitlab-ci-local/\n")
    git = ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci"]
    for cmd in (["add", "scripts", "tools", ".gitignore"], ["commit", "-q", "-m", "deploy job"]):
        subprocess.run([*git, *cmd], cwd=ci_repo, check=True, capture_output=True, timeout=30)
    (ci_repo / ".tools" / "bin").mkdir(parents=True)
    for binary in ("kubectl", "helm"):
        (ci_repo / ".tools" / "bin" / binary).symlink_to(TOOLS / binary)
    return ci_repo


@pytest.fixture
def apt_stub(tmp_path: Path) -> Path:
    """A directory with an `apt-get` that only records its arguments (one call a line) in ./apt-get.args."""
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> "{stub / "apt-get.args"}"\n')
    (stub / "apt-get").chmod(0o755)
    return stub


async def run_job(checkout: Path, stub: Path, *variables: str) -> tuple[int, str]:
    """`gitlab-ci-local --force-shell-executor deploy:staging` with `--variable`s; (exit status, output).

    KUBECONFIG, KUBECACHEDIR and KUBECTL are removed from its environment: the job sees only what
    --variable gives it."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBECACHEDIR", "KUBECTL")}
    env["PATH"] = f"{stub}{os.pathsep}{env['PATH']}"
    args = [arg for variable in variables for arg in ("--variable", variable)]
    proc = await asyncio.create_subprocess_exec(
        str(GITLAB_CI_LOCAL), "--force-shell-executor", "--no-color", *args, JOB,
        cwd=checkout, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True)  # its own process group: the deadline kills the job's shell and deploy.sh too
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), GCL_DEADLINE)
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        pytest.fail(f"gitlab-ci-local {JOB} still running after {GCL_DEADLINE}s")
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def assert_before_script_ran(stub: Path, out: str) -> None:
    calls = (stub / "apt-get.args").read_text().splitlines()
    assert calls == ["update -qq", "install -y -qq --no-install-recommends unzip"], calls
    assert "Client Version" not in out, "tools/install-binaries.sh downloaded kubectl instead of using .tools/bin"


# -- the cluster: the sandbox or the real control plane ------------------------------------------------
@dataclass
class Staging:
    """Namespace deepseek-staging on one backend, with the operator watching it."""

    cluster: Cluster
    kubectl: Kubectl
    operator: Operator


@pytest.fixture(params=["sandbox", "real"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """The cluster, with namespace deepseek-staging. Real: created here, and at teardown emptied and
    deleted, waiting until it is gone (so the next test, or the next run, starts clean)."""
    if request.param == "sandbox":
        async with Sandbox(ROOT / "crds", ready_delay=0.3) as sandbox:
            await create_namespace(Kubectl(sandbox))
            yield sandbox
        return
    real: RealCluster = request.getfixturevalue("real_cluster")
    kubectl = Kubectl(real)
    if real.get("namespaces", None, NAMESPACE) is not None:  # left by an interrupted run
        await delete_namespace(real, kubectl)
    await create_namespace(kubectl)
    try:
        yield real
    finally:
        await delete_namespace(real, kubectl)


async def create_namespace(kubectl: Kubectl) -> None:
    # `kubectl create namespace` sends a protobuf body, which the sandbox does not read; `create -f` sends
    # JSON, and fails (as it should) when the namespace is already there.
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    await kubectl("create", "-f", "-", stdin=json.dumps(namespace))


async def delete_namespace(real: RealCluster, kubectl: Kubectl) -> None:
    """Drop the DeepSeekDeployments' finalizers (no operator runs now) and their children, delete the
    namespace and wait for the namespace controller to finish."""
    await clean_namespace(kubectl, NAMESPACE)
    await kubectl("delete", "namespace", NAMESPACE, "--wait=false", "--ignore-not-found")
    await eventually(lambda: real.get("namespaces", None, NAMESPACE) is None, timeout=NAMESPACE_DEADLINE,
                     interval=0.5, what=f"namespace {NAMESPACE} deleted")


@pytest.fixture
async def staging(backend: Cluster, tmp_path: Path) -> AsyncIterator[Staging]:
    """The operator watching deepseek-staging (on the real cluster as the chart's ServiceAccount) and
    DeepSeekDeployment `chat` Ready with the OLD image (a deploy starts from a serving resource, as in
    production). The operator is stopped, by its PID, before `backend` deletes the namespace."""
    kubectl = Kubectl(backend)
    obj = json.loads(manifest(NAME))  # progressDeadlineSeconds 10, autoRollback
    obj["metadata"]["namespace"] = NAMESPACE
    await kubectl("apply", "-f", "-", stdin=json.dumps(obj))
    identity = backend.operator_env() if isinstance(backend, RealCluster) else backend.kubectl_env()
    env = {**os.environ, **identity, "DEEPSEEK_OPERATOR_METRICS_PORT": "0", "DEEPSEEK_OPERATOR_RESYNC_SECONDS": "1"}
    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            str(OPERATOR), "--standalone", f"--namespace={NAMESPACE}", stdout=log,
            stderr=asyncio.subprocess.STDOUT, env=env)
    operator = Operator(proc, 0, log_path)
    try:
        def serving_old() -> bool:
            if proc.returncode is not None:
                pytest.fail(f"operator exited {proc.returncode}:\n{operator.log()}")
            dsd = backend.get("dsd", NAMESPACE, NAME) or {}
            return condition(dsd, "Ready").get("status") == "True" and dsd.get("status", {}).get("image") == OLD

        await eventually(serving_old, timeout=60, interval=0.2, what=f"{NAME} Ready with {OLD}")
        await eventually(lambda: serving(backend, OLD), timeout=30, interval=0.2, what=f"pods on {OLD}")
        yield Staging(backend, kubectl, operator)
    finally:
        await operator.stop()
        print(operator.log(60))


async def get_dsd(kubectl: Kubectl) -> dict[str, Any]:
    dsd: dict[str, Any] = await kubectl.json("--namespace", NAMESPACE, "get", "deepseekdeployments.deepseek.ai", NAME)
    return dsd


def job_variables(cluster: Cluster, image: str) -> list[str]:
    cluster_vars = [f"{key}={value}" for key, value in cluster.kubectl_env().items()]  # KUBECONFIG, KUBECACHEDIR
    return [*cluster_vars, f"WORKER_IMAGE={image}", f"DSD_NAME={NAME}", f"DEPLOY_TIMEOUT={DEPLOY_TIMEOUT}"]


# -- what the cluster serves ------------------------------------------------------------------------------
def pod_owners(cluster: Cluster) -> set[str]:
    """The uids a pod of the primary Deployment names as owner: its ReplicaSets on a real cluster, the
    Deployment itself in the sandbox (which has no ReplicaSets: docs/sandbox.md)."""
    dep = cluster.get("deployments", NAMESPACE, PRIMARY)
    if dep is None:
        return set()
    uid = dep["metadata"]["uid"]
    if not isinstance(cluster, RealCluster):
        return {uid}
    return {rs["metadata"]["uid"] for rs in cluster.objects("replicasets", NAMESPACE, f"deepseek.ai/deployment={NAME}")
            if any(ref["uid"] == uid for ref in rs["metadata"].get("ownerReferences", []))}


def serving(cluster: Cluster, image: str) -> list[dict[str, Any]]:
    """The primary pods when there is exactly one (spec.replicas), on `image`, Ready, and owned by the
    operator's Deployment (through its ReplicaSet on a real cluster); [] otherwise."""
    pods = cluster.objects("pods", NAMESPACE, PRIMARY_PODS)
    owners = pod_owners(cluster)
    ok = len(pods) == 1 and all(
        p["spec"]["containers"][0]["image"] == image and condition(p, "Ready").get("status") == "True"
        and not p["metadata"].get("deletionTimestamp")
        and {ref["uid"] for ref in p["metadata"].get("ownerReferences", [])} & owners for p in pods)
    return pods if ok else []


def warnings(cluster: Cluster, reason: str) -> list[str]:
    """Messages of Warning events with `reason` about `chat` in deepseek-staging, core v1 and events.k8s.io/v1
    alike: a real apiserver serves one Event through both APIs (same uid); the sandbox stores them apart."""
    out: dict[str, str] = {}
    for resource in ("v1/events", "events.k8s.io/v1/events"):
        for ev in cluster.objects(resource, NAMESPACE):
            about = ev.get("involvedObject") or ev.get("regarding") or {}
            if ev.get("type") == "Warning" and ev.get("reason") == reason and about.get("name") == NAME:
                out.setdefault(ev["metadata"]["uid"], str(ev.get("message") or ev.get("note") or ""))
    return list(out.values())


# -- the tests ----------------------------------------------------------------------------------------------
async def test_deploy_job_rolls_out_a_good_image(staging: Staging, checkout: Path, apt_stub: Path) -> None:
    rc, out = await run_job(checkout, apt_stub, *job_variables(staging.cluster, GOOD))
    assert rc == 0, out
    assert f"PASS  {JOB}" in out, out
    assert f"rolled out: {GOOD} is Ready" in out, out
    assert_before_script_ran(apt_stub, out)
    dsd = await get_dsd(staging.kubectl)
    assert dsd["spec"]["image"] == GOOD
    assert dsd["status"]["image"] == GOOD
    assert condition(dsd, "Ready").get("status") == "True", dsd["status"]
    pods = await eventually(lambda: serving(staging.cluster, GOOD), timeout=30, interval=0.2,
                            what=f"the primary pod on {GOOD}")
    assert [p["spec"]["containers"][0]["image"] for p in pods] == [GOOD]
    assert warnings(staging.cluster, "RolledBack") == []


async def test_deploy_job_fails_and_the_operator_rolls_back_a_never_ready_image(
        staging: Staging, checkout: Path, apt_stub: Path) -> None:
    rc, out = await run_job(checkout, apt_stub, *job_variables(staging.cluster, BAD))
    assert rc == 1, out
    assert f"FAIL  {JOB}" in out, out
    assert "RolledBack" in out, out
    assert_before_script_ran(apt_stub, out)
    dsd = await get_dsd(staging.kubectl)
    assert dsd["spec"]["image"] == BAD, "deploy.sh set the image; the operator does not rewrite spec"
    assert dsd["status"]["image"] == OLD
    assert dsd["status"].get("failedImage") == BAD
    assert condition(dsd, "Degraded").get("reason") == "RolledBack", dsd["status"]
    pods = await eventually(lambda: serving(staging.cluster, OLD), timeout=30, interval=0.2,
                            what=f"the primary pod back on {OLD}")
    assert [p["spec"]["containers"][0]["image"] for p in pods] == [OLD]
    events = await eventually(lambda: warnings(staging.cluster, "RolledBack"), timeout=30, interval=0.2,
                              what="a RolledBack event")
    assert len(events) == 1, events
    assert BAD in events[0], events


async def test_deploy_job_refuses_to_run_without_a_kubeconfig_file(
        checkout: Path, apt_stub: Path, tmp_path: Path) -> None:
    """The guard in before_script: KUBECONFIG must name an existing file (a GitLab File variable)."""
    rc, out = await run_job(checkout, apt_stub, f"KUBECONFIG={tmp_path / 'absent'}", f"WORKER_IMAGE={GOOD}")
    assert rc == 1, out
    assert "KUBECONFIG file variable is not set for staging" in out, out
    assert "deploy: deepseekdeployment" not in out, "deploy.sh must not start"
