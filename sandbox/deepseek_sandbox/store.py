"""The object store: kmock's ``objects`` array plus the write rules of kube-apiserver.

Every write (over HTTP or from the sandbox's own controllers) goes through :class:`Store`, which
stamps metadata, enforces optimistic concurrency, runs admission for custom resources, records a
watch event with its resourceVersion and wakes the controllers. Watch events are kept per resource
(bounded) so watches can resume from a resourceVersion, which kmock 0.8 cannot do.
"""

from __future__ import annotations

import asyncio
import collections
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
from kmock._internal import aiobus  # kmock exports Bus, but not for type checkers

from . import customs, errors, meta
from .resources import ResourceInfo

Key = tuple[kmock.resource, str | None, str]
Listener = Callable[[ResourceInfo, str, dict[str, Any]], None]
HISTORY = 4000  # watch events kept per resource for resume-from-resourceVersion
VERSIONS_KEPT = 8  # object versions kept in kmock's history (bounded memory for long runs)


class Store:
    """Objects by (resource, namespace, name) in ``emulator.objects``, with apiserver semantics."""

    def __init__(self, objects: kmock.ObjectsArray) -> None:
        self.objects = objects
        self.lock = asyncio.Lock()
        self.rv = 1
        self.resources: dict[tuple[str, str, str], ResourceInfo] = {}
        self.history: dict[tuple[str, str, str], collections.deque[tuple[int, dict[str, Any]]]] = {}
        self.buses: dict[tuple[str, str, str], aiobus.Bus[dict[str, Any]]] = {}
        self.listeners: list[Listener] = []

    # -- catalog -------------------------------------------------------------------------------
    def register(self, info: ResourceInfo) -> None:
        """Serve ``info`` (idempotent: a re-registered CRD replaces its former definition)."""
        self.resources[info.key] = info
        self.history.setdefault(info.key, collections.deque(maxlen=HISTORY))
        self.buses.setdefault(info.key, aiobus.Bus())

    def lookup(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        """The served resource, if any."""
        return self.resources.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceInfo | None:
        """The resource serving ``kind`` in ``api_version`` (for ownerReferences)."""
        for info in self.resources.values():
            if info.api_version == api_version and info.kind == kind:
                return info
        return None

    @staticmethod
    def key(info: ResourceInfo, namespace: str | None, name: str) -> Key:
        return (kmock.resource(info.group, info.version, info.plural), namespace if info.namespaced else None, name)

    # -- reads ---------------------------------------------------------------------------------
    def current(self, info: ResourceInfo, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object (not a copy) or None."""
        key = self.key(info, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key].raw

    def get(self, info: ResourceInfo, namespace: str | None, name: str) -> dict[str, Any]:
        """A copy of the object; 404 NotFound if absent."""
        obj = self.current(info, namespace, name)
        if obj is None:
            raise errors.not_found(info.plural, info.group, name)
        return copy.deepcopy(obj)

    def items(self, info: ResourceInfo, namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of all live objects of ``info`` (in ``namespace`` if given), sorted by ns/name."""
        res = kmock.resource(info.group, info.version, info.plural)
        found = [
            obj.raw for (r, ns, _), obj in self.objects.items()
            if r == res and not obj.deleted and (namespace is None or ns == namespace)
        ]
        found.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        return copy.deepcopy(found)

    # -- writes --------------------------------------------------------------------------------
    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    async def _emit(self, info: ResourceInfo, kind: str, obj: dict[str, Any]) -> None:
        event = {"type": kind, "object": copy.deepcopy(obj)}
        self.history[info.key].append((self.rv, event))
        await self.buses[info.key].put(event)
        for listener in self.listeners:
            listener(info, kind, obj)

    def _save(self, key: Key, obj: dict[str, Any]) -> None:
        if key in self.objects:
            self.objects[key].create(obj)  # appends a version (kmock's create is "append")
            del self.objects[key].history[:-VERSIONS_KEPT]
        else:
            self.objects[key] = obj

    async def create(self, info: ResourceInfo, namespace: str | None, body: dict[str, Any],
                     dry_run: bool = False) -> dict[str, Any]:
        """Create; 409 AlreadyExists, 404 if the namespace is missing, 422 from admission."""
        body = copy.deepcopy(body)
        md = body.setdefault("metadata", {})
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"] + meta.random_suffix()
        name = md.get("name")
        if not name:
            required = ("metadata.name", "Required value: name or generateName is required")
            raise errors.invalid(info.kind, info.group, "", [required])
        body_ns = md.get("namespace")
        if info.namespaced and body_ns and namespace and body_ns != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request")
        namespace = namespace or body_ns or ("default" if info.namespaced else None)
        async with self.lock:
            self._check_namespace(info, namespace)
            if self.current(info, namespace, name) is not None:
                raise errors.already_exists(info.plural, info.group, name)
            obj = customs.admit(info, meta.stamp_new(info, body, namespace, self.rv + 1))
            if dry_run:
                return obj
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._save(self.key(info, namespace, name), obj)
            await self._emit(info, "ADDED", obj)
            return copy.deepcopy(obj)

    def _check_namespace(self, info: ResourceInfo, namespace: str | None) -> None:
        if not info.namespaced or namespace is None:
            return
        ns_info = self.lookup("", "v1", "namespaces")
        if ns_info is not None and self.current(ns_info, None, namespace) is None:
            raise errors.not_found("namespaces", "", namespace)

    async def update(self, info: ResourceInfo, namespace: str | None, name: str,
                     change: Callable[[dict[str, Any]], dict[str, Any]],
                     subresource: str | None = None, dry_run: bool = False) -> dict[str, Any]:
        """Read-modify-write under the lock: ``change(copy of stored) -> new body``.

        Applies the status-subresource rules, 409 on a stale resourceVersion, admission for
        custom resources, and finishes a pending deletion once the last finalizer is gone.
        A write that changes nothing bumps nothing and emits no event, as the apiserver.
        """
        async with self.lock:
            old = self.current(info, namespace, name)
            if old is None:
                raise errors.not_found(info.plural, info.group, name)
            new = change(copy.deepcopy(old))
            meta.check_resource_version(info, old, new)
            merged = meta.merge_update(info, old, new, subresource)
            if subresource != "status":
                merged = customs.admit(info, merged)
            if meta.same_content(old, merged) or dry_run:
                return copy.deepcopy(old if not dry_run else merged)
            merged["metadata"]["resourceVersion"] = self._next_rv()
            key = self.key(info, namespace, name)
            self._save(key, merged)
            md = merged["metadata"]
            if md.get("deletionTimestamp") and not md.get("finalizers"):
                await self._remove(info, key, merged)
            else:
                await self._emit(info, "MODIFIED", merged)
            return copy.deepcopy(merged)

    async def delete(self, info: ResourceInfo, namespace: str | None, name: str) -> tuple[dict[str, Any], bool]:
        """Delete, or mark for deletion while finalizers remain. Returns (object, gone now)."""
        async with self.lock:
            obj = self.current(info, namespace, name)
            if obj is None:
                raise errors.not_found(info.plural, info.group, name)
            key = self.key(info, namespace, name)
            if obj["metadata"].get("finalizers"):
                if obj["metadata"].get("deletionTimestamp"):
                    return copy.deepcopy(obj), False
                obj = copy.deepcopy(obj)
                obj["metadata"]["deletionTimestamp"] = meta.now_iso()
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                obj["metadata"]["resourceVersion"] = self._next_rv()
                self._save(key, obj)
                await self._emit(info, "MODIFIED", obj)
                return copy.deepcopy(obj), False
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = self._next_rv()
            await self._remove(info, key, obj)
            return obj, True

    async def _remove(self, info: ResourceInfo, key: Key, last: dict[str, Any]) -> None:
        self.objects[key].delete()
        del self.objects[key].history[:-VERSIONS_KEPT]
        await self._emit(info, "DELETED", last)

    # -- watch ---------------------------------------------------------------------------------
    async def watch(self, info: ResourceInfo, since: int | None,
                    initial_events_end: bool = False) -> AsyncIterator[dict[str, Any]]:
        """Events of one resource: replayed after ``since`` (or synthetic ADDED for all), then live.

        ``initial_events_end`` (a watch-list request, ``sendInitialEvents=true``, as client-go >= 1.35
        sends by default) ends the synthetic ADDED events with the BOOKMARK annotated
        ``k8s.io/initial-events-end`` that such a client waits for before it reports itself synced.
        """
        bus = self.buses[info.key]
        async with self.lock:
            mark = await bus.mark()
            if since is None:
                backlog = [{"type": "ADDED", "object": obj} for obj in self.items(info)]
                if initial_events_end:
                    backlog.append(_initial_events_end(info, self.rv))
            else:
                backlog = [copy.deepcopy(ev) for rv, ev in self.history[info.key] if rv > since]
        try:
            for event in backlog:
                yield event
            async for event in bus.stream(since=mark):
                yield event
        finally:
            await bus.unmark(mark)


def _initial_events_end(info: ResourceInfo, rv: int) -> dict[str, Any]:
    """The BOOKMARK that closes a watch list's initial events (KEP-3157), at the store's version."""
    metadata = {"resourceVersion": str(rv), "annotations": {"k8s.io/initial-events-end": "true"}}
    return {"type": "BOOKMARK", "object": {"apiVersion": info.api_version, "kind": info.kind, "metadata": metadata}}
