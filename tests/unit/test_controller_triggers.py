"""Controller triggers: which cache changes enqueue which resources, and leadership's part."""

from __future__ import annotations

import asyncio
from typing import Any

from deepseek_operator.k8s import KINDS
from deepseek_operator.leadership import PEERING, Leadership
from deepseek_operator.render.common import LABEL_DEPLOYMENT
from tests.unit.controllers import build

DEPLOYMENT = KINDS[("apps/v1", "Deployment")]
INGRESS_CLASS = KINDS[("networking.k8s.io/v1", "IngressClass")]


def child(namespace: str, owner: str) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": f"{owner}-primary", "labels": {LABEL_DEPLOYMENT: owner}}}


async def queued(controller: Any) -> list[tuple[str, str]]:
    """The keys waiting in the queue (taken out of it), sorted."""
    return sorted([await asyncio.wait_for(controller.queue.get(), 5) for _ in range(len(controller.queue))])


class Api:
    async def get(self, *_: Any) -> None:
        raise AssertionError("a paused replica reads nothing")


def known(*keys: tuple[str, str]) -> Any:
    controller = build(Api())
    for key in keys:
        controller.known[key] = {"metadata": {"namespace": key[0], "name": key[1]}}
    return controller


async def test_a_child_change_enqueues_its_known_owner_only() -> None:
    controller = known(("default", "chat"), ("team", "chat"))
    controller.cache_changed(DEPLOYMENT, child("default", "chat"))
    controller.cache_changed(DEPLOYMENT, child("default", "unknown"))  # not listed by kopf: not ours to handle
    controller.cache_changed(DEPLOYMENT, {"metadata": {"namespace": "default", "name": "x"}})  # no owner label
    assert await queued(controller) == [("default", "chat")]


async def test_an_optional_api_change_enqueues_every_known_resource() -> None:
    controller = known(("default", "chat"), ("team", "chat"))
    controller.cache_changed(INGRESS_CLASS, {"metadata": {"name": "nginx"}})
    assert await queued(controller) == [("default", "chat"), ("team", "chat")]


class Standing(Leadership):
    """A Leadership whose answer the test sets."""

    leading: bool = False

    def active(self, namespace: str) -> bool:
        return self.leading


async def test_a_paused_replica_skips_and_catches_up_when_it_takes_the_lead() -> None:
    controller = known(("default", "chat"))
    standing = controller.leadership = Standing(name="p", priority=1, identity="me")
    await controller.process(("default", "chat"))  # paused: no read, nothing recorded
    controller.reconciled[("default", "chat")] = 1
    controller.cache_changed(PEERING, {"metadata": {"namespace": "default", "name": "p"}})
    assert controller.reconciled == {} and await queued(controller) == []  # paused: forgets what it reconciled
    standing.leading = True
    controller.cache_changed(PEERING, {"metadata": {"namespace": "default", "name": "p"}})
    assert await queued(controller) == [("default", "chat")]  # took the lead: reconciles its resources anew
