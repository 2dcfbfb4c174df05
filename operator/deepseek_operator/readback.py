"""What a reconcile pass reads back after applying: each variant's workload and pods, the model
caches' downloads and the workers' and the gateway's measurement reports.

Contract: every read goes through `api` (the watch-fed caches: an idle resource costs no request) and
every function reads what the pass's `Desired` names, resolved and planned once: the variants, the
images rendered for them, the GPU-fit plans. The pure classification is observe.py's (a variant's
phase), download.py's (a cache's progress) and measured.py's (a report against its plan). One write:
the gateway report's entries of pods silent for an hour are removed (`prune_gateway_report`), with
one request, and only when there is such an entry.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from typing import Any

from deepseek_operator import measured
from deepseek_operator.api import ResolvedVariant
from deepseek_operator.desired import Desired
from deepseek_operator.download import DownloadState, download_state
from deepseek_operator.integrations import multinode_missing
from deepseek_operator.k8s import KINDS, ApiError, K8s
from deepseek_operator.lws_status import as_deployment
from deepseek_operator.observe import Phase, VariantObservation, VariantState, variant_state
from deepseek_operator.render import multinode
from deepseek_operator.render.common import Capabilities, Owner, cache_name, deployment_name, selector_labels
from deepseek_operator.render.gateway import gateway_name, report_configmap
from deepseek_operator.render.measurements import report_name

DEPLOYMENT = KINDS[("apps/v1", "Deployment")]
LEADER_WORKER_SET = KINDS[(multinode.API_VERSION, multinode.KIND)]
POD = KINDS[("v1", "Pod")]
EVENT = KINDS[("v1", "Event")]
JOB = KINDS[("batch/v1", "Job")]
CONFIG_MAP = KINDS[("v1", "ConfigMap")]
CLAIM = KINDS[("v1", "PersistentVolumeClaim")]
Pods = dict[str, list[dict[str, Any]]]  # variant -> its pods, as observed
CONFLICT = 409
log = logging.getLogger(__name__)


async def observe(api: K8s, want: Desired, held: dict[str, DownloadState]) -> tuple[list[VariantState], Pods]:
    """Read each variant's Deployment (LeaderWorkerSet: lws_status.py) and pods and classify them
    (primary first); the pods too. A `held` variant (its model cache not downloaded yet) is rolling
    out, or failed, for that reason; a multi-node one without the LeaderWorkerSet API has failed. An
    OOMAtLoad carries the variant's plan from `want.fits`: the one in status.gpuFit."""
    owner, spec = want.owner, want.spec
    states, all_pods = [], {}
    events = await api.list(EVENT, owner.namespace, {})  # volume warnings of the namespace's pods (cache.py)
    spans = multinode.spans_nodes(spec)
    for variant in want.variants:
        dep = await _workload(api, owner, variant.name, spans, want.caps)
        pods = all_pods[variant.name] = await api.list(POD, owner.namespace, selector_labels(owner, variant.name))
        image = want.images.get(variant.name, variant.image)
        fit = want.fits.get(variant.name)
        state = variant_state(VariantObservation(variant.name, image, wanted_replicas(variant, dep), dep, pods,
                                                 fit.message if fit is not None else "", events))
        if spans and not want.caps.leader_worker_set:
            message = multinode_missing(spec)
            state = dataclasses.replace(state, phase="Failed", reason="LeaderWorkerSetMissing", fatal=False,
                                        message=f"{variant.name}: {message}")
        download = held.get(variant.name)
        if download is not None:
            phase: Phase = "RollingOut" if download.reason == "Downloading" else "Failed"
            state = dataclasses.replace(state, phase=phase, reason=download.reason, fatal=False,
                                        message=f"{variant.name}: {download.message}")
        states.append(state)
    return states, all_pods


def wanted_replicas(variant: ResolvedVariant, workload: dict[str, Any] | None) -> int:
    """The pods a variant should have now: its replicas, or, while an autoscaler owns the count
    (render/autoscaling.py), the count it last set on the live workload (minReplicas before it exists)."""
    if variant.autoscaling is None:
        return variant.replicas
    if workload is None:
        return variant.autoscaling.min_replicas
    return int((workload.get("spec") or {}).get("replicas", 1))


async def observe_gateway(api: K8s, want: Desired) -> dict[str, Any] | None:
    """The request gateway's live Deployment (render/gateway.py); None while it is off or absent."""
    if not want.spec.gateway_enabled:
        return None
    return await api.get(DEPLOYMENT, want.owner.namespace, gateway_name(want.owner))


