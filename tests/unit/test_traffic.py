"""Table tests of traffic.effective_weights (docs/traffic.md states the same rules)."""

from __future__ import annotations

import pytest

from deepseek_operator.api import DeepSeekDeploymentSpec, ResolvedVariant, resolve_variants
from deepseek_operator.traffic import effective_weights


def _variants(*canaries: tuple[str, int]) -> list[ResolvedVariant]:
    spec = DeepSeekDeploymentSpec.model_validate(
        {
            "image": "img:1",
            "model": {"id": "m"},
            "variants": [{"name": n, "weight": w} for n, w in canaries],
        }
    )
    return resolve_variants(spec)


CASES = {
    "no canaries, primary ready": ((), {"primary": 2}, {"primary": 100}),
    "no canaries, nothing ready: primary keeps 100": ((), {}, {"primary": 100}),
    "ready canary gets its weight": (
        (("canary", 10),), {"primary": 2, "canary": 1}, {"primary": 90, "canary": 10}
    ),
    "unready canary gets 0": ((("canary", 10),), {"primary": 2, "canary": 0}, {"primary": 100, "canary": 0}),
    "canary missing from readiness counts as unready": (
        (("canary", 10),), {"primary": 2}, {"primary": 100, "canary": 0}
    ),
    "nothing ready: primary keeps 100": ((("canary", 30),), {}, {"primary": 100, "canary": 0}),
    "primary unready, canary ready: primary keeps its remainder": (
        (("canary", 30),), {"primary": 0, "canary": 1}, {"primary": 70, "canary": 30}
    ),
    "two canaries, one ready": (
        (("a", 20), ("b", 30)), {"primary": 1, "a": 0, "b": 3}, {"primary": 70, "a": 0, "b": 30}
    ),
    "two canaries, both ready": (
        (("a", 20), ("b", 30)), {"primary": 1, "a": 1, "b": 1}, {"primary": 50, "a": 20, "b": 30}
    ),
    "canaries take everything when ready": (
        (("a", 60), ("b", 40)), {"primary": 1, "a": 1, "b": 1}, {"primary": 0, "a": 60, "b": 40}
    ),
    "zero-weight canary stays 0 even when ready": (
        (("shadow", 0),), {"primary": 1, "shadow": 1}, {"primary": 100, "shadow": 0}
    ),
    "negative ready count is not ready": ((("canary", 10),), {"canary": -1}, {"primary": 100, "canary": 0}),
}


@pytest.mark.parametrize("canaries,ready,expected", list(CASES.values()), ids=list(CASES))
def test_effective_weights(
    canaries: tuple[tuple[str, int], ...], ready: dict[str, int], expected: dict[str, int]
) -> None:
    got = effective_weights(_variants(*canaries), ready)
    assert got == expected
    assert sum(got.values()) == 100


def test_returns_fresh_dict_and_does_not_mutate_input() -> None:
    variants = _variants(("canary", 10))
    ready = {"canary": 1}
    first = effective_weights(variants, ready)
    first["canary"] = 99
    assert effective_weights(variants, ready) == {"primary": 90, "canary": 10}
    assert ready == {"canary": 1}


def test_requires_exactly_one_primary() -> None:
    canaries_only = [v for v in _variants(("canary", 10)) if not v.is_primary]
    with pytest.raises(ValueError, match="exactly one primary"):
        effective_weights(canaries_only, {})


def test_refuses_canary_weights_over_100() -> None:
    variants = _variants(("a", 60), ("b", 40))
    over = [v.model_copy(update={"weight": 70}) if v.name == "a" else v for v in variants]
    with pytest.raises(ValueError, match="more than 100"):
        effective_weights(over, {"a": 1, "b": 1})
