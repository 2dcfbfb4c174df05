"""A variant's `autoscaling` (docs/autoscaling.md): its bounds, metric, target and scale-down delay.

The cross-field rules (minReplicas 0 needs the gateway, kvCacheUsage needs an engine runtime) are in
resource/validation.py (`scaling_errors`) and, as CEL, in tools/crd_rules.py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from deepseek_operator.wire import Model

AutoscalingMetric = Literal["queueDepth", "running", "kvCacheUsage"]
MIN_REPLICAS_MESSAGE = "minReplicas: must not exceed maxReplicas"
KV_TARGET_MESSAGE = "target: kvCacheUsage is a percent of the KV cache in use: at most 100"


class Autoscaling(Model):
    """A variant's autoscaler: a KEDA ScaledObject where KEDA is installed, else an HPA (docs/autoscaling.md).
    While it is set the operator stops writing the variant's replicas: the autoscaler owns them."""

    min_replicas: int = Field(
        1, ge=0, le=256, description="Fewest pods; 0 (scale to zero when idle, the gateway holds the first request) "
        "needs spec.gateway.enabled and KEDA.")
    max_replicas: int = Field(ge=1, le=256, description="Most pods.")
    metric: AutoscalingMetric = Field(
        "queueDepth", description="What scales: queueDepth (requests waiting per pod), running (requests in "
        "flight per pod) or kvCacheUsage (percent of the KV cache in use; spec.runtime vllm or sglang).")
    target: int = Field(
        4, ge=1, le=100000, description="The metric's value per pod to hold: requests for queueDepth and running, "
        "a percent (1-100) for kvCacheUsage.")
    scale_down_delay_seconds: int = Field(
        300, ge=0, le=86400, description="Seconds the load must stay low before pods are removed (and, with "
        "minReplicas 0, before the last one goes).")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        errors = []
        if self.min_replicas > self.max_replicas:
            errors.append(MIN_REPLICAS_MESSAGE)
        if self.metric == "kvCacheUsage" and self.target > 100:
            errors.append(KV_TARGET_MESSAGE)
        if errors:
            raise ValueError("; ".join(errors))
        return self
