"""API realism over raw HTTP: metadata, status rules, errors, patches, selectors, watch, GC."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from deepseek_sandbox import Sandbox

from .conftest import eventually

WIDGETS = "/apis/sandbox.test/v1alpha1/namespaces/default/widgets"
CMS = "/api/v1/namespaces/default/configmaps"


@pytest.fixture
async def http(sandbox: Sandbox) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(sandbox.url) as session:
        yield session


async def call(http: aiohttp.ClientSession, method: str, path: str, body: Any = None,
               ctype: str = "application/json") -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body)
    async with http.request(method, path, data=data, headers={"Content-Type": ctype}) as resp:
        return resp.status, await resp.json()


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "sandbox.test/v1alpha1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


async def test_create_stamps_metadata_and_bumps_versions(http: aiohttp.ClientSession) -> None:
    code, obj = await call(http, "POST", WIDGETS, widget("a", image="x"))
    assert code == 201
    md = obj["metadata"]
    assert md["uid"] and md["creationTimestamp"] and md["generation"] == 1 and md["namespace"] == "default"
    rv1 = int(md["resourceVersion"])
    code, obj = await call(http, "PATCH", f"{WIDGETS}/a", {"metadata": {"labels": {"x": "y"}}},
                           "application/merge-patch+json")
    assert code == 200 and obj["metadata"]["generation"] == 1 and int(obj["metadata"]["resourceVersion"]) > rv1
    code, obj = await call(http, "PATCH", f"{WIDGETS}/a", {"spec": {"image": "y"}}, "application/merge-patch+json")
    assert obj["metadata"]["generation"] == 2


async def test_status_subresource_rules(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", WIDGETS, widget("s", image="x"))
    code, obj = await call(http, "PATCH", f"{WIDGETS}/s", {"status": {"ready": "1/1"}, "spec": {"image": "z"}},
                           "application/merge-patch+json")
    assert "status" not in obj and obj["spec"]["image"] == "z"
    code, obj = await call(http, "PATCH", f"{WIDGETS}/s/status", {"status": {"ready": "1/1"}, "spec": {"image": "q"}},
                           "application/merge-patch+json")
    assert code == 200 and obj["status"] == {"ready": "1/1"} and obj["spec"]["image"] == "z"
    assert obj["metadata"]["generation"] == 2  # only the spec write counted


async def test_error_reasons(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", WIDGETS, widget("e", image="x"))
    code, body = await call(http, "POST", WIDGETS, widget("e", image="x"))
    assert (code, body["reason"], body["kind"]) == (409, "AlreadyExists", "Status")
    code, body = await call(http, "GET", f"{WIDGETS}/nope")
    assert (code, body["reason"]) == (404, "NotFound")
    assert body["message"] == 'widgets.sandbox.test "nope" not found'
    stale = widget("e", image="y")
    stale["metadata"]["resourceVersion"] = "1"
    code, body = await call(http, "PUT", f"{WIDGETS}/e", stale)
    assert (code, body["reason"]) == (409, "Conflict")
    test_op = [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}]
    code, body = await call(http, "PATCH", f"{WIDGETS}/e", test_op, "application/json-patch+json")
    assert (code, body["reason"]) == (422, "Invalid")


async def test_lists_namespaces_and_discovery(http: aiohttp.ClientSession) -> None:
    code, body = await call(http, "GET", "/api/v1/namespaces")
    assert body["kind"] == "NamespaceList" and body["apiVersion"] == "v1" and body["metadata"]["resourceVersion"]
    assert "default" in {n["metadata"]["name"] for n in body["items"]}
    code, body = await call(http, "GET", "/api/v1/namespaces/default")
    assert code == 200 and body["kind"] == "Namespace"
    code, body = await call(http, "GET", "/api/v1")
    assert body["groupVersion"] == "v1"
    code, body = await call(http, "GET", "/apis/apps/v1")
    subs = [r for r in body["resources"] if "/" in r["name"]]
    assert subs and all("shortNames" not in r for r in subs)


async def test_label_selectors(http: aiohttp.ClientSession) -> None:
    for name, labels in [("a", {"app": "x", "tier": "web"}), ("b", {"app": "y"}), ("c", {"app": "z", "d": "1"})]:
        await call(http, "POST", CMS, {"metadata": {"name": name, "labels": labels}})

    async def names(selector: str) -> set[str]:
        async with http.get(CMS, params={"labelSelector": selector}) as resp:
            return {i["metadata"]["name"] for i in (await resp.json())["items"]}

    assert await names("app=x") == {"a"}
    assert await names("app in (x,y),!d") == {"a", "b"}
    assert await names("app,tier") == {"a"}
    assert await names("app!=x") == {"b", "c"}


async def test_strategic_merge_keeps_other_containers(http: aiohttp.ClientSession) -> None:
    dep = {"metadata": {"name": "m"}, "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}}, "template": {
        "metadata": {"labels": {"a": "b"}},
        "spec": {"containers": [{"name": "one", "image": "i1"}, {"name": "two", "image": "i2"}]}}}}
    await call(http, "POST", "/apis/apps/v1/namespaces/default/deployments", dep)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "two", "image": "i3"}]}}}}
    _, obj = await call(http, "PATCH", "/apis/apps/v1/namespaces/default/deployments/m", patch,
                           "application/strategic-merge-patch+json")
    assert [c["image"] for c in obj["spec"]["template"]["spec"]["containers"]] == ["i1", "i3"]


async def test_finalizers_hold_deletion(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    await call(http, "POST", CMS, {"metadata": {"name": "f", "finalizers": ["x/y"]}})
    code, obj = await call(http, "DELETE", f"{CMS}/f")
    assert code == 200 and obj["metadata"]["deletionTimestamp"]
    assert sandbox.get("configmaps", "default", "f") is not None
    await call(http, "PATCH", f"{CMS}/f", {"metadata": {"finalizers": None}}, "application/merge-patch+json")
    assert sandbox.get("configmaps", "default", "f") is None


async def test_ownerreference_gc_cascades(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    _, owner = await call(http, "POST", CMS, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    _, child = await call(http, "POST", CMS, {"metadata": {"name": "child", "ownerReferences": [ref]}})
    ref2 = {"apiVersion": "v1", "kind": "ConfigMap", "name": "child", "uid": child["metadata"]["uid"]}
    await call(http, "POST", CMS, {"metadata": {"name": "grandchild", "ownerReferences": [ref2]}})
    await call(http, "POST", CMS, {"metadata": {"name": "bystander"}})
    await call(http, "DELETE", f"{CMS}/owner")
    await eventually(lambda: {c["metadata"]["name"] for c in sandbox.objects("configmaps", "default")} == {"bystander"})


async def test_watch_streams_json_and_resumes(http: aiohttp.ClientSession) -> None:
    _, listed = await call(http, "GET", CMS)
    rv = listed["metadata"]["resourceVersion"]
    await call(http, "POST", CMS, {"metadata": {"name": "w1"}})
    params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "2"}
    async with http.get(CMS, params=params) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        first = json.loads(await asyncio.wait_for(resp.content.readline(), 5))
    assert first["type"] == "ADDED" and first["object"]["metadata"]["name"] == "w1"


async def test_crd_created_over_api_is_served(http: aiohttp.ClientSession) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "gizmos.sandbox.test"},
           "spec": {"group": "sandbox.test", "scope": "Namespaced",
                    "names": {"plural": "gizmos", "kind": "Gizmo"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                                                 "x-kubernetes-preserve-unknown-fields": True}}}]}}
    code, _ = await call(http, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert code == 201
    code, obj = await call(http, "POST", "/apis/sandbox.test/v1/namespaces/default/gizmos",
                           {"apiVersion": "sandbox.test/v1", "kind": "Gizmo", "metadata": {"name": "g"}})
    assert code == 201 and obj["kind"] == "Gizmo"


async def test_events_accepted(http: aiohttp.ClientSession) -> None:
    code, _ = await call(http, "POST", "/api/v1/namespaces/default/events",
                         {"metadata": {"name": "e1"}, "reason": "Test", "message": "m"})
    assert code == 201
    code, _ = await call(http, "POST", "/apis/events.k8s.io/v1/namespaces/default/events",
                         {"metadata": {"name": "e2"}, "reason": "Test", "note": "n"})
    assert code == 201


async def test_missing_namespace_is_404(http: aiohttp.ClientSession) -> None:
    code, body = await call(http, "POST", "/api/v1/namespaces/ghost/configmaps", {"metadata": {"name": "x"}})
    assert (code, body["reason"]) == (404, "NotFound")
