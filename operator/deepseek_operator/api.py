"""Pydantic models of the DeepSeekDeployment resource: the one source of validation in code.

They mirror crds/deepseek.ai_deepseekdeployments.yaml field for field: tools/gen_crd.py generates
the CRD from them and tests/crd/test_parity.py proves it. The CRD refuses what a schema and CEL can
express at `kubectl apply`; `parse_spec()` is the second line of defence for anything that reaches
the operator anyway (e.g. an old CRD version
installed) and turns it into one message that names the field.
"""

from __future__ import annotations

import ipaddress
import re
import warnings
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deepseek_operator import precision, runtimes
from deepseek_operator.affinity import LABEL_KEY_MESSAGE, Affinity, LabelSelector, label_keys
from deepseek_operator.envvars import MAX_ENV, DownloadEnvVar, WorkerEnvVar, merged, unique_names
from deepseek_operator.wire import (  # noqa: F401  (re-exported: api is where callers look)
    DNS_LABEL,
    DNS_SUBDOMAIN,
    LABEL_NAME,
    LABEL_VALUE,
    QUALIFIED_NAME,
    QUALIFIED_NAME_MAX,
    Model,
)

GROUP = "deepseek.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "DeepSeekDeployment"
PLURAL = "deepseekdeployments"
PRIMARY = "primary"

EXTENDED_RESOURCE = f"^{DNS_SUBDOMAIN}/{LABEL_NAME}$"  # domain-prefixed, e.g. nvidia.com/gpu
INGRESS_HOST = f"^(?:[*][.])?{DNS_SUBDOMAIN}$"
# An HTTP path both an Ingress (Prefix) and an HTTPRoute (PathPrefix) hold: RFC 3986 path characters
# or %-escapes; INGRESS_PATH_BAD lists the sequences both refuse (dot segments, '//', an escaped '/').
INGRESS_PATH = "^/(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})*$"
INGRESS_PATH_BAD = "//|/[.][.]?/|%2[fF]|/[.][.]?$"
MAX_SELECTOR_LABELS = 64
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi)?$"
DURATION = r"^[0-9]+(ms|s|m|h)$"
# A parameter count: digits with an optional K, M, B (billion) or T suffix, e.g. 671B, 7.6B, 8430400.
PARAMETER_COUNT = r"^[0-9]+(\.[0-9]+)?[KMBT]?$"
PROMETHEUSLABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
# An OCI image reference as the distribution reference grammar has it (what `docker pull` accepts):
# [registry[:port]/]repository[:tag][@algorithm:hex]. The registry is a host name or a bracketed IPv6
# address ([::1]:5000), the port 1-65535; repository path components are lowercase, separated by '.',
# '_', '__' or dashes; tags are at most 128 characters; the name (registry and repository) at most 255
# (IMAGE_NAME_FITS). No backslashes ('[.]', '[[]', not '\.'): the same text is a CEL string literal in
# tools/crd_rules.py, evaluated by RE2 on the apiserver and by google-re2 in the sandbox;
# `_image_reference` below uses fullmatch (Python's `$` would also match before a trailing newline,
# RE2's does not).
_DOMAIN_PART = "[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_IPV6_HOST = "[[][a-fA-F0-9:]+[]]"
_PORT = "(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_PATH_PART = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REF = (
    f"^(?:(?:{_DOMAIN_PART}(?:[.]{_DOMAIN_PART})*|{_IPV6_HOST})(?::{_PORT})?/)?{_PATH_PART}(?:/{_PATH_PART})*"
    "(?::[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?"
    "(?:@[a-zA-Z][a-zA-Z0-9]*(?:[-_+.][a-zA-Z][a-zA-Z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
# The OCI name limit, for a string IMAGE_REF accepts: the name ends at the '@' of a digest or at the
# ':' of a tag (the only ':' with no '/' after it), so it is at most 255 characters when the whole
# reference is, or when one of those comes within its first 256 characters. A regex, not a
# substring: RE2 has no lookahead, CEL no capture groups.
IMAGE_NAME_MAX = 255
IMAGE_NAME_FITS = f"^[^@]{{0,{IMAGE_NAME_MAX}}}(?:@|:[^/@]*(?:@|$))"
IMAGE_REF_HELP = ("[registry[:port]/]repository[:tag][@sha256:<digest>], repository in lowercase, registry and "
                  f"repository at most {IMAGE_NAME_MAX} characters, port 1-65535")
