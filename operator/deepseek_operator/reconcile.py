"""ONE idempotent, level-based reconcile: parse -> Desired -> render -> apply -> observe -> status.

Every trigger (resume, create, update, an owned child's event, the resync timer) calls `reconcile`
with the current body of the resource; it never looks at what changed. Writes happen only where the
live state differs from the desired one, so an idle resource costs reads only. What the pass wants is
computed once, as a frozen desired.Desired (variants resolved and GPU-fit planned once each); every
step after it reads that value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from deepseek_operator import announce, gpufit, metrics, rollback, strategy, upgrade
from deepseek_operator.announce import Notify as Notify  # what the Controller passes in
from deepseek_operator.api import (
    PRIMARY,
    DeepSeekDeploymentSpec,
    InvalidSpec,
    ResolvedVariant,
    parse_spec,
    resolve_variants,
)
from deepseek_operator.cache_claims import adopt_legacy_caches, resize_claims
from deepseek_operator.cache_conditions import Note, cache_conditions
from deepseek_operator.children import pruned
from deepseek_operator.config_geometry import downloaded_architectures
from deepseek_operator.desired import WORKLOAD_KINDS, Chosen, Conditions, Desired, compute
from deepseek_operator.download import DownloadState
from deepseek_operator.integrations import detect_capabilities, integration_conditions
from deepseek_operator.k8s import KINDS, ApiError, K8s, list_by_name
from deepseek_operator.measured import GatewayReport
from deepseek_operator.observe import VariantState
from deepseek_operator.readback import (
    Pods,
    observe,
    observe_downloads,
    observe_gateway,
    observe_gateway_report,
    observe_reports,
)
from deepseek_operator.render import multinode
from deepseek_operator.render.autoscaling import autoscaling_conditions, autoscaling_status
from deepseek_operator.render.common import (
    LABEL_VARIANT,
    Capabilities,
    Owner,
    deployment_name,
    selector_labels,
)
from deepseek_operator.render.gateway import gateway_condition
from deepseek_operator.render.ingress import ingress_url, render_ingress
from deepseek_operator.render.measurements import render_reports
from deepseek_operator.render.model_cache import CREATE_ONLY, render_model_cache
from deepseek_operator.render.monitoring import render_prometheus_rule, render_service_monitor
from deepseek_operator.render.network_policy import render_network_policy
from deepseek_operator.render.workload import render_workload
from deepseek_operator.status import (
    StatusInput,
    apply_failed_conditions,
    child_rejected_conditions,
    compute_status,
    forbidden_conditions,
    forbidden_message,
    insufficient_memory_conditions,
    invalid_spec_conditions,
    merge_conditions,
)
from deepseek_operator.stored_defaults import needs_managed_fields, stored_default_conditions
from deepseek_operator.traffic import effective_weights

log = logging.getLogger(__name__)
DEPLOYMENT = KINDS[("apps/v1", "Deployment")]
CR = KINDS[("deepseek.ai/v1alpha1", "DeepSeekDeployment")]
UNPROCESSABLE = 422  # the apiserver's validation refused an object: the same object is refused again


class ChildRejected(InvalidSpec):
    """The apiserver refused a child rendered from the spec (422): like an invalid spec, only a spec
    change can help. str() names the child, then the apiserver's message."""


@dataclass(frozen=True)
class Outcome:
    """What one reconcile did: children writes by action and whether it is still converging."""

    writes: dict[str, int]
    ready: bool
    reason: str
    recheck_seconds: float | None = None  # reconcile again then, even without an event (a download's
    # stall, Auto's surge deadline)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_of(body: Mapping[str, Any]) -> Owner:
    meta = body["metadata"]
    return Owner(meta["name"], meta["namespace"], meta["uid"], int(meta.get("generation", 1)),
                 str(meta.get("resourceVersion", "")))


