"""Pure: observed variant states -> the DeepSeekDeployment status (KServe-style condition set).

Conditions (standard metav1.Condition shape; lastTransitionTime kept while status is unchanged):
- Ready: True only when the CR's current generation is fully rolled out: every variant available
  on the images the spec asks for. So `kubectl wait --for=condition=Ready` after an apply or patch
  never returns early, and never returns for an image that was rolled back.
- Available: the primary has at least one ready replica (the service answers).
- Progressing: True while a rollout is under way; False with RolloutComplete or the failure reason.
- Degraded: True when a rollout failed (reason RolledBack when the old image was put back) or a
  variant lost its ready replicas after rolling out.
Integration conditions (IngressReady, MonitoringReady) say what optional API is missing; they do not
gate Ready, since the workers serve through their Services regardless.
GPUFitAccurate (only once a worker reported its measurements; measured.py) says whether they are
within 10% of the GPU-fit plan; it does not gate Ready either.
OperatorUpgradePending (upgrade.py) is True while a variant keeps the pod template of an earlier
operator release (rollout.operatorUpgrades OnNextChange); once it was shown it stays, False, when none
is held back any more. It does not gate Ready: the pods serve as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from deepseek_operator.api import (
    AutoscalingStatus,
    Condition,
    DeepSeekDeploymentStatus,
    DownloadStatus,
    GpuFitStatus,
    VariantStatus,
)
from deepseek_operator.measured import condition_of as measured_condition
from deepseek_operator.observe import VariantState
from deepseek_operator.resource.status import ColdStartStatus, GatewayStatus

CONDITION_TYPES = ("Ready", "Available", "Progressing", "Degraded")


@dataclass(frozen=True)
class Rollback:
    """The rollout-failure memory kept in status: what failed and whether the old image is back."""

    failed_image: str = ""
    rolled_back: bool = False
    reason: str = ""  # "<Reason>: <message>" of the failure, for the conditions' messages


@dataclass(frozen=True)
class StatusInput:
    generation: int
    variants: list[VariantState]  # the primary first
    weights: dict[str, int]
    selector: str
    stable_image: str  # status.image before this reconcile
    rollback: Rollback
    auto_rollback: bool
    url: str = ""
    integrations: list[tuple[str, bool, str, str]] = field(default_factory=list)  # (type, ok, reason, message)
    # Per variant: (strategy, template hash, downtime note); see strategy.py.
    strategies: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    # Per variant: status.gpuFit of its plan (gpufit.status_of); the primary's is also status.gpuFit.
    gpu_fit: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per cached variant: status.download of its model cache (download.py); the primary's is status.download.
    downloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per variant that reported: gpuFit.measured (measured.compare), beside that variant's plan.
    measured: dict[str, dict[str, Any]] = field(default_factory=dict)
    # OperatorUpgradePending's message while a variant's new pod template is held back; "" when none is.
    upgrade_pending: str = ""
    # Per variant: the intent its pod template was last applied for (upgrade.py), status.variants[].specHash.
    intents: dict[str, str] = field(default_factory=dict)
    # Per autoscaled variant: status.variants[].autoscaling (render/autoscaling.autoscaling_status).
    autoscaling: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The request gateway's report (measured.read_gateway_report): status.gateway, and per variant
    # with a measured cold start, status.variants[].coldStart.
    gateway: dict[str, Any] = field(default_factory=dict)
    cold_starts: dict[str, dict[str, Any]] = field(default_factory=dict)


def condition(ctype: str, ok: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    """A condition without lastTransitionTime (merge_conditions() adds it)."""
    return {
        "type": ctype,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def merge_conditions(new: list[dict[str, Any]], old: list[dict[str, Any]], now: str) -> list[dict[str, Any]]:
    """Stamp lastTransitionTime: kept from `old` when the status did not change, else `now`."""
    previous = {c.get("type"): c for c in old}
    merged = []
    for cond in new:
        prior = previous.get(cond["type"])
        same = prior is not None and prior.get("status") == cond["status"]
        stamp = prior.get("lastTransitionTime", now) if same and prior is not None else now
        merged.append({**cond, "lastTransitionTime": stamp})
    return merged


_FORBIDDEN = re.compile(r'cannot (?P<verb>\w+) resource "(?P<resource>[^"]+)" in API group "(?P<group>[^"]*)"'
                        r'(?: in the namespace "(?P<namespace>[^"]+)")?')


def forbidden_message(apiserver_message: str) -> str:
    """What the operator may not do, from a 403's message: verb, resource and where, then the fix."""
    m = _FORBIDDEN.search(apiserver_message)
    if m is None:
        return f"the API refused the operator (403): {apiserver_message}; check its RBAC (docs/install.md)"
    resource = m["resource"] + (f".{m['group']}" if m["group"] else "")
    where = f" in namespace {m['namespace']}" if m["namespace"] else " (cluster scope)"
    return (f"the operator may not {m['verb']} {resource}{where}: grant it in the operator's "
            f"ClusterRole/Role (docs/install.md); the reconcile retries with backoff")