# IP addresses and CIDRs (ipBlock, FORWARDED_ALLOW_IPS); ip_networks() checks what the regexes let through.
_IPV4 = "(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])[.]){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV6 = "[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}"
IP_OR_CIDR = f"^(?:{_IPV4}(?:/(?:3[0-2]|[12]?[0-9]))?|{_IPV6}(?:/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$"
CIDR = f"^(?:{_IPV4}/(?:3[0-2]|[12]?[0-9])|{_IPV6}/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))$"
# What rollout.requireDigest asks of every image: pinned by a sha256 digest.
DIGEST_PINNED = "@sha256:[0-9a-f]{64}$"
with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # Python reads '[[]' as a possible nested set; RE2 does not
    _IMAGE_RE = re.compile(IMAGE_REF)


def image_reference_ok(image: str) -> bool:
    """The CEL rule on an image, in Python: the grammar and the name limit."""
    return bool(_IMAGE_RE.fullmatch(image)) and (
        len(image) <= IMAGE_NAME_MAX or re.match(IMAGE_NAME_FITS, image) is not None)


def ip_networks(values: list[str] | None, *, strict: bool) -> list[str] | None:
    """Refuse what the patterns let through but is no address (`1::2::3`); strict: no host bits set."""
    for value in values or []:
        try:
            ipaddress.ip_network(value, strict=strict)
        except ValueError as exc:
            raise ValueError(f"{value}: {exc}") from None
    return values


def _image_reference(image: str | None) -> str | None:
    """Refuse what no registry could serve: the CRD's CEL rule says the same (tools/crd_rules.py)."""
    if image is not None and not image_reference_ok(image):
        raise ValueError(f"not a valid OCI image reference ({IMAGE_REF_HELP})")
    return image


Dtype = Literal["auto", "bfloat16", "float16", "float32"]
Quantization = Literal["none", "int8", "nf4", "fp4"]
Attention = Literal["auto", "sdpa", "flash_attention_2", "eager"]
IngressProvider = Literal["ingress-nginx", "gateway-api"]
RuntimeName = runtimes.RuntimeName
MODEL_ID_MAX = 1024


class SecretKeyRef(Model):
    name: str = Field(min_length=1, description="Name of a Secret in the resource's namespace.")
    key: str = Field("token", min_length=1, description="Key inside the Secret.")


class SecretRef(Model):
    name: str = Field(min_length=1, description="Name of a Secret in the resource's namespace.")


class PvcSource(Model):
    claim_name: str = Field(min_length=1, description="PersistentVolumeClaim holding the model files.")
    sub_path: str = Field(
        "", description="Directory inside the claim, mounted at /models (unset: the whole claim). The worker "
        "loads it when it holds config.json, else the folder named by a relative model.id under it (org/name, "
        "as `hf download --local-dir` leaves it), else that id in the Hugging Face cache layout "
        "(models--org--name/snapshots, at the revision). An absolute model.id is a path inside the pod.")


# A hub endpoint: http(s) URL without spaces, e.g. https://hf-mirror.com.
ENDPOINT_URL = r"^https?://[^\s/]+(/[^\s]*)?$"


class HuggingFaceSource(Model):
    token_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding an HF token (HF_TOKEN), needed for gated models."
    )
    endpoint: str | None = Field(
        None, pattern=ENDPOINT_URL, max_length=2048,
        description="Hub URL of a mirror (HF_ENDPOINT), e.g. https://hf-mirror.com; unset: huggingface.co.")


class ModelScopeSource(Model):
    token_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding a ModelScope access token, for private models.")
    endpoint: str | None = Field(
        None, pattern=ENDPOINT_URL, max_length=2048,
        description="ModelScope URL (MODELSCOPE_DOMAIN); unset: https://www.modelscope.cn.")


class ModelSource(Model):
    """Where the weights come from: exactly one of pvc, huggingFace or modelScope."""

    pvc: PvcSource | None = Field(None, description="Weights pre-loaded on a PersistentVolumeClaim.")
    hugging_face: HuggingFaceSource | None = Field(
        None, description="Download from the Hugging Face hub: by each worker into its cache volume, or once "
        "into model.cache."
    )
    model_scope: ModelScopeSource | None = Field(
        None, description="Download from ModelScope once into model.cache (needs cache.enabled).")

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        if sum(s is not None for s in (self.pvc, self.hugging_face, self.model_scope)) != 1:
            raise ValueError(SOURCE_MESSAGE)
        return self

    @property
    def kind(self) -> Literal["pvc", "huggingFace", "modelScope"]:
        """Which source is set."""
        if self.pvc is not None:
            return "pvc"
        return "huggingFace" if self.hugging_face is not None else "modelScope"

    @property
    def hub(self) -> HuggingFaceSource | ModelScopeSource | None:
        """The hub source (huggingFace or modelScope); None for pvc."""
        return self.hugging_face if self.hugging_face is not None else self.model_scope


