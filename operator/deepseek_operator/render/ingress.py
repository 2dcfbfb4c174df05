"""The public entry point: an ingress-nginx Ingress pair or a Gateway API HTTPRoute. Pure.

Both providers split traffic with the effective weights from traffic.effective_weights(); the
renderer never decides readiness itself, so what the status reports and what the proxy does
cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from deepseek_operator.api import PRIMARY, DeepSeekDeploymentSpec, IngressSpec, ResolvedVariant, resolve_variants
from deepseek_operator.render.common import (
    HTTP_PORT,
    Capabilities,
    Owner,
    child_name,
    metadata,
    variant_service_name,
)
from deepseek_operator.render.gateway import gateway_name

COMPONENT = "ingress"
HTTPROUTE_API_VERSION = "gateway.networking.k8s.io/v1"
INGRESS_API_VERSION = "networking.k8s.io/v1"
NGINX = "nginx.ingress.kubernetes.io/"
NGINX_CANARY = NGINX + "canary"
NGINX_CANARY_WEIGHT = NGINX + "canary-weight"


def render_ingress(
    owner: Owner, spec: DeepSeekDeploymentSpec, weights: Mapping[str, int], caps: Capabilities,
    variants: Sequence[ResolvedVariant] | None = None,
) -> list[dict[str, Any]]:
    """Objects that expose the deployment at spec.ingress.host + path.

    - no spec.ingress -> [].
    - gateway-api -> one HTTPRoute named like the owner, one weighted backendRef per variant
      Service (a 0-weight backend stays listed, so adding weight later is a patch, not a new rule);
      [] when caps.gateway_api is False (the reconcile reports the missing API in a condition).
    - ingress-nginx -> the primary Ingress (proxy timeouts, buffering off for streaming), plus
      `<owner>-<canary>` with the nginx canary annotations when the spec has a canary (the CRD
      allows at most one with this provider).
    Both bound the proxy's request timeout by serving.requestTimeoutSeconds, not the proxy default.
    With spec.gateway enabled both have one backend, the gateway's Service (it splits by weight
    itself), and the timeout grows by gateway.holdTimeoutSeconds (a held request waits first).
    `weights` maps variant name -> percent; a variant missing from it gets 0. `variants`:
    resolve_variants(spec), when the caller resolved them already (desired.py).
    """
    ingress = spec.ingress
    if ingress is None:
        return []
    variants = resolve_variants(spec) if variants is None else list(variants)
    timeout = spec.serving.request_timeout_seconds
    if spec.gateway_enabled:  # the gateway splits by weight itself: one backend, the gateway's Service
        backend = gateway_name(owner)
        timeout += spec.gateway.hold_timeout_seconds if spec.gateway else 0  # a held request waits first
        variants, weights = [next(v for v in variants if v.is_primary)], {PRIMARY: 100}
    else:
        backend = None
    if ingress.provider == "gateway-api":
        return [_httproute(owner, ingress, variants, weights, timeout, backend)] if caps.gateway_api else []
    return _nginx_ingresses(owner, ingress, variants, weights, timeout, backend)


def ingress_url(spec: DeepSeekDeploymentSpec) -> str:
    """The public base URL: https when TLS is set, else http; '' without an ingress.

    The path keeps no trailing slash ('/' -> 'https://host'), so clients can append '/v1/...'.
    """
    if spec.ingress is None:
        return ""
    scheme = "https" if spec.ingress.tls else "http"
    return f"{scheme}://{spec.ingress.host}{spec.ingress.path.rstrip('/')}"


def _httproute(
    owner: Owner, ingress: IngressSpec, variants: list[ResolvedVariant], weights: Mapping[str, int], timeout: int,
    backend: str | None = None,
) -> dict[str, Any]:
    """`backend`: the one Service every request goes to (the gateway's), instead of the variant Services."""
    # TLS belongs to the Gateway's listener in the Gateway API, so the route carries none.
    parent_refs = [
        ref.model_dump(by_alias=True, exclude_none=True)
        for ref in (ingress.gateway.parent_refs if ingress.gateway else [])
    ]
    backends = [
        {
            "name": backend or variant_service_name(owner, v.name),
            "port": HTTP_PORT,
            "weight": weights.get(v.name, 0),
        }
        for v in variants
    ]
    return {
        "apiVersion": HTTPROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": metadata(owner, owner.name, component=COMPONENT),
        "spec": {
            "parentRefs": parent_refs,
            "hostnames": [ingress.host],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": ingress.path}}],
                    "backendRefs": backends,
                    # Gateways default to short timeouts (Envoy Gateway: 15s); a generation may run
                    # as long as the worker's own limit.
                    "timeouts": {"request": f"{timeout}s"},
                }
            ],
        },
    }


def _nginx_ingresses(
    owner: Owner, ingress: IngressSpec, variants: list[ResolvedVariant], weights: Mapping[str, int], timeout: int,
    backend: str | None = None,
) -> list[dict[str, Any]]:
    primary = next(v for v in variants if v.is_primary)
    # On the main Ingress only: ingress-nginx applies the main Ingress' proxy settings to the canary.
    proxy = {
        # nginx's 60s default would cut non-streamed generations; the worker enforces its own limit.
        NGINX + "proxy-read-timeout": str(timeout),
        NGINX + "proxy-send-timeout": str(timeout),
        # Server-sent events must reach the client token by token, not when a buffer fills.
        NGINX + "proxy-buffering": "off",
    }
    out = [_nginx_ingress(owner, ingress, owner.name, primary.name, annotations=proxy, tls=True, service=backend)]
    for canary in (v for v in variants if not v.is_primary):
        annotations = {NGINX_CANARY: "true", NGINX_CANARY_WEIGHT: str(weights.get(canary.name, 0))}
        # ingress-nginx takes TLS from the main Ingress of the host; a tls block here would only
        # make cert-manager's ingress-shim issue a second certificate for the same host.
        name = child_name(owner.name, canary.name)
        out.append(_nginx_ingress(owner, ingress, name, canary.name, annotations=annotations, tls=False))
    return out


def _nginx_ingress(
    owner: Owner,
    ingress: IngressSpec,
    name: str,
    variant: str,
    annotations: dict[str, str],
    tls: bool,
    service: str | None = None,
) -> dict[str, Any]:
    meta = metadata(owner, name, variant=variant, component=COMPONENT)
    if annotations:
        meta["annotations"] = annotations
    body: dict[str, Any] = {}
    if ingress.class_name:
        body["ingressClassName"] = ingress.class_name
    if tls and ingress.tls:
        body["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls.secret_name}]
    body["rules"] = [
        {
            "host": ingress.host,
            "http": {
                "paths": [
                    {
                        "path": ingress.path,
                        "pathType": "Prefix",
                        "backend": {
                            "service": {
                                "name": service or variant_service_name(owner, variant),
                                "port": {"number": HTTP_PORT},
                            }
                        },
                    }
                ]
            },
        }
    ]
    return {"apiVersion": INGRESS_API_VERSION, "kind": "Ingress", "metadata": meta, "spec": body}
