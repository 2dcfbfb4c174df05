"""The floor for benchmarks/operator_scale.py: kopf with the operator's settings, handlers that do nothing.

    kopf run --standalone --namespace=NS benchmarks/null_operator.py

It watches what the operator watches (DeepSeekDeployments, and every child kind with the same
server-side label selector: the operator's caches watch those itself, outside kopf) and receives the
same events, so its CPU seconds and memory are kopf's own cost of watching and handling them.
"""

from __future__ import annotations

from typing import Any

import kopf

from deepseek_operator.kopf_settings import configure_kopf
from deepseek_operator.render.common import LABEL_DEPLOYMENT

WATCHED = [("deepseek.ai", "v1alpha1", "deepseekdeployments"), ("apps", "v1", "deployments"), ("", "v1", "pods"),
           ("", "v1", "services"), ("policy", "v1", "poddisruptionbudgets"),
           ("networking.k8s.io", "v1", "networkpolicies"), ("networking.k8s.io", "v1", "ingresses"),
           ("gateway.networking.k8s.io", "v1", "httproutes"), ("monitoring.coreos.com", "v1", "servicemonitors"),
           ("monitoring.coreos.com", "v1", "prometheusrules")]


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    configure_kopf(settings)
    for _group, _version, plural in WATCHED[1:]:  # children only, filtered by the API server
        settings.watching.label_selectors[plural] = LABEL_DEPLOYMENT


async def nothing(**_: Any) -> None:
    """Receive the event; do nothing with it."""


for group, version, plural in WATCHED:
    kopf.on.event(group, version, plural)(nothing)