SOURCE_MESSAGE = "set exactly one of pvc, huggingFace or modelScope"
AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]


class DownloadResourceList(Model):
    """CPU and memory of the download container (core/v1 ResourceList, these two only)."""

    cpu: str = Field(pattern=QUANTITY, max_length=64, description="CPU, e.g. 500m or 2.")
    memory: str = Field(pattern=QUANTITY, max_length=64, description="Memory, e.g. 1Gi.")


class DownloadResources(Model):
    """Requests and limits of the download container. The defaults fit one hub client streaming to
    disk (TLS, hashing and hf_xet's chunk reassembly); raise them for links faster than ~1 Gbit/s."""

    requests: DownloadResourceList = Field(
        default_factory=lambda: DownloadResourceList(cpu="500m", memory="1Gi"),
        description="Requested CPU and memory; default cpu 500m, memory 1Gi.")
    limits: DownloadResourceList = Field(
        default_factory=lambda: DownloadResourceList(cpu="2", memory="4Gi"),
        description="CPU and memory limits; default cpu 2, memory 4Gi.")

    @model_validator(mode="after")
    def _requests_within_limits(self) -> DownloadResources:
        # The Job would be created, but the apiserver refuses its pods: the download would never start.
        if any(quantity_value(getattr(self.requests, r)) > quantity_value(getattr(self.limits, r))
               for r in ("cpu", "memory")):
            raise ValueError(DOWNLOAD_REQUESTS_MESSAGE)
        return self


DOWNLOAD_REQUESTS_MESSAGE = "requests: cpu and memory must not exceed their limits"
_QUANTITY_SUFFIX = {"": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
                    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}


def quantity_value(text: str) -> float:
    """A Kubernetes quantity matching QUANTITY as a number ("500m" -> 0.5, "1Gi" -> 1073741824)."""
    match = re.match(QUANTITY, text)
    if match is None:
        raise ValueError(f"not a quantity: {text!r}")
    number = text[: len(text) - len(match.group(2) or "")]
    return float(number) * _QUANTITY_SUFFIX[match.group(2) or ""]


class CacheDownload(Model):
    """The download Job of a model cache (docs/model-cache.md). Read when the Job is created: a
    change applies to the next Job (`kubectl delete job <name>`), never to a running download."""

    backoff_limit: int = Field(
        10, ge=0, le=100,
        description="Retries of failed download pods (network, 5xx). Each retry keeps the files already "
        "complete, and permanent failures (401/403, 404, a full disk) fail at once whatever this is.")
    resources: DownloadResources = Field(
        default_factory=lambda: DownloadResources(), description="CPU and memory of the download container.")


class ModelCache(Model):
    """A PersistentVolumeClaim the operator fills once with a download Job before any worker starts
    (docs/model-cache.md). Workers mount it read-only; a new image does not download again."""

    enabled: bool = Field(False, description="Pre-download the model into a PersistentVolumeClaim.")
    size: str | None = Field(
        None, pattern=QUANTITY, max_length=64,
        description="Requested storage, e.g. 40Gi: the model's files plus headroom; required when enabled.")
    storage_class_name: str | None = Field(
        None, max_length=253, description="StorageClass of the claim; unset: the cluster's default class.")
    access_modes: list[AccessMode] = Field(
        default_factory=lambda: list[AccessMode](["ReadWriteOnce"]), min_length=1, max_length=4,
        description="Access modes of the claim. Workers on several nodes need ReadOnlyMany or ReadWriteMany.")
    stall_timeout_seconds: int = Field(
        300, ge=10, le=86400,
        description="Seconds without a downloaded byte before Ready says DownloadStalled.")
    download: CacheDownload = Field(
        default_factory=lambda: CacheDownload(), description="Retries and resources of the download Job.")
    env: list[DownloadEnvVar] = Field(
        default_factory=list, max_length=MAX_ENV,
        description="Extra environment of the download Job (core/v1 EnvVar: value or valueFrom), appended after "
        "the operator's own, e.g. HTTPS_PROXY, NO_PROXY, HF_HUB_DISABLE_XET. Names the operator sets are refused. "
        "Read when a download Job is created; a running or finished download keeps its env.")

    @field_validator("env")
    @classmethod
    def _unique_env(cls, env: list[DownloadEnvVar]) -> list[DownloadEnvVar]:
        unique_names(env)
        return env

    @model_validator(mode="after")
    def _size_when_enabled(self) -> ModelCache:
        if self.enabled and self.size is None:
            raise ValueError(CACHE_SIZE_MESSAGE)
        return self


