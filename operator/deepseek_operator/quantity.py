"""Kubernetes resource quantities ("500m", "1Gi", "85899345920"): the grammar the CRD accepts and their values.

The one parser of quantities in the operator: the spec's checks (download requests within limits) and
the sizes it compares (GPU memory, model cache claims) read them here. The grammar is the subset of
Kubernetes' `resource.Quantity` the CRD's patterns admit: a decimal number and an optional SI or binary
suffix (no exponents).
"""

from __future__ import annotations

import re

QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi)?$"
_SUFFIX = {"": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}


def value(text: str) -> float:
    """A quantity matching QUANTITY as a number ("500m" -> 0.5, "1Gi" -> 1073741824.0); ValueError otherwise."""
    match = re.match(QUANTITY, text)
    if match is None:
        raise ValueError(f"not a quantity: {text!r}")
    number = text[: len(text) - len(match.group(2) or "")]
    return float(number) * _SUFFIX[match.group(2) or ""]


def as_bytes(text: str) -> int:
    """A quantity of memory or storage in whole bytes ("80Gi", "81559Mi", "85899345920")."""
    return int(value(text))
