"""strategy.py: the rolling update per variant (Surge, Replace, Auto's fallback). Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deepseek_operator import strategy

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def pending(image: str, seconds_ago: float) -> dict[str, Any]:
    since = (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"creationTimestamp": since}, "spec": {"containers": [{"image": image}]},
            "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                       "lastTransitionTime": since}]}}


@pytest.mark.parametrize(("requested", "remembered", "expected"), [
    ("Surge", {"strategy": "Replace", "strategyTemplate": "t1"}, "Surge"),
    ("Replace", {}, "Replace"),
    ("Auto", {}, "Surge"),
    ("Auto", {"strategy": "Replace", "strategyTemplate": "t1"}, "Replace"),  # this rollout fell back
    ("Auto", {"strategy": "Replace", "strategyTemplate": "t0"}, "Surge"),  # a new template surges again
])
def test_initial(requested: str, remembered: dict[str, str], expected: str) -> None:
    assert strategy.initial(requested, remembered, "t1") == expected


def test_surge_is_stuck_only_for_the_new_image_after_the_timeout() -> None:
    assert strategy.surge_stuck([pending("w:2", 5)], "w:2", NOW, timeout=3)
    assert not strategy.surge_stuck([pending("w:2", 2)], "w:2", NOW, timeout=3)
    assert not strategy.surge_stuck([pending("w:1", 60)], "w:2", NOW, timeout=3)  # an old pod
    scheduled = {"metadata": {}, "spec": {"containers": [{"image": "w:2"}]},
                 "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}}
    assert not strategy.surge_stuck([scheduled], "w:2", NOW, timeout=0)


def test_rolling_update_never_both_zero() -> None:
    assert strategy.rolling_update("Surge", 0, 1) == {"maxSurge": 1, "maxUnavailable": 0}
    assert strategy.rolling_update("Surge", 2, 1) == {"maxSurge": 2, "maxUnavailable": 0}
    assert strategy.rolling_update("Replace", 1, 0) == {"maxSurge": 0, "maxUnavailable": 1}


def test_downtime_is_announced_only_when_no_replica_stays_ready() -> None:
    assert "serves nothing meanwhile" in strategy.downtime("Replace", 1, 1)
    assert strategy.downtime("Replace", 2, 1) == ""
    assert strategy.downtime("Replace", 2, 2) != ""
    assert strategy.downtime("Surge", 1, 1) == ""


def test_template_hash_ignores_the_rolling_update_but_not_the_template() -> None:
    dep = {"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1}}, "template": {"spec": {"x": 1}}}}
    same = {"spec": {"strategy": {"rollingUpdate": {"maxSurge": 0}}, "template": {"spec": {"x": 1}}}}
    other = {"spec": {"template": {"spec": {"x": 2}}}}
    assert strategy.template_hash(dep) == strategy.template_hash(same) != strategy.template_hash(other)


def test_surge_wait_is_the_time_left_until_the_fallback_is_due() -> None:
    assert strategy.surge_wait([pending("w:2", 4)], "w:2", NOW, timeout=10) == 6.0
    assert strategy.surge_wait([pending("w:2", 4), pending("w:2", 9)], "w:2", NOW, timeout=10) == 1.0  # earliest
    assert strategy.surge_wait([pending("w:2", 30)], "w:2", NOW, timeout=10) == 0.0  # overdue: due now
    assert strategy.surge_wait([pending("w:1", 4)], "w:2", NOW, timeout=10) is None  # an old pod waits
    assert strategy.surge_wait([], "w:2", NOW, timeout=10) is None