CACHE_SIZE_MESSAGE = "size: required when cache.enabled is true"
CACHE_PVC_MESSAGE = "cache: a pvc source is on a volume already; the cache is for huggingFace or modelScope"
MODELSCOPE_CACHE_MESSAGE = ("source.modelScope: needs cache.enabled (a download Job fetches ModelScope models "
                            "once; the workers load them from the cache)")


class ModelArchitecture(Model):
    """Sizing geometry of a model outside the GPU-fit catalogue (docs/gpu-sizing.md); config.json names in
    parentheses. Set on a catalogued model, it replaces the catalogue's entry."""

    parameters: str = Field(
        pattern=PARAMETER_COUNT, description="Total parameters as loaded, e.g. 671B, 7.6B or 8430400.")
    layers: int = Field(ge=1, le=1024, description="Decoder layers (num_hidden_layers).")
    hidden_size: int = Field(ge=1, le=1048576, description="Hidden size (hidden_size).")
    attention_heads: int = Field(ge=1, le=4096, description="Attention heads (num_attention_heads).")
    kv_heads: int | None = Field(
        None, ge=1, le=4096, description="Key/value heads (num_key_value_heads); unset: attentionHeads.")
    head_dim: int | None = Field(
        None, ge=1, le=4096, description="Per-head dimension (head_dim); unset: hiddenSize / attentionHeads.")
    vocab_size: int | None = Field(
        None, ge=1, le=16777216,
        description="Vocabulary (vocab_size): the embedding and LM head stay unquantized under bitsandbytes.")
    tied_embeddings: bool = Field(False, description="The LM head shares the embedding (tie_word_embeddings).")
    kv_lora_rank: int | None = Field(
        None, ge=1, le=65536,
        description="MLA latent rank (kv_lora_rank); set for DeepSeek-V2/V3-style attention, with the three "
        "head dimensions below.")
    qk_rope_head_dim: int | None = Field(None, ge=1, le=4096, description="MLA rope key dimension (qk_rope_head_dim).")
    qk_nope_head_dim: int | None = Field(
        None, ge=1, le=4096, description="MLA non-rope key dimension (qk_nope_head_dim).")
    v_head_dim: int | None = Field(None, ge=1, le=4096, description="MLA value head dimension (v_head_dim).")
    routed_expert_parameters: str | None = Field(
        None, pattern=PARAMETER_COUNT,
        description="Parameters of fused routed MoE experts, which bitsandbytes does not quantize, e.g. 654B.")

    @model_validator(mode="after")
    def _mla_dims(self) -> ModelArchitecture:
        dims = (self.qk_rope_head_dim, self.qk_nope_head_dim, self.v_head_dim)
        if self.kv_lora_rank is not None and any(d is None for d in dims):
            raise ValueError(MLA_DIMS_MESSAGE)
        return self


MLA_DIMS_MESSAGE = "kvLoraRank (MLA) needs qkRopeHeadDim, qkNopeHeadDim and vHeadDim"


def _default_source() -> ModelSource:
    return ModelSource.model_validate({"huggingFace": {}})


