"""Pure readings of observed children: one variant's rollout state from its Deployment and pods.

A variant is in exactly one phase:
- Available: the Deployment has seen its spec, every replica runs the current template and is ready.
- RollingOut: the current template is still being rolled out (including a first creation).
- Unavailable: the rollout completed earlier but replicas are not ready now.
- Failed: the rollout cannot finish; `fatal` failures are acted on at once (rollback), the others
  (Unschedulable; FailedCreate, when the apiserver refuses the pods: a missing PriorityClass, a
  quota, a Pod Security violation) only when the Deployment's progress deadline passes, since a GPU
  node may yet be added by the cluster autoscaler and quota may yet be freed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Phase = Literal["Available", "RollingOut", "Unavailable", "Failed"]

# Exit code and termination message prefix of a worker that could not load its model
# (docs/worker-api.md); the kubelet copies the message into the container's terminated state.
MODEL_LOAD_EXIT_CODE = 3
MODEL_LOAD_PREFIX = "model load failed"
IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})


@dataclass(frozen=True)
class PodIssue:
    """Why a pod of the current template is not serving. `fatal`: it will not get better by waiting."""

    reason: str
    message: str
    fatal: bool


@dataclass(frozen=True)
class VariantObservation:
    """What the reconcile read for one variant. `image` is the image it rendered for it."""

    name: str
    image: str
    replicas: int
    deployment: dict[str, Any] | None
    pods: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class VariantState:
    name: str
    phase: Phase
    image: str
    replicas: int
    desired: int
    ready: int
    updated: int
    reason: str
    message: str
    fatal: bool = False


def pod_issue(pod: dict[str, Any], image: str) -> PodIssue | None:
    """The first reason a pod running `image` is not ready, or None (pods of older images are ignored)."""
    containers = pod.get("spec", {}).get("containers", [])
    if not any(c.get("image") == image for c in containers):
        return None
    status = pod.get("status", {})
    for cond in status.get("conditions", []):
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return PodIssue(cond.get("reason") or "Unschedulable", cond.get("message", ""), fatal=False)
    for cs in status.get("containerStatuses", []):
        issue = _container_issue(cs)
        if issue is not None:
            return issue
    return None


def _container_issue(cs: dict[str, Any]) -> PodIssue | None:
    for terminated in (cs.get("state", {}).get("terminated"), cs.get("lastState", {}).get("terminated")):
        if not terminated:
            continue
        message = terminated.get("message", "") or ""
        if terminated.get("exitCode") == MODEL_LOAD_EXIT_CODE or message.startswith(MODEL_LOAD_PREFIX):
            return PodIssue("ModelLoadFailed", message.strip() or "the worker could not load the model", True)
        if terminated.get("reason") == "OOMKilled":
            return PodIssue("OOMKilled", f"container {cs.get('name')} was OOM-killed; raise resources.memory", True)
    waiting = cs.get("state", {}).get("waiting") or {}
    reason = waiting.get("reason", "")
    if reason in IMAGE_PULL_REASONS:
        return PodIssue("ImagePullBackOff", waiting.get("message", reason), True)
    if reason == "CrashLoopBackOff":
        return PodIssue(reason, waiting.get("message", "") or f"restarted {cs.get('restartCount', 0)} times", True)
    return None


def _condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return {}


def variant_state(obs: VariantObservation) -> VariantState:
    """Classify one variant; see the module docstring for the phases."""
    dep = obs.deployment
    if dep is None:
        return VariantState(obs.name, "RollingOut", obs.image, 0, obs.replicas, 0, 0,
                            "RollingOut", f"{obs.name}: creating the Deployment")
    st = dep.get("status", {})
    replicas, ready = int(st.get("replicas", 0)), int(st.get("readyReplicas", 0))
    updated, available = int(st.get("updatedReplicas", 0)), int(st.get("availableReplicas", 0))
    current = int(st.get("observedGeneration", 0)) >= int(dep["metadata"].get("generation", 1))

    def make(phase: Phase, reason: str, message: str, fatal: bool = False) -> VariantState:
        return VariantState(obs.name, phase, obs.image, replicas, obs.replicas, ready, updated,
                            reason, message, fatal)

    summary = f"{obs.name}: {ready}/{obs.replicas} ready, {updated}/{obs.replicas} updated"
    progressing = _condition(dep, "Progressing")
    if current and progressing.get("reason") == "ProgressDeadlineExceeded":
        detail = progressing.get("message", "progress deadline exceeded")
        return make("Failed", "ProgressDeadlineExceeded", f"{obs.name}: {detail}", fatal=True)
    complete = current and updated == obs.replicas and replicas == obs.replicas and available >= obs.replicas
    if complete and ready >= obs.replicas:
        return make("Available", "Available", summary)
    refused = _condition(dep, "ReplicaFailure")
    if refused.get("status") == "True":
        # The ReplicaSet controller could not create pods; its message is the apiserver's refusal.
        return make("Failed", refused.get("reason") or "FailedCreate",
                    f"{obs.name}: {refused.get('message', 'pods could not be created')}")
    issue = next((i for i in (pod_issue(p, obs.image) for p in obs.pods) if i is not None), None)
    if issue is not None:
        return make("Failed", issue.reason, f"{obs.name}: {issue.message}", fatal=issue.fatal)
    settled = current and updated == obs.replicas and replicas <= obs.replicas
    if settled and progressing.get("reason") == "NewReplicaSetAvailable":
        return make("Unavailable", "ReplicasUnavailable", summary)
    return make("RollingOut", "RollingOut", summary)
