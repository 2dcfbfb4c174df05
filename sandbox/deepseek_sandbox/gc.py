"""Garbage collection by ownerReferences, in the background like kube-controller-manager.

kmock 0.8 has no garbage collector: deleting an owner leaves its children behind. Here, when an
object disappears, its dependents (objects whose ownerReferences name its uid) are deleted in
turn, cascading; a dependent with other live owners only loses the dangling reference. Deleting a
Namespace deletes what lives in it. ``propagationPolicy=Orphan`` strips the references instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import errors, meta
from .resources import ResourceInfo
from .store import Store


class GarbageCollector:
    """Listens to the store's DELETED events and collects dependents in background tasks."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.orphan: set[str] = set()  # owner uids whose dependents must be orphaned
        self._tasks: set[asyncio.Task[None]] = set()
        store.listeners.append(self._on_event)

    def _on_event(self, info: ResourceInfo, kind: str, obj: dict[str, Any]) -> None:
        if kind != "DELETED":
            return
        task = asyncio.get_running_loop().create_task(self._collect(info, obj))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait until no collection is in flight (for tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel collections in flight."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _collect(self, info: ResourceInfo, owner: dict[str, Any]) -> None:
        uid = owner["metadata"].get("uid", "")
        orphan = uid in self.orphan
        self.orphan.discard(uid)
        if info.kind == "Namespace" and info.group == "":
            await self._empty_namespace(owner["metadata"]["name"])
        live = self._live_uids()
        for dep_info, dep in self._dependents(uid):
            others = [u for u in meta.owner_uids(dep) if u != uid and u in live]
            try:
                if orphan or others:
                    await self._drop_reference(dep_info, dep, uid)
                else:
                    await self.store.delete(dep_info, dep["metadata"].get("namespace"), dep["metadata"]["name"])
            except errors.ApiError as exc:
                if exc.code != 404:  # already gone is the goal; anything else is a bug
                    raise

    async def _empty_namespace(self, namespace: str) -> None:
        for info in list(self.store.resources.values()):
            if not info.namespaced:
                continue
            for obj in self.store.items(info, namespace):
                try:
                    await self.store.delete(info, namespace, obj["metadata"]["name"])
                except errors.ApiError as exc:
                    if exc.code != 404:
                        raise

    def _live_uids(self) -> set[str]:
        return {
            obj["metadata"].get("uid", "")
            for info in self.store.resources.values()
            for obj in self.store.items(info)
        }

    def _dependents(self, uid: str) -> list[tuple[ResourceInfo, dict[str, Any]]]:
        return [
            (info, obj)
            for info in list(self.store.resources.values())
            for obj in self.store.items(info)
            if uid in meta.owner_uids(obj)
        ]

    async def _drop_reference(self, info: ResourceInfo, obj: dict[str, Any], uid: str) -> None:
        def change(cur: dict[str, Any]) -> dict[str, Any]:
            refs = [r for r in cur["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            cur["metadata"]["ownerReferences"] = refs
            if not refs:
                del cur["metadata"]["ownerReferences"]
            return cur

        md = obj["metadata"]
        await self.store.update(info, md.get("namespace"), md["name"], change)