class ModelSpec(Model):
    # maxLength: CEL matches model.id (the FP8 rule), and the cost estimator prices an unbounded string at
    # the request's size limit; no hub id (at most 96 characters) or path comes near 1024.
    id: str = Field(min_length=1, max_length=MODEL_ID_MAX,
                    description="HF repo id (org/name) or a path inside the pod.")
    revision: str = Field("main", min_length=1, description="Hub revision: branch, tag or commit.")
    source: ModelSource = Field(default_factory=_default_source, description="Where the weights come from.")
    dtype: Dtype = Field("auto", description="Weights dtype; auto picks bfloat16 on GPUs.")
    quantization: Quantization = Field("none", description="bitsandbytes quantization; needs gpus >= 1.")
    attention: Attention = Field(
        "auto", description="Attention kernel; flash_attention_2 falls back to sdpa."
    )
    max_model_len: int | None = Field(
        None, ge=128, le=1048576,
        description="Prompt + completion tokens per request; unset: by model family (reasoning models such as "
        "DeepSeek-R1 and its distills 32768, others 8192; at least 2 x serving.maxNewTokens when that is set). "
        "status.gpuFit.maxModelLen shows the value in effect (docs/gpu-sizing.md).")
    load_timeout_seconds: int = Field(
        1800, ge=10, le=86400,
        description="Seconds a worker may take to start serving: weight download (huggingFace) plus "
        "loading onto the GPUs. The startup probe restarts a worker not ready by then; "
        "rollout.progressDeadlineSeconds must be at least this.",
    )
    architecture: ModelArchitecture | None = Field(
        None, description="Sizing geometry for the GPU-fit plan of a model not in the catalogue "
        "(docs/gpu-sizing.md); unset: the catalogue entry of id.")
    cache: ModelCache | None = Field(
        None, description="Download the model once into a PersistentVolumeClaim before workers start, "
        "with progress in status (docs/model-cache.md).")

    @model_validator(mode="after")
    def _cache_and_source(self) -> ModelSpec:
        errors = model_cache_errors(self)
        if errors:
            raise ValueError("; ".join(errors))
        return self

    @property
    def cached(self) -> bool:
        """The model is pre-downloaded into a cache PersistentVolumeClaim."""
        return self.cache is not None and self.cache.enabled


def model_cache_errors(model: ModelSpec) -> list[str]:
    """The cache/source rules the CRD states in CEL (tools/crd_rules.py), for one resolved model."""
    errors = []
    if model.cached and model.source.pvc is not None:
        errors.append(CACHE_PVC_MESSAGE)
    if model.source.model_scope is not None and not model.cached:
        errors.append(MODELSCOPE_CACHE_MESSAGE)
    return errors


class ModelOverride(Model):
    """A variant's changes to the primary model; unset fields are inherited."""

    id: str | None = Field(None, min_length=1, max_length=MODEL_ID_MAX, description="Model id; inherits spec.model.id.")
    revision: str | None = Field(None, min_length=1, description="Revision; inherits spec.model.revision.")
    source: ModelSource | None = Field(None, description="Weights source; inherits spec.model.source.")
    dtype: Dtype | None = Field(None, description="Weights dtype; inherits spec.model.dtype.")
    quantization: Quantization | None = Field(None, description="Quantization; inherits the primary's.")
    attention: Attention | None = Field(None, description="Attention kernel; inherits the primary's.")
    max_model_len: int | None = Field(None, ge=128, le=1048576, description="Inherits the primary's.")
    load_timeout_seconds: int | None = Field(
        None, ge=10, le=86400, description="Model load budget in seconds; inherits the primary's."
    )
    architecture: ModelArchitecture | None = Field(
        None, description="GPU-fit sizing geometry; inherits the primary's when id is inherited too.")
    cache: ModelCache | None = Field(None, description="Model cache; inherits spec.model.cache.")


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
        "(spec.runtime vllm or sglang only; docs/runtimes.md). Unset: one node holds the pod.")


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
        return _image_reference(image)

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

    @field_validator("image")
    @classmethod
    def _oci_reference(cls, image: str | None) -> str | None:
        return _image_reference(image)

    @field_validator("env")
    @classmethod
    def _unique_env(cls, env: list[WorkerEnvVar] | None) -> list[WorkerEnvVar] | None:
        unique_names(env)
        return env


class IngressTLS(Model):
    secret_name: str = Field(min_length=1, description="Secret with the TLS certificate for host.")


class ParentRef(Model):
    name: str = Field(min_length=1, description="Gateway name.")
    namespace: str | None = Field(None, description="Gateway namespace; defaults to the route's.")
    section_name: str | None = Field(None, description="Listener name on the Gateway.")


class GatewaySpec(Model):
    parent_refs: list[ParentRef] = Field(
        default_factory=list, max_length=8, description="Gateways the HTTPRoute attaches to."
    )


