"""The real KEDA operator (v2.21.0, tools/control-plane/build-keda.sh) scales a Deployment from 0 and back.

On a control plane of this module's own (own CLUSTER_DIR and ports, started by up.sh with
CLUSTER_KEDA=1, stopped by down.sh): the shared `.cluster` never serves the keda.sh API, since the
operator under test detects KEDA by it. A tiny HTTP server started here (a subprocess, stopped by its
PID) plays the gateway's `/scaling/<variant>` endpoint: JSON `{"held": N}`. The ScaledObject is the
shape issue 22 renders (minReplicaCount 0, idleReplicaCount 0, a `metrics-api` trigger on `held` with
an activation value), checked offline first (tests/crd/keda_crd.py). KEDA's operator alone decides
activation (0 <-> 1); 1 -> N is the HPA KEDA creates, reading the value through keda-adapter served as
external.metrics.k8s.io by the apiserver's aggregation layer.

The second test is issue 22's end to end: the operator under test renders a DeepSeekDeployment with the
gateway and `minReplicas: 0` as a ScaledObject there, and a request held by the real gateway process wakes
the variant through KEDA, is answered by our worker on the tiny model, and KEDA scales back to zero after the
delay (its comment block, below, says what runs where). Both share this module's control plane.

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
from datetime import datetime
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
    hosts: Path  # the KEDA operator's /etc/hosts (up.sh, CLUSTER_KEDA_HOSTS): append lines to map names

    def map_host(self, address: str, *names: str) -> None:
        """`names` resolve to `address` for the KEDA operator (its Go resolver re-reads the file within 5 s)."""
        with self.hosts.open("a") as out:  # in place: the bind mount follows the inode
            out.write(f"{address} {' '.join(names)}\n")

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
    hosts = directory.parent / "hosts"
    hosts.write_text(Path("/etc/hosts").read_text())
    env = {**os.environ, "CLUSTER_DIR": str(directory), "PATH": f"{TOOLS}:{os.environ['PATH']}",
           "CLUSTER_KEDA": "1", "CLUSTER_KEDA_HOSTS": str(hosts),
           "CLUSTER_API_PORT": str(free_port()), "CLUSTER_ETCD_PORT": str(free_port()),
           "CLUSTER_ETCD_PEER_PORT": str(free_port()), "CLUSTER_LWS_WEBHOOK_PORT": str(free_port()),
           "CLUSTER_KEDA_GRPC_PORT": str(free_port())}
    log = directory.parent / "up.log"
    try:
        with log.open("w") as out:
            done = subprocess.run([str(CONTROL_PLANE / "up.sh")], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=240, check=False)
        assert done.returncode == 0, log.read_text()
        assert (directory / "pids" / "keda-operator").exists(), log.read_text()
        cluster = KedaCluster(directory, env, hosts)
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


# --- Scale from zero, end to end (issue 22) ------------------------------------------------------------------
#
# The operator under test (the `deepseek-operator` console script, cluster admin) renders a DeepSeekDeployment
# with the gateway and `autoscaling {minReplicas: 0}` on this control plane, which serves keda.sh: so a
# ScaledObject, which the real KEDA operator acts on. kwok runs no containers, so the serving side runs here,
# unchanged but for addresses: the gateway process (`deepseek-worker` in gateway mode) reads the rendered
# ConfigMap's document byte for byte and the rendered gateway Deployment's env values; our worker on the tiny
# model (as scripts/demo.sh runs it: the rendered worker env values, the model swapped for `tiny`) is started
# by the test when kwok marks the scaled-up pod Ready, and stopped by PID when KEDA scales back to zero.
# Names: every process listens on the rendered port 8000, each on a loopback address of its own
# (127.x.y.z); the KEDA operator and the gateway each run in a mount namespace whose /etc/hosts maps the
# in-cluster names they are given (the ScaledObject's `<name>-gateway.<ns>.svc`, the document's headless
# `<name>-primary-pods.<ns>.svc.cluster.local`) to those addresses. The gateway's `statusFrom` reads the
# resource with in-cluster credentials, absent here: held streams get a bare `: waiting` comment.

SFZ_NAMESPACE = "scale-e2e"
SFZ_MODEL = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"  # model.id: the served name
SFZ_DELAY = 5  # spec.autoscaling.scaleDownDelaySeconds (KEDA's cooldownPeriod)
SFZ_HELD = 2  # spec.gateway.maxHeldRequests
PORT = 8000  # render/common.py HTTP_PORT: the gateway's and the workers' port
OPERATOR_BIN = Path(sys.executable).parent / "deepseek-operator"
WORKER_BIN = Path(sys.executable).parent / "deepseek-worker"


def loopback_address() -> str:
    """A 127.x.y.z address where PORT is free (each process of the test listens on its own)."""
    import random

    for _ in range(100):
        address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        with socket.socket() as s:
            try:
                s.bind((address, PORT))
            except OSError:
                continue
            return address
    raise AssertionError(f"no loopback address with port {PORT} free")


class Process:
    """A subprocess with its log; stopped by its PID (SIGTERM, then SIGKILL after 20 s)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, 9)
                self.proc.wait(20)


