"""Shared helpers of the delivery tests: the pinned helm/kubectl binaries and rendering the chart."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "bin"
VENV_BIN = ROOT / ".venv" / "bin"
CHART = ROOT / "charts" / "deepseek-operator"
CRD_FILE = ROOT / "crds" / "deepseek.ai_deepseekdeployments.yaml"
CHART_CRD_FILE = CHART / "crds" / CRD_FILE.name
INSTALL_DIR = ROOT / "manifests" / "install"
RELEASE = "deepseek-operator"
NAMESPACE = "deepseek-system"
TOOL_TIMEOUT = 60

# tests/pss.py is shared by the delivery tests; make `import pss` work whether or not tests/ is a package.
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))


def tool(name: str) -> Path:
    """A pinned binary from .tools/bin (installed by `make bootstrap`); skip when it is missing."""
    path = TOOLS / name
    if not path.exists():
        pytest.skip(f"{path} is missing: run `make bootstrap`")
    return path


def run(
    args: Sequence[str | Path], *, check: bool = True, timeout: int = TOOL_TIMEOUT, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command with a deadline; on failure the assertion shows its output."""
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kwargs)
    if check:
        assert proc.returncode == 0, f"{args[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def helm_template(*values: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart as the release deepseek-operator in deepseek-system."""
    sets = [arg for value in values for arg in ("--set", value)]
    return run([tool("helm"), "template", RELEASE, CHART, "--namespace", NAMESPACE, *sets], check=check)


def render_chart(*values: str) -> list[dict[str, Any]]:
    """The chart's objects (without CRDs) as dicts."""
    return docs(helm_template(*values).stdout)


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def kube_validate(text: str, tmp_path: Path) -> str:
    """kubernetes-validate --strict over a multi-document YAML; returns its report."""
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(text)
    proc = run([VENV_BIN / "kubernetes-validate", "--strict", "--no-warn", manifest], check=False)
    assert proc.returncode == 0, f"kubernetes-validate failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout
