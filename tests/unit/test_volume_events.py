"""Issue 18 item 7: a pod stuck in ContainerCreating on a volume (FailedMount, FailedAttachVolume /
Multi-Attach) is reported with the event's own words, as a reason of its own, and never rolled back.

The events are the kubelet's and the attach/detach controller's own shapes (core/v1 Event); the
cache watches exactly these two reasons, and an event counts as a change of its pod (its owner's
reconcile runs, from the cache: no API request).
"""

from __future__ import annotations

from typing import Any

import pytest

from deepseek_operator import rollback
from deepseek_operator.api import parse_spec
from deepseek_operator.cache import EVENT, POD, POD_EVENT_REASONS, CachedK8s
from deepseek_operator.informer import Informer
from deepseek_operator.k8s import ApiError
from deepseek_operator.observe import VariantObservation, pod_issue, variant_state
from deepseek_operator.status import Rollback

IMG = "reg/worker:2"
MOUNT = ('MountVolume.SetUp failed for volume "model-cache" : rpc error: code = Internal desc = '
         'mount failed: exit status 32')
MULTI = ('Multi-Attach error for volume "pvc-3f2a" Volume is already used by pod(s) chat-primary-old-x')


def creating(name: str = "chat-primary-abc", uid: str = "u-1") -> dict[str, Any]:
    """A pod the kubelet is still creating: scheduled, its container waiting ContainerCreating."""
    return {"metadata": {"name": name, "namespace": "default", "uid": uid},
            "spec": {"containers": [{"name": "worker", "image": IMG}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
                       "containerStatuses": [{"name": "worker", "ready": False, "restartCount": 0,
                                              "state": {"waiting": {"reason": "ContainerCreating"}}}]}}


def event(reason: str, message: str, pod: str = "chat-primary-abc", uid: str = "u-1",
          last: str = "2026-12-04T20:00:00Z", rv: int = 10) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Event", "type": "Warning", "reason": reason, "message": message,
            "metadata": {"name": f"{pod}.{reason}.{rv}", "namespace": "default", "resourceVersion": str(rv)},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": pod, "uid": uid},
            "source": {"component": "kubelet"}, "count": 3, "lastTimestamp": last}


def deployment(progressing: str) -> dict[str, Any]:
    return {"metadata": {"generation": 2}, "status": {
        "observedGeneration": 2, "replicas": 2, "readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1,
        "conditions": [{"type": "Progressing", "status": "True", "reason": progressing, "message": "m"}]}}


@pytest.mark.parametrize(("reason", "message", "ours", "fix"), [
    ("FailedMount", MOUNT, "VolumeMountFailed", "StorageClass"),
    ("FailedAttachVolume", MULTI, "VolumeAttachFailed", "ReadWriteMany"),
])
def test_a_volume_event_of_a_pod_being_created_is_its_reason(reason: str, message: str, ours: str, fix: str) -> None:
    issue = pod_issue(creating(), IMG, [event(reason, message)])
    assert issue is not None and issue.reason == ours and message in issue.message and fix in issue.message
    assert issue.config and not issue.fatal  # a mount may fail once and then succeed


def test_only_this_pods_recent_events_count_and_only_before_it_ran() -> None:
    assert pod_issue(creating(), IMG, [event("FailedMount", MOUNT, pod="other")]) is None
    assert pod_issue(creating(), IMG, [event("FailedMount", MOUNT, uid="u-old")]) is None  # a re-created pod
    running = creating()
    running["status"]["containerStatuses"][0]["state"] = {"running": {"startedAt": "2026-12-04T20:01:00Z"}}
    assert pod_issue(running, IMG, [event("FailedMount", MOUNT)]) is None  # mounted after all: history
    initializing = creating()
    initializing["status"]["initContainerStatuses"] = [{"name": "fetch", "state": {"running": {}}}]
    assert pod_issue(initializing, IMG, [event("FailedMount", MOUNT)]) is None  # an init container runs
    newest = pod_issue(creating(), IMG, [event("FailedMount", MOUNT, last="2026-12-04T20:00:00Z", rv=1),
                                         event("FailedAttachVolume", MULTI, last="2026-12-04T20:02:00Z", rv=2)])
    assert newest is not None and newest.reason == "VolumeAttachFailed"


def test_reported_while_rolling_out_degraded_at_the_deadline_and_never_rolled_back() -> None:
    pods, events = [creating()], [event("FailedMount", MOUNT)]
    early = variant_state(VariantObservation("primary", IMG, 2, deployment("ReplicaSetUpdated"), pods, "", events))
    assert (early.phase, early.reason, early.fatal) == ("Failed", "VolumeMountFailed", False)  # said at once
    late = variant_state(VariantObservation("primary", IMG, 2, deployment("ProgressDeadlineExceeded"), pods, "",
                                            events))
    assert (late.reason, late.fatal, late.config) == ("VolumeMountFailed", True, True)  # not the deadline's
    spec = parse_spec({"image": IMG, "model": {"id": "deepseek-ai/DeepSeek-R1"}})
    assert rollback.detect_failure(spec, Rollback(), late, "reg/worker:1") is None


def cached(namespaces: list[str] | None, changes: list[tuple[str, dict[str, Any]]]) -> CachedK8s:
    """A CachedK8s with synced, hand-fed pod and event informers (no API behind it)."""
    api = CachedK8s(None, namespaces, on_change=lambda kind, o: changes.append((kind.kind, o)))
    scope = namespaces[0] if namespaces else ""
    pods = Informer(api, POD, scope or None)
    pods.store.observe({**creating(), "metadata": {**creating()["metadata"], "resourceVersion": "1",
                                                   "labels": {"deepseek.ai/deployment": "chat"}}})
    api._informers[("pods", scope)] = pods
    for reason in POD_EVENT_REASONS:
        informer = Informer(api, EVENT, scope or None, field_selector=f"involvedObject.kind=Pod,reason={reason}")
        api._informers[(f"events/involvedObject.kind=Pod,reason={reason}", scope)] = informer
    for informer in api._informers.values():
        informer.synced.set()
    return api


async def test_the_cache_serves_the_events_and_an_event_wakes_its_pods_owner() -> None:
    changes: list[tuple[str, dict[str, Any]]] = []
    api = cached(["default"], changes)
    mount = event("FailedMount", MOUNT)
    api._informers[("events/involvedObject.kind=Pod,reason=FailedMount", "default")].store.observe(mount)
    assert [e["reason"] for e in await api.list(EVENT, "default", {})] == ["FailedMount"]
    api._changed(EVENT, mount)
    assert [(kind, o["metadata"]["name"]) for kind, o in changes] == [("Pod", "chat-primary-abc")]
    api._changed(EVENT, event("FailedMount", MOUNT, pod="not-ours"))
    assert len(changes) == 1  # a pod the operator does not cache: nobody to wake


async def test_unreadable_events_leave_the_reconcile_going() -> None:
    api = cached(["default"], [])
    for reason in POD_EVENT_REASONS:
        api._informers[(f"events/involvedObject.kind=Pod,reason={reason}", "default")].refused = \
            ApiError(403, 'events is forbidden: User "op" cannot list resource "events"')
    assert await api.list(EVENT, "default", {}) == []
