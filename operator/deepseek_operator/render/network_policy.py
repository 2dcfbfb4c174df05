"""The worker pods' NetworkPolicies (spec.networkPolicy, on by default). Pure.

With the policy enabled every worker pod is default-deny in both directions (policyTypes Ingress and
Egress), and only these connections are allowed (docs/security.md lists them with their tests):
- in, TCP 8000 (the API port): pods in namespaces matching ingressNamespaceSelector (the ingress
  controller or the gateway), and the in-cluster clients networkPolicy.clients names. Unset, that is
  every pod of the resource's own namespace (the default, as before `clients` existed: a narrower
  default would cut off in-cluster callers silently); [] admits none; else only the pods its
  selectors match. With no peer at all the policy has no ingress rule for the port (a rule without
  `from` would admit every source). integrations.py says in the NetworkPolicyReady condition when an
  ingress or a ServiceMonitor would need a selector that is not set.
- in, TCP 9090 (the worker's metrics-only listener) from namespaces matching
  monitoringNamespaceSelector: Prometheus scraping /metrics, and nothing else of the worker.
- with spec.gateway enabled, the gateway's pods instead of the API peers above, on TCP 8000 and 9090
  (it ranks the workers by the queue gauge it reads there); Prometheus keeps 9090.
- out, UDP and TCP 53 to the cluster DNS (pods labelled k8s-app=kube-dns in kube-system).
- out, to the model hub, only for the variants that download from the Hugging Face hub themselves
  (a second policy selecting just those pods; variants on a pvc or a model cache load from a volume
  and get none): the endpoint's port, or its proxy's, to hubEgress.cidrs or any address
  (render/hub_egress.py). A NetworkPolicy holds no host names, and "outside the cluster" is not
  expressible portably (pod and service CIDRs differ per cluster).
An empty namespace selector is never rendered: it would match every namespace and silently open the
port to the whole cluster (the CRD refuses one in clients; an empty ingress/monitoring selector is
omitted). Kubelet probes come from the node, which CNIs allow regardless of policies.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from deepseek_operator.affinity import LabelSelector
from deepseek_operator.api import (
    ClientPeer,
    DeepSeekDeploymentSpec,
    NetworkPolicySpec,
    ResolvedVariant,
    resolve_variants,
)
from deepseek_operator.render.common import (
    HTTP_PORT,
    LABEL_VARIANT,
    METRICS_PORT,
    Owner,
    child_name,
    metadata,
    selector_labels,
)
from deepseek_operator.render.gateway import gateway_name, gateway_selector
from deepseek_operator.render.hub_egress import destination

COMPONENT = "network-policy"
DNS_PORT = 53
# CoreDNS/kube-dns keep the k8s-app=kube-dns label on kubeadm, GKE, EKS and AKS clusters.
CLUSTER_DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
ANYWHERE = [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]
# A bare podSelector (no namespaceSelector) means "pods of the policy's own namespace".
SAME_NAMESPACE: dict[str, Any] = {"podSelector": {}}
# KEDA's operator polls the gateway's /scaling/<variant> (render/autoscaling.py) from its namespace.
KEDA_NAMESPACE = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}
# What the gateway reaches on the workers: the API port it forwards to, and the metrics port it reads
# their queue gauge on (render/gateway.py, discovery.metricsPort).
WORKER_PORTS_FOR_GATEWAY = (HTTP_PORT, METRICS_PORT)
# The gateway reads its DeepSeekDeployment's status from the apiserver: its Service port or, after the
# Service's address translation, the apiserver's own (a NetworkPolicy cannot name the apiserver).
APISERVER_PORTS = (443, 6443)


def model_hub_policy_name(owner: Owner) -> str:
    """The egress policy of the variants that download weights."""
    return child_name(owner.name, "model-hub")


def _port(number: int, protocol: str = "TCP") -> dict[str, Any]:
    return {"protocol": protocol, "port": number}


def _namespaces(selector: dict[str, str]) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": dict(selector)}}


def _selector(selector: LabelSelector) -> dict[str, Any]:
    """A metav1.LabelSelector as the apiserver returns it: empty parts left out ({} selects everything)."""
    return selector.model_dump(by_alias=True, exclude_defaults=True)


def _client(peer: ClientPeer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = _selector(peer.namespace_selector)
    if peer.pod_selector is not None:
        out["podSelector"] = _selector(peer.pod_selector)
    return out


def api_peers(policy: NetworkPolicySpec) -> list[dict[str, Any]]:
    """Who may reach the API port: the ingress namespaces, then the in-cluster clients (unset: the
    resource's whole namespace)."""
    peers = [_namespaces(policy.ingress_namespace_selector)] if policy.ingress_namespace_selector else []
    if policy.clients is None:
        return [*peers, copy.deepcopy(SAME_NAMESPACE)]
    return peers + [_client(c) for c in policy.clients]


def _ingress(policy: NetworkPolicySpec, peers: list[dict[str, Any]],
             ports: tuple[int, ...] = (HTTP_PORT,)) -> list[dict[str, Any]]:
    """`peers` on `ports` (api_peers on the API port, or the gateway's pods on WORKER_PORTS_FOR_GATEWAY),
    Prometheus on the metrics port."""
    # The port number, not the name "http": a numeric port cannot silently stop matching if a
    # container port is ever renamed.
    rules = [{"from": peers, "ports": [_port(p) for p in ports]}] if peers else []
    if policy.monitoring_namespace_selector:
        rules.append({"from": [_namespaces(policy.monitoring_namespace_selector)], "ports": [_port(METRICS_PORT)]})
    return rules


def hub_egress(spec: DeepSeekDeploymentSpec,
               variants: Sequence[ResolvedVariant] | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """(variants that download from the hub, their egress rules: one per distinct destination);
    `variants`: resolve_variants(spec), when the caller resolved them already (desired.py)."""
    cidrs = tuple(spec.network_policy.hub_egress.cidrs) if spec.network_policy.hub_egress else ()
    names: list[str] = []
    rules: list[dict[str, Any]] = []
    for variant in resolve_variants(spec) if variants is None else variants:
        if variant.model.source.hugging_face is None or variant.model.cached:
            continue  # a pvc or a model cache: the weights are on a volume (HF_HUB_OFFLINE=1)
        names.append(variant.name)
        dest = destination(variant, cidrs)
        to = [{"ipBlock": {"cidr": c}} for c in dest.cidrs] if dest.cidrs else copy.deepcopy(ANYWHERE)
        rule = {"to": to, "ports": [_port(dest.port)]}
        if rule not in rules:
            rules.append(rule)
    return names, rules


def render_network_policy(owner: Owner, spec: DeepSeekDeploymentSpec,
                          variants: Sequence[ResolvedVariant] | None = None) -> list[dict[str, Any]]:
    """The default-deny policy over every variant's pods, plus the model-hub egress policy when a
    variant downloads from the hub; [] when spec.networkPolicy.enabled is false."""
    policy = spec.network_policy
    if not policy.enabled:
        return []
    deny: dict[str, Any] = {
        "podSelector": {"matchLabels": selector_labels(owner)},
        "policyTypes": ["Ingress", "Egress"],
    }
    # Behind the gateway the workers check no credential: only the gateway reaches their API port (and
    # their metrics port, for the queue gauge it ranks them by).
    if spec.gateway_enabled:
        gateway = [{"podSelector": {"matchLabels": gateway_selector(owner)}}]
        ingress = _ingress(policy, gateway, WORKER_PORTS_FOR_GATEWAY)
    else:
        ingress = _ingress(policy, api_peers(policy))
    if ingress:  # omitted, not []: the apiserver drops an empty list, and the next apply would differ
        deny["ingress"] = ingress
    deny["egress"] = [{"to": [copy.deepcopy(CLUSTER_DNS)], "ports": [_port(DNS_PORT, "UDP"), _port(DNS_PORT)]}]
    children: list[dict[str, Any]] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(owner, owner.name, component=COMPONENT),
            "spec": deny,
        }
    ]
    children += render_gateway_policy(owner, spec, variants)
    downloading, egress = hub_egress(spec, variants)
    if downloading:
        children.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": metadata(owner, model_hub_policy_name(owner), component=COMPONENT),
                "spec": {
                    "podSelector": {
                        "matchLabels": selector_labels(owner),
                        "matchExpressions": [{"key": LABEL_VARIANT, "operator": "In", "values": downloading}],
                    },
                    "policyTypes": ["Egress"],
                    "egress": egress,
                },
            }
        )
    return children


