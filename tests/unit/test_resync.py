"""The resync is one cluster-wide loop, so kopf never puts its finalizer on a DeepSeekDeployment.

A finalizer would make `kubectl delete dsd` (and CRD or namespace deletion) hang while the operator
is down; the children need none, they go through ownerReference garbage collection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any, cast

import kopf
import pytest
from kopf._core.actions import lifecycles
from kopf._core.engines import indexing
from kopf._core.engines import posting as kopf_posting
from kopf._core.intents import causes
from kopf._core.reactor import inventory, processing

from deepseek_operator import handlers, main, metrics
from deepseek_operator.api import GROUP, PLURAL, VERSION
from deepseek_operator.informer import Store
from deepseek_operator.reconcile import Outcome

RESOURCE = kopf.Resource(GROUP, VERSION, PLURAL, kind="DeepSeekDeployment", namespaced=True)
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"  # kopf's default; the operator keeps it
DEADLINE = 5  # seconds; every wait below has one


def _body(name: str, **extra: Any) -> dict[str, Any]:
    meta = {"namespace": "default", "name": name, "uid": f"uid-{name}", "generation": 1, **extra.pop("meta", {})}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DeepSeekDeployment", "metadata": meta, "spec": {}, **extra}


def _kbody(body: dict[str, Any]) -> kopf.Body:
    return kopf.Body(cast(kopf.RawBody, body))


async def _event(type: str | None, body: dict[str, Any]) -> None:
    """One watch event of a DeepSeekDeployment, as kopf delivers it to the operator's handler."""
    await handlers.on_resource_event(type=type, event={"type": type, "object": body}, body=_kbody(body))


def _invalid(name: str) -> dict[str, Any]:
    """A resource whose current generation was already reported InvalidSpec."""
    ready = {"type": "Ready", "status": "False", "reason": "InvalidSpec"}
    return _body(name, status={"observedGeneration": 1, "conditions": [ready]})


