"""The gateway's configuration: one JSON document (docs/gateway.md), validated by pydantic.

The operator renders it into a ConfigMap mounted in the gateway pod (DEEPSEEK_GATEWAY_CONFIG names
the file); tests and local runs may pass the JSON itself (DEEPSEEK_GATEWAY_CONFIG_JSON). Field names
are camelCase, as in the DeepSeekDeployment they come from. A bad document fails at start-up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FallbackReason = Literal["ColdStart", "Overloaded", "Unavailable"]
DEEPSEEK_API = "https://api.deepseek.com"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _root_url(url: str) -> str:
    """An http(s) server root without /v1, query or fragment; returned without a trailing slash."""
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL with a host")
    if parsed.query or parsed.fragment or parsed.path.rstrip("/").endswith("/v1"):
        raise ValueError(f"{url!r}: give the server's root, without /v1, a query or a fragment")
    return url.rstrip("/")


class ServiceRef(_Model):
    """A headless Service whose DNS name resolves to the ready pods' addresses (re-resolved periodically)."""

    host: str = Field(min_length=1)  # e.g. chat-canary-pods.default.svc.cluster.local
    port: int = Field(8000, ge=1, le=65535)
    scheme: Literal["http", "https"] = "http"


class Variant(_Model):
    """One variant: its share of traffic and where its pods are (a fixed list, a Service, or both)."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    weight: int = Field(ge=0, le=100)
    backends: list[str] = Field(default_factory=list)  # server roots, e.g. http://10.0.0.7:8000
    service: ServiceRef | None = None
    # This variant's queue gauge when its runtime names it differently from discovery.queueMetric (a
    # vLLM canary behind a builtin primary); None: discovery.queueMetric.
    queueMetric: str | None = Field(None, min_length=1)

    @field_validator("backends")
    @classmethod
    def _roots(cls, urls: list[str]) -> list[str]:
        return [_root_url(url) for url in urls]

    @model_validator(mode="after")
    def _somewhere(self) -> Variant:
        if not self.backends and self.service is None:
            raise ValueError(f"variant {self.name}: give backends, a service, or both")
        return self


class Hold(_Model):
    """Scale-from-zero hold: requests for a variant without a ready backend wait here."""

    maxQueue: int = Field(64, ge=0)  # held requests per variant; beyond it 429 (0: never hold)
    deadlineSeconds: float = Field(300, gt=0)  # per request; then 504
    loadSeconds: float = Field(120, gt=0)  # declared load time, until one was measured (Retry-After)
    commentSeconds: float = Field(5, gt=0)  # how often a held stream gets a `: waiting: ...` line


class Discovery(_Model):
    """How often backends are found and checked, and where their queue gauge is read."""

    resolveSeconds: float = Field(5, gt=0)  # DNS re-resolution of each variant's service
    probeSeconds: float = Field(2, gt=0)  # /health/ready, then the ready backends' queue gauge
    heldProbeSeconds: float = Field(0.25, gt=0)  # both, while a request of the variant is held
    # The queue gauge (summed over its samples) that refines the least-loaded choice and the Overloaded
    # rule (vLLM's is vllm:num_requests_waiting; a variant may name its own); None: the gateway's own
    # in-flight counts alone. A gauge that cannot be read counts 0 and never costs readiness.
    queueMetric: str | None = Field("deepseek_worker_queue_depth", min_length=1)
    # Where the gauge is read: each backend's host on this port, plain http, /metrics (a worker's
    # DEEPSEEK_METRICS_PORT listener, which then serves /metrics alone: the operator renders 9090);
    # None: /metrics under the backend's own URL (a worker run without a metrics port).
    metricsPort: int | None = Field(None, ge=1, le=65535)


def _all_reasons() -> list[FallbackReason]:
    return ["ColdStart", "Overloaded", "Unavailable"]


class Fallback(_Model):
    """Spill-over to a hosted OpenAI/DeepSeek-compatible API, only when `when` allows and never above maxShare."""

    baseURL: str = DEEPSEEK_API
    model: str = "deepseek-chat"  # the hosted model the request's `model` is replaced with
    apiKeyFile: Path | None = None  # a mounted Secret's file (first line)
    apiKeyEnv: str | None = None  # or an environment variable holding it
    when: list[FallbackReason] = Field(default_factory=_all_reasons)
    maxShare: float = Field(0.2, ge=0, le=1)  # of all routed requests in the last windowSeconds
    windowSeconds: float = Field(60, gt=0)
    # A variant is Overloaded when every ready backend's load (gateway in-flight + polled queue) is at
    # least this; a full hold queue is Overloaded too.
    overloadThreshold: int = Field(8, ge=1)
    # Callers allowed to leave the cluster (data residency): a key's `id` in the structured keys file
    # (server/keys.py, docs/auth.md), "client:<sub>" for a JWT client, "key:<sha256 of the key, 16
    # hex digits>" for a plain-format key, "*" for every caller. Nobody by default.
    allowExternal: list[str] = Field(default_factory=list)
    timeoutSeconds: float = Field(600, gt=0)

    @field_validator("baseURL")
    @classmethod
    def _base(cls, url: str) -> str:
        return _root_url(url)

    def api_key(self) -> str:
        """The hosted API's key, read now (a rotated Secret file is picked up on the next start)."""
        if self.apiKeyFile is not None:
            lines = [line.strip() for line in self.apiKeyFile.read_text(encoding="utf-8").splitlines()]
            return next((line for line in lines if line), "")
        if self.apiKeyEnv is not None:
            return os.environ.get(self.apiKeyEnv, "")
        return ""

    def allows(self, identity: str) -> bool:
        """Whether requests of `identity` may be sent outside the cluster."""
        return "*" in self.allowExternal or identity in self.allowExternal


class StatusFrom(_Model):
    """The DeepSeekDeployment whose status tells held streams what they wait for."""

    name: str = Field(min_length=1)
    namespace: str = Field(min_length=1)


class GatewayConfig(_Model):
    """The whole document. Variants are tried by weight among those with a ready backend."""

    variants: list[Variant] = Field(min_length=1)
    hold: Hold = Hold()
    discovery: Discovery = Discovery()
    fallback: Fallback | None = None
    statusFrom: StatusFrom | None = None
    backendTimeoutSeconds: float = Field(600, gt=0)  # connect, response head, between two chunks

    @model_validator(mode="after")
    def _unique(self) -> GatewayConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if "fallback" in names:
            raise ValueError("'fallback' is reserved (x-served-by: fallback)")
        if not any(v.weight for v in self.variants):
            raise ValueError("at least one variant needs a weight above 0")
        return self


def load_config(path: Path | None = None, text: str | None = None) -> GatewayConfig:
    """The configuration from the JSON file at `path`, else from `text`."""
    if path is not None:
        text = path.read_text(encoding="utf-8")
    if text is None:
        raise ValueError("the gateway needs a configuration (DEEPSEEK_GATEWAY_CONFIG or _JSON)")
    return GatewayConfig.model_validate_json(text)
