"""The Helm chart: lint, strict schema validation of what it renders, values schema, CRD copy, RBAC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pss import object_violations

from .conftest import (
    CHART,
    CHART_CRD_FILE,
    CRD_FILE,
    NAMESPACE,
    ROOT,
    by_kind,
    helm_template,
    kube_validate,
    one,
    render_chart,
    run,
    tool,
)

VENDOR_CRDS = ROOT / "third_party" / "crds"

# The exact permissions the operator needs (DESIGN: least privilege; docs/install.md explains each).
def flatten_rules(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs, failing on duplicates so each permission is stated once."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert (group, resource) not in out, f"{group}/{resource} listed twice"
                out[(group, resource)] = set(rule["verbs"])
    return out


def test_helm_lint_strict() -> None:
    run([tool("helm"), "lint", "--strict", CHART])
    run(
        [
            tool("helm"),
            "lint",
            "--strict",
            CHART,
            "--set",
            "watchNamespace=team-a",
            "--set",
            "metrics.serviceMonitor.enabled=true",
        ]
    )


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["watchNamespace=team-a"],
        ["metrics.enabled=false", "serviceAccount.create=false", "serviceAccount.name=ops"],
        ["image.digest=sha256:" + "a" * 64, "logLevel=debug", "logFormat=json"],
    ],
    ids=["defaults", "watch-namespace", "no-metrics-external-sa", "digest-debug"],
)
def test_rendered_objects_are_valid_kubernetes(values: list[str], tmp_path: Path) -> None:
    report = kube_validate(helm_template(*values).stdout, tmp_path)
    assert "deployment/deepseek-operator" in report


def test_operator_service_monitor_matches_upstream_crd() -> None:
    objects = render_chart("metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=kps")
    monitor = one(objects, "ServiceMonitor")
    crd_path = VENDOR_CRDS / "monitoring.coreos.com_servicemonitors.yaml"
    crd = yaml.safe_load(crd_path.read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    jsonschema.validate(monitor, schema)
    service = one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "kps"


def test_no_service_monitor_by_default() -> None:
    assert not by_kind(render_chart(), "ServiceMonitor")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("unknownKey=1", "additional properties 'unknownKey' not allowed"),
        ("image.registry=docker.io", "additional properties 'registry' not allowed"),
        ("metrics.serviceMonitor.foo=bar", "additional properties 'foo' not allowed"),
        ("metrics.port=abc", "/metrics/port"),
        ("metrics.enabled=maybe", "/metrics/enabled"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("image.digest=latest", "/image/digest"),
        ("logLevel=loud", "/logLevel"),
        ("watchNamespace=Not_A_Namespace", "/watchNamespace"),
        ("resources.requests.gpu=1", "additional properties 'gpu' not allowed"),
    ],
)
def test_values_schema_refuses_bad_values(value: str, message: str) -> None:
    proc = helm_template(value, check=False)
    assert proc.returncode != 0, f"--set {value} was accepted"
    assert message in proc.stderr, proc.stderr


def test_every_value_is_documented() -> None:
    """values.yaml: every key has a comment line right above it (cert-manager style)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        is_key = stripped and not stripped.startswith(("#", "-")) and ":" in stripped
        if is_key and not line.rstrip().endswith(":") and not lines[index - 1].strip().startswith("#"):
            undocumented.append(stripped)
    assert not undocumented, f"keys without a comment: {undocumented}"


def test_chart_crd_is_a_byte_identical_copy() -> None:
    if not CRD_FILE.exists():
        pytest.skip(f"{CRD_FILE.relative_to(ROOT)} is not written yet")
    assert CHART_CRD_FILE.exists(), "chart CRD missing: run scripts/sync-chart-crds.sh"
    assert CHART_CRD_FILE.read_bytes() == CRD_FILE.read_bytes(), "stale chart CRD: run scripts/sync-chart-crds.sh"
    run([ROOT / "scripts" / "sync-chart-crds.sh", "--check"])
    chart_crds = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    # crds/kustomization.yaml is for kustomize only; Helm would try to install it as a CRD.
    assert chart_crds == sorted(p.name for p in CRD_FILE.parent.glob("*.yaml") if p.name != "kustomization.yaml")