def render_routing_and_monitoring(owner: Owner, spec: DeepSeekDeploymentSpec, caps: Capabilities,
                                  weights: dict[str, int],
                                  variants: Sequence[ResolvedVariant] | None = None) -> list[dict[str, Any]]:
    """The children besides the workload, pure: they depend on readiness (weights), so come second.
    The NetworkPolicy is not one of them: it is applied before anything that makes pods (_guards).
    `variants`: resolve_variants(spec), when the caller resolved them already (desired.py)."""
    return [
        *render_ingress(owner, spec, weights, caps, variants),
        *render_service_monitor(owner, spec, caps),
        *render_prometheus_rule(owner, spec, caps, variants),
    ]


async def reconcile(body: Mapping[str, Any], api: K8s, notify: Notify) -> Outcome:
    """Bring the children and status of `body` to what its spec asks. Raises InvalidSpec (status set)."""
    started = time.monotonic()
    owner = owner_of(body)
    old_status: dict[str, Any] = dict(body.get("status") or {})
    try:
        spec = parse_spec(dict(body.get("spec") or {}))
    except InvalidSpec as exc:
        await _write_invalid(api, owner, old_status, str(exc))
        metrics.record_reconcile("invalid", time.monotonic() - started)
        raise
    try:
        outcome = await _reconcile_valid(owner, spec, old_status, api, notify, await _stored_defaults(api, body))
    except ChildRejected as exc:
        await _write_refused_child(api, owner, old_status, str(exc))
        metrics.record_reconcile("invalid", time.monotonic() - started)
        raise
    except ApiError:
        metrics.record_reconcile("error", time.monotonic() - started)
        raise
    metrics.record_reconcile("success" if outcome.ready else "waiting", time.monotonic() - started)
    return outcome


async def _stored_defaults(api: K8s, body: Mapping[str, Any]) -> Conditions:
    """stored_defaults.py's conditions. The caches drop managedFields (informer.slim), so when the
    answer depends on them the resource is read once more (k8s.list_by_name, as CachedK8s.refresh reads),
    at most once per resourceVersion (the client's memo)."""
    meta = body.get("metadata") or {}
    if not needs_managed_fields(body) or "managedFields" in meta:
        return stored_default_conditions(body)
    key, version = f"managedFields/{meta.get('uid')}", meta.get("resourceVersion")
    hit = api.cache.get(key)
    if hit is None or hit[0] != version:
        full = await list_by_name(api, CR, meta.get("namespace"), str(meta.get("name"))) or body
        hit = api.cache[key] = (version, stored_default_conditions(full))
    found: Conditions = hit[1]
    return found



async def _reconcile_valid(owner: Owner, spec: DeepSeekDeploymentSpec, old_status: dict[str, Any], api: K8s,
                           notify: Notify, stored: Conditions) -> Outcome:
    """`stored`: conditions about values an earlier CRD stored as defaults (stored_defaults.py). The
    variants are resolved and planned once here; every later step reads the pass's Desired."""
    variants = resolve_variants(spec)
    owner = await adopt_legacy_caches(api, owner, spec, variants)  # caches named by an older release keep it
    downloaded = await downloaded_architectures(api, owner, spec, variants)
    fits = gpufit.plan_variants(spec, downloaded, variants)  # plan from real configs
    if any(fit.fits == "False" for fit in fits.values()) and not gpufit.advisory(spec):
        return await _refuse_unfit(api, owner, spec, old_status, fits, notify)
    want = compute(owner, spec, variants, fits, await detect_capabilities(api), old_status, stored)
    guards = await _guards(api, want)
    caches = await _model_caches(api, want)
    want, seen, writes = await _roll_out(api, want, caches, guards, notify)
    writes = _add(_add(writes, caches.writes), guards.writes)
    reports = await observe_reports(api, want)
    status = _status(want, seen, caches, reports, await observe_gateway(api, want),
                     await observe_gateway_report(api, want, reports))
    await _write_status(api, owner, old_status, status)
    await announce.after_status(notify, old_status, status, fits)
    ready = status["conditions"][0]["status"] == "True"
    recheck = _earliest(_recheck(caches.downloads), _surge_recheck(want, seen))
    return Outcome(writes, ready, status["conditions"][0]["reason"], recheck)


