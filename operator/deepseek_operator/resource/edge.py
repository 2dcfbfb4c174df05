"""How the service meets its clients and its cluster: `ingress` (ingress-nginx or Gateway API),
`serving` (limits, auth, rate limits), `monitoring` (ServiceMonitor, PrometheusRule) and
`networkPolicy` (clients, hub egress).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from deepseek_operator.affinity import LabelSelector
from deepseek_operator.resource.model import SecretRef
from deepseek_operator.resource.patterns import (
    CIDR,
    DURATION,
    INGRESS_HOST,
    INGRESS_PATH,
    INGRESS_PATH_BAD,
    IP_OR_CIDR,
    PROMETHEUSLABEL_NAME,
    ip_networks,
)
from deepseek_operator.wire import Model

IngressProvider = Literal["ingress-nginx", "gateway-api"]


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
    # Explicit alias: to_camel would give prometheusUrl; Kubernetes spells the initialism URL.
    prometheus_url: str | None = Field(
        None, max_length=512, pattern=r"^https?://[^\s?#]+$", alias="prometheusURL",
        description="The Prometheus that scrapes the workers (e.g. http://prometheus.monitoring.svc:9090): KEDA's "
        "prometheus trigger reads autoscaling metrics there where the gateway cannot give them (kvCacheUsage, "
        "or no gateway; docs/autoscaling.md). Unset: those variants get an HPA on pods metrics instead.")


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


