"""Issue 21: status.compute_status builds the typed api.DeepSeekDeploymentStatus and dumps it once.

The wire dict holds exactly the fields the pass set (no model default such as `strategy: ""` appears
where the pass had none), with the CRD's camelCase names; a value the model refuses fails here, not
at the apiserver.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from deepseek_operator.api import DeepSeekDeploymentStatus
from deepseek_operator.observe import VariantState
from deepseek_operator.status import Rollback, StatusInput, compute_status

NOW = "2026-01-01T00:00:00Z"
FIT = {"fits": "True", "gpus": 1, "model": "deepseek-r1-distill-qwen-7b", "message": "fits",
       "summary": "True 20.0/79.6Gi", "requiredPerGPU": "20.0Gi", "availablePerGPU": "79.6Gi",
       "warnings": ["a warning"]}
MEASURED = {"matches": "True", "pod": "chat-primary-x", "reportedAt": NOW, "weightsPerGPU": "14.2Gi",
            "kvPoolTokens": 1024, "message": "within 10% of the plan"}
DOWNLOAD = {"phase": "Complete", "claimName": "chat-cache", "job": "chat-cache", "model": "m@main", "commit": "",
            "bytesDone": 10, "bytesTotal": 10, "percent": 100, "bytesPerSecond": 0, "progressAt": "",
            "summary": "Complete", "message": "done"}


def variant(name: str, ready: int = 1) -> VariantState:
    return VariantState(name, "Available", f"reg/worker:{name}", 1, 1, ready, 1, "Available", f"{name}: ok")


def inputs(**overrides: Any) -> StatusInput:
    base: dict[str, Any] = dict(
        generation=3, variants=[variant("primary"), variant("canary")], weights={"primary": 90, "canary": 10},
        selector="deepseek.ai/deployment=chat", stable_image="reg/worker:primary", rollback=Rollback(),
        auto_rollback=True, strategies={"primary": ("Surge", "abc", "")}, intents={"canary": "h1"},
        gpu_fit={"primary": FIT, "canary": FIT}, downloads={"canary": DOWNLOAD}, measured={"primary": MEASURED})
    return StatusInput(**{**base, **overrides})


def test_the_status_holds_what_the_pass_set_and_nothing_else() -> None:
    status = compute_status(inputs(), {}, NOW)
    primary, canary = status["variants"]
    assert primary == {"name": "primary", "weight": 90, "image": "reg/worker:primary", "replicas": 1,
                       "readyReplicas": 1, "strategy": "Surge", "strategyTemplate": "abc",
                       "gpuFit": {**FIT, "measured": MEASURED}}
    assert canary == {"name": "canary", "weight": 10, "image": "reg/worker:canary", "replicas": 1,
                      "readyReplicas": 1, "specHash": "h1", "gpuFit": FIT, "download": DOWNLOAD}
    assert status["gpuFit"] == primary["gpuFit"] and "download" not in status
    assert set(status) == {"observedGeneration", "replicas", "readyReplicas", "updatedReplicas", "ready", "selector",
                           "image", "failedImage", "failedReason", "url", "gpuFit", "variants", "conditions"}
    assert status["conditions"][0] == {"type": "Ready", "status": "True", "reason": "Ready",
                                       "message": "2 replicas ready in 2 variant(s)", "observedGeneration": 3,
                                       "lastTransitionTime": NOW}
    assert DeepSeekDeploymentStatus.model_validate(status).model_dump(by_alias=True, exclude_unset=True) == status


def test_a_figure_the_crd_refuses_fails_in_the_operator() -> None:
    with pytest.raises(ValidationError):
        compute_status(inputs(downloads={"canary": {**DOWNLOAD, "percent": 101}}), {}, NOW)