def test_sync_script_detects_a_stale_copy(tmp_path: Path) -> None:
    """The --check mode fails when a chart CRD differs (run on a scratch copy of the two folders)."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "crds").mkdir()
    (tmp_path / "charts" / "deepseek-operator" / "crds").mkdir(parents=True)
    script = tmp_path / "scripts" / "sync-chart-crds.sh"
    script.write_bytes((ROOT / "scripts" / "sync-chart-crds.sh").read_bytes())
    script.chmod(0o755)
    (tmp_path / "crds" / "x.yaml").write_text("kind: CustomResourceDefinition\n")
    assert run([script, "--check"], check=False).returncode == 1
    run([script])
    assert run([script, "--check"], check=False).returncode == 0
    (tmp_path / "crds" / "x.yaml").write_text("kind: CustomResourceDefinition # changed\n")
    assert run([script, "--check"], check=False).returncode == 1


def test_cluster_wide_rbac_is_the_watch_namespace_split_joined() -> None:
    """Which verbs are granted is measured, not listed here: tests/delivery/test_rbac_usage.py checks
    them against the real apiserver's audit log. Here: the two layouts grant the same rules."""
    objects = render_chart()
    assert not by_kind(objects, "Role")
    rules = flatten_rules(one(objects, "ClusterRole")["rules"])
    split = render_chart("watchNamespace=team-a")
    cluster_scoped = flatten_rules(one(split, "ClusterRole")["rules"])
    namespaced = flatten_rules(one(split, "Role")["rules"])
    assert not cluster_scoped.keys() & namespaced.keys()
    assert rules == {**cluster_scoped, **namespaced}
    assert {resource for _, resource in cluster_scoped} == {"customresourcedefinitions", "namespaces",
                                                             "ingressclasses", "storageclasses"}
    binding = one(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "deepseek-operator", "namespace": NAMESPACE}]


def test_watch_namespace_moves_namespaced_rules_to_a_role() -> None:
    objects = render_chart("watchNamespace=team-a")
    role = one(objects, "Role")
    assert role["metadata"]["namespace"] == "team-a"
    assert ("apps", "deployments") in flatten_rules(role["rules"])
    binding = one(objects, "RoleBinding")
    assert binding["metadata"]["namespace"] == "team-a"
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args
    assert "--all-namespaces" not in args


@pytest.mark.parametrize("values", [[], ["watchNamespace=team-a"]])
def test_rbac_has_no_wildcards_and_no_secrets(values: list[str]) -> None:
    objects = render_chart(*values)
    for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{role['kind']} wildcard in {field}: {rule}"
            assert "secrets" not in rule["resources"], rule


def test_rbac_can_be_disabled() -> None:
    kinds = {o["kind"] for o in render_chart("rbac.create=false")}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def test_operator_deployment() -> None:
    deployment = one(render_chart(), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "deepseek-operator"
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/deepseek/operator:0.1.0"
    assert container["command"] == ["deepseek-operator"]
    assert container["args"][:3] == [
        "--standalone",
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8080/healthz",
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DEEPSEEK_OPERATOR_METRICS_PORT"] == "9090"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsUser"] == 10001


def test_digest_pins_the_image() -> None:
    digest = "sha256:" + "b" * 64
    deployment = one(render_chart(f"image.digest={digest}", "image.tag=ignored"), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        f"registry.example.com/deepseek/operator@{digest}"
    )


@pytest.mark.parametrize("values", [[], ["watchNamespace=team-a", "metrics.enabled=false"]])
def test_operator_pod_meets_pod_security_restricted(values: list[str]) -> None:
    objects = render_chart(*values)
    assert by_kind(objects, "Deployment")
    violations = [v for obj in objects for v in object_violations(obj)]
    assert violations == []
