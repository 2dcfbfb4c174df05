"""The nvidia.com/gpu.count node selector label sizes a node when resources.gpusPerNode is unset (issue 20
item 4): the CRD's CEL rules (tools/crd_rules.py) and api.parse_spec refuse the same specs, naming the same
fields (docs/validation.md)."""

from __future__ import annotations

from typing import Any

import pytest
from crd_support import crd, resource

from deepseek_operator import api
from deepseek_sandbox.admission import admit

COUNT = "nvidia.com/gpu.count"
V3 = {"id": "deepseek-ai/DeepSeek-V3"}


def obj(count: str | None, gpus: int = 16, runtime: str = "vllm", per_node: int | None = None) -> dict[str, Any]:
    resources: dict[str, Any] = {"gpus": gpus, **({"gpusPerNode": per_node} if per_node else {})}
    selector = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", **({COUNT: count} if count is not None else {})}
    return resource({"model": V3, "resources": resources, "runtime": {"name": runtime},
                     "scheduling": {"nodeSelector": selector}})


def refusals(o: dict[str, Any]) -> list[tuple[str, str]]:
    _, errors = admit(o, crd())
    return errors


def parse_errors(o: dict[str, Any]) -> str:
    try:
        api.parse_spec(o["spec"])
    except api.InvalidSpec as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize("count", ["0", "x", "08", "8.0", "", "10000"])
@pytest.mark.parametrize("per_node", [None, 8])
def test_a_count_that_is_not_a_positive_integer_is_refused_at_apply_and_by_parse_spec(
        count: str, per_node: int | None) -> None:
    errors = refusals(obj(count, per_node=per_node))
    assert [(path, msg.split(":")[0]) for path, msg in errors] == [
        ("spec.scheduling.nodeSelector", f'scheduling.nodeSelector["{COUNT}"]')], errors
    assert "must be a positive integer" in errors[0][1]
    assert parse_errors(obj(count, per_node=per_node)).startswith(
        f'spec.scheduling.nodeSelector["{COUNT}"]: must be a positive integer')


@pytest.mark.parametrize(("count", "gpus", "runtime", "per_node"), [
    ("8", 16, "vllm", None),  # two nodes of 8
    ("8", 16, "sglang", None),
    ("8", 8, "builtin", None),  # within a node
    ("16", 16, "builtin", None),
    ("8", 16, "builtin", 16),  # gpusPerNode wins: one node holds the pod
    ("1", 16, "vllm", None),
    ("9999", 16, "builtin", None),
    (None, 16, "builtin", None),  # nothing says a node's GPUs: one node holds the pod, as before
])
def test_what_the_rules_let_through(count: str | None, gpus: int, runtime: str, per_node: int | None) -> None:
    o = obj(count, gpus, runtime, per_node)
    assert refusals(o) == []
    api.parse_spec(o["spec"])


@pytest.mark.parametrize(("count", "gpus", "runtime", "per_node", "path"), [
    ("8", 16, "builtin", None, "spec.runtime"),  # builtin cannot span the labelled nodes
    ("8", 12, "vllm", None, "spec.resources.gpus"),  # not whole labelled nodes
    ("8", 12, "vllm", 8, "spec.resources.gpus"),
    ("16", 12, "vllm", 8, "spec.resources.gpus"),  # gpusPerNode wins over the label
])
def test_the_label_sizes_the_multinode_rules(count: str, gpus: int, runtime: str, per_node: int | None,
                                             path: str) -> None:
    o = obj(count, gpus, runtime, per_node)
    assert [p for p, _ in refusals(o)] == [path]
    assert parse_errors(o).startswith(f"{path}: ")
