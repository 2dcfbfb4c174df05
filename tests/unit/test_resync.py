"""The resync is one cluster-wide loop of the Controller, so kopf never puts its finalizer on a DeepSeekDeployment.

A finalizer would make `kubectl delete dsd` (and CRD or namespace deletion) hang while the operator
is down; the children need none, they go through ownerReference garbage collection.
The Controller is built over fakes (tests/unit/controllers.py) and reached through kopf's memo, as kopf does.
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
from deepseek_operator.api import GROUP, PLURAL, VERSION, InvalidSpec
from deepseek_operator.controller import Controller, reported_invalid
from deepseek_operator.informer import Store
from deepseek_operator.k8s import ApiError
from deepseek_operator.reconcile import Outcome
from deepseek_operator.settings import Settings
from tests.unit.controllers import build, drained, running
from tests.unit.fake_clock import FakeClock

RESOURCE = kopf.Resource(GROUP, VERSION, PLURAL, kind="DeepSeekDeployment", namespaced=True)
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"  # kopf's default; the operator keeps it
DEADLINE = 5  # seconds; every wait below has one


def _body(name: str, **extra: Any) -> dict[str, Any]:
    meta = {"namespace": "default", "name": name, "uid": f"uid-{name}", "generation": 1, **extra.pop("meta", {})}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DeepSeekDeployment", "metadata": meta, "spec": {}, **extra}


def _kbody(body: dict[str, Any]) -> kopf.Body:
    return kopf.Body(cast(kopf.RawBody, body))


def _memo(controller: Controller) -> kopf.Memo:
    """kopf's memo as main.configure() leaves it."""
    memo = kopf.Memo()
    memo[handlers.MEMO_KEY] = controller
    return memo


async def _event(controller: Controller, type: str | None, body: dict[str, Any]) -> None:
    """One watch event of a DeepSeekDeployment, as kopf delivers it to the operator's handler."""
    await handlers.on_resource_event(type=type, event={"type": type, "object": body}, body=_kbody(body),
                                     memo=_memo(controller))


def _invalid(name: str) -> dict[str, Any]:
    """A resource whose current generation was already reported InvalidSpec."""
    ready = {"type": "Ready", "status": "False", "reason": "InvalidSpec"}
    return _body(name, status={"observedGeneration": 1, "conditions": [ready]})


