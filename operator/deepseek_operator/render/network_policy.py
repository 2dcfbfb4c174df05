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


def _ingress(policy: NetworkPolicySpec) -> list[dict[str, Any]]:
    # The port number, not the name "http": a numeric port cannot silently stop matching if a
    # container port is ever renamed.
    peers = api_peers(policy)
    rules = [{"from": peers, "ports": [_port(HTTP_PORT)]}] if peers else []
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
    ingress = _ingress(policy)
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