async def _roll_out(api: K8s, want: Desired, caches: ModelCaches, guards: Guards,
                   notify: Notify) -> tuple[Desired, Converged, dict[str, int]]:
    """Converge on `want`; again when that finds the rollout failed and rolls back, and again when an
    Auto variant's surge pod found no GPU (it then replaces in place). The Desired that held last, what
    it converged to, and the writes of every round."""
    spec = want.spec
    seen = await _converge(api, want, caches, guards)
    writes = seen.writes
    new_plan = rollback.detect_failure(spec, want.rollback, seen.states[0], want.stable_image)
    if new_plan is not None:
        want = want.after_failure(new_plan)
        await announce.failure(notify, spec, new_plan, seen.states[0])
        if new_plan.rolled_back:
            seen = await _converge(api, want, caches, guards)
            writes = _add(writes, seen.writes)
    fallen = _fall_back(want, seen)
    if fallen != want.chosen:  # Auto: no GPU for the surge pod; replace in place for the rest of this rollout
        want = want.with_strategies(fallen)
        await notify("Normal", "SurgeFallback", _fallback_message(spec, fallen))
        seen = await _converge(api, want, caches, guards)
        writes = _add(writes, seen.writes)
    return want, seen, writes


@dataclass(frozen=True)
class Converged:
    """What one _converge applied and then observed: the writes by action, each variant's state (the
    primary first) and pods, the readiness-based traffic weights, and the operator-upgrade settling."""

    writes: dict[str, int]
    states: list[VariantState]
    weights: dict[str, int]
    pods: Pods
    upgrades: upgrade.Upgrades


def _fall_back(want: Desired, seen: Converged) -> Chosen:
    """Auto variants whose surge pod has waited surgeTimeoutSeconds for a GPU switch to Replace."""
    rollout = want.spec.rollout
    if rollout.strategy != "Auto":
        return want.chosen
    now = datetime.now(UTC)
    out = dict(want.chosen)
    for state in seen.states:
        current, template = want.chosen[state.name]
        if current == "Surge" and strategy.surge_stuck(seen.pods.get(state.name, []), state.image, now,
                                                      rollout.surge_timeout_seconds):
            out[state.name] = ("Replace", template)
    return out


def _surge_recheck(want: Desired, seen: Converged) -> float | None:
    """While an Auto variant's surge pod waits for a GPU, look again just after surgeTimeoutSeconds:
    a Pending pod sends no further event, and the next resync may be minutes away. The extra second
    covers the timestamps' one-second resolution, so the wake-up finds the deadline passed."""
    rollout = want.spec.rollout
    if rollout.strategy != "Auto":
        return None
    now = datetime.now(UTC)
    waits = [strategy.surge_wait(seen.pods.get(state.name, []), state.image, now, rollout.surge_timeout_seconds)
             for state in seen.states if want.chosen[state.name][0] == "Surge"]
    due = [wait for wait in waits if wait is not None]
    return min(due) + 1.0 if due else None


def _earliest(*seconds: float | None) -> float | None:
    """The soonest of the recheck delays asked for; None when none is."""
    asked = [s for s in seconds if s is not None]
    return min(asked) if asked else None


def _fallback_message(spec: DeepSeekDeploymentSpec, chosen: Chosen) -> str:
    names = ", ".join(sorted(n for n, (s, _) in chosen.items() if s == "Replace"))
    return (f"no free GPU for a surge pod after {spec.rollout.surge_timeout_seconds}s: replacing in place "
            f"({names}; rollout.strategy Auto)")


@dataclass(frozen=True)
class ModelCaches:
    """This reconcile's model caches (render/model_cache.py): their children as applied, the writes
    that took, and the download of each cached variant's model, read once after applying them."""

    children: list[dict[str, Any]]
    writes: dict[str, int]
    downloads: dict[str, DownloadState]  # cached variant -> the download of its model's cache
    notes: list[Note]  # what the claims cannot do (cache_claims.py), for ModelCacheReady

    def held(self) -> dict[str, DownloadState]:
        """The variants whose Deployment waits for its model's download."""
        return {name: state for name, state in self.downloads.items() if not state.complete}


