"""The cross-field rules of a spec: what the CRD states in CEL (tools/crd_rules.py), in Python for specs
that reached the operator without them (an older CRD). Each `*_errors` function is pure: a spec in,
messages that start with the field path out (tests/crd/test_parity.py checks both say the same).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from deepseek_operator import precision, runtimes
from deepseek_operator.resource.patterns import DIGEST_PINNED, PRIMARY
from deepseek_operator.resource.variants import variant_model_errors
from deepseek_operator.resource.workload import (
    BUILTIN_RUNTIME,
    FP8_QUANTIZATION_MESSAGE,
    GPU_COUNT_FIELD,
    GPU_COUNT_MESSAGE,
    Parallelism,
    RuntimeSpec,
    gpu_count_ok,
    gpus_per_node,
)

if TYPE_CHECKING:
    from deepseek_operator.resource.spec import DeepSeekDeploymentSpec


def _quantized(quantization: str | None) -> bool:
    return quantization not in (None, "none")


def cross_field_errors(spec: DeepSeekDeploymentSpec) -> list[str]:
    """The rules the CRD states in CEL, for specs that reached us without them.

    Each message starts with the field path the CEL rule reports (tests/crd/test_parity.py checks it).
    """
    errors: list[str] = []
    names = [v.name for v in spec.variants]
    if len(set(names)) != len(names):
        errors.append("spec.variants: variant names must be unique")
    errors += [
        f"spec.variants[{i}].name: 'primary' is reserved for the main deployment"
        for i, name in enumerate(names)
        if name == PRIMARY
    ]
    if sum(v.weight for v in spec.variants) > 100:
        errors.append("spec.variants: canary weights must sum to at most 100")
    if spec.rollout.max_surge == 0 and spec.rollout.max_unavailable == 0:
        errors.append("spec.rollout: maxSurge and maxUnavailable must not both be 0")
    quantized = [spec.model.quantization] + [v.model.quantization for v in spec.variants if v.model]
    if spec.resources.gpus < 1 and any(_quantized(q) for q in quantized):
        errors.append("spec.resources.gpus: bitsandbytes quantization needs resources.gpus >= 1")
    # Behind the gateway the ingress has one backend (the gateway splits): any number of canaries.
    nginx = spec.ingress is not None and spec.ingress.provider == "ingress-nginx"
    if nginx and len(spec.variants) > 1 and not spec.gateway_enabled:
        errors.append(
            "spec.variants: ingress-nginx splits traffic between two backends only; "
            "use ingress.provider gateway-api (or spec.gateway.enabled) for more than one canary"
        )
    if spec.ingress and spec.ingress.provider == "gateway-api" and not (
        spec.ingress.gateway and spec.ingress.gateway.parent_refs
    ):
        errors.append("spec.ingress.gateway.parentRefs: required when ingress.provider is gateway-api")
    new_tokens = spec.serving.max_new_tokens
    # Unset on either side, family.lengths() resolves them consistently; only two set values can clash.
    if new_tokens is not None and spec.model.max_model_len is not None and new_tokens >= spec.model.max_model_len:
        errors.append("spec.serving.maxNewTokens: must be less than model.maxModelLen")
    errors += [
        f"spec.variants[{i}].model.maxModelLen: must be greater than serving.maxNewTokens"
        for i, v in enumerate(spec.variants)
        if v.model and v.model.max_model_len is not None and new_tokens is not None
        and v.model.max_model_len <= new_tokens
    ]
    errors += _digest_errors(spec)
    errors += fp8_quantization_errors(spec)
    errors += runtime_errors(spec)
    errors += gpu_count_errors(spec)
    errors += multinode_errors(spec)
    errors += scaling_errors(spec)
    errors += variant_model_errors(spec)
    budgets = [spec.model.load_timeout_seconds] + [
        v.model.load_timeout_seconds for v in spec.variants if v.model and v.model.load_timeout_seconds is not None
    ]
    if spec.rollout.progress_deadline_seconds < max(budgets):
        errors.append(
            f"spec.rollout.progressDeadlineSeconds: must be at least the model load budget "
            f"(model.loadTimeoutSeconds, or a variant's: {max(budgets)}); a shorter deadline fails "
            "every rollout while the model is still loading"
        )
    return errors


def _digest_errors(spec: DeepSeekDeploymentSpec) -> list[str]:
    """rollout.requireDigest: the main image and every variant's pinned by digest."""
    if not spec.rollout.require_digest:
        return []
    errors = []
    if not re.search(DIGEST_PINNED, spec.image):
        errors.append("spec.image: rollout.requireDigest is set: pin the image by digest (...@sha256:<64 hex>)")
    errors += [
        f"spec.variants[{i}].image: rollout.requireDigest is set: pin the image by digest (...@sha256:<64 hex>)"
        for i, v in enumerate(spec.variants)
        if v.image is not None and not re.search(DIGEST_PINNED, v.image)
    ]
    return errors