def _resyncs(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("deepseek_operator_resyncs_total", {"result": result}) or 0.0


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
    settings, memo = kopf.OperatorSettings(), kopf.Memo()
    await main.configure(settings=settings, memo=memo)
    handlers.controller_of(memo).client = FakeApi()  # type: ignore[assignment]  # not started: no API
    assert settings.persistence.finalizer == KOPF_FINALIZER
    raw = cast(kopf.RawBody, _body("old", meta={"finalizers": [KOPF_FINALIZER, "example.com/other"]}))
    patch = kopf.Patch()
    logger = cast(kopf.ObjectLogger, logging.getLogger(__name__))
    await processing.process_resource_causes(
        lifecycle=lifecycles.all_at_once, indexers=indexing.OperatorIndexers(), registry=kopf.get_default_registry(),
        settings=settings, resource=RESOURCE, raw_event={"type": None, "object": raw}, body=kopf.Body(raw),
        patch=patch, memory=inventory.ResourceMemory(memo=memo), local_logger=logger, event_logger=logger,
        stream_pressure=None, operator_paused=None, consistency_time=None,
    )
    for fn in patch.fns:  # kopf applies these to the body it PATCHes
        fn(raw)
    assert raw["metadata"]["finalizers"] == ["example.com/other"]


class FakeApi:
    """A cluster holding the given resources, by name; `dsd` is the store kopf's events feed.

    Reads prefer the store, as CachedK8s does: a resource's latest watch event is what a pass reads.
    """

    def __init__(self, *bodies: dict[str, Any]) -> None:
        self.objects = {b["metadata"]["name"]: b for b in bodies}
        self.dsd = Store()

    async def get(self, _kind: Any, namespace: str, name: str) -> dict[str, Any] | None:
        return self.dsd.get(namespace, name) or self.objects.get(name)


class Script:
    """A reconcile that counts passes per resource name and fails as told; `done` once each valid
    resource has had `until` passes."""

    def __init__(self, failing: dict[str, Exception], until: int, names: set[str]) -> None:
        self.calls: Counter[str] = Counter()
        self.failing, self.until, self.names = failing, until, names
        self.done = asyncio.Event()

    async def __call__(self, body: Any, api: Any, notify: Any) -> Outcome:
        name = body["metadata"]["name"]
        self.calls[name] += 1
        if all(self.calls[n] >= self.until for n in self.names):
            self.done.set()
        if name in self.failing:
            raise self.failing[name]
        return Outcome({}, True, "Ready")


async def test_one_tick_enqueues_each_known_resource_once_and_skips_invalid() -> None:
    controller = build(FakeApi())
    for body in (_body("a"), _body("bad"), _body("perm"), _invalid("invalid")):
        controller.known[("default", body["metadata"]["name"])] = body
    reconciled, skipped = _resyncs("reconciled"), _resyncs("skipped_invalid")
    controller.resync_all()
    controller.resync_all()  # a second tick before the workers ran: the keys are queued once
    assert len(controller.queue) == 3
    keys = [await asyncio.wait_for(controller.queue.get(), DEADLINE) for _ in range(3)]
    assert sorted(name for _, name in keys) == ["a", "bad", "perm"]
    assert (_resyncs("reconciled") - reconciled, _resyncs("skipped_invalid") - skipped) == (6, 2)


async def test_the_loop_keeps_resyncing_every_interval_despite_failures() -> None:
    bodies = (_body("a"), _body("bad"), _body("perm"), _body("bug"), _invalid("invalid"))
    script = Script({"bad": ApiError(500, "etcdserver: request timed out"), "perm": InvalidSpec("no"),
                     "bug": KeyError("x")}, until=3, names={"a", "bad", "perm", "bug"})
    # A fake clock: the scheduled retries of "bad" never fire, so every pass below is the loop's.
    controller = build(FakeApi(*bodies), script, clock=FakeClock(), resync_seconds=0.01, max_reconciles=2)
    for body in bodies:
        controller.known[("default", body["metadata"]["name"])] = body
    async with running(controller):
        await asyncio.wait_for(script.done.wait(), DEADLINE)  # three ticks reached every valid resource
    assert set(script.calls) == {"a", "bad", "perm", "bug"}  # never "invalid"; a bug stopped no worker


async def test_start_starts_the_workers_and_one_loop_and_stop_ends_them() -> None:
    controller = build(FakeApi(), max_reconciles=3)
    memo = _memo(controller)
    await main.start_controller(memo=memo)  # what kopf calls at startup
    tasks = list(controller._tasks)
    assert len(tasks) == 4 and not any(t.done() for t in tasks)  # 3 workers and the resync loop
    await asyncio.wait_for(main.stop_controller(memo=memo), DEADLINE)  # and at cleanup
    assert all(t.done() for t in tasks) and controller._tasks == []
    assert controller.queue.shutting_down and not controller.queue.add(("default", "a"))
    await asyncio.wait_for(controller.stop(), DEADLINE)  # a second stop is harmless


async def test_events_track_known_resources_and_forget_deleted_ones() -> None:
    controller = build(FakeApi())
    await _event(controller, None, _body("a"))
    await _event(controller, "ADDED", _body("b"))
    await _event(controller, "MODIFIED", _invalid("b"))
    assert reported_invalid(controller.known[("default", "b")])  # the latest body is kept
    await _event(controller, "DELETED", _body("a"))
    await _event(controller, "MODIFIED", _body("b", meta={"deletionTimestamp": "t"}))
    assert controller.known == {}


async def test_a_resource_found_gone_is_forgotten() -> None:
    controller = build(FakeApi())
    controller.known[("default", "gone")] = _body("gone")
    controller.reconciled[("default", "gone")] = 1
    await asyncio.wait_for(controller.process(("default", "gone")), DEADLINE)
    assert controller.known == {} and controller.reconciled == {}


async def test_reconciles_of_the_workers_post_events_through_kopf() -> None:
    """kopf.event() works in the Controller's workers, which kopf did not create, once a handler has run."""
    queue: kopf_posting.K8sEventQueue = asyncio.Queue()

    async def reconcile(body: Any, api: Any, notify: Any) -> Outcome:
        await notify("Warning", "RolledBack", "rolled back")
        return Outcome({}, True, "Ready")

    controller = build(FakeApi(_body("a")), reconcile)

    async def inside_kopf() -> None:  # what kopf sets in its per-object tasks before calling handlers
        kopf_posting.event_queue_loop_var.set(asyncio.get_running_loop())
        kopf_posting.event_queue_var.set(queue)
        await _event(controller, None, _body("a"))

    async def operator() -> None:  # kopf's root context holds only the settings; startup starts the workers
        kopf_posting.settings_var.set(kopf.OperatorSettings())
        async with running(controller):
            await asyncio.create_task(inside_kopf())
            await drained(controller)

    await asyncio.wait_for(asyncio.create_task(operator()), DEADLINE)
    event = await asyncio.wait_for(queue.get(), DEADLINE)
    assert (event.reason, event.ref["name"]) == ("RolledBack", "a")


async def test_only_a_generation_not_yet_reconciled_triggers_a_reconcile() -> None:
    """Metadata-only edits and our own status writes keep the generation: they cost no reconcile."""
    calls: list[str] = []

    async def record(body: Any, api: Any, notify: Any) -> Outcome:
        calls.append(body["metadata"]["name"])
        return Outcome({}, True, "Ready")

    async with running(build(FakeApi(), record)) as controller:
        await _event(controller, None, _body("a"))  # startup listing: reconcile
        await drained(controller)
        for i in range(10):  # label and annotation edits, status writes: same generation
            await _event(controller, "MODIFIED", _body("a", meta={"labels": {"i": str(i)}, "resourceVersion": str(i)}))
        await drained(controller)
        assert calls == ["a"]
        await _event(controller, "MODIFIED", _body("a", meta={"generation": 2, "resourceVersion": "20"}))
        await drained(controller)
    assert calls == ["a", "a"]


async def test_a_resource_deleted_during_its_reconcile_is_not_taken_for_reconciled() -> None:
    """A namesake created next (generation 1 again) must be reconciled, not skipped."""
    async def deleted_meanwhile(body: Any, api: Any, notify: Any) -> Outcome:
        await _event(controller, "DELETED", _body("a"))
        return Outcome({}, True, "Ready")

    controller = build(FakeApi(_body("a")), deleted_meanwhile)
    await _event(controller, None, _body("a"))
    await asyncio.wait_for(controller.process(("default", "a")), DEADLINE)
    assert controller.reconciled == {} and controller.known == {}


async def test_stop_stops_the_client_start_connected_once_and_only_that_one() -> None:
    class Client(FakeApi):
        stops = 0

        async def stop(self) -> None:
            self.stops += 1

    connected = Client()

    class Connecting(Controller):
        async def _connect(self) -> Any:
            return connected

    controller = Connecting(Settings(max_reconciles=1))
    await controller.start()
    await asyncio.wait_for(controller.stop(), DEADLINE)
    await asyncio.wait_for(controller.stop(), DEADLINE)
    assert connected.stops == 1 and controller.client is connected  # a late kopf event still finds its store
    given = Client()
    async with running(build(given)):
        pass
    assert given.stops == 0  # a client passed in belongs to the caller
