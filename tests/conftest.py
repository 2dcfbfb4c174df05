"""Suite-wide rules.

In CI (CI=true) a skipped test is a failure, except the real-cluster suite (marker `e2e_cluster`,
which needs a KUBECONFIG that CI does not have): a skip there means a tool the Makefile should have
installed is missing, and a green run must not hide that.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
from collections.abc import Generator

import pytest

from deepseek_sandbox.real_cluster import (
    RealCluster,
    admin_env,
    operator_kubeconfig,
    start_control_plane,
    stop_control_plane,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `after_suite` read what the whole session did (the audit log): run them last."""
    items.sort(key=lambda item: item.get_closest_marker("after_suite") is not None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                            pytest.TestReport]:
    report = yield
    if os.environ.get("CI") == "true" and report.skipped and item.get_closest_marker("e2e_cluster") is None:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (a missing install step?): {report.longrepr}"
    return report


# -- the real control plane (tools/control-plane), shared by every suite that runs on it ---------------
REPO = pathlib.Path(__file__).resolve().parents[1]
CLUSTER_DIR = pathlib.Path(os.environ.get("CLUSTER_DIR", REPO / ".cluster"))
OPERATOR_RELEASE, OPERATOR_NAMESPACE = "e2e", "deepseek-e2e"


def _admin(*args: str, timeout: float = 120, stdin: str | None = None) -> str:
    """Run a command as the cluster admin; its stdout. Raises with the output on failure."""
    done = subprocess.run(list(args), env=admin_env(CLUSTER_DIR), capture_output=True, text=True,
                          timeout=timeout, check=False, input=stdin)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Generator[RealCluster, None, None]:
    """The real control plane with our CRD and the operator's identity (the chart's ServiceAccount).

    Starts `make cluster`'s processes unless they already run (then leaves them running); installs the
    CRD server-side and the chart's objects (`helm template e2e`: the ServiceAccount and its RBAC). Without
    a Go toolchain the cluster cannot be built: a skip outside CI, a failure in CI (see above).
    """
    if shutil.which("go") is None and not (CLUSTER_DIR / "pids" / "kube-apiserver").exists():
        pytest.skip("no Go toolchain: the real control plane cannot be built (tools/control-plane/build.sh)")
    started = start_control_plane(CLUSTER_DIR)
    session_start = (CLUSTER_DIR / "audit.log").stat().st_size
    try:
        _admin("kubectl", "apply", "--server-side", "--force-conflicts", "-f",
               str(REPO / "crds" / "deepseek.ai_deepseekdeployments.yaml"), "-f",
               str(REPO / "crds" / "kopf.dev_kopfpeerings.yaml"))
        _admin("kubectl", "wait", "--for=condition=Established", "--timeout=60s",
               "crd/deepseekdeployments.deepseek.ai", "crd/kopfpeerings.kopf.dev",
               "crd/clusterkopfpeerings.kopf.dev")
        # The chart's own objects (ServiceAccount, RBAC, ...) applied server-side: idempotent, so
        # several test sessions can share one cluster (a helm release would lock per operation).
        # Leader election on: its RBAC (kopf's peering objects) is what tests/e2e/test_leader_election.py uses.
        chart = _admin("helm", "template", OPERATOR_RELEASE, str(REPO / "charts" / "deepseek-operator"),
                       "-n", OPERATOR_NAMESPACE, "--skip-crds", "--set", "leaderElection.enabled=true")
        namespace = f'{{"apiVersion": "v1", "kind": "Namespace", "metadata": {{"name": "{OPERATOR_NAMESPACE}"}}}}'
        _admin("kubectl", "apply", "--server-side", "-f", "-", stdin=namespace)
        _admin("kubectl", "apply", "--server-side", "--force-conflicts", "-n", OPERATOR_NAMESPACE, "-f", "-",
               stdin=chart)
        kubeconfig = tmp_path_factory.mktemp("operator") / "kubeconfig"
        user = operator_kubeconfig(CLUSTER_DIR, OPERATOR_NAMESPACE, f"{OPERATOR_RELEASE}-deepseek-operator",
                                   kubeconfig)
        cluster = RealCluster(CLUSTER_DIR, kubeconfig, user, session_start=session_start)
        yield cluster
        cluster.close()
    finally:
        if started:
            stop_control_plane(CLUSTER_DIR)
