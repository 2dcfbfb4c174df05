"""Invalid resources are refused with the right field path and message; valid ones are accepted.

Both by the sandbox admission (the CRD's schema + CEL, as the apiserver runs them) and, for the
spec, by api.parse_spec (the operator's second line of defence).
"""

from __future__ import annotations

from typing import Any

import pytest
from crd_cases import INVALID, VALID, Invalid, Valid
from crd_support import crd, resource, samples

from deepseek_operator import api
from deepseek_sandbox.admission import admit


def _build(case: Invalid) -> dict[str, Any]:
    obj = resource(case.spec, name=case.meta_name)
    for key in case.drop:
        del obj["spec"][key]
    if case.status is not None:
        obj["status"] = case.status
    return obj


def _cel_paths() -> set[str]:
    return {c.path for c in INVALID if c.by == "cel"}


def test_tables_are_big_enough() -> None:
    assert len(INVALID) >= 25
    assert len({c.id for c in INVALID}) == len(INVALID)
    assert sum(c.by == "cel" for c in INVALID) >= 12


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_is_refused_with_path_and_message(case: Invalid) -> None:
    _, errors = admit(_build(case), crd())
    assert any(path == case.path and case.message in msg for path, msg in errors), errors


@pytest.mark.parametrize("case", [c for c in INVALID if c.by == "cel"], ids=lambda c: c.id)
def test_cel_cases_fail_only_by_cel(case: Invalid) -> None:
    """A CEL case passes the schema: the rule, not a typo in the table, is what refuses it."""
    obj = _build(case)
    _, errors = admit(obj, crd())
    schema_only = [e for e in errors if not any(m in e[1] for m in (case.message,))]
    assert all("Duplicate value" in m for _, m in schema_only), schema_only


@pytest.mark.parametrize("case", [c for c in INVALID if c.parse_spec], ids=lambda c: c.id)
def test_parse_spec_refuses_the_same_field(case: Invalid) -> None:
    """Parity: what the CRD refuses, api.parse_spec refuses too, naming the same field."""
    with pytest.raises(api.InvalidSpec) as err:
        api.parse_spec(_build(case)["spec"])
    reported = [m.split(":")[0] for m in str(err.value).split("; ") if m.split(":")[0] != "spec"]
    assert any(p.startswith(case.path) or case.path.startswith(p) for p in reported), (case.path, str(err.value))


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid_is_accepted(case: Valid) -> None:
    obj = resource(case.spec)
    if case.status:
        obj["status"] = case.status
    defaulted, errors = admit(obj, crd())
    assert errors == []
    api.parse_spec(defaulted["spec"])
    if case.status:
        api.DeepSeekDeploymentStatus.model_validate(case.status)


@pytest.mark.parametrize(("name", "obj"), samples(), ids=lambda v: v if isinstance(v, str) else "")
def test_samples_are_accepted(name: str, obj: dict[str, Any]) -> None:
    defaulted, errors = admit(obj, crd())
    assert errors == [], name
    assert obj["apiVersion"] == f"{api.GROUP}/{api.VERSION}" and obj["kind"] == api.KIND
    api.parse_spec(obj["spec"])
    api.parse_spec(defaulted["spec"])


def test_samples_cover_the_documented_shapes() -> None:
    by_name = dict(samples())
    minimal = by_name["chat-minimal.yaml"]["spec"]
    assert minimal["model"]["id"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert minimal["image"] == "registry.example.com/deepseek-worker:1.0.0"
    canary = by_name["chat-canary.yaml"]["spec"]
    assert canary["ingress"]["provider"] == "gateway-api" and canary["variants"] and canary["auth"]
    assert canary["monitoring"]["serviceMonitor"]["enabled"]
    assert "pvc" in by_name["chat-pvc.yaml"]["spec"]["model"]["source"]


def test_kustomization_lists_every_sample() -> None:
    import yaml
    from crd_support import SAMPLES

    kustomization = yaml.safe_load((SAMPLES / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(name for name, _ in samples())


def test_alert_label_names_are_checked_by_parse_spec() -> None:
    """A label name Prometheus would refuse passes the CRD (a CEL regex over map keys has no length
    bound for the cost estimator; docs/validation.md) and is refused by parse_spec, naming the field."""
    spec = {"monitoring": {"prometheusRule": {"labels": {"team-name": "ml", "ok": "x"}}}}
    obj = resource(spec)
    _, errors = admit(obj, crd())
    assert errors == []
    with pytest.raises(api.InvalidSpec, match=r"spec\.monitoring\.prometheusRule\.labels: team-name: not a Prometheus"):
        api.parse_spec(obj["spec"])


def test_network_policy_is_on_by_default() -> None:
    """Default-deny worker network unless the spec turns it off (docs/security.md)."""
    from deepseek_sandbox.admission import apply_defaults

    defaulted = apply_defaults(resource(), crd())["spec"]
    assert defaulted["networkPolicy"] == {"enabled": True}
    assert api.parse_spec(resource()["spec"]).network_policy.enabled is True
    off, errors = admit(resource({"networkPolicy": {"enabled": False}}), crd())
    assert errors == [] and off["spec"]["networkPolicy"] == {"enabled": False}


def test_load_budget_and_deadline_defaults_agree() -> None:
    """The CRD's defaults satisfy the deadline rule on their own: progressDeadlineSeconds >= the budget."""
    from deepseek_sandbox.admission import apply_defaults

    spec = apply_defaults(resource(), crd())["spec"]
    assert spec["model"]["loadTimeoutSeconds"] == 1800
    assert spec["rollout"]["progressDeadlineSeconds"] == 1800
    assert spec["rollout"]["requireDigest"] is False
