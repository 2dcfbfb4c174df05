"""The in-process sandbox: ``async with Sandbox(...) as sb`` serves an emulated cluster.

It wires the emulator (:mod:`.server`), the controllers (:mod:`.controllers`, :mod:`.kubelet`),
the CRDs to install and a kubeconfig file, and exposes what tests need: ``url``,
``kubeconfig_path``, ``kubectl_env()``, ``stats()``, ``objects()``, ``set_pod_ready()``.
"""

from __future__ import annotations

import pathlib
import tempfile
from collections.abc import Callable
from types import TracebackType
from typing import Any

import kmock

from . import kubeconfig, resources, selectors
from .resources import ResourceInfo
from .runtime import Controllers
from .server import SandboxEmulator
from .stats import WriteStats

SEED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class Sandbox:
    """An emulated Kubernetes API on 127.0.0.1 plus deployment controller and kubelet."""

    def __init__(
        self,
        crds_dir: pathlib.Path | str | None = None,
        *,
        extra_crds_dir: pathlib.Path | str | None = None,
        with_monitoring: bool = False,
        with_gateway_api: bool = False,
        ready_delay: float = 1.0,
        gpus_per_node: int = 8,
        nodes: int = 2,
        host: str = "127.0.0.1",
        port: int = 0,
        kubeconfig_path: pathlib.Path | str | None = None,
    ) -> None:
        self.emulator = SandboxEmulator()
        self.store = self.emulator.store
        self.controllers = Controllers(self.store, ready_delay=ready_delay, gpus_per_node=gpus_per_node, nodes=nodes)
        self._crd_docs = self._collect_crds(crds_dir, extra_crds_dir, with_monitoring, with_gateway_api)
        self._host, self._port = host, port
        self._kubeconfig_arg = kubeconfig_path
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server: kmock.Server | None = None
        self.kubeconfig_path = pathlib.Path()
        self.kubectl_cache_dir = pathlib.Path()
        self.url = ""

    @staticmethod
    def _collect_crds(crds_dir: pathlib.Path | str | None, extra: pathlib.Path | str | None,
                      monitoring: bool, gateway: bool) -> list[dict[str, Any]]:
        docs = resources.load_crds(resources.crd_files(crds_dir))
        if monitoring:
            found = resources.load_crds(resources.crd_files(extra, "monitoring.coreos.com_"))
            wanted = {"servicemonitors", "prometheusrules"}
            found = [d for d in found if d["spec"]["names"]["plural"] in wanted]
            docs += found or resources.MONITORING_FALLBACK
        if gateway:
            found = resources.load_crds(resources.crd_files(extra, "gateway.networking.k8s.io_"))
            found = [d for d in found if d["spec"]["names"]["plural"] in {"httproutes", "gateways"}]
            docs += found or resources.GATEWAY_FALLBACK
        return docs

    async def __aenter__(self) -> Sandbox:
        await self.emulator.__aenter__()
        for info in resources.builtin_resources():
            self.emulator.register(info)
        await self._seed()
        self._server = kmock.Server(self.emulator, host=self._host, port=self._port)
        await self._server.__aenter__()
        self.url = str(self._server.url).rstrip("/")
        self.kubeconfig_path = self._kubeconfig_target()
        kubeconfig.write(self.kubeconfig_path, self.url)
        self.kubectl_cache_dir = kubeconfig.fresh_kubectl_cache(self.kubeconfig_path)
        self.controllers.start()
        return self

    def _kubeconfig_target(self) -> pathlib.Path:
        if self._kubeconfig_arg is not None:
            return pathlib.Path(self._kubeconfig_arg)
        self._tmp = tempfile.TemporaryDirectory(prefix="deepseek-sandbox-")
        return pathlib.Path(self._tmp.name) / "kubeconfig"

    async def _seed(self) -> None:
        ns = self.resource("namespaces")
        for name in SEED_NAMESPACES:
            await self.store.create(ns, None, {"metadata": {"name": name}, "status": {"phase": "Active"}})
        crd_info = self.resource("customresourcedefinitions")
        for doc in self._crd_docs:
            await self.store.create(crd_info, None, doc)
        await self.controllers.seed_nodes()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.controllers.stop()
        await self.emulator.gc.close()
        if self._server is not None:
            await self._server.__aexit__(exc_type, exc, tb)
        await self.emulator.__aexit__(exc_type, exc, tb)
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- the API for tests ---------------------------------------------------------------------
    def kubectl_env(self) -> dict[str, str]:
        """Environment for a kubectl (or kopf) subprocess: this sandbox's kubeconfig and its own
        kubectl cache, so discovery cached for an earlier sandbox on the same port is never used."""
        return {"KUBECONFIG": str(self.kubeconfig_path), "KUBECACHEDIR": str(self.kubectl_cache_dir)}

    def resource(self, name: str) -> ResourceInfo:
        """Resolve ``pods``, ``deploy``, ``deployments.apps``, ``dsd``, ``apps/v1/deployments``."""
        for info in self.store.resources.values():
            plain = name.split("/")[-1].split(".")[0]
            group = name.split(".", 1)[1] if "." in name and "/" not in name else None
            if "/" in name and name != f"{info.api_version}/{info.plural}":
                continue
            if group is not None and group != info.group:
                continue
            if plain in (info.plural, info.singular, info.kind.lower(), *info.short_names):
                return info
        raise KeyError(f"no such resource in the sandbox: {name}")

    def objects(
        self, resource: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Copies of the live objects of ``resource`` (in ``namespace``, matching the selector)."""
        match = selectors.label_selector(label_selector)
        return [o for o in self.store.items(self.resource(resource), namespace) if match(o)]

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A copy of one object, or None."""
        found = self.store.current(self.resource(resource), namespace, name)
        return None if found is None else dict(found)

    def stats(self) -> WriteStats:
        """A snapshot of the write counter (HTTP writes only; controller writes excluded)."""
        return self.emulator.writes.snapshot()

    def reset_stats(self) -> None:
        """Zero the write counter."""
        self.emulator.writes.reset()

    def listen(self, callback: Callable[[str, str, dict[str, Any]], None]) -> None:
        """Call ``callback(plural, event type, object)`` synchronously on every stored change.

        Runs under the store lock, in order: use it to record histories (e.g. every pod state
        during a rollout) rather than polling; it must not block or write.
        """
        self.store.listeners.append(lambda info, kind, obj: callback(info.plural, kind, obj))

    def set_pod_ready(self, namespace: str, name: str, ready: bool | None) -> None:
        """Force a pod's readiness (None returns it to the simulated default)."""
        self.controllers.kubelet.set_ready(namespace, name, ready)
