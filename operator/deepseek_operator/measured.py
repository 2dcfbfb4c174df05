"""Pure: a worker's start-up measurements (its report ConfigMap) against the variant's GPU-fit plan.

The worker writes one JSON document into `data.measurements` of its variant's report ConfigMap
(render/measurements.py; worker/deepseek_worker/report.py writes it; docs/gpu-sizing.md). Every pod
of the variant writes the same key, so the last one to start wins. The document echoes the settings
the worker ran with; a report whose settings are not the variant's current ones (a pod of the
previous template) is ignored, so a new plan is never compared with an old pod.

Compared per GPU, each only where both sides know it: the weights (always), the KV pool's bytes and
the allocator's peak (only when the plan knows the GPU's memory, so the pool size is planned; the
peak only on a GPU). A difference above TOLERANCE in any of them makes `matches` False.

Each replica of the request gateway writes its own key `data.gateway.<pod>` of the gateway's report
ConfigMap (render/gateway.py, worker/deepseek_worker/gateway/report.py): its cold starts per
variant, its fallback share and the requests that share is of. `read_gateway_report` combines the
replicas that reported in the last GATEWAY_STALE_SECONDS into status.gateway and
status.variants[].coldStart, `expired_gateway_keys` names the entries of pods silent for
GATEWAY_PRUNE_SECONDS (readback.py removes them), and `declared_load_seconds` turns the measured cold
start into the gateway's hold.loadSeconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from deepseek_operator import family
from deepseek_operator.api import ResolvedVariant, Serving
from deepseek_operator.gpufit import GPU_MEMORY_UTILIZATION, MAX_NUM_BATCHED_TOKENS, GpuFit, gib

REPORT_KEY = "measurements"  # the ConfigMap data key the worker writes
MAX_REPORT_BYTES = 8192  # a report is a few hundred bytes; anything larger is not read
TOLERANCE = 0.10


@dataclass(frozen=True)
class Measurement:
    """One worker's report (figures as the worker measures them, over all its GPUs together: the
    weights, the pool, and the allocator's reserved peak summed over the devices)."""

    pod: str = ""
    reported_at: str = ""
    device: str = ""
    weight_bytes: int = 0
    kv_cache_bytes_per_token: int = 0
    kv_pool_tokens: int = 0
    kv_pool_bytes: int = 0
    peak_memory_bytes: int = 0
    load_seconds: float = 0.0


def expected_settings(variant: ResolvedVariant, serving: Serving) -> dict[str, Any]:
    """The settings a worker of `variant` runs with, as the report echoes them (render/worker_env.py)."""
    model = variant.model
    return {
        "model": model.id, "dtype": model.dtype, "quantization": model.quantization,
        "maxModelLen": family.lengths(model, serving).max_model_len, "maxBatchSize": serving.max_batch_size,
        "gpuMemoryUtilization": serving.gpu_memory_utilization or GPU_MEMORY_UTILIZATION,
        "maxNumBatchedTokens": serving.max_num_batched_tokens or MAX_NUM_BATCHED_TOKENS,
    }


def _same(expected: Any, reported: Any) -> bool:
    if isinstance(expected, float):
        return isinstance(reported, int | float) and math.isclose(expected, float(reported), rel_tol=1e-9)
    return bool(expected == reported)


def _number(report: dict[str, Any], key: str) -> float:
    value = report.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return 0.0
    return float(value)


