"""Shared helpers of tests/crd: the committed CRD, the generator module, resource builders."""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "deepseek.ai_deepseekdeployments.yaml"
SAMPLES = REPO / "manifests" / "samples"

sys.path.insert(0, str(REPO / "tools"))

import crd_rules  # noqa: E402
import gen_crd  # noqa: E402

__all__ = ["CRD_FILE", "REPO", "SAMPLES", "crd", "crd_rules", "gen_crd", "resource", "samples", "schema"]


@functools.cache
def _crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    return loaded


def crd() -> dict[str, Any]:
    """A private copy of the committed CRD."""
    return copy.deepcopy(_crd())


def schema() -> dict[str, Any]:
    """openAPIV3Schema of the committed CRD."""
    root: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def samples() -> list[tuple[str, dict[str, Any]]]:
    """(file name, resource) for every sample except the kustomization."""
    out = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            out.append((path.name, yaml.safe_load(path.read_text())))
    return out


def resource(spec: dict[str, Any] | None = None, name: str = "chat", **extra: Any) -> dict[str, Any]:
    """A DeepSeekDeployment with a minimal valid spec, `spec` merged over it (one level deep)."""
    base: dict[str, Any] = {
        "image": "registry.example.com/deepseek-worker:1.0.0",
        "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"},
    }
    return {
        "apiVersion": "deepseek.ai/v1alpha1",
        "kind": "DeepSeekDeployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {**base, **(spec or {})},
        **extra,
    }
