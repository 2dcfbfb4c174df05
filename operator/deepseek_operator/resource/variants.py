"""Resolving a spec's variants: the primary, then each canary with its overrides merged over `spec.model`,
`spec.env` and `spec.runtime`. `ResolvedVariant` is what the renderers and the GPU-fit plan work from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from deepseek_operator.envvars import WorkerEnvVar, merged
from deepseek_operator.resource.autoscaling import Autoscaling
from deepseek_operator.resource.model import ModelSpec
from deepseek_operator.resource.patterns import PRIMARY
from deepseek_operator.resource.workload import BUILTIN_RUNTIME, RuntimeSpec, Variant

if TYPE_CHECKING:
    from deepseek_operator.resource.spec import DeepSeekDeploymentSpec


class ResolvedVariant(BaseModel):
    """A variant with everything inherited filled in: what the renderers work from."""

    model_config = ConfigDict(frozen=True)

    name: str
    weight: int
    image: str
    replicas: int
    model: ModelSpec
    is_primary: bool
    env: tuple[WorkerEnvVar, ...] = ()  # spec.env with the variant's entries merged in (envvars.merged)
    runtime: RuntimeSpec = BUILTIN_RUNTIME  # the variant's runtime, else spec.runtime, else builtin
    autoscaling: Autoscaling | None = None  # spec.autoscaling for the primary, the variant's own for a canary


def _merged_model(primary: ModelSpec, variant: Variant) -> dict[str, Any]:
    """A variant's model as wire data: its overrides over the primary's model."""
    overrides = variant.model.model_dump(by_alias=True, exclude_none=True) if variant.model else {}
    if "id" in overrides and "architecture" not in overrides:
        overrides["architecture"] = None  # the primary's geometry describes the primary's model
    return {**primary.model_dump(by_alias=True), **overrides}


def variant_model_errors(spec: DeepSeekDeploymentSpec) -> list[str]:
    """Cache/source rules on each variant's model as inherited (the CRD's CEL says the same)."""
    errors = []
    for i, v in enumerate(spec.variants):
        if v.model is None or (v.model.source is None and v.model.cache is None):
            continue
        try:
            ModelSpec.model_validate(_merged_model(spec.model, v))
        except ValidationError as exc:
            errors += [f"spec.variants[{i}].model.{str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors()]
    return errors


def resolve_variants(spec: DeepSeekDeploymentSpec) -> list[ResolvedVariant]:
    """The primary first, then each canary with its overrides merged over spec.model.

    The primary's `weight` is its nominal share (100 - sum of canary weights); effective weights
    that account for readiness come from traffic.effective_weights().
    """
    primary = ResolvedVariant(
        name=PRIMARY,
        weight=100 - sum(v.weight for v in spec.variants),
        image=spec.image,
        replicas=spec.replicas,
        model=spec.model,
        is_primary=True,
        env=tuple(spec.env),
        runtime=spec.runtime or BUILTIN_RUNTIME,
        autoscaling=spec.autoscaling,
    )
    out = [primary]
    for v in spec.variants:
        model = ModelSpec.model_validate(_merged_model(spec.model, v))
        out.append(
            ResolvedVariant(
                name=v.name,
                weight=v.weight,
                image=v.image or spec.image,
                replicas=v.replicas,
                model=model,
                is_primary=False,
                env=merged(spec.env, v.env),
                runtime=v.runtime or spec.runtime or BUILTIN_RUNTIME,
                autoscaling=v.autoscaling,
            )
        )
    return out