async def _model_caches(api: K8s, want: Desired) -> ModelCaches:
    """Apply the cache children (created once: the image only matters for a new Job), then observe."""
    owner, spec = want.owner, want.spec
    children = render_model_cache(owner, spec, dict(want.images), want.variants)
    writes = await _apply(api, children)
    notes = await resize_claims(api, owner, spec, want.variants)  # a new cache.size grows the claim in place
    return ModelCaches(children, writes, await observe_downloads(api, want), notes)


@dataclass(frozen=True)
class Guards:
    """The children applied before anything that makes pods (the NetworkPolicy), and their writes."""

    children: list[dict[str, Any]]
    writes: dict[str, int]


async def _guards(api: K8s, want: Desired) -> Guards:
    """Apply the NetworkPolicy first: a pod (worker or download Job) never runs unprotected, even when
    a later child is refused and the reconcile stops there."""
    children = render_network_policy(want.owner, want.spec, want.variants)
    return Guards(children, await _apply(api, children))


async def _converge(api: K8s, want: Desired, caches: ModelCaches, guards: Guards) -> Converged:
    """Apply the workload, observe it, then apply traffic/monitoring children with readiness-based weights.
    Last: the worker Deployments as settled against operator upgrades (upgrade.py)."""
    owner, spec, caps = want.owner, want.spec, want.caps
    held = caches.held()
    reports = render_reports(owner, spec, want.variants)  # before the workload: the pods run as their accounts
    workload = render_workload(owner, spec, dict(want.images), {name: s for name, (s, _) in want.chosen.items()},
                               want.variants)
    # Multi-node workers without the LeaderWorkerSet API: nothing can run them (MultiNodeReady says so).
    workload = [c for c in workload if c["kind"] != multinode.KIND or caps.leader_worker_set]
    workload, upgrades = await _settle_upgrades(api, want, workload)
    writes = await _apply(api, reports + [c for c in workload if not _held_deployment(c, held)])
    states, pods = await observe(api, want, held)
    weights = effective_weights(want.variants, {s.name: s.ready for s in states})
    others = render_routing_and_monitoring(owner, spec, caps, weights, want.variants) + want.scaling()
    writes = _add(writes, await _apply(api, others))
    kept = await _claims_in_use(api, owner, held)
    children = guards.children + caches.children + reports + workload + others + kept
    writes = _add(writes, {"deleted": await prune(api, owner, children, caps)})
    recorded = _recorded_intents(want.previous)
    # A held variant's Deployment was not applied: neither pending nor of a new intent.
    upgrades = upgrade.Upgrades([name for name in upgrades.pending if name not in held],
                                {name: recorded.get(name, "") if name in held else intent
                                 for name, intent in upgrades.intents.items()})
    return Converged(writes, states, weights, pods, upgrades)


def _recorded_intents(previous: Mapping[str, Any]) -> dict[str, str]:
    """variant -> the specHash its status last recorded (upgrade.Intent's `recorded`)."""
    return {v.get("name"): str(v.get("specHash", "")) for v in previous.get("variants", [])}


