"""Scaling with demand (docs/autoscaling.md): the request `gateway` in front of the variants and the
hosted spill-over `fallback` (each variant's `autoscaling` is in resource/autoscaling.py).

The cross-field rules (minReplicas 0 and fallback need the gateway, kvCacheUsage needs an engine
runtime, the name `gateway` is taken by the gateway's children) are in resource/validation.py
(`scaling_errors`) and, as CEL, in tools/crd_rules.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from deepseek_operator.quantity import QUANTITY
from deepseek_operator.resource.model import SecretKeyRef
from deepseek_operator.resource.patterns import checked_image
from deepseek_operator.resource.workload import Scheduling
from deepseek_operator.wire import Model

FallbackReason = Literal["ColdStart", "Overloaded", "Unavailable"]
DEEPSEEK_API = "https://api.deepseek.com"
# An http(s) server root: no query, fragment or whitespace (the gateway refuses a path ending in /v1).
BASE_URL = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
BASE_URL_V1_MESSAGE = "baseURL: give the server's root, without /v1"


class GatewayResources(Model):
    """The gateway pod's CPU and memory (it loads no model: no GPU)."""

    cpu: str = Field("500m", pattern=QUANTITY, description="CPU request (no CPU limit: throttling adds latency).")
    memory: str = Field("512Mi", pattern=QUANTITY, description="Memory request and limit.")


class RequestGateway(Model):
    """The request gateway (the worker image in gateway mode): the Service and ingress point at it, it
    forwards to the variants' pods by their ready-gated weights, least-loaded first, holds requests for a
    variant at zero, and spills over to spec.fallback (docs/autoscaling.md)."""

    enabled: bool = Field(
        False, description="Run the gateway (off by default: the Service and ingress then reach the worker pods "
        "directly, as before). Needed for autoscaling.minReplicas 0 and for spec.fallback.")
    replicas: int = Field(2, ge=1, le=32, description="Gateway pods (a PodDisruptionBudget keeps one up).")
    image: str | None = Field(
        None, min_length=1, max_length=512, description="The gateway's image; unset: spec.image (the worker "
        "image runs the gateway mode).")
    resources: GatewayResources = Field(
        default_factory=lambda: GatewayResources(), description="The gateway pod's CPU and memory.")
    max_held_requests: int = Field(
        64, ge=0, le=100000, description="Requests held per variant while it has no ready pod (scale from zero); "
        "beyond it 429 with Retry-After. 0: never hold.")
    hold_timeout_seconds: int = Field(
        600, ge=1, le=86400, description="How long a held request waits for a ready pod before 504.")
    scheduling: Scheduling | None = Field(
        None, description="Where gateway pods may run (nodeSelector, tolerations, affinity, priority and runtime "
        "class); unset: anywhere the scheduler puts a pod without tolerations (not on tainted GPU nodes).")

    @field_validator("image")
    @classmethod
    def _oci_reference(cls, image: str | None) -> str | None:
        return checked_image(image)


def _all_reasons() -> list[FallbackReason]:
    return ["ColdStart", "Overloaded", "Unavailable"]


class Fallback(Model):
    """Spill-over to a hosted OpenAI/DeepSeek-compatible API through the gateway: only for the callers in
    allowExternal (data residency), only for the reasons in `when`, and at most maxShare of the requests.
    Answers from it carry `x-served-by: fallback`."""

    base_url: str = Field(
        DEEPSEEK_API, max_length=512, pattern=BASE_URL, alias="baseURL",
        description="The hosted API's server root (without /v1).")
    model: str = Field("deepseek-chat", min_length=1, max_length=256,
                       description="The hosted model a spilled request's `model` is replaced with.")
    api_key_secret_ref: SecretKeyRef = Field(description="Secret key holding the hosted API's key.")
    when: list[FallbackReason] = Field(
        default_factory=_all_reasons, min_length=1, max_length=3,
        description="ColdStart (the variant is at zero and loading), Overloaded (every ready pod at its "
        "queue threshold, or the hold queue full), Unavailable (every ready pod failed before answering).")
    max_share: float = Field(0.2, ge=0, le=1, description="Most of the routed requests (0-1, over a minute) "
                             "sent to the hosted API.")
    allow_external: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=64,
        description="Callers whose requests may leave the cluster: API key ids (the keys file's `id`), "
        "client:<sub> for JWT clients, * for every caller. Empty: nobody (the fallback is never used).")

    @field_validator("base_url")
    @classmethod
    def _root(cls, url: str) -> str:
        if url.rstrip("/").endswith("/v1"):
            raise ValueError(BASE_URL_V1_MESSAGE.removeprefix("baseURL: "))
        return url

    @field_validator("when")
    @classmethod
    def _unique(cls, when: list[str]) -> list[str]:
        if len(set(when)) != len(when):
            raise ValueError("reasons must be unique")
        return when
