"""Which rolling update a variant's Deployment gets (spec.rollout.strategy). Pure.

- Surge: `maxSurge: max(rollout.maxSurge, 1), maxUnavailable: 0`. No moment with fewer ready
  replicas than asked for, but each extra pod needs free GPUs: without them it stays Pending and the
  rollout stops (until the progress deadline fails it).
- Replace: `maxSurge: 0, maxUnavailable: max(rollout.maxUnavailable, 1)`. Needs no spare GPU; a pod
  is stopped before its replacement starts, so a one-replica variant has no ready replica meanwhile.
- Auto (default): Surge; if a pod of the new template is still unschedulable `surgeTimeoutSeconds`
  after it was created (no spare GPU), Replace for the rest of that rollout. A Pending pod sends no
  further event, so the reconcile asks to be woken at that deadline (`surge_wait`).

The choice is remembered per variant in status.variants[].strategy with a hash of the pod template it
was made for (`strategyTemplate`): the fallback holds until the template changes again, so a rollout
that fell back does not try to surge for every remaining pod, and `kubectl get dsd -o wide` shows
which strategy the last rollout used.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

Strategy = Literal["Surge", "Replace"]


def template_hash(deployment: dict[str, Any]) -> str:
    """A short, stable hash of a rendered Deployment's pod template (what a rollout rolls out); of a
    LeaderWorkerSet's leader and worker templates."""
    spec = deployment["spec"]
    template = json.dumps(spec.get("template") or spec["leaderWorkerTemplate"], sort_keys=True,
                          separators=(",", ":"))
    return hashlib.sha256(template.encode()).hexdigest()[:12]


def initial(requested: str, remembered: dict[str, Any], template: str) -> Strategy:
    """The strategy to render before observing: the requested one, or Auto's choice for `template`."""
    if requested in ("Surge", "Replace"):
        return requested  # type: ignore[return-value]
    if remembered.get("strategy") == "Replace" and remembered.get("strategyTemplate") == template:
        return "Replace"
    return "Surge"


def surge_stuck(pods: list[dict[str, Any]], image: str, now: datetime, timeout: float) -> bool:
    """A pod running `image` has been unschedulable for at least `timeout` seconds."""
    return surge_wait(pods, image, now, timeout) == 0.0


def surge_wait(pods: list[dict[str, Any]], image: str, now: datetime, timeout: float) -> float | None:
    """Seconds until a pod running `image` that is unschedulable now will have been so for `timeout`
    (0.0 once one has); None while no such pod waits. The deadline Auto's fallback is due at."""
    waits = [max(timeout - (now - since).total_seconds(), 0.0) for since in _unschedulable_since(pods, image)]
    return min(waits) if waits else None


def _unschedulable_since(pods: list[dict[str, Any]], image: str) -> list[datetime]:
    """When each pod running `image` that the scheduler could not place became unschedulable."""
    out = []
    for pod in pods:
        if not any(c.get("image") == image for c in pod.get("spec", {}).get("containers", [])):
            continue
        for cond in pod.get("status", {}).get("conditions", []):
            if cond.get("type") != "PodScheduled" or cond.get("status") != "False":
                continue
            since = _parse_time(cond.get("lastTransitionTime") or pod["metadata"].get("creationTimestamp"))
            if since is not None:
                out.append(since)
    return out


def rolling_update(strategy: Strategy, max_surge: int, max_unavailable: int) -> dict[str, int]:
    """The Deployment's `strategy.rollingUpdate` for `strategy`."""
    if strategy == "Surge":
        return {"maxSurge": max(max_surge, 1), "maxUnavailable": 0}
    return {"maxSurge": 0, "maxUnavailable": max(max_unavailable, 1)}


def downtime(strategy: Strategy, replicas: int, max_unavailable: int) -> str:
    """Why a rollout with `strategy` leaves the variant without a ready replica; "" when it does not."""
    if strategy != "Replace" or replicas < 1 or replicas - max(max_unavailable, 1) >= 1:
        return ""
    return (f"replacing in place: {min(max(max_unavailable, 1), replicas)} of {replicas} replica(s) stop before "
            f"their replacement is ready, so the variant serves nothing meanwhile (a spare GPU and "
            f"rollout.strategy Surge or Auto avoid it)")


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
