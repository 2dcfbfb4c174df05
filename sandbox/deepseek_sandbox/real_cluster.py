"""The real control plane (`make cluster`: tools/control-plane) as a test backend, the sandbox's twin.

Shared by the suites (tests/conftest.py) and benchmarks/operator_scale.py, so it lives outside tests/.

`RealCluster` offers the same test API as the sandbox (`get`, `objects`, `kubectl_env`, `stats`,
`reset_stats`) over the real apiserver: reads go over HTTPS with the admin token; the write counter
is read from the apiserver's audit log, counting only the requests of the operator's own identity
(the chart's ServiceAccount), so controller-manager, scheduler and kwok traffic never counts.

Reads are synchronous (short HTTPS calls with a timeout): the event loop that runs a test hosts no
API server here, so a few milliseconds of blocking cannot stall the cluster or the operator.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import pathlib
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from .stats import VERB_BY_METHOD, WriteStats

# The repository checkout (the sandbox is installed editable, `make bootstrap`): the control plane's scripts.
ROOT = pathlib.Path(__file__).resolve().parents[2]
CONTROL_PLANE = ROOT / "tools" / "control-plane"
WRITE_VERBS = {*VERB_BY_METHOD.values(), "deletecollection"}


@dataclass(frozen=True)
class ApiResource:
    group: str
    version: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None, name: str = "") -> str:
        base = "/api/v1" if self.group == "" else f"/apis/{self.group}/{self.version}"
        scope = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        return f"{base}{scope}/{self.plural}" + (f"/{name}" if name else "")

    @property
    def audit_name(self) -> str:
        """The resource as the write counter names it: `deployments.apps`, `pods`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


@dataclass
class AuditLog:
    """Requests of one user in the apiserver's JSON-lines audit log, from a byte offset on."""

    path: pathlib.Path
    username: str
    offset: int = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def events(self, since: int | None = None) -> list[dict[str, Any]]:
        """Completed requests (stage ResponseComplete) of `username` after the offset."""
        out = []
        with self.path.open("rb") as f:
            f.seek(self.offset if since is None else since)
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a line still being written
                event = json.loads(line)
                if event.get("stage") == "ResponseComplete" and event["user"].get("username") == self.username:
                    out.append(event)
        return out

    def requests(self) -> collections.Counter[tuple[str, str]]:
        """Every request after the offset by (verb, resource), reads included; `watch` is a verb here."""
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        for event in self.events():
            ref = event.get("objectRef") or {}
            plural = ref.get("resource", "")
            resource = f"{plural}.{ref['apiGroup']}" if ref.get("apiGroup") else plural
            counts[(event["verb"], resource or event.get("requestURI", ""))] += 1
        return counts

    def writes(self) -> WriteStats:
        stats = WriteStats()
        for event in self.events():
            verb, ref = event["verb"], event.get("objectRef") or {}
            if verb in WRITE_VERBS and ref:
                resource = f"{ref['resource']}.{ref['apiGroup']}" if ref.get("apiGroup") else ref["resource"]
                stats.by_key[(verb, resource, ref.get("subresource", ""))] += 1
        return stats


@dataclass
class RealCluster:
    """One running control plane (its directory as up.sh wrote it) and the operator's identity."""

    directory: pathlib.Path
    operator_kubeconfig: pathlib.Path
    operator_user: str
    session_start: int = 0  # the audit log's size when this test session began
    _resources: dict[str, ApiResource] = field(default_factory=dict)
    _http: httpx.Client | None = None

    def __post_init__(self) -> None:
        self.audit = AuditLog(self.directory / "audit.log", self.operator_user)

    # -- the API for tests, as the sandbox's -------------------------------------------------
    def kubectl_env(self) -> dict[str, str]:
        """kubectl as the cluster admin, with a discovery cache of this cluster's own."""
        return {"KUBECONFIG": str(self.directory / "kubeconfig"),
                "KUBECACHEDIR": str(self.directory / "kubectl-cache")}

    def operator_env(self) -> dict[str, str]:
        """The operator authenticated as the chart's ServiceAccount (RBAC enforced for real)."""
        return {"KUBECONFIG": str(self.operator_kubeconfig),
                "KUBECACHEDIR": str(self.directory / "operator-kubectl-cache")}

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        res = self.resource(resource)
        response = self.http.get(res.path(namespace, name))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    def objects(self, resource: str, namespace: str | None = None,
                label_selector: str | None = None) -> list[dict[str, Any]]:
        res = self.resource(resource)
        params = {"labelSelector": label_selector} if label_selector else {}
        response = self.http.get(res.path(namespace), params=params)
        response.raise_for_status()
        return list(response.json().get("items") or [])

    def set_pod_ready(self, namespace: str, name: str, ready: bool | None) -> None:
        """Force a pod's readiness as the sandbox does: kwok's `deepseek-pod-unready` stage reads the
        annotation (tools/control-plane/kwok-stages.yaml); None or True returns it to Ready."""
        value = "false" if ready is False else None
        patch = {"metadata": {"annotations": {"sandbox.deepseek.ai/ready": value}}}
        response = self.http.patch(self.resource("pods").path(namespace, name), json=patch,
                                   headers={"Content-Type": "application/merge-patch+json"})
        response.raise_for_status()

    @contextlib.contextmanager
    def scratch_namespace(self, prefix: str) -> Iterator[str]:
        """A namespace of its own for a test module (a fresh name: a deleted one may still terminate)."""
        name = f"{prefix}-{secrets.token_hex(3)}"
        created = self.http.post("/api/v1/namespaces",
                                 json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        assert created.status_code == 201, created.text
        try:
            yield name
        finally:
            self.http.delete(f"/api/v1/namespaces/{name}")

    def stats(self) -> WriteStats:
        """The operator's writes since `reset_stats()`, from the audit log."""
        return self.audit.writes()

    def reset_stats(self) -> None:
        self.audit.mark()

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            token = (self.directory / "token").read_text().strip()
            port = _env_value(self.directory / "env", "CLUSTER_API_PORT")
            self._http = httpx.Client(base_url=f"https://127.0.0.1:{port}", timeout=10,
                                      verify=str(self.directory / "pki" / "apiserver.crt"),
                                      headers={"Authorization": f"Bearer {token}"})
        return self._http

    def resource(self, name: str) -> ApiResource:
        """Resolve `pods`, `dsd`, `deployments.apps`, `events.k8s.io/v1/events`, `v1/events`."""
        if name not in self._resources:
            self._resources[name] = self._discover(name)
        return self._resources[name]

    def _discover(self, name: str) -> ApiResource:
        wanted_gv, _, plain = name.rpartition("/")
        plain, _, wanted_group = plain.partition(".")
        for gv, entry in self._discovery():
            group, _, version = gv.rpartition("/")
            if (wanted_gv and gv != wanted_gv) or (wanted_group and group != wanted_group):
                continue
            if plain in (entry["name"], entry.get("singularName"), entry["kind"].lower(),
                         *(entry.get("shortNames") or [])):
                return ApiResource(group, version, entry["name"], bool(entry["namespaced"]))
        raise KeyError(f"no such resource on the cluster: {name}")

    def _discovery(self) -> list[tuple[str, dict[str, Any]]]:
        """(groupVersion, resource entry) for every preferred version, core first."""
        versions = ["v1"] + [g["preferredVersion"]["groupVersion"]
                             for g in self.http.get("/apis").json()["groups"]]
        out = []
        for gv in versions:
            body = self.http.get("/api/v1" if gv == "v1" else f"/apis/{gv}").json()
            out += [(gv, r) for r in body["resources"] if "/" not in r["name"]]
        return out

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


def _env_value(path: pathlib.Path, key: str) -> str:
    for line in path.read_text().splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1]
    raise KeyError(f"{key} missing in {path}")


