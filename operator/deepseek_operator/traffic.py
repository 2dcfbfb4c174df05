"""The weighted traffic split between variants: a pure function of the spec and readiness.

Principle 8 (KServe `applyCanaryWeights`): a canary receives traffic only while at least one of its
pods is ready, so a broken or still-loading canary never takes user requests. The rules, also in
docs/traffic.md:

1. A canary's effective weight is its spec weight while `ready_replicas[name] > 0`, else 0.
   A canary absent from `ready_replicas` counts as 0 ready.
2. The primary gets `100 - sum(effective canary weights)`. It is the fallback and is never zeroed
   for readiness: when the primary itself has no ready pods there is nowhere better to send its
   share (an unready canary is no better), and the NoReadyReplicas alert tells the on-call engineer.
3. The weights always sum to exactly 100 (the CRD caps canary weights at 100 in total), so when
   nothing is ready at all the primary keeps 100.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from deepseek_operator.api import ResolvedVariant

TOTAL = 100


def effective_weights(
    variants: Sequence[ResolvedVariant], ready_replicas: Mapping[str, int]
) -> dict[str, int]:
    """Map every variant name to its effective weight (percent); the values sum to 100.

    `variants` is `resolve_variants(spec)`: exactly one primary plus the canaries. Raises
    ValueError when there is no single primary or the canary weights exceed 100, i.e. input
    that the CRD and `parse_spec` already refuse.
    """
    primaries = [v for v in variants if v.is_primary]
    if len(primaries) != 1:
        raise ValueError(f"expected exactly one primary variant, got {len(primaries)}")
    canaries = {
        v.name: (v.weight if ready_replicas.get(v.name, 0) > 0 else 0)
        for v in variants
        if not v.is_primary
    }
    canary_total = sum(canaries.values())
    if canary_total > TOTAL:
        raise ValueError(f"canary weights sum to {canary_total}, more than {TOTAL}")
    return {primaries[0].name: TOTAL - canary_total, **canaries}
