"""A child the apiserver refuses (issue 19 items 1 and 4), with the real reconcile over an in-memory API.

- 422 (the apiserver's validation): permanent until the spec changes. Ready/Progressing False and
  Degraded True with reason ChildRejected and the apiserver's message, no retry scheduled, the resync
  skips the generation.
- The NetworkPolicy is applied before anything that makes pods, so a refusal later in the order
  never leaves a worker pod without it.
- 403 on the Deployment patch: Progressing says ApplyFailed, never the RolloutComplete of before.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import kopf
import pytest

from deepseek_operator.controller import reported_invalid
from deepseek_operator.k8s import ApiError, Kind, kind_of
from deepseek_operator.reconcile import ChildRejected, reconcile
from tests.unit.controllers import build
from tests.unit.fake_clock import FakeClock

KEY = ("default", "chat")
WIDE_HOST = "\uff43\uff48\uff41\uff54.example.com"  # full-width letters
INGRESS_422 = (f'Ingress.networking.k8s.io "chat" is invalid: spec.rules[0].host: Invalid value: "{WIDE_HOST}": '
               "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters")
FORBIDDEN = ('deployments.apps "chat-primary" is forbidden: User "system:serviceaccount:ops:op" cannot patch '
             'resource "deployments" in API group "apps" in the namespace "default"')
POD_MAKERS = {"Deployment", "Job", "LeaderWorkerSet"}


def body(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = {"namespace": "default", "name": "chat", "uid": "u1", "generation": 2, "resourceVersion": "7"}
    full = {"image": "registry.example.com/deepseek-worker:1.1.0", "model": {"id": "deepseek-ai/DeepSeek-R1"},
            "resources": {"gpus": 0}, **spec}
    return {"apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": meta, "spec": full,
            "status": status or {}}


class FakeApi:
    """Objects by (kind, name); `refuse(child)` returns the ApiError an apply of that child gets."""

    def __init__(self, cr: dict[str, Any], refuse: Callable[[dict[str, Any]], ApiError | None]) -> None:
        self.cr = cr
        self.refuse = refuse
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.applied: list[str] = []  # kinds, in the order they were applied
        self.cache: dict[str, Any] = {}  # detect_capabilities keeps its answer here

    async def served(self, _api_version: str) -> set[str]:
        return set()

    async def get(self, kind: Kind, _ns: str | None, name: str, sub: str = "") -> dict[str, Any] | None:
        if kind.kind == "DeepSeekDeployment":
            return self.cr
        return self.objects.get((kind.kind, name))

    async def refresh(self, kind: Kind, ns: str, name: str) -> dict[str, Any] | None:
        return await self.get(kind, ns, name)

    async def list(self, kind: Kind, _ns: str | None, _selector: dict[str, str]) -> list[dict[str, Any]]:
        return [o for (k, _), o in self.objects.items() if k == kind.kind and kind.kind != "Pod"]

    async def apply(self, desired: dict[str, Any], create_only: bool = False) -> str:
        error = self.refuse(desired)
        if error is not None:
            raise error
        self.applied.append(desired["kind"])
        self.objects[(kind_of(desired).kind, desired["metadata"]["name"])] = desired
        return "created"

    async def delete(self, kind: Kind, _ns: str | None, name: str) -> None:
        self.objects.pop((kind.kind, name), None)

    async def patch(self, kind: Kind, _ns: str | None, _name: str, patch: dict[str, Any],
                    sub: str = "") -> dict[str, Any]:
        assert kind.kind == "DeepSeekDeployment" and sub == "status"
        self.cr = {**self.cr, "status": patch["status"]}
        return self.cr


def conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in obj["status"]["conditions"]}


async def no_notify(_kind: str, _reason: str, _message: str) -> None: ...


@pytest.fixture
def no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf.event() outside kopf: dropped."""
    monkeypatch.setattr(kopf, "event", lambda *_a, **_k: None)


