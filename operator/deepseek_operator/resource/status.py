"""The status subresource's models (`DeepSeekDeploymentStatus` and its parts): they generate the CRD's
status schema (tools/gen_crd.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deepseek_operator.wire import Model


class Condition(Model):
    """The standard metav1.Condition shape."""

    type: str = Field(description="Ready, Available, Progressing or Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason, e.g. RollingOut, RolledBack, InvalidSpec.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int = Field(0, description="The generation this condition describes.")


class MeasuredStatus(Model):
    """What a worker measured after loading (it reports into a ConfigMap; docs/gpu-sizing.md)."""

    matches: Literal["True", "False"] = Field(
        description="True when weights, KV pool and peak memory are within 10% of the plan.")
    pod: str = Field("", description="The worker pod that reported.")
    reported_at: str = Field("", description="When it reported (RFC 3339).")
    device: str = Field("", description="Where the model runs, e.g. cuda:0 or cpu.")
    weights_per_gpu: str = Field("", alias="weightsPerGPU", description="Weights measured, per GPU.")
    kv_pool_tokens: int = Field(0, description="Tokens the worker's KV pool holds.")
    kv_pool_per_gpu: str = Field("", alias="kvPoolPerGPU", description="KV pool bytes, per GPU.")
    peak_memory_per_gpu: str = Field(
        "", alias="peakMemoryPerGPU", description="The allocator's peak after warm-up, per GPU (unset on CPU).")
    load_seconds: str = Field("", description="Seconds from start to a loaded, warmed-up model, e.g. 41.3.")
    message: str = Field("", description="Each figure against the plan, with the difference in percent.")


class GpuFitStatus(Model):
    """The GPU-fit plan of one variant (docs/gpu-sizing.md); figures per GPU, in GiB."""

    fits: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown (the message says why).")
    required_per_gpu: str = Field("", alias="requiredPerGPU", description="Weights + KV cache + margin, e.g. 156.2Gi.")
    available_per_gpu: str = Field("", alias="availablePerGPU", description="Memory of one GPU, e.g. 79.6Gi.")
    weights_per_gpu: str = Field("", alias="weightsPerGPU", description="Model weights on one GPU.")
    kv_cache_per_gpu: str = Field(
        "", alias="kvCachePerGPU", description="KV cache for maxModelLen x maxBatchSize tokens on one GPU.")
    margin_per_gpu: str = Field(
        "", alias="marginPerGPU", description="Runtime, attention workspace, activations and fragmentation.")
    gpus: int = Field(0, description="GPUs per pod the weights are split over.")
    kv_slots: int = Field(0, description="Sequences the KV pool holds at once (each reserves maxModelLen "
                          "tokens): serving.maxBatchSize, or fewer when the GPU's memory is short.")
    kv_pool_tokens: int = Field(0, description="Tokens the KV pool holds: kvSlots x maxModelLen.")
    model: str = Field("", description="Catalogue entry planned with, or spec.model.architecture.")
    memory_source: str = Field("", description="Where availablePerGPU comes from.")
    max_model_len: int = Field(0, description="model.maxModelLen in effect (the spec's, else the model family's "
                               "default): what the KV pool is priced with and the worker is given.")
    max_new_tokens: int = Field(0, description="serving.maxNewTokens in effect (the spec's, else the family's "
                                "default): the default and cap of a request's max_tokens.")
    checkpoint_size: str = Field("", description="The model's files, e.g. 641.3Gi: what a download fetches.")
    load_estimate_seconds: int = Field(
        0, description="Estimated seconds from a worker's start to serving: download (a hub source without "
        "model.cache) and load, at the rates docs/gpu-sizing.md assumes.")
    warnings: list[str] = Field(
        default_factory=list, max_length=8, description="What to change before pods start: a large download "
        "into every pod (set model.cache), a model.loadTimeoutSeconds below the load estimate.")
    summary: str = Field("", description="fits, required/available GiB per GPU (the FIT column).")
    message: str = Field("", description="The figures and, when it does not fit, what would.")
    measured: MeasuredStatus | None = Field(
        None, description="What a worker of the variant measured at start-up, compared with the plan.")


class DownloadStatus(Model):
    """The model cache of one variant: its download Job's progress (docs/model-cache.md)."""

    phase: Literal["Pending", "Downloading", "Stalled", "Failed", "Complete"] = Field(
        description="Pending (the Job's pod has not reported yet), Downloading, Stalled, Failed or Complete.")
    claim_name: str = Field("", description="The cache PersistentVolumeClaim.")
    job: str = Field("", description="The download Job.")
    model: str = Field("", description="Model id and revision downloaded, e.g. deepseek-ai/DeepSeek-V2-Lite@main.")
    commit: str = Field("", description="Commit the revision resolved to.")
    bytes_done: int = Field(0, description="Bytes on the volume so far.")
    bytes_total: int = Field(0, description="Bytes of the model's files; 0 while unknown.")
    percent: int = Field(0, ge=0, le=100, description="bytesDone of bytesTotal, 100 only when Complete.")
    bytes_per_second: int = Field(0, description="Download rate over the last half minute.")
    eta_seconds: int | None = Field(None, description="Seconds left at that rate; unset while unknown.")
    progress_at: str = Field("", description="When the last byte arrived (RFC 3339).")
    summary: str = Field("", description="Phase and percent, e.g. 42% (the DOWNLOAD column).")
    message: str = Field("", description="Human-readable detail: sizes, rate, ETA, or why it failed.")