def render_gateway_policy(owner: Owner, spec: DeepSeekDeploymentSpec,
                          variants: Sequence[ResolvedVariant] | None = None) -> list[dict[str, Any]]:
    """The gateway pods' policy (spec.gateway.enabled; render/gateway.py), default-deny both ways: in, the
    API port from the clients the workers would admit (api_peers) and from KEDA's namespace (its
    /scaling endpoint) when a variant autoscales, the metrics port from monitoringNamespaceSelector;
    out, DNS, the workers' API and metrics ports (their queue gauge), the apiserver (the status held
    requests report) and, with spec.fallback, the hosted API's port anywhere."""
    if not spec.gateway_enabled:
        return []
    policy = spec.network_policy
    peers = api_peers(policy)
    scaled = spec.autoscaling is not None or any(v.autoscaling is not None for v in spec.variants)
    ingress = _ingress(policy, peers + ([copy.deepcopy(KEDA_NAMESPACE)] if scaled else []))
    egress: list[dict[str, Any]] = [
        {"to": [copy.deepcopy(CLUSTER_DNS)], "ports": [_port(DNS_PORT, "UDP"), _port(DNS_PORT)]},
        {"to": [{"podSelector": {"matchLabels": selector_labels(owner)}}],
         "ports": [_port(p) for p in WORKER_PORTS_FOR_GATEWAY]},
        {"to": copy.deepcopy(ANYWHERE), "ports": [_port(p) for p in APISERVER_PORTS]},
    ]
    if spec.fallback is not None:
        port = fallback_port(spec.fallback.base_url)
        if port not in APISERVER_PORTS:
            egress.append({"to": copy.deepcopy(ANYWHERE), "ports": [_port(port)]})
    body: dict[str, Any] = {"podSelector": {"matchLabels": gateway_selector(owner)},
                            "policyTypes": ["Ingress", "Egress"]}
    if ingress:
        body["ingress"] = ingress
    body["egress"] = egress
    return [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": metadata(owner, gateway_name(owner), component=COMPONENT), "spec": body}]


def fallback_port(base_url: str) -> int:
    """The hosted API's port: the URL's, else 443 for https and 80 for http."""
    parsed = urlsplit(base_url)
    return parsed.port or (443 if parsed.scheme == "https" else 80)