@pytest.mark.usefixtures("no_events")
async def test_a_refused_ingress_is_a_status_not_a_retry_and_pods_come_after_the_network_policy() -> None:
    def refuse(child: dict[str, Any]) -> ApiError | None:
        return ApiError(422, INGRESS_422) if child["kind"] == "Ingress" else None

    api = FakeApi(body({"ingress": {"provider": "ingress-nginx", "host": "chat.example.com"}}), refuse)
    controller = build(api)
    with pytest.raises(kopf.PermanentError, match="Ingress chat"):
        await controller.process(KEY)
    ready, progressing, degraded = (conditions(api.cr)[t] for t in ("Ready", "Progressing", "Degraded"))
    assert ready[:2] == ("False", "ChildRejected") and INGRESS_422 in ready[2] and "Ingress chat" in ready[2]
    assert progressing[:2] == ("False", "ChildRejected") and degraded[:2] == ("True", "ChildRejected")
    assert api.cr["status"]["observedGeneration"] == 2
    assert controller.queue.pending_retries() == 0 and controller.queue.requeues(KEY) == 0  # no backoff loop
    assert reported_invalid(api.cr)  # the resync skips this generation
    first_pod_maker = min(i for i, kind in enumerate(api.applied) if kind in POD_MAKERS)
    assert "NetworkPolicy" in api.applied[:first_pod_maker], api.applied


async def test_the_network_policy_comes_first_even_before_the_model_cache_job() -> None:
    spec = {"model": {"id": "deepseek-ai/DeepSeek-R1", "cache": {"enabled": True, "size": "40Gi"}}}
    api = FakeApi(body(spec), lambda child: ApiError(422, "refused") if child["kind"] == "Job" else None)
    with pytest.raises(ChildRejected, match="Job"):
        await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert api.applied[0] == "NetworkPolicy", api.applied


# The status of generation 1, rolled out: what a refused apply of generation 2 must not keep claiming.
ROLLED_OUT = {"observedGeneration": 1, "image": "registry.example.com/deepseek-worker:1.0.0", "conditions": [
    {"type": "Ready", "status": "True", "reason": "Ready", "message": "", "observedGeneration": 1,
     "lastTransitionTime": "2026-01-01T00:00:00Z"},
    {"type": "Progressing", "status": "False", "reason": "RolloutComplete",
     "message": "every variant runs its current template", "observedGeneration": 1,
     "lastTransitionTime": "2026-01-01T00:00:00Z"}]}


@pytest.mark.usefixtures("no_events")
async def test_a_403_on_the_deployment_patch_never_reports_rollout_complete() -> None:
    before = copy.deepcopy(ROLLED_OUT)
    api = FakeApi(body({}, before), lambda c: ApiError(403, FORBIDDEN) if c["kind"] == "Deployment" else None)
    controller = build(api, clock=FakeClock())
    with pytest.raises(kopf.TemporaryError):
        await controller.process(KEY)
    progressing = conditions(api.cr)["Progressing"]
    assert progressing[:2] == ("False", "ApplyFailed") and "may not patch deployments.apps" in progressing[2]
    assert next(c for c in api.cr["status"]["conditions"] if c["type"] == "Progressing")["observedGeneration"] == 2
    assert controller.queue.pending_retries() == 1  # the retry is scheduled (on the fake clock: it never fires)


@pytest.mark.usefixtures("no_events")
@pytest.mark.parametrize("code", [500, 504])
async def test_a_failed_apply_of_a_new_generation_never_reports_rollout_complete(code: int) -> None:
    """A 5xx (an admission webhook down, an apiserver timeout) on the Deployment's apply: Progressing
    says the spec was not applied, Ready stays as it was (the last applied spec's pods serve)."""
    before = copy.deepcopy(ROLLED_OUT)
    webhook = 'Internal error occurred: failed calling webhook "policy.example.com": context deadline exceeded'
    api = FakeApi(body({}, before), lambda c: ApiError(code, webhook) if c["kind"] == "Deployment" else None)
    controller = build(api, clock=FakeClock())
    with pytest.raises(kopf.TemporaryError):
        await controller.process(KEY)
    found = conditions(api.cr)
    assert found["Progressing"][:2] == ("False", "ApplyFailed") and "failed calling webhook" in found["Progressing"][2]
    assert found["Ready"][:2] == ("True", "Ready")
    assert controller.queue.pending_retries() == 1

