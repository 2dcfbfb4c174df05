"""The Kubernetes Events a reconcile pass sends: one per change, never one per pass.

Contract: each function compares what the status said before the pass (`old`) with what the pass
found (`new`, or the GPU-fit plans) and calls `notify(type, reason, message)` only for what is new: a
rollout that failed, a download that changed phase, a plan warning not shown yet, an Advisory plan that
does not fit, a worker's measurements off the plan, an integration condition that turned False. So a
resync of an unchanged resource sends nothing. `after_status` sends, in order, every announcement that
follows a status write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from deepseek_operator.api import DeepSeekDeploymentSpec
from deepseek_operator.cache_conditions import CONDITION as CACHE_CONDITION
from deepseek_operator.gpufit import GpuFit
from deepseek_operator.observe import VariantState
from deepseek_operator.status import Rollback

Notify = Callable[[str, str, str], Awaitable[None]]  # (type Normal|Warning, reason, message)


async def after_status(notify: Notify, old: Mapping[str, Any], new: Mapping[str, Any],
                       fits: Mapping[str, GpuFit]) -> None:
    """Every announcement of a pass that wrote `new` over `old`, with its plans `fits`."""
    await plan_warnings(notify, old, fits)
    await advisory(notify, old, fits)
    await integrations(notify, old, new)
    await downloads(notify, old, new)
    await measurements(notify, old, new)


async def failure(notify: Notify, spec: DeepSeekDeploymentSpec, plan: Rollback, primary: VariantState) -> None:
    """RolledBack, or RolloutFailed when no earlier image is put back: the primary's reason and message."""
    if plan.rolled_back:
        await notify("Warning", "RolledBack",
                     f"rollout of {spec.image} failed ({primary.reason}: {primary.message}); rolling back")
    else:
        await notify("Warning", "RolloutFailed", f"rollout of {spec.image} failed ({primary.reason}: "
                     f"{primary.message}); {'no earlier image' if spec.rollout.auto_rollback else 'autoRollback off'}")


async def downloads(notify: Notify, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """One event per download phase change of a variant: started, stalled, failed, complete."""
    before = {v.get("name"): (v.get("download") or {}).get("phase") for v in old.get("variants", [])}
    for variant in new["variants"]:
        download = variant.get("download")
        if not download or before.get(variant["name"]) == download["phase"]:
            continue
        kind = "Warning" if download["phase"] in ("Stalled", "Failed") else "Normal"
        reason = {"Stalled": "DownloadStalled", "Failed": "DownloadFailed", "Complete": "Downloaded"}.get(
            download["phase"], "Downloading")
        await notify(kind, reason, f"{variant['name']}: {download['message']}")


async def plan_warnings(notify: Notify, old: Mapping[str, Any], fits: Mapping[str, GpuFit]) -> None:
    """One Warning event per plan warning (startup.py) not already in the variant's status.gpuFit.warnings."""
    before = {v.get("name"): (v.get("gpuFit") or {}).get("warnings") or [] for v in old.get("variants", [])}
    for name, fit in fits.items():
        for reason, message in fit.warnings:
            if message not in before.get(name, []):
                await notify("Warning", reason, f"{name}: {message}")


async def advisory(notify: Notify, old: Mapping[str, Any], fits: Mapping[str, GpuFit]) -> None:
    """spec.gpuFit.mode Advisory: a plan that does not fit is one Warning event (its reason) per new message,
    and the rollout goes on."""
    before = {v.get("name"): (v.get("gpuFit") or {}).get("message") for v in old.get("variants", [])}
    for name, fit in fits.items():
        if fit.fits == "False" and before.get(name) != fit.message:
            await notify("Warning", fit.reason, f"{name}: {fit.message} (spec.gpuFit.mode Advisory: rolled out)")


async def measurements(notify: Notify, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """One Warning per worker that reports figures more than 10% off the plan (measured.py)."""
    before = {v.get("name"): (v.get("gpuFit") or {}).get("measured") or {} for v in old.get("variants", [])}
    for variant in new["variants"]:
        now = (variant.get("gpuFit") or {}).get("measured") or {}
        was = before.get(variant["name"], {})
        if now.get("matches") == "False" and (was.get("matches") != "False" or was.get("pod") != now.get("pod")):
            await notify("Warning", "GPUFitMismatch", f"{variant['name']}: {now['message']}")


async def integrations(notify: Notify, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """One Warning event when an integration condition turns False (not on every reconcile)."""
    before = {c["type"]: c.get("status") for c in old.get("conditions", [])}
    for cond in new["conditions"]:
        if cond["type"] in ("IngressReady", "MonitoringReady", "MultiNodeReady", CACHE_CONDITION) \
                and cond["status"] == "False" \
                and before.get(cond["type"]) != "False":
            await notify("Warning", cond["reason"], cond["message"])
