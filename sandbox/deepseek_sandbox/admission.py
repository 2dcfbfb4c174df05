"""What kube-apiserver does to a custom resource before storing it: structural defaulting, then
OpenAPI schema validation and CEL (`x-kubernetes-validations`) rules, from the CRD itself.

Used by the sandbox's emulated API (which has no admission of its own) and by tests/crd. Contract:
- apply_defaults(obj, crd) returns a defaulted deep copy; the input is not changed.
- validate(obj, crd, old=None) returns [(field path, message)], empty when the object is accepted.
  Paths look like the apiserver's: `spec.variants[1].weight`. Call it on a defaulted object, as
  the apiserver does. Unknown fields are errors (kubectl's default `--validate=strict`).
- admit(obj, crd, old=None) does both, in the apiserver's order.
Transition rules (those that mention `oldSelf`) run only when `old` has the same node; they are
skipped on create and inside lists, as the apiserver skips them for items it cannot correlate.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from typing import Any

import celpy
import jsonschema
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

Schema = dict[str, Any]
Errors = list[tuple[str, str]]


def crd_schema(crd: dict[str, Any], version: str | None = None) -> Schema:
    """openAPIV3Schema of `version` (default: the storage version) of a CRD dict."""
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version or (version is None and entry.get("storage")):
            schema: Schema = entry["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"CRD {crd['metadata']['name']} has no version {version or '(storage)'}")


def apply_defaults(obj: dict[str, Any], crd: dict[str, Any]) -> dict[str, Any]:
    """Structural defaulting: absent fields get their default, parents first, then their children.

    Like the apiserver, nulls of non-nullable fields are dropped first (so a default can apply).
    """
    out = copy.deepcopy(obj)
    _default_node(out, crd_schema(crd))
    return out


def _default_node(value: Any, schema: Schema) -> None:
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        for name, child in props.items():
            if name in value and value[name] is None and not child.get("nullable"):
                del value[name]
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                _default_node(value[name], child)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in [k for k in value if k not in props]:
                _default_node(value[key], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default_node(item, schema["items"])


def admit(obj: dict[str, Any], crd: dict[str, Any], old: dict[str, Any] | None = None) -> tuple[dict[str, Any], Errors]:
    """(defaulted object, errors): defaulting, then validation, as the apiserver orders them."""
    defaulted = apply_defaults(obj, crd)
    return defaulted, validate(defaulted, crd, old)


def validate(obj: dict[str, Any], crd: dict[str, Any], old: dict[str, Any] | None = None) -> Errors:
    """Schema errors, duplicate list-map keys, then CEL rule failures, each as (path, message).

    CEL evaluation errors (as opposed to a rule returning false) are reported only when the schema
    found nothing: a wrong type usually makes the rule fail to evaluate, and one message is enough.
    """
    schema = crd_schema(crd)
    errors = schema_errors(obj, schema) + list_map_errors(obj, schema)
    failures, eval_errors = cel_errors(obj, schema, old)
    return errors + failures + ([] if errors else eval_errors)


def to_json_schema(node: Schema) -> Schema:
    """Translate a structural OpenAPI v3 node to JSON Schema (draft 7) for the jsonschema library.

    nullable -> "null" in type; int-or-string -> both types; objects with properties refuse unknown
    fields unless preserve-unknown-fields; OpenAPI v3.0's boolean exclusiveMinimum/Maximum becomes
    draft 7's number; x-kubernetes-*, default and description are dropped.
    """
    out: Schema = {}
    for key, value in node.items():
        if key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            if value is True and bound in node:
                out[key] = node[bound]
        elif key in ("minimum", "maximum") and node.get(f"exclusive{key.capitalize()}") is True:
            continue
        elif key == "properties":
            out[key] = {name: to_json_schema(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif not key.startswith("x-kubernetes-") and key not in ("nullable", "default", "description"):
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


@functools.lru_cache(maxsize=32)
def _validator(schema_json: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(to_json_schema(json.loads(schema_json)))


def schema_errors(obj: dict[str, Any], schema: Schema) -> Errors:
    """OpenAPI errors with apiserver-like paths and wording; metadata is the apiserver's business.

    apiVersion and kind are always allowed at the root, as the apiserver does, even when a CRD's
    schema does not list them.
    """
    always = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
    root = {**schema, "properties": {**always, **schema.get("properties", {}), "metadata": {"type": "object"}}}
    validator = _validator(json.dumps(root, sort_keys=True))
    out: Errors = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]):
        out += _translate(err)
    return out


def _translate(err: jsonschema.ValidationError) -> Errors:
    path = format_path(err.absolute_path)
    if err.validator == "required":
        missing = str(err.message).split("'")[1]
        return [(join_path(path, missing), "Required value")]
    if err.validator == "additionalProperties":
        known = set(err.schema.get("properties", {}))
        return [(join_path(path, k), f'unknown field "{k}"') for k in err.instance if k not in known]
    if err.validator == "enum":
        allowed = ", ".join(json.dumps(v) for v in err.validator_value)
        return [(path, f"Unsupported value: {json.dumps(err.instance)}: supported values: {allowed}")]
    return [(path, f"Invalid value: {json.dumps(err.instance)}: {err.message}")]


def format_path(parts: Any) -> str:
    """deque/list of keys and indexes -> `spec.variants[1].weight`."""
    out = ""
    for part in parts:
        out = f"{out}[{part}]" if isinstance(part, int) else join_path(out, str(part))
    return out


def join_path(base: str, name: str) -> str:
    """Dot-join a field name onto a path that may be empty."""
    return f"{base}.{name}" if base else name


def _walk(value: Any, schema: Schema, path: str) -> Iterator[tuple[Any, Schema, str]]:
    """(value, schema node, path) for every node of `value` the schema describes, parents first."""
    yield value, schema, path
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, child in value.items():
            sub = props.get(key) or (extra if isinstance(extra, dict) else None)
            if sub is not None:
                yield from _walk(child, sub, join_path(path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from _walk(item, schema["items"], f"{path}[{i}]")


def list_map_errors(obj: dict[str, Any], schema: Schema) -> Errors:
    """Duplicate keys in `x-kubernetes-list-type: map` lists and duplicates in `set` lists."""
    out: Errors = []
    for value, node, path in _walk(obj, schema, ""):
        kind = node.get("x-kubernetes-list-type")
        if not isinstance(value, list) or kind not in ("map", "set"):
            continue
        seen: set[str] = set()
        for i, item in enumerate(value):
            keys = node.get("x-kubernetes-list-map-keys", [])
            ident = item if kind == "set" or not isinstance(item, dict) else {k: item.get(k) for k in keys}
            token = json.dumps(ident, sort_keys=True)
            if token in seen:
                out.append((f"{path}[{i}]", f"Duplicate value: {token}"))
            seen.add(token)
    return out


def _lookup(value: Any, path: str) -> Any:
    """Follow a dotted path (as produced by _walk) into `value`; None when any step is missing."""
    node = value
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("["):
            return None  # list items: transition rules cannot correlate them (see module docstring)
        node = node.get(part) if isinstance(node, dict) else None
    return node


def cel_errors(obj: dict[str, Any], schema: Schema, old: dict[str, Any] | None) -> tuple[Errors, Errors]:
    """(rule failures, evaluation errors) for every x-kubernetes-validations rule in the object."""
    failures: Errors = []
    broken: Errors = []
    for value, node, path in _walk(obj, schema, ""):
        for entry in node.get("x-kubernetes-validations", []):
            rule: str = entry["rule"]
            activation = {"self": json_to_cel(value)}
            if "oldSelf" in rule:
                old_value = _lookup(old, path) if old is not None else None
                if old_value is None:
                    continue
                activation["oldSelf"] = json_to_cel(old_value)
            where = path + entry.get("fieldPath", "")
            try:
                result = _program(rule).evaluate(activation)
            except CELEvalError as exc:
                broken.append((where, f"rule evaluation error: {rule}: {exc.args[0] if exc.args else exc}"))
                continue
            if isinstance(result, CELEvalError):
                broken.append((where, f"rule evaluation error: {rule}: {result.args[0] if result.args else ''}"))
            elif result is not celtypes.BoolType(True) and result != celtypes.BoolType(True):
                failures.append((where, _message(entry, activation) or f"failed rule: {rule}"))
    return failures, broken


def _message(entry: dict[str, Any], activation: dict[str, Any]) -> str:
    """The rule's messageExpression when it evaluates to a string (as the apiserver does), else message."""
    expression = entry.get("messageExpression")
    if expression:
        try:
            text = _program(expression).evaluate(activation)
        except CELEvalError:
            text = None
        if isinstance(text, str):  # celpy may return a plain str for a string result
            return str(text)
    return str(entry.get("message", ""))


def _cel_sum(values: celtypes.ListType) -> celtypes.Value:
    """Kubernetes CEL list library `sum()` (celpy lacks it); only integers are used here."""
    return celtypes.IntType(sum(int(v) for v in values if isinstance(v, celtypes.IntType)))


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi)?$")
_QUANTITY_SUFFIX = {"": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
                    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}


def _cel_quantity(text: celtypes.Value) -> celtypes.Value:
    """Kubernetes CEL quantity library `quantity()`, as a number (only compared here); the CRD's
    patterns admit only these forms."""
    match = _QUANTITY.match(str(text))
    if match is None:
        raise CELEvalError(f"quantity: not a quantity: {text!r}")
    return celtypes.DoubleType(float(match.group(1)) * _QUANTITY_SUFFIX[match.group(2) or ""])


def _cel_is_greater_than(left: celtypes.Value, right: celtypes.Value) -> celtypes.Value:
    """`quantity(a).isGreaterThan(quantity(b))`."""
    return celtypes.BoolType(float(left) > float(right))  # type: ignore[arg-type]


@functools.lru_cache(maxsize=256)
def _program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule), functions={"sum": _cel_sum, "quantity": _cel_quantity,
                                                     "isGreaterThan": _cel_is_greater_than})
