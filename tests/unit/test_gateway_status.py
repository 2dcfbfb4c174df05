"""The gateway's report in status (issue 22): the real reconcile over an in-memory API reads the
gateway's report ConfigMap into status.gateway and status.variants[].coldStart, feeds the measured
cold start back into the gateway's hold.loadSeconds, and re-applies the gateway's document while
leaving the report (the gateway's data) alone. Each replica writes its own key: the status combines
the fresh ones (weighted by requests), and the operator prunes the keys of pods silent for an hour
with one merge patch, only when there is one."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from deepseek_operator.k8s import Kind
from deepseek_operator.measured import GATEWAY_PRUNE_SECONDS, GATEWAY_STALE_SECONDS
from deepseek_operator.reconcile import reconcile
from deepseek_worker.gateway.config import GatewayConfig
from tests.unit.test_reconcile_scaling import SCALED, KedaApi
from tests.unit.test_refused_children import body, no_notify

REPORT = ("ConfigMap", "chat-gateway-report")
DOCUMENT = ("ConfigMap", "chat-gateway")


class ApplyingApi(KedaApi):
    """KedaApi whose apply keeps an existing object when asked to create it only, as K8s.apply does;
    ConfigMaps take JSON merge patches of their data (a null removes the key), each one recorded."""

    def __init__(self, cr: dict[str, Any]) -> None:
        super().__init__(cr, keda=True)
        self.create_only: dict[tuple[str, str], bool] = {}
        self.configmap_patches: list[dict[str, Any]] = []

    async def patch(self, kind: Kind, ns: str | None, name: str, patch: dict[str, Any],
                    sub: str = "") -> dict[str, Any]:
        if kind.kind != "ConfigMap":
            return await super().patch(kind, ns, name, patch, sub)
        self.configmap_patches.append(patch)
        live = self.objects[(kind.kind, name)]
        data = {**live.get("data", {}), **patch.get("data", {})}
        self.objects[(kind.kind, name)] = {**live, "data": {k: v for k, v in data.items() if v is not None}}
        return self.objects[(kind.kind, name)]

    async def apply(self, desired: dict[str, Any], create_only: bool = False) -> str:
        key = (desired["kind"], desired["metadata"]["name"])
        self.create_only[key] = create_only
        if create_only and key in self.objects:
            return "unchanged"
        return await super().apply(desired, create_only)


POD = "chat-gateway-6f7d-x1"


def _ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry(share: float, colds: dict[str, dict[str, Any]], pod: str = POD, age: float = 5.0,
           counts: tuple[int, int] | None = None) -> str:
    """One replica's entry, reported `age` seconds ago; `counts`: (requests, fallbackRequests)."""
    doc: dict[str, Any] = {"pod": pod, "reportedAt": _ago(age), "fallbackShare": share, "coldStarts": colds}
    if counts is not None:
        doc.update(requests=counts[0], fallbackRequests=counts[1])
    return json.dumps(doc)


def _report(share: float, colds: dict[str, dict[str, Any]]) -> dict[str, str]:
    """One replica's report under its own key (the gateway's report.report_key)."""
    return {f"gateway.{POD}": _entry(share, colds)}


def _hold_load_seconds(api: ApplyingApi) -> int:
    return GatewayConfig.model_validate_json(api.objects[DOCUMENT]["data"]["gateway.json"]).hold.loadSeconds


async def test_the_gateway_report_is_in_status_and_sets_the_declared_load_time() -> None:
    api = ApplyingApi(body(SCALED))
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert "data" not in api.objects[REPORT] and "gateway" not in api.cr["status"]  # nothing reported yet
    assert api.create_only[REPORT] and not api.create_only[DOCUMENT]  # the document is the operator's
    before = _hold_load_seconds(api)
    written = _report(0.123, {
        "primary": {"lastSeconds": 52.37, "p50Seconds": 48.2, "count": 3, "observedAt": "2026-12-04T22:59:58Z"},
        "gone": {"lastSeconds": 9.0, "p50Seconds": 9.0, "count": 1}})  # a removed variant's: left out
    api.objects[REPORT] = {**api.objects[REPORT], "data": written}
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    status = api.cr["status"]
    assert status["gateway"] == {"fallbackShare": "0.12", "replicasReporting": 1, "pod": "chat-gateway-6f7d-x1",
                                 "reportedAt": json.loads(api.objects[REPORT]["data"][f"gateway.{POD}"])["reportedAt"]}
    (primary,) = status["variants"]
    cold = primary["coldStart"]
    assert (cold["lastSeconds"], cold["p50Seconds"], cold["count"], cold["observedAt"]) == (
        "52.4", "48.2", 3, "2026-12-04T22:59:58Z")
    assert "first held request to its first byte: 52.4 s" in cold["message"]
    assert api.objects[REPORT]["data"] == written  # the gateway's data survived the reconciles
    assert api.configmap_patches == []  # nothing expired: no request
    # The measured p50 (rounded up) replaces the GPU-fit estimate as the full queue's Retry-After basis,
    # and the re-applied document carries it (the gateway reloads it without a restart).
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert _hold_load_seconds(api) == 49 != before


async def test_an_unreadable_report_or_no_gateway_leaves_status_without_it() -> None:
    api = ApplyingApi(body(SCALED))
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    api.objects[REPORT] = {**api.objects[REPORT], "data": {f"gateway.{POD}": "{not json", "gateway": "[]"}}
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert "gateway" not in api.cr["status"] and "coldStart" not in api.cr["status"]["variants"][0]
    api.objects[REPORT]["data"] = _report(0.5, {})
    api.cr = {**body({"replicas": 1}), "status": api.cr["status"]}  # the gateway turned off
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert "gateway" not in api.cr["status"] and REPORT not in api.objects  # pruned with the gateway


