"""The operator's startup settings (deepseek_operator.main.configure) and what kopf watches."""

from __future__ import annotations

import os
import sys

import kopf
import pytest
from kopf._cogs.structs.references import Resource

from deepseek_operator import handlers, main
from deepseek_operator.cache import CachedK8s
from deepseek_operator.settings import Settings


async def test_kopf_watches_only_deepseekdeployments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Children are watched by the operator's caches (cache.py), not by kopf: no kopf child handler."""
    monkeypatch.setenv("DEEPSEEK_OPERATOR_METRICS_PORT", "0")
    settings, memo = kopf.OperatorSettings(), kopf.Memo()
    await main.configure(settings=settings, memo=memo)
    assert handlers.controller_of(memo).settings == Settings.from_env(os.environ)
    registry = kopf.get_default_registry()
    registered = registry._watching.get_all_handlers()
    watched = {(h.selector.group, h.selector.plural or h.selector.any_name) for h in registered if h.selector}
    assert watched == {("deepseek.ai", "deepseekdeployments")}
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert settings.background.cancellation_polling == 1
    assert settings.watching.server_timeout == 600
    assert settings.watching.label_selectors.collect(Resource("", "v1", "pods")) == []


@pytest.mark.parametrize(("args", "expected"), [
    (["--standalone", "--namespace=default", "--verbose"], ["default"]),
    (["-n", "b", "--namespace", "a", "-n", "a"], ["a", "b"]),
    (["--all-namespaces"], None),
    (["-A"], None),
    ([], None),
    (["-n", "team-*"], None),  # a glob: the caches watch every namespace, kopf picks the owners
])
def test_the_caches_watch_the_namespaces_kopf_handles(args: list[str], expected: list[str] | None) -> None:
    assert main.handled_namespaces(args) == expected


def test_settings_come_from_the_environment_once() -> None:
    env = {"DEEPSEEK_OPERATOR_RESYNC_SECONDS": "1.5", "DEEPSEEK_OPERATOR_MAX_RECONCILES": "7",
           "DEEPSEEK_OPERATOR_WATCH_TIMEOUT_SECONDS": "2", "DEEPSEEK_OPERATOR_PEERING_LIFETIME_SECONDS": "9",
           "DEEPSEEK_OPERATOR_METRICS_PORT": "0", "DEEPSEEK_OPERATOR_NAMESPACES": "a,b",
           "DEEPSEEK_OPERATOR_MAX_IN_FLIGHT": "3"}
    assert Settings.from_env(env) == Settings(resync_seconds=1.5, max_reconciles=7, watch_timeout_seconds=2,
                                              peering_lifetime_seconds=9, metrics_port=0, namespaces=("a", "b"),
                                              max_in_flight=3)
    assert Settings.from_env({}) == Settings()
    settings = kopf.OperatorSettings()
    main.configure_kopf(settings, Settings.from_env(env))
    assert (settings.watching.server_timeout, settings.peering.lifetime) == (2, 9)


def test_the_cli_hands_the_namespaces_to_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli() passes kopf's -n options on through the environment; kopf run gets every argument."""
    seen: dict[str, object] = {}

    def kopf_main(args: list[str], prog_name: str) -> None:
        seen["args"], seen["settings"] = args, Settings.from_env(os.environ)

    monkeypatch.setattr("kopf.cli.main", kopf_main)
    monkeypatch.setattr(sys, "argv", ["deepseek-operator", "--standalone", "-n", "b", "-n", "a"])
    monkeypatch.setenv("DEEPSEEK_OPERATOR_NAMESPACES", "stale")
    monkeypatch.delenv("POD_ID", raising=False)  # cli() sets both: restored after the test
    main.cli()
    assert seen["args"] == ["run", "-m", "deepseek_operator.main", "--standalone", "-n", "b", "-n", "a"]
    assert seen["settings"].namespaces == ("a", "b")  # type: ignore[attr-defined]
    monkeypatch.setattr(sys, "argv", ["deepseek-operator", "-A"])
    main.cli()
    assert seen["settings"].namespaces is None  # type: ignore[attr-defined]


async def test_the_api_client_holds_the_settings_in_flight_limit() -> None:
    """The limit reaches the client the Controller builds (was a module constant read at import)."""
    client = CachedK8s(None, None, lambda kind, obj: None, max_in_flight=Settings(max_in_flight=3).max_in_flight)
    assert client._in_flight._value == 3
    assert CachedK8s(None, None, lambda kind, obj: None)._in_flight._value == Settings().max_in_flight == 20
