"""Issue 19 item 2: an operator upgrade does not restart workers (upgrade.py, rollout.operatorUpgrades).

The pure rule (`upgrade.settle`) in a table, then the real reconcile over an in-memory API whose
Deployment was applied by an "earlier release" (the template rendered now, minus one env var, and no
intent annotation): OnNextChange keeps that template and says OperatorUpgradePending; the next spec
change rolls the new one; Rolling applies it, one variant at a time.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from deepseek_operator import upgrade
from deepseek_operator.api import parse_spec
from deepseek_operator.k8s import LAST_APPLIED, Kind, _canonical, _deep_merge, kind_of
from deepseek_operator.reconcile import reconcile
from deepseek_operator.render.common import Owner
from deepseek_operator.render.workload import render_workload

IMAGE = "registry.example.com/deepseek-worker:1.1.0"
SPEC = {"image": IMAGE, "model": {"id": "deepseek-ai/DeepSeek-R1"}, "resources": {"gpus": 0}}
DROPPED_ENV = "DEEPSEEK_REPORT_CONFIGMAP"  # what the "earlier release" did not render
SETTLED = {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1}


def rendered(spec: dict[str, Any] = SPEC) -> dict[str, Any]:
    owner = Owner("chat", "default", "u1", 2, "7")
    return next(c for c in render_workload(owner, parse_spec(spec)) if c["kind"] == "Deployment")


def earlier_release(deployment: dict[str, Any]) -> dict[str, Any]:
    """`deployment` as an earlier operator release applied it: one env var fewer, no intent annotation."""
    old = copy.deepcopy(deployment)
    container = old["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != DROPPED_ENV]
    assert len(container["env"]) < len(deployment["spec"]["template"]["spec"]["containers"][0]["env"])
    live = _deep_merge(old, {"metadata": {"annotations": {LAST_APPLIED: _canonical(old)}}})
    return {**live, "metadata": {**live["metadata"], "generation": 1}, "status": SETTLED}


def intent(spec: dict[str, Any] = SPEC, image: str = IMAGE) -> str:
    return upgrade.intent_hash(upgrade.spec_digest(parse_spec(spec)), image)


def same(recorded: str = "", seen: bool = True) -> upgrade.Intent:
    """The intent of SPEC now, `recorded` for the applied template ("": none), the generation seen."""
    return upgrade.Intent(intent(), recorded, seen)


def env_names(deployment: dict[str, Any]) -> list[str]:
    return [e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]]


# -- the rule ------------------------------------------------------------------------------------
def test_new_deployment_is_applied_as_rendered() -> None:
    settled = upgrade.settle(rendered(), None, same(), "OnNextChange")
    assert not settled.pending and settled.deployment == rendered()


@pytest.mark.parametrize("seen, live_image, held", [
    (True, IMAGE, True),                     # the earlier release had reconciled this generation: hold
    (False, IMAGE, False),                   # the spec changed while no operator ran: roll
    (True, "registry.example.com/deepseek-worker:1.0.0", False),  # a different image: roll
])
def test_deployment_of_an_earlier_release(seen: bool, live_image: str, held: bool) -> None:
    live = earlier_release(rendered())
    live["spec"]["template"]["spec"]["containers"][0]["image"] = live_image
    live["metadata"]["annotations"][LAST_APPLIED] = _canonical({"spec": {"template": live["spec"]["template"]}})
    settled = upgrade.settle(rendered(), live, same(seen=seen), "OnNextChange")
    assert settled.pending is held
    want = live["spec"]["template"] if held else rendered()["spec"]["template"]
    assert settled.deployment["spec"]["template"] == want
    assert settled.deployment["metadata"] == rendered()["metadata"]  # nothing else held back


def test_recorded_intent_decides_over_the_generation() -> None:
    live = earlier_release(rendered())
    assert upgrade.settle(rendered(), live, same(recorded=intent(), seen=False), "OnNextChange").pending
    changed = {**SPEC, "rateLimit": {"requestsPerMinute": 600, "burst": 60}}
    settled = upgrade.settle(rendered(changed), live, upgrade.Intent(intent(changed), intent(), True), "OnNextChange")
    assert not settled.pending and "DEEPSEEK_RATE_LIMIT_RPM" in env_names(settled.deployment)


def test_rolling_applies_the_new_template_unless_another_variant_rolls() -> None:
    settled = upgrade.settle(rendered(), earlier_release(rendered()), same(), "Rolling")
    assert not settled.pending and settled.upgrading and DROPPED_ENV in env_names(settled.deployment)
    waits = upgrade.settle(rendered(), earlier_release(rendered()), same(), "Rolling", others_rolling=True)
    assert waits.pending and not waits.upgrading and DROPPED_ENV not in env_names(waits.deployment)
    assert "Rolling" in upgrade.pending_message(["canary"], "Rolling")


@pytest.mark.parametrize("status, generation, rolling", [
    ({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}, 3, False),
    ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}, 3, True),
    ({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 2}, 3, True),
    ({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}, 3, True),
    ({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 0}, 3, False),  # unhealthy
], ids=["settled", "unseen", "updating", "surplus", "unavailable-but-updated"])
def test_rolling(status: dict[str, Any], generation: int, rolling: bool) -> None:
    deployment = {"metadata": {"generation": generation}, "spec": {"replicas": 2}, "status": status}
    assert upgrade.rolling(deployment) is rolling


def test_held_template_is_the_last_applied_one_not_the_live_defaults() -> None:
    """The live template carries the apiserver's defaults; holding the applied one keeps the apply a no-op."""
    live = earlier_release(rendered())
    applied = copy.deepcopy(live["spec"]["template"])
    live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    settled = upgrade.settle(rendered(), live, same(), "OnNextChange")
    assert settled.deployment["spec"]["template"] == applied


