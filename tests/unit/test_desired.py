"""Issue 21: one reconcile pass computes what it wants once (desired.py).

The real reconcile over an in-memory API, with `resolve_variants` and `gpufit.plan` counted wherever
the operator's modules bound them: a pass resolves the variants once and plans each variant once,
also when it converges twice (a rollback). An OOMAtLoad's note is the plan that status.gpuFit shows
(runtime included), not a second plan without it.
"""

from __future__ import annotations

import copy
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from deepseek_operator import api as api_module
from deepseek_operator import gpufit
from deepseek_operator.api import parse_spec
from deepseek_operator.desired import compute
from deepseek_operator.k8s import Kind, kind_of
from deepseek_operator.observe import OOM_AT_LOAD_EXIT_CODE, OOM_AT_LOAD_PREFIX
from deepseek_operator.reconcile import reconcile
from deepseek_operator.render.common import Capabilities, Owner, selector_labels
from deepseek_operator.status import Rollback

NEW, OLD = "registry.example.com/deepseek-worker:2.0.0", "registry.example.com/deepseek-worker:1.0.0"
SPEC = {"image": NEW, "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}, "runtime": {"name": "vllm"},
        "resources": {"gpus": 1},
        "variants": [{"name": "canary", "weight": 10, "image": "registry.example.com/deepseek-worker:3.0.0"}]}
LOADING = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 0, "availableReplicas": 0}


class FakeApi:
    """Objects by (kind, name); Deployments stay loading (no ready replica); pods are seeded."""

    def __init__(self, cr: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        self.cr = cr
        self.pods = pods
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.cache: dict[str, Any] = {}

    async def served(self, _api_version: str) -> set[str]:
        return set()

    async def get(self, kind: Kind, _ns: str | None, name: str, sub: str = "") -> dict[str, Any] | None:
        return self.cr if kind.kind == "DeepSeekDeployment" else self.objects.get((kind.kind, name))

    async def list(self, kind: Kind, _ns: str | None, selector: dict[str, str]) -> list[dict[str, Any]]:
        found = self.pods if kind.kind == "Pod" else [o for (k, _), o in self.objects.items() if k == kind.kind]
        return [o for o in found if selector.items() <= (o["metadata"].get("labels") or {}).items()]

    async def apply(self, desired: dict[str, Any], create_only: bool = False) -> str:
        key = (kind_of(desired).kind, desired["metadata"]["name"])
        live = self.objects.get(key)
        stored = copy.deepcopy(desired)
        if key[0] == "Deployment":
            stored["metadata"]["generation"] = 1
            stored["status"] = dict(LOADING)
        self.objects[key] = stored
        return "created" if live is None else "patched"

    async def delete(self, kind: Kind, _ns: str | None, name: str) -> None:
        self.objects.pop((kind.kind, name), None)

    async def patch(self, kind: Kind, _ns: str | None, _name: str, patch: dict[str, Any],
                    sub: str = "") -> dict[str, Any]:
        self.cr = {**self.cr, "status": patch["status"]}
        return self.cr


def resource(status: dict[str, Any]) -> dict[str, Any]:
    meta = {"namespace": "default", "name": "chat", "uid": "u1", "generation": 1, "resourceVersion": "7"}
    return {"apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": meta,
            "spec": copy.deepcopy(SPEC), "status": status}


def oom_pod(variant: str, image: str) -> dict[str, Any]:
    """A pod of `variant` whose worker ran out of GPU memory while loading (observe.py: OOMAtLoad)."""
    terminated = {"exitCode": OOM_AT_LOAD_EXIT_CODE, "message": OOM_AT_LOAD_PREFIX}
    labels = selector_labels(Owner("chat", "default", "u1"), variant)
    return {"metadata": {"name": f"chat-{variant}-x", "labels": labels},
            "spec": {"containers": [{"name": "worker", "image": image}]},
            "status": {"containerStatuses": [{"name": "worker", "lastState": {"terminated": terminated}}]}}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts of resolve_variants and gpufit.plan calls, wherever an operator module bound them."""
    counted: Counter[str] = Counter()

    def spy(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def counting(*args: Any, **kwargs: Any) -> Any:
            counted[name] += 1
            return real(*args, **kwargs)
        return counting

    for name, real in (("resolve_variants", api_module.resolve_variants), ("plan", gpufit.plan)):
        wrapped = spy(name, real)
        for module in list(sys.modules.values()):
            if (getattr(module, "__name__", "") or "").startswith("deepseek_operator") \
                    and getattr(module, name, None) is real:
                monkeypatch.setattr(module, name, wrapped)
    return counted


async def notify_into(events: list[tuple[str, str, str]]) -> Callable[[str, str, str], Any]:
    async def notify(kind: str, reason: str, message: str) -> None:
        events.append((kind, reason, message))
    return notify


SCALED = {"gateway": {"enabled": True}, "autoscaling": {"minReplicas": 0, "maxReplicas": 3}}


@pytest.mark.parametrize("extra", [{}, SCALED], ids=["plain", "gateway-autoscaled"])
async def test_a_pass_resolves_once_and_plans_each_variant_once(calls: Counter[str], extra: dict[str, Any]) -> None:
    body = resource({})
    body["spec"].update(copy.deepcopy(extra))
    api = FakeApi(body, [])
    await reconcile(api.cr, api, await notify_into([]))  # type: ignore[arg-type]
    assert api.cr["status"]["variants"][1]["name"] == "canary"
    assert calls == {"resolve_variants": 1, "plan": 2}


async def test_a_pass_that_rolls_back_converges_twice_on_the_same_desired(calls: Counter[str]) -> None:
    events: list[tuple[str, str, str]] = []
    api = FakeApi(resource({"image": OLD}), [oom_pod("primary", NEW)])
    await reconcile(api.cr, api, await notify_into(events))  # type: ignore[arg-type]
    assert [reason for _, reason, _ in events if reason == "RolledBack"] == ["RolledBack"]
    assert api.objects[("Deployment", "chat-primary")]["spec"]["template"]["spec"]["containers"][0]["image"] == OLD
    assert calls == {"resolve_variants": 1, "plan": 2}


async def test_the_oom_note_is_the_plan_in_status() -> None:
    """The note beside OOMAtLoad is status.gpuFit's plan: with the runtime (vllm), which a plan without
    it would not say."""
    api = FakeApi(resource({}), [oom_pod("primary", NEW)])
    await reconcile(api.cr, api, await notify_into([]))  # type: ignore[arg-type]
    status = api.cr["status"]
    plan = status["gpuFit"]["message"]
    assert "[runtime vllm]" in plan and status["variants"][0]["gpuFit"]["message"] == plan
    ready = status["conditions"][0]
    assert ready["reason"] == "OOMAtLoad" and ready["message"].endswith(f"; GPU-fit plan: {plan}")


def test_a_failure_changes_the_images_and_strategies_not_the_plans() -> None:
    spec = parse_spec(SPEC)
    variants = api_module.resolve_variants(spec)
    fits = gpufit.plan_variants(spec, None, variants)
    want = compute(Owner("chat", "default", "u1"), spec, variants, fits, Capabilities(), {"image": OLD})
    assert want.images == {"primary": NEW} and want.rollback == Rollback()
    back = want.after_failure(Rollback(failed_image=NEW, rolled_back=True, reason="OOMAtLoad: x"))
    assert back.images == {"primary": OLD} and back.fits is want.fits and back.variants is want.variants
    assert back.chosen["primary"][1] != want.chosen["primary"][1]  # another template: another hash
    assert back.chosen["canary"] == want.chosen["canary"]
