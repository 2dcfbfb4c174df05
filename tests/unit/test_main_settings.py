"""The operator's startup settings (deepseek_operator.main.configure) and what kopf watches."""

from __future__ import annotations

import kopf
import pytest
from kopf._cogs.structs.references import Resource

from deepseek_operator import handlers, main


async def test_kopf_watches_only_deepseekdeployments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Children are watched by the operator's caches (cache.py), not by kopf: no kopf child handler."""
    monkeypatch.setenv("DEEPSEEK_OPERATOR_METRICS_PORT", "0")
    monkeypatch.setattr(handlers, "LEADERSHIP", handlers.LEADERSHIP)  # configure() replaces it
    settings = kopf.OperatorSettings()
    await main.configure(settings=settings)
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