def _resyncs(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("deepseek_operator_resyncs_total", {"result": result}) or 0.0


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no known resources, no loop and no captured Event queue."""
    monkeypatch.setattr(handlers, "_known", {})
    monkeypatch.setattr(handlers, "_locks", {})
    monkeypatch.setattr(handlers, "_resync_task", None)
    monkeypatch.setattr(handlers, "_event_sink", None)
    monkeypatch.setattr(handlers, "_reconciled", {})
    monkeypatch.setattr(handlers, "_client", FakeApi())
    monkeypatch.setattr(handlers, "LEADERSHIP", handlers.LEADERSHIP)  # main.configure() may replace it


def _causes(body: kopf.Body) -> tuple[causes.SpawningCause, causes.ChangingCause]:
    common: dict[str, Any] = dict(resource=RESOURCE, indices=indexing.OperatorIndexers().indices, memo=kopf.Memo(),
                                  logger=logging.getLogger(__name__), patch=kopf.Patch(), body=body)
    return (causes.SpawningCause(reset=False, **common),
            causes.ChangingCause(initial=True, reason=causes.Reason.RESUME, **common))


def _requires_finalizer(registry: kopf.OperatorRegistry) -> bool:
    """kopf's own decision (processing.process_resource_causes asks exactly these two registries)."""
    spawning, changing = _causes(_kbody(_body("chat")))
    return bool(registry._spawning.requires_finalizer(cause=spawning)
                or registry._changing.requires_finalizer(cause=changing))


def test_no_handler_of_the_operator_requires_kopfs_finalizer() -> None:
    registry = kopf.get_default_registry()
    assert registry._watching.has_handlers(resource=RESOURCE)  # our handlers are registered: not vacuous
    assert not registry._changing.has_handlers(resource=RESOURCE)  # and no change handler (no diff-base writes)
    assert not _requires_finalizer(registry)
    # Stricter than kopf's per-object check, which honours filters: no timer or daemon at all (they
    # always require the finalizer), and no mandatory on.delete handler whatever its filters.
    assert not registry._spawning.has_handlers(resource=RESOURCE)
    assert not [h for h in registry._changing.get_resource_handlers(RESOURCE) if h.requires_finalizer]


def test_the_finalizer_check_catches_a_timer() -> None:
    """The check above is not vacuous: re-adding the old per-resource timer makes it fail."""
    registry = kopf.OperatorRegistry()

    async def resync(**_: Any) -> None: ...

    kopf.timer(GROUP, VERSION, PLURAL, interval=60, registry=registry)(resync)
    assert _requires_finalizer(registry)


async def test_kopf_removes_the_finalizer_an_older_operator_added(monkeypatch: pytest.MonkeyPatch) -> None:
    """Upgrade: a resource carrying kopf's finalizer from the timer era loses it on the first event."""
    monkeypatch.setenv("DEEPSEEK_OPERATOR_METRICS_PORT", "0")
    settings = kopf.OperatorSettings()
    await main.configure(settings=settings)
    assert settings.persistence.finalizer == KOPF_FINALIZER
    raw = cast(kopf.RawBody, _body("old", meta={"finalizers": [KOPF_FINALIZER, "example.com/other"]}))
    patch = kopf.Patch()
    logger = cast(kopf.ObjectLogger, logging.getLogger(__name__))
    await processing.process_resource_causes(
        lifecycle=lifecycles.all_at_once, indexers=indexing.OperatorIndexers(), registry=kopf.get_default_registry(),
        settings=settings, resource=RESOURCE, raw_event={"type": None, "object": raw}, body=kopf.Body(raw),
        patch=patch, memory=inventory.ResourceMemory(), local_logger=logger, event_logger=logger,
        stream_pressure=None, operator_paused=None, consistency_time=None,
    )
    for fn in patch.fns:  # kopf applies these to the body it PATCHes
        fn(raw)
    assert raw["metadata"]["finalizers"] == ["example.com/other"]


class FakeRun:
    """Stands in for handlers.run: counts calls per resource name, fails some, signals when done."""

    def __init__(self, failing: dict[str, Exception], until: int) -> None:
        self.calls: Counter[str] = Counter()
        self.failing, self.until = failing, until
        self.done = asyncio.Event()

    async def __call__(self, body: kopf.Body | dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        self.calls[name] += 1
        if min(self.calls.values()) >= self.until:
            self.done.set()
        if name in self.failing:
            raise self.failing[name]


async def test_one_tick_runs_each_known_resource_once_and_skips_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRun({"bad": kopf.TemporaryError("API error", delay=5), "perm": kopf.PermanentError("no")}, until=1)
    monkeypatch.setattr(handlers, "run", fake)
    for body in (_body("a"), _body("bad"), _body("perm"), _invalid("invalid")):
        handlers._known[("default", body["metadata"]["name"])] = body
    reconciled, skipped = _resyncs("reconciled"), _resyncs("skipped_invalid")
    await asyncio.wait_for(handlers.resync_all(), DEADLINE)  # kopf errors are logged, not raised
    assert fake.calls == {"a": 1, "bad": 1, "perm": 1}
    assert (_resyncs("reconciled") - reconciled, _resyncs("skipped_invalid") - skipped) == (3, 1)


async def test_the_loop_keeps_resyncing_every_interval_despite_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRun({"bad": kopf.TemporaryError("API error", delay=5), "bug": KeyError("x")}, until=3)
    monkeypatch.setattr(handlers, "run", fake)
    for body in (_body("a"), _body("bad"), _body("bug"), _invalid("invalid")):
        handlers._known[("default", body["metadata"]["name"])] = body
    loop = asyncio.create_task(handlers.resync_forever(0.01))
    try:
        await asyncio.wait_for(fake.done.wait(), DEADLINE)  # three ticks reached every valid resource
    finally:
        loop.cancel()
        await asyncio.wait([loop], timeout=DEADLINE)
    assert loop.cancelled()  # it ended by cancellation only, never by a resource's error
    assert set(fake.calls) == {"a", "bad", "bug"}
    assert max(fake.calls.values()) - min(fake.calls.values()) <= 1  # once per tick each


async def test_startup_starts_one_loop_and_cleanup_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "RESYNC_SECONDS", 3600.0)
    await handlers.start_resync()
    task = handlers._resync_task
    await handlers.start_resync()
    assert task is not None and handlers._resync_task is task
    await asyncio.wait_for(handlers.stop_resync(), DEADLINE)
    assert task.cancelled() and handlers._resync_task is None


async def test_events_track_known_resources_and_forget_deleted_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_reconcile(namespace: str, name: str) -> None: ...

    monkeypatch.setattr(handlers, "run_for_owner", no_reconcile)
    await _event(None, _body("a"))
    await _event("ADDED", _body("b"))
    await _event("MODIFIED", _invalid("b"))
    assert handlers._reported_invalid(handlers._known[("default", "b")])  # the latest body is kept
    await _event("DELETED", _body("a"))
    await _event("MODIFIED", _body("b", meta={"deletionTimestamp": "t"}))
    assert handlers._known == {}


class FakeApi:
    """A cluster holding the given resources, by name; `dsd` is the store kopf's events feed."""

    def __init__(self, *bodies: dict[str, Any]) -> None:
        self.objects = {b["metadata"]["name"]: b for b in bodies}
        self.dsd = Store()

    async def get(self, _kind: Any, _namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(name)


async def test_a_resource_found_gone_is_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "_client", FakeApi())
    handlers._known[("default", "gone")] = _body("gone")
    await asyncio.wait_for(handlers.resync_all(), DEADLINE)
    assert handlers._known == {} and handlers._locks == {}


async def test_reconciles_from_the_loop_post_events_through_kopf(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf.event() works in the loop's task, which kopf did not create, once a handler has run."""
    queue: kopf_posting.K8sEventQueue = asyncio.Queue()

    async def reconcile(body: Any, api: Any, notify: Any) -> Outcome:
        await notify("Warning", "RolledBack", "rolled back")
        return Outcome({}, True, "Ready")

    async def inside_kopf() -> None:  # what kopf sets in its per-object tasks before calling handlers
        kopf_posting.event_queue_loop_var.set(asyncio.get_running_loop())
        kopf_posting.event_queue_var.set(queue)
        await _event(None, _body("a"))

    async def operator() -> None:  # kopf's root context holds only the settings
        kopf_posting.settings_var.set(kopf.OperatorSettings())
        await asyncio.create_task(inside_kopf())
        await handlers.resync_all()

    monkeypatch.setattr(handlers, "_client", FakeApi(_body("a")))
    monkeypatch.setattr(handlers, "reconcile", reconcile)
    await asyncio.wait_for(asyncio.create_task(operator()), DEADLINE)
    event = await asyncio.wait_for(queue.get(), DEADLINE)
    assert (event.reason, event.ref["name"]) == ("RolledBack", "a")


async def test_only_a_generation_not_yet_reconciled_triggers_a_reconcile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Metadata-only edits and our own status writes keep the generation: they cost no reconcile."""
    calls: list[str] = []

    async def record(namespace: str, name: str) -> None:
        calls.append(name)
        handlers._reconciled[(namespace, name)] = 1  # what a finished reconcile of generation 1 records

    monkeypatch.setattr(handlers, "run_for_owner", record)
    await _event(None, _body("a"))  # startup listing: reconcile
    for i in range(10):  # label and annotation edits, status writes: same generation
        await _event("MODIFIED", _body("a", meta={"labels": {"i": str(i)}}))
    assert calls == ["a"]
    await _event("MODIFIED", _body("a", meta={"generation": 2}))
    assert calls == ["a", "a"]