class IngressSpec(Model):
    # gateway-api by default since ingress-nginx was retired (2026); objects stored before keep their
    # persisted ingress-nginx (docs/traffic.md, upgrade note).
    provider: IngressProvider = Field(
        "gateway-api", description="gateway-api (the default: an HTTPRoute, needs gateway.parentRefs) or "
        "ingress-nginx (an Ingress; the ingress-nginx project is retired but this provider stays supported).")
    host: str = Field(min_length=1, max_length=253, pattern=INGRESS_HOST,
                      description="Public host name the ingress routes to the workers (a DNS name, ASCII).")
    class_name: str = Field("", description="IngressClass name (ingress-nginx provider).")
    path: str = Field("/", max_length=1024, pattern=INGRESS_PATH,
                      description="Path prefix routed to the workers: an absolute URL path without dot "
                      "segments, '//' or %2F.")
    tls: IngressTLS | None = Field(None, description="Serve HTTPS with this certificate Secret.")
    gateway: GatewaySpec | None = Field(None, description="gateway-api provider settings.")


    @field_validator("path")
    @classmethod
    def _no_dot_segments(cls, path: str) -> str:
        if re.search(INGRESS_PATH_BAD, path):
            raise ValueError(INGRESS_PATH_MESSAGE)
        return path


INGRESS_PATH_MESSAGE = "must not contain '//', '/./', '/../' or '%2F', nor end with '/.' or '/..'"


class JwtSpec(Model):
    secret_ref: SecretRef = Field(description="Secret with keys signing-key and clients (id:secret lines).")
    issuer: str = Field("deepseek-worker", min_length=1, description="JWT iss issued and required.")
    audience: str = Field("deepseek-api", min_length=1, description="JWT aud issued and required.")
    # Explicit alias: to_camel would give tokenTtlSeconds; the documented field is tokenTTLSeconds.
    token_ttl_seconds: int = Field(
        3600, ge=60, le=86400, alias="tokenTTLSeconds",
            description="Lifetime of access tokens from POST /auth/v1/token, in seconds."
    )


class AuthSpec(Model):
    api_keys_secret_ref: SecretRef | None = Field(None, description="Secret whose key api-keys lists keys.")
    jwt: JwtSpec | None = Field(None, description="Client-credentials tokens (POST /auth/v1/token).")


class RateLimit(Model):
    requests_per_minute: int = Field(600, ge=1,
        description="Requests per minute per API key (per client IP when auth is off).")
    burst: int = Field(60, ge=1, description="Token bucket size: requests allowed in a burst above the steady rate.")


class Serving(Model):
    max_concurrent_requests: int = Field(64, ge=1, le=4096,
        description="Requests running + queued per pod; beyond it the worker answers 503 with Retry-After.")
    max_batch_size: int = Field(16, ge=1, le=512, description="Continuous batching running batch size.")
    max_new_tokens: int | None = Field(
        None, ge=1,
        description="Cap and default of max_tokens; unset: by model family (reasoning models 16384, others 2048), "
        "at most half of model.maxModelLen. status.gpuFit.maxNewTokens shows the value in effect.")
    request_timeout_seconds: int = Field(600, ge=1, le=86400,
        description="Per request; also bounds the graceful drain (max 300 s) and the ingress timeout.")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1.0,
        description="Share of each GPU's memory the worker may allocate (weights, activations and the KV pool, "
        "which takes what is left); unset: the worker's default, 0.9. The GPU-fit plan uses it "
        "(docs/gpu-sizing.md).")
    max_num_batched_tokens: int | None = Field(
        None, ge=16, le=1048576,
        description="Prompt tokens the worker prefills per engine step, over all admitted requests (chunked "
        "prefill): lower keeps streams smooth while a long prompt is read, higher reads prompts faster; "
        "unset: the worker's default, 2048.")
    max_concurrent_requests_per_key: int | None = Field(
        None, ge=1, le=4096,
        description="Slots of maxConcurrentRequests one API key or JWT client may hold per pod (auth on); beyond "
        "it that key gets 429 while other keys are served. At most maxConcurrentRequests; unset: the worker's "
        "default, half of maxConcurrentRequests (docs/auth.md).")
    forwarded_allow_ips: list[Annotated[str, Field(max_length=64, pattern=IP_OR_CIDR)]] | None = Field(
        None, max_length=32, alias="forwardedAllowIPs",
        description="Peer addresses or CIDRs whose X-Forwarded-For the worker trusts (uvicorn's FORWARDED_ALLOW_IPS), "
        "e.g. the ingress controller's pod CIDR: rate limits and the failed-auth throttle then count per client "
        "instead of per ingress pod. Unset: no forwarded header is trusted (docs/auth.md).")

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses(cls, addresses: list[str] | None) -> list[str] | None:
        return ip_networks(addresses, strict=True)  # uvicorn reads 10.0.0.1/8 as a name that never matches

    @model_validator(mode="after")
    def _per_key_within_total(self) -> Serving:
        per_key = self.max_concurrent_requests_per_key
        if per_key is not None and per_key > self.max_concurrent_requests:
            raise ValueError(PER_KEY_MESSAGE)
        return self


