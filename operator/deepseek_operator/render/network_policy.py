"""The worker pods' NetworkPolicies (spec.networkPolicy, on by default). Pure.

With the policy enabled every worker pod is default-deny in both directions (policyTypes Ingress and
Egress), and only these connections are allowed (docs/security.md lists them with their tests):
- in, TCP 8000 (the API port): pods of the resource's own namespace, and pods in namespaces matching
  ingressNamespaceSelector (the ingress controller or the gateway). The namespace is the tenancy
  boundary in this design: in-cluster clients call the stable Service, so same-namespace access is
  always on. With no selector named that is all there is; integrations.py then says so in the
  NetworkPolicyReady condition when an ingress or a ServiceMonitor would need more.
- in, TCP 8000 from namespaces matching monitoringNamespaceSelector: Prometheus scraping /metrics.
  The worker serves /metrics on its API port (one port), so Prometheus' namespace can reach the API
  routes too; they still need credentials when spec.auth is set (docs/security.md, "Gaps").
- out, UDP and TCP 53 to the cluster DNS (pods labelled k8s-app=kube-dns in kube-system).
- out, TCP 443 to any address, only for the variants whose weights come from the Hugging Face hub (a
  second policy selecting just those pods): the hub and its CDN have no stable addresses, and "outside
  the cluster" is not expressible portably (pod and service CIDRs differ per cluster). PVC-sourced
  variants get no such egress.
An empty selector omits its peer: an empty namespaceSelector would match every namespace and silently
open the port to the whole cluster. Kubelet probes come from the node, which CNIs allow regardless of
policies.
"""

from __future__ import annotations

import copy
from typing import Any

from deepseek_operator.api import DeepSeekDeploymentSpec, resolve_variants
from deepseek_operator.render.common import (
    HTTP_PORT,
    LABEL_VARIANT,
    METRICS_PORT,
    Owner,
    child_name,
    metadata,
    selector_labels,
)

COMPONENT = "network-policy"
DNS_PORT = 53
HTTPS_PORT = 443
# CoreDNS/kube-dns keep the k8s-app=kube-dns label on kubeadm, GKE, EKS and AKS clusters.
CLUSTER_DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
ANYWHERE = [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]


def model_hub_policy_name(owner: Owner) -> str:
    """The egress policy of the variants that download weights."""
    return child_name(owner.name, "model-hub")


def _port(number: int, protocol: str = "TCP") -> dict[str, Any]:
    return {"protocol": protocol, "port": number}


def _namespaces(selector: dict[str, str]) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": dict(selector)}}


def render_network_policy(owner: Owner, spec: DeepSeekDeploymentSpec) -> list[dict[str, Any]]:
    """The default-deny policy over every variant's pods, plus the model-hub egress policy when a
    variant downloads from the hub; [] when spec.networkPolicy.enabled is false."""
    policy = spec.network_policy
    if not policy.enabled:
        return []
    api_peers = [_namespaces(policy.ingress_namespace_selector)] if policy.ingress_namespace_selector else []
    # A bare podSelector (no namespaceSelector) means "pods of the policy's own namespace". The port
    # number, not the name "http": a numeric port cannot silently stop matching if a container port
    # is ever renamed.
    ingress: list[dict[str, Any]] = [{"from": [*api_peers, {"podSelector": {}}], "ports": [_port(HTTP_PORT)]}]
    if policy.monitoring_namespace_selector:
        ingress.append({"from": [_namespaces(policy.monitoring_namespace_selector)], "ports": [_port(METRICS_PORT)]})
    children: list[dict[str, Any]] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(owner, owner.name, component=COMPONENT),
            "spec": {
                "podSelector": {"matchLabels": selector_labels(owner)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": ingress,
                "egress": [{"to": [copy.deepcopy(CLUSTER_DNS)], "ports": [_port(DNS_PORT, "UDP"), _port(DNS_PORT)]}],
            },
        }
    ]
    downloading = [v.name for v in resolve_variants(spec) if v.model.source.hugging_face is not None]
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
                    "egress": [{"to": copy.deepcopy(ANYWHERE), "ports": [_port(HTTPS_PORT)]}],
                },
            }
        )
    return children
