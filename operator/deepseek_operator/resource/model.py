"""`spec.model` and what a variant may override of it: the weights' source, the model cache and its
download Job, the sizing geometry (`ModelArchitecture`) and the model's rules the CRD states in CEL
(`model_cache_errors`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from deepseek_operator import quantity, runtimes
from deepseek_operator.envvars import MAX_ENV, DownloadEnvVar, unique_names
from deepseek_operator.quantity import QUANTITY
from deepseek_operator.resource.patterns import PARAMETER_COUNT
from deepseek_operator.wire import Model

Dtype = Literal["auto", "bfloat16", "float16", "float32"]
Quantization = Literal["none", "int8", "nf4", "fp4"]
Attention = Literal["auto", "sdpa", "flash_attention_2", "eager"]
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
        if any(quantity.value(getattr(self.requests, r)) > quantity.value(getattr(self.limits, r))
               for r in ("cpu", "memory")):
            raise ValueError(DOWNLOAD_REQUESTS_MESSAGE)
        return self


DOWNLOAD_REQUESTS_MESSAGE = "requests: cpu and memory must not exceed their limits"


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