def test_intent_ignores_replicas_and_defaults_but_not_the_image() -> None:
    base = upgrade.spec_digest(parse_spec(SPEC))
    assert upgrade.spec_digest(parse_spec({**SPEC, "replicas": 5})) == base
    assert upgrade.spec_digest(parse_spec({**SPEC, "rollout": {"operatorUpgrades": "OnNextChange"}})) == base
    assert upgrade.spec_digest(parse_spec({**SPEC, "rollout": {"operatorUpgrades": "Rolling"}})) == base
    assert upgrade.spec_digest(parse_spec({**SPEC, "rollout": {"maxUnavailable": 2}})) != base
    assert upgrade.intent_hash(base, IMAGE) != upgrade.intent_hash(base, IMAGE + "-rc")


# -- the reconcile -------------------------------------------------------------------------------
class FakeApi:
    """Objects by (kind, name); apply records the last-applied annotation as K8s.apply does."""

    def __init__(self, cr: dict[str, Any]) -> None:
        self.cr = cr
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.cache: dict[str, Any] = {}

    async def served(self, _api_version: str) -> set[str]:
        return set()

    async def get(self, kind: Kind, _ns: str | None, name: str, sub: str = "") -> dict[str, Any] | None:
        return self.cr if kind.kind == "DeepSeekDeployment" else self.objects.get((kind.kind, name))

    async def list(self, kind: Kind, _ns: str | None, _selector: dict[str, str]) -> list[dict[str, Any]]:
        return [o for (k, _), o in self.objects.items() if k == kind.kind and kind.kind != "Pod"]

    async def apply(self, desired: dict[str, Any], create_only: bool = False) -> str:
        key = (kind_of(desired).kind, desired["metadata"]["name"])
        live = self.objects.get(key)
        stored = _deep_merge(desired, {"metadata": {"annotations": {LAST_APPLIED: _canonical(desired)}}})
        if kind_of(desired).kind == "Deployment":  # settled: every replica runs the template
            stored["metadata"]["generation"] = 1
            stored["status"] = dict(SETTLED)
        self.objects[key] = stored
        return "created" if live is None else "patched"

    async def delete(self, kind: Kind, _ns: str | None, name: str) -> None:
        self.objects.pop((kind.kind, name), None)

    async def patch(self, kind: Kind, _ns: str | None, _name: str, patch: dict[str, Any],
                    sub: str = "") -> dict[str, Any]:
        self.cr = {**self.cr, "status": patch["status"]}
        return self.cr


def resource(spec: dict[str, Any], generation: int, status: dict[str, Any]) -> dict[str, Any]:
    meta = {"namespace": "default", "name": "chat", "uid": "u1", "generation": generation, "resourceVersion": "7"}
    return {"apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": meta,
            "spec": copy.deepcopy(spec), "status": status}


async def notify(_type: str, _reason: str, _message: str) -> None:
    return None


def pending(api: FakeApi) -> dict[str, Any]:
    return next((c for c in api.cr["status"]["conditions"] if c["type"] == "OperatorUpgradePending"), {})


