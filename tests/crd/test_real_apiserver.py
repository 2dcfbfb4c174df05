"""The CRD's validation measured on the real kube-apiserver (deepseek_sandbox/real_cluster.py, `make cluster`).

Every case of crd_cases.py goes to the real apiserver as a server-side dry run (`?dryRun=All`, and
`fieldValidation=Strict` as kubectl sends by default) in a namespace of this module's own: INVALID ones
must come back refused naming the case's field, VALID ones and the samples accepted, with the same
defaults as the sandbox's admission. Status cases need the status subresource: the object is created for
real, its /status patched with a dry run, then deleted. Where the real wording differs from the
sandbox's, the case carries `real_message` (docs/sandbox.md lists the differences).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from crd_cases import INVALID, VALID, Invalid, Valid
from crd_support import CRD_FILE, REPO, SAMPLES, crd, resource, samples

from deepseek_sandbox.admission import admit
from deepseek_sandbox.real_cluster import RealCluster

CRD_NAME = "deepseekdeployments.deepseek.ai"
CRD_PATH = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"
DRY_RUN = {"dryRun": "All", "fieldValidation": "Strict"}
MERGE = {"Content-Type": "application/merge-patch+json"}
NOT_CHECKED = "some validation rules were not checked because the object was invalid"
COLUMNS = ["READY", "IMAGE", "MODEL", "STATUS", "DOWNLOAD", "URL", "AGE", "STRATEGY", "FIT",
           "UPGRADE"]  # STRATEGY, FIT, UPGRADE: -o wide


@pytest.fixture(scope="module")
def namespace(real_cluster: RealCluster) -> Iterator[str]:
    """A namespace of this module's own."""
    with real_cluster.scratch_namespace("crd-cases") as name:
        yield name


def _build(case: Invalid, namespace: str) -> dict[str, Any]:
    """The case's resource, as test_crd_validation builds it, in `namespace`."""
    obj = resource(case.spec, name=case.meta_name)
    obj["metadata"]["namespace"] = namespace
    for key in case.drop:
        del obj["spec"][key]
    return obj


def _dsd_path(cluster: RealCluster, namespace: str, name: str = "") -> str:
    return cluster.resource("dsd").path(namespace, name)


def _post(cluster: RealCluster, obj: dict[str, Any], **params: str) -> httpx.Response:
    return cluster.http.post(_dsd_path(cluster, obj["metadata"]["namespace"]), json=obj, params=params)


def _status_patch(cluster: RealCluster, obj: dict[str, Any], status: dict[str, Any]) -> httpx.Response:
    """Create `obj` for real, dry-run a merge patch of its /status, delete it; the patch's response."""
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    created = _post(cluster, {k: v for k, v in obj.items() if k != "status"}, fieldValidation="Strict")
    assert created.status_code == 201, created.text
    try:
        return cluster.http.patch(_dsd_path(cluster, ns, name) + "/status", json={"status": status},
                                  params=DRY_RUN, headers=MERGE)
    finally:
        deleted = cluster.http.delete(_dsd_path(cluster, ns, name))
        assert deleted.status_code == 200, deleted.text


def _causes(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c.get("field", ""), c.get("message", "")) for c in (body.get("details") or {}).get("causes") or []]


