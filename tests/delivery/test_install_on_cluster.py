"""Both installs, for real: the chart and manifests/install against the real apiserver
(deepseek_sandbox/real_cluster.py).

helm install / upgrade / uninstall, `kubectl apply --server-side -k manifests/install` and its delete, and
server-side dry runs of documented value combinations. The CRD is shared with every suite on the cluster:
nothing here deletes it (helm never deletes a chart's crds/; the kustomize delete leaves it out on purpose).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from deepseek_sandbox.real_cluster import RealCluster

from .conftest import CHART, INSTALL_DIR, docs, run, tool

RELEASE, NAMESPACE = "helm-it", "dso-helm-it"
DRY_RELEASE, DRY_NAMESPACE, WATCHED = "dryrun-it", "dso-dryrun-it", "dso-dryrun-watched-it"
CRD = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
       "metadata": {"name": "deepseekdeployments.deepseek.ai"}}
# Both installs touch the shared CRD: Helm 4 server-side applies crds/ (field manager "helm") even when the
# CRD exists, and the kustomize build adds its managed-by label. Applying CRD (no fields) as that field
# manager afterwards gives up exactly what it took; the values stay (the suite's fixture co-owns them).
MANAGER = "dso-install-it"
DEADLINE = 90.0
DIGEST = "sha256:" + "ab" * 32
COMBOS = {
    "watch-namespace": [f"watchNamespace={WATCHED}"],
    "existing-sa-with-rbac": ["serviceAccount.create=false", "serviceAccount.name=platform-sa", "rbac.create=true"],
    "service-monitor": ["metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=kps"],
    "many-values": [f"watchNamespace={WATCHED}", f"image.digest={DIGEST}", "imagePullSecrets[0].name=regcred",
                    "logLevel=debug", "logFormat=json", "extraArgs[0]=--verbose", "extraEnv[0].name=A",
                    "extraEnv[0].value=b", "podAnnotations.a=b", "metrics.serviceMonitor.enabled=true",
                    "tolerations[0].key=k", "tolerations[0].operator=Exists",
                    "serviceAccount.annotations.x=y"],  # "y": a YAML 1.1 bool unless the chart quotes it
}


def kubectl(cluster: RealCluster, *args: Any, stdin: str | None = None, check: bool = True) -> Any:
    return run([tool("kubectl"), *args], env={**os.environ, **cluster.kubectl_env()}, input=stdin, check=check)


def helm(cluster: RealCluster, *args: Any) -> Any:
    return run([tool("helm"), *args], env={**os.environ, **cluster.kubectl_env()}, timeout=180)


def live(cluster: RealCluster, obj: dict[str, Any]) -> dict[str, Any] | None:
    meta = obj["metadata"]
    return cluster.get(f"{obj['apiVersion']}/{obj['kind'].lower()}", meta.get("namespace"), meta["name"])


def ref(obj: dict[str, Any]) -> str:
    """`kubectl -o name` of an object: deployment.apps/x, serviceaccount/x."""
    group = obj["apiVersion"].rpartition("/")[0]
    return f"{obj['kind'].lower()}{'.' + group if group else ''}/{obj['metadata']['name']}"


def wait_gone(cluster: RealCluster, objects: list[dict[str, Any]], what: str) -> None:
    """Poll until none of `objects` exists; fail at the deadline naming the ones left."""
    deadline = time.monotonic() + DEADLINE
    while left := [ref(o) for o in objects if live(cluster, o) is not None]:
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still there after {DEADLINE}s: {left}")
        time.sleep(0.25)


def stream(objects: list[dict[str, Any]]) -> str:
    """Objects for `kubectl -f -` as JSON documents: re-dumped YAML would turn "y" into a YAML 1.1 bool."""
    return "\n---\n".join(json.dumps(o) for o in objects)


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def template_text(release: str, ns: str, *values: str) -> str:
    sets = [arg for value in values for arg in ("--set", value)]
    return str(run([tool("helm"), "template", release, CHART, "-n", ns, *sets]).stdout)


def template(release: str, ns: str, *values: str) -> list[dict[str, Any]]:
    return docs(template_text(release, ns, *values))


def container(deployment: dict[str, Any] | None) -> dict[str, Any]:
    assert deployment is not None, "the Deployment is missing"
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


# -- 1. helm install, upgrade, uninstall ---------------------------------------------------------------
def crd_state(cluster: RealCluster) -> tuple[str, Any, Any, set[str]]:
    crd = live(cluster, CRD)
    assert crd is not None, "the CRD is missing"
    meta = crd["metadata"]
    return meta["uid"], crd["spec"], meta.get("labels"), {f["manager"] for f in meta.get("managedFields", [])}


def release_crd(cluster: RealCluster, manager: str) -> None:
    kubectl(cluster, "apply", "--server-side", f"--field-manager={manager}", "-f", "-", stdin=json.dumps(CRD))


@pytest.fixture
def no_release(real_cluster: RealCluster) -> Iterator[None]:
    """No `helm-it` release or namespace before the test, none after it, and the CRD's managers as found."""
    def clean() -> None:
        helm(real_cluster, "uninstall", RELEASE, "-n", NAMESPACE, "--ignore-not-found")
        kubectl(real_cluster, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")
        wait_gone(real_cluster, [namespace(NAMESPACE)], "the release namespace")
    clean()
    helm_owned = "helm" in crd_state(real_cluster)[3]
    yield
    clean()
    if not helm_owned:
        release_crd(real_cluster, "helm")


def test_helm_install_upgrade_uninstall(real_cluster: RealCluster, no_release: None) -> None:
    rendered = template(RELEASE, NAMESPACE)
    assert {"ClusterRole", "ClusterRoleBinding", "Deployment"} <= {o["kind"] for o in rendered}
    uid, spec, _, _ = crd_state(real_cluster)
    helm(real_cluster, "install", RELEASE, CHART, "-n", NAMESPACE, "--create-namespace", "--timeout=2m")
    for obj in rendered:
        found = live(real_cluster, obj)
        assert found is not None, f"{ref(obj)} missing after helm install"
        assert found["metadata"].get("annotations", {}).get("meta.helm.sh/release-name") == RELEASE, ref(obj)
    deployment = next(o for o in rendered if o["kind"] == "Deployment")
    assert container(live(real_cluster, deployment))["resources"]["limits"]["memory"] == "512Mi"

    helm(real_cluster, "upgrade", RELEASE, CHART, "-n", NAMESPACE, "--reuse-values", "--timeout=2m",
         "--set", "logLevel=debug", "--set", "resources.limits.memory=768Mi")
    upgraded = container(live(real_cluster, deployment))
    assert upgraded["resources"]["limits"]["memory"] == "768Mi"
    assert "--debug" in upgraded["args"], upgraded["args"]
    status = json.loads(helm(real_cluster, "status", RELEASE, "-n", NAMESPACE, "-o", "json").stdout)
    assert status["version"] == 2 and status["info"]["status"] == "deployed"

    history = f"owner=helm,name={RELEASE}"
    assert len(real_cluster.objects("secrets", NAMESPACE, history)) == 2
    helm(real_cluster, "uninstall", RELEASE, "-n", NAMESPACE, "--timeout=2m")
    wait_gone(real_cluster, rendered, "helm uninstall")
    assert real_cluster.objects("secrets", NAMESPACE, history) == [], "the release history is left"
    # helm never deletes crds/: the same CRD (same uid) is still there, its definition unchanged.
    assert crd_state(real_cluster)[:2] == (uid, spec), "helm install/uninstall changed or removed the CRD"
    kubectl(real_cluster, "delete", "namespace", NAMESPACE, "--wait=false")
    wait_gone(real_cluster, [namespace(NAMESPACE)], "the release namespace")


# -- 2. kubectl apply --server-side -k manifests/install, then delete all of it but the CRD -------------
def is_crd(obj: dict[str, Any]) -> bool:
    return bool(obj["kind"] == "CustomResourceDefinition")


@pytest.fixture
def plain_install(real_cluster: RealCluster) -> Iterator[list[dict[str, Any]]]:
    """The kustomize build; afterwards its objects but the CRD are deleted, and our hold on the CRD released."""
    built = docs(kubectl(real_cluster, "kustomize", INSTALL_DIR).stdout)
    rest = [o for o in built if not is_crd(o)]
    there = [ref(o) for o in rest if live(real_cluster, o) is not None]
    if there:
        pytest.fail(f"already on the cluster (someone's install or a leftover), not touching it: {there}")
    yield built
    kubectl(real_cluster, "delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=stream(rest))
    release_crd(real_cluster, MANAGER)


def test_plain_install_apply_and_delete(real_cluster: RealCluster, plain_install: list[dict[str, Any]]) -> None:
    rest = [o for o in plain_install if not is_crd(o)]
    assert any(is_crd(o) for o in plain_install) and {o["kind"] for o in rest} >= {"Namespace", "Deployment"}
    before = crd_state(real_cluster)
    kubectl(real_cluster, "apply", "--server-side", f"--field-manager={MANAGER}", "-f", "-",
            stdin=stream(plain_install))
    missing = [ref(o) for o in plain_install if live(real_cluster, o) is None]
    assert not missing, f"missing after kubectl apply: {missing}"

    kubectl(real_cluster, "delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=stream(rest))
    wait_gone(real_cluster, rest, "kubectl delete of manifests/install (its namespace included)")
    release_crd(real_cluster, MANAGER)
    after = crd_state(real_cluster)
    assert after[:3] == before[:3] and MANAGER not in after[3], "the CRD changed (uid, spec, labels, managers)"


# -- 3. server-side dry runs of documented value combinations ---------------------------------------------
@pytest.fixture(scope="module")
def dry_namespaces(real_cluster: RealCluster) -> Iterator[None]:
    """The release and watched namespaces must exist: a dry run into a missing namespace is refused."""
    spaces = [namespace(DRY_NAMESPACE), namespace(WATCHED)]
    kubectl(real_cluster, "apply", "--server-side", f"--field-manager={MANAGER}", "-f", "-",
            stdin=stream(spaces))
    yield
    kubectl(real_cluster, "delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=stream(spaces))
    wait_gone(real_cluster, spaces, "the dry-run namespaces")


def dry_run(cluster: RealCluster, manifest: str) -> Any:
    # `helm install --dry-run=server` sends no object to the apiserver (it passes with a missing
    # namespace): kubectl's server-side dry run is what runs schema validation and admission for real.
    return kubectl(cluster, "apply", "--server-side", "--dry-run=server", "--validate=strict",
                   f"--field-manager={MANAGER}", "-o", "name", "-f", "-", stdin=manifest,
                   check=False)


@pytest.mark.parametrize("values", COMBOS.values(), ids=COMBOS.keys())
def test_server_dry_run_accepts(real_cluster: RealCluster, dry_namespaces: None, values: list[str]) -> None:
    text = template_text(DRY_RELEASE, DRY_NAMESPACE, *values)  # helm's own YAML, as `helm template | kubectl`
    rendered = docs(text)
    proc = dry_run(real_cluster, text)
    assert proc.returncode == 0, f"the apiserver refused {values}:\n{proc.stderr}"
    assert sorted(proc.stdout.split()) == sorted(ref(o) for o in rendered)
    assert [ref(o) for o in rendered if live(real_cluster, o) is not None] == [], "a dry run persisted objects"


def test_server_dry_run_refuses_unknown_fields(real_cluster: RealCluster, dry_namespaces: None) -> None:
    """The check above can fail: the same dry run refuses a field the API does not know."""
    rendered = template(DRY_RELEASE, DRY_NAMESPACE)
    next(o for o in rendered if o["kind"] == "Deployment")["spec"]["bogusField"] = 1
    proc = dry_run(real_cluster, stream(rendered))
    assert proc.returncode != 0 and ".spec.bogusField: field not declared in schema" in proc.stderr, proc.stderr
