"""The operator's runtime: every trigger becomes a key in one work queue; workers reconcile the keys.

One `Controller` per operator process, created at kopf startup and held in kopf's `memo` (main.py);
handlers.py only hands it kopf's events. It owns everything that lives between reconciles: the API
client with its watch-fed caches, the work queue (workqueue.py), leadership, the retry policy, the
resync loop, the recheck timers and kopf's Event queue. Tests build one with fakes (client, reconcile,
clock) instead of patching module globals.

Triggers (each one `enqueue`s the resource's key; the queue dedupes and serializes them):
- a watch event of a DeepSeekDeployment whose generation this process has not reconciled yet (the
  initial listing, a create, a spec change): labels, annotations and status never change it;
- a change of one of its children in the caches (cache.py), so readiness changes, hand-deleted or
  hand-edited children and failing pods are seen at once; a change of the optional APIs (CRDs,
  IngressClasses) or of leadership, which enqueues every resource concerned;
- the resync loop (`Settings.resync_seconds`), a safety net that costs no API request for an
  unchanged resource since every read is cached; a recheck a reconcile asked for
  (`Outcome.recheck_seconds`); the retry of a reconcile an API error stopped (Retry-After, else the
  queue's per-key backoff, reset on success).

At most `Settings.max_reconciles` workers reconcile at once; a resource is reconciled by one worker at
a time, and the triggers that arrive meanwhile fold into one more pass after it. The body is re-read
(from the cache) at the start of each pass: a trigger's copy may predate the status the previous pass
wrote, and reconciling from it would write that status again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import kopf

from deepseek_operator import metrics
from deepseek_operator.api import InvalidSpec
from deepseek_operator.cache import CachedK8s
from deepseek_operator.k8s import KINDS, ApiError, K8s, Kind
from deepseek_operator.kopf_events import EventSink
from deepseek_operator.leadership import CLUSTER_PEERING, PEERING, Leadership
from deepseek_operator.reconcile import Notify, Outcome, reconcile, report_apply_failed, report_forbidden
from deepseek_operator.render.common import LABEL_DEPLOYMENT
from deepseek_operator.retry import Backoff, server_delay
from deepseek_operator.settings import Settings
from deepseek_operator.workqueue import Clock, LoopClock, ShutDown, Timer, WorkQueue

log = logging.getLogger(__name__)
CR = KINDS[("deepseek.ai/v1alpha1", "DeepSeekDeployment")]
Key = tuple[str, str]  # (namespace, name)
Body = kopf.Body | dict[str, Any]
Reconcile = Callable[[Mapping[str, Any], K8s, Notify], Awaitable[Outcome]]


class Controller:
    """Reconciles DeepSeekDeployments from a work queue; see the module docstring.

    `client`: the API client with its caches; None: `start()` connects one (and `stop()` stops it).
    `reconcile`, `clock` and `backoff` are for tests: the real pass, the event loop's clock, 1 s
    doubling to 300 s.
    """

    def __init__(self, settings: Settings | None = None, leadership: Leadership | None = None,
                 client: CachedK8s | None = None, reconcile: Reconcile = reconcile,
                 clock: Clock | None = None, backoff: Backoff | None = None) -> None:
        self.settings = settings or Settings()
        self.leadership = leadership or Leadership()  # without peering: always active
        self.client = client
        self.queue: WorkQueue[Key] = WorkQueue(backoff, clock)
        self.events = EventSink()
        # Resources kopf has listed, with the body last seen for each (enough to skip a generation
        # already reported invalid without a GET); the resync loop visits them.
        self.known: dict[Key, Body] = {}
        self.reconciled: dict[Key, int] = {}  # the generation last reconciled to the end (or found invalid)
        self._reconcile = reconcile
        self._clock: Clock = clock or LoopClock()
        self._rechecks: dict[Key, Timer] = {}  # one pending recheck per resource
        self._owns_client = client is None
        self._tasks: list[asyncio.Task[None]] = []  # the workers and the resync loop

    # Lifecycle.

    async def start(self) -> None:
        """Connect the client (unless given), then start the workers and the resync loop."""
        if self.client is None:
            self.client = await self._connect()
        self._tasks = [asyncio.create_task(self._work(), name=f"deepseek-worker-{i}")
                       for i in range(self.settings.max_reconciles)]
        self._tasks.append(asyncio.create_task(self.resync_forever(self.settings.resync_seconds),
                                               name="deepseek-resync"))

    async def stop(self) -> None:
        """Shut the queue down, cancel the workers (a reconcile in flight is cancelled), the resync
        loop and the rechecks; stop the client if `start()` connected it. Idempotent."""
        self.queue.shutdown()
        for key in list(self._rechecks):
            self.recheck_later(key, None)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)  # wait() does not re-raise the tasks' CancelledError
        if self._owns_client and self.client is not None:  # kept: a late kopf event still finds its store
            self._owns_client = False
            await self.client.stop()

    async def _connect(self) -> CachedK8s:
        """The API client and its informers, listed before it returns; the peering object watched too."""
        settings = self.settings
        plain = await K8s.connect()
        namespaces = list(settings.namespaces) if settings.namespaces is not None else None
        created = CachedK8s(plain._api, namespaces, self.cache_changed, settings.watch_timeout_seconds,
                            settings.max_in_flight)
        await created.start()
        leadership = self.leadership
        if leadership.name is not None:
            kind, name = (CLUSTER_PEERING if leadership.clusterwide else PEERING), leadership.name
            created.watch_peering(kind, name)
            leadership.lookup = lambda namespace: created.peering(kind, name, namespace)
        return created

    @property
    def api(self) -> CachedK8s:
        if self.client is None:
            raise RuntimeError("the Controller is not started: no API client yet")
        return self.client

    # Triggers.

    def enqueue(self, key: Key) -> None:
        """Reconcile `key` soon; while it is already queued this trigger folds into that pass."""
        if not self.queue.add(key) and not self.queue.shutting_down:
            metrics.record_coalesced()

    def watch_event(self, type: str | None, raw: dict[str, Any], body: Body) -> None:
        """A watch event of a DeepSeekDeployment (the initial listing has type None), status writes included.

        It feeds the cache's DeepSeekDeployment store (kopf's watch is its feed) and the resync's
        list; a generation not reconciled yet is enqueued. Deleted or deleting resources are
        forgotten: their children go through ownerReference garbage collection.
        """
        key = _key(body)
        store = self.api.dsd
        if type == "DELETED":
            store.forget(raw)
        else:
            store.observe(raw)  # the reconcile reads this store
        if type == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
            self.forget(key)
            return
        self.known[key] = store.get(*key) or body  # the store's copy, without managedFields
        if self.reconciled.get(key) != body.get("metadata", {}).get("generation"):
            self.enqueue(key)

    def cache_changed(self, kind: Kind, obj: dict[str, Any]) -> None:
        """A cached object changed: enqueue its owner, or everything when an optional API changed.

        Only owners kopf has listed are enqueued (`known`): that keeps the caches' triggers inside
        kopf's namespaces (glob patterns included) and skips the children of deleted resources.
        """
        meta = obj.get("metadata", {})
        owner = (meta.get("labels") or {}).get(LABEL_DEPLOYMENT)
        if kind in (PEERING, CLUSTER_PEERING):
            self._peering_changed(meta.get("namespace"))
        elif kind.kind in ("CustomResourceDefinition", "IngressClass"):
            for key in list(self.known):
                self.enqueue(key)
        elif owner and (meta.get("namespace"), owner) in self.known:
            self.enqueue((meta["namespace"], owner))

    def _peering_changed(self, namespace: str | None) -> None:
        """Catch up where this replica just took the lead; where it is paused, forget what it
        reconciled, so that leading again reconciles everything anew."""
        for ns in sorted({k[0] for k in self.known} if namespace is None else {namespace}):
            if self.leadership.turned_active(ns):
                for key in [k for k in self.known if k[0] == ns]:
                    self.enqueue(key)
            elif not self.leadership.active(ns):
                for key in [k for k in self.reconciled if k[0] == ns]:
                    self.reconciled.pop(key, None)

    def recheck_later(self, key: Key, seconds: float | None) -> None:
        """Enqueue `key` again after `seconds` (a newer request replaces the older; None cancels)."""
        previous = self._rechecks.pop(key, None)
        if previous is not None:
            previous.cancel()
        if seconds is not None and not self.queue.shutting_down:
            self._rechecks[key] = self._clock.call_later(seconds, lambda: self._recheck_due(key))

    def _recheck_due(self, key: Key) -> None:
        self._rechecks.pop(key, None)
        self.enqueue(key)

    def pending_recheck(self, key: Key) -> bool:
        return key in self._rechecks

    # Resync.

    async def resync_forever(self, interval: float) -> None:
        """Every `interval` seconds, enqueue every known resource; returns only by cancellation.

        The first tick waits a full interval: at startup the initial listing enqueues everything already.
        """
        while True:
            await asyncio.sleep(interval)
            self.resync_all()

    def resync_all(self) -> None:
        """One tick: enqueue every known resource but those whose generation was reported invalid."""
        for key, body in list(self.known.items()):  # a snapshot: events may add or drop resources
            if reported_invalid(body):
                metrics.record_resync("skipped_invalid")
            else:
                metrics.record_resync("reconciled")
                self.enqueue(key)

    # The workers.

    async def _work(self) -> None:
        """Take keys until the queue shuts down; one key's failure never stops the worker."""
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                self.events.adopt()
                await self.process(key)
            except (kopf.PermanentError, kopf.TemporaryError) as exc:
                log.info("reconcile of %s/%s: %s", *key, exc)
            except Exception:  # a bug: logged with its traceback, and the worker goes on (as kopf's loop would)
                log.exception("reconcile of %s/%s failed unexpectedly", *key)
            finally:
                self.queue.done(key)

    async def process(self, key: Key) -> None:
        """One reconcile pass of `key`: fresh read, deletion check, errors mapped to kopf's.

        Raises kopf.PermanentError (invalid spec, a child refused: no retry until the spec changes)
        or kopf.TemporaryError (an API error: a retry is scheduled). Another replica leading: no-op.
        """
        if not self.leadership.active(key[0]):  # kopf pauses its handlers too
            return
        api = self.api
        try:
            fresh = await api.get(CR, *key)
        except ApiError as exc:
            raise self._retry_later(key, exc) from exc
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            self.forget(key)  # children go with the owner through ownerReferences garbage collection
            return
        metrics.set_managed_deployments(len(self.known))
        notify = _notifier(fresh)
        generation = int(fresh["metadata"].get("generation", 1))
        try:
            outcome = await self._reconcile(fresh, api, notify)
        except InvalidSpec as exc:
            self._finished(key, generation)  # the status says why; retrying cannot help (no retry storm)
            raise kopf.PermanentError(str(exc)) from exc
        except ApiError as exc:
            await self._api_failed(key, fresh, exc, notify)
            raise self._retry_later(key, exc) from exc
        self._finished(key, generation)
        self.recheck_later(key, outcome.recheck_seconds)
        log.debug("%s/%s: %s, writes %s", *key, outcome.reason, outcome.writes)

    async def _api_failed(self, key: Key, fresh: dict[str, Any], exc: ApiError, notify: Notify) -> None:
        """403: say so in the status; 409: the cached copy was older than the server's, read it; any other
        error on a spec not yet applied: Progressing says it was not (report_apply_failed)."""
        if exc.code == 403:
            await report_forbidden(fresh, self.api, notify, exc)
        elif exc.code == 409:
            try:
                await self.api.refresh(CR, *key)
            except ApiError as refresh_error:
                log.info("%s/%s: refresh after a conflict failed: %s", *key, refresh_error)
        else:
            await report_apply_failed(fresh, self.api, exc)

    def _retry_later(self, key: Key, exc: ApiError) -> kopf.TemporaryError:
        """Requeue `key` after its backoff (Retry-After on 429/503); the error to raise."""
        delay = self.queue.add_rate_limited(key, server_delay(exc.code, exc.retry_after))
        metrics.record_retry(exc.code, delay)
        log.warning("%s/%s: API error %s; retrying in %.0f s", *key, exc, delay)
        return kopf.TemporaryError(f"API error, retrying in {delay:.0f}s: {exc}", delay=delay)

    def _finished(self, key: Key, generation: int) -> None:
        """Record the generation, unless the resource was forgotten meanwhile: a namesake created
        next must not pass for reconciled."""
        if key in self.known:
            self.reconciled[key] = generation
        self.queue.forget(key)

    def forget(self, key: Key) -> None:
        """The resource is gone or going: drop every piece of state kept for it."""
        self.recheck_later(key, None)
        self.known.pop(key, None)  # the resync loop stops visiting it
        self.reconciled.pop(key, None)
        self.queue.forget(key)
        metrics.set_managed_deployments(len(self.known))


def _notifier(fresh: dict[str, Any]) -> Notify:
    """Post Events about `fresh` through kopf (its queue adopted by the calling worker)."""
    target = kopf.Body(cast(kopf.RawBody, fresh))

    async def notify(kind: str, reason: str, message: str) -> None:
        kopf.event(target, type=kind, reason=reason, message=message)

    return notify


def _key(body: Body) -> Key:
    meta = body["metadata"]
    return (meta["namespace"], meta["name"])


def reported_invalid(body: Body) -> bool:
    """This generation was already found invalid, or a child rendered from it refused (422): only a
    spec change can help (no retry storm)."""
    status = body.get("status") or {}
    ready: dict[str, Any] = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), {})
    generation = body.get("metadata", {}).get("generation")
    permanent = ready.get("reason") in ("InvalidSpec", "ChildRejected")
    return bool(permanent and status.get("observedGeneration") == generation)