async def _settle_upgrades(api: K8s, want: Desired, workload: list[dict[str, Any]],
                           ) -> tuple[list[dict[str, Any]], upgrade.Upgrades]:
    """The workload with each worker Deployment settled against the live one (upgrade.py): a template
    only this operator release changed stays as it runs under rollout.operatorUpgrades OnNextChange,
    and under Rolling while another variant rolls out (one variant at a time)."""
    owner, spec = want.owner, want.spec
    seen = want.previous.get("observedGeneration") == owner.generation
    recorded = _recorded_intents(want.previous)
    digest = upgrade.spec_digest(spec)
    live = {c["metadata"]["name"]: await api.get(DEPLOYMENT, owner.namespace, c["metadata"]["name"])
            for c in workload if c["kind"] == "Deployment"}
    out, pending, intents, upgrading = [], [], {}, False
    for child in workload:
        if child["kind"] == "Deployment":
            name, variant = child["metadata"]["name"], child["metadata"]["labels"][LABEL_VARIANT]
            others = upgrading or any(upgrade.rolling(dep) for other, dep in live.items() if other != name)
            image = child["spec"]["template"]["spec"]["containers"][0]["image"]
            intent = upgrade.Intent(upgrade.intent_hash(digest, image), recorded.get(variant, ""), seen)
            settled = upgrade.settle(child, live[name], intent, spec.rollout.operator_upgrades, others)
            child, upgrading, intents[variant] = settled.deployment, upgrading or settled.upgrading, intent.now
            if settled.pending:
                pending.append(variant)
        out.append(child)
    return out, upgrade.Upgrades(pending, intents)


def _held_deployment(child: dict[str, Any], held: dict[str, DownloadState]) -> bool:
    """A variant's Deployment waits (untouched, not pruned) while its model cache downloads."""
    return child["kind"] in WORKLOAD_KINDS and child["metadata"]["labels"].get(LABEL_VARIANT) in held


async def _claims_in_use(api: K8s, owner: Owner, held: dict[str, DownloadState]) -> list[dict[str, Any]]:
    """The claims a held variant's live Deployment still mounts (its previous model's cache): kept,
    so that its pods can restart while the new model downloads."""
    kept = []
    for name in held:
        live = await api.get(DEPLOYMENT, owner.namespace, deployment_name(owner, name)) or {}
        for volume in live.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []):
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                kept.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim}})
    return kept


def _recheck(downloads: dict[str, DownloadState]) -> float | None:
    """While bytes arrive, look again when the stall timeout would pass: a pod that stops reporting
    sends no event."""
    waits = [state.stall_timeout_seconds + 1.0 for state in downloads.values() if state.phase == "Downloading"]
    return min(waits) if waits else None


async def _apply(api: K8s, children: list[dict[str, Any]]) -> dict[str, int]:
    """Apply each child in order; count the actions."""
    writes: dict[str, int] = {}
    for child in children:
        try:
            # A ConfigMap with data is the operator's (the gateway's document), re-applied on change;
            # one without is another party's channel (a report, a download's progress).
            create_only = child["kind"] in CREATE_ONLY and not (child["kind"] == "ConfigMap" and "data" in child)
            action = await api.apply(child, create_only=create_only)
        except ApiError as exc:
            if exc.code == UNPROCESSABLE:  # the same object is refused again: no retry can help
                raise ChildRejected(f"{child['kind']} {child['metadata']['name']}: {exc.message}") from exc
            raise
        metrics.record_child(child["kind"], action)
        writes[action] = writes.get(action, 0) + 1
    return writes



async def prune(api: K8s, owner: Owner, desired: list[dict[str, Any]], caps: Capabilities) -> int:
    """Delete owned children that are no longer desired (removed variants, switched providers), of
    the kinds children.py registers as pruned (optional ones only while `caps` says they are served)."""
    wanted = {(c["apiVersion"], c["kind"], c["metadata"]["name"]) for c in desired}
    deleted = 0
    for kind in pruned(caps):
        for live in await api.list(kind, owner.namespace, selector_labels(owner)):
            refs = live["metadata"].get("ownerReferences") or []
            mine = any(r.get("uid") == owner.uid for r in refs)
            going = bool(live["metadata"].get("deletionTimestamp"))  # deleted already, held by a finalizer
            if mine and not going and (kind.api_version, kind.kind, live["metadata"]["name"]) not in wanted:
                await api.delete(kind, owner.namespace, live["metadata"]["name"])
                metrics.record_child(kind.kind, "deleted")
                deleted += 1
    return deleted




