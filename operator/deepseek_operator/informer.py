"""Watch-fed caches of one kind of object (client-go's informers, in small): list once, then watch.

An `Informer` lists the objects of one kind matching its selectors (paginated), then follows one
watch from the list's resourceVersion, with bookmarks so a quiet stream still moves its
resourceVersion forward. A watch the server ends (its timeoutSeconds) resumes from the last
resourceVersion; `410 Gone` (the resourceVersion was compacted) and any other failure relist after
a short backoff. Every change of the store after the first list calls `on_change(obj)`, which must
not block (controller.py enqueues the object's owner); the first list only fills it.

A `Store` keeps each object's newest version seen, from the watch **and** from the operator's own
writes (their responses are stored at once, so the next reconcile reads what it just wrote instead
of waiting for the watch event). To order a write's response and a watch event of the same object,
resourceVersions are compared as integers: since Kubernetes 1.35 they are comparable as
monotonically increasing integers within one resource type, a conformance requirement (KEP-5504,
https://github.com/kubernetes/enhancements/issues/5504; before it, etcd3-backed apiservers already
issued etcd's increasing revision). A resourceVersion that is not an integer is taken as newer.
Deletions leave a tombstone (the resourceVersion they were seen at) so a late event cannot bring a
deleted object back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from deepseek_operator import metrics
from deepseek_operator.k8s import ApiError, K8s, Kind
from deepseek_operator.render.common import LABEL_DEPLOYMENT

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
OnChange = Callable[[dict[str, Any]], None]
PAGE_SIZE = 500
TOMBSTONES = 10_000  # deletions remembered per store; the oldest are forgotten first
RELIST_BACKOFF = (0.5, 30.0)  # first and longest wait before listing again after a failure


def resource_version(obj: Mapping[str, Any]) -> int | None:
    """The object's resourceVersion as an integer; None when absent or not an integer."""
    value = str(obj.get("metadata", {}).get("resourceVersion", ""))
    return int(value) if value.isdigit() else None


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without `metadata.managedFields` (server-side apply bookkeeping the reconcile never
    reads, often the largest part of a small object), as client-go informers' transforms drop it.
    Shallow: the top level and metadata are new dicts, so the caller's object is left as it was."""
    meta = obj.get("metadata") or {}
    if "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """A pod as the reconcile reads it (observe.py, strategy.py): metadata, its containers' names
    and images, and the whole status. The rest of the spec (env, probes, volumes: most of a worker
    pod's size) is the Deployment's, which the cache holds anyway."""
    pod = slim(pod)
    spec = pod.get("spec") or {}
    containers = [{"name": c.get("name"), "image": c.get("image")} for c in spec.get("containers", [])]
    return {**pod, "spec": {"containers": containers, "nodeName": spec.get("nodeName")}}


def _newer(candidate: int | None, current: int | None) -> bool:
    return candidate is None or current is None or candidate > current


class Store:
    """The newest version seen of each object of one kind, indexed by owner for label-selected lists."""

    def __init__(self, transform: Callable[[dict[str, Any]], dict[str, Any]] = slim) -> None:
        self._transform = transform  # what is kept of each object (never the caller's dict itself)
        self._objects: dict[Key, dict[str, Any]] = {}
        self._owned: dict[tuple[str, str], set[Key]] = {}  # (namespace, owner label value) -> keys
        self._gone: dict[Key, int | None] = {}

    def __len__(self) -> int:
        return len(self._objects)

    def get(self, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self._objects.get((namespace or "", name))

    def deleted(self, namespace: str | None, name: str) -> bool:
        """The store saw this object deleted (and nothing newer since)."""
        return (namespace or "", name) in self._gone

    def select(self, namespace: str | None, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        """Objects in `namespace` (None: all) whose labels include every pair of `selector`."""
        owner = selector.get(LABEL_DEPLOYMENT)
        if owner is not None and namespace is not None:
            keys: list[Key] = sorted(self._owned.get((namespace, owner), ()))
        else:
            keys = sorted(k for k in self._objects if namespace is None or k[0] == namespace)
        found = (self._objects[k] for k in keys)
        return [o for o in found if _matches(o, selector)]

    def observe(self, obj: dict[str, Any]) -> bool:
        """Store `obj` unless the store (or a tombstone) holds a newer version; True if it changed."""
        key, version = key_of(obj), resource_version(obj)
        current = self._objects.get(key)
        if current is not None and not _newer(version, resource_version(current)):
            return False
        if current is None and key in self._gone and not _newer(version, self._gone[key]):
            return False
        self._gone.pop(key, None)
        self._unindex(key, current)
        self._objects[key] = obj = self._transform(obj)
        owner = obj["metadata"].get("labels", {}).get(LABEL_DEPLOYMENT)
        if owner is not None:
            self._owned.setdefault((key[0], owner), set()).add(key)
        return True

    def forget(self, obj: Mapping[str, Any]) -> bool:
        """The object was deleted (at its resourceVersion, if it has one); True if it was stored."""
        key = key_of(obj)
        current = self._objects.pop(key, None)
        self._unindex(key, current)
        self._gone[key] = resource_version(obj)
        while len(self._gone) > TOMBSTONES:
            self._gone.pop(next(iter(self._gone)))
        return current is not None

    def replace(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A fresh list replaces everything; returns the objects that changed, appeared or went away."""
        fresh = {key_of(o): self._transform(o) for o in items}
        changed = [o for k, o in fresh.items() if self._objects.get(k) != o]
        gone = [o for k, o in self._objects.items() if k not in fresh]
        self._objects, self._owned, self._gone = {}, {}, {}
        for obj in fresh.values():
            self.observe(obj)
        return changed + gone

    def _unindex(self, key: Key, obj: Mapping[str, Any] | None) -> None:
        owner = (obj or {}).get("metadata", {}).get("labels", {}).get(LABEL_DEPLOYMENT)
        if owner is not None:
            self._owned.get((key[0], owner), set()).discard(key)


def _matches(obj: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


class Gone(Exception):
    """410: the watch's resourceVersion is too old; only a new list can continue."""


@dataclass
class Informer:
    """List-then-watch of one kind in one namespace (None: every namespace), into `store`.

    `absent` is True while the API is not served (a 404: e.g. the Prometheus Operator's CRDs are not
    installed); `refused` holds the 403 while RBAC forbids the list. Either way the informer counts
    as synced (readers learn the answer at once) and lists again at its longest backoff.
    """

    api: K8s
    kind: Kind
    namespace: str | None
    label_selector: str = ""
    field_selector: str = ""
    on_change: OnChange | None = None
    timeout_seconds: int = 600

    def __post_init__(self) -> None:
        self.store = Store(slim_pod if self.kind.plural == "pods" else slim)
        self.synced = asyncio.Event()
        self.absent = False
        self.refused: ApiError | None = None

    def _params(self) -> dict[str, str]:
        params = {"labelSelector": self.label_selector, "fieldSelector": self.field_selector}
        return {k: v for k, v in params.items() if v}

    async def run(self) -> None:
        """List and watch until cancelled; failures are logged and retried with backoff."""
        delay = RELIST_BACKOFF[0]
        while True:
            try:
                version = await self._list()
                delay = RELIST_BACKOFF[0]
                while version is not None:
                    version = await self._watch(version)
                await asyncio.sleep(RELIST_BACKOFF[1])  # the API is absent: look again later
            except Gone:
                log.info("%s: resourceVersion expired; listing again", self.kind.plural)
            except ApiError as exc:
                if exc.code == 403:  # RBAC: readers get the refusal; waiting is all that can help
                    self.refused, delay = exc, RELIST_BACKOFF[1]
                    self.synced.set()
                log.warning("%s: %s; listing again in %.1f s", self.kind.plural, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RELIST_BACKOFF[1])
            except (httpx.HTTPError, ValueError) as exc:  # connection lost, a torn JSON line
                log.warning("%s: watch failed (%s); listing again in %.1f s", self.kind.plural, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RELIST_BACKOFF[1])

    async def _list(self) -> str | None:
        """List every page into the store; the list's resourceVersion, or None when the API is absent."""
        items: list[dict[str, Any]] = []
        params, version = {**self._params(), "limit": str(PAGE_SIZE)}, ""
        while True:
            page = await self.api.list_page(self.kind, self.namespace, params)
            if page is None:
                self.absent = True
                self._notify(self.store.replace([]))  # an API removed: its objects went with it
                self.synced.set()
                return None
            batch, version, token = page
            items.extend(batch)
            if not token:
                break
            params = {**params, "continue": token}
        self.absent, self.refused = False, None
        changed = self.store.replace(items)
        if self.synced.is_set():  # a relist: say what changed while the watch was down
            self._notify(changed)
        self.synced.set()
        metrics.record_informer_list(self.kind.plural)
        return version

    async def _watch(self, version: str) -> str:
        """Follow one watch from `version`; the last resourceVersion seen when the server ends it."""
        params = {**self._params(), "resourceVersion": version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(self.timeout_seconds)}
        async for event in self.api.watch(self.kind, self.namespace, params):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone()
                raise ApiError(int(obj.get("code") or 500), str(obj.get("message", obj)))
            version = str(obj.get("metadata", {}).get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            obj.setdefault("apiVersion", self.kind.api_version)
            obj.setdefault("kind", self.kind.kind)
            changed = self.store.forget(obj) if kind == "DELETED" else self.store.observe(obj)
            if changed:
                self._notify([obj])
        return version

    def _notify(self, objects: list[dict[str, Any]]) -> None:
        if self.on_change is None:
            return
        for obj in objects:
            try:
                self.on_change(obj)
            except Exception:  # a faulty callback must not stop the cache; it is a bug, so say so
                log.exception("%s: change callback failed for %s/%s", self.kind.plural, *key_of(obj))
