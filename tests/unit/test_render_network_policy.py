"""Table tests of render/network_policy.py: kubernetes-validate --strict, and the real apiserver.

Every case's policies are also sent to the real kube-apiserver (deepseek_sandbox/real_cluster.py, `make cluster`)
as a server-side dry run in a namespace of this module's own: it must accept them and return them
unchanged (no defaults added, so the operator's apply of them is idle on the next reconcile).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from upstream_crds import kube_validate

from deepseek_operator.api import parse_spec
from deepseek_operator.render.common import Owner
from deepseek_operator.render.network_policy import render_network_policy
from deepseek_sandbox.real_cluster import RealCluster

OWNER = Owner(name="chat", namespace="llm", uid="uid-1")
INGRESS_NS = {"kubernetes.io/metadata.name": "ingress-nginx"}
MONITORING_NS = {"kubernetes.io/metadata.name": "monitoring"}
SAME_NAMESPACE: dict[str, Any] = {"podSelector": {}}
API_PORT = [{"protocol": "TCP", "port": 8000}]
METRICS_PORT = [{"protocol": "TCP", "port": 9090}]
DNS = {
    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}
HUB = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}],
       "ports": [{"protocol": "TCP", "port": 443}]}
PVC = {"pvc": {"claimName": "models"}}
HF_TOKEN = {"huggingFace": {"tokenSecretRef": {"name": "hf"}}}


def _render(extra: dict[str, Any]) -> list[dict[str, Any]]:
    raw: dict[str, Any] = {"image": "img:1", "model": {"id": "m"}, **extra}
    return render_network_policy(OWNER, parse_spec(raw))


def _by_name(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs}


# name -> (spec fields, expected ingress rules of the default-deny policy or None for no policies,
#          variants allowed to the model hub or None for no hub policy)
CASES: dict[str, tuple[dict[str, Any], list[dict[str, Any]] | None, list[str] | None]] = {
    "omitted: on by default, same namespace only, hub egress": (
        {}, [{"from": [SAME_NAMESPACE], "ports": API_PORT}], ["primary"]),
    "disabled: no policy at all": (
        {"networkPolicy": {"enabled": False, "ingressNamespaceSelector": INGRESS_NS}}, None, None),
    "ingress and monitoring namespaces": (
        {"networkPolicy": {"ingressNamespaceSelector": INGRESS_NS, "monitoringNamespaceSelector": MONITORING_NS}},
        [{"from": [{"namespaceSelector": {"matchLabels": INGRESS_NS}}, SAME_NAMESPACE], "ports": API_PORT},
         {"from": [{"namespaceSelector": {"matchLabels": MONITORING_NS}}], "ports": METRICS_PORT}],
        ["primary"]),
    "monitoring only: empty ingress selector is omitted, never match-all": (
        {"networkPolicy": {"enabled": True, "monitoringNamespaceSelector": MONITORING_NS}},
        [{"from": [SAME_NAMESPACE], "ports": API_PORT},
         {"from": [{"namespaceSelector": {"matchLabels": MONITORING_NS}}], "ports": METRICS_PORT}],
        ["primary"]),
    "pvc source: no egress beyond DNS": (
        {"model": {"id": "m", "source": PVC}}, [{"from": [SAME_NAMESPACE], "ports": API_PORT}], None),
    "pvc primary, hub canary: only the canary may download": (
        {"model": {"id": "m", "source": PVC},
         "variants": [{"name": "canary", "model": {"source": HF_TOKEN}}, {"name": "pvc2"}]},
        [{"from": [SAME_NAMESPACE], "ports": API_PORT}], ["canary"]),
    "hub primary, canaries inherit it, one on a pvc": (
        {"variants": [{"name": "a"}, {"name": "b", "model": {"source": PVC}}]},
        [{"from": [SAME_NAMESPACE], "ports": API_PORT}], ["primary", "a"]),
    "a cached canary loads from its claim: no hub egress for it": (
        {"variants": [{"name": "cached", "model": {"cache": {"enabled": True, "size": "40Gi"}}}]},
        [{"from": [SAME_NAMESPACE], "ports": API_PORT}], ["primary"]),
    # networkPolicy.clients (issue 19 item 6): in-namespace access to the API port is a choice.
    "clients []: the ingress namespace only, no pod of the namespace": (
        {"networkPolicy": {"ingressNamespaceSelector": INGRESS_NS, "clients": []}},
        [{"from": [{"namespaceSelector": {"matchLabels": INGRESS_NS}}], "ports": API_PORT}], ["primary"]),
    "clients [] and no ingress selector: no rule for the API port at all (never a from-less rule)": (
        {"networkPolicy": {"clients": []}}, [], ["primary"]),
    "clients by pod labels, namespace labels, and namespace expressions": (
        {"networkPolicy": {"ingressNamespaceSelector": INGRESS_NS, "clients": [
            {"podSelector": {"matchLabels": {"app": "chat-ui"}}},
            {"namespaceSelector": {"matchLabels": {"team": "ml"}}, "podSelector": {}},
            {"namespaceSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["batch"]}]},
             "podSelector": {"matchExpressions": [{"key": "role", "operator": "Exists"}]}}]}},
        [{"from": [{"namespaceSelector": {"matchLabels": INGRESS_NS}},
                   {"podSelector": {"matchLabels": {"app": "chat-ui"}}},
                   {"namespaceSelector": {"matchLabels": {"team": "ml"}}, "podSelector": {}},
                   {"namespaceSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["batch"]}]},
                    "podSelector": {"matchExpressions": [{"key": "role", "operator": "Exists"}]}}],
          "ports": API_PORT}], ["primary"]),
}


@pytest.mark.parametrize(("extra", "ingress", "downloading"), list(CASES.values()), ids=list(CASES))
def test_network_policy(extra: dict[str, Any], ingress: list[dict[str, Any]] | None,
                        downloading: list[str] | None) -> None:
    objs = _render(extra)
    if ingress is None:
        assert objs == []
        return
    for obj in objs:
        kube_validate(obj)
        assert obj["metadata"]["namespace"] == "llm"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        assert obj["metadata"]["labels"]["app.kubernetes.io/component"] == "network-policy"
    policies = _by_name(objs)
    assert sorted(policies) == sorted(["chat"] + (["chat-model-hub"] if downloading else []))
    deny = policies["chat"]["spec"]
    assert deny["podSelector"] == {"matchLabels": {"deepseek.ai/deployment": "chat"}}, "every variant's pods"
    assert deny["policyTypes"] == ["Ingress", "Egress"], "default-deny both ways"
    assert deny.get("ingress", []) == ingress
    assert deny["egress"] == [DNS], "DNS only (the hub policy adds 443 where needed)"
    if downloading:
        hub = policies["chat-model-hub"]["spec"]
        assert hub["podSelector"] == {
            "matchLabels": {"deepseek.ai/deployment": "chat"},
            "matchExpressions": [{"key": "deepseek.ai/variant", "operator": "In", "values": downloading}]}
        assert hub["policyTypes"] == ["Egress"], "adds egress only: ingress stays as the default-deny policy says"
        assert hub["egress"] == [HUB]
        assert "ingress" not in hub


def test_no_empty_namespace_selector_ever() -> None:
    """An empty namespaceSelector matches every namespace: it would open the port to the whole cluster."""
    objs = _render({"networkPolicy": {"enabled": True, "ingressNamespaceSelector": {},
                                      "monitoringNamespaceSelector": {}}})
    for obj in objs:
        for rule in obj["spec"].get("ingress", []) + obj["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if "namespaceSelector" in peer:
                    assert peer["namespaceSelector"]["matchLabels"], peer


def test_prometheus_reaches_the_metrics_port_only_and_clients_the_api_port_only() -> None:
    """Two ports (8000: API and health; 9090: /metrics alone): each opens to its own peers."""
    objs = _render({"networkPolicy": {"ingressNamespaceSelector": INGRESS_NS,
                                      "monitoringNamespaceSelector": MONITORING_NS}})
    rules = [rule for o in objs for rule in o["spec"].get("ingress", [])]
    by_port = {p["port"]: [peer for r in rules if p in r["ports"] for peer in r["from"]]
               for r in rules for p in r["ports"]}
    assert set(by_port) == {8000, 9090}
    assert by_port[9090] == [{"namespaceSelector": {"matchLabels": MONITORING_NS}}]
    assert {"namespaceSelector": {"matchLabels": MONITORING_NS}} not in by_port[8000]


def test_selectors_are_copied_not_shared() -> None:
    spec = parse_spec({"image": "i", "model": {"id": "m"}, "networkPolicy": {"ingressNamespaceSelector": INGRESS_NS}})
    first = render_network_policy(OWNER, spec)
    first[0]["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["x"] = "y"
    first[0]["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"]["x"] = "y"
    first[1]["spec"]["egress"][0]["to"].clear()
    assert spec.network_policy.ingress_namespace_selector == INGRESS_NS
    assert render_network_policy(OWNER, spec)[0]["spec"]["egress"] == [DNS]
    assert render_network_policy(OWNER, spec)[1]["spec"]["egress"] == [HUB]


# name -> (spec fields, the model-hub policy's egress rules). Issue 18 item 13: the endpoint's own port;
# issue 19 item 6: narrowed to hubEgress.cidrs, or to a proxy named by its address.
def _to(*cidrs: str) -> list[dict[str, Any]]:
    return [{"ipBlock": {"cidr": c}} for c in cidrs]


def _tcp(port: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port}]


def _hf(endpoint: str) -> dict[str, Any]:
    return {"model": {"id": "m", "source": {"huggingFace": {"endpoint": endpoint}}}}


ANY = HUB["to"]
HUB_CASES: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    "huggingface.co: 443 anywhere": ({}, [HUB]),
    "https mirror without a port: 443": (_hf("https://hf-mirror.com/"), [HUB]),
    "http in-cluster mirror on 8080: its own port": (
        _hf("http://hf-mirror.models.svc.cluster.local:8080"), [{"to": ANY, "ports": _tcp(8080)}]),
    "http mirror without a port: 80": (_hf("http://mirror.example.com"), [{"to": ANY, "ports": _tcp(80)}]),
    "https mirror on 8443": (_hf("https://mirror.example.com:8443/hf"), [{"to": ANY, "ports": _tcp(8443)}]),
    "proxy by address: that address, its port": (
        {"env": [{"name": "HTTPS_PROXY", "value": "http://10.0.0.5:3128"}]},
        [{"to": _to("10.0.0.5/32"), "ports": _tcp(3128)}]),
    "proxy by IPv6 address, lower-case variable, no scheme": (
        {"env": [{"name": "https_proxy", "value": "[fd00::5]:3128"}]},
        [{"to": _to("fd00::5/128"), "ports": _tcp(3128)}]),
    "proxy by host name: its port, any address (a policy holds no names)": (
        {"env": [{"name": "HTTPS_PROXY", "value": "http://proxy.corp.example:3128"}]},
        [{"to": ANY, "ports": _tcp(3128)}]),
    "proxy by host name narrowed by hubEgress": (
        {"env": [{"name": "HTTPS_PROXY", "value": "http://proxy.corp.example:3128"}],
         "networkPolicy": {"hubEgress": {"cidrs": ["10.8.0.0/24"]}}},
        [{"to": _to("10.8.0.0/24"), "ports": _tcp(3128)}]),
    "hubEgress alone: those CIDRs on 443": (
        {"networkPolicy": {"hubEgress": {"cidrs": ["192.0.2.0/24", "2001:db8::/32"]}}},
        [{"to": _to("192.0.2.0/24", "2001:db8::/32"), "ports": _tcp(443)}]),
    "HTTP_PROXY does not apply to an https endpoint": (
        {"env": [{"name": "HTTP_PROXY", "value": "http://10.0.0.5:3128"}]}, [HUB]),
    "proxy from a Secret is unknown here: the endpoint's port": (
        {"env": [{"name": "HTTPS_PROXY", "valueFrom": {"secretKeyRef": {"name": "proxy", "key": "url"}}}]}, [HUB]),
    "a canary with its own mirror and proxy: one rule each": (
        {"variants": [{"name": "c", "model": {"source": {"huggingFace": {"endpoint": "http://m.example:8080"}}},
                       "env": [{"name": "HTTP_PROXY", "value": "http://10.0.0.9:8888"}]}]},
        [HUB, {"to": _to("10.0.0.9/32"), "ports": _tcp(8888)}]),
}


@pytest.mark.parametrize(("extra", "egress"), list(HUB_CASES.values()), ids=list(HUB_CASES))
def test_hub_egress_opens_the_endpoints_or_proxys_port_only(extra: dict[str, Any],
                                                            egress: list[dict[str, Any]]) -> None:
    policies = _by_name(_render(extra))
    for obj in policies.values():
        kube_validate(obj)
    assert policies["chat-model-hub"]["spec"]["egress"] == egress
    assert policies["chat"]["spec"]["egress"] == [DNS], "the default-deny policy stays DNS-only"


# -- the real apiserver ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def namespace(real_cluster: RealCluster) -> Iterator[str]:
    """A namespace of this module's own."""
    with real_cluster.scratch_namespace("netpol-render") as name:
        yield name


REAL = {name: c[0] for name, c in CASES.items() if c[1] is not None} | {name: c[0] for name, c in HUB_CASES.items()}


@pytest.mark.parametrize("extra", list(REAL.values()), ids=list(REAL))
def test_the_real_apiserver_accepts_the_policies_unchanged(real_cluster: RealCluster, namespace: str,
                                                           extra: dict[str, Any]) -> None:
    path = real_cluster.resource("networkpolicies.networking.k8s.io").path(namespace)
    for obj in _render(extra):
        obj["metadata"]["namespace"] = namespace
        # A dry run admits an ownerReference to a missing owner; the garbage collector never sees it.
        response = real_cluster.http.post(path, json=obj, params={"dryRun": "All", "fieldValidation": "Strict"})
        assert response.status_code == 201, response.text
        assert "warning" not in response.headers, response.headers["warning"]
        assert response.json()["spec"] == obj["spec"], "the apiserver added defaults: the next apply would write"
