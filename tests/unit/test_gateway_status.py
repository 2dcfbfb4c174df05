"""The gateway's report in status (issue 22): the real reconcile over an in-memory API reads the
gateway's report ConfigMap into status.gateway and status.variants[].coldStart, feeds the measured
cold start back into the gateway's hold.loadSeconds, and re-applies the gateway's document while
leaving the report (the gateway's data) alone."""

from __future__ import annotations

import json
from typing import Any

from deepseek_operator.reconcile import reconcile
from deepseek_worker.gateway.config import GatewayConfig
from tests.unit.test_reconcile_scaling import SCALED, KedaApi
from tests.unit.test_refused_children import body, no_notify

REPORT = ("ConfigMap", "chat-gateway-report")
DOCUMENT = ("ConfigMap", "chat-gateway")


class ApplyingApi(KedaApi):
    """KedaApi whose apply keeps an existing object when asked to create it only, as K8s.apply does."""

    def __init__(self, cr: dict[str, Any]) -> None:
        super().__init__(cr, keda=True)
        self.create_only: dict[tuple[str, str], bool] = {}

    async def apply(self, desired: dict[str, Any], create_only: bool = False) -> str:
        key = (desired["kind"], desired["metadata"]["name"])
        self.create_only[key] = create_only
        if create_only and key in self.objects:
            return "unchanged"
        return await super().apply(desired, create_only)


def _report(share: float, colds: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {"gateway": json.dumps({"pod": "chat-gateway-6f7d-x1", "reportedAt": "2026-12-04T23:00:00Z",
                                   "fallbackShare": share, "coldStarts": colds})}


def _hold_load_seconds(api: ApplyingApi) -> int:
    return GatewayConfig.model_validate_json(api.objects[DOCUMENT]["data"]["gateway.json"]).hold.loadSeconds


async def test_the_gateway_report_is_in_status_and_sets_the_declared_load_time() -> None:
    api = ApplyingApi(body(SCALED))
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert "data" not in api.objects[REPORT] and "gateway" not in api.cr["status"]  # nothing reported yet
    assert api.create_only[REPORT] and not api.create_only[DOCUMENT]  # the document is the operator's
    before = _hold_load_seconds(api)
    api.objects[REPORT] = {**api.objects[REPORT], "data": _report(0.123, {
        "primary": {"lastSeconds": 52.37, "p50Seconds": 48.2, "count": 3, "observedAt": "2026-12-04T22:59:58Z"},
        "gone": {"lastSeconds": 9.0, "p50Seconds": 9.0, "count": 1}})}  # a removed variant's: left out
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    status = api.cr["status"]
    assert status["gateway"] == {"fallbackShare": "0.12", "pod": "chat-gateway-6f7d-x1",
                                 "reportedAt": "2026-12-04T23:00:00Z"}
    (primary,) = status["variants"]
    cold = primary["coldStart"]
    assert (cold["lastSeconds"], cold["p50Seconds"], cold["count"], cold["observedAt"]) == (
        "52.4", "48.2", 3, "2026-12-04T22:59:58Z")
    assert "first held request to its first byte: 52.4 s" in cold["message"]
    assert api.objects[REPORT]["data"] == _report(0.123, {  # the gateway's data survived the reconciles
        "primary": {"lastSeconds": 52.37, "p50Seconds": 48.2, "count": 3, "observedAt": "2026-12-04T22:59:58Z"},
        "gone": {"lastSeconds": 9.0, "p50Seconds": 9.0, "count": 1}})
    # The measured p50 (rounded up) replaces the GPU-fit estimate as the full queue's Retry-After basis,
    # and the re-applied document carries it (the gateway reloads it without a restart).
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert _hold_load_seconds(api) == 49 != before


async def test_an_unreadable_report_or_no_gateway_leaves_status_without_it() -> None:
    api = ApplyingApi(body(SCALED))
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    api.objects[REPORT] = {**api.objects[REPORT], "data": {"gateway": "{not json"}}
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert "gateway" not in api.cr["status"] and "coldStart" not in api.cr["status"]["variants"][0]
    api.objects[REPORT]["data"] = _report(0.5, {})
    api.cr = {**body({"replicas": 1}), "status": api.cr["status"]}  # the gateway turned off
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert "gateway" not in api.cr["status"] and REPORT not in api.objects  # pruned with the gateway


async def test_a_report_without_a_cold_start_keeps_the_one_status_shows() -> None:
    """Both gateway replicas write the same key: one that never held a request (only a fallback share
    to tell) must not erase the other's cold start, and an older cold start never replaces a newer one."""
    api = ApplyingApi(body(SCALED))
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    newer = {"lastSeconds": 52.0, "p50Seconds": 52.0, "count": 1, "observedAt": "2026-12-04T22:59:58Z"}
    api.objects[REPORT] = {**api.objects[REPORT], "data": _report(0.0, {"primary": newer})}
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    api.objects[REPORT]["data"] = _report(0.3, {})  # the other replica: spill-over, no cold start
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    status = api.cr["status"]
    assert status["gateway"]["fallbackShare"] == "0.30" and status["variants"][0]["coldStart"]["lastSeconds"] == "52.0"
    older = {"lastSeconds": 70.0, "p50Seconds": 70.0, "count": 1, "observedAt": "2026-12-04T22:00:00Z"}
    api.objects[REPORT]["data"] = _report(0.3, {"primary": older})
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert api.cr["status"]["variants"][0]["coldStart"]["lastSeconds"] == "52.0"
    latest = {**older, "lastSeconds": 40.0, "observedAt": "2026-12-04T23:10:00Z"}
    api.objects[REPORT]["data"] = _report(0.3, {"primary": latest})
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert api.cr["status"]["variants"][0]["coldStart"]["lastSeconds"] == "40.0"