async def upgraded_api(spec: dict[str, Any]) -> FakeApi:
    """A resource at generation 2 that an earlier release had reconciled (Ready), its Deployment as
    that release applied it."""
    status = {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True", "reason": "Ready"}]}
    api = FakeApi(resource(spec, 2, status))
    api.objects[("Deployment", "chat-primary")] = earlier_release(rendered(spec))
    return api


async def test_reconcile_keeps_the_running_template_and_says_an_upgrade_is_pending() -> None:
    api = await upgraded_api(SPEC)
    before = copy.deepcopy(api.objects[("Deployment", "chat-primary")]["spec"]["template"])
    await reconcile(api.cr, api, notify)  # type: ignore[arg-type]
    after = api.objects[("Deployment", "chat-primary")]
    assert after["spec"]["template"] == before and DROPPED_ENV not in env_names(after)
    assert api.cr["status"]["variants"][0]["specHash"] == intent()  # recorded for the next reconcile
    assert after["metadata"].get("annotations", {}).keys() == {LAST_APPLIED}  # no Deployment write for it
    cond = pending(api)
    assert (cond["status"], cond["reason"]) == ("True", "TemplateHeld") and "primary" in cond["message"]
    assert api.cr["status"]["conditions"][0]["status"] == "True"  # still Ready: the pods serve as before

    await reconcile(api.cr, api, notify)  # type: ignore[arg-type]  # a resync: still held
    assert api.objects[("Deployment", "chat-primary")]["spec"]["template"] == before

    changed = {**SPEC, "rateLimit": {"requestsPerMinute": 600, "burst": 60}}
    api.cr = resource(changed, 3, api.cr["status"])  # the next spec change rolls everything
    await reconcile(api.cr, api, notify)  # type: ignore[arg-type]
    names = env_names(api.objects[("Deployment", "chat-primary")])
    assert DROPPED_ENV in names and "DEEPSEEK_RATE_LIMIT_RPM" in names
    assert (pending(api)["status"], pending(api)["reason"]) == ("False", "UpToDate")


async def test_reconcile_rolling_applies_the_new_template() -> None:
    spec = {**SPEC, "rollout": {"operatorUpgrades": "Rolling"}}
    api = await upgraded_api(spec)
    await reconcile(api.cr, api, notify)  # type: ignore[arg-type]
    assert DROPPED_ENV in env_names(api.objects[("Deployment", "chat-primary")])
    assert pending(api) == {}  # never pending: no condition at all
    assert json.loads(api.objects[("Deployment", "chat-primary")]["metadata"]["annotations"][LAST_APPLIED])


WITH_CANARY = {**SPEC, "variants": [{"name": "canary", "weight": 10, "replicas": 1}]}


async def test_reconcile_rolling_upgrades_one_variant_at_a_time() -> None:
    spec = {**WITH_CANARY, "rollout": {"operatorUpgrades": "Rolling"}}
    api = await upgraded_api(spec)
    api.objects[("Deployment", "chat-canary")] = earlier_release(deployment_of(spec, "chat-canary"))
    await reconcile(api.cr, api, notify)  # type: ignore[arg-type]
    assert DROPPED_ENV in env_names(api.objects[("Deployment", "chat-primary")])
    assert DROPPED_ENV not in env_names(api.objects[("Deployment", "chat-canary")])
    cond = pending(api)
    assert cond["status"] == "True" and cond["message"].startswith("canary:"), cond

    primary = api.objects[("Deployment", "chat-primary")]
    primary["status"] = {**primary["status"], "updatedReplicas": 0}  # the primary's pods still roll
    await reconcile(api.cr, api, notify)  # type: ignore[arg-type]
    assert DROPPED_ENV not in env_names(api.objects[("Deployment", "chat-canary")])

    primary["status"] = {**primary["status"], "updatedReplicas": 1}  # done: the canary's turn
    await reconcile(api.cr, api, notify)  # type: ignore[arg-type]
    assert DROPPED_ENV in env_names(api.objects[("Deployment", "chat-canary")])
    assert (pending(api)["status"], pending(api)["reason"]) == ("False", "UpToDate")


async def test_reconcile_on_next_change_holds_every_variant() -> None:
    api = await upgraded_api(WITH_CANARY)
    api.objects[("Deployment", "chat-canary")] = earlier_release(deployment_of(WITH_CANARY, "chat-canary"))
    await reconcile(api.cr, api, notify)  # type: ignore[arg-type]
    for name in ("chat-primary", "chat-canary"):
        assert DROPPED_ENV not in env_names(api.objects[("Deployment", name)]), name
    assert pending(api)["message"].startswith("primary, canary:")


def deployment_of(spec: dict[str, Any], name: str) -> dict[str, Any]:
    owner = Owner("chat", "default", "u1", 2, "7")
    return next(c for c in render_workload(owner, parse_spec(spec))
                if c["kind"] == "Deployment" and c["metadata"]["name"] == name)