async def _workload(api: K8s, owner: Owner, variant: str, spans: bool, caps: Capabilities) -> dict[str, Any] | None:
    """A variant's Deployment, or its LeaderWorkerSet read as one (None where the API is not served)."""
    if not spans:
        return await api.get(DEPLOYMENT, owner.namespace, deployment_name(owner, variant))
    if not caps.leader_worker_set:
        return None
    return as_deployment(await api.get(LEADER_WORKER_SET, owner.namespace, multinode.lws_name(owner, variant)))


async def observe_downloads(api: K8s, want: Desired) -> dict[str, DownloadState]:
    """The download state of each cached variant's model, from the caches (Job, ConfigMap, claim);
    variants of one model share its one reading."""
    now = datetime.now(UTC)
    owner = want.owner
    by_cache: dict[str, DownloadState] = {}
    out = {}
    for variant in want.variants:
        model = variant.model
        if model.cache is None or not model.cached:
            continue
        name = cache_name(owner, model)
        if name not in by_cache:
            job = await api.get(JOB, owner.namespace, name)
            progress = await api.get(CONFIG_MAP, owner.namespace, name)
            claim = await api.get(CLAIM, owner.namespace, name)
            names = (name, owner.namespace, f"{model.id}@{model.revision}")
            by_cache[name] = download_state(names, job, progress, claim, model.cache.stall_timeout_seconds, now)
        out[variant.name] = by_cache[name]
    return out


async def observe_reports(api: K8s, want: Desired) -> dict[str, dict[str, Any]]:
    """status.gpuFit.measured of each variant whose worker reported with its current settings
    (measured.py), from the report ConfigMaps in the watch-fed cache."""
    out = {}
    for variant in want.variants:
        config_map = await api.get(CONFIG_MAP, want.owner.namespace, report_name(want.owner, variant.name))
        report = measured.read_report(config_map, measured.expected_settings(variant, want.spec.serving))
        if report is not None and variant.name in want.fits:
            out[variant.name] = measured.compare(want.fits[variant.name], report)
    return out


async def observe_gateway_report(api: K8s, want: Desired,
                                 reports: dict[str, dict[str, Any]]) -> measured.GatewayReport | None:
    """The request gateway's report (measured.read_gateway_report: its replicas' entries combined), from
    its report ConfigMap in the watch-fed cache, its cold starts merged with the previous status's
    (measured.latest_cold_starts); None while the gateway is off. `reports`: observe_reports' answer,
    whose measured load times break each cold start down. Expired entries are pruned on the way
    (prune_gateway_report)."""
    if not want.spec.gateway_enabled:
        return None
    namespace, configmap, now = want.owner.namespace, report_configmap(want.owner), datetime.now(UTC)
    config_map = await prune_gateway_report(api, namespace, configmap,
                                            await api.get(CONFIG_MAP, namespace, configmap), now)
    loads = {name: str(m.get("loadSeconds", "")) for name, m in reports.items()}
    names = [v.name for v in want.variants]
    report = measured.read_gateway_report(config_map, names, loads, now=now) or measured.GatewayReport({}, {})
    return dataclasses.replace(report, cold_starts=measured.latest_cold_starts(
        report.cold_starts, dict(want.previous), names))


async def prune_gateway_report(api: K8s, namespace: str, name: str, config_map: dict[str, Any] | None,
                               now: datetime) -> dict[str, Any] | None:
    """Remove the expired entries (measured.expired_gateway_keys: pods silent for an hour) of the report
    ConfigMap `name`, as cached in `config_map`, with one JSON merge patch setting them to null; no
    request when there is none. The ConfigMap as it is now: the patch's answer, else `config_map`.

    The patch carries the cached resourceVersion, so a replica's write since the cache's copy (which may
    be a revived entry) makes it a 409 instead of a lost report: that write's watch event brings the next
    reconcile, which looks again. A refused prune (a 409; RBAC without `patch` on ConfigMaps) is logged and
    left for a later pass (housekeeping never holds up the status)."""
    expired = measured.expired_gateway_keys(config_map, now)
    if config_map is None or not expired:
        return config_map
    patch: dict[str, Any] = {"data": dict.fromkeys(expired)}
    version = (config_map.get("metadata") or {}).get("resourceVersion")
    if version:
        patch["metadata"] = {"resourceVersion": version}
    try:
        return await api.patch(CONFIG_MAP, namespace, name, patch)
    except ApiError as exc:
        level = logging.DEBUG if exc.code == CONFLICT else logging.WARNING
        log.log(level, "removing %d expired gateway report entries of configmap %s/%s: %s", len(expired),
                namespace, name, exc)
        return config_map
