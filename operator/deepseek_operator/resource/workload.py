"""The worker pods' shape: `resources`, the engine `runtime` and its parallelism, `gpuFit`, `scheduling`
(tolerations, affinity, node selector) and the canary `variants` that may override them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from deepseek_operator import runtimes
from deepseek_operator.affinity import LABEL_KEY_MESSAGE, Affinity, label_keys
from deepseek_operator.envvars import MAX_ENV, WorkerEnvVar, unique_names
from deepseek_operator.quantity import QUANTITY
from deepseek_operator.resource.autoscaling import Autoscaling
from deepseek_operator.resource.model import ModelOverride, RuntimeName
from deepseek_operator.resource.patterns import EXTENDED_RESOURCE, MAX_SELECTOR_LABELS, checked_image
from deepseek_operator.wire import DNS_LABEL, DNS_SUBDOMAIN, LABEL_NAME, LABEL_VALUE, Model


class Resources(Model):
    gpus: int = Field(1, ge=0, le=16, description="GPUs per worker pod (limits of gpuResourceName).")
    gpu_resource_name: str = Field("nvidia.com/gpu", min_length=1, max_length=317, pattern=EXTENDED_RESOURCE,
        description="Extended resource name of a GPU (nvidia.com/gpu, amd.com/gpu, ...): domain/name, ASCII.")
    cpu: str = Field("4", pattern=QUANTITY, description="CPU request and limit per pod.")
    memory: str = Field("32Gi", pattern=QUANTITY, description="Memory request and limit per pod.")
    shm_size: str = Field("8Gi", pattern=QUANTITY, description="Size of the memory-backed /dev/shm.")
    gpu_memory: str | None = Field(
        None, pattern=QUANTITY,
        description="Memory of one GPU, e.g. 80Gi, for the GPU-fit plan; unset: from the nvidia.com/gpu.memory "
        "or nvidia.com/gpu.product label in scheduling.nodeSelector (docs/gpu-sizing.md).")
    gpus_per_node: int | None = Field(
        None, ge=1, le=16,
        description="GPUs one node offers a pod. When resources.gpus exceeds it, each worker becomes a "
        "LeaderWorkerSet group of ceil(gpus / gpusPerNode) pods, one per node, each with gpusPerNode GPUs "
        "(spec.runtime vllm or sglang only; docs/runtimes.md). Unset: the nvidia.com/gpu.count label of "
        "scheduling.nodeSelector when there is one, else one node holds the pod.")


class Parallelism(Model):
    """How an engine runtime splits the model over the pod's GPUs (docs/runtimes.md)."""

    tensor: int | None = Field(
        None, ge=1, le=64, description="Tensor-parallel size; unset: resources.gpus / (pipeline x data), 1 on a "
        "CPU pod. tensor x pipeline x data must equal resources.gpus.")
    pipeline: int = Field(1, ge=1, le=16, description="Pipeline-parallel stages.")
    data: int = Field(1, ge=1, le=64, description="Data-parallel ranks (engine replicas inside the pod).")
    expert: bool = Field(False, description="Expert parallelism on the MoE layers (DeepSeek-V3/R1): experts are "
                         "spread over the tensor x data GPUs instead of sliced.")