def runtime_errors(spec: DeepSeekDeploymentSpec) -> list[str]:
    """Engine runtimes: in-flight quantization they can do, parallel sizes that fill the pod's GPUs."""
    errors = []
    gpus = max(1, spec.resources.gpus)
    for path, runtime, quantization in _runtimes(spec):
        if runtime.engine and quantization not in runtimes.ENGINE_QUANTIZATIONS:
            errors.append(f"{path}: {runtimes.QUANTIZATION_MESSAGE.removeprefix('runtime: ')}")
        p = runtime.parallelism
        if p is not None and not _parallel_fits(p, gpus):
            errors.append(f"{path}.parallelism: {PARALLELISM_MESSAGE}")
    return errors


PARALLELISM_MESSAGE = ("tensor x pipeline x data must equal resources.gpus (1 on a CPU pod); with tensor unset, "
                       "pipeline x data must divide it")


def _parallel_fits(p: Parallelism, gpus: int) -> bool:
    if p.tensor is None:
        return gpus % (p.pipeline * p.data) == 0
    return p.tensor * p.pipeline * p.data == gpus


# "A node's GPUs" in the messages below: what workload.gpus_per_node reads.
_NODE_GPUS = "resources.gpusPerNode, else the nvidia.com/gpu.count label of scheduling.nodeSelector"
MULTINODE_RUNTIME_MESSAGE = (f"resources.gpus exceeds a node's GPUs ({_NODE_GPUS}): only runtime vllm or sglang "
                             "spans nodes (a LeaderWorkerSet); set spec.runtime.name, and every variant's runtime, to "
                             "vllm or sglang, or lower resources.gpus")
MULTINODE_GPUS_MESSAGE = (f"above a node's GPUs ({_NODE_GPUS}) it must be a multiple of them (one pod per node, "
                          "each with a node's GPUs)")


def gpu_count_errors(spec: DeepSeekDeploymentSpec) -> list[str]:
    """The worker pods' nvidia.com/gpu.count node selector label, when set, is a positive integer: it sizes a
    node (workload.gpus_per_node). Checked even beside resources.gpusPerNode: such a value matches no node."""
    return [] if gpu_count_ok(spec.scheduling.node_selector) else [f"{GPU_COUNT_FIELD}: {GPU_COUNT_MESSAGE}"]


def multinode_errors(spec: DeepSeekDeploymentSpec) -> list[str]:
    """A pod's GPUs beyond a node (render/multinode.py): an engine runtime everywhere, whole nodes. Nothing
    while the node's GPUs are unreadable (gpu_count_errors says why)."""
    res = spec.resources
    if res.gpus_per_node is None and not gpu_count_ok(spec.scheduling.node_selector):
        return []
    per_node = gpus_per_node(res.gpus_per_node, spec.scheduling.node_selector)
    if per_node is None or res.gpus <= per_node:
        return []
    errors = []
    if res.gpus % per_node:
        errors.append(f"spec.resources.gpus: {MULTINODE_GPUS_MESSAGE}")
    if any(not runtime.engine for _, runtime, _ in _runtimes(spec)):
        errors.append(f"spec.runtime: {MULTINODE_RUNTIME_MESSAGE}")
    return errors


