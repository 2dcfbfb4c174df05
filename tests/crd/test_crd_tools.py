"""The CRD and the samples pass the real tools: kubernetes-validate (the CRD object itself against
Kubernetes 1.33's apiextensions schema) and kubectl's kustomize (the samples kustomization)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from crd_support import CRD_FILE, REPO, SAMPLES, samples

KUBECTL = REPO / ".tools" / "bin" / "kubectl"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"


@pytest.mark.skipif(not VALIDATE.exists() and not shutil.which("kubernetes-validate"), reason="no kubernetes-validate")
def test_crd_object_is_valid_for_kubernetes_1_33() -> None:
    tool = str(VALIDATE) if VALIDATE.exists() else "kubernetes-validate"
    run = subprocess.run([tool, "--strict", "-k", "1.33.0", str(CRD_FILE)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "passed" in run.stdout + run.stderr


@pytest.mark.skipif(not KUBECTL.exists(), reason="no kubectl in .tools/bin (make bootstrap)")
def test_samples_kustomization_builds() -> None:
    run = subprocess.run([str(KUBECTL), "kustomize", str(SAMPLES)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    built = {doc["metadata"]["name"] for doc in yaml.safe_load_all(run.stdout)}
    assert built == {obj["metadata"]["name"] for _, obj in samples()}
