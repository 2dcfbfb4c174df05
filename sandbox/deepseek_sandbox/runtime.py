"""The background control loop: deployment controller, kubelet, CRD establishment.

One asyncio task runs passes whenever a relevant object changes (a store listener sets an event)
and on a short tick, so time-based transitions (readiness delays, crash loops, progress deadlines)
happen without anyone polling the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from . import meta
from .controllers import DeploymentController
from .kubelet import Kubelet
from .resources import ResourceInfo
from .store import Store

log = logging.getLogger(__name__)
_WATCHED = {"pods", "deployments", "customresourcedefinitions", "namespaces"}


class Controllers:
    """Owns the loop task; ``kubelet`` and ``deployments`` are the simulated components."""

    def __init__(self, store: Store, ready_delay: float, gpus_per_node: int, nodes: int) -> None:
        self.store = store
        self.kubelet = Kubelet(store, ready_delay, gpus_per_node, nodes)
        self.deployments = DeploymentController(store)
        self.tick = max(0.02, min(0.1, ready_delay / 4))
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        store.listeners.append(self._on_event)

    def _on_event(self, info: ResourceInfo, kind: str, obj: dict[str, Any]) -> None:
        if info.plural in _WATCHED:
            self._wake.set()

    async def seed_nodes(self) -> None:
        """Create the simulated Node objects."""
        await self.kubelet.seed_nodes()

    def start(self) -> None:
        """Start the loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="deepseek-sandbox-controllers")

    async def stop(self) -> None:
        """Stop the loop and wait for it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tick):
                    await self._wake.wait()
            self._wake.clear()
            await self.pass_once()

    async def pass_once(self) -> None:
        """One full pass of every component (also usable directly by tests)."""
        await self._establish_crds()
        await self.deployments.sync()
        await self.kubelet.sync()

    async def _establish_crds(self) -> None:
        info = self.store.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert info is not None
        for crd in self.store.items(info):
            conds = (crd.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" for c in conds):
                continue
            await self.store.update(info, None, crd["metadata"]["name"], _established, "status")


def _established(crd: dict[str, Any]) -> dict[str, Any]:
    now = meta.now_iso()
    names = (crd.get("spec") or {}).get("names") or {}
    crd["status"] = {
        "acceptedNames": names,
        "storedVersions": [v["name"] for v in (crd.get("spec") or {}).get("versions") or [] if v.get("storage")],
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    }
    return crd