PER_KEY_MESSAGE = "maxConcurrentRequestsPerKey: must not exceed maxConcurrentRequests"


class ServiceMonitorSpec(Model):
    enabled: bool = Field(
        True, description="Create a ServiceMonitor when the Prometheus Operator API exists."
    )
    interval: str = Field("30s", pattern=DURATION, description="Prometheus scrape interval, e.g. 30s.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels your Prometheus selects on.")


class AlertThresholds(Model):
    """Where the alerts fire. Whole numbers (Kubernetes API conventions avoid floats in specs)."""

    p99_latency_seconds: int | None = Field(
        None, ge=1, le=86400,
        description="DeepSeekWorkerHighLatencyP99 fires above this P99 API latency; unset: 80% of "
        "serving.requestTimeoutSeconds.",
    )
    p99_time_to_first_token_seconds: int = Field(
        10, ge=1, le=3600, description="DeepSeekWorkerSlowTimeToFirstToken fires above this P99 time to first token."
    )
    error_percent: int = Field(
        5, ge=1, le=100, description="DeepSeekWorkerHighErrorRatio fires above this percent of API requests with 5xx."
    )
    queue_saturation_percent: int = Field(
        90, ge=1, le=100,
        description="DeepSeekWorkerQueueSaturated fires above this percent of serving.maxConcurrentRequests in use.",
    )
    gpu_memory_percent: int = Field(
        95, ge=1, le=100, description="DeepSeekWorkerGpuMemoryHigh fires above this percent of a GPU's memory in use."
    )


class PrometheusRuleSpec(Model):
    enabled: bool = Field(True, description="Create a PrometheusRule with the worker alerts.")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels added to every alert, for Alertmanager routing (e.g. team: ml-platform). Keys are "
        "Prometheus label names; severity is set per alert by the operator.",
    )
    # Explicit alias: to_camel would give runbookBaseUrl; Kubernetes spells the initialism URL.
    runbook_base_url: str | None = Field(
        None, pattern=r"^https?://[^\s#]+$", alias="runbookBaseURL",
        description="Each alert's runbook_url is <runbookBaseURL>#<alert name in lower case>; unset: the "
        "project's docs/observability.md.",
    )
    thresholds: AlertThresholds = Field(
        default_factory=lambda: AlertThresholds(), description="Alert thresholds."
    )

    @field_validator("labels")
    @classmethod
    def _alert_label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in labels if not re.fullmatch(PROMETHEUSLABEL_NAME, k))
        if bad:
            raise ValueError(f"{', '.join(bad)}: not a Prometheus label name ({PROMETHEUSLABEL_NAME})")
        if "severity" in labels:
            raise ValueError("severity is set per alert by the operator; route on another label")
        return labels


class Monitoring(Model):
    service_monitor: ServiceMonitorSpec = Field(
        default_factory=lambda: ServiceMonitorSpec(), description="Scraping."
    )
    prometheus_rule: PrometheusRuleSpec = Field(
        default_factory=lambda: PrometheusRuleSpec(), description="Alerts."
    )


class ClientPeer(Model):
    """Pods allowed to the API port: podSelector alone selects in the resource's namespace,
    namespaceSelector alone every pod of the matching namespaces, both the matching pods there."""

    pod_selector: LabelSelector | None = Field(
        None, description="Pods (in the resource's namespace, or in namespaceSelector's); {}: every pod.")
    namespace_selector: LabelSelector | None = Field(
        None, description="Namespaces; never empty (an empty selector matches every namespace).")

    @model_validator(mode="after")
    def _a_selector(self) -> ClientPeer:
        if self.pod_selector is None and self.namespace_selector is None:
            raise ValueError(CLIENT_SELECTOR_MESSAGE)
        ns = self.namespace_selector
        if ns is not None and not ns.match_labels and not ns.match_expressions:
            raise ValueError(CLIENT_NAMESPACE_MESSAGE)
        return self


CLIENT_SELECTOR_MESSAGE = "set podSelector, namespaceSelector or both"
CLIENT_NAMESPACE_MESSAGE = ("namespaceSelector: must select by labels or expressions (an empty selector matches every "
                            "namespace)")


