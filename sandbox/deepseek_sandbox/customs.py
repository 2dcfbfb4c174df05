"""Admission of custom resources: defaulting and validation from the CRD (schema + CEL).

kmock 0.8 does neither, so the emulated API runs the CRD's own rules here, through admission.py's
contract: ``apply_defaults(obj, crd)`` and ``validate(obj, crd) -> [(field path, message)]``.
"""

from __future__ import annotations

from typing import Any

from . import admission, errors
from .resources import ResourceInfo


def admit(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
    """Defaulted ``obj``; raises 422 Invalid naming each failing field path.

    Built-in resources and CRDs without a schema pass through unchanged.
    """
    if info.crd is None:
        return obj
    defaulted = admission.apply_defaults(obj, info.crd)
    problems = admission.validate(defaulted, info.crd)
    if problems:
        name = defaulted.get("metadata", {}).get("name", "")
        raise errors.invalid(info.kind, info.group, name, problems)
    return defaulted
