"""The builtin worker's UnsupportedCheckpoint exit (an FP8 checkpoint) is reported under its own reason, and a
refused plan carries its reason into the conditions (issue 20 items 5 and 6)."""

from __future__ import annotations

from deepseek_operator import gpufit
from deepseek_operator.api import parse_spec
from deepseek_operator.observe import pod_issue
from deepseek_operator.status import insufficient_memory_conditions
from tests.unit.test_observe_status import IMG, pod

# What the worker writes (worker engine/checkpoint.py through server/lifecycle.py; tests/worker/test_fp8_checkpoint.py).
MESSAGE = ("model load failed: UnsupportedCheckpoint: FP8 checkpoint (quantization_config: fp8 e4m3, 128x128 block "
           "scales): the builtin runtime cannot serve it offline (transformers' FP8 path fetches a kernel from the "
           "hub) and bitsandbytes cannot load it; set spec.runtime.name: vllm or sglang")


def test_the_workers_unsupported_checkpoint_is_its_own_reason() -> None:
    issue = pod_issue(pod(containerStatuses=[{"name": "worker", "lastState": {
        "terminated": {"exitCode": 3, "message": MESSAGE}}}]), IMG)
    assert issue is not None and (issue.reason, issue.fatal) == ("UnsupportedCheckpoint", True)
    assert "set spec.runtime.name: vllm or sglang" in issue.message


def test_a_refused_plan_names_its_reason_in_every_condition() -> None:
    conds = insufficient_memory_conditions("primary: model ... is stored in FP8", 3, gpufit.UNSUPPORTED)
    assert [(c["type"], c["status"], c["reason"]) for c in conds] == [
        ("Ready", "False", "UnsupportedCheckpoint"), ("Progressing", "False", "UnsupportedCheckpoint"),
        ("Degraded", "True", "UnsupportedCheckpoint")]


def test_advisory_is_read_from_spec_gpu_fit() -> None:
    base = {"image": "r/w:1", "model": {"id": "deepseek-ai/DeepSeek-V3"}}
    assert not gpufit.advisory(parse_spec(base))
    assert not gpufit.advisory(parse_spec({**base, "gpuFit": {"mode": "Enforce"}}))
    assert gpufit.advisory(parse_spec({**base, "gpuFit": {"mode": "Advisory"}}))
