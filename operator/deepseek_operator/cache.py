"""The reconcile reads watch-fed caches and writes the API: `CachedK8s` is `K8s` with cached reads.

Every kind the reconcile reads has one informer (informer.py) per watched namespace, or one for the
whole cluster: the children (children.py's registry; selected by the `deepseek.ai/deployment` label,
server-side), the IngressClasses, the CustomResourceDefinitions whose presence decides the optional
APIs (one object each, by field selector: a cluster's CRDs can weigh megabytes), and the pods' volume
Warning events (FailedMount, FailedAttachVolume: one narrow informer per reason, by field selector;
an event counts as a change of its pod). Informers for the optional kinds (HTTPRoute, ServiceMonitor,
PrometheusRule, LeaderWorkerSet) start when their CRD appears, so a cluster without them costs no
polling. DeepSeekDeployments are not watched twice: kopf's own watch feeds
their store (controller.py), and a miss falls back to a GET.

Reads wait until the informer's first list is complete (bounded: `SYNC_TIMEOUT`, then a 503 that the
retry queue handles). Writes go to the API and their responses into the store at once, so a
reconcile never acts on a cache older than its own last write; a 409 refreshes the object by GET
(`refresh`). With every read cached, a reconcile of an unchanged resource makes no API request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from deepseek_operator import children
from deepseek_operator.informer import Informer, Store
from deepseek_operator.k8s import KINDS, ApiError, K8s, Kind, list_by_name
from deepseek_operator.render.common import LABEL_DEPLOYMENT
from deepseek_operator.settings import DEFAULT_MAX_IN_FLIGHT

log = logging.getLogger(__name__)
CR = KINDS[("deepseek.ai/v1alpha1", "DeepSeekDeployment")]
CRD = Kind("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", namespaced=False)
INGRESS_CLASS = KINDS[("networking.k8s.io/v1", "IngressClass")]
SYNC_TIMEOUT = 60.0
OnChange = Callable[[Kind, dict[str, Any]], None]
POD = KINDS[("v1", "Pod")]
EVENT = KINDS[("v1", "Event")]
# The only word on a pod stuck in ContainerCreating: the kubelet's FailedMount and the attach/detach
# controller's FailedAttachVolume (Multi-Attach). Events carry no labels, so a field selector per
# reason keeps the stream to these (a namespace's probe and scheduling warnings never reach us).
POD_EVENT_REASONS = ("FailedMount", "FailedAttachVolume")


def serves(crd: dict[str, Any], version: str) -> bool:
    """The CRD is Established and serves `version`."""
    established = any(c.get("type") == "Established" and c.get("status") == "True"
                      for c in crd.get("status", {}).get("conditions", []))
    return established and any(v.get("name") == version and v.get("served")
                               for v in crd.get("spec", {}).get("versions", []))


class CachedK8s(K8s):
    """K8s whose get/list/served answer from informers; create/patch/delete write through to them.

    `namespaces`: the namespaces the operator handles (None: all). `on_change(kind, obj)` hears every
    change after the first list (children, IngressClasses, CRDs); it must not block.
    """

    def __init__(self, api: Any, namespaces: list[str] | None, on_change: OnChange,
                 timeout_seconds: int = 600, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        super().__init__(api, max_in_flight)
        self.namespaces = namespaces
        self.dsd = Store()
        self._on_change = on_change
        self._timeout = timeout_seconds
        self._informers: dict[tuple[str, str], Informer] = {}  # (plural, namespace or "") -> informer
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Start the informers of the kinds always served, and of the CRDs that gate the others."""
        for kind in children.watched():
            self._start_scoped(kind)
        self._start(INGRESS_CLASS, None)
        for namespace in self._scopes():
            for reason in POD_EVENT_REASONS:
                self._start(EVENT, namespace, field_selector=_pod_events(reason))
        for crd in children.optional_by_crd():
            informer = self._start(CRD, None, field_selector=f"metadata.name={crd}")
            self._tasks[(crd, "first-list")] = asyncio.create_task(self._optional_after_first_list(informer, crd))

    async def _optional_after_first_list(self, informer: Informer, name: str) -> None:
        """Start an optional kind's informer as soon as its CRD's first list shows it (the first list
        tells no change, and waiting for the first reconcile would leave the cache cold until then)."""
        await informer.synced.wait()
        crd = informer.store.get(None, name)
        if crd is not None:
            self._crd_changed(crd)

    async def stop(self) -> None:
        """Cancel every informer and wait until they have stopped."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._tasks.clear()

    def watch_peering(self, kind: Kind, name: str) -> None:
        """Cache kopf's peering object `name` (leadership.py), per watched namespace or cluster-wide."""
        for namespace in ([None] if not kind.namespaced else self._scopes()):
            self._start(kind, namespace, field_selector=f"metadata.name={name}")

    def peering(self, kind: Kind, name: str, namespace: str | None) -> dict[str, Any] | None:
        """The cached peering object (None: there is none); LookupError before its first list."""
        slot = (f"{kind.plural}/metadata.name={name}", (namespace or "") if kind.namespaced else "")
        informer = self._informers.get(slot)
        if informer is None or not informer.synced.is_set():
            raise LookupError(f"{kind.plural}/{name} not listed yet")
        return informer.store.get(namespace if kind.namespaced else None, name)

    def _scopes(self) -> list[str | None]:
        return list(self.namespaces) if self.namespaces is not None else [None]

    def _start_scoped(self, kind: Kind) -> None:
        for namespace in self._scopes():
            self._start(kind, namespace, label_selector=LABEL_DEPLOYMENT)

    def _start(self, kind: Kind, namespace: str | None, label_selector: str = "",
               field_selector: str = "") -> Informer:
        slot = (kind.plural + (f"/{field_selector}" if field_selector else ""), namespace or "")
        if slot in self._informers:
            return self._informers[slot]
        informer = Informer(self, kind, namespace, label_selector, field_selector,
                            on_change=lambda obj: self._changed(kind, obj), timeout_seconds=self._timeout)
        self._informers[slot] = informer
        self._tasks[slot] = asyncio.create_task(informer.run(), name=f"informer-{slot[0]}-{slot[1]}")
        return informer

    def _changed(self, kind: Kind, obj: dict[str, Any]) -> None:
        if kind is EVENT:  # about a pod: its owner is found through the pod
            pod = self._cached_pod(obj.get("involvedObject") or {})
            if pod is not None:
                self._on_change(POD, pod)
            return
        if kind is CRD:
            self._crd_changed(obj)
        if kind in (CRD, INGRESS_CLASS):
            self.cache.pop("capabilities", None)  # integrations.py asks again
        self._on_change(kind, obj)

    def _crd_changed(self, crd: dict[str, Any]) -> None:
        """Start the informer of an optional kind once its CRD serves it (they run until shutdown)."""
        kind = children.optional_by_crd().get(crd["metadata"]["name"])
        if kind is not None and serves(crd, kind.api_version.rpartition("/")[2]):
            self._start_scoped(kind)

    def _cached_pod(self, ref: dict[str, Any]) -> dict[str, Any] | None:
        informer = self._informer(POD, ref.get("namespace"))
        return informer.store.get(ref.get("namespace"), ref.get("name", "")) if informer is not None else None

    async def _pod_events(self, namespace: str | None) -> list[dict[str, Any]]:
        """The cached volume Warning events of the pods in `namespace`. None while they cannot be
        read (an older chart's RBAC grants no list on events): a missing reason must not stop the
        reconcile, which then says `RollingOut` as before."""
        scope = "" if self.namespaces is None else (namespace or "")
        found: list[dict[str, Any]] = []
        for reason in POD_EVENT_REASONS:
            informer = self._informers.get((f"{EVENT.plural}/{_pod_events(reason)}", scope))
            if informer is None:
                continue
            try:
                found += (await self._synced(informer)).store.select(namespace, {})
            except ApiError as exc:
                log.debug("pod events (%s) unreadable: %s", reason, exc)
        return found

    def _informer(self, kind: Kind, namespace: str | None) -> Informer | None:
        scope = "" if not kind.namespaced or self.namespaces is None else (namespace or "")
        return self._informers.get((kind.plural, scope))

    async def _synced(self, informer: Informer) -> Informer:
        try:
            await asyncio.wait_for(informer.synced.wait(), SYNC_TIMEOUT)
        except TimeoutError:
            raise ApiError(503, f"the {informer.kind.plural} cache has not synced yet") from None
        if informer.refused is not None:
            raise informer.refused
        return informer

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, kind: Kind, namespace: str | None, name: str, sub: str = "") -> dict[str, Any] | None:
        if kind == CR and not sub:  # a miss of a resource seen deleted costs no GET
            cached = self.dsd.get(namespace, name)
            if cached is not None or self.dsd.deleted(namespace, name):
                return cached
            return await self.refresh(kind, namespace, name)
        informer = self._informer(kind, namespace)
        if informer is None or sub:
            return await super().get(kind, namespace, name, sub)
        return (await self._synced(informer)).store.get(namespace, name)

    async def list(self, kind: Kind, namespace: str | None, selector: dict[str, str]) -> list[dict[str, Any]]:
        if kind is EVENT:
            return await self._pod_events(namespace)
        informer = self._informer(kind, namespace)
        if informer is None:
            return await super().list(kind, namespace, selector)
        return (await self._synced(informer)).store.select(namespace, selector)

    async def served(self, api_version: str) -> set[str]:
        """Plurals served under `api_version`, from the CRD informers for the optional APIs."""
        group, _, version = api_version.rpartition("/")
        crds = [(name, kind) for name, kind in children.optional_by_crd().items() if kind.api_version == api_version]
        if not crds:
            return await super().served(api_version)
        plurals = set()
        for name, kind in crds:
            informer = await self._synced(self._informers[(f"{CRD.plural}/metadata.name={name}", "")])
            crd = informer.store.get(None, name)
            if crd is not None and crd["spec"].get("group") == group and serves(crd, version):
                plurals.add(kind.plural)
                self._start_scoped(kind)  # idempotent; the first list of CRDs tells no change
        return plurals

    async def refresh(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        """Read one object from the API into its store (after a 409, or a miss); None if it is gone.

        Through a list by name (k8s.list_by_name): the operator needs no `get` at all (RBAC).
        """
        live = await list_by_name(self, kind, namespace, name)
        store = self._store(kind, namespace)
        if live is not None and store is not None:
            store.observe(live)
        return live

    # -- writes --------------------------------------------------------------------------------

    def _store(self, kind: Kind, namespace: str | None) -> Store | None:
        if kind == CR:
            return self.dsd
        informer = self._informer(kind, namespace)
        return informer.store if informer is not None else None

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        created = await super().create(obj)
        self._remember(KINDS[(obj["apiVersion"], obj["kind"])], created)
        return created

    async def patch(self, kind: Kind, namespace: str | None, name: str, patch: dict[str, Any],
                    sub: str = "") -> dict[str, Any]:
        patched = await super().patch(kind, namespace, name, patch, sub)
        self._remember(kind, patched)
        return patched

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        last = await super().delete(kind, namespace, name)
        store = self._store(kind, namespace)
        if store is not None:  # the store's own copy dates the tombstone when the answer has none
            store.forget(last or store.get(namespace, name) or {"metadata": {"namespace": namespace, "name": name}})
        return last

    def _remember(self, kind: Kind, obj: dict[str, Any]) -> None:
        store = self._store(kind, obj.get("metadata", {}).get("namespace"))
        if store is not None:
            obj.setdefault("apiVersion", kind.api_version)
            obj.setdefault("kind", kind.kind)
            store.observe(obj)


def _pod_events(reason: str) -> str:
    """The field selector of one reason's pod events."""
    return f"involvedObject.kind=Pod,reason={reason}"
