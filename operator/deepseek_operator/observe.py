"""Pure readings of observed children: one variant's rollout state from its Deployment and pods.

A variant is in exactly one phase:
- Available: the Deployment has seen its spec, every replica runs the current template and is ready.
- RollingOut: the current template is still being rolled out (including a first creation).
- Unavailable: the rollout completed earlier but replicas are not ready now.
- Failed: the rollout cannot finish; `fatal` failures are acted on at once (rollback), the others
  (InsufficientGPU, NoMatchingNode, Unschedulable; FailedCreate, when the apiserver refuses the pods: a
  missing PriorityClass, a quota, a Pod Security violation) only when the Deployment's progress
  deadline passes, since a GPU node may yet be added by the cluster autoscaler and quota may yet be freed.
  A `config` failure is the pod's configuration or volumes, not the image: it is reported at once,
  never rolled back (the old image would meet the same missing Secret or stuck volume), and wins over
  the progress deadline, which would otherwise roll back; the kubelet retries by itself once the cause
  is fixed. ContainerConfigError (a missing Secret, ConfigMap or key) is Degraded at once;
  VolumeMountFailed and VolumeAttachFailed (the pod's FailedMount / FailedAttachVolume events, the only
  word on a pod stuck in ContainerCreating; a mount can fail once and then succeed) only at the deadline.

Reasons (docs/rollouts.md): InsufficientGPU (the scheduler found no node with enough free GPUs),
NoMatchingNode (node selector, affinity or taints exclude every node), Unschedulable (any other
scheduler refusal), ImagePullFailed, CrashLoop, OOMKilled, OOMAtLoad, UnsupportedCheckpoint, ModelLoadFailed,
ContainerConfigError, VolumeMountFailed, VolumeAttachFailed, ProgressDeadlineExceeded.
Each message carries the kubelet's or scheduler's own words and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

Phase = Literal["Available", "RollingOut", "Unavailable", "Failed"]

# Exit code and termination message prefix of a worker that could not load its model
# (docs/worker-api.md); the kubelet copies the message into the container's terminated state.
MODEL_LOAD_EXIT_CODE = 3
MODEL_LOAD_PREFIX = "model load failed"
# A CUDA out-of-memory while loading: its own exit code and prefix (worker lifecycle.py).
OOM_AT_LOAD_EXIT_CODE = 4
OOM_AT_LOAD_PREFIX = "out of GPU memory while loading the model"
# A checkpoint the builtin worker refuses before loading (worker engine/checkpoint.py: FP8): the exception's
# class name follows the model-load prefix, and is our reason.
UNSUPPORTED_CHECKPOINT = f"{MODEL_LOAD_PREFIX}: UnsupportedCheckpoint:"
# The scheduler's words (kube-scheduler's fit and taint plugins; the sandbox says the same).
_INSUFFICIENT_GPU = re.compile(r"Insufficient [^\s,]*gpu")
_NO_MATCHING_NODE = ("didn't match Pod's node affinity/selector", "untolerated taint", "didn't match pod affinity")
IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
# The kubelet could not build the container's config: a Secret, ConfigMap or key it references is
# missing (an HF token's tokenSecretRef), or runAsNonRoot meets an image that runs as root.
CONFIG_ERROR = "CreateContainerConfigError"
# A pod's volume Warning events (cache.py watches exactly these) -> our reason.
VOLUME_EVENTS = {"FailedMount": "VolumeMountFailed", "FailedAttachVolume": "VolumeAttachFailed"}
VOLUME_FIX = ("check the volume it names (a Secret or ConfigMap it mounts, the claim of model.cache or "
              "model.source.pvc, its StorageClass and CSI driver); the kubelet retries by itself")
MULTI_ATTACH_FIX = ("a ReadWriteOnce claim is attached to another node: give the cache a ReadWriteMany claim "
                    "(model.cache.accessModes), or keep the pods on one node")
NOT_ROLLED_BACK = "Not rolled back: the previous image would meet the same volume"


@dataclass(frozen=True)
class PodIssue:
    """Why a pod of the current template is not serving. `fatal`: it will not get better by waiting."""

    reason: str
    message: str
    fatal: bool
    config: bool = False  # the pod's configuration, not the image: never rolled back (module docstring)


@dataclass(frozen=True)
class VariantObservation:
    """What the reconcile read for one variant. `image` is the image it rendered for it."""

    name: str
    image: str
    replicas: int
    deployment: dict[str, Any] | None
    pods: list[dict[str, Any]] = field(default_factory=list)
    fit_note: str = ""  # the GPU-fit plan's figures, put beside an OOMAtLoad (gpufit.py)
    events: list[dict[str, Any]] = field(default_factory=list)  # the namespace's pod volume warnings


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
    config: bool = False  # see PodIssue.config


def pod_issue(pod: dict[str, Any], image: str, events: list[dict[str, Any]] | None = None) -> PodIssue | None:
    """The first reason a pod running `image` is not ready, or None (pods of older images are ignored).
    `events`: volume Warning events (any pods'), read while none of this pod's containers has started."""
    containers = pod.get("spec", {}).get("containers", [])
    if not any(c.get("image") == image for c in containers):
        return None
    status = pod.get("status", {})
    for cond in status.get("conditions", []):
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return _unscheduled(cond.get("reason") or "Unschedulable", cond.get("message", ""))
    # Init containers first: while one waits, the main containers only say PodInitializing.
    for cs in [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]:
        issue = _container_issue(cs)
        if issue is not None:
            return issue
    return None if _started(pod) else _volume_issue(pod, events or [])


def _started(pod: dict[str, Any]) -> bool:
    """A container of the pod, an init container included, ran (its volumes were mounted): older
    volume events are history."""
    status = pod.get("status", {})
    statuses = [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]
    return any({"running", "terminated"} & (cs.get("state") or {}).keys() or "terminated" in (cs.get("lastState") or {})
               for cs in statuses)


def _volume_issue(pod: dict[str, Any], events: list[dict[str, Any]]) -> PodIssue | None:
    """The newest FailedMount / FailedAttachVolume event about this pod, with the event's own words."""
    meta = pod.get("metadata", {})
    mine = [e for e in events if e.get("reason") in VOLUME_EVENTS and _about(e.get("involvedObject") or {}, meta)]
    if not mine:
        return None
    event = max(mine, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    message = (event.get("message") or event["reason"]).strip()
    fix = MULTI_ATTACH_FIX if "Multi-Attach" in message else VOLUME_FIX
    return PodIssue(VOLUME_EVENTS[event["reason"]], f"{message}; {fix}. {NOT_ROLLED_BACK}", fatal=False,
                    config=True)


def _about(ref: dict[str, Any], meta: dict[str, Any]) -> bool:
    """The event names this pod (by uid when both have one: a re-created pod reuses no uid)."""
    if ref.get("kind") != "Pod" or ref.get("name") != meta.get("name"):
        return False
    return not (ref.get("uid") and meta.get("uid")) or ref["uid"] == meta["uid"]


def _unscheduled(reason: str, message: str) -> PodIssue:
    """Why the scheduler placed no pod, and the fix. Only the part before "preemption:" is the verdict
    on the nodes; a node short of GPUs wins over others the selector excluded (more GPUs would help)."""
    verdict = message.split("preemption:", 1)[0]
    if reason == "Unschedulable" and _INSUFFICIENT_GPU.search(verdict):
        return PodIssue("InsufficientGPU", f"no node has enough free GPUs for the pod ({message.strip()}); free "
                        "GPUs or add a GPU node (a cluster autoscaler may), or lower resources.gpus", fatal=False)
    if reason == "Unschedulable" and any(words in verdict for words in _NO_MATCHING_NODE):
        return PodIssue("NoMatchingNode", f"no node matches the pod's scheduling constraints ({message.strip()}); "
                        "fix spec.scheduling (nodeSelector, affinity, tolerations) or label or untaint a GPU node",
                        fatal=False)
    return PodIssue(reason, message, fatal=False)


def _container_issue(cs: dict[str, Any]) -> PodIssue | None:
    for terminated in (cs.get("state", {}).get("terminated"), cs.get("lastState", {}).get("terminated")):
        if not terminated:
            continue
        message = (terminated.get("message", "") or "").strip()
        if terminated.get("exitCode") == OOM_AT_LOAD_EXIT_CODE or message.startswith(OOM_AT_LOAD_PREFIX):
            return PodIssue("OOMAtLoad", f"{message or OOM_AT_LOAD_PREFIX}; use another quantization, more GPUs, a "
                            "smaller model.maxModelLen or serving.maxBatchSize (status.gpuFit)", True)
        if message.startswith(UNSUPPORTED_CHECKPOINT):
            return PodIssue("UnsupportedCheckpoint", message, True)
        if terminated.get("exitCode") == MODEL_LOAD_EXIT_CODE or message.startswith(MODEL_LOAD_PREFIX):
            return PodIssue("ModelLoadFailed", f"{message or 'the worker could not load the model'}; check "
                            "spec.model.id, revision and source (a token for gated models)", True)
        if terminated.get("reason") == "OOMKilled":
            return PodIssue("OOMKilled", f"container {cs.get('name')} was OOM-killed; raise resources.memory", True)
    waiting = cs.get("state", {}).get("waiting") or {}
    reason = waiting.get("reason", "")
    if reason in IMAGE_PULL_REASONS:
        return PodIssue("ImagePullFailed", f"{waiting.get('message', reason)}; check the image name and tag, and "
                        "that the nodes can pull from its registry", True)
    if reason == CONFIG_ERROR:
        return PodIssue("ContainerConfigError", f"container {cs.get('name')}: {waiting.get('message', reason)}; "
                        "create the Secret or ConfigMap (and key) the spec references, e.g. "
                        "model.source.huggingFace.tokenSecretRef, or fix the reference: the kubelet retries by "
                        "itself. Not rolled back: the previous image would meet the same configuration",
                        fatal=True, config=True)
    if reason == "CrashLoopBackOff":
        detail = waiting.get("message", "") or f"restarted {cs.get('restartCount', 0)} times"
        return PodIssue("CrashLoop", f"{detail}; the worker keeps exiting: see `kubectl logs --previous` of the pod",
                        True)
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

    def make(phase: Phase, reason: str, message: str, fatal: bool = False, config: bool = False) -> VariantState:
        return VariantState(obs.name, phase, obs.image, replicas, obs.replicas, ready, updated,
                            reason, message, fatal, config)

    summary = f"{obs.name}: {ready}/{obs.replicas} ready, {updated}/{obs.replicas} updated"
    progressing = _condition(dep, "Progressing")
    issue = next((i for i in (pod_issue(p, obs.image, obs.events) for p in obs.pods) if i is not None), None)
    overdue = current and progressing.get("reason") == "ProgressDeadlineExceeded"
    if issue is not None and issue.config:  # before the deadline's verdict, which would roll back
        return make("Failed", issue.reason, f"{obs.name}: {issue.message}", fatal=issue.fatal or overdue,
                    config=True)
    if overdue:
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
    if issue is not None:
        note = f"; GPU-fit plan: {obs.fit_note}" if issue.reason == "OOMAtLoad" and obs.fit_note else ""
        return make("Failed", issue.reason, f"{obs.name}: {issue.message}{note}", fatal=issue.fatal)
    settled = current and updated == obs.replicas and replicas <= obs.replicas
    if settled and progressing.get("reason") == "NewReplicaSetAvailable":
        return make("Unavailable", "ReplicasUnavailable", summary)
    return make("RollingOut", "RollingOut", summary)