def _kubectl(cluster: RealCluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    path = f"{REPO / '.tools' / 'bin'}:{os.environ['PATH']}"
    binary = shutil.which("kubectl", path=path)
    assert binary, "no kubectl in .tools/bin or PATH"
    return subprocess.run([binary, *args], env={**os.environ, **cluster.kubectl_env(), "PATH": path}, input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


# -- INVALID: refused, naming the field ----------------------------------------------------------------
@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_is_refused_by_the_real_apiserver(real_cluster: RealCluster, namespace: str,
                                                  case: Invalid) -> None:
    obj = _build(case, namespace)
    if case.status is None:
        response = _post(real_cluster, obj, **DRY_RUN)
    else:
        response = _status_patch(real_cluster, obj, case.status)
    body = response.json()
    assert response.status_code == case.real_code, (response.status_code, body)
    expected = case.real_message or case.message
    if case.real_code == 400:
        # fieldValidation=Strict: a decoding error before admission, no causes; the message names the field.
        assert body["reason"] == "BadRequest", body
        assert f'unknown field "{case.path}"' in body["message"] and expected in body["message"], body["message"]
        if case.real_message:
            assert case.message not in body["message"], "real_message is not needed: drop it"
        return
    assert body["reason"] == "Invalid", body
    field = case.path or "<nil>"  # a rule on the root is reported at the nil path
    matching = [msg for path, msg in _causes(body) if path == field]
    assert any(expected in msg for msg in matching), (field, expected, _causes(body))
    assert f"{field}: " in body["message"], body["message"]
    if case.real_message:
        assert not any(case.message in msg for msg in matching), "real_message is not needed: drop it"
    if case.by == "cel":
        # The rule ran: the real apiserver skips every rule after a blocking schema error (see below).
        assert not any(NOT_CHECKED in msg for _, msg in _causes(body)), _causes(body)


def test_unknown_fields_are_pruned_without_strict_field_validation(real_cluster: RealCluster,
                                                                   namespace: str) -> None:
    """Without fieldValidation (the Python client, kopf), an unknown field is dropped with a warning,
    not refused: only kubectl (Strict by default) and the sandbox refuse it."""
    unknown = [c for c in INVALID if c.real_code == 400]
    assert unknown
    for case in unknown:
        response = _post(real_cluster, _build(case, namespace), dryRun="All")
        assert response.status_code == 201, (case.id, response.text)
        spec = response.json()["spec"]
        *parents, leaf = case.path.removeprefix("spec.").split(".")
        for name in parents:
            spec = spec[name]
        assert leaf not in spec, (case.id, spec)
        assert f'unknown field \\"{case.path}\\"' in response.headers.get("warning", ""), response.headers


def test_a_blocking_schema_error_skips_every_rule(real_cluster: RealCluster, namespace: str) -> None:
    """A wrong type (or a missing required field, an enum miss, too long/many) stops CEL: the rule's own
    violation shows only once that error is fixed; a range error does not."""
    stuck = {"rollout": {"maxUnavailable": 0}}
    rule = "spec.rollout"
    blocked = _post(real_cluster, {**resource({**stuck, "replicas": "x"}), "metadata": _meta(namespace)}, **DRY_RUN)
    causes = _causes(blocked.json())
    assert ("<nil>", f"Invalid value: null: {NOT_CHECKED}; correct the existing errors to complete validation") \
        in causes, causes
    assert rule not in [path for path, _ in causes], causes
    ranged = _post(real_cluster, {**resource({**stuck, "replicas": 999}), "metadata": _meta(namespace)}, **DRY_RUN)
    assert {"spec.replicas", rule} <= {path for path, _ in _causes(ranged.json())}, ranged.text


def test_replicas_are_also_checked_by_the_scale_subresource(real_cluster: RealCluster, namespace: str) -> None:
    """specReplicasPath adds a cause of its own, at a path with a leading dot."""
    response = _post(real_cluster, {**resource({"replicas": -1}), "metadata": _meta(namespace)}, **DRY_RUN)
    assert (".spec.replicas", "Invalid value: -1: should be a non-negative integer") in _causes(response.json())


def _meta(namespace: str) -> dict[str, str]:
    return {"name": "chat", "namespace": namespace}


# -- VALID and the samples: accepted, defaulted as the sandbox defaults ------------------------------------
@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid_is_accepted_by_the_real_apiserver(real_cluster: RealCluster, namespace: str, case: Valid) -> None:
    obj = {**resource(case.spec), "metadata": _meta(namespace)}
    response = _post(real_cluster, obj, **DRY_RUN)
    assert response.status_code == 201, response.text
    assert "warning" not in response.headers, response.headers["warning"]
    defaulted, _ = admit(obj, crd())
    assert response.json()["spec"] == defaulted["spec"], "the real defaults differ from the sandbox's"
    if case.status:
        patched = _status_patch(real_cluster, obj, case.status)
        assert patched.status_code == 200, patched.text
        assert patched.json()["status"] == case.status


@pytest.mark.parametrize(("name", "obj"), samples(), ids=lambda v: v if isinstance(v, str) else "")
def test_sample_is_accepted_by_the_real_apiserver(real_cluster: RealCluster, namespace: str, name: str,
                                                  obj: dict[str, Any]) -> None:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    response = _post(real_cluster, obj, **DRY_RUN)
    assert response.status_code == 201, (name, response.text)
    assert "warning" not in response.headers, response.headers["warning"]
    assert response.json()["spec"] == admit(obj, crd())[0]["spec"], name


def test_kubectl_server_side_applies_the_crd_and_the_samples(real_cluster: RealCluster, namespace: str) -> None:
    """kubectl's own route (server-side apply, Strict field validation), as a user installs and applies.

    The CRD is dry-run: the cluster is shared (the session fixture applied it for real). A copy under
    another group is dry-run *created* too: an update of unchanged rules skips the CEL cost limits, a
    create does not."""
    applied = _kubectl(real_cluster, "apply", "--server-side", "--force-conflicts", "--dry-run=server",
                       "-f", str(CRD_FILE))
    assert applied.returncode == 0, applied.stderr
    assert f"customresourcedefinition.apiextensions.k8s.io/{CRD_NAME} serverside-applied (server dry run)" \
        in applied.stdout, applied.stdout
    fresh = crd()
    fresh["spec"]["group"] = "crd-cases.example.com"
    fresh["metadata"] = {"name": f"{fresh['spec']['names']['plural']}.crd-cases.example.com"}
    created = _kubectl(real_cluster, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(fresh))
    assert created.returncode == 0, created.stderr
    assert "created (server dry run)" in created.stdout, created.stdout
    files = [arg for name, _ in samples() for arg in ("-f", str(SAMPLES / name))]
    sampled = _kubectl(real_cluster, "apply", "--server-side", "--dry-run=server", "-n", namespace, *files)
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.count("serverside-applied (server dry run)") == len(samples()), sampled.stdout
    assert sampled.stderr == "", sampled.stderr  # no warnings (an unknown field would be one)


# -- the CRD as served -------------------------------------------------------------------------------------
def test_crd_is_established_with_its_printer_columns(real_cluster: RealCluster, namespace: str) -> None:
    served = real_cluster.http.get(CRD_PATH)
    assert served.status_code == 200, served.text
    conditions = {c["type"]: c["status"] for c in served.json()["status"]["conditions"]}
    assert conditions.get("Established") == "True", conditions
    assert conditions.get("NamesAccepted") == "True", conditions
    (version,) = served.json()["spec"]["versions"]
    assert [c["name"].upper() for c in version["additionalPrinterColumns"]] == COLUMNS
    # ... and as `kubectl get dsd` reads them: the Table the apiserver renders (NAME first, always).
    table = real_cluster.http.get(_dsd_path(real_cluster, namespace),
                                  headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert table.status_code == 200, table.text
    assert [c["name"].upper() for c in table.json()["columnDefinitions"]] == ["NAME", *COLUMNS]
