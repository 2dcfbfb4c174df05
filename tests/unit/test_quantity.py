"""quantity.py: the one parser of Kubernetes quantities (the spec's checks, GPU memory, cache claims)."""

from __future__ import annotations

import pytest

from deepseek_operator import api, quantity


@pytest.mark.parametrize(("text", "value"), [
    ("500m", 0.5), ("2", 2.0), ("1.5", 1.5), ("1k", 1e3), ("1M", 1e6), ("3G", 3e9), ("1T", 1e12), ("1P", 1e15),
    ("1Ki", 1024.0), ("1Mi", 2.0**20), ("1Gi", 2.0**30), ("80Gi", 80 * 2.0**30), ("1Ti", 2.0**40), ("1Pi", 2.0**50),
])
def test_value(text: str, value: float) -> None:
    assert quantity.value(text) == value


@pytest.mark.parametrize(("text", "nbytes"), [
    ("80Gi", 85899345920), ("81559Mi", 81559 * 2**20), ("85899345920", 85899345920), ("1.5Gi", 1610612736),
    ("0", 0), ("1500m", 1),
])
def test_as_bytes_is_whole_bytes(text: str, nbytes: int) -> None:
    assert quantity.as_bytes(text) == nbytes


@pytest.mark.parametrize("text", ["", "Gi", "1 Gi", "1e3", "-1", "1gi", "1.Gi", "1Ei"])
def test_what_the_crd_pattern_refuses_is_no_quantity(text: str) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        quantity.value(text)


def test_api_keeps_its_names() -> None:
    assert api.quantity_value is quantity.value
    assert api.QUANTITY == quantity.QUANTITY
