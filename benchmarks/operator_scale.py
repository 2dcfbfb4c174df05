"""Operator scale on the real control plane: N DeepSeekDeployments at once, against kopf's own floor.

    .venv/bin/python benchmarks/operator_scale.py --counts 10,100,1000

Starts a control plane of its own (tools/control-plane/up.sh in .cluster-bench, on ports apart from
`make cluster`'s) with three roomy CPU-only kwok nodes. For each N, in a fresh namespace:
- the operator (`deepseek-operator`, the chart's ServiceAccount) and the null operator
  (benchmarks/null_operator.py: kopf, the same settings, handlers that do nothing, its own
  ServiceAccount) run side by side, so both see the same events in the same run;
- N resources (replicas 1, no GPU; kwok makes the pods Ready) are created with one `kubectl create`;
- measured: seconds from the last create until all are Ready for their generation; the operator's
  API requests per resource from the apiserver's audit log (reads, writes, watches, 409 conflicts),
  writes split into children created and status patches; CPU seconds (utime + stime) and peak RSS
  (VmHWM) of both processes; then 2 minutes idle with a 30 s resync: requests per second besides
  watches, reconciles done meanwhile, and CPU seconds of both.
Prints a markdown table and writes docs/operator-scale.png (docs/benchmarks.md, "Operator scale").
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from deepseek_operator import children
from deepseek_operator.api import parse_spec
from deepseek_operator.reconcile import owner_of, render_routing_and_monitoring
from deepseek_operator.render.common import Capabilities
from deepseek_operator.render.workload import render_workload
from deepseek_sandbox.real_cluster import AuditLog, RealCluster, admin_env, operator_kubeconfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / ".cluster-bench"
PORTS = {"CLUSTER_API_PORT": "17443", "CLUSTER_ETCD_PORT": "13379", "CLUSTER_ETCD_PEER_PORT": "13380"}
SYSTEM = "deepseek-bench"
RELEASE = "bench"
BIN = pathlib.Path(sys.executable).parent
IDLE_SECONDS = 120
# Informers the operator starts here: the core child kinds, IngressClasses, and per optional kind its
# CRD and, this cluster serving them all, the kind itself (children.py).
INFORMERS = len(children.watched()) + 1 + 2 * len(children.optional_by_crd())
RESOURCES = {"Deployment": "deployments", "Service": "services", "PodDisruptionBudget": "poddisruptionbudgets",
             "NetworkPolicy": "networkpolicies", "ServiceMonitor": "servicemonitors",
             "PrometheusRule": "prometheusrules"}
RESYNC_SECONDS = "30"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NODES = {"apiVersion": "v1", "kind": "List", "items": [{
    "apiVersion": "v1", "kind": "Node",
    "metadata": {"name": f"cpu-node-{i}", "annotations": {"kwok.x-k8s.io/node": "fake"},
                 "labels": {"type": "kwok", "kubernetes.io/os": "linux", "kubernetes.io/hostname": f"cpu-node-{i}"}},
    # ephemeral-storage: each pod asks ~18 GiB for the 7B download (a hub source without a cache,
    # docs/model-cache.md); at 4Ti a node held 221 such pods and 319 of 1000 never scheduled.
    "status": {"capacity": (cap := {"cpu": "1000", "memory": "4Ti", "pods": "500", "ephemeral-storage": "100Ti"}),
               "allocatable": cap}} for i in range(1, 4)]}


def resource(namespace: str, i: int) -> dict[str, Any]:
    return {"apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment",
            "metadata": {"name": f"chat-{i:04d}", "namespace": namespace},
            "spec": {"image": "registry.example.com/deepseek-worker:1.0.0", "replicas": 1,
                     "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"},
                     "resources": {"gpus": 0, "cpu": "10m", "memory": "64Mi"}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    return {**admin_env(BENCH), **PORTS}


def admin(*args: str, stdin: str | None = None, timeout: float = 600) -> str:
    done = subprocess.run(list(args), env=env(), input=stdin, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


@dataclass
class Process:
    """A process this benchmark started, stopped by its PID; CPU and memory from /proc."""

    name: str
    proc: subprocess.Popen[bytes]

    def cpu_seconds(self) -> float:
        fields = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def peak_rss_mb(self) -> float:
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start(name: str, cmd: list[str], kubeconfig: pathlib.Path, log: pathlib.Path, **extra: str) -> Process:
    environment = {**os.environ, "KUBECONFIG": str(kubeconfig), "HF_HUB_OFFLINE": "1", **extra}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=environment, cwd=ROOT)
    return Process(name, proc)


def wait_http(url: str, proc: Process, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited {proc.proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{proc.name}: {url} not up in {timeout}s")


def wait_for(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        time.sleep(0.2)


def metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#") and line[len(name)] in " {")


def ready_count(cluster: RealCluster, namespace: str) -> int:
    count = 0
    for obj in cluster.objects("dsd", namespace):
        status = obj.get("status", {})
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        count += ready and status.get("observedGeneration") == obj["metadata"]["generation"]
    return count


@dataclass
class Requests:
    """One user's requests by class, from the audit log."""

    by_class: collections.Counter[str] = field(default_factory=collections.Counter)

    @classmethod
    def of(cls, audit: AuditLog) -> Requests:
        counts: collections.Counter[str] = collections.Counter()
        for event in audit.events():
            verb, ref = event["verb"], event.get("objectRef") or {}
            code = int((event.get("responseStatus") or {}).get("code") or 0)
            counts["watch" if verb == "watch" else "read" if verb in ("get", "list") else "write"] += 1
            counts["conflict"] += code == 409
            counts["error"] += code >= 400 and code != 409 and not (verb == "get" and code == 404)
            if verb == "create" and ref.get("resource") != "events":
                counts["created"] += 1
            if verb == "patch" and ref.get("subresource") == "status":
                counts["status"] += 1
            if verb == "create" and ref.get("resource") == "events":
                counts["events"] += 1
        return cls(counts)