def with_hosts(hosts: Path, argv: list[str]) -> list[str]:
    """argv run in a mount namespace of its own where `hosts` is /etc/hosts (the PID stays argv's)."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts), *argv]


def env_values(deployment: dict[str, Any]) -> dict[str, str]:
    """The first container's literal env values (valueFrom ones name Secrets that do not exist here)."""
    return {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])
            if "value" in e}


def http_status(url: str) -> int:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def sfz_resource() -> dict[str, Any]:
    return {
        "apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment",
        "metadata": {"name": "chat", "namespace": SFZ_NAMESPACE},
        "spec": {"image": "registry.example.com/deepseek-worker:1.0.0",
                 "model": {"id": SFZ_MODEL},
                 "resources": {"gpus": 1, "cpu": "8", "memory": "64Gi"},
                 "gateway": {"enabled": True, "maxHeldRequests": SFZ_HELD,
                             "scheduling": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}},
                 "autoscaling": {"minReplicas": 0, "maxReplicas": 1, "scaleDownDelaySeconds": SFZ_DELAY}},
    }


def test_scale_from_zero_through_the_gateway(keda_cluster: KedaCluster, tmp_path: Path) -> None:
    import threading

    import httpx

    k = keda_cluster
    timeline: dict[str, float] = {}  # event -> wall-clock time (KEDA's lastActiveTime is one too)

    def mark(event: str) -> None:
        timeline.setdefault(event, time.time())

    gateway_ip, worker_ip = loopback_address(), loopback_address()
    k.map_host(gateway_ip, f"chat-gateway.{SFZ_NAMESPACE}.svc", f"chat-gateway.{SFZ_NAMESPACE}.svc.cluster.local")
    gateway_hosts = tmp_path / "gateway-hosts"
    gateway_hosts.write_text(Path("/etc/hosts").read_text()
                             + f"{worker_ip} chat-primary-pods.{SFZ_NAMESPACE}.svc.cluster.local\n")
    k.kubectl("apply", "--server-side", "--force-conflicts", "-f",
              str(ROOT / "crds" / "deepseek.ai_deepseekdeployments.yaml"))
    wait_for(lambda: k.kubectl("get", "crd/deepseekdeployments.deepseek.ai", "-o",
                               "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                               check=False) == "True",  # kubectl fails on conditions still null
             60, "our CRD Established", k)
    k.kubectl("create", "namespace", SFZ_NAMESPACE)

    processes: list[Process] = []
    operator = Process([str(OPERATOR_BIN), "--standalone", f"--namespace={SFZ_NAMESPACE}", "--verbose"],
                       {**k.env, "KUBECONFIG": str(k.directory / "kubeconfig"),
                        "DEEPSEEK_OPERATOR_METRICS_PORT": str(free_port())}, tmp_path / "operator.log")
    processes.append(operator)
    worker: Process | None = None
    try:
        k.kubectl("apply", "-f", "-", stdin=json.dumps(sfz_resource()))

        def get(kind: str, name: str) -> Any:
            out = k.kubectl("get", kind, name, "-n", SFZ_NAMESPACE, "-o", "json", "--ignore-not-found")
            return json.loads(out) if out.strip() else None

        def rendered() -> Any:
            found = {f"{kind}/{name}": get(kind, name) for kind, name in (
                ("configmap", "chat-gateway"), ("deployment", "chat-gateway"), ("deployment", "chat-primary"),
                ("scaledobject", "chat-primary"))}
            return found if all(found.values()) else None

        def explain(what: str) -> str:
            return (f"{what}\noperator log:\n{operator.log()}\nkeda-operator.log:\n{k.operator_log()}"
                    + "".join(f"\n{p.log_path.name}:\n{p.log()}" for p in processes[1:]))

        found = wait_for(rendered, 90, explain("the gateway's ConfigMap and Deployment, the primary and its "
                                               "ScaledObject"), k)
        trigger = found["scaledobject/chat-primary"]["spec"]["triggers"][0]["metadata"]
        assert trigger["url"] == f"http://chat-gateway.{SFZ_NAMESPACE}.svc:{PORT}/scaling/primary", trigger
        assert keda_errors(found["scaledobject/chat-primary"]) == []

        def replicas() -> tuple[int, int]:
            d = get("deployment", "chat-primary")
            return d["spec"].get("replicas", 1), d.get("status", {}).get("readyReplicas", 0)

        # The gateway: the rendered document and env values; only the listen address is ours.
        config = tmp_path / "gateway.json"
        config.write_text(found["configmap/chat-gateway"]["data"]["gateway.json"])
        gw_env = {**os.environ, **env_values(found["deployment/chat-gateway"]),
                  "DEEPSEEK_GATEWAY_CONFIG": str(config), "DEEPSEEK_HOST": gateway_ip, "DEEPSEEK_PORT": str(PORT)}
        gw_env.pop("DEEPSEEK_METRICS_PORT", None)  # metrics on the main port: no second listener to place
        gateway_proc = Process(with_hosts(gateway_hosts, [str(WORKER_BIN)]), gw_env, tmp_path / "gateway.log")
        processes.append(gateway_proc)
        url = f"http://{gateway_ip}:{PORT}"
        wait_for(lambda: http_status(url + "/health/ready") == 200 or not gateway_proc.alive(), 60,
                 explain("the gateway process ready"), k)
        assert gateway_proc.alive(), explain("the gateway exited")

        def scaling() -> dict[str, Any]:
            return dict(httpx.get(url + "/scaling/primary", timeout=5).json())

        # At zero: KEDA reads held 0 through the Service name and keeps the Deployment at zero.
        wait_for(lambda: replicas() == (0, 0), 60, explain("the primary at zero"), k)
        def so_ready() -> bool:
            conditions = get("scaledobject", "chat-primary").get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_for(so_ready, 60, explain("the ScaledObject Ready"), k)
        assert scaling()["held"] == 0

        body = {"model": SFZ_MODEL, "messages": [{"role": "user", "content": "Hello"}], "temperature": 0,
                "max_tokens": 8}
        results: dict[str, Any] = {}

        def streaming() -> None:
            mark("request")
            with httpx.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True},
                              timeout=httpx.Timeout(10, read=180)) as response:
                results["stream_status"] = response.status_code
                lines: list[str] = []
                for line in response.iter_lines():
                    if line.startswith(": waiting"):
                        mark("held_comment")
                    elif line.startswith("data: ") and "first_token" not in timeline:
                        event = json.loads(line[6:]) if line != "data: [DONE]" else {}
                        if any(c.get("delta", {}).get("content") for c in event.get("choices", [])):
                            mark("first_token")
                    if line:  # not the blank line ending each event
                        lines.append(line)
                mark("stream_done")
                results["stream"] = lines

        def plain() -> None:
            response = httpx.post(url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(10, read=180))
            results["plain"] = response

        threads = [threading.Thread(target=streaming, daemon=True)]
        threads[0].start()
        wait_for(lambda: "held_comment" in timeline, 30, explain("the `: waiting` comment of the held stream"), k)
        threads.append(threading.Thread(target=plain, daemon=True))
        threads[1].start()
        wait_for(lambda: scaling()["held"] == SFZ_HELD, 30, explain(f"{SFZ_HELD} requests held"), k)
        refused = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1 and refused.json()["error"]["type"] == "rate_limit_error"

        # KEDA sees `held` (poll 5 s) and scales to one; kwok makes the pod Ready; its serving side starts.
        wait_for(lambda: replicas()[0] == 1, 60, explain("KEDA to scale the primary to one"), k)
        mark("scaled")
        wait_for(lambda: replicas() == (1, 1), 60, explain("the scaled-up pod Ready"), k)
        mark("pod_ready")
        assert "first_token" not in timeline and scaling()["held"] == SFZ_HELD
        w_env = {**os.environ, **env_values(get("deployment", "chat-primary")), "DEEPSEEK_MODEL": "tiny",
                 "DEEPSEEK_QUANTIZATION": "none", "DEEPSEEK_HOST": worker_ip, "DEEPSEEK_PORT": str(PORT)}
        w_env.pop("DEEPSEEK_METRICS_PORT", None)
        worker = Process([str(WORKER_BIN)], w_env, tmp_path / "worker.log")
        processes.append(worker)
        ready_deadline = time.monotonic() + 180  # polled every 20 ms: the gateway overhead is measured from it
        while http_status(f"http://{worker_ip}:{PORT}/health/ready") != 200:
            assert worker.alive(), explain("the worker exited")
            assert time.monotonic() < ready_deadline, explain("the worker on the tiny model not ready in 180 s")
            time.sleep(0.02)
        mark("worker_ready")

        for t in threads:
            t.join(180)
            assert not t.is_alive(), explain("a held request unanswered")
        assert results["stream_status"] == 200 and results["stream"][-1] == "data: [DONE]", results
        data = [json.loads(line[6:]) for line in results["stream"] if line.startswith("data: {")]
        assert "".join(c["delta"].get("content") or "" for e in data for c in e.get("choices", []))
        plain_response = results["plain"]
        assert plain_response.status_code == 200, plain_response.text
        assert plain_response.headers["x-served-by"] == "primary"
        assert plain_response.json()["choices"][0]["message"]["content"]
        mark("answered")

        # Idle: after the cooldown KEDA scales back to zero; the pod's serving side stops with it.
        wait_for(lambda: replicas()[0] == 0, SFZ_DELAY + 60, explain("KEDA to scale back to zero"), k)
        mark("scaled_to_zero")
        # KEDA counts the delay from its last poll that saw demand (status.lastActiveTime, whole seconds).
        last_active = get("scaledobject", "chat-primary")["status"]["lastActiveTime"]
        timeline["last_active"] = datetime.fromisoformat(last_active.replace("Z", "+00:00")).timestamp()
        idle_s = timeline["scaled_to_zero"] - timeline["last_active"]
        assert idle_s >= SFZ_DELAY - 1, f"to zero {idle_s:.1f}s after the last demand, before the {SFZ_DELAY}s delay"
        wait_for(lambda: not k.json("get", "pods", "-n", SFZ_NAMESPACE, "-l", "deepseek.ai/variant=primary")["items"],
                 60, explain("the primary's pod gone"), k)
        worker.stop()  # the pod is gone: so is its serving side
        mark("worker_stopped")
        metrics = httpx.get(url + "/metrics", timeout=5).text
        assert 'deepseek_gateway_hold_refused_total{variant="primary"} 1.0' in metrics
        assert 'deepseek_gateway_requests_served_total{served_by="primary"} 2.0' in metrics
        codes = re.findall(r'deepseek_worker_requests_total\{[^}]*code="(\d+)"[^}]*\} (\S+)', metrics)
        assert codes and {c for c, n in codes if float(n) > 0} <= {"200", "429"}, codes  # no error but the 429
        cold = re.search(r'deepseek_gateway_cold_start_seconds_sum\{variant="primary"\} (\S+)', metrics)
        assert cold, metrics
        measured_cold_start = float(cold.group(1))
    finally:
        for p in reversed(processes):
            p.stop()
        k.kubectl("delete", "namespace", SFZ_NAMESPACE, "--wait=false", check=False)
    for p in processes:  # stopped by SIGTERM: each exited 0 and logged no traceback
        assert p.proc.returncode == 0 and "Traceback" not in p.log_path.read_text(errors="replace"), \
            f"{p.log_path.name} (exit {p.proc.returncode}):\n{p.log()}"
    t0 = timeline["request"]
    relative = {event: round(at - t0, 3) for event, at in sorted(timeline.items(), key=lambda item: item[1])}
    record = Path(os.environ.get("SCALE_FROM_ZERO_TIMELINE", tmp_path / "scale-from-zero-timeline.json"))
    record.write_text(json.dumps({"seconds_from_first_request": relative, "scale_down_delay_seconds": SFZ_DELAY,
                                  "gateway_cold_start_seconds": measured_cold_start,
                                  "retry_after": int(refused.headers["retry-after"])}, indent=1))
    overhead = relative["first_token"] - relative["worker_ready"]
    print(f"scale from zero, seconds from the first request: {relative}; gateway overhead (worker ready -> first "
          f"token) {overhead:.3f}s; the gateway's cold start {measured_cold_start:.2f}s; timeline: {record}")
