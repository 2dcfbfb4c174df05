"""measured.py's combining of the gateway replicas' report entries, and readback.prune_gateway_report's
handling of a refused prune (pure, or over a stub API; the reconcile's path is test_gateway_status.py)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deepseek_operator import measured
from deepseek_operator.k8s import ApiError, Kind
from deepseek_operator.readback import prune_gateway_report

NOW = datetime(2026, 12, 5, 2, 0, 0, tzinfo=UTC)


def _at(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _config_map(**entries: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "chat-gateway-report", "namespace": "llm", "resourceVersion": "7"},
            "data": {key.replace("__", "."): json.dumps(doc) for key, doc in entries.items()}}


def test_the_share_weighs_replicas_by_requests_and_a_replica_without_requests_not_at_all() -> None:
    reports = [{"fallbackShare": 0.5, "requests": 10, "fallbackRequests": 5},
               {"fallbackShare": 0.0, "requests": 90, "fallbackRequests": 0},
               {"fallbackShare": 0.0, "requests": 0, "fallbackRequests": 0}]
    assert measured.combined_share(reports) == pytest.approx(0.05)
    assert measured.combined_share([{"fallbackShare": 0.0, "requests": 0, "fallbackRequests": 0}]) == 0.0
    assert measured.combined_share([]) == 0.0
    # Without counts (an older gateway), or with unreadable ones: the plain mean.
    assert measured.combined_share([{"fallbackShare": 0.4}, {"fallbackShare": 0.2, "requests": 5,
                                                              "fallbackRequests": 1}]) == pytest.approx(0.3)
    assert measured.combined_share([{"fallbackShare": 0.4, "requests": "many", "fallbackRequests": 1}]) == 0.4
    # More sent out than routed (a corrupt entry) is capped at all of them.
    assert measured.combined_share([{"requests": 2, "fallbackRequests": 9}]) == 1.0


def test_cold_starts_take_the_latest_last_sum_the_counts_and_weigh_the_p50s() -> None:
    combined = measured.combined_cold_start([
        {"lastSeconds": 30.0, "p50Seconds": 20.0, "count": 1, "observedAt": "2026-12-05T01:00:00Z"},
        {"lastSeconds": 50.0, "p50Seconds": 40.0, "count": 3, "observedAt": "2026-12-05T01:30:00Z"}])
    assert combined == {"lastSeconds": 50.0, "p50Seconds": 35.0, "count": 4, "observedAt": "2026-12-05T01:30:00Z"}


def test_only_fresh_entries_count_and_only_expired_ones_are_pruned() -> None:
    config_map = _config_map(
        gateway__a={"pod": "a", "reportedAt": _at(measured.GATEWAY_STALE_SECONDS), "fallbackShare": 0.1},
        gateway__b={"pod": "b", "reportedAt": _at(measured.GATEWAY_STALE_SECONDS + 1), "fallbackShare": 0.9},
        gateway__c={"pod": "c", "reportedAt": _at(measured.GATEWAY_PRUNE_SECONDS + 1)},
        gateway__d={"pod": "d", "reportedAt": "yesterday"},  # no readable age: never fresh, never pruned
        gateway={"pod": "legacy", "reportedAt": _at(-30)})  # a node's clock ahead: fresh
    entries = measured.gateway_entries(config_map)
    assert sorted(entries) == ["gateway", "gateway.a", "gateway.b", "gateway.c", "gateway.d"]
    assert sorted(r["pod"] for r in measured.fresh_entries(entries, NOW)) == ["a", "legacy"]
    assert measured.expired_gateway_keys(config_map, NOW) == ["gateway.c"]
    found = measured.read_gateway_report(config_map, [], now=NOW)
    assert found is not None and found.gateway["replicasReporting"] == 2 and found.gateway["pod"] == "legacy"
    assert measured.read_gateway_report({"data": {"unrelated": "{}"}}, [], now=NOW) is None


class StubApi:
    """Answers a ConfigMap patch with `error`, or applies it."""

    def __init__(self, error: ApiError | None) -> None:
        self.error = error
        self.patches: list[dict[str, Any]] = []

    async def patch(self, _kind: Kind, _ns: str | None, _name: str, patch: dict[str, Any],
                    sub: str = "") -> dict[str, Any]:
        self.patches.append(patch)
        if self.error is not None:
            raise self.error
        return {"data": {}}


@pytest.mark.parametrize(("code", "level"), [(409, logging.DEBUG), (403, logging.WARNING)])
async def test_a_refused_prune_is_logged_and_the_status_goes_on(code: int, level: int,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A 409 (a replica wrote since the cached read; its event brings the next pass) or a 403 (RBAC
    without patch) leaves the cached ConfigMap as the answer; no exception reaches the reconcile."""
    config_map = _config_map(gateway__gone={"pod": "gone", "reportedAt": _at(2 * measured.GATEWAY_PRUNE_SECONDS)})
    api = StubApi(ApiError(code, "refused"))
    caplog.set_level(logging.DEBUG, logger="deepseek_operator.readback")
    answer = await prune_gateway_report(api, "llm", "chat-gateway-report", config_map, NOW)  # type: ignore[arg-type]
    assert answer is config_map
    assert api.patches == [{"data": {"gateway.gone": None}, "metadata": {"resourceVersion": "7"}}]
    assert [r.levelno for r in caplog.records] == [level]


async def test_no_request_without_an_expired_entry() -> None:
    api = StubApi(None)
    fresh = _config_map(gateway__a={"pod": "a", "reportedAt": _at(60)})
    assert await prune_gateway_report(api, "llm", "x", fresh, NOW) is fresh  # type: ignore[arg-type]
    assert await prune_gateway_report(api, "llm", "x", None, NOW) is None  # type: ignore[arg-type]
    assert api.patches == []
