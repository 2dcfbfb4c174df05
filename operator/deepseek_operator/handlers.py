"""Thin kopf handlers: every trigger funnels into reconcile(); errors become kopf errors.

Triggers: a watch event of a DeepSeekDeployment whose generation this process has not reconciled yet
(the initial listing at startup, a create, a spec change); a change of any child in the watch-fed
caches (cache.py: owned Deployments, Pods, Services, PDBs, Ingresses, NetworkPolicies, HTTPRoutes and
monitoring objects), so readiness changes, hand-deleted or hand-edited children and failing pods are
seen at once; a change of the optional APIs (CRDs, IngressClasses), which reconciles everything; a
slow resync loop (DEEPSEEK_OPERATOR_RESYNC_SECONDS, 600 by default) as a safety net, which costs no
API request for an unchanged resource since every read is cached; and the retry of a reconcile an
API error stopped (retry.py: Retry-After, else exponential backoff). A per-resource lock keeps two
triggers from reconciling the same resource at once.

No kopf change handlers (on.create/update/resume): they make kopf write its diff-base annotation on
every change of the resource's essence, labels and annotations included, so a label-only edit cost a
write. Generation-gated events cost nothing for metadata-only edits and for our own status writes.

No handler here may make kopf put its finalizer on a DeepSeekDeployment (no @kopf.timer, @kopf.daemon
or mandatory @kopf.on.delete): children go with their owner through ownerReference garbage collection,
and a finalizer would make `kubectl delete` (and CRD or namespace deletion) hang while the operator is
down. That is why the resync is one task started at operator startup, not a per-resource timer.
tests/unit/test_resync.py enforces this through kopf's own registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any, cast

import kopf
from kopf._core.engines import posting as kopf_posting

from deepseek_operator import metrics
from deepseek_operator.api import GROUP, PLURAL, VERSION, InvalidSpec
from deepseek_operator.cache import CachedK8s
from deepseek_operator.k8s import KINDS, ApiError, K8s, Kind
from deepseek_operator.kopf_settings import WATCH_TIMEOUT_SECONDS
from deepseek_operator.leadership import CLUSTER_PEERING, PEERING, Leadership
from deepseek_operator.reconcile import reconcile, report_forbidden
from deepseek_operator.render.common import LABEL_DEPLOYMENT
from deepseek_operator.retry import RetryQueue, server_delay

log = logging.getLogger(__name__)
CR = KINDS[("deepseek.ai/v1alpha1", "DeepSeekDeployment")]
RESYNC_SECONDS = float(os.environ.get("DEEPSEEK_OPERATOR_RESYNC_SECONDS", "600"))
# Reconciles running at once, all resources together. More would only queue on the API client's
# in-flight limit (k8s.MAX_IN_FLIGHT) while each holds its rendered children in memory; a resource
# whose reconcile waits for a slot keeps its lock, so its further triggers coalesce meanwhile.
MAX_RECONCILES = int(os.environ.get("DEEPSEEK_OPERATOR_MAX_RECONCILES", "64"))
_slots = asyncio.Semaphore(MAX_RECONCILES)
# The namespaces the operator handles, as given to `deepseek-operator` (main.cli); None: all of them.
NAMESPACES: list[str] | None = None
_locks: dict[tuple[str, str], asyncio.Lock] = {}
_waiting: set[tuple[str, str]] = set()  # resources with a reconcile queued on their lock
# Resources the resync loop visits, with the body last seen for each (from the watch stream, like the
# body a kopf timer got): enough to skip a generation already reported invalid without a GET.
_known: dict[tuple[str, str], kopf.Body | dict[str, Any]] = {}
_resync_task: asyncio.Task[None] | None = None
_event_sink: tuple[asyncio.AbstractEventLoop, kopf_posting.K8sEventQueue] | None = None
_client: CachedK8s | None = None
_client_lock = asyncio.Lock()
# Whether this replica may write (kopf peering); always yes without peering. See leadership.py.
LEADERSHIP = Leadership()
_triggered: set[asyncio.Task[None]] = set()  # reconciles started by cache changes, until they end
# The generation this process last reconciled to the end (or found invalid), per resource.
_reconciled: dict[tuple[str, str], int] = {}
# A later look a reconcile asked for (Outcome.recheck_seconds: a download's stall), one per resource.
_rechecks: dict[tuple[str, str], asyncio.TimerHandle] = {}


async def client() -> CachedK8s:
    """The shared API client with its watch-fed caches, created and started on first use.

    Under a lock: at startup kopf calls every resource's handler at once, and each one creating a
    client of its own would start a set of informers each (their watches would exhaust the HTTP
    connection pool the reconciles share, and the operator would stall).
    """
    global _client
    if _client is not None:  # every handler call asks: no lock once it exists
        return _client
    async with _client_lock:
        if _client is None:
            plain = await K8s.connect()
            created = CachedK8s(plain._api, NAMESPACES, _cache_changed, WATCH_TIMEOUT_SECONDS)
            await created.start()
            if LEADERSHIP.name is not None:
                kind, name = (CLUSTER_PEERING if LEADERSHIP.clusterwide else PEERING), LEADERSHIP.name
                created.watch_peering(kind, name)
                LEADERSHIP.lookup = lambda namespace: created.peering(kind, name, namespace)
            _client = created
    return _client


def configure_leadership(name: str | None, priority: int, identity: str) -> None:
    """Peering on (`name`) or off (None): from kopf's settings at startup, before any handler runs."""
    global LEADERSHIP
    LEADERSHIP = Leadership(name=name, priority=priority, identity=identity, clusterwide=NAMESPACES is None)


