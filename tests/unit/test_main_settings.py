"""The operator's startup settings (deepseek_operator.main.configure)."""

from __future__ import annotations

import kopf
import pytest
from kopf._cogs.structs.references import Resource

from deepseek_operator import main


async def test_children_are_watched_with_a_server_side_label_selector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_OPERATOR_METRICS_PORT", "0")
    settings = kopf.OperatorSettings()
    await main.configure(settings=settings)
    selectors = settings.watching.label_selectors
    for resource in (Resource("", "v1", "pods"), Resource("apps", "v1", "deployments"), Resource("", "v1", "services")):
        assert selectors.collect(resource) == ["deepseek.ai/deployment"]
    assert selectors.collect(Resource("deepseek.ai", "v1alpha1", "deepseekdeployments")) == []
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert settings.background.cancellation_polling == 1
