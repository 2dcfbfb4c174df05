"""Issue 18 item 7: a pod the kubelet cannot configure (a missing HF-token Secret or key) is reported
at once with the kubelet's message, as a reason of its own, and never rolled back.

The pod statuses are the kubelet's own shapes (kubelet kuberuntime_container.go: waiting reason
`CreateContainerConfigError`, message `secret "..." not found` / `couldn't find key ... in Secret
...`); kwok, which plays the kubelet on the real control plane, builds no container config and so
never produces them (docs/rollouts.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from deepseek_operator import rollback
from deepseek_operator.api import parse_spec
from deepseek_operator.observe import VariantObservation, VariantState, pod_issue, variant_state
from deepseek_operator.status import Rollback, StatusInput, compute_status

IMG = "reg/worker:2"
NO_SECRET = 'secret "hf-token" not found'
NO_KEY = "couldn't find key token in Secret default/hf-token"


def config_error(message: str, init: bool = False) -> dict[str, Any]:
    """A pod whose (init) container the kubelet could not create, as `kubectl get pod -o json` shows it."""
    waiting = {"name": "worker", "ready": False, "restartCount": 0, "image": IMG,
               "state": {"waiting": {"reason": "CreateContainerConfigError", "message": message}}}
    statuses = {"initContainerStatuses": [{**waiting, "name": "fetch"}],
                "containerStatuses": [{"name": "worker", "ready": False, "restartCount": 0, "image": IMG,
                                       "state": {"waiting": {"reason": "PodInitializing"}}}]} if init else {
                "containerStatuses": [waiting]}
    return {"metadata": {"name": "chat-primary-abc"}, "spec": {"containers": [{"name": "worker", "image": IMG}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}], **statuses}}


def deployment(progressing: str) -> dict[str, Any]:
    return {"metadata": {"generation": 2}, "status": {
        "observedGeneration": 2, "replicas": 2, "readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1,
        "conditions": [{"type": "Progressing", "status": "False" if progressing == "ProgressDeadlineExceeded"
                        else "True", "reason": progressing, "message": 'ReplicaSet "x" has timed out progressing.'}]}}


@pytest.mark.parametrize(("message", "init"), [(NO_SECRET, False), (NO_KEY, False), (NO_SECRET, True)],
                         ids=["missing secret", "missing key", "init container"])
def test_the_kubelets_config_error_is_a_reason_of_its_own_with_its_message(message: str, init: bool) -> None:
    issue = pod_issue(config_error(message, init), IMG)
    assert issue is not None and issue.reason == "ContainerConfigError"
    assert message in issue.message and "tokenSecretRef" in issue.message
    assert issue.fatal and issue.config  # Degraded at once, and never rolled back


@pytest.mark.parametrize("progressing", ["ReplicaSetUpdated", "ProgressDeadlineExceeded"])
def test_it_is_reported_before_and_after_the_progress_deadline(progressing: str) -> None:
    """Before: RollingOut said nothing for 30 minutes. After the deadline: ProgressDeadlineExceeded
    rolled back, although the old image meets the same missing Secret."""
    state = variant_state(VariantObservation("primary", IMG, 2, deployment(progressing), [config_error(NO_KEY)]))
    assert (state.phase, state.reason, state.fatal, state.config) == ("Failed", "ContainerConfigError", True, True)
    assert NO_KEY in state.message


def test_a_config_error_is_not_rolled_back_but_degraded_with_the_kubelets_message() -> None:
    spec = parse_spec({"image": IMG, "model": {"id": "deepseek-ai/DeepSeek-R1"}})
    state = variant_state(VariantObservation("primary", IMG, 2, deployment("ReplicaSetUpdated"),
                                             [config_error(NO_SECRET)]))
    assert rollback.detect_failure(spec, Rollback(), state, "reg/worker:1") is None
    status = compute_status(StatusInput(generation=2, variants=[state], weights={"primary": 100}, selector="s",
                                        stable_image="reg/worker:1", rollback=Rollback(), auto_rollback=False),
                            {}, "2026-01-01T00:00:00Z")
    found = {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}
    for ctype, expected in (("Ready", "False"), ("Progressing", "False"), ("Degraded", "True")):
        assert found[ctype][:2] == (expected, "ContainerConfigError"), found[ctype]
        assert NO_SECRET in found[ctype][2]
    assert "autoRollback is off" not in found["Degraded"][2]  # no rollback could help: say that instead
    assert "Not rolled back" in found["Degraded"][2]
    assert status["failedImage"] == ""  # the image is not to blame: the next pipeline need not change it


def test_an_image_failure_still_rolls_back() -> None:
    spec = parse_spec({"image": IMG, "model": {"id": "deepseek-ai/DeepSeek-R1"}})
    crash = VariantState("primary", "Failed", IMG, 2, 2, 1, 1, "CrashLoop", "primary: x", fatal=True)
    assert rollback.detect_failure(spec, Rollback(), crash, "reg/worker:1") is not None