def _cache_changed(kind: Kind, obj: dict[str, Any]) -> None:
    """A cached object changed: reconcile its owner, or everything when an optional API changed.

    Only owners kopf has listed are reconciled (`_known`): that keeps the caches' triggers inside
    kopf's namespaces (glob patterns included) and skips the children of deleted resources.
    """
    meta = obj.get("metadata", {})
    owner = (meta.get("labels") or {}).get(LABEL_DEPLOYMENT)
    if kind in (PEERING, CLUSTER_PEERING):
        _peering_changed(meta.get("namespace"))
        return
    if kind.kind in ("CustomResourceDefinition", "IngressClass"):
        keys = list(_known)
    elif owner and (meta.get("namespace"), owner) in _known:
        keys = [(meta["namespace"], owner)]
    else:
        return
    _schedule(keys)


def _peering_changed(namespace: str | None) -> None:
    """The peering object changed: catch up where this replica just took the lead; where it is
    paused, forget what it reconciled, so that leading again reconciles everything anew."""
    for ns in sorted({k[0] for k in _known} if namespace is None else {namespace}):
        if LEADERSHIP.turned_active(ns):
            _schedule([k for k in _known if k[0] == ns])
        elif not LEADERSHIP.active(ns):
            for key in [k for k in _reconciled if k[0] == ns]:
                _reconciled.pop(key, None)


def _schedule(keys: list[tuple[str, str]]) -> None:
    for key in keys:
        task = asyncio.get_running_loop().create_task(_triggered_run(key))
        _triggered.add(task)
        task.add_done_callback(_triggered.discard)


async def _triggered_run(key: tuple[str, str]) -> None:
    _adopt_event_sink()
    await run_for_owner(*key)


def _lock(namespace: str, name: str) -> asyncio.Lock:
    return _locks.setdefault((namespace, name), asyncio.Lock())


async def run(body: kopf.Body | dict[str, Any]) -> None:
    """Reconcile one resource under its lock; map outcomes to kopf's error semantics.

    The body is re-read inside the lock: a trigger's copy may predate the status the previous
    reconcile just wrote, and reconciling from it would write that status again. For the same
    reason triggers coalesce: while one reconcile of a resource waits for the lock, further
    triggers return at once, since the waiting one will read everything they would (a rollout's
    burst of pod events costs one or two reconciles, not one each).
    """
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    if not LEADERSHIP.active(key[0]):  # another replica leads: it reconciles (kopf pauses too)
        return
    if key in _waiting:
        metrics.record_coalesced()
        return
    api = await client()
    _waiting.add(key)
    try:
        lock = _lock(*key)
        await lock.acquire()
    finally:
        _waiting.discard(key)
    try:
        async with _slots:
            await _run_locked(api, key)
    finally:
        lock.release()


