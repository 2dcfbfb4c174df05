"""Unit tests of deepseek_sandbox.admission on small synthetic CRDs and on ours."""

from __future__ import annotations

import copy
from typing import Any

from crd_support import crd, resource

from deepseek_sandbox.admission import apply_defaults, format_path, to_json_schema, validate


def _crd(spec_schema: dict[str, Any]) -> dict[str, Any]:
    root = {"type": "object", "properties": {"metadata": {"type": "object"}, "spec": spec_schema}}
    return {
        "metadata": {"name": "things.example.com"},
        "spec": {"versions": [{"name": "v1", "storage": True, "schema": {"openAPIV3Schema": root}}]},
    }


def test_defaults_fill_absent_fields_only_under_existing_or_defaulted_parents() -> None:
    obj = resource({"replicas": None, "variants": [{"name": "c"}]})
    before = copy.deepcopy(obj)
    spec = apply_defaults(obj, crd())["spec"]
    assert obj == before, "input must not change"
    assert spec["replicas"] == 1, "a null is dropped, then defaulted"
    assert spec["resources"] == {
        "gpus": 1,
        "gpuResourceName": "nvidia.com/gpu",
        "cpu": "4",
        "memory": "32Gi",
        "shmSize": "8Gi",
    }
    assert spec["monitoring"] == {
        "serviceMonitor": {"enabled": True, "interval": "30s"},
        "prometheusRule": {
            "enabled": True,
            "labels": {},  # a model with CEL rules defaults whole (tools/gen_crd.py crd_default)
            "thresholds": {"p99TimeToFirstTokenSeconds": 10, "errorPercent": 5, "queueSaturationPercent": 90,
                           "gpuMemoryPercent": 95},
        },
    }
    assert spec["variants"] == [{"name": "c", "weight": 0, "replicas": 1}]
    assert "ingress" not in spec and "rateLimit" not in spec, "optional parents without default stay absent"


def test_defaults_leave_set_values_alone() -> None:
    spec = apply_defaults(resource({"resources": {"gpus": 4}, "serving": {"maxNewTokens": 100}}), crd())["spec"]
    assert spec["resources"]["gpus"] == 4 and spec["resources"]["cpu"] == "4"
    assert spec["serving"]["maxNewTokens"] == 100 and spec["serving"]["maxBatchSize"] == 16


def test_map_values_are_defaulted() -> None:
    thing = _crd(
        {
            "type": "object",
            "additionalProperties": {"type": "object", "properties": {"n": {"type": "integer", "default": 3}}},
        }
    )
    assert apply_defaults({"spec": {"a": {}, "b": {"n": 1}}}, thing)["spec"] == {"a": {"n": 3}, "b": {"n": 1}}


def test_transition_rules_run_on_update_only() -> None:
    thing = _crd(
        {
            "type": "object",
            "properties": {"id": {"type": "string", "maxLength": 10}},
            "x-kubernetes-validations": [
                {"rule": "self.id == oldSelf.id", "message": "id is immutable", "fieldPath": ".id"}
            ],
        }
    )
    assert validate({"spec": {"id": "a"}}, thing) == []
    assert validate({"spec": {"id": "a"}}, thing, old={"spec": {"id": "a"}}) == []
    assert validate({"spec": {"id": "b"}}, thing, old={"spec": {"id": "a"}}) == [("spec.id", "id is immutable")]


def test_rule_evaluation_errors_are_reported_when_the_schema_is_fine() -> None:
    thing = _crd(
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "x-kubernetes-validations": [{"rule": "self.missing > 1", "message": "m"}],
        }
    )
    errors = validate({"spec": {"a": 1}}, thing)
    assert len(errors) == 1 and errors[0][0] == "spec" and "evaluation error" in errors[0][1]
    assert validate({"spec": {"a": "x"}}, thing)[0][0] == "spec.a", "schema error wins"


def test_openapi_translation() -> None:
    assert to_json_schema({"type": "string", "nullable": True, "enum": ["a"]}) == {
        "type": ["string", "null"],
        "enum": ["a", None],
    }
    assert to_json_schema({"x-kubernetes-int-or-string": True})["type"] == ["integer", "string"]
    strict = to_json_schema({"type": "object", "properties": {"a": {"type": "string", "description": "d"}}})
    assert strict == {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
    free = to_json_schema({"type": "object", "properties": {}, "x-kubernetes-preserve-unknown-fields": True})
    assert "additionalProperties" not in free


def test_paths_look_like_the_apiservers() -> None:
    assert format_path(["spec", "variants", 1, "weight"]) == "spec.variants[1].weight"
    assert format_path([]) == ""


def test_unknown_top_level_field_and_missing_spec() -> None:
    obj = resource()
    obj["extra"] = 1
    assert ("extra", 'unknown field "extra"') in validate(obj, crd())
    del obj["spec"], obj["extra"]
    assert validate(obj, crd()) == [("spec", "Required value")]


def test_api_version_and_kind_are_allowed_even_when_the_schema_omits_them() -> None:
    widget = {"spec": {"versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
        "type": "object", "properties": {"spec": {"type": "object", "properties": {"x": {"type": "integer"}}}}}}}]}}
    obj = {"apiVersion": "g/v1", "kind": "W", "metadata": {"name": "w"}, "spec": {"x": 1}}
    assert validate(obj, widget) == []
    assert validate({**obj, "extra": 1}, widget) == [("extra", 'unknown field "extra"')]
