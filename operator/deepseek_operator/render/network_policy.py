"""The worker pods' NetworkPolicy (spec.networkPolicy). Pure.

Who may connect to a worker's port 8000 when the policy is enabled (docs/observability.md and
docs/traffic.md explain why):
- pods in namespaces matching ingressNamespaceSelector: the ingress controller or gateway;
- pods in namespaces matching monitoringNamespaceSelector: Prometheus scraping /metrics;
- every pod of the resource's own namespace: in-cluster clients calling the stable Service. The
  namespace is the tenancy boundary in this design, and NetworkPolicies only ever add allowances,
  so a user who needs tighter rules than this cannot get them by adding a second policy; that is
  why same-namespace access is always on rather than a knob that would suggest otherwise.
An empty selector omits its peer: an empty namespaceSelector would match every namespace and
silently turn the policy off. Egress is untouched (workers download weights from the hub), and
kubelet probes come from the node, which CNIs allow regardless of ingress policies.
"""

from __future__ import annotations

from typing import Any

from deepseek_operator.api import DeepSeekDeploymentSpec
from deepseek_operator.render.common import HTTP_PORT, Owner, metadata, selector_labels

COMPONENT = "network-policy"


def render_network_policy(owner: Owner, spec: DeepSeekDeploymentSpec) -> list[dict[str, Any]]:
    """One NetworkPolicy named like the owner over every variant's pods; [] unless enabled."""
    policy = spec.network_policy
    if not policy.enabled:
        return []
    peers: list[dict[str, Any]] = [
        {"namespaceSelector": {"matchLabels": dict(selector)}}
        for selector in (policy.ingress_namespace_selector, policy.monitoring_namespace_selector)
        if selector
    ]
    # A bare podSelector (no namespaceSelector) means "pods of the policy's own namespace".
    peers.append({"podSelector": {}})
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(owner, owner.name, component=COMPONENT),
            "spec": {
                "podSelector": {"matchLabels": selector_labels(owner)},
                "policyTypes": ["Ingress"],
                # The port number, not the name "http": a numeric port cannot silently stop
                # matching if a container port is ever renamed.
                "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": HTTP_PORT}]}],
            },
        }
    ]
