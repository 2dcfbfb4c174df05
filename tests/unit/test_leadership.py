"""Who may write with kopf peering (leadership.py): kopf's rule, read from the cached peering object."""

from __future__ import annotations

import datetime
from typing import Any

import kopf
import pytest

from deepseek_operator import handlers, main
from deepseek_operator.leadership import Leadership


def heartbeat(priority: int, seconds_ago: float = 0, lifetime: int = 30) -> dict[str, Any]:
    # Now, not at import: a full suite collects this module long before it runs the test.
    lastseen = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)).isoformat()
    return {"priority": priority, "lifetime": lifetime, "lastseen": lastseen}


def standing(peers: dict[str, Any] | None, priority: int = 100, identity: str = "me") -> Leadership:
    obj = None if peers is None else {"metadata": {"name": "p"}, "status": peers}
    return Leadership(name="p", priority=priority, identity=identity, lookup=lambda ns: obj)


def test_without_peering_every_replica_is_active() -> None:
    assert Leadership().active("default")


# (priority, seconds since the last heartbeat) per peer; heartbeats are dated when the test runs.
@pytest.mark.parametrize(("peers", "active"), [
    ({"me": (100, 0)}, True),
    ({"me": (100, 0), "other": (50, 0)}, True),
    ({"me": (100, 0), "other": (200, 0)}, False),  # a higher priority leads
    ({"me": (100, 0), "other": (200, 31)}, True),  # ... until its heartbeat expires
    ({"me": (100, 0), "other": (100, 0)}, False),  # a tie pauses both, as kopf does
    (None, True),  # no peering object: kopf finds no peers and runs
])
def test_the_live_replica_with_the_highest_priority_leads(peers: dict[str, tuple[int, float]] | None,
                                                          active: bool) -> None:
    beats = None if peers is None else {who: heartbeat(p, seconds_ago=ago) for who, (p, ago) in peers.items()}
    assert standing(beats).active("default") is active


def test_a_peering_object_not_listed_yet_means_paused() -> None:
    def not_yet(namespace: str | None) -> dict[str, Any] | None:
        raise LookupError("not listed yet")

    assert not Leadership(name="p", priority=1, identity="me", lookup=not_yet).active("default")


def test_turned_active_fires_once_per_takeover() -> None:
    peers = {"me": heartbeat(100), "other": heartbeat(200)}
    leadership = standing(peers)
    assert not leadership.turned_active("default")  # paused
    peers["other"] = heartbeat(200, seconds_ago=60)  # the leader died
    assert leadership.turned_active("default")
    assert not leadership.turned_active("default")  # already leading


async def test_priorities_come_from_the_pod_name_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_OPERATOR_METRICS_PORT", "0")
    monkeypatch.setenv("POD_ID", "deepseek-operator-7d9c-abcde")
    settings, memo = kopf.OperatorSettings(), kopf.Memo()
    settings.peering.name = "deepseek-operator"
    await main.configure(settings=settings, memo=memo)
    assert settings.peering.priority == main.priority_of("deepseek-operator-7d9c-abcde") > 0
    assert main.priority_of("deepseek-operator-7d9c-fghij") != settings.peering.priority
    chosen = handlers.controller_of(memo).leadership
    assert (chosen.name, chosen.identity) == ("deepseek-operator", "deepseek-operator-7d9c-abcde")
    assert settings.peering.lifetime == 30