def run_one(cluster: RealCluster, n: int, kubeconfigs: dict[str, pathlib.Path], users: dict[str, str],
            logs: pathlib.Path) -> dict[str, Any]:
    namespace = f"bench-{n}"
    admin("kubectl", "create", "namespace", namespace)
    port, live = free_port(), free_port()
    operator = start("operator", [str(BIN / "deepseek-operator"), "--standalone", f"--namespace={namespace}"],
                     kubeconfigs["operator"], logs / f"operator-{n}.log", DEEPSEEK_OPERATOR_METRICS_PORT=str(port),
                     DEEPSEEK_OPERATOR_RESYNC_SECONDS=RESYNC_SECONDS)
    null = start("null", [str(BIN / "kopf"), "run", "--standalone", f"--namespace={namespace}",
                          f"--liveness=http://127.0.0.1:{live}/healthz", str(ROOT / "benchmarks" / "null_operator.py")],
                 kubeconfigs["null"], logs / f"null-{n}.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/metrics", operator)
        wait_http(f"http://127.0.0.1:{live}/healthz", null)
        # Startup reads are not per-resource costs: count from when every cache has listed (the child
        # kinds, IngressClasses, 3 CRDs, and the 3 optional kinds this cluster serves).
        wait_for(lambda: metric(port, "deepseek_operator_informer_lists_total") >= INFORMERS, "the caches' first lists")
        audits = {who: AuditLog(cluster.directory / "audit.log", users[who]) for who in users}
        for audit in audits.values():
            audit.mark()
        cpu0 = {p.name: p.cpu_seconds() for p in (operator, null)}
        items = [resource(namespace, i) for i in range(n)]
        admin("kubectl", "create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        applied = time.monotonic()
        while ready_count(cluster, namespace) < n:
            if time.monotonic() - applied > 900:
                raise TimeoutError(f"N={n}: not all Ready after 900 s")
            time.sleep(0.5)
        ready_s = time.monotonic() - applied
        busy = {p.name: p.cpu_seconds() - cpu0[p.name] for p in (operator, null)}
        work = Requests.of(audits["operator"]).by_class
        audits["operator"].mark()
        idle0 = {p.name: p.cpu_seconds() for p in (operator, null)}
        reconciles0 = metric(port, "deepseek_operator_reconciles_total")
        time.sleep(IDLE_SECONDS)
        idle = Requests.of(audits["operator"]).by_class
        result = {
            "n": n, "ready_s": ready_s,
            "reads": work["read"] / n, "writes": work["write"] / n, "watches": work["watch"],
            "created": work["created"] / n, "status": work["status"] / n, "events": work["events"],
            "conflicts": work["conflict"], "errors": work["error"],
            "cpu": busy["operator"], "cpu_null": busy["null"],
            "idle_rps": (idle["read"] + idle["write"]) / IDLE_SECONDS, "idle_watches": idle["watch"],
            "idle_reconciles": metric(port, "deepseek_operator_reconciles_total") - reconciles0,
            "idle_cpu": operator.cpu_seconds() - idle0["operator"], "idle_cpu_null": null.cpu_seconds() - idle0["null"],
            "rss": operator.peak_rss_mb(), "rss_null": null.peak_rss_mb(),
        }
    finally:
        operator.stop()
        null.stop()
    return result


def floor_one(cluster: RealCluster, n: int) -> dict[str, Any]:
    """The control plane's own floor: the children the operator would create for N resources, rendered
    by its renderers and created by this process with the operator's in-flight limit (20), no
    operator at all; seconds until every Deployment is available. No operator can be faster here."""
    namespace = f"bench-floor-{n}"
    admin("kubectl", "create", "namespace", namespace)
    children = [child for i in range(n) for child in rendered_children(namespace, i)]
    started = time.monotonic()
    with httpx.Client(base_url=str(cluster.http.base_url), headers=dict(cluster.http.headers), timeout=120,
                      verify=str(cluster.directory / "pki" / "apiserver.crt"),
                      limits=httpx.Limits(max_connections=20)) as client, \
            concurrent.futures.ThreadPoolExecutor(20) as pool:
        codes = collections.Counter(pool.map(lambda c: create(cluster, client, c), children))
    created_s = time.monotonic() - started
    assert set(codes) == {201}, codes
    while available(cluster, namespace) < n:
        if time.monotonic() - started > 900:
            raise TimeoutError(f"floor N={n}: not all available after 900 s")
        time.sleep(0.5)
    return {"n": n, "children": len(children), "created_s": created_s, "ready_s": time.monotonic() - started}


def rendered_children(namespace: str, i: int) -> list[dict[str, Any]]:
    """What the operator creates for resource(namespace, i), without the owner reference."""
    body = {**resource(namespace, i), "metadata": {**resource(namespace, i)["metadata"], "uid": "floor"}}
    owner, spec = owner_of(body), parse_spec(body["spec"])
    caps = Capabilities(service_monitor=True, prometheus_rule=True, gateway_api=True)
    out = render_workload(owner, spec) + render_routing_and_monitoring(owner, spec, caps, {"primary": 100})
    for child in out:
        child["metadata"].pop("ownerReferences")
    return out


def create(cluster: RealCluster, client: httpx.Client, child: dict[str, Any]) -> int:
    res = cluster.resource(RESOURCES[child["kind"]])
    return client.post(res.path(child["metadata"]["namespace"]), json=child).status_code


def available(cluster: RealCluster, namespace: str) -> int:
    deployments = cluster.objects("deployments", namespace)
    return sum(int(d.get("status", {}).get("availableReplicas", 0)) >= 1 for d in deployments)


def delete_namespace(name: str) -> None:
    """Garbage collection of N resources' children takes minutes: not part of any figure."""
    admin("kubectl", "delete", "namespace", name, "--wait=true", "--timeout=900s", timeout=1000)


def apply_generated(*create: str) -> None:
    """`kubectl create ... --dry-run=client -o yaml | kubectl apply -f -`: create unless it exists."""
    admin("kubectl", "apply", "-f", "-", stdin=admin("kubectl", *create, "--dry-run=client", "-o", "yaml"))


def setup() -> tuple[RealCluster, dict[str, pathlib.Path], dict[str, str]]:
    done = subprocess.run([str(ROOT / "tools/control-plane/up.sh")], env={**env(), "CLUSTER_DIR": str(BENCH)},
                          capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode:
        raise RuntimeError(done.stderr)
    admin("kubectl", "apply", "--server-side", "--force-conflicts", "-f",
          str(ROOT / "crds" / "deepseek.ai_deepseekdeployments.yaml"))
    admin("kubectl", "wait", "--for=condition=Established", "crd/deepseekdeployments.deepseek.ai", "--timeout=60s")
    admin("kubectl", "apply", "-f", "-", stdin=json.dumps(NODES))
    admin("kubectl", "wait", "--for=condition=Ready", "node", "--all", "--timeout=60s")
    chart = admin("helm", "template", RELEASE, str(ROOT / "charts/deepseek-operator"), "-n", SYSTEM, "--skip-crds")
    apply_generated("create", "namespace", SYSTEM)
    admin("kubectl", "apply", "--server-side", "--force-conflicts", "-n", SYSTEM, "-f", "-", stdin=chart)
    apply_generated("create", "serviceaccount", "null-operator", "-n", SYSTEM)
    apply_generated("create", "clusterrolebinding", "null-operator", f"--clusterrole={RELEASE}-deepseek-operator",
                    f"--serviceaccount={SYSTEM}:null-operator")
    kubeconfigs = {"operator": BENCH / "operator.kubeconfig", "null": BENCH / "null.kubeconfig"}
    users = {"operator": operator_kubeconfig(BENCH, SYSTEM, f"{RELEASE}-deepseek-operator", kubeconfigs["operator"]),
             "null": operator_kubeconfig(BENCH, SYSTEM, "null-operator", kubeconfigs["null"])}
    return RealCluster(BENCH, kubeconfigs["operator"], users["operator"]), kubeconfigs, users


def table(results: list[dict[str, Any]]) -> str:
    head = ("| N | all Ready after (s) | reads / resource | writes / resource (children created + status) "
            "| 409s, other errors | operator CPU s / resource | null operator CPU s / resource | CPU ratio "
            "| peak RSS MB (null) | idle requests / s (watches) | idle reconciles | idle CPU s (null) |")
    rows = [head, "|" + "---|" * 12]
    for r in results:
        n = r["n"]
        rows.append(
            f"| {n} | {r['ready_s']:.1f} | {r['reads']:.2f} "
            f"| {r['writes']:.2f} ({r['created']:.2f} + {r['status']:.2f}) "
            f"| {r['conflicts']}, {r['errors']} | {r['cpu'] / n:.4f} | {r['cpu_null'] / n:.4f} "
            f"| {r['cpu'] / max(r['cpu_null'], 1e-9):.2f} | {r['rss']:.0f} ({r['rss_null']:.0f}) "
            f"| {r['idle_rps']:.3f} ({r['idle_watches']}) | {r['idle_reconciles']:.0f} "
            f"| {r['idle_cpu']:.1f} ({r['idle_cpu_null']:.1f}) |")
    return "\n".join(rows)


def plot(results: list[dict[str, Any]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(ns, [r["ready_s"] for r in results], "o-")
    axes[0].set(title="all Ready after the last create", xlabel="resources", ylabel="seconds", xscale="log")
    axes[1].plot(ns, [r["cpu"] / r["n"] for r in results], "o-", label="operator")
    axes[1].plot(ns, [r["cpu_null"] / r["n"] for r in results], "s--", label="null kopf operator (floor)")
    axes[1].set(title="CPU seconds per resource", xlabel="resources", xscale="log")
    axes[1].legend()
    axes[2].plot(ns, [r["reads"] for r in results], "o-", label="reads")
    axes[2].plot(ns, [r["writes"] for r in results], "s-", label="writes")
    axes[2].set(title="API requests per resource (no watches)", xlabel="resources", xscale="log")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    global IDLE_SECONDS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="10,100,1000", help="comma-separated N values")
    parser.add_argument("--idle-seconds", type=int, default=IDLE_SECONDS, help="idle window after each N")
    parser.add_argument("--keep", action="store_true", help="leave the benchmark's control plane running")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "operator-scale.png"))
    parser.add_argument("--floor", action="store_true",
                        help="also time the control plane alone creating the same children (floor_one)")
    args = parser.parse_args()
    IDLE_SECONDS = args.idle_seconds
    logs = BENCH / "logs-bench"
    try:
        cluster, kubeconfigs, users = setup()
        logs.mkdir(exist_ok=True)
        results = []
        for n in (int(c) for c in args.counts.split(",")):
            results.append(run_one(cluster, n, kubeconfigs, users, logs))
            print(json.dumps(results[-1]), flush=True)
            delete_namespace(f"bench-{n}")
            if args.floor:
                print(json.dumps({"floor": floor_one(cluster, n)}), flush=True)
                delete_namespace(f"bench-floor-{n}")
        print(table(results))
        plot(results, pathlib.Path(args.plot))
    finally:
        if not args.keep:
            subprocess.run([str(ROOT / "tools/control-plane/down.sh")], env={**env(), "CLUSTER_DIR": str(BENCH)},
                           capture_output=True, timeout=120, check=False)


if __name__ == "__main__":
    main()
