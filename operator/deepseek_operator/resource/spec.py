"""`DeepSeekDeploymentSpec`, the whole desired state, with `rollout`; and `parse_spec`, the operator's
entry point: a raw spec in, a validated model or one `InvalidSpec` naming every bad field out.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from deepseek_operator.envvars import MAX_ENV, WorkerEnvVar, unique_names
from deepseek_operator.resource.autoscaling import Autoscaling
from deepseek_operator.resource.edge import AuthSpec, IngressSpec, Monitoring, NetworkPolicySpec, RateLimit, Serving
from deepseek_operator.resource.model import ModelSpec
from deepseek_operator.resource.patterns import checked_image
from deepseek_operator.resource.scaling import Fallback, RequestGateway
from deepseek_operator.resource.validation import InvalidSpec, cross_field_errors, field_path
from deepseek_operator.resource.workload import GpuFitPolicy, Resources, RuntimeSpec, Scheduling, Variant
from deepseek_operator.wire import Model

RolloutStrategy = Literal["Auto", "Surge", "Replace"]
OperatorUpgrades = Literal["OnNextChange", "Rolling"]


class Rollout(Model):
    strategy: RolloutStrategy = Field(
        "Auto", description="Surge: new pods before old ones go (needs spare GPUs). Replace: old pods go "
        "first (no spare GPU needed; a 1-replica variant is down meanwhile). Auto: Surge, and Replace when a "
        "surge pod stays unschedulable for surgeTimeoutSeconds.")
    surge_timeout_seconds: int = Field(
        120, ge=0, le=86400, description="Auto: seconds a surge pod may stay unschedulable (no free GPU) "
        "before the rollout replaces in place.")
    max_surge: int = Field(0, ge=0, description="Extra pods at once with strategy Surge (at least 1).")
    max_unavailable: int = Field(1, ge=0, description="Pods down at once with strategy Replace (at least 1).")
    progress_deadline_seconds: int = Field(1800, ge=10,
        description="Seconds a rollout may make no progress; then it has failed (and autoRollback applies).")
    auto_rollback: bool = Field(True, description="Put the last fully available image back on failure.")
    operator_upgrades: OperatorUpgrades = Field(
        "OnNextChange", description="When a new operator release renders different worker pods for an "
        "unchanged spec (docs/rollouts.md). OnNextChange: the running pods are kept (condition "
        "OperatorUpgradePending) until the next spec change rolls them out. Rolling: rolled out now, under "
        "strategy, one variant at a time.")
    require_digest: bool = Field(
        False, description="Refuse images (spec.image and every variant's) not pinned by digest "
        "(...@sha256:<64 hex>)."
    )


class DeepSeekDeploymentSpec(Model):
    """Desired state of a DeepSeek inference service: worker image, model, canaries, ingress."""

    image: str = Field(
        min_length=1, max_length=512, description="Worker image of the primary; what CI changes."
    )
    replicas: int = Field(1, ge=0, le=256, description="Worker pods of the primary (scale subresource).")
    model: ModelSpec = Field(description="The model every variant serves unless it overrides it.")
    resources: Resources = Field(
        default_factory=lambda: Resources(), description="Per-pod GPUs, CPU, memory, shm."
    )
    scheduling: Scheduling = Field(
        default_factory=lambda: Scheduling(), description="Where worker pods may run."
    )
    variants: list[Variant] = Field(default_factory=list, max_length=8, description="Canary variants.")
    ingress: IngressSpec | None = Field(None, description="Expose the service; omitted means no ingress.")
    auth: AuthSpec = Field(
        default_factory=lambda: AuthSpec(), description="API keys and JWT; off when empty."
    )
    rate_limit: RateLimit | None = Field(None, description="Per-key rate limit; omitted means none.")
    serving: Serving = Field(default_factory=lambda: Serving(), description="Worker concurrency and limits.")
    monitoring: Monitoring = Field(
        default_factory=lambda: Monitoring(), description="ServiceMonitor and alerts."
    )
    network_policy: NetworkPolicySpec = Field(
        default_factory=lambda: NetworkPolicySpec(), description="Worker pod network policy (default-deny)."
    )
    env: list[WorkerEnvVar] = Field(
        default_factory=list, max_length=MAX_ENV,
        description="Extra worker environment (core/v1 EnvVar: value or valueFrom), appended after the operator's "
        "settings, e.g. HTTPS_PROXY, NO_PROXY, HF_HUB_DISABLE_XET, PYTORCH_CUDA_ALLOC_CONF, NCCL_*. Names the "
        "operator sets (docs/api.md) are refused.")
    rollout: Rollout = Field(
        default_factory=lambda: Rollout(), description="How image and spec changes roll out."
    )
    runtime: RuntimeSpec | None = Field(
        None, description="What serves the model: builtin (unset), vllm or sglang (docs/runtimes.md).")
    gpu_fit: GpuFitPolicy | None = Field(
        None, description="Whether a GPU-fit plan that does not fit blocks the rollout (unset: Enforce).")
    gateway: RequestGateway | None = Field(
        None, description="The request gateway in front of the variants (docs/autoscaling.md); unset: off.")
    autoscaling: Autoscaling | None = Field(
        None, description="Scale the primary with demand (docs/autoscaling.md); replicas is then unused. Unset: "
        "replicas, fixed.")
    fallback: Fallback | None = Field(
        None, description="Spill-over to a hosted API through the gateway (needs gateway.enabled); unset: none.")

    @property
    def gateway_enabled(self) -> bool:
        """The request gateway runs (spec.gateway.enabled)."""
        return self.gateway is not None and self.gateway.enabled

    @field_validator("image")
    @classmethod
    def _oci_reference(cls, image: str | None) -> str | None:
        return checked_image(image)

    @field_validator("env")
    @classmethod
    def _unique_env(cls, env: list[WorkerEnvVar]) -> list[WorkerEnvVar]:
        unique_names(env)
        return env

    @model_validator(mode="after")
    def _cross_field_rules(self) -> DeepSeekDeploymentSpec:
        errors = cross_field_errors(self)
        if errors:
            raise ValueError("; ".join(errors))
        return self



def parse_spec(raw: dict[str, Any]) -> DeepSeekDeploymentSpec:
    """Validate a raw CR spec. Raises InvalidSpec whose message names every bad field."""
    try:
        return DeepSeekDeploymentSpec.model_validate(raw)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            msg = str(err["msg"]).removeprefix("Value error, ")
            path = field_path(err["loc"])
            messages.append(msg if msg.startswith("spec.") else f"{path}: {msg}")
        raise InvalidSpec("; ".join(messages)) from None


