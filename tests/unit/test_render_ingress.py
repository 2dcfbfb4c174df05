"""Table tests of render/ingress.py: HTTPRoute and ingress-nginx Ingress pair, schema-validated."""

from __future__ import annotations

from typing import Any

import pytest
from upstream_crds import HTTPROUTE, kube_validate, validate

from deepseek_operator.api import DeepSeekDeploymentSpec, parse_spec
from deepseek_operator.render.common import Capabilities, Owner
from deepseek_operator.render.ingress import ingress_url, render_ingress

OWNER = Owner(name="chat", namespace="llm", uid="uid-1")
GATEWAY = Capabilities(gateway_api=True)
NO_GATEWAY = Capabilities()


def _spec(ingress: dict[str, Any] | None, canaries: int = 0) -> DeepSeekDeploymentSpec:
    raw: dict[str, Any] = {"image": "img:1", "model": {"id": "m"}}
    if ingress is not None:
        raw["ingress"] = ingress
    raw["variants"] = [{"name": f"canary{i or ''}", "weight": 10} for i in range(canaries)]
    return parse_spec(raw)


NGINX = {"provider": "ingress-nginx", "host": "chat.example.com"}
NGINX_FULL = {**NGINX, "className": "nginx", "path": "/api", "tls": {"secretName": "chat-tls"}}
GW = {
    "provider": "gateway-api",
    "host": "chat.example.com",
    "gateway": {"parentRefs": [{"name": "public", "namespace": "gw", "sectionName": "https"}]},
}


def _backends(route: dict[str, Any]) -> list[tuple[str, int, int]]:
    refs = route["spec"]["rules"][0]["backendRefs"]
    return [(r["name"], r["port"], r["weight"]) for r in refs]


# name -> (ingress spec, canaries, weights, caps, expected [(kind, name)])
KINDS = {
    "no ingress": (None, 0, {"primary": 100}, GATEWAY, []),
    "nginx, primary only": (NGINX, 0, {"primary": 100}, NO_GATEWAY, [("Ingress", "chat")]),
    "nginx with canary": (
        NGINX, 1, {"primary": 90, "canary": 10}, NO_GATEWAY, [("Ingress", "chat"), ("Ingress", "chat-canary")]
    ),
    "gateway api present": (GW, 1, {"primary": 90, "canary": 10}, GATEWAY, [("HTTPRoute", "chat")]),
    "gateway api missing: nothing, the reconcile sets a condition": (
        GW, 1, {"primary": 100, "canary": 0}, NO_GATEWAY, []
    ),
}


@pytest.mark.parametrize("ingress,canaries,weights,caps,expected", list(KINDS.values()), ids=list(KINDS))
def test_rendered_kinds(
    ingress: dict[str, Any] | None,
    canaries: int,
    weights: dict[str, int],
    caps: Capabilities,
    expected: list[tuple[str, str]],
) -> None:
    objs = render_ingress(OWNER, _spec(ingress, canaries), weights, caps)
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == expected
    for obj in objs:
        assert obj["metadata"]["namespace"] == "llm"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        if obj["kind"] == "Ingress":
            kube_validate(obj)
        else:
            validate(obj, HTTPROUTE)


# name -> (canaries, weights, expected backends)
ROUTE_WEIGHTS = {
    "primary only": (0, {"primary": 100}, [("chat-primary", 8000, 100)]),
    "ready canary": (1, {"primary": 90, "canary": 10}, [("chat-primary", 8000, 90), ("chat-canary", 8000, 10)]),
    "unready canary stays listed with weight 0": (
        1, {"primary": 100, "canary": 0}, [("chat-primary", 8000, 100), ("chat-canary", 8000, 0)]
    ),
    "two canaries": (
        2,
        {"primary": 80, "canary": 10, "canary1": 10},
        [("chat-primary", 8000, 80), ("chat-canary", 8000, 10), ("chat-canary1", 8000, 10)],
    ),
    "variant missing from weights gets 0": (
        1, {"primary": 100}, [("chat-primary", 8000, 100), ("chat-canary", 8000, 0)]
    ),
}


@pytest.mark.parametrize("canaries,weights,expected", list(ROUTE_WEIGHTS.values()), ids=list(ROUTE_WEIGHTS))
def test_httproute_backends(canaries: int, weights: dict[str, int], expected: list[tuple[str, int, int]]) -> None:
    (route,) = render_ingress(OWNER, _spec(GW, canaries), weights, GATEWAY)
    assert _backends(route) == expected
    validate(route, HTTPROUTE)