def start_control_plane(directory: pathlib.Path) -> bool:
    """Run `make cluster`'s script; True when this call started the processes (so must stop them)."""
    was_running = (directory / "pids" / "kube-apiserver").exists() and _ready(directory)
    done = subprocess.run([str(CONTROL_PLANE / "up.sh")], env=_env(directory), capture_output=True,
                          text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"tools/control-plane/up.sh exited {done.returncode}:\n{done.stderr[-4000:]}")
    return not was_running


def stop_control_plane(directory: pathlib.Path) -> None:
    subprocess.run([str(CONTROL_PLANE / "down.sh")], env=_env(directory), capture_output=True, timeout=120,
                   check=False)


def _ready(directory: pathlib.Path) -> bool:
    try:
        port = _env_value(directory / "env", "CLUSTER_API_PORT")
        token = (directory / "token").read_text().strip()
        response = httpx.get(f"https://127.0.0.1:{port}/readyz", verify=False, timeout=2,
                             headers={"Authorization": f"Bearer {token}"})
    except (OSError, KeyError, httpx.HTTPError):
        return False
    return response.status_code == 200


def _env(directory: pathlib.Path) -> dict[str, str]:
    return {**os.environ, "CLUSTER_DIR": str(directory), "PATH": f"{ROOT / '.tools' / 'bin'}:{os.environ['PATH']}"}


def admin_env(directory: pathlib.Path) -> dict[str, str]:
    """Environment of a kubectl/helm subprocess acting as the cluster's admin."""
    return {**_env(directory), "KUBECONFIG": str(directory / "kubeconfig"),
            "KUBECACHEDIR": str(directory / "kubectl-cache")}


def operator_kubeconfig(cluster: pathlib.Path, namespace: str, service_account: str,
                        out: pathlib.Path) -> str:
    """A kubeconfig with a fresh token of `namespace/service_account`; returns the audit username."""
    token = subprocess.run(["kubectl", "create", "token", service_account, "-n", namespace, "--duration=24h"],
                           env=admin_env(cluster), capture_output=True, text=True, timeout=60,
                           check=True).stdout.strip()
    port = _env_value(cluster / "env", "CLUSTER_API_PORT")
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "local", "cluster": {"server": f"https://127.0.0.1:{port}",
                                                   "certificate-authority": str(cluster / "pki" / "apiserver.crt")}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator",
                                                      "namespace": "default"}}],
    }
    out.write_text(json.dumps(config))
    return f"system:serviceaccount:{namespace}:{service_account}"


def audit_usage(path: pathlib.Path, username: str,
                since: int = 0) -> collections.Counter[tuple[str, str, str, str, int]]:
    """(verb, apiGroup, resource, subresource, response code) -> count, from byte `since` of the log."""
    usage: collections.Counter[tuple[str, str, str, str, int]] = collections.Counter()
    for event in AuditLog(path, username).events(since=since):
        ref = event.get("objectRef") or {}
        usage[(event["verb"], ref.get("apiGroup", ""), ref.get("resource", ""), ref.get("subresource", ""),
               int((event.get("responseStatus") or {}).get("code", 0)))] += 1
    return usage
