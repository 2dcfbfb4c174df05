"""Worker settings: the contract with the operator (docs/worker-settings.md).

Every field reads from `DEEPSEEK_<NAME>` (pydantic-settings); cli.py maps flags onto the same fields.
Validation lives here so that a bad value fails at start-up with the setting's name, never later.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .types import Attention, Dtype, EngineConfig, Quantization


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
    max_concurrent_requests: int = Field(64, ge=1)
    max_new_tokens: int = Field(2048, ge=1)
    request_timeout_seconds: float = Field(600, gt=0)
    rate_limit_rpm: int = Field(0, ge=0)
    rate_limit_burst: int = Field(0, ge=0)
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
    drain_timeout_seconds: float = Field(30, ge=0)
    max_body_bytes: int = Field(1048576, ge=1024)

    @field_validator("api_keys_file", "jwt_secret_file", "jwt_clients_file")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        """Secret files must exist at start-up: a missing mount is a deployment error."""
        if path is not None and not path.is_file():
            raise ValueError(f"file not found: {path}")
        return path

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_new_tokens >= self.max_model_len:
            raise ValueError("max_new_tokens must be smaller than max_model_len")
        if self.jwt_clients_file is not None and self.jwt_secret_file is None:
            raise ValueError("jwt_clients_file needs jwt_secret_file")
        return self

    @property
    def served_name(self) -> str:
        """The name /v1/models reports and `model` must match."""
        return self.served_model_name or self.model

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
        )