def _json_entry(config_map: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    """The JSON object at data[`key`] of a report ConfigMap; None when absent, too large or not an object."""
    raw = ((config_map or {}).get("data") or {}).get(key, "")
    if not raw or len(raw) > MAX_REPORT_BYTES:
        return None
    try:
        report = json.loads(raw)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def read_report(config_map: dict[str, Any] | None, expected: dict[str, Any]) -> Measurement | None:
    """The report in `config_map`, or None when there is none, it is not readable, or it was written
    with other settings than `expected` (a pod of an earlier template)."""
    report = _json_entry(config_map, REPORT_KEY)
    if report is None or not isinstance(report.get("settings"), dict):
        return None
    settings = report["settings"]
    if not all(_same(value, settings.get(key)) for key, value in expected.items()):
        return None
    return Measurement(
        pod=str(report.get("pod", ""))[:253], reported_at=str(report.get("reportedAt", ""))[:40],
        device=str(report.get("device", ""))[:40], weight_bytes=int(_number(report, "weightBytes")),
        kv_cache_bytes_per_token=int(_number(report, "kvCacheBytesPerToken")),
        kv_pool_tokens=int(_number(report, "kvPoolTokens")), kv_pool_bytes=int(_number(report, "kvPoolBytes")),
        peak_memory_bytes=int(_number(report, "peakMemoryBytes")), load_seconds=_number(report, "loadSeconds"))


def _percent(measured: int, planned: int) -> float:
    return (measured - planned) / planned * 100 if planned else 0.0


def compare(fit: GpuFit, m: Measurement) -> dict[str, Any]:
    """status.gpuFit.measured (api.MeasuredStatus): the figures per GPU, and whether each is within
    TOLERANCE of the plan; `message` gives every compared figure with its difference."""
    gpus = max(fit.gpus, 1)
    weights, pool, peak = m.weight_bytes // gpus, m.kv_pool_bytes // gpus, m.peak_memory_bytes // gpus
    checks: list[tuple[str, int, int]] = []  # (what, measured, planned) per GPU
    if fit.weights:
        checks.append(("weights", weights, fit.weights))
        if fit.available:
            checks.append(("KV pool", pool, fit.kv_cache))
            if peak:
                checks.append(("peak", peak, fit.peak))
    parts, off = [], []
    for what, measured, planned in checks:
        diff = _percent(measured, planned)
        parts.append(f"{what} {gib(measured)} GiB (plan {gib(planned)}, {diff:+.1f}%)")
        if planned and abs(diff) > TOLERANCE * 100:
            off.append(f"{what} {diff:+.1f}%")
    where = f"{m.kv_pool_tokens} KV tokens, loaded in {m.load_seconds:.1f} s on {m.device or '?'} by pod {m.pod or '?'}"
    if not checks:
        message = f"measured per GPU: weights {gib(weights)} GiB; {where}; the plan has no figures to compare"
    elif off:
        message = (f"the worker's measurements differ from the GPU-fit plan by more than {TOLERANCE:.0%} "
                   f"({', '.join(off)}): {'; '.join(parts)}; {where}")
    else:
        message = f"within {TOLERANCE:.0%} of the plan: {'; '.join(parts)}; {where}"
    out: dict[str, Any] = {
        "matches": "False" if off else "True", "pod": m.pod, "reportedAt": m.reported_at, "device": m.device,
        "weightsPerGPU": f"{gib(weights)}Gi", "kvPoolTokens": m.kv_pool_tokens, "kvPoolPerGPU": f"{gib(pool)}Gi",
        "loadSeconds": f"{m.load_seconds:.1f}", "message": message,
    }
    if peak:
        out["peakMemoryPerGPU"] = f"{gib(peak)}Gi"
    return {k: v for k, v in out.items() if v != ""}


def condition_of(measured: dict[str, dict[str, Any]], expected: list[str]) -> tuple[str, str, str] | None:
    """The GPUFitAccurate condition (status, reason, message) from each variant's `measured` status;
    None while no variant has reported (the condition is then left out). `expected`: the variants
    that should report (GPU variants)."""
    if not measured:
        return None
    off = [f"{name}: {m['message']}" for name, m in measured.items() if m.get("matches") == "False"]
    if off:
        return "False", "PlanMismatch", "; ".join(off)
    missing = [name for name in expected if name not in measured]
    if missing:
        return "Unknown", "NotReported", (f"no measurements from {', '.join(missing)} yet (the worker reports "
                                          "after loading; docs/gpu-sizing.md)")
    return "True", "MatchesPlan", "; ".join(f"{name}: {m['message']}" for name, m in measured.items())


GATEWAY_KEY = "gateway"  # the key every replica of a gateway from before per-pod keys wrote (still read)
GATEWAY_KEY_PREFIX = "gateway."  # + the pod: each replica's own key (worker/deepseek_worker/gateway/report.py)
# A replica's entry reported longer ago than this is left out. A replica with requests in its window
# rewrites its entry at least every 2 minutes (the gateway's report.REFRESH_SECONDS), so 10 minutes of
# silence is a pod gone, or one idle that long (its window long empty: nothing to weigh); five refreshes
# absorb failed writes and clock skew between the nodes.
GATEWAY_STALE_SECONDS = 600
# An entry reported longer ago than this is removed from the ConfigMap (`expired_gateway_keys`):
# otherwise every pod name a rollout, a scale-down or a drain gave a replica stays there. Far above the
# staleness bound: a live replica idle that long writes again once it has something to say.
GATEWAY_PRUNE_SECONDS = 3600


@dataclass(frozen=True)
class GatewayReport:
    """The request gateway's report: status.gateway and each variant's status.variants[].coldStart."""

    gateway: dict[str, Any]
    cold_starts: dict[str, dict[str, Any]]


def _seconds(value: float) -> str:
    return f"{value:.1f}"


def cold_start_status(raw: dict[str, Any], load: str = "", replicas: int = 1) -> dict[str, Any] | None:
    """status.variants[].coldStart (api.ColdStartStatus) from one variant's entry of the gateway's report
    (or `combined_cold_start`'s, of `replicas` replicas); `load`: the variant's measured model load time
    (gpuFit.measured.loadSeconds), "" when unknown: the rest of the cold start is scheduling, the pod's
    start and the gateway. None when unreadable."""
    last, p50 = _number(raw, "lastSeconds"), _number(raw, "p50Seconds")
    if not last:
        return None
    count = int(_number(raw, "count"))
    over = f" over {replicas} gateway replicas" if replicas > 1 else ""
    message = f"first held request to its first byte: {last:.1f} s (p50 of the last {count}{over}: {p50:.1f} s)"
    if load:
        rest = max(0.0, last - float(load))
        message += f"; the model's load {load} s, scheduling, pod start and the gateway {rest:.1f} s"
    out = {"lastSeconds": _seconds(last), "p50Seconds": _seconds(p50 or last), "count": count,
           "observedAt": str(raw.get("observedAt", ""))[:40], "loadSeconds": load, "message": message}
    return {k: v for k, v in out.items() if v != ""}


def combined_cold_start(raws: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant's cold-start entries of several replicas as one: lastSeconds and observedAt of the
    latest (by observedAt, RFC 3339), count summed, and p50Seconds the count-weighted mean of the
    replicas' p50s (each keeps the median of its own last 20, not the samples: the pooled median is not
    known; the weighted mean is it when the replicas see the same cold starts, and lies between theirs)."""
    latest = max(raws, key=lambda raw: str(raw.get("observedAt", "")))
    weights = [max(1.0, _number(raw, "count")) for raw in raws]
    p50 = sum(w * _number(raw, "p50Seconds") for w, raw in zip(weights, raws, strict=True)) / sum(weights)
    return {"lastSeconds": _number(latest, "lastSeconds"), "p50Seconds": p50,
            "count": int(sum(_number(raw, "count") for raw in raws)), "observedAt": latest.get("observedAt", "")}


def _reported_at(report: dict[str, Any]) -> datetime | None:
    """The entry's reportedAt (RFC 3339, UTC when it names no zone); None when absent or unreadable."""
    try:
        when = datetime.fromisoformat(str(report.get("reportedAt", "")))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def gateway_entries(config_map: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The readable entries of the gateway's report ConfigMap by key: each replica's `gateway.<pod>`,
    and the legacy `gateway` (a gateway image from before per-pod keys: every replica wrote it)."""
    data = (config_map or {}).get("data") or {}
    keys = [key for key in data if key == GATEWAY_KEY or key.startswith(GATEWAY_KEY_PREFIX)]
    found = {key: _json_entry(config_map, key) for key in sorted(keys)}
    return {key: report for key, report in found.items() if report is not None}


def _age_seconds(report: dict[str, Any], now: datetime) -> float | None:
    when = _reported_at(report)
    return (now - when).total_seconds() if when is not None else None


def fresh_entries(entries: dict[str, dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The entries reported at most GATEWAY_STALE_SECONDS before `now` (one without a readable
    reportedAt cannot be shown fresh: left out)."""
    ages = ((report, _age_seconds(report, now)) for report in entries.values())
    return [report for report, age in ages if age is not None and age <= GATEWAY_STALE_SECONDS]


def _counts(report: dict[str, Any]) -> tuple[float, float] | None:
    """(requests, fallbackRequests) of an entry that has them (a gateway from before the counts: None)."""
    requests, out = report.get("requests"), report.get("fallbackRequests")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (requests, out)):
        return None
    return _number(report, "requests"), min(_number(report, "fallbackRequests"), _number(report, "requests"))


def combined_share(reports: list[dict[str, Any]]) -> float:
    """The fallback share of the replicas' windows together: requests sent out over requests routed,
    summed over the replicas; the plain mean of their shares when an entry has no counts (a gateway
    image from before them, during its rollout). 0 without a request or an entry."""
    counts = [_counts(report) for report in reports]
    if not reports:
        return 0.0
    if any(c is None for c in counts):
        return sum(min(1.0, _number(report, "fallbackShare")) for report in reports) / len(reports)
    requests = sum(c[0] for c in counts if c is not None)
    return min(1.0, sum(c[1] for c in counts if c is not None) / requests) if requests else 0.0


def read_gateway_report(config_map: dict[str, Any] | None, variants: list[str],
                        loads: dict[str, str] | None = None, *, now: datetime) -> GatewayReport | None:
    """The gateway replicas' reports in `config_map` (gateway_entries) combined, for the `variants`
    that exist now (an old variant's cold starts are left out); only entries fresh at `now`
    (fresh_entries) count. status.gateway: the combined share (combined_share), how many replicas
    that is of (`replicasReporting`, 0 when every entry is stale: an idle or gone gateway), and the pod
    and time of the latest report. Cold starts per variant: combined_cold_start over the fresh
    entries that have one; `loads`: each variant's measured load time, when known
    (cold_start_status). None when there is no readable entry."""
    entries = gateway_entries(config_map)
    if not entries:
        return None
    latest = max(entries.values(), key=lambda report: _reported_at(report) or datetime.min.replace(tzinfo=UTC))
    fresh = fresh_entries(entries, now)
    gateway = {"fallbackShare": f"{combined_share(fresh):.2f}", "replicasReporting": len(fresh),
               "pod": str(latest.get("pod", ""))[:253], "reportedAt": str(latest.get("reportedAt", ""))[:40]}
    cold_starts = {}
    for name in variants:
        raws = [entry for entry in (_cold_entry(report, name) for report in fresh) if entry is not None]
        found = (cold_start_status(combined_cold_start(raws), (loads or {}).get(name, ""), len(raws))
                 if raws else None)
        if found is not None:
            cold_starts[name] = found
    return GatewayReport({k: v for k, v in gateway.items() if v != ""}, cold_starts)


def _cold_entry(report: dict[str, Any], variant: str) -> dict[str, Any] | None:
    """The variant's readable cold-start entry in one replica's report."""
    colds = report.get("coldStarts")
    entry = colds.get(variant) if isinstance(colds, dict) else None
    return entry if isinstance(entry, dict) and _number(entry, "lastSeconds") else None


def expired_gateway_keys(config_map: dict[str, Any] | None, now: datetime) -> list[str]:
    """The keys of entries reported more than GATEWAY_PRUNE_SECONDS before `now`: to remove. An entry
    whose age cannot be read is left alone (no gateway writes one; it is not ours to judge)."""
    ages = ((key, _age_seconds(report, now)) for key, report in gateway_entries(config_map).items())
    return [key for key, age in ages if age is not None and age > GATEWAY_PRUNE_SECONDS]


def latest_cold_starts(found: dict[str, dict[str, Any]], previous: dict[str, Any],
                       variants: list[str]) -> dict[str, dict[str, Any]]:
    """Per variant of `variants`, the later (by observedAt, RFC 3339) of the report's cold start and the
    one the previous status shows: a cold start stays in status after its replica's entry went stale
    (the pod gone, or idle) or was pruned, until a later one replaces it."""
    out = {name: cold for name, cold in found.items() if name in variants}
    for entry in previous.get("variants", []) or []:
        name, kept = entry.get("name"), entry.get("coldStart")
        if name not in variants or not isinstance(kept, dict):
            continue
        new = out.get(name)
        if new is None or str(new.get("observedAt", "")) < str(kept.get("observedAt", "")):
            out[name] = kept
    return out


def declared_load_seconds(previous: dict[str, Any]) -> int:
    """The longest p50 cold start in a status (status.variants[].coldStart.p50Seconds), whole seconds
    rounded up; 0 when none was measured. The gateway's hold.loadSeconds prefers it to the GPU-fit
    estimate: it is what a held request did wait, scheduling and pod start included."""
    found = 0.0
    for variant in previous.get("variants", []) or []:
        try:
            found = max(found, float(((variant.get("coldStart") or {}).get("p50Seconds")) or 0))
        except (TypeError, ValueError):
            continue
    return math.ceil(found) if math.isfinite(found) else 0