async def test_a_report_without_a_cold_start_keeps_the_one_status_shows() -> None:
    """A replica's entry gone stale or replaced by one without a cold start (only a fallback share to
    tell) must not erase the cold start status shows, and an older cold start never replaces a newer one."""
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


def _cold(last: float, p50: float, count: int, observed: str) -> dict[str, Any]:
    return {"lastSeconds": last, "p50Seconds": p50, "count": count, "observedAt": observed}


async def test_the_replicas_entries_are_combined_and_a_silent_ones_left_out() -> None:
    """Two live replicas and one silent for 11 minutes (its pod gone): the share is the live ones'
    requests sent out over their requests (5 of 100, not the last writer's 0 or 0.5), the cold start
    the latest live one's with the counts summed and the p50s weighted by them, and the dead pod's
    figures (a share of 1, a later cold start) count for nothing. Nothing is old enough to prune."""
    api = ApplyingApi(body(SCALED))
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    api.objects[REPORT] = {**api.objects[REPORT], "data": {
        "gateway.gw-a": _entry(0.5, {"primary": _cold(45.0, 40.0, 2, "2026-12-04T22:00:00Z")}, "gw-a", 30,
                               (10, 5)),
        "gateway.gw-b": _entry(0.0, {"primary": _cold(70.0, 60.0, 6, "2026-12-04T22:30:00Z")}, "gw-b", 5,
                               (90, 0)),
        "gateway.gw-dead": _entry(1.0, {"primary": _cold(999.0, 999.0, 1, "2026-12-04T23:59:00Z")}, "gw-dead",
                                  GATEWAY_STALE_SECONDS + 60, (1000, 1000))}}
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    status = api.cr["status"]
    b_reported = json.loads(api.objects[REPORT]["data"]["gateway.gw-b"])["reportedAt"]
    assert status["gateway"] == {"fallbackShare": "0.05", "replicasReporting": 2, "pod": "gw-b",
                                 "reportedAt": b_reported}
    cold = status["variants"][0]["coldStart"]
    assert (cold["lastSeconds"], cold["p50Seconds"], cold["count"], cold["observedAt"]) == (
        "70.0", "55.0", 8, "2026-12-04T22:30:00Z")  # (2 x 40 + 6 x 60) / 8
    assert "p50 of the last 8 over 2 gateway replicas: 55.0 s" in cold["message"]
    assert api.configmap_patches == [] and len(api.objects[REPORT]["data"]) == 3
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert _hold_load_seconds(api) == 55  # the combined p50, not the dead pod's 999


async def test_a_legacy_entry_without_counts_is_averaged_and_all_stale_says_no_replica() -> None:
    """A gateway image from before per-pod keys writes `gateway` without counts (during its rollout the
    two kinds coexist): the plain mean of the shares. Once every entry is stale (the gateway idle or
    gone), no replica reports: share 0, the latest report still named."""
    api = ApplyingApi(body(SCALED))
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    api.objects[REPORT] = {**api.objects[REPORT], "data": {
        "gateway": _entry(0.3, {}, "gw-old", 20), "gateway.gw-new": _entry(0.1, {}, "gw-new", 10, (10, 1))}}
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert api.cr["status"]["gateway"]["fallbackShare"] == "0.20"
    assert (api.cr["status"]["gateway"]["replicasReporting"], api.cr["status"]["gateway"]["pod"]) == (2, "gw-new")
    api.objects[REPORT]["data"] = {"gateway.gw-new": _entry(0.1, {}, "gw-new", GATEWAY_STALE_SECONDS + 1, (10, 1))}
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    gateway = api.cr["status"]["gateway"]
    assert (gateway["fallbackShare"], gateway["replicasReporting"], gateway["pod"]) == ("0.00", 0, "gw-new")


async def test_entries_silent_for_an_hour_are_pruned_with_one_merge_patch() -> None:
    """The keys of pods gone (a rollout, a scale-down) would pile up: one merge patch nulls every entry
    silent for GATEWAY_PRUNE_SECONDS, the legacy key included, conditioned on the version read (a
    replica's write since then makes it a 409, not a lost report). Another pass finds nothing to prune
    and makes no request; a key that is not an entry stays."""
    api = ApplyingApi(body(SCALED))
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    live = _entry(0.0, {}, "gw-live", 5, (3, 0))
    api.objects[REPORT] = {**api.objects[REPORT], "metadata": {**api.objects[REPORT]["metadata"],
                                                               "resourceVersion": "41"}, "data": {
        "gateway.gw-live": live, "gateway.gw-gone": _entry(0.2, {}, "gw-gone", GATEWAY_PRUNE_SECONDS + 60, (5, 1)),
        "gateway": _entry(0.5, {}, "gw-older", GATEWAY_PRUNE_SECONDS * 3), "gatewayish": "not an entry"}}
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert api.configmap_patches == [{"data": {"gateway": None, "gateway.gw-gone": None},
                                      "metadata": {"resourceVersion": "41"}}]
    assert api.objects[REPORT]["data"] == {"gateway.gw-live": live, "gatewayish": "not an entry"}
    assert api.cr["status"]["gateway"]["replicasReporting"] == 1
    await reconcile(api.cr, api, no_notify)  # type: ignore[arg-type]
    assert len(api.configmap_patches) == 1
