"""The real KEDA operator (v2.21.0, tools/control-plane/build-keda.sh) scales a Deployment from 0 and back.

On a control plane of this module's own (own CLUSTER_DIR and ports, started by up.sh with
CLUSTER_KEDA=1, stopped by down.sh): the shared `.cluster` never serves the keda.sh API, since the
operator under test detects KEDA by it. A tiny HTTP server started here (a subprocess, stopped by its
PID) plays the gateway's `/scaling/<variant>` endpoint: JSON `{"held": N}`. The ScaledObject is the
shape issue 22 renders (minReplicaCount 0, idleReplicaCount 0, a `metrics-api` trigger on `held` with
an activation value), checked offline first (tests/crd/keda_crd.py). KEDA's operator alone decides
activation (0 <-> 1); 1 -> N is the HPA KEDA creates, reading the value through keda-adapter served as
external.metrics.k8s.io by the apiserver's aggregation layer.

`make control-plane` (so `make test`) builds KEDA once per machine (cold: docs/cluster.md, "KEDA"); run
alone without it, this module skips saying how to build it, and in CI that skip is a failure.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.crd.keda_crd import keda_errors

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "bin"
CONTROL_PLANE = ROOT / "tools" / "control-plane"
NAMESPACE = "keda-e2e"
COOLDOWN = 8  # seconds: spec.cooldownPeriod, KEDA's wait after the last active poll before scaling to 0


SERVER = r"""
import http.server, pathlib, sys
value = pathlib.Path(sys.argv[2])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/scaling/primary":
            self.send_error(404)
            return
        body = ('{"held": %s}' % value.read_text().strip()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keda_built() -> Path | None:
    """The cached KEDA build of build-keda.sh's default version, if there is one."""
    version = re.search(r"KEDA_VERSION=\$\{KEDA_VERSION:-([^}]+)\}", (CONTROL_PLANE / "build-keda.sh").read_text())
    assert version, "build-keda.sh names no default KEDA_VERSION"
    cache = Path(os.environ.get("DEEPSEEK_CACHE_DIR", Path.home() / ".cache" / "deepseek-operator"))
    root = cache / "control-plane" / f"keda-{version.group(1)}"
    done = all((root / p).exists() for p in ("bin/keda-operator", "bin/keda-adapter", "crd/keda.sh_scaledobjects.yaml"))
    return root if done else None


@dataclass(frozen=True)
class KedaCluster:
    directory: Path
    env: dict[str, str]

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        env = {**self.env, "KUBECONFIG": str(self.directory / "kubeconfig"),
               "KUBECACHEDIR": str(self.directory / "kubectl-cache")}
        done = subprocess.run([str(TOOLS / "kubectl"), *args], input=stdin, capture_output=True, text=True,
                              timeout=60, check=False, env=env)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def operator_log(self) -> str:
        log = self.directory / "logs" / "keda-operator.log"
        return log.read_text()[-3000:] if log.exists() else "(no keda-operator.log)"


@pytest.fixture(scope="module")
def keda_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KedaCluster]:
    if not (TOOLS / "kubectl").exists():
        pytest.skip("kubectl missing at .tools/bin: run `make bootstrap`")
    if keda_built() is None:
        pytest.skip("KEDA is not built: run tools/control-plane/build-keda.sh (cold: docs/cluster.md, 'KEDA')")
    directory = tmp_path_factory.mktemp("keda-control-plane") / "cluster"
    env = {**os.environ, "CLUSTER_DIR": str(directory), "PATH": f"{TOOLS}:{os.environ['PATH']}",
           "CLUSTER_KEDA": "1", "CLUSTER_API_PORT": str(free_port()), "CLUSTER_ETCD_PORT": str(free_port()),
           "CLUSTER_ETCD_PEER_PORT": str(free_port()), "CLUSTER_LWS_WEBHOOK_PORT": str(free_port()),
           "CLUSTER_KEDA_GRPC_PORT": str(free_port())}
    log = directory.parent / "up.log"
    try:
        with log.open("w") as out:
            done = subprocess.run([str(CONTROL_PLANE / "up.sh")], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=240, check=False)
        assert done.returncode == 0, log.read_text()
        assert (directory / "pids" / "keda-operator").exists(), log.read_text()
        cluster = KedaCluster(directory, env)
        cluster.kubectl("create", "namespace", NAMESPACE)
        yield cluster
    finally:
        subprocess.run([str(CONTROL_PLANE / "down.sh")], env=env, capture_output=True, timeout=120, check=False)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, Callable[[float], None]]]:
    """(URL of /scaling/primary, set(held)): the gateway's scaling endpoint, played by a subprocess."""
    value = tmp_path / "held"
    value.write_text("0")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(value)])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "the scaling endpoint exited"
                assert time.monotonic() < deadline, "the scaling endpoint did not listen within 20 s"
                time.sleep(0.1)

        def set_held(held: float) -> None:
            value.write_text(str(held))

        yield f"http://127.0.0.1:{port}/scaling/primary", set_held
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def deployment() -> dict[str, Any]:
    labels = {"app": "chat-primary"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "chat-primary", "namespace": NAMESPACE},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "worker", "image": "registry.example.com/deepseek-worker:1.0.0"}],
                    "tolerations": [{"operator": "Exists"}],  # the fake GPU nodes' taint
                },
            },
        },
    }