def forbidden_conditions(message: str, generation: int) -> list[dict[str, Any]]:
    """Ready=False Forbidden: a missing RBAC rule stops the reconcile until it is granted. Progressing
    says ApplyFailed: whatever a previous reconcile reported (RolloutComplete, RollingOut), this
    generation's children were not (all) applied, so no progress is claimed."""
    return [condition("Ready", False, "Forbidden", message, generation),
            condition("Progressing", False, "ApplyFailed", f"the spec was not applied: {message}", generation)]


def apply_failed_conditions(message: str, generation: int) -> list[dict[str, Any]]:
    """Progressing=False ApplyFailed: an API error (5xx, a timeout, an admission webhook down) stopped
    the apply of this generation; Ready is left as it was (the pods of the last applied spec serve)."""
    return [condition("Progressing", False, "ApplyFailed", f"the spec was not applied: {message}", generation)]


def child_rejected_conditions(message: str, generation: int) -> list[dict[str, Any]]:
    """The apiserver refused (422) a child rendered from the spec: permanent until the spec changes."""
    return [
        condition("Ready", False, "ChildRejected", message, generation),
        condition("Progressing", False, "ChildRejected", message, generation),
        condition("Degraded", True, "ChildRejected", message, generation),
    ]


def invalid_spec_conditions(message: str, generation: int) -> list[dict[str, Any]]:
    """Conditions of a spec the operator cannot act on; the children stay as they were."""
    return [
        condition("Ready", False, "InvalidSpec", message, generation),
        condition("Progressing", False, "InvalidSpec", message, generation),
        condition("Degraded", True, "InvalidSpec", message, generation),
    ]


def insufficient_memory_conditions(message: str, generation: int,
                                   reason: str = "InsufficientGPUMemory") -> list[dict[str, Any]]:
    """A GPU-fit plan that does not fit: nothing is rolled out (no pod would ever load), children stay.
    `reason`: the plan's (gpufit.GpuFit.reason): InsufficientGPUMemory or UnsupportedCheckpoint."""
    return [
        condition("Ready", False, reason, message, generation),
        condition("Progressing", False, reason, message, generation),
        condition("Degraded", True, reason, message, generation),
    ]


def _ready(inp: StatusInput) -> tuple[bool, str, str]:
    primary = inp.variants[0]
    if inp.rollback.rolled_back:
        return False, "RolledBack", (f"rollout of {inp.rollback.failed_image} failed "
                                     f"({inp.rollback.reason}); serving {primary.image} again")
    for state in inp.variants:
        if state.phase != "Available":
            return False, state.reason, state.message
    return True, "Ready", f"{sum(s.ready for s in inp.variants)} replicas ready in {len(inp.variants)} variant(s)"


def _available(primary: VariantState) -> tuple[bool, str, str]:
    if primary.ready > 0:
        return True, "MinimumReplicasAvailable", f"{primary.ready}/{primary.desired} primary replicas ready"
    if primary.desired == 0:
        return False, "ScaledToZero", "spec.replicas is 0"
    return False, "NoReadyReplicas", primary.message


def _variant_status(state: VariantState, inp: StatusInput) -> VariantStatus:
    """status.variants[] of one variant; its optional parts only where this pass has them."""
    optional: dict[str, Any] = {}
    if state.name in inp.strategies:
        optional["strategy"], optional["strategy_template"], _ = inp.strategies[state.name]
    if inp.intents.get(state.name):
        optional["spec_hash"] = inp.intents[state.name]
    if state.name in inp.gpu_fit:
        optional["gpu_fit"] = _gpu_fit(state.name, inp)
    if state.name in inp.downloads:
        optional["download"] = DownloadStatus.model_validate(inp.downloads[state.name])
    if state.name in inp.autoscaling:
        optional["autoscaling"] = AutoscalingStatus.model_validate(inp.autoscaling[state.name])
    if state.name in inp.cold_starts:
        optional["cold_start"] = ColdStartStatus.model_validate(inp.cold_starts[state.name])
    return VariantStatus(name=state.name, weight=inp.weights.get(state.name, 0), image=state.image,
                         replicas=state.replicas, ready_replicas=state.ready, **optional)


def _gpu_fit(name: str, inp: StatusInput) -> GpuFitStatus:
    """A variant's plan, with what its worker measured beside it when it reported."""
    fit = inp.gpu_fit[name]
    return GpuFitStatus.model_validate({**fit, "measured": inp.measured[name]} if name in inp.measured else fit)


