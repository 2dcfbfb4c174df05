"""A node's GPUs in the GPU-fit plan (gpufit.node_gpus): resources.gpusPerNode, else the node selector's
nvidia.com/gpu.count label, else gpufit.NODE_GPUS (issue 20 item 4; docs/gpu-sizing.md)."""

from __future__ import annotations

from typing import Any

import pytest

from deepseek_operator import gpufit
from deepseek_operator.api import parse_spec
from deepseek_operator.gpufit import node_gpus, plan_inputs, plan_variants
from tests.unit.test_gpufit import H100, H200, inputs

COUNT = "nvidia.com/gpu.count"


def r1(gpus: int, selector: dict[str, str], per_node: int | None = None) -> Any:
    """DeepSeek-R1 (FP8, 690 GB) on sglang with `gpus` per pod on the selected nodes."""
    resources: dict[str, Any] = {"gpus": gpus, **({"gpusPerNode": per_node} if per_node else {})}
    return parse_spec({"image": "r/w:1", "model": {"id": "deepseek-ai/DeepSeek-R1"}, "runtime": {"name": "sglang"},
                       "resources": resources, "scheduling": {"nodeSelector": selector}})


@pytest.mark.parametrize(("per_node", "selector", "expected"), [
    (0, H200, (gpufit.NODE_GPUS, "default")),
    (0, (*H200, (COUNT, "4")), (4, COUNT)),
    (2, (*H200, (COUNT, "4")), (2, "resources.gpusPerNode")),  # gpusPerNode wins
    (16, (), (16, "resources.gpusPerNode")),
])
def test_node_gpus_reads_gpus_per_node_then_the_label_then_the_default(
        per_node: int, selector: tuple[tuple[str, str], ...], expected: tuple[int, str]) -> None:
    assert node_gpus(inputs(gpus_per_node=per_node, node_selector=selector)) == expected


def test_a_labelled_4_gpu_node_makes_the_suggestion_two_nodes_not_8_gpus() -> None:
    """Before: NODE_GPUS (8) was assumed, so 'resources.gpus 8' was offered, which no 4-GPU node schedules."""
    fit = plan_variants(r1(4, {"nvidia.com/gpu.product": "NVIDIA-H200", COUNT: "4"}))["primary"]
    assert fit.fits == "False"
    assert "would fit: 2 x 4 GPUs (multi-node: resources.gpus 8 with nodes of nvidia.com/gpu.count=4" in fit.message
    assert "would fit: resources.gpus" not in fit.message


def test_gpus_per_node_wins_over_the_label_in_the_suggestion() -> None:
    fit = plan_variants(r1(4, {"nvidia.com/gpu.product": "NVIDIA-H200", COUNT: "8"}, per_node=4))["primary"]
    assert "would fit: 2 x 4 GPUs (multi-node: resources.gpus 8 with resources.gpusPerNode 4" in fit.message


def test_16_gpus_on_labelled_8_gpu_nodes_fit_as_two_nodes() -> None:
    fit = plan_variants(r1(16, {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", COUNT: "8"}))["primary"]
    assert fit.fits == "True" and "on 16 GPU(s) (2 nodes of 8)" in fit.message
    one = plan_variants(r1(16, {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", COUNT: "16"}))["primary"]
    assert "on 16 GPU(s) [" in one.message  # one node of 16 holds the pod: no nodes note


def test_builtin_suggestions_stay_within_the_labelled_node() -> None:
    """A builtin pod cannot span nodes: V2 in bf16 needs 7 H100s, which 8-GPU nodes offer and 4-GPU ones do not."""
    eight = plan_inputs(inputs("deepseek-ai/DeepSeek-V2", gpus=2, node_selector=H100))
    assert "would fit: resources.gpus 7" in eight.message
    four = plan_inputs(inputs("deepseek-ai/DeepSeek-V2", gpus=2, node_selector=(*H100, (COUNT, "4"))))
    assert four.fits == "False" and "resources.gpus 7" not in four.message
    assert "nothing within one node's 4 GPUs fits (only spec.runtime vllm or sglang span nodes)" in four.message


def test_an_invalid_label_is_a_value_error_naming_the_field() -> None:
    """parse_spec refuses such a spec first; a plan built from raw Inputs says which field is wrong."""
    with pytest.raises(ValueError, match=r'spec\.scheduling\.nodeSelector\["nvidia\.com/gpu\.count"\]: must be a '
                       r"positive integer"):
        node_gpus(inputs(node_selector=(*H200, (COUNT, "0"))))