class AutoscalingStatus(Model):
    """A variant's autoscaler (docs/autoscaling.md): what it is, its bounds and where it stands."""

    autoscaler: str = Field("", description="ScaledObject (KEDA) or HorizontalPodAutoscaler; empty while none "
                            "can work (condition AutoscalingReady says why).")
    metric: str = Field("", description="queueDepth, running or kvCacheUsage.")
    target: int = Field(0, description="The metric's value per pod the autoscaler holds.")
    min_replicas: int = Field(0, description="Fewest pods (0: scales to zero when idle).")
    max_replicas: int = Field(0, description="Most pods.")
    desired_replicas: int = Field(0, description="Pods the autoscaler asks for now (the workload's replicas).")
    current_replicas: int = Field(0, description="Pods the variant has now.")


class ColdStartStatus(Model):
    """A variant's cold starts as the request gateway measured them (docs/autoscaling.md, "Status")."""

    last_seconds: str = Field("", description="The last cold start: from the first request held while the "
                              "variant had no ready pod to that request's first byte, e.g. 52.4.")
    p50_seconds: str = Field("", description="The median of the gateway's last cold starts of the variant "
                             "(with several gateway replicas, the count-weighted mean of their medians; the "
                             "held queue's Retry-After starts from the longest).")
    count: int = Field(0, description="Cold starts that median is of: each gateway replica's last 20 at most, "
                       "summed over the replicas reporting.")
    observed_at: str = Field("", description="When the last one got its first byte (RFC 3339).")
    load_seconds: str = Field("", description="The model's load time its worker measured (gpuFit.measured); "
                              "the rest of lastSeconds is scheduling, the pod's start and the gateway.")
    message: str = Field("", description="The figures and their breakdown.")


class GatewayStatus(Model):
    """The request gateway's report (spec.gateway; docs/gateway.md)."""

    fallback_share: str = Field("", description="Share of routed requests the hosted API served in the "
                                "gateway's sliding window, e.g. 0.12, over the replicas reporting: their "
                                "requests sent out over their requests routed (spec.fallback.maxShare caps "
                                "each replica's).")
    replicas_reporting: int = Field(0, description="Gateway replicas that reported in the last 10 minutes, "
                                    "which the share and the cold starts are of (a replica with no request "
                                    "in its window stops reporting: 0 once the gateway was idle that long).")
    pod: str = Field("", description="The gateway pod that reported last.")
    reported_at: str = Field("", description="When it reported (RFC 3339).")


class VariantStatus(Model):
    name: str = Field(description="Variant name; 'primary' for the main deployment.")
    weight: int = Field(0, description="Effective traffic percent now (0 while not ready).")
    image: str = Field("", description="Image the variant's pods run.")
    replicas: int = Field(0, description="Pods of the variant.")
    ready_replicas: int = Field(0, description="Ready pods of the variant.")
    strategy: str = Field("", description="Rolling update the variant's last rollout used: Surge or Replace.")
    strategy_template: str = Field("", description="Hash of the pod template that strategy was chosen for.")
    spec_hash: str = Field("", description="Hash of the spec (without replica counts) and image the variant's "
                           "pod template was last applied for: tells an operator upgrade from a spec change "
                           "(rollout.operatorUpgrades).")
    gpu_fit: GpuFitStatus | None = Field(None, description="The variant's GPU-fit plan.")
    download: DownloadStatus | None = Field(None, description="The variant's model cache download.")
    autoscaling: AutoscalingStatus | None = Field(None, description="The variant's autoscaler, when it has one.")
    cold_start: ColdStartStatus | None = Field(
        None, description="The variant's cold starts, once the request gateway measured one.")


class DeepSeekDeploymentStatus(Model):
    """Observed state, written by the operator only."""

    observed_generation: int = Field(0, description="The resource generation this status describes.")
    replicas: int = Field(0, description="Primary pods (scale subresource).")
    ready_replicas: int = Field(0, description="Ready primary pods.")
    ready: str = Field("", description="Ready/desired primary pods, e.g. 2/2 (the READY column).")
    updated_replicas: int = Field(0, description="Primary pods on the current template.")
    selector: str = Field("", description="Label selector of the primary pods (scale subresource).")
    image: str = Field("", description="The image fully rolled out on the primary (the rollback target).")
    failed_image: str = Field("", description="Image a rollout failed with; not retried until spec changes.")
    failed_reason: str = Field("", description="Why the rollout of failedImage failed: reason and the pod's message.")
    url: str = Field("", description="Public URL when an ingress is configured.")
    gpu_fit: GpuFitStatus | None = Field(None, description="The primary's GPU-fit plan (docs/gpu-sizing.md).")
    download: DownloadStatus | None = Field(
        None, description="The primary's model cache download (docs/model-cache.md).")
    gateway: GatewayStatus | None = Field(
        None, description="The request gateway's report, once it made one (the share served outside).")
    variants: list[VariantStatus] = Field(
        default_factory=list, max_length=16, description="Per variant state and weight."
    )
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, description="Ready, Available, Progressing, Degraded."
    )
