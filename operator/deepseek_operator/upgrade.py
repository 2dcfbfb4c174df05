"""Operator upgrades and running workers (spec.rollout.operatorUpgrades). Pure.

A new operator release may render a different pod template for an unchanged spec (a new env var, a
port, a probe). Applied as is, that restarts every worker of every resource at once when the operator
is upgraded: for GPU workers, minutes of model loading per pod. So a changed template is applied only
when the user's intent changed, unless the resource asks for `Rolling`:

- The intent of a variant's pods is a hash of the spec (replica counts left out: a scale never changes
  a pod) and the image rendered for it (a rollback changes it). Fields at their default are left out
  too, so a release that adds a defaulted field does not look like a spec change. The status
  records, per variant, the intent its template was last applied for (`status.variants[].specHash`):
  in the status, not on the Deployment, since any write to a Deployment's annotations bumps its
  generation, and until its controller catches up the variant would read as rolling out (a spec
  change that touches no pod, such as an ingress host, would make Ready blink).
- Template unchanged: applied as rendered.
- Template changed, intent changed: a spec change; applied, rolled under rollout.strategy.
- Template changed, intent the same: only the operator's rendering changed. `OnNextChange` (default)
  keeps the template the Deployment runs (the one the operator applied last, from its last-applied
  record) and reports the variant as pending (condition OperatorUpgradePending); the Deployment's
  other fields (replicas, strategy, labels) are still applied. `Rolling` applies it, rolled under
  rollout.strategy like any change, to one variant at a time: while another variant's Deployment is
  rolling out, the new template waits (pending, as above), so an upgrade never replaces the pods of
  every variant together.
- A variant without a recorded intent was applied by a release before this mechanism (or its status
  was lost): its intent is unchanged when the previous operator had reconciled the resource's current
  generation (status.observedGeneration) and the Deployment runs the image rendered now.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from deepseek_operator.api import DeepSeekDeploymentSpec
from deepseek_operator.k8s import LAST_APPLIED


@dataclass(frozen=True)
class Settled:
    """A worker Deployment to apply, and whether its newly rendered template is held back."""

    deployment: dict[str, Any]
    pending: bool
    upgrading: bool = False  # the template only this release changed is applied now (Rolling)


@dataclass(frozen=True)
class Upgrades:
    """What settling a reconcile's worker Deployments found: the variants whose new template is held
    back, and the intent each variant's applied template belongs to (status.variants[].specHash)."""

    pending: list[str]
    intents: dict[str, str]


def spec_digest(spec: DeepSeekDeploymentSpec) -> str:
    """The user's spec without replica counts, without rollout.operatorUpgrades (switching to Rolling
    rolls a pending upgrade one variant at a time, not as a spec change) and without fields at their
    default, as canonical JSON: stable across operator releases that only add (defaulted) fields."""
    wanted = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    wanted.pop("replicas", None)
    rollout = wanted.pop("rollout", {})
    rollout.pop("operatorUpgrades", None)
    if rollout:
        wanted["rollout"] = rollout
    for variant in wanted.get("variants", []):
        variant.pop("replicas", None)
    return json.dumps(wanted, sort_keys=True, separators=(",", ":"))


def intent_hash(digest: str, image: str) -> str:
    """What the user asked of one variant's pods: the spec_digest() and the image rendered for it."""
    return hashlib.sha256(f"{digest}\n{image}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Intent:
    """A variant's intent now (intent_hash()) and the one its template was last applied for ("": none
    recorded), and whether the status describes the resource's current generation (status.
    observedGeneration as read before this reconcile: it stands in for a missing record)."""

    now: str
    recorded: str
    generation_seen: bool


def settle(desired: dict[str, Any], live: dict[str, Any] | None, intent: Intent, policy: str,
           others_rolling: bool = False) -> Settled:
    """The Deployment to apply for `desired` given the `live` one (module docstring).

    `policy`: spec.rollout.operatorUpgrades; `others_rolling`: another variant's Deployment is rolling
    out (or starts to in this reconcile). Whatever the outcome, the template applied then belongs to
    `intent.now` (held back only when that equals the recorded one)."""
    if live is None:
        return Settled(desired, False)
    applied = _applied_template(live)
    if applied == desired["spec"]["template"] or not _same_intent(live, intent, desired):
        return Settled(desired, False)
    if policy == "Rolling" and not others_rolling:
        return Settled(desired, False, upgrading=True)
    out = copy.deepcopy(desired)
    out["spec"]["template"] = applied
    return Settled(out, True)


def rolling(live: dict[str, Any] | None) -> bool:
    """A Deployment's rollout is under way: its controller has not seen its spec yet, or not every
    replica runs its template yet (availability aside: an unhealthy variant does not block the others)."""
    if live is None:
        return False
    status = live.get("status") or {}
    replicas = int(live["spec"].get("replicas", 1))
    seen = int(status.get("observedGeneration", 0)) >= int(live["metadata"].get("generation", 1))
    return not seen or int(status.get("updatedReplicas", 0)) < replicas or int(status.get("replicas", 0)) > replicas


def _same_intent(live: dict[str, Any], intent: Intent, desired: dict[str, Any]) -> bool:
    if intent.recorded:
        return intent.recorded == intent.now
    return intent.generation_seen and _images(live) == _images(desired)


def _applied_template(live: dict[str, Any]) -> dict[str, Any]:
    """The pod template the operator applied last (its last-applied record); the live one without it."""
    recorded = (live["metadata"].get("annotations") or {}).get(LAST_APPLIED)
    template = (json.loads(recorded).get("spec") or {}).get("template") if recorded else None
    return dict(template) if isinstance(template, dict) else dict(live["spec"]["template"])


def _images(deployment: dict[str, Any]) -> list[str]:
    return [str(c.get("image")) for c in deployment["spec"]["template"]["spec"].get("containers", [])]


def pending_message(variants: list[str], policy: str) -> str:
    """The OperatorUpgradePending message for the variants whose new template is held back."""
    names = ", ".join(variants)
    if policy == "Rolling":
        return (f"{names}: this operator release's pod template waits for the other variants' rollouts "
                "(rollout.operatorUpgrades Rolling rolls one variant at a time, under rollout.strategy)")
    return (f"{names}: this operator release renders a different pod template for the unchanged spec; the "
            f"running pods are kept (rollout.operatorUpgrades {policy}) until the next spec change rolls them "
            "out under rollout.strategy, or set rollout.operatorUpgrades to Rolling")
