"""What one reconcile pass wants, computed once: the `Desired` value that render, apply and status read.

Contract: `compute(...)` is pure. It takes what the pass read before deciding anything (the spec, the
status as it was, the GPU-fit plans from the downloaded configs, the cluster's capabilities) and
returns a frozen `Desired`: the variants resolved once (`api.resolve_variants`), one GPU-fit plan per
variant (`gpufit.plan_variants`, with its runtime and downloaded config: the same plan goes into
status.gpuFit and beside an OOMAtLoad), the rollback state and the images it implies, and each
variant's rolling-update strategy. A pass that learns something while converging (a rollout failed,
Auto's surge pod found no GPU) derives a new value with `after_failure` / `with_strategies`; nothing
is resolved or planned again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deepseek_operator import rollback, strategy
from deepseek_operator.api import PRIMARY, DeepSeekDeploymentSpec, ResolvedVariant
from deepseek_operator.gpufit import GpuFit
from deepseek_operator.measured import declared_load_seconds
from deepseek_operator.render import multinode
from deepseek_operator.render.autoscaling import render_autoscalers
from deepseek_operator.render.common import LABEL_VARIANT, Capabilities, Owner
from deepseek_operator.render.gateway import render_gateway
from deepseek_operator.render.workload import render_workload
from deepseek_operator.status import Rollback
from deepseek_operator.strategy import Strategy

WORKLOAD_KINDS = ("Deployment", multinode.KIND)  # a variant's pods: one of these (render/workload.py)
Chosen = dict[str, tuple[Strategy, str]]  # variant -> (strategy, pod template hash)
Conditions = Sequence[tuple[str, bool, str, str]]  # (type, ok, reason, message), as integration_conditions


@dataclass(frozen=True)
class Desired:
    """One pass's wanted state. `previous` is the status as read at the start of the pass (the
    rollback target, Auto's remembered choices and the recorded intents live there); `stored`: the
    conditions about values an earlier CRD stored as defaults (stored_defaults.py)."""

    owner: Owner
    spec: DeepSeekDeploymentSpec
    variants: tuple[ResolvedVariant, ...]  # the primary first
    fits: Mapping[str, GpuFit]  # variant -> its GPU-fit plan
    caps: Capabilities
    previous: Mapping[str, Any]
    rollback: Rollback
    images: Mapping[str, str]  # variant -> image overriding the spec's (the primary's while rolled back)
    chosen: Chosen
    stored: Conditions = ()

    @property
    def stable_image(self) -> str:
        """status.image before this pass: the image fully rolled out on the primary."""
        return str(self.previous.get("image", ""))

    @property
    def load_seconds(self) -> int:
        """The gateway's declared load time (render/gateway.py): the longest p50 cold start the gateway
        measured (status.variants[].coldStart, measured.declared_load_seconds), else the longest GPU-fit
        load estimate of the variants (0: none known)."""
        return declared_load_seconds(dict(self.previous)) or max(
            (fit.load_seconds for fit in self.fits.values()), default=0)

    def scaling(self) -> list[dict[str, Any]]:
        """The request gateway's children and each autoscaled variant's autoscaler (render/gateway.py,
        render/autoscaling.py). The gateway runs the image fully rolled out on the primary (status.image):
        a new image reaches it only once the workers proved it; before any, the primary's as rendered."""
        image = self.stable_image or self.images.get(PRIMARY, self.spec.image)
        leaders = multinode.leaders_only if multinode.spans_nodes(self.spec) else _same
        return [*render_gateway(self.owner, self.spec, image, self.variants, self.load_seconds or 120, leaders),
                *render_autoscalers(self.owner, self.spec, self.caps, self.variants)]

    def after_failure(self, plan: Rollback) -> Desired:
        """This pass with a new rollback state: the primary's image and the strategies follow it (the
        templates are rendered again only when an image changed)."""
        images = _images(self.spec, plan, self.stable_image)
        if images == self.images:
            return dataclasses.replace(self, rollback=plan)
        chosen = _strategies(self.owner, self.spec, self.variants, images, self.previous)
        return dataclasses.replace(self, rollback=plan, images=images, chosen=chosen)

    def with_strategies(self, chosen: Chosen) -> Desired:
        """This pass with other rolling updates (Auto's fallback to Replace)."""
        return dataclasses.replace(self, chosen=chosen)


def _same(service: dict[str, Any]) -> dict[str, Any]:
    return service


def compute(owner: Owner, spec: DeepSeekDeploymentSpec, variants: Sequence[ResolvedVariant],
            fits: Mapping[str, GpuFit], caps: Capabilities, previous: Mapping[str, Any],
            stored: Conditions = ()) -> Desired:
    """The pass's Desired from what it read; `variants` is resolve_variants(spec), `fits` their plans."""
    plan = rollback.plan(spec, dict(previous))
    images = _images(spec, plan, str(previous.get("image", "")))
    chosen = _strategies(owner, spec, variants, images, previous)
    return Desired(owner, spec, tuple(variants), fits, caps, previous, plan, images, chosen, tuple(stored))


def _images(spec: DeepSeekDeploymentSpec, plan: Rollback, stable: str) -> dict[str, str]:
    """variant -> the image rendered for it where it is not the spec's: the primary's (rollback.py)."""
    return {PRIMARY: rollback.primary_image(spec, plan, stable)}


def _strategies(owner: Owner, spec: DeepSeekDeploymentSpec, variants: Sequence[ResolvedVariant],
                images: Mapping[str, str], previous: Mapping[str, Any]) -> Chosen:
    """Each variant's rolling update before observing: the requested one, or Auto's remembered choice."""
    remembered = {v.get("name"): v for v in previous.get("variants", [])}
    chosen: Chosen = {}
    for child in render_workload(owner, spec, dict(images), variants=variants):
        if child["kind"] in WORKLOAD_KINDS:
            name = child["metadata"]["labels"][LABEL_VARIANT]
            template = strategy.template_hash(child)
            chosen[name] = (strategy.initial(spec.rollout.strategy, remembered.get(name, {}), template), template)
    return chosen