def test_httproute_shape() -> None:
    (route,) = render_ingress(OWNER, _spec({**GW, "path": "/v1"}), {"primary": 100}, GATEWAY)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["hostnames"] == ["chat.example.com"]
    assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "gw", "sectionName": "https"}]
    assert route["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1"}}]
    assert route["spec"]["rules"][0]["timeouts"] == {"request": "600s"}


def test_proxy_timeouts_follow_the_request_timeout() -> None:
    spec = parse_spec(
        {"image": "i", "model": {"id": "m"}, "ingress": GW, "serving": {"requestTimeoutSeconds": 90}}
    )
    (route,) = render_ingress(OWNER, spec, {"primary": 100}, GATEWAY)
    assert route["spec"]["rules"][0]["timeouts"] == {"request": "90s"}
    validate(route, HTTPROUTE)
    nginx_ingress = parse_spec({"image": "i", "model": {"id": "m"}, "ingress": NGINX}).ingress
    nginx = spec.model_copy(update={"ingress": nginx_ingress})
    (ingress,) = render_ingress(OWNER, nginx, {"primary": 100}, NO_GATEWAY)
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "90"


def test_nginx_primary_ingress_fields() -> None:
    primary, canary = render_ingress(OWNER, _spec(NGINX_FULL, 1), {"primary": 90, "canary": 10}, NO_GATEWAY)
    assert primary["apiVersion"] == "networking.k8s.io/v1"
    assert primary["spec"]["ingressClassName"] == "nginx"
    assert primary["spec"]["tls"] == [{"hosts": ["chat.example.com"], "secretName": "chat-tls"}]
    (path,) = primary["spec"]["rules"][0]["http"]["paths"]
    assert path == {
        "path": "/api",
        "pathType": "Prefix",
        "backend": {"service": {"name": "chat-primary", "port": {"number": 8000}}},
    }
    assert primary["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "600",
        "nginx.ingress.kubernetes.io/proxy-send-timeout": "600",
        "nginx.ingress.kubernetes.io/proxy-buffering": "off",
    }
    # The canary shares host, path and class; TLS stays on the primary only.
    assert canary["spec"]["ingressClassName"] == "nginx"
    assert "tls" not in canary["spec"]
    assert canary["spec"]["rules"][0]["host"] == "chat.example.com"
    canary_backend = canary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert canary_backend == {"name": "chat-canary", "port": {"number": 8000}}


@pytest.mark.parametrize(
    "weights,expected",
    [({"primary": 90, "canary": 10}, "10"), ({"primary": 100, "canary": 0}, "0"), ({"primary": 100}, "0")],
    ids=["ready canary", "unready canary", "missing weight"],
)
def test_nginx_canary_annotations(weights: dict[str, int], expected: str) -> None:
    _, canary = render_ingress(OWNER, _spec(NGINX, 1), weights, NO_GATEWAY)
    assert canary["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": expected,
    }


def test_nginx_without_class_or_tls_omits_them() -> None:
    (primary,) = render_ingress(OWNER, _spec(NGINX), {"primary": 100}, NO_GATEWAY)
    assert "ingressClassName" not in primary["spec"]
    assert "tls" not in primary["spec"]


def test_render_is_pure_and_returns_fresh_dicts() -> None:
    spec = _spec(GW, 1)
    first = render_ingress(OWNER, spec, {"primary": 90, "canary": 10}, GATEWAY)
    first[0]["spec"]["hostnames"].append("mutated")
    assert render_ingress(OWNER, spec, {"primary": 90, "canary": 10}, GATEWAY) != first


URLS = {
    "no ingress": (None, ""),
    "http root": (NGINX, "http://chat.example.com"),
    "https with path": (NGINX_FULL, "https://chat.example.com/api"),
    "trailing slash dropped": ({**NGINX, "path": "/llm/"}, "http://chat.example.com/llm"),
}


@pytest.mark.parametrize("ingress,expected", list(URLS.values()), ids=list(URLS))
def test_ingress_url(ingress: dict[str, Any] | None, expected: str) -> None:
    assert ingress_url(_spec(ingress)) == expected


def test_validators_catch_mistakes() -> None:
    """The schema checks above can fail: a misspelt field and a bad type are refused."""
    (route,) = render_ingress(OWNER, _spec(GW), {"primary": 100}, GATEWAY)
    route["spec"]["hostname"] = route["spec"].pop("hostnames")
    with pytest.raises(AssertionError, match="hostname"):
        validate(route, HTTPROUTE)
    (ingress,) = render_ingress(OWNER, _spec(NGINX), {"primary": 100}, NO_GATEWAY)
    ingress["spec"]["rules"][0]["http"]["paths"][0]["pathTyp"] = "Prefix"
    with pytest.raises(AssertionError, match="pathTyp"):
        kube_validate(ingress)
