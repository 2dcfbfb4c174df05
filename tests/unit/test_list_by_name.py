"""k8s.list_by_name: one object through a list by name (the operator is granted `list`, never `get`)."""

from __future__ import annotations

import asyncio
from typing import Any

from deepseek_operator.k8s import KINDS, Page, list_by_name

CONFIG_MAP = KINDS[("v1", "ConfigMap")]


class Lister:
    """Answers list_page with `page` and records each request's params."""

    def __init__(self, page: Page | None) -> None:
        self.page = page
        self.calls: list[tuple[Any, str | None, dict[str, str]]] = []

    async def list_page(self, kind: Any, namespace: str | None, params: dict[str, str]) -> Page | None:
        self.calls.append((kind, namespace, params))
        return self.page


def test_the_first_item_of_a_list_by_field_selector() -> None:
    obj = {"metadata": {"name": "a"}}
    api = Lister(([obj], "7", ""))
    assert asyncio.run(list_by_name(api, CONFIG_MAP, "ns", "a")) is obj  # type: ignore[arg-type]
    assert api.calls == [(CONFIG_MAP, "ns", {"fieldSelector": "metadata.name=a"})]


def test_none_when_nothing_matches_or_the_api_is_absent() -> None:
    assert asyncio.run(list_by_name(Lister(([], "7", "")), CONFIG_MAP, None, "a")) is None  # type: ignore[arg-type]
    assert asyncio.run(list_by_name(Lister(None), CONFIG_MAP, None, "a")) is None  # type: ignore[arg-type]
