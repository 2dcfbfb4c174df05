"""Operator end to end on two backends: the real control plane (`make cluster`: kube-apiserver, etcd,
controller-manager, scheduler, kwok) and the sandbox (the emulated API, in this event loop). The real
`deepseek-operator` console script runs in a subprocess and users act through the real kubectl.

Every test that takes the `cluster` fixture runs on both (ids `[real]` and `[sandbox]`) unless it is
marked `sandbox_only` with the reason (a sandbox-only hook such as a missing optional API), or
`real_only` (a behaviour the sandbox does not emulate: docs/sandbox.md lists them). On the
real cluster the operator authenticates as the chart's ServiceAccount, and each test leaves the
`default` namespace as it found it.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import httpx
import pytest

from deepseek_sandbox import Sandbox
from deepseek_sandbox.real_cluster import RealCluster
from tests.waiting import eventually, run_process

Cluster: TypeAlias = Sandbox | RealCluster

ROOT = pathlib.Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
UPSTREAM_CRDS = ROOT / "third_party" / "crds"
OPERATOR = pathlib.Path(sys.executable).parent / "deepseek-operator"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Kubectl:
    """The real kubectl against one cluster (its kubeconfig and its own discovery cache)."""

    cluster: Cluster

    async def __call__(self, *args: str, stdin: str | None = None, timeout: float = 60,
                       check: bool = True) -> str:
        env = {**os.environ, **self.cluster.kubectl_env()}
        code, text = await run_process([str(KUBECTL), *args], env, stdin, timeout)
        if check and code != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {code}:\n{text}")
        return text

    async def json(self, *args: str) -> Any:
        return json.loads(await self(*args, "-o", "json"))


@dataclass
class Operator:
    """A running `deepseek-operator` process and its metrics endpoint."""

    proc: asyncio.subprocess.Process
    metrics_port: int
    log_path: pathlib.Path
    killed: bool = False  # stopped with SIGKILL on purpose: its exit code and log prove nothing

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` matching `labels` on the operator's /metrics."""
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)).text
        total = 0.0
        for line in text.splitlines():
            m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
            if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
                total += float(m.group(2))
        return total

    async def stop(self) -> None:
        """SIGTERM, as Kubernetes stops a pod; SIGKILL only if it has not exited after 20 s."""
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def kill(self) -> None:
        """SIGKILL at once (a crashed or evicted operator), by PID."""
        self.killed = True
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def check_clean_exit(self) -> None:
        """A stopped operator exited 0 and never logged a traceback (unless killed on purpose)."""
        if self.killed:
            return
        log = self.log_path.read_text(errors="replace")
        assert self.proc.returncode == 0, f"operator exited {self.proc.returncode}:\n{self.log()}"
        assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]

    def log(self, lines: int = 40, grep: str = "") -> str:
        """The operator's own log lines containing `grep` (HTTP client chatter dropped), last `lines`."""
        text = self.log_path.read_text(errors="replace").splitlines()
        own = [line for line in text if "httpcore" not in line and "httpx" not in line and grep in line]
        return "\n".join(own[-lines:])


