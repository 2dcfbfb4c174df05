"""The real reconcile over an in-memory API with the gateway and autoscaling (issue 22): what it applies,
the AutoscalingReady condition and status.variants[].autoscaling, and what removing `autoscaling` prunes."""

from __future__ import annotations

from typing import Any

from deepseek_operator.reconcile import reconcile
from tests.unit.test_refused_children import FakeApi, body, conditions, no_notify

SCALED = {"gateway": {"enabled": True}, "autoscaling": {"minReplicas": 0, "maxReplicas": 3}}


class KedaApi(FakeApi):
    """The in-memory API, serving keda.sh/v1alpha1 ScaledObjects when `keda`."""

    def __init__(self, cr: dict[str, Any], keda: bool) -> None:
        super().__init__(cr, lambda _child: None)
        self.keda = keda

    async def served(self, api_version: str) -> set[str]:
        return {"scaledobjects"} if self.keda and api_version == "keda.sh/v1alpha1" else set()


def _names(api: FakeApi, kind: str) -> set[str]:
    return {name for (k, name) in api.objects if k == kind}


async def test_gateway_and_scaled_object_are_applied_and_the_status_says_so() -> None:
    api = KedaApi(body(SCALED), keda=True)
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert {"chat-gateway", "chat-primary"} <= _names(api, "Deployment")
    assert {"chat", "chat-gateway", "chat-primary", "chat-primary-pods"} <= _names(api, "Service")
    assert "chat-gateway" in _names(api, "ConfigMap") and "chat-gateway" in _names(api, "PodDisruptionBudget")
    assert _names(api, "ScaledObject") == {"chat-primary"} and not _names(api, "HorizontalPodAutoscaler")
    assert "replicas" not in api.objects[("Deployment", "chat-primary")]["spec"]  # KEDA's
    assert api.objects[("Service", "chat")]["spec"]["selector"] == {"deepseek.ai/gateway": "chat"}
    assert conditions(api.cr)["GatewayReady"][:2] == ("False", "GatewayUnavailable")  # no pod ready in the fake
    ready = conditions(api.cr)["AutoscalingReady"]
    assert ready[:2] == ("True", "KEDA") and "primary: ScaledObject on queueDepth" in ready[2]
    (primary,) = api.cr["status"]["variants"]
    assert primary["autoscaling"] == {"autoscaler": "ScaledObject", "metric": "queueDepth", "target": 4,
                                      "minReplicas": 0, "maxReplicas": 3, "desiredReplicas": 1,
                                      "currentReplicas": 0}  # created without replicas: 1 until KEDA acts


async def test_scale_to_zero_without_keda_is_a_false_condition_and_no_autoscaler() -> None:
    api = KedaApi(body(SCALED), keda=False)
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert not _names(api, "ScaledObject") and not _names(api, "HorizontalPodAutoscaler")
    status, reason, message = conditions(api.cr)["AutoscalingReady"]
    assert (status, reason) == ("False", "KEDANotInstalled") and "install KEDA" in message
    assert api.cr["status"]["variants"][0]["autoscaling"]["autoscaler"] == ""


async def test_removing_autoscaling_and_the_gateway_prunes_them() -> None:
    api = KedaApi(body({"gateway": {"enabled": True}, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}),
                  keda=False)
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert _names(api, "HorizontalPodAutoscaler") == {"chat-primary"}
    api.cr = {**body({"replicas": 2}), "status": api.cr["status"]}
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert not _names(api, "HorizontalPodAutoscaler")
    assert "chat-gateway" not in _names(api, "Deployment") | _names(api, "ConfigMap") | _names(api, "Service")
    assert api.objects[("Deployment", "chat-primary")]["spec"]["replicas"] == 2
    assert "AutoscalingReady" not in conditions(api.cr) and "GatewayReady" not in conditions(api.cr)
