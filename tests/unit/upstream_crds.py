"""Validate rendered custom resources against the vendored upstream CRDs' openAPIV3Schema.

The CRDs are vendored under third_party/crds (with their licences; see its README).
Validation is strict like `kubectl apply --validate=strict`: every object schema that lists
properties and neither allows extra ones nor preserves unknown fields gets
`additionalProperties: false`, so a misspelt field fails here instead of being silently pruned.
CEL rules (x-kubernetes-validations) are not evaluated; plain JSON Schema cannot.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "third_party" / "crds"


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def _validator(filename: str, version: str) -> jsonschema.Draft202012Validator:
    path = CRD_DIR / filename
    crd = yaml.safe_load(path.read_text())
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema = _strict(v["schema"]["openAPIV3Schema"])
            # metadata is validated by the API server itself, not by the CRD's schema.
            schema["properties"]["metadata"] = {"type": "object"}
            return jsonschema.Draft202012Validator(schema)
    raise AssertionError(f"{filename} has no version {version}")


def validate(obj: dict[str, Any], filename: str) -> None:
    """Raise AssertionError listing every schema violation of obj (skip if the CRDs are absent)."""
    version = obj["apiVersion"].rsplit("/", 1)[-1]
    errors = sorted(_validator(filename, version).iter_errors(obj), key=lambda e: list(e.path))
    messages = [f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors]
    assert not messages, "\n".join(messages)


def kube_validate(obj: dict[str, Any]) -> None:
    """Strict validation of a built-in kind against the Kubernetes OpenAPI (kubernetes-validate)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, kubernetes_validate.utils.latest_version(), strict=True)
    except kubernetes_validate.utils.ValidationError as exc:
        # The library's str() dumps the whole schema; one line with the path is what a reader needs.
        raise AssertionError(f"{'.'.join(map(str, exc.path)) or '<root>'}: {exc.message}") from None


HTTPROUTE = "gateway.networking.k8s.io_httproutes.yaml"
SERVICE_MONITOR = "monitoring.coreos.com_servicemonitors.yaml"
PROMETHEUS_RULE = "monitoring.coreos.com_prometheusrules.yaml"
# Kept beside the others, not among them (third_party/lws/README.md); resolved from CRD_DIR.
LEADER_WORKER_SET = "../lws/leaderworkerset.x-k8s.io_leaderworkersets.yaml"