def _measured_condition(inp: StatusInput) -> list[dict[str, Any]]:
    """GPUFitAccurate (left out until a worker reports; it never gates Ready): True when every
    reporting worker is within 10% of its plan, False (PlanMismatch) when one is not, Unknown while a
    variant with ready pods has not reported."""
    serving = [s.name for s in inp.variants if s.ready > 0]
    found = measured_condition(inp.measured, serving)
    if found is None:
        return []
    status, reason, message = found
    return [{"type": "GPUFitAccurate", "status": status, "reason": reason, "message": message,
             "observedGeneration": inp.generation}]


def _upgrade_condition(inp: StatusInput, old: dict[str, Any]) -> list[dict[str, Any]]:
    """OperatorUpgradePending: True while a template is held back; False once it was True (the
    condition stays, so `kubectl wait --for=condition=OperatorUpgradePending=false` can end); else none."""
    if inp.upgrade_pending:
        return [condition("OperatorUpgradePending", True, "TemplateHeld", inp.upgrade_pending, inp.generation)]
    if any(c.get("type") == "OperatorUpgradePending" for c in old.get("conditions", [])):
        return [condition("OperatorUpgradePending", False, "UpToDate",
                          "every variant runs this operator release's pod template", inp.generation)]
    return []


def _progressing(inp: StatusInput) -> tuple[bool, str, str]:
    failed = [s for s in inp.variants if s.phase == "Failed"]
    if failed:
        return False, failed[0].reason, failed[0].message
    rolling = [s for s in inp.variants if s.phase == "RollingOut"]
    if rolling:
        notes = [f"{s.name}: {inp.strategies[s.name][2]}" for s in rolling
                 if s.name in inp.strategies and inp.strategies[s.name][2]]
        return True, "RollingOut", "; ".join([s.message for s in rolling] + notes)
    return False, "RolloutComplete", "every variant runs its current template"


def _degraded(inp: StatusInput) -> tuple[bool, str, str]:
    primary = inp.variants[0]
    if inp.rollback.rolled_back:
        return True, "RolledBack", (f"image {inp.rollback.failed_image} failed to roll out "
                                    f"({inp.rollback.reason}); rolled back to {primary.image}")
    fatal = [s for s in inp.variants if s.phase == "Failed" and s.fatal]
    if fatal:
        hint = "" if inp.auto_rollback or fatal[0].config else " (rollout.autoRollback is off)"
        return True, fatal[0].reason, fatal[0].message + hint
    unavailable = [s for s in inp.variants if s.phase == "Unavailable"]
    if unavailable:
        return True, "ReplicasUnavailable", unavailable[0].message
    return False, "AsExpected", "no failures"


def stable_image(inp: StatusInput) -> str:
    """status.image: the primary's image once every primary replica runs it and is ready."""
    primary = inp.variants[0]
    if primary.phase == "Available" and primary.desired > 0:
        return primary.image
    return inp.stable_image


def compute_status(inp: StatusInput, old: dict[str, Any], now: str) -> dict[str, Any]:
    """The whole status subresource for this reconcile, as the wire dict: built as the typed
    api.DeepSeekDeploymentStatus (validated against the CRD's own model) and dumped once, with only
    the fields this pass set. Deterministic for the same inputs and `now`."""
    primary = inp.variants[0]
    conds = [
        condition("Ready", *_ready(inp), inp.generation),
        condition("Available", *_available(primary), inp.generation),
        condition("Progressing", *_progressing(inp), inp.generation),
        condition("Degraded", *_degraded(inp), inp.generation),
    ]
    conds += [condition(t, ok, reason, msg, inp.generation) for t, ok, reason, msg in inp.integrations]
    conds += _measured_condition(inp)
    conds += _upgrade_condition(inp, old)
    image = stable_image(inp)
    cleared = image == inp.rollback.failed_image and not inp.rollback.rolled_back
    failed_image, failed_reason = ("", "") if cleared else (inp.rollback.failed_image, inp.rollback.reason)
    optional: dict[str, Any] = {}
    if primary.name in inp.gpu_fit:
        optional["gpu_fit"] = _gpu_fit(primary.name, inp)
    if primary.name in inp.downloads:
        optional["download"] = DownloadStatus.model_validate(inp.downloads[primary.name])
    if inp.gateway:
        optional["gateway"] = GatewayStatus.model_validate(inp.gateway)
    status = DeepSeekDeploymentStatus(
        observed_generation=inp.generation,
        replicas=primary.replicas,
        ready_replicas=primary.ready,
        updated_replicas=primary.updated,
        ready=f"{primary.ready}/{primary.desired}",
        selector=inp.selector,
        image=image,
        failed_image=failed_image,
        failed_reason=failed_reason,
        url=inp.url,
        variants=[_variant_status(s, inp) for s in inp.variants],
        conditions=[Condition.model_validate(c) for c in merge_conditions(conds, old.get("conditions", []), now)],
        **optional,
    )
    return status.model_dump(by_alias=True, exclude_unset=True)
