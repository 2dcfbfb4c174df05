"""bitsandbytes on a catalogued FP8 checkpoint is refused at `kubectl apply` (the CRD's CEL rule, generated
from precision.FP8_MODELS) and by api.parse_spec, naming model.quantization and spec.runtime; Advisory lets a
bf16 copy under such a name through (issue 20 item 5)."""

from __future__ import annotations

from typing import Any

import pytest
from crd_support import crd, resource

from deepseek_operator import api, precision
from deepseek_sandbox.admission import admit

PATH = "spec.model.quantization"


def _rules() -> list[dict[str, Any]]:
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return list(spec.get("x-kubernetes-validations", []))


def test_the_rule_is_generated_from_the_one_list() -> None:
    rule = next(r for r in _rules() if r.get("fieldPath") == ".model.quantization")
    assert precision.FP8_MODEL_ID in rule["rule"] and rule["message"] == api.FP8_QUANTIZATION_MESSAGE
    for key in precision.FP8_MODELS:  # each name of the list is in the rule's pattern, and only those
        assert key.replace(".", "[.]") in rule["rule"], key


@pytest.mark.parametrize("model_id", [f"deepseek-ai/{k}" for k in precision.FP8_MODELS] + ["/models/DeepSeek-R1"])
@pytest.mark.parametrize("quantization", ["int8", "nf4", "fp4"])
def test_bitsandbytes_on_an_fp8_model_is_refused_at_apply_and_by_parse_spec(model_id: str, quantization: str) -> None:
    obj = resource({"model": {"id": model_id, "quantization": quantization}, "resources": {"gpus": 8}})
    _, errors = admit(obj, crd())
    assert any(path == PATH and "spec.runtime.name vllm or sglang" in msg for path, msg in errors), errors
    with pytest.raises(api.InvalidSpec, match=r"spec.model.quantization: DeepSeek-V3/R1 checkpoints are stored in FP8"):
        api.parse_spec(obj["spec"])


@pytest.mark.parametrize("spec", [
    {"model": {"id": "deepseek-ai/DeepSeek-V3"}},  # no bitsandbytes
    {"model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "quantization": "nf4"}},  # a bf16 checkpoint
    {"model": {"id": "deepseek-ai/DeepSeek-V2", "quantization": "nf4"}},
    {"model": {"id": "/models/deepseek-v3", "quantization": "nf4"}, "gpuFit": {"mode": "Advisory"}},
])
def test_what_the_rule_lets_through(spec: dict[str, Any]) -> None:
    obj = resource({**spec, "resources": {"gpus": 8}})
    _, errors = admit(obj, crd())
    assert not [e for e in errors if e[0] == PATH], errors
    api.parse_spec(obj["spec"])


def test_a_variant_is_refused_by_parse_spec_as_inherited() -> None:
    """A variant's model is checked as inherited: its own quantization on the primary's FP8 id, and its own
    FP8 id under the primary's quantization (the operator reports InvalidSpec in status)."""
    base = {"image": "r/w:1", "resources": {"gpus": 8}}
    with pytest.raises(api.InvalidSpec, match=r"spec.variants\[0\].model.quantization: DeepSeek-V3/R1"):
        api.parse_spec({**base, "model": {"id": "deepseek-ai/DeepSeek-R1"},
                        "variants": [{"name": "c", "model": {"quantization": "nf4"}}]})
    with pytest.raises(api.InvalidSpec, match=r"spec.variants\[0\].model.quantization: DeepSeek-V3/R1"):
        api.parse_spec({**base, "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "quantization": "nf4"},
                        "variants": [{"name": "c", "model": {"id": "deepseek-ai/DeepSeek-V3.1"}}]})