class HubEgress(Model):
    """Where hub-downloading worker pods may connect (docs/security.md): a NetworkPolicy holds addresses,
    never host names."""

    cidrs: list[Annotated[str, Field(max_length=64, pattern=CIDR)]] = Field(
        min_length=1, max_length=32,
        description="Destination CIDRs (e.g. the mirror's or proxy's network), instead of any address.")

    @field_validator("cidrs")
    @classmethod
    def _networks(cls, cidrs: list[str]) -> list[str]:
        return ip_networks(cidrs, strict=True) or []


class NetworkPolicySpec(Model):
    enabled: bool = Field(
        True, description="Default-deny ingress and egress of the worker pods, with the allowances of "
        "docs/security.md (API port from clients, by default this namespace, and ingressNamespaceSelector, "
        "metrics from monitoringNamespaceSelector, DNS, the hub endpoint's port for pods that download from "
        "huggingFace). Off only when set false."
    )
    ingress_namespace_selector: dict[str, str] = Field(
        default_factory=dict, description="Labels of the ingress controller/gateway namespace, allowed to "
        "the API port; empty: only the in-cluster clients (see clients) reach it."
    )
    monitoring_namespace_selector: dict[str, str] = Field(
        default_factory=dict, description="Labels of the Prometheus namespace, allowed to the worker port "
        "for metrics scrapes; empty: only pods of the resource's own namespace can scrape."
    )
    clients: list[ClientPeer] | None = Field(
        None, max_length=16,
        description="In-cluster clients allowed to the API port besides ingressNamespaceSelector: unset, every pod "
        "of the resource's namespace (the default); [] none; else only the pods these selectors match.")
    hub_egress: HubEgress | None = Field(
        None, description="Narrow the egress of hub-downloading pods to these CIDRs; unset: any address, on the "
        "hub endpoint's port (or its proxy's, from env HTTPS_PROXY).")


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

    @field_validator("image")
    @classmethod
    def _oci_reference(cls, image: str | None) -> str | None:
        return _image_reference(image)

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
    if spec.ingress and spec.ingress.provider == "ingress-nginx" and len(spec.variants) > 1:
        errors.append(
            "spec.variants: ingress-nginx splits traffic between two backends only; "
            "use ingress.provider gateway-api for more than one canary"
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
    errors += multinode_errors(spec)
    errors += _variant_model_errors(spec)
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


MULTINODE_RUNTIME_MESSAGE = ("resources.gpus exceeds resources.gpusPerNode: only runtime vllm or sglang spans "
                             "nodes (a LeaderWorkerSet); set spec.runtime.name, and every variant's runtime, to vllm "
                             "or sglang, or lower resources.gpus")
MULTINODE_GPUS_MESSAGE = ("above resources.gpusPerNode it must be a multiple of it (one pod per node, each with "
                          "gpusPerNode GPUs)")


def multinode_errors(spec: DeepSeekDeploymentSpec) -> list[str]:
    """A pod's GPUs beyond a node (render/multinode.py): an engine runtime everywhere, whole nodes."""
    res = spec.resources
    if res.gpus_per_node is None or res.gpus <= res.gpus_per_node:
        return []
    errors = []
    if res.gpus % res.gpus_per_node:
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


class InvalidSpec(ValueError):
    """A spec the operator cannot act on. str() is one line naming the field."""


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = ["spec"]
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        else:
            parts.append(item)
    return ".".join(parts)


def parse_spec(raw: dict[str, Any]) -> DeepSeekDeploymentSpec:
    """Validate a raw CR spec. Raises InvalidSpec whose message names every bad field."""
    try:
        return DeepSeekDeploymentSpec.model_validate(raw)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            msg = str(err["msg"]).removeprefix("Value error, ")
            path = _field_path(err["loc"])
            messages.append(msg if msg.startswith("spec.") else f"{path}: {msg}")
        raise InvalidSpec("; ".join(messages)) from None


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


def _merged_model(primary: ModelSpec, variant: Variant) -> dict[str, Any]:
    """A variant's model as wire data: its overrides over the primary's model."""
    overrides = variant.model.model_dump(by_alias=True, exclude_none=True) if variant.model else {}
    if "id" in overrides and "architecture" not in overrides:
        overrides["architecture"] = None  # the primary's geometry describes the primary's model
    return {**primary.model_dump(by_alias=True), **overrides}


def _variant_model_errors(spec: DeepSeekDeploymentSpec) -> list[str]:
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
            )
        )
    return out


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
    variants: list[VariantStatus] = Field(
        default_factory=list, max_length=16, description="Per variant state and weight."
    )
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, description="Ready, Available, Progressing, Degraded."
    )
