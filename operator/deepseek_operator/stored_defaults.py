"""Spec values an earlier CRD stored as defaults, told from the user's choices by managedFields. Pure.

The apiserver persists a CRD's defaults into the object. When a release changes a default, resources
created before keep the old value, and the spec alone cannot tell it from a value the user wrote. The
field managers can, in part (as the real apiserver records them; tests/e2e/test_operator_upgrade.py):

- Server-side apply (operation `Apply`) owns exactly the fields the user sent: a defaulted field
  has no Apply manager.
- An `Update` (kubectl create, client-side kubectl apply, a controller's PUT or patch) owns every
  field its request set, the defaults the apiserver filled in included. Client-side kubectl apply
  also keeps what the user sent, in the `kubectl.kubernetes.io/last-applied-configuration`
  annotation: its ownership counts only for the fields recorded there.
- A field no manager owns (managedFields cleared, or a default applied when the object was read) is
  a default.

So a value is the user's choice when an Apply manager owns it, when kubectl's client-side apply owns
it and its last applied configuration holds it, or when any other Update manager owns it: those cannot
be told apart from defaulting, and nothing is claimed that is not known.

Used for spec.networkPolicy.enabled (default false before commit 4130c2d, 2026-12-01; true since): a resource
created before keeps `false`, so it never gets the default-deny policy. The operator does not flip it
(that could cut off an ingress controller or Prometheus in another namespace on an operator upgrade,
which restarts and changes nothing else, docs/rollouts.md); NetworkPolicyReady says so instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

CLIENT_SIDE_APPLY = "kubectl-client-side-apply"
LAST_APPLIED_CONFIGURATION = "kubectl.kubernetes.io/last-applied-configuration"
NETWORK_POLICY_ENABLED = ("spec", "networkPolicy", "enabled")
STORED_DEFAULT_OFF = (
    "spec.networkPolicy.enabled is false only because an earlier operator release's CRD stored that "
    "default when this resource was created (no field manager set it: metadata.managedFields); the worker "
    "pods have no NetworkPolicy. Set spec.networkPolicy.enabled: true for the default-deny policy "
    "(docs/security.md), or write false yourself (kubectl apply, server-side or client-side) to keep it off")


def _owns(fields: Any, path: tuple[str, ...]) -> bool:
    """A managedFields entry's FieldsV1 set includes `path` (each key as `f:<name>`)."""
    for key in path:
        if not isinstance(fields, dict) or f"f:{key}" not in fields:
            return False
        fields = fields[f"f:{key}"]
    return True


def _recorded(annotation: str | None, path: tuple[str, ...]) -> bool:
    """kubectl's last applied configuration holds `path` (False when it is absent or unreadable)."""
    try:
        value: Any = json.loads(annotation) if annotation else None
    except ValueError:
        return False
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return True


def chosen_by_user(body: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    """The value at `path` was written by a user (or a tool acting for one), not defaulted (module doc)."""
    meta = body.get("metadata") or {}
    last_applied = (meta.get("annotations") or {}).get(LAST_APPLIED_CONFIGURATION)
    for entry in meta.get("managedFields") or []:
        if entry.get("subresource") or not _owns(entry.get("fieldsV1"), path):
            continue
        if entry.get("operation") == "Apply":
            return True
        if entry.get("manager") != CLIENT_SIDE_APPLY or _recorded(last_applied, path):
            return True
    return False


def needs_managed_fields(body: Mapping[str, Any]) -> bool:
    """Whether stored_default_conditions() reads managedFields for `body` (networkPolicy.enabled false)."""
    return ((body.get("spec") or {}).get("networkPolicy") or {}).get("enabled") is False


def stored_default_conditions(body: Mapping[str, Any]) -> list[tuple[str, bool, str, str]]:
    """NetworkPolicyReady False (StoredDefaultDisabled) when networkPolicy.enabled is false only as the
    default an earlier CRD stored; nothing otherwise (the enabled policy has its own NetworkPolicyReady)."""
    if not needs_managed_fields(body) or chosen_by_user(body, NETWORK_POLICY_ENABLED):
        return []
    return [("NetworkPolicyReady", False, "StoredDefaultDisabled", STORED_DEFAULT_OFF)]
