"""The plain install (`kubectl apply -k manifests/install`) creates what `helm install` creates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pss import object_violations

from .conftest import CRD_FILE, INSTALL_DIR, NAMESPACE, ROOT, docs, kube_validate, render_chart, run, tool

# Labels that legitimately differ between the two installs (who manages the objects).
INSTALL_LABELS = ("app.kubernetes.io/managed-by",)


def kustomize_build(root: Path = ROOT) -> list[dict[str, Any]]:
    if not (root / "crds" / "kustomization.yaml").exists():
        # kustomize refuses files outside the kustomization root; ../../crds must be a kustomization.
        pytest.skip("crds/kustomization.yaml (resources: [deepseek.ai_deepseekdeployments.yaml]) is not added yet")
    return docs(run([tool("kubectl"), "kustomize", root / INSTALL_DIR.relative_to(ROOT)]).stdout)


def normalized(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without the labels that name the installer (on the object and its pod template)."""
    label_sets = [obj.get("metadata", {}).get("labels", {})]
    if obj["kind"] == "Deployment":
        label_sets.append(obj["spec"]["template"]["metadata"]["labels"])
    for labels in label_sets:
        for name in INSTALL_LABELS:
            labels.pop(name, None)
    return obj


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def test_generated_operator_yaml_is_fresh() -> None:
    """operator.yaml holds exactly what the chart renders by default (rerun generate.sh otherwise)."""
    generated = docs((INSTALL_DIR / "operator.yaml").read_text())
    assert generated == render_chart(), "manifests/install/operator.yaml is stale: run manifests/install/generate.sh"


def test_kustomize_output_is_valid(tmp_path: Path) -> None:
    objects = kustomize_build()
    report = kube_validate(yaml.safe_dump_all(objects), tmp_path)
    assert "deployment/deepseek-operator" in report


def test_kustomize_install_equals_the_chart() -> None:
    plain = {key(o): normalized(o) for o in kustomize_build()}
    chart = {key(o): normalized(o) for o in render_chart()}
    extra = {k: v for k, v in plain.items() if k not in chart}
    assert set(extra) == {
        ("Namespace", "", NAMESPACE),
        ("CustomResourceDefinition", "", "deepseekdeployments.deepseek.ai"),
        # kopf's peering CRDs (leader election), installed by both; Helm takes them from the chart's crds/.
        ("CustomResourceDefinition", "", "kopfpeerings.kopf.dev"),
        ("CustomResourceDefinition", "", "clusterkopfpeerings.kopf.dev"),
    }
    for k, obj in chart.items():
        assert plain.get(k) == obj, f"{k} differs between the plain install and the chart"


def test_kustomize_crd_is_the_source_of_truth() -> None:
    (crd,) = [o for o in kustomize_build() if o["kind"] == "CustomResourceDefinition"
              and o["metadata"]["name"] == "deepseekdeployments.deepseek.ai"]
    source = yaml.safe_load(CRD_FILE.read_text())
    assert normalized(crd) == normalized(source)


def test_install_namespace_enforces_restricted() -> None:
    (namespace,) = [o for o in kustomize_build() if o["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert [v for o in kustomize_build() for v in object_violations(o)] == []
