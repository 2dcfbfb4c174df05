"""The CRD and the pydantic models in api.py describe the same resource.

Field names, types, enums, required fields and bounds are compared by walking the CRD schema and
pydantic's own JSON schema (model_json_schema: a different code path from tools/gen_crd.py), and
the CRD's defaults are compared with what pydantic fills in.
"""

from __future__ import annotations

from typing import Any

from crd_support import resource, samples, schema

from deepseek_operator import api
from deepseek_sandbox.admission import apply_defaults, crd_schema

Flat = dict[str, tuple[Any, ...]]
BOUNDS = ("minimum", "exclusiveMinimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "maxProperties",
          "pattern")


def _flatten_crd(node: dict[str, Any], path: str, out: Flat) -> Flat:
    free = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    bounds = tuple(node.get(k) for k in BOUNDS)
    out[path] = (node["type"], tuple(node.get("enum", ())), free, tuple(sorted(node.get("required", []))), bounds)
    for name, child in node.get("properties", {}).items():
        _flatten_crd(child, f"{path}.{name}", out)
    if "items" in node:
        _flatten_crd(node["items"], f"{path}[]", out)
    if isinstance(node.get("additionalProperties"), dict):
        _flatten_crd(node["additionalProperties"], f"{path}{{}}", out)
    return out


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Follow $ref and unwrap `X | None` (anyOf with null): optional means omitted in the CRD."""
    if "$ref" in node:
        node = {**defs[node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    if "anyOf" in node:
        (inner,) = [n for n in node["anyOf"] if n.get("type") != "null"]
        node = {**_resolve(inner, defs), **{k: v for k, v in node.items() if k != "anyOf"}}
    return node


def _flatten_pydantic(node: dict[str, Any], defs: dict[str, Any], path: str, out: Flat) -> Flat:
    node = _resolve(node, defs)
    kind = node.get("type", "object")
    extra = node.get("additionalProperties")
    free = extra is True or (kind == "object" and "properties" not in node and extra is None)
    if "exclusiveMinimum" in node:  # JSON Schema's number; the CRD's (OpenAPI v3.0) minimum + true
        node = {**node, "minimum": node["exclusiveMinimum"], "exclusiveMinimum": True}
    bounds = tuple(node.get(k) for k in BOUNDS)
    out[path] = (kind, tuple(node.get("enum", ())), free, tuple(sorted(node.get("required", []))), bounds)
    for name, child in node.get("properties", {}).items():
        _flatten_pydantic(child, defs, f"{path}.{name}", out)
    if "items" in node:
        _flatten_pydantic(node["items"], defs, f"{path}[]", out)
    if isinstance(extra, dict):
        _flatten_pydantic(extra, defs, f"{path}{{}}", out)
    return out


def _compare(model: type[api.Model], crd_node: dict[str, Any], prefix: str) -> None:
    js = model.model_json_schema(by_alias=True, mode="validation")
    from_pydantic = _flatten_pydantic(js, js.get("$defs", {}), prefix, {})
    from_crd = _flatten_crd(crd_node, prefix, {})
    assert sorted(from_crd) == sorted(from_pydantic), set(from_crd) ^ set(from_pydantic)
    for path, shape in from_crd.items():
        assert shape == from_pydantic[path], (path, shape, from_pydantic[path])


def test_spec_fields_types_enums_and_bounds_match() -> None:
    _compare(api.DeepSeekDeploymentSpec, schema()["properties"]["spec"], "spec")


def test_status_fields_types_enums_and_bounds_match() -> None:
    _compare(api.DeepSeekDeploymentStatus, schema()["properties"]["status"], "status")


def test_documented_field_names_exist() -> None:
    """A few names from DESIGN.md's resource, spelled exactly (they are part of the product)."""
    spec = _flatten_crd(schema()["properties"]["spec"], "spec", {})
    status = _flatten_crd(schema()["properties"]["status"], "status", {})
    for path in (
        "spec.model.source.huggingFace.tokenSecretRef",
        "spec.auth.jwt.tokenTTLSeconds",
        "spec.auth.apiKeysSecretRef",
        "spec.resources.shmSize",
        "spec.ingress.gateway.parentRefs",
        "spec.serving.maxNewTokens",
        "spec.rollout.progressDeadlineSeconds",
    ):
        assert path in spec, path
    for path in ("status.observedGeneration", "status.ready", "status.selector", "status.conditions[].reason"):
        assert path in status, path


def _leaves(value: Any, path: str = "") -> dict[str, Any]:
    """Non-empty scalar leaves of a dump: what the CRD's defaults must also produce."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, child in value.items():
            out.update(_leaves(child, f"{path}.{key}"))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out.update(_leaves(item, f"{path}[{i}]"))
        return out
    if value in (None, ""):
        return {}
    return {path: value}


def test_crd_defaults_equal_pydantic_defaults() -> None:
    from crd_support import crd

    obj = resource(
        {"variants": [{"name": "c"}], "ingress": {"host": "h", "gateway": {"parentRefs": [{"name": "g"}]}},
         "auth": {"jwt": {"secretRef": {"name": "j"}}}}
    )
    defaulted = apply_defaults(obj, crd())["spec"]
    expected = _leaves(api.parse_spec(obj["spec"]).model_dump(by_alias=True, exclude_none=True))
    assert _leaves(defaulted) == expected
    assert expected[".variants[0].replicas"] == 1 and expected[".ingress.provider"] == "gateway-api"
    assert api.parse_spec(defaulted) == api.parse_spec(obj["spec"])


def test_minimal_sample_defaults_equal_pydantic_defaults() -> None:
    from crd_support import crd

    minimal = dict(samples())["chat-minimal.yaml"]
    defaulted = apply_defaults(minimal, crd())["spec"]
    expected = api.parse_spec(minimal["spec"]).model_dump(by_alias=True, exclude_none=True)
    assert _leaves(defaulted) == _leaves(expected)
    assert defaulted["model"]["source"] == {"huggingFace": {}}
    assert crd_schema(crd())["properties"]["spec"]["properties"]["replicas"]["default"] == 1