async def _run_locked(api: CachedK8s, key: tuple[str, str]) -> None:
    """The reconcile itself, with the lock held: fresh GET, deletion check, error mapping."""
    try:
        fresh = await api.get(CR, *key)
    except ApiError as exc:
        raise _retry_later(key, exc) from exc
    if fresh is None or fresh["metadata"].get("deletionTimestamp"):
        _forget(key)  # children go with the owner through ownerReferences garbage collection
        return
    metrics.set_managed_deployments(len(_locks))
    target = kopf.Body(cast(kopf.RawBody, fresh))

    async def notify(kind: str, reason: str, message: str) -> None:
        kopf.event(target, type=kind, reason=reason, message=message)

    generation = int(fresh["metadata"].get("generation", 1))
    try:
        outcome = await reconcile(fresh, api, notify)
    except InvalidSpec as exc:
        # The status says why; retrying cannot help until the spec changes (no retry storm).
        _finished(key, generation)
        raise kopf.PermanentError(str(exc)) from exc
    except ApiError as exc:
        if exc.code == 403:
            await report_forbidden(fresh, api, notify, exc)
        if exc.code == 409:  # the cached copy was older than the server's: read it before retrying
            await _refresh(api, key)
        raise _retry_later(key, exc) from exc
    _finished(key, generation)
    _recheck_later(key, outcome.recheck_seconds)
    log.debug("%s/%s: %s, writes %s", *key, outcome.reason, outcome.writes)


def _recheck_later(key: tuple[str, str], seconds: float | None) -> None:
    """Reconcile `key` again after `seconds` (a newer request replaces the older; None cancels)."""
    previous = _rechecks.pop(key, None)
    if previous is not None:
        previous.cancel()
    if seconds is not None:
        _rechecks[key] = asyncio.get_running_loop().call_later(seconds, _schedule, [key])


async def _refresh(api: CachedK8s, key: tuple[str, str]) -> None:
    try:
        await api.refresh(CR, *key)
    except ApiError as exc:
        log.info("%s/%s: refresh after a conflict failed: %s", *key, exc)


def _finished(key: tuple[str, str], generation: int) -> None:
    _reconciled[key] = generation
    _retries.success(key)


def _forget(key: tuple[str, str]) -> None:
    """The resource is gone or going: drop every piece of state kept for it."""
    _locks.pop(key, None)
    _recheck_later(key, None)
    _known.pop(key, None)  # the resync loop stops visiting it
    _reconciled.pop(key, None)
    _retries.forget(key)
    metrics.set_managed_deployments(len(_locks))


def _retry_later(key: tuple[str, str], exc: ApiError) -> kopf.TemporaryError:
    """Schedule this resource's retry (Retry-After on 429/503, else its backoff); the error to raise."""
    delay = _retries.failure(key, server_delay(exc.code, exc.retry_after))
    metrics.record_retry(exc.code, delay)
    log.warning("%s/%s: API error %s; retrying in %.0f s", *key, exc, delay)
    return kopf.TemporaryError(f"API error, retrying in {delay:.0f}s: {exc}", delay=delay)


async def _retry(key: tuple[str, str]) -> None:
    """A scheduled retry: reconcile again (a further failure schedules the next one)."""
    await run_for_owner(*key)


_retries = RetryQueue(run=_retry)


async def run_for_owner(namespace: str, name: str) -> None:
    """Reconcile one DeepSeekDeployment by name (a child's event, a retry); outcomes are logged."""
    try:
        await run({"metadata": {"namespace": namespace, "name": name}})
    except (kopf.PermanentError, kopf.TemporaryError) as exc:
        log.info("reconcile of %s/%s: %s", namespace, name, exc)


