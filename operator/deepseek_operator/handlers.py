"""Thin kopf handlers: each hands kopf's event to the Controller kopf keeps in `memo` (controller.py).

The Controller is created by main.configure() at startup; kopf gives every handler a copy of the
operator's memo, and the copies share the one Controller.

No kopf change handlers (on.create/update/resume): they make kopf write its diff-base annotation on
every change of the resource's essence, labels and annotations included, so a label-only edit cost a
write. Generation-gated events (Controller.watch_event) cost nothing for metadata-only edits and for
our own status writes.

No handler here may make kopf put its finalizer on a DeepSeekDeployment (no @kopf.timer, @kopf.daemon
or mandatory @kopf.on.delete): children go with their owner through ownerReference garbage collection,
and a finalizer would make `kubectl delete` (and CRD or namespace deletion) hang while the operator is
down. That is why the resync is one loop of the Controller, not a per-resource timer.
tests/unit/test_resync.py enforces this through kopf's own registry.
"""

from __future__ import annotations

from typing import Any, cast

import kopf

from deepseek_operator.api import GROUP, PLURAL, VERSION
from deepseek_operator.controller import Controller

MEMO_KEY = "controller"


def controller_of(memo: kopf.Memo) -> Controller:
    """The Controller main.configure() put in kopf's memo."""
    controller = memo.get(MEMO_KEY)
    if not isinstance(controller, Controller):
        raise RuntimeError(f"no Controller in kopf's memo (main.configure() puts it there): {controller!r}")
    return controller


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_resource_event(type: str | None, event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo,
                            **_: Any) -> None:
    """Every watch event of a DeepSeekDeployment (the initial listing has type None) goes to the Controller.

    Called inside kopf's per-object task: the Controller captures kopf's Event queue from here.
    """
    controller = controller_of(memo)
    controller.events.capture()
    controller.watch_event(type, cast(dict[str, Any], event["object"]), body)
