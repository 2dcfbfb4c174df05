"""The real `deploy:staging` job of .gitlab-ci.yml, run by gitlab-ci-local (shell executor) against the
sandbox cluster in this event loop and the real `deepseek-operator` in a subprocess.

gitlab-ci-local runs a shell-executor job in the checkout itself (CI_PROJECT_DIR is its --cwd; no copy,
untracked and ignored files included), so the scratch checkout carries the pinned kubectl in .tools/bin
and `tools/install-binaries.sh` has nothing to download. `apt-get` is a stub on PATH that records its
arguments. The `needs:` on the build jobs are not run (`--needs` is opt-in): their dotenv variables
(WORKER_IMAGE) come from `--variable`, and so does KUBECONFIG, whose value is the path of the sandbox's
kubeconfig, which is what a GitLab *File* variable holds too.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from deepseek_sandbox import Sandbox
from tests.e2e.conftest import Kubectl, Operator, condition
from tests.waiting import eventually

from .conftest import ROOT, TOOLS
from .test_ci import GITLAB_CI_LOCAL, ci_repo  # noqa: F401  (ci_repo: fixture)
from .test_deploy_script import BAD, GOOD, OLD, OPERATOR, _missing, manifest

JOB = "deploy:staging"
NAMESPACE = "deepseek-staging"  # the job's own DSD_NAMESPACE
NAME = "chat"
GCL_DEADLINE = 150  # seconds for one gitlab-ci-local run; deploy.sh's own --timeout is DEPLOY_TIMEOUT
DEPLOY_TIMEOUT = "60s"


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

    KUBECONFIG and KUBECTL are removed from its environment: the job sees only what --variable gives it."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBECTL")}
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


@pytest.fixture
async def staging(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, Kubectl]]:
    """The sandbox with namespace deepseek-staging, the operator watching it, and DeepSeekDeployment `chat`
    Ready with the OLD image (a deploy starts from a serving resource, as in production)."""
    async with Sandbox(ROOT / "crds", ready_delay=0.3) as sandbox:
        kubectl = Kubectl(sandbox)
        # `kubectl create namespace` sends a protobuf body, which the sandbox does not read; apply sends JSON.
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        await kubectl("apply", "-f", "-", stdin=json.dumps(namespace))
        obj = json.loads(manifest(NAME))  # progressDeadlineSeconds 10, autoRollback
        obj["metadata"]["namespace"] = NAMESPACE
        await kubectl("apply", "-f", "-", stdin=json.dumps(obj))
        env = {**os.environ, **sandbox.kubectl_env(), "DEEPSEEK_OPERATOR_METRICS_PORT": "0",
               "DEEPSEEK_OPERATOR_RESYNC_SECONDS": "1"}
        log_path = tmp_path / "operator.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                str(OPERATOR), "--standalone", f"--namespace={NAMESPACE}", stdout=log,
                stderr=asyncio.subprocess.STDOUT, env=env)
        operator = Operator(proc, 0, log_path)
        try:
            async def serving_old() -> bool:
                if proc.returncode is not None:
                    pytest.fail(f"operator exited {proc.returncode}:\n{operator.log()}")
                dsd = await get_dsd(kubectl)
                return condition(dsd, "Ready").get("status") == "True" and dsd.get("status", {}).get("image") == OLD

            await eventually(serving_old, timeout=60, interval=0.2, what=f"{NAME} Ready with {OLD}")
            yield sandbox, kubectl
        finally:
            await operator.stop()
            print(operator.log(60))


async def get_dsd(kubectl: Kubectl) -> dict[str, Any]:
    dsd: dict[str, Any] = await kubectl.json("--namespace", NAMESPACE, "get", "deepseekdeployments.deepseek.ai", NAME)
    return dsd


def job_variables(sandbox: Sandbox, image: str) -> list[str]:
    cluster = [f"{key}={value}" for key, value in sandbox.kubectl_env().items()]  # KUBECONFIG, KUBECACHEDIR
    return [*cluster, f"WORKER_IMAGE={image}", f"DSD_NAME={NAME}", f"DEPLOY_TIMEOUT={DEPLOY_TIMEOUT}"]


async def test_deploy_job_rolls_out_a_good_image(
        staging: tuple[Sandbox, Kubectl], checkout: Path, apt_stub: Path) -> None:
    sandbox, kubectl = staging
    rc, out = await run_job(checkout, apt_stub, *job_variables(sandbox, GOOD))
    assert rc == 0, out
    assert f"PASS  {JOB}" in out, out
    assert f"rolled out: {GOOD} is Ready" in out, out
    assert_before_script_ran(apt_stub, out)
    dsd = await get_dsd(kubectl)
    assert dsd["spec"]["image"] == GOOD
    assert dsd["status"]["image"] == GOOD
    assert condition(dsd, "Ready").get("status") == "True", dsd["status"]


async def test_deploy_job_fails_and_the_operator_rolls_back_a_never_ready_image(
        staging: tuple[Sandbox, Kubectl], checkout: Path, apt_stub: Path) -> None:
    sandbox, kubectl = staging
    rc, out = await run_job(checkout, apt_stub, *job_variables(sandbox, BAD))
    assert rc == 1, out
    assert f"FAIL  {JOB}" in out, out
    assert "RolledBack" in out, out
    assert_before_script_ran(apt_stub, out)
    dsd = await get_dsd(kubectl)
    assert dsd["spec"]["image"] == BAD, "deploy.sh set the image; the operator does not rewrite spec"
    assert dsd["status"]["image"] == OLD
    assert dsd["status"].get("failedImage") == BAD


async def test_deploy_job_refuses_to_run_without_a_kubeconfig_file(
        checkout: Path, apt_stub: Path, tmp_path: Path) -> None:
    """The guard in before_script: KUBECONFIG must name an existing file (a GitLab File variable)."""
    rc, out = await run_job(checkout, apt_stub, f"KUBECONFIG={tmp_path / 'absent'}", f"WORKER_IMAGE={GOOD}")
    assert rc == 1, out
    assert "KUBECONFIG file variable is not set for staging" in out, out
    assert "deploy: deepseekdeployment" not in out, "deploy.sh must not start"
