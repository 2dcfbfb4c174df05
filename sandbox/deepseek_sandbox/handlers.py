"""Resource verbs over HTTP: get, list, watch, create, update, patch, delete, /status, /scale.

Each function takes a parsed :class:`Call` and answers like kube-apiserver: lists carry
``kind: XList``, ``apiVersion`` and ``metadata.resourceVersion`` (kmock 0.8 sends neither), watch
streams are JSON lines with a JSON content type (kmock sends application/octet-stream, which
kubectl refuses), and Tables are rendered when asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
from typing import Any

import aiohttp.web
import yaml

from . import errors, patches, selectors, tables
from .gc import GarbageCollector
from .resources import ResourceInfo
from .store import Store


@dataclasses.dataclass
class Call:
    """One parsed resource request."""

    method: str
    info: ResourceInfo
    namespace: str | None
    name: str | None
    subresource: str | None
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    raw: aiohttp.web.BaseRequest

    @property
    def accept(self) -> str:
        return self.headers.get("Accept", "")

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "application/json")

    @property
    def dry_run(self) -> bool:
        return bool(self.params.get("dryRun"))

    def data(self) -> Any:
        """The decoded body (JSON, or YAML for server-side apply); 400 if undecodable."""
        if not self.body:
            return None
        if "protobuf" in self.content_type or "cbor" in self.content_type:
            # kmock gap (and ours): no protobuf/CBOR decoding; clients fall back to JSON on 415.
            msg = f"the body of the request was in an unknown format: {self.content_type}"
            raise errors.ApiError(415, "UnsupportedMediaType", msg)
        try:
            if self.content_type.startswith(patches.APPLY):
                return yaml.safe_load(self.body)
            return json.loads(self.body)
        except (ValueError, yaml.YAMLError) as exc:
            raise errors.bad_request(f"unable to decode the request body: {exc}") from exc


def _json(obj: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.json_response(obj, status=status)


def _render(call: Call, store: Store, objs: list[dict[str, Any]], single: bool) -> aiohttp.web.Response:
    if tables.wants_table(call.accept):
        return _json(tables.table(call.info, objs, str(store.rv), call.params.get("includeObject", "Object")))
    if single:
        return _json(objs[0])
    info = call.info
    return _json({"kind": f"{info.kind}List", "apiVersion": info.api_version,
                  "metadata": {"resourceVersion": str(store.rv)}, "items": objs})


def _matches(call: Call) -> selectors.Predicate:
    labels = selectors.label_selector(call.params.get("labelSelector"))
    fields = selectors.field_selector(call.params.get("fieldSelector"))
    ns = call.namespace
    name = call.name
    return lambda o: (
        (ns is None or o["metadata"].get("namespace") == ns)
        and (name is None or o["metadata"]["name"] == name)
        and labels(o) and fields(o)
    )


async def get(call: Call, store: Store) -> aiohttp.web.StreamResponse:
    """GET of an object, its /status, its /scale, or a (selected) list."""
    if call.params.get("watch") in ("true", "1"):
        return await watch(call, store)
    if call.name is None:
        match = _matches(call)
        return _render(call, store, [o for o in store.items(call.info, call.namespace) if match(o)], single=False)
    obj = store.get(call.info, call.namespace, call.name)
    if call.subresource == "scale":
        return _json(to_scale(call.info, obj))
    return _render(call, store, [obj], single=True)


async def watch(call: Call, store: Store) -> aiohttp.web.StreamResponse:
    """A JSON-lines watch stream (``application/json;stream=watch``), ended by timeoutSeconds."""
    since_param = call.params.get("resourceVersion", "")
    since = int(since_param) if since_param.isdigit() and since_param != "0" else None
    timeout = float(call.params["timeoutSeconds"]) if call.params.get("timeoutSeconds") else None
    match = _matches(call)
    as_table = tables.wants_table(call.accept)
    response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json;stream=watch"})
    await response.prepare(call.raw)
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(timeout):
            initial_events_end = call.params.get("sendInitialEvents") == "true"
            async for event in store.watch(call.info, since, initial_events_end):
                if event["type"] != "BOOKMARK" and not match(event["object"]):
                    continue
                if as_table and event["type"] != "BOOKMARK":
                    event = {"type": event["type"], "object": tables.table(call.info, [event["object"]], str(store.rv))}
                await response.write(json.dumps(event).encode() + b"\n")
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


async def create(call: Call, store: Store) -> aiohttp.web.StreamResponse:
    """POST to a collection: 201 with the created object."""
    body = call.data()
    if not isinstance(body, dict):
        raise errors.bad_request("the body must be a JSON object")
    if call.subresource is not None or call.name is not None:
        raise errors.method_not_allowed("create is only supported on collections")
    obj = await store.create(call.info, call.namespace, body, dry_run=call.dry_run)
    return _json(obj, status=201)


async def replace(call: Call, store: Store) -> aiohttp.web.StreamResponse:
    """PUT of an object, /status or /scale; the body's resourceVersion is a precondition."""
    body = call.data()
    if not isinstance(body, dict) or call.name is None:
        raise errors.bad_request("the body must be a JSON object")
    if call.subresource == "scale":
        return await _write_scale(call, store, lambda scale: body)
    obj = await store.update(call.info, call.namespace, call.name, lambda _old: body, call.subresource, call.dry_run)
    return _json(obj)


