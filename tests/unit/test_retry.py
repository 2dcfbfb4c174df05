"""Fault injection: how the operator retries a reconcile after API errors (retry.py, controller.py).

The API is a fake that fails as told; the Controller's clock is a FakeClock that records each retry's
delay and fires it when the test says, so each test sees the exact number of attempts and the gaps
between them without waiting for them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from deepseek_operator.controller import Controller
from deepseek_operator.k8s import ApiError, retry_after_seconds
from deepseek_operator.reconcile import Outcome
from deepseek_operator.retry import Backoff, server_delay
from deepseek_operator.status import forbidden_message
from tests.unit.controllers import build, drained, running
from tests.unit.fake_clock import FakeClock

DEADLINE = 5
KEY = ("default", "chat")
FORBIDDEN = ('deployments.apps "chat-primary" is forbidden: User "system:serviceaccount:ops:op" cannot patch '
             'resource "deployments" in API group "apps" in the namespace "default"')


def body(status: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = {"namespace": "default", "name": "chat", "uid": "u1", "generation": 1}
    return {"apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": meta, "spec": {},
            "status": status or {}}


class FakeApi:
    """One DeepSeekDeployment; status patches are stored (and counted)."""

    def __init__(self) -> None:
        self.obj = body()
        self.status_writes = 0
        self.refreshes = 0

    async def get(self, _kind: Any, _namespace: str, _name: str) -> dict[str, Any]:
        return self.obj

    async def refresh(self, _kind: Any, _namespace: str, _name: str) -> dict[str, Any]:
        """What CachedK8s.refresh does: read the object from the API into the cache."""
        self.refreshes += 1
        return self.obj

    async def patch(self, _kind: Any, _ns: str, _name: str, patch: dict[str, Any], sub: str = "") -> dict[str, Any]:
        assert sub == "status"
        self.status_writes += 1
        self.obj = {**self.obj, "status": patch["status"]}
        return self.obj


class Script:
    """A reconcile that raises the given errors in turn, then succeeds; records when it ran."""

    def __init__(self, *errors: ApiError) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.done = asyncio.Event()

    async def __call__(self, fresh: Any, api: Any, notify: Any) -> Outcome:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.done.set()
        return Outcome({}, True, "Ready")


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    posted: list[tuple[str, str, str]] = []
    monkeypatch.setattr(kopf, "event", lambda _obj, type, reason, message: posted.append((type, reason, message)))
    return posted


async def attempt(api: FakeApi, script: Script, clock: FakeClock) -> Controller:
    """The first trigger, then every scheduled retry, until the script succeeds; the Controller after."""
    controller = build(api, script, clock=clock, max_reconciles=1)
    controller.known[KEY] = api.obj  # listed by kopf
    async with running(controller), asyncio.timeout(DEADLINE):
        controller.enqueue(KEY)
        while not script.done.is_set():
            await drained(controller)
            if controller.queue.pending_retries():
                clock.fire_next()
        await drained(controller)
        assert controller.queue.requeues(KEY) == 0 and controller.queue.pending_retries() == 0  # reset on success
    return controller


def test_backoff_doubles_to_its_cap_and_honours_retry_after_up_to_the_cap() -> None:
    backoff = Backoff(base=1, factor=2, cap=30)
    assert [backoff.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(5, retry_after=7) == 7
    assert backoff.delay(1, retry_after=3600) == 30
    assert server_delay(429, 7) == 7 and server_delay(503, 2) == 2
    assert server_delay(500, 7) is None  # Retry-After on other codes is not a promise HTTP makes
    assert retry_after_seconds("7") == 7 and retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None


async def test_three_500s_are_retried_with_growing_gaps_then_the_count_resets() -> None:
    clock = FakeClock()
    script = Script(*(ApiError(500, "etcdserver: request timed out") for _ in range(3)))
    controller = await attempt(FakeApi(), script, clock)
    assert script.calls == 4
    assert clock.delays == [1, 2, 4]
    assert controller.reconciled == {KEY: 1}


async def test_429_is_retried_after_the_seconds_the_api_asks() -> None:
    clock = FakeClock()
    script = Script(ApiError(429, "too many requests", retry_after=7), ApiError(429, "again", retry_after=3))
    await attempt(FakeApi(), script, clock)
    assert script.calls == 3 and clock.delays == [7, 3]


async def test_409_on_a_child_patch_is_retried_at_once_and_succeeds() -> None:
    api, clock = FakeApi(), FakeClock()
    script = Script(ApiError(409, 'Operation cannot be fulfilled on deployments.apps "chat-primary"'))
    await attempt(api, script, clock)
    assert script.calls == 2 and clock.delays == [1]
    assert api.refreshes == 1  # the cached copy is replaced by the server's before the retry reads it


async def test_a_persistent_403_names_verb_and_resource_once_and_backs_off(
        events: list[tuple[str, str, str]]) -> None:
    api, clock = FakeApi(), FakeClock()
    script = Script(*(ApiError(403, FORBIDDEN) for _ in range(5)))
    await attempt(api, script, clock)
    assert script.calls == 6 and clock.delays == [1, 2, 4, 8, 16]
    message = forbidden_message(FORBIDDEN)
    assert "may not patch deployments.apps in namespace default" in message
    assert [e for e in events if e[1] == "Forbidden"] == [("Warning", "Forbidden", message)]  # once, not 5 times
    assert api.status_writes == 1
    ready = next(c for c in api.obj["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "Forbidden", message)


async def test_a_deleted_resource_drops_its_pending_retry() -> None:
    clock = FakeClock()
    api = FakeApi()
    controller = build(api, Script(ApiError(500, "etcdserver: request timed out")), clock=clock)
    with pytest.raises(kopf.TemporaryError):
        await asyncio.wait_for(controller.process(KEY), DEADLINE)
    assert controller.queue.requeues(KEY) == 1 and controller.queue.pending_retries() == 1
    api.obj = {**api.obj, "metadata": {**api.obj["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    await asyncio.wait_for(controller.process(KEY), DEADLINE)  # found deleting: forgotten
    assert controller.queue.requeues(KEY) == 0 and controller.queue.pending_retries() == 0
    assert clock.advance(3600) == 0 and len(controller.queue) == 0  # the dropped retry never fires