def scaled_object(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "chat-primary", "namespace": NAMESPACE},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat-primary"},
            "minReplicaCount": 0,
            "idleReplicaCount": 0,
            "maxReplicaCount": 2,
            "pollingInterval": 1,
            "cooldownPeriod": COOLDOWN,
            "triggers": [{
                "type": "metrics-api",
                "name": "held",
                "metricType": "AverageValue",
                "metadata": {"url": url, "format": "json", "valueLocation": "held", "targetValue": "4",
                             "activationTargetValue": "0.5"},
            }],
        },
    }


def wait_for(check: Callable[[], Any], timeout: float, what: str, cluster: KedaCluster) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {last!r}\nkeda-operator.log:\n"
                f"{cluster.operator_log()}")


def test_keda_scales_a_deployment_from_zero_and_back(keda_cluster: KedaCluster,
                                                     gateway: tuple[str, Callable[[float], None]]) -> None:
    url, set_held = gateway
    so = scaled_object(url)
    assert keda_errors(so) == []
    k = keda_cluster
    k.kubectl("apply", "-f", "-", stdin=json.dumps(deployment()))
    k.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(so))

    def replicas() -> tuple[int, int]:
        d = k.json("get", "deployment", "chat-primary", "-n", NAMESPACE)
        return d["spec"].get("replicas", 1), d.get("status", {}).get("readyReplicas", 0)

    def condition(kind: str) -> str | None:
        got = k.json("get", "scaledobject", "chat-primary", "-n", NAMESPACE)
        return next((c["status"] for c in got.get("status", {}).get("conditions", []) if c["type"] == kind), None)

    # KEDA accepts the object (Ready) and, below activation, keeps the Deployment at zero.
    wait_for(lambda: condition("Ready") == "True", 60, "the ScaledObject Ready", k)
    wait_for(lambda: condition("Active") == "False", 30, "the ScaledObject inactive at held=0", k)
    assert replicas() == (0, 0)

    # A held request (1 > activation 0.5): KEDA activates and scales the Deployment to one Ready pod.
    set_held(1)
    started = time.monotonic()
    wait_for(lambda: replicas() == (1, 1), 60, "KEDA to scale to one Ready pod", k)
    up_s = time.monotonic() - started
    assert condition("Active") == "True"
    hpa = k.json("get", "hpa", "keda-hpa-chat-primary", "-n", NAMESPACE)
    assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["maxReplicas"] == 2

    # 12 held, target 4 per pod: the HPA (through keda-adapter) wants 3, capped at maxReplicaCount 2.
    set_held(12)
    started = time.monotonic()
    wait_for(lambda: replicas() == (2, 2), 120, "the HPA to scale to two Ready pods on the external metric", k)
    hpa_s = time.monotonic() - started
    external = k.json("get", "hpa", "keda-hpa-chat-primary", "-n", NAMESPACE)["status"]["currentMetrics"][0]
    assert external["type"] == "External", external  # averageValue: 12 over one pod, or 6 over two
    assert external["external"]["metric"]["selector"]["matchLabels"] == {"scaledobject.keda.sh/name": "chat-primary"}
    assert external["external"]["current"]["averageValue"] in ("12", "6"), external

    # Nothing held: after cooldownPeriod KEDA scales back to zero (not before it: idle for COOLDOWN s).
    set_held(0)
    idle = time.monotonic()
    wait_for(lambda: replicas()[0] == 0, COOLDOWN + 60, "KEDA to scale back to zero", k)  # from 2, not via the HPA
    down_s = time.monotonic() - idle
    # KEDA counts the cooldown from the last active poll, up to one pollingInterval (1 s) before set_held(0).
    assert down_s >= COOLDOWN - 1.5, f"scaled to zero after {down_s:.1f}s, before the {COOLDOWN}s cooldown"
    assert condition("Active") == "False"
    wait_for(lambda: not k.json("get", "pods", "-n", NAMESPACE)["items"], 60, "the pod gone", k)
    print(f"KEDA: 0->1 Ready in {up_s:.1f}s; HPA 1->2 in {hpa_s:.1f}s; ->0 in {down_s:.1f}s "
          f"(cooldownPeriod {COOLDOWN}s)")
