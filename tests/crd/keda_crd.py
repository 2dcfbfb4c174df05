"""Validate KEDA manifests (ScaledObject, TriggerAuthentication, ClusterTriggerAuthentication) offline.

Against KEDA v2.21.0's own CRDs and scaler schema, copied in tests/data/keda (its README):
- the CRD's openAPIV3Schema and CEL rules, run by the sandbox admission as the apiserver runs them
  (defaulting first; unknown fields refused, as `kubectl apply` with strict field validation does);
- each trigger's `metadata` against KEDA's generated `scalers-schema.json`: the trigger type exists,
  every key is one the scaler reads from metadata (or `<key>FromEnv` where it reads the environment),
  required keys are present (unless an `authenticationRef` may supply them), values are among the
  allowed ones, and numbers parse where the scaler parses a number. The CRD only says "a map of
  strings"; KEDA makes these checks when it builds the scaler, so a wrong key fails late there;
- KEDA's replica bounds (CheckReplicaCountBoundsAreValid, run by its admission webhook and its
  controller, not by the CRD): idleReplicaCount below the HPA's minimum, which is minReplicaCount,
  or 1 when minReplicaCount is 0 (so minReplicaCount 0 with idleReplicaCount 0 is valid).

    errors = keda_errors(scaled_object)    # [(path, message)], empty when valid
    python tests/crd/keda_crd.py FILE...   # by hand: prints the problems, exit 1 if any
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "keda"
KEDA_VERSION = "v2.21.0"
CRD_FILES = {
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
    "ClusterTriggerAuthentication": "keda.sh_clustertriggerauthentications.yaml",
}
# Metadata keys whose value the scaler parses as a number (metrics-api, prometheus: the triggers the
# operator renders). The schema types every key "string", so this is the Go struct's field type.
NUMERIC = {
    "metrics-api": {"targetValue", "activationTargetValue"},
    "prometheus": {"threshold", "activationThreshold"},
}
# Keys KEDA reads from every trigger's metadata, outside any one scaler's parameters.
COMMON_KEYS = {"metricType"}

Errors = list[tuple[str, str]]


@functools.cache
def crd(kind: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DATA / CRD_FILES[kind]).read_text())
    return loaded


@functools.cache
def scalers() -> dict[str, list[dict[str, Any]]]:
    """Trigger type -> its parameters, from KEDA's scalers-schema.json."""
    loaded = json.loads((DATA / "scalers-schema.json").read_text())
    return {s["type"]: s["parameters"] for s in loaded["scalers"]}


def schema_errors(obj: dict[str, Any]) -> Errors:
    """The apiserver's verdict on `obj` under KEDA's CRD (schema, list-map keys, CEL)."""
    from deepseek_sandbox.admission import admit

    kind = obj.get("kind")
    if kind not in CRD_FILES:
        return [("kind", f"not a KEDA kind this helper knows: {kind!r} (known: {', '.join(CRD_FILES)})")]
    definition = crd(kind)
    group = definition["spec"]["group"]
    versions = [v["name"] for v in definition["spec"]["versions"] if v.get("served")]
    if obj.get("apiVersion") not in {f"{group}/{v}" for v in versions}:
        return [("apiVersion", f"{obj.get('apiVersion')!r} is not served for {kind}: {group}/{'|'.join(versions)}")]
    _, errors = admit(obj, definition)
    return list(errors)


def trigger_errors(trigger: dict[str, Any], where: str) -> Errors:
    """One trigger's metadata against the scaler's parameters in scalers-schema.json."""
    errors: Errors = []
    kind = trigger.get("type")
    metadata = trigger.get("metadata") or {}
    params = scalers().get(kind) if isinstance(kind, str) else None
    if params is None:
        return [(f"{where}.type", f"unknown trigger type {kind!r} in KEDA {KEDA_VERSION}")]
    readable = {p["name"]: p for p in params if p.get("metadataVariableReadable")}
    from_env = {f"{p['name']}FromEnv" for p in params if p.get("envVariableReadable")}
    for key, value in metadata.items():
        path = f"{where}.metadata.{key}"
        if key in from_env or key in COMMON_KEYS:
            continue
        if key not in readable:
            errors.append((path, f"the {kind} scaler reads no metadata key {key!r}"))
            continue
        allowed = readable[key].get("allowedValue")
        if allowed and isinstance(value, str):
            separator = readable[key].get("separator")
            values = value.split(separator) if separator else [value]
            bad = [v for v in values if v.strip() not in allowed]
            if bad:
                errors.append((path, f"{bad[0]!r} is not one of {allowed}"))
        if key in NUMERIC.get(str(kind), ()) and isinstance(value, str):
            try:
                float(value)
            except ValueError:
                errors.append((path, f"{value!r} is not a number"))
    has_auth = bool(trigger.get("authenticationRef"))
    for p in params:
        if p.get("optional") or "default" in p or p.get("deprecated"):
            continue
        name = p["name"]
        if name in metadata or f"{name}FromEnv" in metadata:
            continue
        if has_auth and p.get("triggerAuthenticationVariableReadable"):
            continue
        if p.get("metadataVariableReadable"):
            errors.append((f"{where}.metadata", f"the {kind} scaler requires {name!r}"))
    return errors


def bounds_errors(spec: dict[str, Any]) -> Errors:
    """KEDA's CheckReplicaCountBoundsAreValid (apis/keda/v1alpha1/scaledobject_types.go)."""
    minimum, maximum, idle = (spec.get(k) for k in ("minReplicaCount", "maxReplicaCount", "idleReplicaCount"))
    if not all(isinstance(v, int) or v is None for v in (minimum, maximum, idle)):
        return []  # the schema reports the type
    hpa_min = minimum if minimum is not None and minimum > 0 else 1
    if hpa_min > (100 if maximum is None else maximum):
        return []  # the CRD's CEL rule reports it
    if idle is not None and idle >= hpa_min:
        return [("spec.idleReplicaCount", f"IdleReplicaCount={idle} must be less than MinReplicaCount={hpa_min}")]
    return []


def keda_errors(obj: dict[str, Any]) -> Errors:
    """Every problem with a KEDA manifest, as (field path, message); empty when valid."""
    errors = schema_errors(obj)
    if obj.get("kind") == "ScaledObject" and isinstance(obj.get("spec"), dict):
        errors += bounds_errors(obj["spec"])
        triggers = (obj.get("spec") or {}).get("triggers")
        for i, trigger in enumerate(triggers if isinstance(triggers, list) else []):
            if isinstance(trigger, dict):
                errors += trigger_errors(trigger, f"spec.triggers[{i}]")
    return errors


def main(argv: list[str]) -> int:
    status = 0
    for name in argv:
        for doc in yaml.safe_load_all(Path(name).read_text()):
            if not doc:
                continue
            label = f"{name}: {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
            problems = keda_errors(doc)
            for path, message in problems:
                print(f"{label}: {path}: {message}")
            status |= bool(problems)
            if not problems:
                print(f"{label}: valid (KEDA {KEDA_VERSION})")
    return status


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "sandbox"))
    raise SystemExit(main(sys.argv[1:]))
