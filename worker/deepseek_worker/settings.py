"""Worker settings: the contract with the operator (docs/worker-settings.md).

Every field reads from `DEEPSEEK_<NAME>` (pydantic-settings); cli.py maps flags onto the same fields.
Validation lives here so that a bad value fails at start-up with the setting's name, never later.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .types import Attention, Dtype, EngineConfig, Quantization

MIN_JWT_SECRET_BYTES = 32  # HS256 wants a key at least as long as its 256-bit output (RFC 7518 3.2)


def jwt_secret_bytes(text: str) -> int:
    """Length in bytes of the signing key in a secret file's text: its first non-comment line."""
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            return len(line.strip().encode())
    return 0


class Settings(BaseSettings):
    """All worker settings. Field names are the env names without the `DEEPSEEK_` prefix."""

    model_config = SettingsConfigDict(env_prefix="DEEPSEEK_", extra="ignore", protected_namespaces=())

    model: str = "tiny"
    model_revision: str = "main"
    served_model_name: str | None = None
    dtype: Dtype = "auto"
    quantization: Quantization = "none"
    attention: Attention = "auto"
    max_model_len: int = Field(8192, ge=16)
    max_batch_size: int = Field(16, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    kv_cache_bytes: int | None = Field(None, ge=1)
    max_num_batched_tokens: int = Field(2048, ge=16)
    enforce_eager: bool = False
    max_concurrent_requests: int = Field(64, ge=1)
    # 0 = half of max_concurrent_requests (at least 1); see per_key_concurrency.
    max_concurrent_requests_per_key: int = Field(0, ge=0)
    max_new_tokens: int = Field(2048, ge=1)
    request_timeout_seconds: float = Field(600, gt=0)
    rate_limit_rpm: int = Field(0, ge=0)
    rate_limit_burst: int = Field(0, ge=0)
    auth_failures_per_minute: int = Field(10, ge=0)  # per client address; 0 = no throttle
    # A plain str: pydantic-settings would try to JSON-decode a list type from the environment.
    api_keys: str | None = None
    api_keys_file: Path | None = None
    jwt_secret_file: Path | None = None
    jwt_clients_file: Path | None = None
    jwt_issuer: str = "deepseek-worker"
    jwt_audience: str = "deepseek-api"
    jwt_ttl_seconds: int = Field(3600, ge=1)
    host: str = "0.0.0.0"  # a pod must listen on its pod IP
    port: int = Field(8000, ge=1, le=65535)
    # A second listener for /metrics only, so a NetworkPolicy can open it to Prometheus alone. Set, the
    # API port does not serve /metrics; 0 (off): the API port does, keyed when auth is on.
    metrics_port: int = Field(0, ge=0, le=65535)
    drain_timeout_seconds: float = Field(30, ge=0)
    # Where the worker reports its start-up measurements for the operator's status (report.py;
    # docs/gpu-sizing.md): a ConfigMap its ServiceAccount may patch. Unset: no report.
    report_configmap: str | None = None
    report_namespace: str | None = None
    max_body_bytes: int = Field(1048576, ge=1024)
    # Proxy mode (server/proxy.py, docs/worker-api.md "Proxy mode"): the root URL of an engine's own
    # OpenAI server in the same pod (vLLM, SGLang). Set, no model is loaded here: the API is forwarded.
    upstream: str | None = None
    # The longest the proxy waits on the upstream: to connect, for its response, between two body chunks.
    upstream_timeout_seconds: float = Field(600, gt=0)
    # Gateway mode (gateway/, docs/gateway.md): the gateway's JSON configuration, as a mounted file or
    # inline. Set, no model is loaded: requests are forwarded to the variants' worker pods.
    gateway_config: Path | None = None
    gateway_config_json: str | None = None
    # The `variant` label of the per-key token counters (server/metering.py): the DeepSeekDeployment
    # variant this pod serves. A label value: letters, digits, `.`, `_`, `-`.
    variant: str = Field("primary", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    # A worker behind our gateway (the operator sets it exactly when spec.gateway is enabled): the
    # gateway's `x-deepseek-priority` header gives each request's priority (server/metering.py). Unset,
    # the header is ignored: a client that reaches a worker directly cannot raise its own priority.
    trust_gateway_priority: bool = False

    @field_validator("api_keys_file", "jwt_secret_file", "jwt_clients_file", "gateway_config")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        """Secret files must exist at start-up: a missing mount is a deployment error."""
        if path is not None and not path.is_file():
            raise ValueError(f"file not found: {path}")
        return path

    @field_validator("api_keys_file")
    @classmethod
    def _valid_keys(cls, path: Path | None) -> Path | None:
        """A structured keys file (ids, quotas, priorities) must validate at start-up, naming the field."""
        if path is not None:
            from .server.keys import parse_keys  # here: the server package imports these settings

            parse_keys(path.read_text(encoding="utf-8"))  # KeysFileError is a ValueError: its message names the entry
        return path

    @field_validator("jwt_secret_file")
    @classmethod
    def _strong_jwt_secret(cls, path: Path | None) -> Path | None:
        """An HS256 key shorter than 32 bytes can be brute-forced offline from one issued token."""
        if path is not None:
            size = jwt_secret_bytes(path.read_text(encoding="utf-8"))
            if size < MIN_JWT_SECRET_BYTES:
                raise ValueError(
                    f"the JWT signing key in {path} is {size} bytes; at least {MIN_JWT_SECRET_BYTES} are required"
                    " (e.g. `openssl rand -hex 32`)"
                )
        return path

    @field_validator("upstream")
    @classmethod
    def _upstream_root(cls, url: str | None) -> str | None:
        """An http(s) server root: the proxy appends /v1/... and /health itself."""
        if url is None:
            return None
        parsed = urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL with a host (e.g. http://127.0.0.1:8001)")
        if parsed.query or parsed.fragment:
            raise ValueError(f"{url!r}: give the server's root, without a query or fragment")
        if parsed.path.rstrip("/").endswith("/v1"):
            raise ValueError(f"{url!r}: give the server's root, without /v1 (the proxy adds it)")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_new_tokens >= self.max_model_len:
            raise ValueError("max_new_tokens must be smaller than max_model_len")
        if self.jwt_clients_file is not None and self.jwt_secret_file is None:
            raise ValueError("jwt_clients_file needs jwt_secret_file")
        if self.gateway and self.upstream is not None:
            raise ValueError("gateway mode and proxy mode (upstream) exclude each other")
        if self.gateway_config is not None and self.gateway_config_json is not None:
            raise ValueError("give gateway_config or gateway_config_json, not both")
        if self.gateway and self.trust_gateway_priority:
            raise ValueError("trust_gateway_priority is for the workers behind a gateway, not the gateway itself")
        if self.max_concurrent_requests_per_key > self.max_concurrent_requests:
            raise ValueError("max_concurrent_requests_per_key must not exceed max_concurrent_requests")
        return self

    @property
    def gateway(self) -> bool:
        """Gateway mode: a gateway configuration was given."""
        return self.gateway_config is not None or self.gateway_config_json is not None

    @property
    def served_name(self) -> str:
        """The name /v1/models reports and `model` must match."""
        return self.served_model_name or self.model

    @property
    def per_key_concurrency(self) -> int:
        """Slots one API key / JWT client may hold: the explicit cap, else half the worker's, at least 1."""
        return self.max_concurrent_requests_per_key or max(1, self.max_concurrent_requests // 2)

    @property
    def burst(self) -> int:
        """Token bucket size: the explicit burst, else rpm/10, at least 1."""
        return self.rate_limit_burst or max(1, self.rate_limit_rpm // 10)

    def engine_config(self) -> EngineConfig:
        """The engine's slice of the settings."""
        return EngineConfig(
            model=self.model,
            revision=self.model_revision,
            served_model_name=self.served_model_name,
            dtype=self.dtype,
            quantization=self.quantization,
            attention=self.attention,
            max_model_len=self.max_model_len,
            max_batch_size=self.max_batch_size,
            gpu_memory_utilization=self.gpu_memory_utilization,
            kv_cache_bytes=self.kv_cache_bytes,
            max_num_batched_tokens=self.max_num_batched_tokens,
            enforce_eager=self.enforce_eager,
        )
