"""Thin kopf handlers: every trigger funnels into reconcile(); errors become kopf errors.

Triggers: resume/create/update of a DeepSeekDeployment, events of its owned Deployments, Pods and
Services (so readiness changes, hand-deleted children and failing pods are seen at once), and a
resync timer for children nobody watches (Ingress, HTTPRoute, monitoring objects).
A per-resource lock keeps two triggers from reconciling the same resource at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, cast

import kopf

from deepseek_operator import metrics
from deepseek_operator.api import GROUP, PLURAL, VERSION, InvalidSpec
from deepseek_operator.k8s import KINDS, ApiError, K8s
from deepseek_operator.reconcile import reconcile
from deepseek_operator.render.common import LABEL_DEPLOYMENT, MANAGED_BY

log = logging.getLogger(__name__)
CR = KINDS[("deepseek.ai/v1alpha1", "DeepSeekDeployment")]
RESYNC_SECONDS = float(os.environ.get("DEEPSEEK_OPERATOR_RESYNC_SECONDS", "60"))
# Retry delay after an API error (409 conflict, 5xx): the next attempt usually succeeds.
RETRY_SECONDS = 5
_locks: dict[tuple[str, str], asyncio.Lock] = {}
_waiting: set[tuple[str, str]] = set()  # resources with a reconcile queued on their lock
_client: K8s | None = None


async def client() -> K8s:
    """The shared API client, created on first use (after kopf has logged in)."""
    global _client
    if _client is None:
        _client = await K8s.connect()
    return _client


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
        await _run_locked(api, key)
    finally:
        lock.release()


async def _run_locked(api: K8s, key: tuple[str, str]) -> None:
    """The reconcile itself, with the lock held: fresh GET, deletion check, error mapping."""
    fresh = await api.get(CR, *key)
    if fresh is None or fresh["metadata"].get("deletionTimestamp"):
        _locks.pop(key, None)  # children go with the owner through ownerReferences garbage collection
        metrics.set_managed_deployments(len(_locks))
        return
    metrics.set_managed_deployments(len(_locks))
    target = kopf.Body(cast(kopf.RawBody, fresh))

    async def notify(kind: str, reason: str, message: str) -> None:
        kopf.event(target, type=kind, reason=reason, message=message)

    try:
        outcome = await reconcile(fresh, api, notify)
    except InvalidSpec as exc:
        # The status says why; retrying cannot help until the spec changes (no retry storm).
        raise kopf.PermanentError(str(exc)) from exc
    except ApiError as exc:
        raise kopf.TemporaryError(f"API error, retrying: {exc}", delay=RETRY_SECONDS) from exc
    log.debug("%s/%s: %s, writes %s", *key, outcome.reason, outcome.writes)


async def run_for_owner(namespace: str, name: str) -> None:
    """Reconcile the DeepSeekDeployment a child belongs to."""
    try:
        await run({"metadata": {"namespace": namespace, "name": name}})
    except (kopf.PermanentError, kopf.TemporaryError) as exc:
        log.info("reconcile of %s/%s from a child event: %s", namespace, name, exc)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def on_change(body: kopf.Body, **_: Any) -> None:
    # Returning a value would make kopf store it in status; the reconcile writes status itself.
    await run(body)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, idle=RESYNC_SECONDS)
async def on_resync(body: kopf.Body, **_: Any) -> None:
    # A timer's return value would be stored on the resource: return nothing, so idle means no writes.
    if _reported_invalid(body):
        metrics.record_resync("skipped_invalid")
        return
    metrics.record_resync("reconciled")
    try:
        await run(body)
    except kopf.PermanentError:
        return


def _reported_invalid(body: kopf.Body) -> bool:
    """This generation was already found invalid: only a spec change can help (no retry storm)."""
    status = body.get("status") or {}
    ready: dict[str, Any] = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), {})
    generation = body.get("metadata", {}).get("generation")
    return bool(ready.get("reason") == "InvalidSpec" and status.get("observedGeneration") == generation)


CHILD_FILTER: dict[str, Any] = {LABEL_DEPLOYMENT: kopf.PRESENT, **MANAGED_BY}


@kopf.on.event("apps", "v1", "deployments", labels=CHILD_FILTER)
@kopf.on.event("", "v1", "services", labels=CHILD_FILTER)
@kopf.on.event("", "v1", "pods", labels={LABEL_DEPLOYMENT: kopf.PRESENT})
async def on_child_event(body: kopf.Body, **_: Any) -> None:
    labels = body.get("metadata", {}).get("labels", {})
    namespace = body.get("metadata", {}).get("namespace")
    if namespace and labels.get(LABEL_DEPLOYMENT):
        await run_for_owner(namespace, labels[LABEL_DEPLOYMENT])