def _runtimes(spec: DeepSeekDeploymentSpec) -> list[tuple[str, RuntimeSpec, str]]:
    """(field path, runtime, quantization) of the primary and each variant, as inherited."""
    primary = spec.runtime or BUILTIN_RUNTIME
    out: list[tuple[str, RuntimeSpec, str]] = [("spec.runtime", primary, spec.model.quantization)]
    for i, v in enumerate(spec.variants):
        quantization = v.model.quantization if v.model and v.model.quantization else spec.model.quantization
        path = f"spec.variants[{i}].runtime" if v.runtime is not None else "spec.runtime"
        out.append((path, v.runtime or primary, quantization))
    return out


def fp8_quantization_errors(spec: DeepSeekDeploymentSpec) -> list[str]:
    """bitsandbytes on a catalogued FP8 model (precision.FP8_MODELS), primary and variants as inherited;
    the CRD's CEL rule checks the primary (tools/crd_rules.py)."""
    if spec.gpu_fit is not None and spec.gpu_fit.mode == "Advisory":
        return []
    errors = []
    if _quantized(spec.model.quantization) and precision.is_fp8_model(spec.model.id):
        errors.append(f"spec.{FP8_QUANTIZATION_MESSAGE}")
    for i, v in enumerate(spec.variants):
        model_id = v.model.id if v.model and v.model.id else spec.model.id
        quantization = v.model.quantization if v.model and v.model.quantization else spec.model.quantization
        if v.model and (v.model.id or v.model.quantization) and _quantized(quantization) \
                and precision.is_fp8_model(model_id):
            errors.append(f"spec.variants[{i}].{FP8_QUANTIZATION_MESSAGE}")
    return errors


SCALE_TO_ZERO_MESSAGE = ("minReplicas: 0 needs spec.gateway.enabled (the gateway holds requests while the variant "
                         "has no pod)")
FALLBACK_GATEWAY_MESSAGE = "fallback: needs spec.gateway.enabled (the gateway sends requests to the hosted API)"
KV_RUNTIME_MESSAGE = ("autoscaling.metric: kvCacheUsage needs runtime vllm or sglang (the builtin worker exports no "
                      "KV-cache usage)")
GATEWAY_NAME_MESSAGE = "name: 'gateway' names the request gateway's objects while spec.gateway.enabled is set"


def scaling_errors(spec: DeepSeekDeploymentSpec) -> list[str]:
    """Gateway, autoscaling and fallback rules (resource/scaling.py; CEL in tools/crd_rules.py)."""
    gateway = spec.gateway_enabled
    errors = []
    scaled = [("spec.autoscaling", spec.autoscaling, spec.runtime or BUILTIN_RUNTIME)] + [
        (f"spec.variants[{i}].autoscaling", v.autoscaling, v.runtime or spec.runtime or BUILTIN_RUNTIME)
        for i, v in enumerate(spec.variants)]
    for path, autoscaling, runtime in scaled:
        if autoscaling is None:
            continue
        if autoscaling.min_replicas == 0 and not gateway:
            errors.append(f"{path}.{SCALE_TO_ZERO_MESSAGE}")
        if autoscaling.metric == "kvCacheUsage" and not runtime.engine:
            errors.append(f"{path.removesuffix('.autoscaling')}.{KV_RUNTIME_MESSAGE}")
    if spec.fallback is not None and not gateway:
        errors.append(f"spec.{FALLBACK_GATEWAY_MESSAGE}")
    if gateway:
        errors += [f"spec.variants[{i}].{GATEWAY_NAME_MESSAGE}" for i, v in enumerate(spec.variants)
                   if v.name == "gateway"]
    return errors


class InvalidSpec(ValueError):
    """A spec the operator cannot act on. str() is one line naming the field."""


def field_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = ["spec"]
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        else:
            parts.append(item)
    return ".".join(parts)