def _status(want: Desired, seen: Converged, caches: ModelCaches, reports: dict[str, dict[str, Any]],
            gateway: dict[str, Any] | None = None, gateway_report: GatewayReport | None = None) -> dict[str, Any]:
    """The status subresource of this pass (status.py) from what it wanted and what it observed;
    `reports`: status.gpuFit.measured per variant (observe_reports); `gateway`: the request gateway's
    live Deployment (observe_gateway), for GatewayReady; `gateway_report`: its report
    (observe_gateway_report), for status.gateway and status.variants[].coldStart."""
    owner, spec = want.owner, want.spec
    # /scale's selector: the pods that serve, one per replica (a multi-node group's leader).
    serving = {**selector_labels(owner, PRIMARY), **({multinode.LABEL_ROLE: "leader"} if multinode.spans_nodes(spec)
                                                    else {})}
    notes: dict[str, tuple[str, str, str]] = {
        s.name: (want.chosen[s.name][0], want.chosen[s.name][1],
                 strategy.downtime(want.chosen[s.name][0], s.desired, spec.rollout.max_unavailable))
        for s in seen.states if s.name in want.chosen}
    upgrades = seen.upgrades
    inp = StatusInput(
        generation=owner.generation,
        variants=seen.states,
        weights=seen.weights,
        selector=",".join(f"{k}={v}" for k, v in serving.items()),
        stable_image=want.stable_image,
        rollback=want.rollback,
        auto_rollback=spec.rollout.auto_rollback,
        url=ingress_url(spec) if spec.ingress else "",
        integrations=(integration_conditions(spec, want.caps, want.variants)
                      + autoscaling_conditions(spec, want.caps, want.variants) + gateway_condition(spec, gateway)
                      + cache_conditions(spec, caches.notes, want.variants) + list(want.stored)),
        strategies=notes,
        gpu_fit={name: gpufit.status_of(fit) for name, fit in want.fits.items()},
        downloads={name: state.status() for name, state in caches.downloads.items()},
        measured=reports,
        upgrade_pending=(upgrade.pending_message(upgrades.pending, spec.rollout.operator_upgrades)
                         if upgrades.pending else ""),
        intents=upgrades.intents,
        autoscaling={v.name: autoscaling_status(spec, want.caps, v, s.desired, s.replicas)
                     for v, s in zip(want.variants, seen.states, strict=True) if v.autoscaling is not None},
        gateway=gateway_report.gateway if gateway_report else {},
        cold_starts=gateway_report.cold_starts if gateway_report else {},
    )
    return compute_status(inp, dict(want.previous), _now())


async def _refuse_unfit(api: K8s, owner: Owner, spec: DeepSeekDeploymentSpec, old: dict[str, Any],
                        fits: dict[str, gpufit.GpuFit], notify: Notify) -> Outcome:
    """A variant's plan does not fit its GPUs: say so with the numbers before any pod is created. No
    child is applied or pruned (what runs keeps running), and one Warning event per distinct message."""
    unfit = {name: fit for name, fit in fits.items() if fit.fits == "False"}
    message = "; ".join(f"{name}: {fit.message}" for name, fit in unfit.items())
    reason = next(iter(unfit.values())).reason  # InsufficientGPUMemory, or UnsupportedCheckpoint (precision.py)
    conditions = _over_old(old, insufficient_memory_conditions(message, owner.generation, reason))
    before = {v.get("name"): v for v in old.get("variants", [])}
    variants = [{**before.get(name, {"name": name}), "gpuFit": gpufit.status_of(fit)} for name, fit in fits.items()]
    status = {"ready": f"0/{spec.replicas}", **old, "observedGeneration": owner.generation,
              "gpuFit": gpufit.status_of(fits[PRIMARY]), "variants": variants, "conditions": conditions}
    await _write_status(api, owner, old, status)
    await announce.plan_warnings(notify, old, fits)
    ready: dict[str, Any] = next((c for c in old.get("conditions", []) if c.get("type") == "Ready"), {})
    if (ready.get("reason"), ready.get("message")) != (reason, message):
        await notify("Warning", reason, message)
    return Outcome({}, False, reason)