def _key(body: kopf.Body | dict[str, Any]) -> tuple[str, str]:
    meta = body["metadata"]
    return (meta["namespace"], meta["name"])


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_resource_event(type: str | None, event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    """Track the resources (and their latest body) for the resync loop; reconcile a new generation.

    Every watch event counts (the initial listing has type None), status writes included, so the
    loop sees an InvalidSpec status as soon as it is written. A generation this process has already
    reconciled is not reconciled again here: labels, annotations and status never change it.
    Deleted or deleting resources are forgotten: their children go through garbage collection.
    """
    _capture_event_sink()
    key = _key(body)
    api = await client()
    raw = cast(dict[str, Any], event["object"])
    if type == "DELETED":
        api.dsd.forget(raw)
    else:
        api.dsd.observe(raw)  # the reconcile reads this store: kopf's watch is the cache's feed
    if type == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
        _forget(key)
        return
    _known[key] = api.dsd.get(*key) or body  # the store's copy, without managedFields
    if _reconciled.get(key) != body.get("metadata", {}).get("generation"):
        await run_for_owner(*key)


def _capture_event_sink() -> None:
    """Remember kopf's Event queue, from inside a kopf handler, for the reconciles the loop runs.

    kopf.event() posts through context variables kopf sets only in its per-object tasks; the resync
    loop is not one, and without them its reconciles could not post Events (rollbacks, missing
    integrations). Private kopf API (kopf is pinned): tests/unit/test_resync.py fails if it moves.
    """
    global _event_sink
    with contextlib.suppress(LookupError):  # not inside kopf (unit tests): nothing to capture
        _event_sink = (kopf_posting.event_queue_loop_var.get(), kopf_posting.event_queue_var.get())


def _adopt_event_sink() -> None:
    """In the resync task: let kopf.event() post to the queue captured from a handler, if any yet."""
    if _event_sink is not None:
        kopf_posting.event_queue_loop_var.set(_event_sink[0])
        kopf_posting.event_queue_var.set(_event_sink[1])


@kopf.on.startup()
async def start_resync(**_: Any) -> None:
    """Start the resync loop once per operator process; a second call while it runs is a no-op."""
    global _resync_task
    if _resync_task is None or _resync_task.done():
        _resync_task = asyncio.create_task(resync_forever(RESYNC_SECONDS), name="deepseek-resync")


@kopf.on.cleanup()
async def stop_resync(**_: Any) -> None:
    """Cancel the resync loop and wait until it has stopped (a reconcile in flight is cancelled)."""
    global _resync_task
    task, _resync_task = _resync_task, None
    if task is not None:
        task.cancel()
        await asyncio.wait([task])  # wait() does not re-raise the task's CancelledError into cleanup


@kopf.on.cleanup()
async def stop_caches(**_: Any) -> None:
    """Stop the reconciles the caches started, then the informers; the client can be made anew."""
    global _client
    tasks = list(_triggered)
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)
    api, _client = _client, None
    if api is not None:
        await api.stop()


async def resync_forever(interval: float) -> None:
    """Every `interval` seconds, resync every known resource; returns only by cancellation.

    The first tick waits a full interval: at startup the initial listing reconciles everything already.
    Cancelling it also cancels the scheduled retries (operator shutdown).
    """
    try:
        while True:
            await asyncio.sleep(interval)
            await resync_all()
    finally:
        await _retries.close()


async def resync_all() -> None:
    """One tick: resync every known resource concurrently; one resource's failure never stops another.

    Each resync handles kopf's errors itself. Anything else is a bug: it is logged with its traceback
    and the loop goes on, as kopf's own handler loop would, rather than ending resync for everyone.
    """
    _adopt_event_sink()  # before gather(): its tasks copy this task's context when created
    bodies = list(_known.values())  # a snapshot: events may add or drop resources meanwhile
    results = await asyncio.gather(*(_resync_one(body) for body in bodies), return_exceptions=True)
    for body, result in zip(bodies, results, strict=True):
        if isinstance(result, Exception):
            log.error("resync of %s/%s failed", *_key(body), exc_info=result)


async def _resync_one(body: kopf.Body | dict[str, Any]) -> None:
    """Resync one resource: skip a generation already reported invalid, else run() and log kopf errors.

    A TemporaryError is not retried here: the next tick (or a child's event) reconciles again.
    """
    if _reported_invalid(body):
        metrics.record_resync("skipped_invalid")
        return
    metrics.record_resync("reconciled")
    try:
        await run(body)
    except (kopf.PermanentError, kopf.TemporaryError) as exc:
        log.info("resync of %s/%s: %s", *_key(body), exc)


def _reported_invalid(body: kopf.Body | dict[str, Any]) -> bool:
    """This generation was already found invalid, or a child rendered from it refused (422): only a
    spec change can help (no retry storm)."""
    status = body.get("status") or {}
    ready: dict[str, Any] = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), {})
    generation = body.get("metadata", {}).get("generation")
    permanent = ready.get("reason") in ("InvalidSpec", "ChildRejected")
    return bool(permanent and status.get("observedGeneration") == generation)