class RuntimeSpec(Model):
    """What serves the model: our worker (builtin), or vLLM's or SGLang's own server behind our worker in
    proxy mode, which keeps auth, limits, metrics and drain (docs/runtimes.md)."""

    name: RuntimeName = Field(
        "builtin", description="builtin (our worker: spec.image loads the model), vllm or sglang (the engine's "
        "server in a second container, on 127.0.0.1, with spec.image in front as the API edge).")
    image: str | None = Field(
        None, min_length=1, max_length=512,
        description="The engine's image; unset: the pinned upstream release (vllm/vllm-openai:v0.32.0, "
        "lmsysorg/sglang:v0.5.16). Only for vllm and sglang.")
    # Bounds keep the CEL rule on args (a regex per entry, per variant) within the apiserver's cost budget.
    args: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        default_factory=list, max_length=32,
        description="Extra engine arguments, appended after the operator's (e.g. --kv-cache-dtype, fp8). Flags the "
        "operator sets from spec fields (model, served name, host, port, parallel sizes, lengths, memory, "
        "quantization, multi-node) are refused. Only for vllm and sglang.")
    parallelism: Parallelism | None = Field(
        None, description="Tensor, pipeline, data and expert parallelism; unset: tensor parallel over the pod's "
        "GPUs. Only for vllm and sglang.")

    @field_validator("image")
    @classmethod
    def _oci_reference(cls, image: str | None) -> str | None:
        return checked_image(image)

    @field_validator("args")
    @classmethod
    def _not_owned(cls, args: list[str]) -> list[str]:
        if any(runtimes.owned(a) for a in args):
            raise ValueError(runtimes.OWNED_MESSAGE.removeprefix("args: "))
        return args

    @model_validator(mode="after")
    def _engine_only(self) -> RuntimeSpec:
        if self.name == "builtin" and (self.image is not None or self.args or self.parallelism is not None):
            raise ValueError(BUILTIN_RUNTIME_MESSAGE)
        return self

    @property
    def engine(self) -> bool:
        """An engine runtime (vllm, sglang): two containers, ours in proxy mode."""
        return self.name != "builtin"

    @property
    def engine_image(self) -> str:
        """The engine container's image: runtime.image or the pinned default."""
        return self.image or runtimes.DEFAULT_IMAGES[self.name]


BUILTIN_RUNTIME_MESSAGE = "image, args and parallelism are for name vllm or sglang (builtin runs spec.image)"
BUILTIN_RUNTIME = RuntimeSpec()


class GpuFitPolicy(Model):
    """What a GPU-fit plan that does not fit does (docs/gpu-sizing.md)."""

    mode: Literal["Enforce", "Advisory"] = Field(
        "Enforce", description="Enforce: a plan that does not fit (InsufficientGPUMemory, UnsupportedCheckpoint) "
        "stops the rollout before any pod; Advisory: the same Warning event and status.gpuFit, but the rollout "
        "goes ahead (the plan's catalogue or figures are wrong for your checkpoint or GPUs), and bitsandbytes "
        "on a catalogued FP8 model id is allowed (a bf16 copy under that name).")


FP8_QUANTIZATION_MESSAGE = (
    "model.quantization: DeepSeek-V3/R1 checkpoints are stored in FP8 (e4m3, 128x128 block scales): bitsandbytes "
    "(int8, nf4, fp4) cannot load them; set model.quantization none and spec.runtime.name vllm or sglang "
    "(or spec.gpuFit.mode Advisory for a bf16 copy under that name)")


TolerationOperator = Literal["", "Exists", "Equal"]
TaintEffect = Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"]
TOLERATION_VALUE_MESSAGE = "value must be empty when operator is Exists"
TOLERATION_KEY_MESSAGE = "operator must be Exists when key is empty"
TOLERATION_SECONDS_MESSAGE = "tolerationSeconds needs effect NoExecute"


class Toleration(Model):
    """A core/v1 Toleration, with the apiserver's own checks."""

    key: str = Field("", max_length=317, pattern=f"^(?:(?:{DNS_SUBDOMAIN}/)?{LABEL_NAME})?$",
                     description="Taint key the toleration applies to; empty with operator Exists: every taint.")
    operator: TolerationOperator = Field("", description="Exists or Equal (empty: Equal).")
    value: str = Field("", max_length=63, pattern=LABEL_VALUE, description="Taint value for operator Equal.")
    effect: TaintEffect = Field(
        "", description="NoSchedule, PreferNoSchedule or NoExecute; empty: every effect.")
    toleration_seconds: int | None = Field(
        None, description="With effect NoExecute: seconds the pod stays bound after the taint appears.")

    @model_validator(mode="after")
    def _apiserver_rules(self) -> Toleration:
        errors = []
        if self.operator == "Exists" and self.value:
            errors.append(TOLERATION_VALUE_MESSAGE)
        if not self.key and self.operator != "Exists":
            errors.append(TOLERATION_KEY_MESSAGE)
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            errors.append(TOLERATION_SECONDS_MESSAGE)
        if errors:
            raise ValueError("; ".join(errors))
        return self