def _over_old(old: Mapping[str, Any], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conditions of a status written outside compute_status: `new`, stamped by merge_conditions
    (a transition time kept where the status did not change), then the old conditions of every other
    type as they were."""
    previous = old.get("conditions", [])
    stamped = merge_conditions(new, previous, _now())
    replaced = {c["type"] for c in stamped}
    return stamped + [c for c in previous if c.get("type") not in replaced]


async def _write_status(api: K8s, owner: Owner, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Patch the status subresource only when something in it changed."""
    changed = sorted(key for key, value in new.items() if old.get(key) != value)
    if not changed:
        return
    log.info("%s/%s: status changed: %s", owner.namespace, owner.name, {k: new[k] for k in changed})
    # The resourceVersion read makes the patch conditional: a status someone changed meanwhile (e.g.
    # `failedImage` cleared by hand) answers 409 and the reconcile is retried from a fresh read,
    # instead of this write silently putting the old value back.
    meta = {"resourceVersion": owner.resource_version} if owner.resource_version else {}
    await api.patch(CR, owner.namespace, owner.name, {"metadata": meta, "status": new}, sub="status")


async def _write_refused_child(api: K8s, owner: Owner, old: dict[str, Any], message: str) -> None:
    """Ready/Progressing False and Degraded True with reason ChildRejected and the apiserver's message;
    what was applied before the refused child stays (the NetworkPolicy comes first)."""
    text = f"the API refused a child rendered from this spec (fix the spec): {message}"
    conditions = _over_old(old, child_rejected_conditions(text, owner.generation))
    await _write_status(api, owner, old, {**old, "observedGeneration": owner.generation, "conditions": conditions})


async def _write_invalid(api: K8s, owner: Owner, old: dict[str, Any], message: str) -> None:
    conditions = _over_old(old, invalid_spec_conditions(message, owner.generation))
    await _write_status(api, owner, old, {**old, "observedGeneration": owner.generation, "conditions": conditions})


async def report_apply_failed(body: Mapping[str, Any], api: K8s, error: ApiError) -> None:
    """An API error other than 403/409 stopped the reconcile of a generation not yet applied: say so in
    Progressing (ApplyFailed, with the error), so that an earlier generation's RolloutComplete or
    RollingOut is not kept for a spec that was not applied. Once per distinct message; nothing for an
    already applied generation (a transient error while re-applying the same spec claims nothing
    new). A refused status write (the apiserver is down too) is only logged: the retry comes anyway."""
    owner = owner_of(body)
    old: dict[str, Any] = dict(body.get("status") or {})
    if old.get("observedGeneration") == owner.generation:
        return
    conditions = _over_old(old, apply_failed_conditions(f"{error} (retrying)", owner.generation))
    try:
        await _write_status(api, owner, old, {**old, "conditions": conditions})
    except ApiError as exc:
        log.info("%s/%s: the apply failed (%s) and so did the status write: %s", owner.namespace, owner.name,
                 error, exc)


async def report_forbidden(body: Mapping[str, Any], api: K8s, notify: Notify, error: ApiError) -> None:
    """A 403 stopped the reconcile: say in Ready which verb on which resource, with ONE Warning event
    per distinct refusal (not one per retry). If the status write is refused too, the log says it."""
    owner = owner_of(body)
    old: dict[str, Any] = dict(body.get("status") or {})
    message = forbidden_message(error.message)
    ready: dict[str, Any] = next((c for c in old.get("conditions", []) if c.get("type") == "Ready"), {})
    if ready.get("reason") == "Forbidden" and ready.get("message") == message:
        return
    conditions = _over_old(old, forbidden_conditions(message, owner.generation))
    try:
        await _write_status(api, owner, old, {**old, "conditions": conditions})
    except ApiError as exc:
        log.warning("%s/%s: %s (and the status write failed: %s)", owner.namespace, owner.name, message, exc)
    await notify("Warning", "Forbidden", message)


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}