StartOperator = Callable[..., Awaitable[Operator]]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        only_sandbox = metafunc.definition.get_closest_marker("sandbox_only") is not None
        only_real = metafunc.definition.get_closest_marker("real_only") is not None
        backends = ["sandbox"] if only_sandbox else ["real"] if only_real else ["real", "sandbox"]
        metafunc.parametrize("backend", backends, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def cluster(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """The test's cluster. Sandbox: a fresh one with our CRD; `@pytest.mark.sandbox_apis(monitoring=True,
    gateway=True)` adds APIs. Real: the session's control plane (every optional API installed), with
    the `default` namespace cleaned after the test."""
    if backend == "real":
        real: RealCluster = request.getfixturevalue("real_cluster")
        real.reset_stats()
        yield real
        await clean_namespace(Kubectl(real), "default")
        return
    marker = request.node.get_closest_marker("sandbox_apis")
    apis = marker.kwargs if marker else {}
    async with Sandbox(ROOT / "crds", extra_crds_dir=UPSTREAM_CRDS,
                       with_monitoring=apis.get("monitoring", False), with_gateway_api=apis.get("gateway", False),
                       ready_delay=0.3) as sb:
        yield sb


# What a test may leave in a namespace; `kubernetes` (the apiserver's own Service) stays.
LEFTOVERS = ("deployments.apps,replicasets.apps,pods,poddisruptionbudgets.policy,ingresses.networking.k8s.io,"
             "networkpolicies.networking.k8s.io,httproutes.gateway.networking.k8s.io,"
             "servicemonitors.monitoring.coreos.com,prometheusrules.monitoring.coreos.com,secrets,configmaps,"
             "jobs.batch,persistentvolumeclaims")


async def clean_namespace(kubectl: Kubectl, namespace: str) -> None:
    """Delete every DeepSeekDeployment (finalizers dropped: the operator is stopped by now), every
    object a test may have made, and the events, then wait until the garbage collector is done."""
    for name in (await kubectl("get", "dsd", "-n", namespace, "-o", "name")).split():
        await kubectl("patch", name, "-n", namespace, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
                      check=False)
    await kubectl("delete", "dsd", "--all", "-n", namespace, "--wait=true", "--timeout=60s")
    await kubectl("delete", LEFTOVERS, "--all", "-n", namespace, "--wait=false", "--grace-period=0")
    await kubectl("delete", "services", "-n", namespace, "--field-selector=metadata.name!=kubernetes",
                  "--wait=false")
    await kubectl("delete", "events", "--all", "-n", namespace, "--wait=false")

    async def empty() -> bool:
        return (await kubectl("get", "deployments,pods,services", "-n", namespace, "-o", "name",
                              "--ignore-not-found")).split() in ([], ["service/kubernetes"])

    await eventually(empty, timeout=60, interval=0.3, what=f"namespace {namespace} emptied")


@pytest.fixture
def kubectl(cluster: Cluster) -> Kubectl:
    if not KUBECTL.exists():
        pytest.fail("kubectl missing at .tools/bin/kubectl: run `make bootstrap`")
    return Kubectl(cluster)


@pytest.fixture
async def start_operator(cluster: Cluster, tmp_path: pathlib.Path) -> AsyncIterator[StartOperator]:
    """Start (and at teardown stop, by PID) `deepseek-operator` processes against the cluster; on the
    real one the operator is the chart's ServiceAccount."""
    running: list[Operator] = []

    async def start(*extra_args: str, **extra_env: str) -> Operator:
        port = free_port()
        log_path = tmp_path / f"operator-{len(running)}.log"
        identity = cluster.operator_env() if isinstance(cluster, RealCluster) else cluster.kubectl_env()
        mode = [] if any(a.startswith("--peering") for a in extra_args) else ["--standalone"]
        env = {**os.environ, **identity, "DEEPSEEK_OPERATOR_METRICS_PORT": str(port),
               "DEEPSEEK_OPERATOR_RESYNC_SECONDS": "1", **extra_env}
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                str(OPERATOR), *mode, "--namespace=default", "--verbose", *extra_args, stdout=log,
                stderr=asyncio.subprocess.STDOUT, env=env)
        op = Operator(proc, port, log_path)
        running.append(op)

        async def metrics_up() -> bool:
            if proc.returncode is not None:
                pytest.fail(f"operator exited {proc.returncode}:\n{op.log()}")
            try:
                await op.metric("deepseek_operator_reconciles_total")
                return True
            except httpx.HTTPError:
                return False

        await eventually(metrics_up, timeout=60, what="the operator's metrics endpoint")
        return op

    yield start
    for op in running:
        await op.stop()
    for op in running:
        op.check_clean_exit()


def dsd(sb: Cluster, name: str = "chat") -> dict[str, Any]:
    """The DeepSeekDeployment `name` in `default` ({} when absent)."""
    return sb.get("dsd", "default", name) or {}


def current(sb: Cluster, name: str = "chat") -> dict[str, Any] | None:
    """The resource when its status describes its current generation."""
    obj = dsd(sb, name)
    if obj and obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]:
        return obj
    return None


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == ctype:
            return dict(cond)
    return {}


def warnings(sb: Cluster, reason: str, name: str = "chat") -> list[str]:
    """Messages of Warning events with `reason` about `name`, core v1 and events.k8s.io/v1 alike.

    A real apiserver serves one Event through both APIs (same uid); the sandbox stores them apart."""
    out: dict[str, str] = {}
    for resource in ("v1/events", "events.k8s.io/v1/events"):
        for ev in sb.objects(resource, "default"):
            about = ev.get("involvedObject") or ev.get("regarding") or {}
            if ev.get("type") == "Warning" and ev.get("reason") == reason and about.get("name") == name:
                out.setdefault(ev["metadata"]["uid"], str(ev.get("message") or ev.get("note") or ""))
    return list(out.values())
