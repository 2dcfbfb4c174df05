"""A checker for Kubernetes structural schemas (no registry ships one).

structural_problems(schema) returns human-readable problems, empty when the schema is structural
in the apiserver's sense (apiextensions "Specifying a structural schema") plus this project's
stricter habits: every property has a description, CEL rules carry a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema

# Not allowed anywhere in a structural schema (or unsupported by apiextensions v1).
FORBIDDEN = {"$ref", "definitions", "$schema", "dependencies", "additionalItems", "patternProperties"}
# Only allowed below the top of a node's value validation, never alongside types at the top.
LOGIC = {"anyOf", "oneOf", "allOf", "not"}
TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, node) for every schema node, parents first; list items as `path[]`."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


def _node_problems(path: str, node: dict[str, Any], is_property: bool) -> Iterator[str]:
    where = path or "<root>"
    for key in sorted(FORBIDDEN & node.keys()):
        yield f"{where}: forbidden keyword {key}"
    for key in sorted(LOGIC & node.keys()):
        yield f"{where}: {key} is not allowed here (structural schemas keep types outside logic junctors)"
    free = node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
    if node.get("type") not in TYPES and not free:
        yield f"{where}: no type"
    # metadata is special: the apiserver validates it itself and allows a bare `type: object`.
    bare_ok = free or path == ".metadata"
    if node.get("type") == "object" and not ({"properties", "additionalProperties"} & node.keys() or bare_ok):
        yield f"{where}: object without properties, additionalProperties or preserve-unknown-fields"
    if "properties" in node and "additionalProperties" in node:
        yield f"{where}: properties and additionalProperties are mutually exclusive"
    if node.get("type") == "array" and not isinstance(node.get("items"), dict):
        yield f"{where}: array without an items schema"
    if node.get("nullable") and "default" in node and node["default"] is None:
        yield f"{where}: null default"
    if is_property and not node.get("description") and path != ".metadata":
        yield f"{where}: no description (kubectl explain shows nothing)"
    for rule in node.get("x-kubernetes-validations", []):
        if not rule.get("message"):
            yield f"{where}: CEL rule without message: {rule.get('rule')}"
    yield from _default_problems(where, node)
    yield from _list_problems(where, node)


def _default_problems(where: str, node: dict[str, Any]) -> Iterator[str]:
    if "default" not in node:
        return
    from deepseek_sandbox.admission import to_json_schema

    # A default must validate against its own node (the apiserver refuses the CRD otherwise).
    # Nested defaults are applied after it, so `required` children may still be missing here.
    own = {k: v for k, v in node.items() if k != "required"}
    for err in jsonschema.Draft7Validator(to_json_schema(own)).iter_errors(node["default"]):
        yield f"{where}: default {node['default']!r} is invalid: {err.message}"


def _list_problems(where: str, node: dict[str, Any]) -> Iterator[str]:
    if node.get("x-kubernetes-list-type") != "map":
        return
    items = node.get("items", {})
    for key in node.get("x-kubernetes-list-map-keys", []):
        key_schema = items.get("properties", {}).get(key)
        if key_schema is None:
            yield f"{where}: list-map key {key} is not a property of the items"
        elif key not in items.get("required", []) and "default" not in key_schema:
            yield f"{where}: list-map key {key} must be required or defaulted"


def structural_problems(schema: dict[str, Any]) -> list[str]:
    """Every way `schema` (an openAPIV3Schema) fails to be structural; empty when it is."""
    problems: list[str] = []
    for path, node in nodes(schema):
        is_property = path.count(".") > 0 and not path.endswith(("[]", "{}"))
        problems += _node_problems(path, node, is_property)
    if schema.get("type") != "object":
        problems.append("<root>: type must be object")
    return problems


def json_path_exists(schema: dict[str, Any], json_path: str) -> bool:
    """Whether a printer-column JSONPath like `.status.conditions[?(@.type=="Ready")].reason` names
    fields the schema declares (metadata is always there)."""
    tokens = re.findall(r"\.([A-Za-z0-9_]+)|\[([^\]]*)\]", json_path)
    if tokens and tokens[0][0] == "metadata":
        return True
    node = schema
    for field, selector in tokens:
        if selector:
            if node.get("type") != "array":
                return False
            node = node["items"]
            match = re.search(r"@\.([A-Za-z0-9_]+)", selector)
            if match and match.group(1) not in node.get("properties", {}):
                return False
        elif field in node.get("properties", {}):
            node = node["properties"][field]
        else:
            return False
    return bool(tokens)
