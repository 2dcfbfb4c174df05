"""The watch-fed caches (informer.py, cache.py) against a scripted API: lists, watches, own writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from deepseek_operator import informer as informer_module
from deepseek_operator.cache import CRD, CachedK8s
from deepseek_operator.informer import Informer, Store
from deepseek_operator.k8s import KINDS, ApiError

DEADLINE = 5
DEPLOYMENT = KINDS[("apps/v1", "Deployment")]
POD = KINDS[("v1", "Pod")]


def obj(name: str, rv: int, owner: str = "chat", namespace: str = "default", **labels: str) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace, "resourceVersion": str(rv),
            "labels": {"deepseek.ai/deployment": owner, **labels}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta}


def test_the_store_keeps_the_newest_version_and_ignores_older_events() -> None:
    store = Store()
    assert store.observe(obj("a", 5))
    assert not store.observe(obj("a", 4))  # an event older than the write already stored
    assert not store.observe(obj("a", 5))  # the watch echo of our own write: no change
    assert store.observe(obj("a", 6))
    assert store.get("default", "a")["metadata"]["resourceVersion"] == "6"


def test_a_tombstone_keeps_a_late_event_from_reviving_a_deleted_object() -> None:
    store = Store()
    store.observe(obj("a", 5))
    assert store.forget(obj("a", 7))
    assert not store.observe(obj("a", 6)) and store.get("default", "a") is None and store.deleted("default", "a")
    assert store.observe(obj("a", 8))  # created again after the deletion
    assert not store.deleted("default", "a")


def test_select_by_owner_and_labels_within_a_namespace() -> None:
    store = Store()
    store.observe(obj("a", 1, variant="primary"))
    store.observe(obj("b", 2, variant="canary"))
    store.observe(obj("c", 3, owner="other"))
    store.observe(obj("d", 4, namespace="elsewhere"))
    names = [o["metadata"]["name"] for o in store.select("default", {"deepseek.ai/deployment": "chat"})]
    assert names == ["a", "b"]
    primary = store.select("default", {"deepseek.ai/deployment": "chat", "variant": "primary"})
    assert [o["metadata"]["name"] for o in primary] == ["a"]
    store.observe(obj("a", 5, owner="moved"))  # a relabelled object leaves its old owner's index
    assert [o["metadata"]["name"] for o in store.select("default", {"deepseek.ai/deployment": "chat"})] == ["b"]
    assert len(store.select(None, {})) == 4


def test_replace_reports_what_changed_appeared_or_went() -> None:
    store = Store()
    store.observe(obj("same", 1))
    store.observe(obj("edited", 2))
    store.observe(obj("gone", 3))
    changed = store.replace([obj("same", 1), obj("edited", 9), obj("new", 10)])
    assert sorted(o["metadata"]["name"] for o in changed) == ["edited", "gone", "new"]
    assert store.get("default", "gone") is None and len(store) == 3


class ScriptedApi:
    """Answers list pages and watch streams from scripts; records every request."""

    def __init__(self, lists: list[Any], watches: list[list[dict[str, Any]] | Exception]) -> None:
        self.lists, self.watches = lists, watches
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.exhausted = asyncio.Event()

    async def list_page(self, kind: Any, namespace: Any, params: dict[str, str]) -> Any:
        self.requests.append(("list", params))
        answer = self.lists.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def watch(self, kind: Any, namespace: Any, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        self.requests.append(("watch", params))
        if not self.watches:
            self.exhausted.set()
            await asyncio.Event().wait()  # a quiet stream, until the test cancels the informer
        script = self.watches.pop(0)
        if isinstance(script, Exception):
            raise script
        for event in script:
            yield event


async def run_until_exhausted(inf: Informer, api: ScriptedApi) -> None:
    task = asyncio.create_task(inf.run())
    try:
        await asyncio.wait_for(api.exhausted.wait(), DEADLINE)
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=DEADLINE)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(informer_module, "RELIST_BACKOFF", (0.0, 0.0))


async def test_pages_then_a_watch_that_resumes_from_the_last_version_and_relists_on_410() -> None:
    api = ScriptedApi(
        lists=[([obj("a", 1)], "10", "page2"), ([obj("b", 2)], "10", ""), ([obj("a", 30)], "31", "")],
        watches=[
            [{"type": "MODIFIED", "object": obj("a", 11)}, {"type": "BOOKMARK", "object": {"metadata": {
                "resourceVersion": "15"}}}],  # the server ends this watch (timeoutSeconds)
            [{"type": "DELETED", "object": obj("b", 16)},
             {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}],
        ])
    seen: list[tuple[str, str]] = []
    inf = Informer(api, DEPLOYMENT, None, "deepseek.ai/deployment",  # type: ignore[arg-type]
                   on_change=lambda o: seen.append((o["metadata"]["name"], o["metadata"]["resourceVersion"])))
    await run_until_exhausted(inf, api)
    verbs = [(verb, p.get("resourceVersion"), p.get("continue")) for verb, p in api.requests]
    assert verbs == [("list", None, None), ("list", None, "page2"), ("watch", "10", None), ("watch", "15", None),
                     ("list", None, None), ("watch", "31", None)]
    assert all(p["labelSelector"] == "deepseek.ai/deployment" for _, p in api.requests)
    assert all(p["allowWatchBookmarks"] == "true" for verb, p in api.requests if verb == "watch")
    # The first list only fills the store; later changes are told, the relist's too.
    assert seen == [("a", "11"), ("b", "16"), ("a", "30")]
    assert inf.synced.is_set() and [o["metadata"]["name"] for o in inf.store.select(None, {})] == ["a"]


async def test_a_refused_list_is_reported_to_readers_and_a_later_success_clears_it() -> None:
    api = ScriptedApi(lists=[ApiError(403, "forbidden"), ([obj("a", 1)], "5", "")], watches=[])
    inf = Informer(api, DEPLOYMENT, "default")  # type: ignore[arg-type]
    await run_until_exhausted(inf, api)
    assert inf.refused is None and inf.store.get("default", "a") is not None



async def test_cached_reads_cost_no_request_and_writes_are_stored_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    api = CachedK8s(None, ["default"], on_change=lambda kind, o: None)
    inf = Informer(api, DEPLOYMENT, "default")
    inf.store.observe(obj("chat-primary", 5))
    inf.synced.set()
    api._informers[("deployments", "default")] = inf

    async def patched(self: Any, kind: Any, namespace: Any, name: str, patch: Any, sub: str = "") -> Any:
        calls.append("patch")
        return obj(name, 6)

    async def get(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append("get")
        return None

    monkeypatch.setattr("deepseek_operator.k8s.K8s.patch", patched)
    monkeypatch.setattr("deepseek_operator.k8s.K8s.get", get)
    assert (await api.get(DEPLOYMENT, "default", "chat-primary"))["metadata"]["resourceVersion"] == "5"
    assert [o["metadata"]["name"] for o in await api.list(DEPLOYMENT, "default", {"deepseek.ai/deployment": "chat"})]
    assert calls == []  # both answered from the cache
    await api.patch(DEPLOYMENT, "default", "chat-primary", {"spec": {}})
    assert (await api.get(DEPLOYMENT, "default", "chat-primary"))["metadata"]["resourceVersion"] == "6"
    assert calls == ["patch"]
    assert await api.get(POD, "default", "x") is None and calls == ["patch", "get"]  # pods: no informer here


async def test_optional_apis_are_read_from_the_crd_informers(monkeypatch: pytest.MonkeyPatch) -> None:
    api = CachedK8s(None, None, on_change=lambda kind, o: None)
    for name in ("servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com"):
        inf = Informer(api, CRD, None, field_selector=f"metadata.name={name}")
        inf.synced.set()
        api._informers[(f"customresourcedefinitions/metadata.name={name}", "")] = inf
    crd = {"metadata": {"name": "servicemonitors.monitoring.coreos.com", "resourceVersion": "3"},
           "spec": {"group": "monitoring.coreos.com", "versions": [{"name": "v1", "served": True}]},
           "status": {"conditions": [{"type": "Established", "status": "True"}]}}
    api._informers[("customresourcedefinitions/metadata.name=servicemonitors.monitoring.coreos.com", "")] \
        .store.observe(crd)
    monkeypatch.setattr(Informer, "run", lambda self: asyncio.sleep(0))  # no API behind this client
    assert await api.served("monitoring.coreos.com/v1") == {"servicemonitors"}
    assert ("servicemonitors", "") in api._informers  # its informer starts once the CRD serves it
    assert ("prometheusrules", "") not in api._informers
    await api.stop()


def test_the_store_drops_managed_fields_and_leaves_the_callers_object_alone() -> None:
    store = Store()
    given = obj("a", 1)
    given["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    assert store.observe(given)
    assert "managedFields" not in store.get("default", "a")["metadata"]
    assert "managedFields" in given["metadata"]  # kopf's body, for one, must stay as kopf gave it
    store.replace([given])
    assert "managedFields" not in store.get("default", "a")["metadata"]


def test_pods_are_cached_with_what_the_reconcile_reads_only() -> None:
    inf = Informer(None, POD, "default")  # type: ignore[arg-type]
    pod = obj("chat-primary-x", 3)
    pod["spec"] = {"containers": [{"name": "worker", "image": "w:1", "env": [{"name": "A", "value": "b"}]}],
                   "volumes": [{"name": "shm"}], "nodeName": "gpu-node-1"}
    pod["status"] = {"conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": [{"name": "worker"}]}
    inf.store.observe(pod)
    cached = inf.store.get("default", "chat-primary-x")
    assert cached["spec"] == {"containers": [{"name": "worker", "image": "w:1"}], "nodeName": "gpu-node-1"}
    assert cached["status"] == pod["status"] and cached["metadata"]["labels"] == pod["metadata"]["labels"]
    assert "env" in pod["spec"]["containers"][0]  # the watch event itself is left as it came
