"""Table tests for observe.py (variant phases), status.py (conditions) and rollback.py (policy)."""

from __future__ import annotations

from typing import Any

import pytest

from deepseek_operator import rollback
from deepseek_operator.api import parse_spec
from deepseek_operator.observe import VariantObservation, VariantState, pod_issue, variant_state
from deepseek_operator.status import Rollback, StatusInput, compute_status, merge_conditions

IMG = "reg/worker:2"


def deployment(gen: int = 2, observed: int = 2, replicas: int = 2, ready: int = 2, updated: int = 2,
               available: int | None = None, progressing: str = "NewReplicaSetAvailable") -> dict[str, Any]:
    return {"metadata": {"generation": gen}, "status": {
        "observedGeneration": observed, "replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated,
        "availableReplicas": ready if available is None else available,
        "conditions": [{"type": "Progressing", "status": "True", "reason": progressing, "message": "m"}]}}


def pod(image: str = IMG, **status: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "worker", "image": image}]}, "status": status}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"containerStatuses": [{"name": "worker", "restartCount": 3,
                                   "state": {"waiting": {"reason": reason, "message": message}}}]}


PHASES = [
    ("no deployment yet", None, [], "RollingOut", "RollingOut", False),
    ("all ready", deployment(), [], "Available", "Available", False),
    ("controller has not seen the new generation", deployment(gen=3, observed=2), [], "RollingOut",
     "RollingOut", False),
    ("half updated", deployment(updated=1, ready=1, progressing="ReplicaSetUpdated"), [], "RollingOut",
     "RollingOut", False),
    ("old pods still terminating", deployment(replicas=3), [], "RollingOut", "RollingOut", False),
    ("deadline exceeded", deployment(updated=1, ready=1, progressing="ProgressDeadlineExceeded"), [], "Failed",
     "ProgressDeadlineExceeded", True),
    ("unready after rollout", deployment(ready=1, available=1), [], "Unavailable", "ReplicasUnavailable", False),
    ("image pull", deployment(ready=1, updated=1, progressing="ReplicaSetUpdated"),
     [pod(**waiting("ImagePullBackOff", "pull access denied"))], "Failed", "ImagePullFailed", True),
    ("crash loop", deployment(ready=1, updated=1, progressing="ReplicaSetUpdated"),
     [pod(**waiting("CrashLoopBackOff"))], "Failed", "CrashLoop", True),
    ("crash of an old image pod is ignored", deployment(ready=1, updated=1, progressing="ReplicaSetUpdated"),
     [pod(image="reg/worker:1", **waiting("CrashLoopBackOff"))], "RollingOut", "RollingOut", False),
    ("unschedulable waits for the deadline", deployment(ready=1, updated=1, progressing="ReplicaSetUpdated"),
     [pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                       "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}])],
     "Failed", "InsufficientGPU", False),
    ("pods refused by the apiserver wait for the deadline",
     {**deployment(ready=0, updated=0, replicas=0, progressing="ReplicaSetUpdated"),
      "status": {**deployment(ready=0, updated=0, replicas=0)["status"], "conditions": [
          {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
           "message": 'pods "chat-primary-x" is forbidden: no PriorityClass with name llm-serving was found'}]}},
     [], "Failed", "FailedCreate", False),
]


@pytest.mark.parametrize(("dep", "pods", "phase", "reason", "fatal"), [c[1:] for c in PHASES],
                         ids=[c[0] for c in PHASES])
def test_variant_phase(dep: dict[str, Any] | None, pods: list[dict[str, Any]], phase: str, reason: str,
                       fatal: bool) -> None:
    state = variant_state(VariantObservation("primary", IMG, 2, dep, pods))
    assert (state.phase, state.reason, state.fatal) == (phase, reason, fatal)


ISSUES = [
    ("oom killed", {"containerStatuses": [{"name": "worker", "lastState": {"terminated": {"reason": "OOMKilled"}},
                                           "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}, "OOMKilled"),
    ("model load failure by exit code", {"containerStatuses": [{"name": "worker", "lastState": {
        "terminated": {"exitCode": 3, "message": "model load failed: no such repo"}}}]}, "ModelLoadFailed"),
    ("err image pull", waiting("ErrImagePull"), "ImagePullFailed"),
    ("out of GPU memory at load by exit code", {"containerStatuses": [{"name": "worker", "lastState": {
        "terminated": {"exitCode": 4, "message": "out of GPU memory while loading the model: CUDA out of memory"}}}]},
     "OOMAtLoad"),
    ("out of GPU memory at load by message", {"containerStatuses": [{"name": "worker", "state": {
        "terminated": {"exitCode": 1, "message": "out of GPU memory while loading the model: x"}}}]}, "OOMAtLoad"),
    ("running and fine", {"containerStatuses": [{"name": "worker", "state": {"running": {}}}]}, None),
]


@pytest.mark.parametrize(("status", "reason"), [c[1:] for c in ISSUES], ids=[c[0] for c in ISSUES])
def test_pod_issue(status: dict[str, Any], reason: str | None) -> None:
    issue = pod_issue(pod(**status), IMG)
    assert (issue.reason if issue else None) == reason


def state(name: str = "primary", phase: str = "Available", ready: int = 2, desired: int = 2,
          reason: str = "Available", fatal: bool = False, image: str = IMG) -> VariantState:
    return VariantState(name, phase, image, desired, desired, ready, desired, reason, f"{name}: msg", fatal)  # type: ignore[arg-type]


NO_ROLLBACK = Rollback()


def status_of(states: list[VariantState], rb: Rollback = NO_ROLLBACK, stable: str = "reg/worker:1",
              old: dict[str, Any] | None = None) -> dict[str, Any]:
    inp = StatusInput(generation=4, variants=states, weights={"primary": 100}, selector="s", stable_image=stable,
                      rollback=rb, auto_rollback=True)
    return compute_status(inp, old or {}, "2026-01-01T00:00:00Z")


def conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


CONDITION_CASES = [
    ("all available", [state()], Rollback(), {
        "Ready": ("True", "Ready"), "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("False", "RolloutComplete"), "Degraded": ("False", "AsExpected")}),
    ("rolling out", [state(phase="RollingOut", ready=1, reason="RollingOut")], Rollback(), {
        "Ready": ("False", "RollingOut"), "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "RollingOut"), "Degraded": ("False", "AsExpected")}),
    ("first rollout, nothing ready", [state(phase="RollingOut", ready=0, reason="RollingOut")], Rollback(), {
        "Ready": ("False", "RollingOut"), "Available": ("False", "NoReadyReplicas"),
        "Progressing": ("True", "RollingOut"), "Degraded": ("False", "AsExpected")}),
    ("rolled back", [state(image="reg/worker:1")], Rollback("reg/worker:bad", True), {
        "Ready": ("False", "RolledBack"), "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("False", "RolloutComplete"), "Degraded": ("True", "RolledBack")}),
    ("failed without rollback", [state(phase="Failed", ready=1, reason="CrashLoop", fatal=True)],
     Rollback("reg/worker:2", False), {
        "Ready": ("False", "CrashLoop"), "Progressing": ("False", "CrashLoop"),
        "Available": ("True", "MinimumReplicasAvailable"), "Degraded": ("True", "CrashLoop")}),
    ("canary lost readiness", [state(), state("canary", "Unavailable", 0, 1, "ReplicasUnavailable")], Rollback(), {
        "Ready": ("False", "ReplicasUnavailable"), "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("False", "RolloutComplete"), "Degraded": ("True", "ReplicasUnavailable")}),
    ("scaled to zero", [state(ready=0, desired=0)], Rollback(), {
        "Ready": ("True", "Ready"), "Available": ("False", "ScaledToZero"),
        "Progressing": ("False", "RolloutComplete"), "Degraded": ("False", "AsExpected")}),
]


@pytest.mark.parametrize(("states", "rb", "expected"), [c[1:] for c in CONDITION_CASES],
                         ids=[c[0] for c in CONDITION_CASES])
def test_conditions(states: list[VariantState], rb: Rollback, expected: dict[str, tuple[str, str]]) -> None:
    status = status_of(states, rb)
    assert conds(status) == expected
    assert all(c["observedGeneration"] == 4 for c in status["conditions"])
    assert status["observedGeneration"] == 4


def test_image_moves_only_when_primary_fully_available() -> None:
    assert status_of([state()])["image"] == IMG
    assert status_of([state(phase="RollingOut", ready=1, reason="RollingOut")])["image"] == "reg/worker:1"


def test_success_clears_failed_image() -> None:
    cleared = status_of([state()], Rollback(IMG, False, "CrashLoop: x"))
    assert (cleared["failedImage"], cleared["failedReason"]) == ("", "")
    kept = status_of([state(image="reg/worker:1")], Rollback("reg/worker:bad", True, "ImagePullFailed: denied"))
    assert (kept["failedImage"], kept["failedReason"]) == ("reg/worker:bad", "ImagePullFailed: denied")
    degraded = next(c for c in kept["conditions"] if c["type"] == "Degraded")
    assert "ImagePullFailed: denied" in degraded["message"] and "reg/worker:bad" in degraded["message"]


def test_last_transition_time_kept_when_unchanged() -> None:
    old = [{"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]
    new = [{"type": "Ready", "status": "True", "reason": "Ready"}, {"type": "Degraded", "status": "False"}]
    merged = merge_conditions(new, old, "2026-01-01T00:00:00Z")
    assert merged[0]["lastTransitionTime"] == "2025-01-01T00:00:00Z"
    assert merged[1]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    flipped = merge_conditions([{"type": "Ready", "status": "False"}], old, "2026-01-01T00:00:00Z")
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"


def test_status_is_deterministic() -> None:
    assert status_of([state()]) == status_of([state()])


SPEC = {"image": IMG, "model": {"id": "m"}}


@pytest.mark.parametrize(("auto", "old", "expected"), [
    (True, {"image": "reg/worker:1", "failedImage": IMG, "failedReason": "OOMKilled: m"},
     Rollback(IMG, True, "OOMKilled: m")),
    (False, {"image": "reg/worker:1", "failedImage": IMG}, Rollback(IMG, False)),
    (True, {"image": "reg/worker:1", "failedImage": "reg/worker:other"}, Rollback()),
    (True, {"image": "", "failedImage": IMG}, Rollback(IMG, False)),
    (True, {}, Rollback()),
], ids=["rolled back", "auto off", "new image clears", "nothing to go back to", "fresh"])
def test_rollback_plan(auto: bool, old: dict[str, Any], expected: Rollback) -> None:
    spec = parse_spec({**SPEC, "rollout": {"autoRollback": auto}})
    assert rollback.plan(spec, old) == expected


def test_rollback_detects_fatal_failure_of_new_image_once() -> None:
    spec = parse_spec(SPEC)
    failed = state(phase="Failed", reason="CrashLoop", fatal=True)
    assert rollback.detect_failure(spec, Rollback(), failed, "reg/worker:1") == \
        Rollback(IMG, True, "CrashLoop: primary: msg")
    assert rollback.detect_failure(spec, Rollback(IMG, True), failed, "reg/worker:1") is None
    assert rollback.detect_failure(spec, Rollback(), state(phase="Failed", reason="InsufficientGPU"),
                                   "reg/worker:1") is None
    assert rollback.detect_failure(spec, Rollback(), failed, IMG) is None
    assert rollback.primary_image(spec, Rollback(IMG, True), "reg/worker:1") == "reg/worker:1"
    assert rollback.primary_image(spec, Rollback(), "reg/worker:1") == IMG
