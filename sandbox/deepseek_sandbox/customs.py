"""Admission of custom resources: defaulting and validation from the CRD (schema + CEL).

The rules live in ``admission.py`` (another module's contract: ``apply_defaults(obj, crd)`` and
``validate(obj, crd) -> [(field path, message)]``). kmock 0.8 does neither, so without that module
the sandbox admits custom resources as given; the import is resolved lazily so the sandbox keeps
working before ``admission.py`` lands.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from . import errors
from .resources import ResourceInfo

_MODULE = "deepseek_sandbox.admission"
_cache: list[ModuleType | None] = []


def _admission() -> ModuleType | None:
    if not _cache:
        try:
            _cache.append(importlib.import_module(_MODULE))
        except ModuleNotFoundError as exc:
            if exc.name != _MODULE:
                raise  # admission.py exists but its own imports are broken: surface it
            _cache.append(None)
    return _cache[0]


def admit(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
    """Defaulted ``obj``; raises 422 Invalid naming each failing field path.

    Built-in resources and CRDs without a schema pass through unchanged.
    """
    module = _admission()
    if info.crd is None or module is None:
        return obj
    defaulted: dict[str, Any] = module.apply_defaults(obj, info.crd)
    problems: list[tuple[str, str]] = list(module.validate(defaulted, info.crd))
    if problems:
        name = defaulted.get("metadata", {}).get("name", "")
        raise errors.invalid(info.kind, info.group, name, problems)
    return defaulted
