"""The closed loop of the GPU-fit plan: the report channel (render/measurements.py), the knobs in the
worker's env, the report against the plan (measured.py), status and the Warning (reconcile.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deepseek_operator import gpufit, measured
from deepseek_operator.announce import measurements as announce_measurements
from deepseek_operator.api import InvalidSpec, parse_spec, resolve_variants
from deepseek_operator.measured import Measurement, compare, condition_of, expected_settings, read_report
from deepseek_operator.render.common import Owner
from deepseek_operator.render.measurements import render_reports, report_name
from deepseek_operator.render.workload import render_workload
from deepseek_operator.status import Rollback, StatusInput, compute_status
from tests.unit.test_observe_status import state

OWNER = Owner("chat", "team-a", "uid-1", 3)
QWEN7 = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
GIB = 1024**3


def spec(**extra: Any) -> Any:
    return parse_spec({"image": "reg/worker:1", "model": {"id": QWEN7}, "resources": {"gpus": 1},
                       "scheduling": {"nodeSelector": H100}, **extra})


def plan(s: Any) -> gpufit.GpuFit:
    return gpufit.plan_variants(s)["primary"]


def report(s: Any, **override: Any) -> dict[str, Any]:
    """A worker's ConfigMap whose figures are exactly the plan's (override to move them)."""
    fit = plan(s)
    doc: dict[str, Any] = {
        "pod": "chat-primary-abc-1", "reportedAt": "2026-01-01T00:00:00Z", "device": "cuda:0",
        "weightBytes": fit.weights, "kvCacheBytesPerToken": 57344, "kvPoolTokens": fit.kv_pool_tokens,
        "kvPoolBytes": fit.kv_cache, "peakMemoryBytes": fit.peak, "loadSeconds": 41.25,
        "settings": {**expected_settings(resolve_variants(s)[0], s.serving), "kvCacheBytes": None},
    }
    doc.update(override)
    return {"data": {"measurements": json.dumps(doc)}}


def test_each_variant_gets_an_account_that_may_patch_only_its_report() -> None:
    s = spec(variants=[{"name": "canary", "weight": 10}])
    out = render_reports(OWNER, s)
    assert [(c["kind"], c["metadata"]["name"]) for c in out] == [
        (kind, name) for name in ("chat-primary-report", "chat-canary-report")
        for kind in ("ServiceAccount", "Role", "RoleBinding", "ConfigMap")]
    role = out[1]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["chat-primary-report"],
                              "verbs": ["patch"]}]
    assert out[2]["subjects"] == [{"kind": "ServiceAccount", "name": "chat-primary-report", "namespace": "team-a"}]
    assert out[0]["automountServiceAccountToken"] is False
    assert all(c["metadata"]["labels"]["deepseek.ai/variant"] == "primary" for c in out[:4])
    assert out[0]["metadata"] is not out[1]["metadata"]  # each child its own dict: apply may add to it
    pod = next(c for c in render_workload(OWNER, s) if c["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == ("chat-primary-report", True)
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert (env["DEEPSEEK_REPORT_NAMESPACE"], env["DEEPSEEK_REPORT_CONFIGMAP"]) == ("team-a", "chat-primary-report")
    assert len(report_name(Owner("x" * 63, "n", "u"), "canary-with-a-long-name")) <= 63


def test_the_knobs_reach_the_worker_env_only_when_set() -> None:
    def env(s: Any) -> dict[str, str]:
        dep = next(c for c in render_workload(OWNER, s) if c["kind"] == "Deployment")
        return {e["name"]: e.get("value", "") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}

    unset = env(spec())
    assert "DEEPSEEK_GPU_MEMORY_UTILIZATION" not in unset and "DEEPSEEK_MAX_NUM_BATCHED_TOKENS" not in unset
    set_ = env(spec(serving={"gpuMemoryUtilization": 0.85, "maxNumBatchedTokens": 4096}))
    assert (set_["DEEPSEEK_GPU_MEMORY_UTILIZATION"], set_["DEEPSEEK_MAX_NUM_BATCHED_TOKENS"]) == ("0.85", "4096")
    names = list(set_)
    assert names.index("DEEPSEEK_MAX_BATCH_SIZE") < names.index("DEEPSEEK_GPU_MEMORY_UTILIZATION")


@pytest.mark.parametrize(("serving", "path"), [
    ({"gpuMemoryUtilization": 0}, "spec.serving.gpuMemoryUtilization"),
    ({"gpuMemoryUtilization": 1.5}, "spec.serving.gpuMemoryUtilization"),
    ({"maxNumBatchedTokens": 8}, "spec.serving.maxNumBatchedTokens"),
])
def test_knob_errors_name_the_field(serving: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidSpec, match=path.replace(".", r"\.")):
        spec(serving=serving)


def test_a_report_within_ten_percent_matches_the_plan() -> None:
    s = spec()
    m = read_report(report(s), expected_settings(resolve_variants(s)[0], s.serving))
    assert m is not None and m.load_seconds == 41.25
    out = compare(plan(s), m)
    assert out["matches"] == "True", out
    assert out["weightsPerGPU"] == f"{gpufit.gib(plan(s).weights)}Gi" and out["loadSeconds"] == "41.2"
    assert out["message"].startswith("within 10% of the plan: weights ") and "peak" in out["message"]
    assert out["peakMemoryPerGPU"] and out["pod"] == "chat-primary-abc-1"


@pytest.mark.parametrize(("field", "factor", "what"), [
    ("weightBytes", 1.2, "weights +20.0%"),
    ("kvPoolBytes", 0.5, "KV pool -50.0%"),
    ("peakMemoryBytes", 1.15, "peak +15.0%"),
])
def test_a_figure_more_than_ten_percent_off_is_a_mismatch(field: str, factor: float, what: str) -> None:
    s = spec()
    fit = plan(s)
    planned = {"weightBytes": fit.weights, "kvPoolBytes": fit.kv_cache, "peakMemoryBytes": fit.peak}[field]
    m = read_report(report(s, **{field: int(planned * factor)}), expected_settings(resolve_variants(s)[0], s.serving))
    assert m is not None
    out = compare(fit, m)
    assert out["matches"] == "False" and what in out["message"], out["message"]


def test_what_the_plan_does_not_know_is_not_compared() -> None:
    unknown_memory = parse_spec({"image": "r/w:1", "model": {"id": QWEN7}, "resources": {"gpus": 1}})
    fit = plan(unknown_memory)
    out = compare(fit, Measurement(weight_bytes=fit.weights, kv_pool_bytes=1, peak_memory_bytes=1))
    assert out["matches"] == "True" and "KV pool" not in out["message"] and "peak" not in out["message"]
    cpu = plan(spec(resources={"gpus": 0}))
    out = compare(cpu, Measurement(weight_bytes=123, device="cpu"))
    assert out["matches"] == "True" and "the plan has no figures to compare" in out["message"]
    assert "peakMemoryPerGPU" not in out


@pytest.mark.parametrize("config_map", [
    None, {}, {"data": {}}, {"data": {"measurements": "not json"}}, {"data": {"measurements": "[1]"}},
    {"data": {"measurements": json.dumps({"weightBytes": 1})}},  # no settings: not ours to compare
    {"data": {"measurements": "x" * (measured.MAX_REPORT_BYTES + 1)}},
])
def test_unreadable_reports_are_none(config_map: dict[str, Any] | None) -> None:
    s = spec()
    assert read_report(config_map, expected_settings(resolve_variants(s)[0], s.serving)) is None


def test_a_report_of_other_settings_is_an_earlier_template_and_ignored() -> None:
    old = spec()
    new = spec(serving={"gpuMemoryUtilization": 0.8})
    assert read_report(report(old), expected_settings(resolve_variants(new)[0], new.serving)) is None
    longer = spec(model={"id": QWEN7, "maxModelLen": 4096})
    assert read_report(report(old), expected_settings(resolve_variants(longer)[0], longer.serving)) is None
    assert read_report(report(new), expected_settings(resolve_variants(new)[0], new.serving)) is not None


def test_garbage_numbers_are_zero_not_errors() -> None:
    s = spec()
    m = read_report(report(s, weightBytes="lots", peakMemoryBytes=-5, loadSeconds=float("nan"), kvPoolTokens=True),
                    expected_settings(resolve_variants(s)[0], s.serving))
    assert m is not None and (m.weight_bytes, m.peak_memory_bytes, m.load_seconds, m.kv_pool_tokens) == (0, 0, 0, 0)


def _status(measured_: dict[str, dict[str, Any]], *states: Any) -> dict[str, Any]:
    fit = gpufit.status_of(plan(spec()))
    variants = list(states) or [state()]
    inp = StatusInput(generation=3, variants=variants, weights={"primary": 100}, selector="s", stable_image="",
                      rollback=Rollback(), auto_rollback=True, gpu_fit={v.name: fit for v in variants},
                      measured=measured_)
    return compute_status(inp, {}, "2026-01-01T00:00:00Z")


def test_status_puts_the_measurement_beside_the_plan_with_a_condition() -> None:
    assert not [c for c in _status({})["conditions"] if c["type"] == "GPUFitAccurate"]
    fit = plan(spec())
    good = compare(fit, Measurement(weight_bytes=fit.weights, kv_pool_bytes=fit.kv_cache, pod="p"))
    status = _status({"primary": good})
    assert status["gpuFit"]["measured"] == good and status["variants"][0]["gpuFit"]["measured"] == good
    cond = next(c for c in status["conditions"] if c["type"] == "GPUFitAccurate")
    assert (cond["status"], cond["reason"], cond["observedGeneration"]) == ("True", "MatchesPlan", 3)
    assert [c["type"] for c in status["conditions"]][:4] == ["Ready", "Available", "Progressing", "Degraded"]
    waiting = _status({"primary": good}, state(), state("canary"))
    cond = next(c for c in waiting["conditions"] if c["type"] == "GPUFitAccurate")
    assert (cond["status"], cond["reason"]) == ("Unknown", "NotReported") and "canary" in cond["message"]


def test_condition_of_a_mismatch_names_the_variant() -> None:
    bad = {"matches": "False", "message": "weights +20.0%"}
    assert condition_of({"canary": bad, "primary": {"matches": "True", "message": "ok"}}, ["primary", "canary"]) == (
        "False", "PlanMismatch", "canary: weights +20.0%")


async def test_one_warning_per_worker_that_reports_a_mismatch() -> None:
    events: list[tuple[str, str, str]] = []

    async def notify(kind: str, reason: str, message: str) -> None:
        events.append((kind, reason, message))

    def status(matches: str, pod: str) -> dict[str, Any]:
        return {"variants": [{"name": "primary", "gpuFit": {"fits": "True", "measured": {
            "matches": matches, "pod": pod, "message": f"off ({pod})"}}}]}

    await announce_measurements(notify, {}, status("False", "a"))
    await announce_measurements(notify, status("False", "a"), status("False", "a"))  # the same report: no event
    await announce_measurements(notify, status("False", "a"), status("False", "b"))  # another pod: one more
    await announce_measurements(notify, status("False", "b"), status("True", "c"))
    assert events == [("Warning", "GPUFitMismatch", "primary: off (a)"),
                      ("Warning", "GPUFitMismatch", "primary: off (b)")]
