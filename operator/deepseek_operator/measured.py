"""Pure: a worker's start-up measurements (its report ConfigMap) against the variant's GPU-fit plan.

The worker writes one JSON document into `data.measurements` of its variant's report ConfigMap
(render/measurements.py; worker/deepseek_worker/report.py writes it; docs/gpu-sizing.md). Every pod
of the variant writes the same key, so the last one to start wins. The document echoes the settings
the worker ran with; a report whose settings are not the variant's current ones (a pod of the
previous template) is ignored, so a new plan is never compared with an old pod.

Compared per GPU, each only where both sides know it: the weights (always), the KV pool's bytes and
the allocator's peak (only when the plan knows the GPU's memory, so the pool size is planned; the
peak only on a GPU). A difference above TOLERANCE in any of them makes `matches` False.

The request gateway writes `data.gateway` of its own report ConfigMap (render/gateway.py,
worker/deepseek_worker/gateway/report.py): its cold starts per variant and its fallback share;
`read_gateway_report` turns that into status.gateway and status.variants[].coldStart, and
`declared_load_seconds` the measured cold start into the gateway's hold.loadSeconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
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


GATEWAY_KEY = "gateway"  # the data key the request gateway writes (worker/deepseek_worker/gateway/report.py)


@dataclass(frozen=True)
class GatewayReport:
    """The request gateway's report: status.gateway and each variant's status.variants[].coldStart."""

    gateway: dict[str, Any]
    cold_starts: dict[str, dict[str, Any]]


def _seconds(value: float) -> str:
    return f"{value:.1f}"


def cold_start_status(raw: dict[str, Any], load: str = "") -> dict[str, Any] | None:
    """status.variants[].coldStart (api.ColdStartStatus) from one variant's entry of the gateway's report;
    `load`: the variant's measured model load time (gpuFit.measured.loadSeconds), "" when unknown: the
    rest of the cold start is scheduling, the pod's start and the gateway. None when unreadable."""
    last, p50 = _number(raw, "lastSeconds"), _number(raw, "p50Seconds")
    if not last:
        return None
    count = int(_number(raw, "count"))
    message = f"first held request to its first byte: {last:.1f} s (p50 of the last {count}: {p50:.1f} s)"
    if load:
        rest = max(0.0, last - float(load))
        message += f"; the model's load {load} s, scheduling, pod start and the gateway {rest:.1f} s"
    out = {"lastSeconds": _seconds(last), "p50Seconds": _seconds(p50 or last), "count": count,
           "observedAt": str(raw.get("observedAt", ""))[:40], "loadSeconds": load, "message": message}
    return {k: v for k, v in out.items() if v != ""}


def read_gateway_report(config_map: dict[str, Any] | None, variants: list[str],
                        loads: dict[str, str] | None = None) -> GatewayReport | None:
    """The gateway's report in `config_map` (data.gateway), for the `variants` that exist now (an old
    variant's cold starts are left out); `loads`: each variant's measured load time, when known
    (cold_start_status). None when there is none or it is not readable."""
    report = _json_entry(config_map, GATEWAY_KEY)
    if report is None:
        return None
    share = min(1.0, _number(report, "fallbackShare"))
    gateway = {"fallbackShare": f"{share:.2f}", "pod": str(report.get("pod", ""))[:253],
               "reportedAt": str(report.get("reportedAt", ""))[:40]}
    colds = report.get("coldStarts")
    colds = colds if isinstance(colds, dict) else {}
    cold_starts = {}
    for name in variants:
        entry = colds.get(name)
        found = cold_start_status(entry, (loads or {}).get(name, "")) if isinstance(entry, dict) else None
        if found is not None:
            cold_starts[name] = found
    return GatewayReport({k: v for k, v in gateway.items() if v != ""}, cold_starts)


def latest_cold_starts(found: dict[str, dict[str, Any]], previous: dict[str, Any],
                       variants: list[str]) -> dict[str, dict[str, Any]]:
    """Per variant of `variants`, the later (by observedAt, RFC 3339) of the report's cold start and the
    one the previous status shows. Each gateway replica writes the same key, so a replica that never
    held a request (its report has a fallback share, no cold start) must not erase another's."""
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
