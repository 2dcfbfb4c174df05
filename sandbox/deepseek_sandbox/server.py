"""The emulated Kubernetes API: a ``kmock.KubernetesEmulator`` subclass with our realism layer.

kmock provides the HTTP server (``kmock.Server``), the object array (``emulator.objects``), the
request log and the resource declarations. Its request parser and its naive write path are
replaced: kmock 0.8 fails with 500 on ``/api/v1/namespaces[/NAME]`` (path parser), PUT is not an
update, and writes carry none of the apiserver's rules (see :mod:`.store`, :mod:`.handlers`).
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp.web
import attrs
import kmock

from . import discovery, errors, handlers, openapi
from .gc import GarbageCollector
from .resources import ResourceInfo, from_crd
from .stats import WriteStats
from .store import Store

_CORE = re.compile(r"^/api/(?P<version>v1)(?P<rest>/.*)?$")
_GROUP = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)(?P<rest>/.*)?$")
_NS_SUBRESOURCES = {"status", "finalize"}
REQUEST_LOG = 2000  # kmock keeps every request forever; keep the last N for long sandbox runs


def _split_rest(rest: str) -> tuple[str | None, str | None, str | None, str | None]:
    """``/namespaces/ns/pods/x/status`` -> (namespace, plural, name, subresource)."""
    parts = [p for p in rest.split("/") if p]
    if not parts:
        return None, None, None, None
    if parts[0] == "namespaces" and len(parts) >= 3 and parts[2] not in _NS_SUBRESOURCES:
        namespace, parts = parts[1], parts[2:]
    else:
        namespace = None
    padded: list[str | None] = [*parts, None, None, None]
    sub = "/".join(parts[2:]) or None
    return namespace, padded[0], padded[1], sub


@attrs.define(kw_only=True)
class SandboxEmulator(kmock.KubernetesEmulator):
    """kmock's emulator answering like kube-apiserver; ``store`` holds the objects and rules."""

    store: Store = attrs.field(init=False)
    gc: GarbageCollector = attrs.field(init=False)
    writes: WriteStats = attrs.field(init=False, factory=WriteStats)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.store = Store(self.objects)
        self.gc = GarbageCollector(self.store)
        self.store.listeners.append(self._on_crd_event)

    def register(self, info: ResourceInfo) -> None:
        """Serve a resource (also declared to kmock, whose discovery we override)."""
        self.store.register(info)
        self.resources[f"{info.group}/{info.version}/{info.plural}" if info.group else f"v1/{info.plural}"] = {
            "namespaced": info.namespaced, "kind": info.kind, "singular": info.singular,
            "verbs": [], "shortnames": list(info.short_names), "categories": list(info.categories),
            "subresources": info.subresources,
        }

    def _on_crd_event(self, info: ResourceInfo, kind: str, obj: dict[str, Any]) -> None:
        # kmock gap: creating a CRD object does not register its resource; do it here.
        if info.plural != "customresourcedefinitions" or kind == "DELETED":
            return
        for crd_info in from_crd(obj):
            self.register(crd_info)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw_request.read()
        self._record(raw_request, body)
        try:
            return await self._route(raw_request, body)
        except errors.ApiError as exc:
            return exc.response()

    def _record(self, raw: aiohttp.web.BaseRequest, body: bytes) -> None:
        self._requests.append(kmock.Request(
            id=len(self._requests), method=raw.method, url=raw.url, params=dict(raw.query),
            headers=dict(raw.headers), body=body,
        ))
        del self._requests[:-REQUEST_LOG]

    async def _route(self, raw: aiohttp.web.BaseRequest, body: bytes) -> aiohttp.web.StreamResponse:
        path = raw.path.rstrip("/") or "/"
        if path.startswith("/sandbox/v1/stats"):
            return self._serve_stats(raw, path)
        core, group = _CORE.match(path), _GROUP.match(path)
        match = core or group
        if match is None:
            return self._serve_meta(raw, path)
        grp = "" if core else match.group("group")
        namespace, plural, name, sub = _split_rest(match.group("rest") or "")
        if plural is None:
            return self._serve_discovery(grp, match.group("version"))
        info = self.store.lookup(grp, match.group("version"), plural)
        if info is None:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub is not None and sub not in info.subresources:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        call = handlers.Call(raw.method, info, namespace if info.namespaced else None, name, sub,
                             dict(raw.query), dict(raw.headers), body, raw)
        return await self._serve_resource(call)

    async def _serve_resource(self, call: handlers.Call) -> aiohttp.web.StreamResponse:
        if call.method in ("POST", "PUT", "PATCH", "DELETE"):
            res = f"{call.info.plural}.{call.info.group}" if call.info.group else call.info.plural
            self.writes.record(call.method, res, call.subresource or "", collection=call.name is None)
        if call.method == "GET":
            return await handlers.get(call, self.store)
        if call.method == "POST":
            return await handlers.create(call, self.store)
        if call.name is None and call.method != "DELETE":
            raise errors.method_not_allowed(f"{call.method} is not supported on collections")
        if call.method == "PUT":
            return await handlers.replace(call, self.store)
        if call.method == "PATCH":
            return await handlers.patch(call, self.store)
        if call.method == "DELETE":
            return await handlers.delete(call, self.store, self.gc)
        raise errors.method_not_allowed(f"{call.method} is not supported")

    def _serve_discovery(self, group: str, version: str) -> aiohttp.web.Response:
        doc = discovery.resource_list(list(self.store.resources.values()), group, version)
        if doc is None:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        return aiohttp.web.json_response(doc)

    def _serve_meta(self, raw: aiohttp.web.BaseRequest, path: str) -> aiohttp.web.Response:
        resources = list(self.store.resources.values())
        if path == "/api":
            return aiohttp.web.json_response(discovery.api_versions())
        if path == "/apis":
            return aiohttp.web.json_response(discovery.api_group_list(resources))
        if path.startswith("/apis/") and path.count("/") == 2:
            doc = discovery.api_group(resources, path.split("/")[2])
            if doc is not None:
                return aiohttp.web.json_response(doc)
        if path == "/version":
            return aiohttp.web.json_response(discovery.VERSION_INFO)
        if path == "/openapi/v3":
            return aiohttp.web.json_response(openapi.root(resources))
        if path.startswith("/openapi/v3/"):
            gv = openapi.group_version(resources, path.removeprefix("/openapi/v3/"))
            if gv is not None:
                return aiohttp.web.json_response(gv)
        if path in ("/healthz", "/readyz", "/livez"):
            return aiohttp.web.Response(text="ok")
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")

    def _serve_stats(self, raw: aiohttp.web.BaseRequest, path: str) -> aiohttp.web.Response:
        if raw.method == "POST" and path.endswith("/reset"):
            self.writes.reset()
        elif raw.method != "GET":
            raise errors.method_not_allowed("GET /sandbox/v1/stats or POST /sandbox/v1/stats/reset")
        return aiohttp.web.json_response(self.writes.to_json())