class Scheduling(Model):
    node_selector: dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]] = Field(
        default_factory=dict, max_length=MAX_SELECTOR_LABELS,
        description="Pod nodeSelector: label keys (prefix/name) and values, ASCII, at most 64.")
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=64, description="Pod tolerations (core/v1 Toleration)."
    )
    affinity: Affinity | None = Field(
        None, description="Pod affinity (core/v1 Affinity), checked as the apiserver checks a pod's.")
    priority_class_name: str = Field("", description="Pod priorityClassName.")
    runtime_class_name: str = Field("", description="Pod runtimeClassName (e.g. nvidia).")

    @field_validator("node_selector")
    @classmethod
    def _label_keys(cls, selector: dict[str, str]) -> dict[str, str]:
        return label_keys(selector)


NODE_SELECTOR_KEY_MESSAGE = LABEL_KEY_MESSAGE

# The GPUs of a node as NVIDIA GPU feature discovery labels it. In scheduling.nodeSelector it pins the
# worker pods to nodes of that many GPUs, so it sizes a pod's node when resources.gpusPerNode is unset.
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
# At most 4 digits: CEL's int() of the label (tools/crd_rules.py) stays far within int64.
GPU_COUNT = r"^[1-9][0-9]{0,3}$"
GPU_COUNT_FIELD = f'spec.scheduling.nodeSelector["{GPU_COUNT_LABEL}"]'
GPU_COUNT_MESSAGE = ('must be a positive integer (1 to 9999), the GPUs of each selected node as GPU feature '
                     'discovery labels them, e.g. "8"; it sizes a node when resources.gpusPerNode is unset')


def gpu_count_ok(node_selector: Mapping[str, str]) -> bool:
    """The node selector has no nvidia.com/gpu.count label, or one that is a positive integer (GPU_COUNT)."""
    count = node_selector.get(GPU_COUNT_LABEL)
    return count is None or re.fullmatch(GPU_COUNT, count) is not None


def gpus_per_node(per_node: int | None, node_selector: Mapping[str, str]) -> int | None:
    """GPUs one node offers a pod: `per_node` (resources.gpusPerNode) when set, else the node selector's
    nvidia.com/gpu.count label, else None (unknown: the caller's default; one node holds the pod).

    The one place every sizing reads it (render/multinode.py, validation.py, gpufit.py). ValueError naming
    GPU_COUNT_FIELD when the label is not a positive integer: parse_spec refuses such a spec first
    (validation.gpu_count_errors, and the CRD's CEL rule at `kubectl apply`)."""
    if per_node is not None:
        return per_node
    if not gpu_count_ok(node_selector):
        raise ValueError(f"{GPU_COUNT_FIELD}: {GPU_COUNT_MESSAGE}")
    count = node_selector.get(GPU_COUNT_LABEL)
    return int(count) if count is not None else None


class Variant(Model):
    name: str = Field(pattern=DNS_LABEL, max_length=20, description="Variant name, unique, not 'primary'.")
    weight: int = Field(0, ge=0, le=100, description="Percent of traffic while this variant is ready.")
    image: str | None = Field(
        None, min_length=1, max_length=512, description="Worker image; inherits spec.image."
    )
    replicas: int = Field(1, ge=0, le=64, description="Worker pods of this variant.")
    model: ModelOverride | None = Field(None, description="Changes to spec.model for this variant.")
    env: list[WorkerEnvVar] | None = Field(
        None, max_length=MAX_ENV,
        description="Worker env of this variant: an entry replaces spec.env's of the same name, others are added.")
    runtime: RuntimeSpec | None = Field(
        None, description="This variant's runtime, replacing spec.runtime whole (e.g. a vLLM canary of a builtin "
        "primary); unset: spec.runtime.")
    autoscaling: Autoscaling | None = Field(
        None, description="Scale this variant with demand (docs/autoscaling.md); replicas is then unused. Unset: "
        "replicas, fixed.")

    @field_validator("image")
    @classmethod
    def _oci_reference(cls, image: str | None) -> str | None:
        return checked_image(image)

    @field_validator("env")
    @classmethod
    def _unique_env(cls, env: list[WorkerEnvVar] | None) -> list[WorkerEnvVar] | None:
        unique_names(env)
        return env