async def patch(call: Call, store: Store) -> aiohttp.web.StreamResponse:
    """PATCH (merge, JSON, strategic, or apply-as-merge) of an object, /status or /scale."""
    body = call.data()
    assert call.name is not None  # routed only for named objects
    if call.subresource == "scale":
        return await _write_scale(call, store, lambda scale: patches.apply_patch(call.content_type, scale, body))
    if call.content_type.startswith(patches.APPLY) and store.current(call.info, call.namespace, call.name) is None:
        # Server-side apply creates what is missing.
        return _json(await store.create(call.info, call.namespace, body, dry_run=call.dry_run), status=201)
    change = lambda old: patches.apply_patch(call.content_type, old, body)  # noqa: E731
    obj = await store.update(call.info, call.namespace, call.name, change, call.subresource, call.dry_run)
    return _json(obj)


async def delete(call: Call, store: Store, gc: GarbageCollector) -> aiohttp.web.StreamResponse:
    """DELETE of an object (finalizers honoured, dependents collected) or of a selected collection."""
    opts = call.data() or {}
    policy = call.params.get("propagationPolicy") or opts.get("propagationPolicy") or "Background"
    if call.params.get("orphanDependents") == "true" or opts.get("orphanDependents"):
        policy = "Orphan"
    if call.name is None:
        match = _matches(call)
        gone = [o for o in store.items(call.info, call.namespace) if match(o)]
        for obj in gone:
            await _delete_one(call, store, gc, obj["metadata"]["name"], policy, {})
        return _render(call, store, gone, single=False)
    obj = await _delete_one(call, store, gc, call.name, policy, opts.get("preconditions") or {})
    return _json(obj)


async def _delete_one(call: Call, store: Store, gc: GarbageCollector, name: str, policy: str,
                      pre: dict[str, Any]) -> dict[str, Any]:
    current = store.get(call.info, call.namespace, name)
    if pre.get("resourceVersion") and pre["resourceVersion"] != current["metadata"]["resourceVersion"]:
        raise errors.conflict(call.info.plural, call.info.group, name)
    if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
        raise errors.conflict(call.info.plural, call.info.group, name)
    if call.dry_run:
        return current
    if policy == "Orphan":
        gc.orphan.add(current["metadata"]["uid"])
    obj, _gone = await store.delete(call.info, call.namespace, name)
    return obj


def _get_path(obj: Any, path: str) -> Any:
    for part in path.strip(".").split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value


def to_scale(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
    """The autoscaling/v1 Scale view of ``obj`` through the resource's scale paths."""
    assert info.scale is not None
    md = obj["metadata"]
    status: dict[str, Any] = {"replicas": _get_path(obj, info.scale.status_replicas) or 0}
    if info.scale.label_selector:
        selector = _get_path(obj, info.scale.label_selector)
        if info.kind == "Deployment" and info.group == "apps":
            selector = selectors.selector_from_match_labels(_get_path(obj, ".spec.selector"))
        if selector:
            status["selector"] = selector
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in md},
        "spec": {"replicas": _get_path(obj, info.scale.spec_replicas) or 0},
        "status": status,
    }


async def _write_scale(call: Call, store: Store, change: Any) -> aiohttp.web.StreamResponse:
    info = call.info
    if info.scale is None:
        raise errors.not_found(f"{info.plural}/scale", info.group, call.name or "")
    assert call.name is not None

    def apply(old: dict[str, Any]) -> dict[str, Any]:
        scale = change(to_scale(info, old))
        assert info.scale is not None
        new = copy.deepcopy(old)
        _set_path(new, info.scale.spec_replicas, (scale.get("spec") or {}).get("replicas", 0))
        new["metadata"]["resourceVersion"] = (scale.get("metadata") or {}).get("resourceVersion")
        return new

    obj = await store.update(info, call.namespace, call.name, apply, None, call.dry_run)
    return _json(to_scale(info, obj))
