"""The one place that talks to the Kubernetes API (through kr8s' authenticated httpx session).

Apply is an owned-field diff (DESIGN principle 3): the desired object is compared with the live one
field by field; only a difference, or a field the operator set before and no longer wants, leads to
a JSON merge patch. What the operator last applied is kept in the `deepseek.ai/last-applied`
annotation (like kubectl's client-side apply) so removed fields can be nulled out. A second apply of
an unchanged object writes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import kr8s.asyncio

from deepseek_operator import metrics
from deepseek_operator.settings import DEFAULT_MAX_IN_FLIGHT

LAST_APPLIED = "deepseek.ai/last-applied"
# httpx keeps 20 connections alive by default: this many requests in flight reuse them all.
Page = tuple[list[dict[str, Any]], str, str]  # (items, resourceVersion, continue token)
MERGE_PATCH = "application/merge-patch+json"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True


KINDS = {
    (k.api_version, k.kind): k
    for k in (
        Kind("apps/v1", "Deployment", "deployments"),
        Kind("v1", "Service", "services"),
        Kind("v1", "Pod", "pods"),
        Kind("v1", "Event", "events"),  # read only: pods' volume warnings (cache.py, observe.py)
        Kind("networking.k8s.io/v1", "Ingress", "ingresses"),
        Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
        Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        Kind("batch/v1", "Job", "jobs"),
        Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        Kind("v1", "ConfigMap", "configmaps"),
        Kind("v1", "ServiceAccount", "serviceaccounts"),
        Kind("rbac.authorization.k8s.io/v1", "Role", "roles"),
        Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
        Kind("networking.k8s.io/v1", "IngressClass", "ingressclasses", namespaced=False),
        Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes"),
        Kind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors"),
        Kind("monitoring.coreos.com/v1", "PrometheusRule", "prometheusrules"),
        Kind("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "leaderworkersets"),  # multi-node workers
        Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
        Kind("keda.sh/v1alpha1", "ScaledObject", "scaledobjects"),
        Kind("deepseek.ai/v1alpha1", "DeepSeekDeployment", "deepseekdeployments"),
    )
}


class ApiError(RuntimeError):
    """A non-2xx answer the caller did not expect. `code` is the HTTP status; `retry_after` the
    seconds of a `Retry-After` header (None without one, or in the HTTP-date form)."""

    def __init__(self, code: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After: 7` -> 7.0; absent or not a number of seconds -> None."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def kind_of(obj: dict[str, Any]) -> Kind:
    return KINDS[(obj["apiVersion"], obj["kind"])]


def is_subset(desired: Any, live: Any) -> bool:
    """True when every field of `desired` has the same value in `live` (lists: same length, per item)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and is_subset(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(map(is_subset, desired, live))
    return bool(desired == live) or (isinstance(desired, (int, float)) and str(desired) == str(live))


# Fields a child's previous apply set that are handed over, not nulled, when the operator stops rendering
# them: a workload's replica count goes to its autoscaler (render/workload.replicas_field); nulling it
# would reset the Deployment to 1 pod before KEDA or the HPA writes its own.
HANDED_OVER = (("spec", "replicas"),)


def removals(previous: Any, desired: Any, live: Any, path: tuple[str, ...] = ()) -> Any:
    """Merge-patch nulls for dict keys set by the previous apply, absent now, and still live (except
    HANDED_OVER). None: none."""
    if not (isinstance(previous, dict) and isinstance(desired, dict) and isinstance(live, dict)):
        return None
    patch: dict[str, Any] = {}
    for key, old in previous.items():
        if key not in live or (*path, key) in HANDED_OVER:
            continue
        if key not in desired:
            patch[key] = None
        else:
            sub = removals(old, desired[key], live[key], (*path, key))
            if sub:
                patch[key] = sub
    return patch or None


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_patch(desired: dict[str, Any], live: dict[str, Any], canonical: str | None = None) -> dict[str, Any] | None:
    """The merge patch that brings `live` to `desired`, or None when nothing needs writing.
    `canonical`: `_canonical(desired)`, when the caller has it already."""
    canonical = canonical if canonical is not None else _canonical(desired)
    annotations = live.get("metadata", {}).get("annotations") or {}
    recorded = annotations.get(LAST_APPLIED)
    if recorded == canonical:  # the last apply was this one (the common case): no parse, nothing to null
        nulls, same = None, True
    else:
        previous = json.loads(recorded or "{}")
        nulls, same = removals(previous, desired, live), previous == desired
    if nulls is None and same and is_subset(desired, live):
        return None
    record = {"metadata": {"annotations": {LAST_APPLIED: canonical}}}
    return _deep_merge(_deep_merge(desired, nulls or {}), record)  # fresh dicts: `desired` stays as given


# Connections the HTTP pool may hold, open or idle: the operator bounds them itself, by the informers'
# watches (one connection each, held for minutes) plus the in-flight limit (K8s `max_in_flight`).
POOL_CONNECTIONS = 10_000


def _unbounded_pool(api: Any) -> None:
    """Let kr8s's httpx client keep every connection it opened (each new one is a TLS handshake).

    httpcore 1.0.9 closes an idle connection whenever the pool holds more connections than
    `max_keepalive_connections` (20 by default), counting busy ones too
    (https://github.com/encode/httpcore/pull/1000). With the informers' watches holding about 19
    connections, every request then opened a connection and closed it after the answer: a TLS
    handshake per write, a fifth of the operator's CPU at 300 resources (py-spy). And a pool of
    `max_connections` 100 would be filled by the watches of seven namespaces, queueing every other
    request behind watches that last minutes. kr8s creates the client itself (again after a
    re-authentication), so the limits are raised each time it does; private attributes of the
    pinned httpx/httpcore, checked by tests/e2e/test_api_client.py.
    """
    create = api._create_session

    def unbound() -> None:
        if api._session is not None:
            pool = api._session._transport._pool
            pool._max_connections = pool._max_keepalive_connections = POOL_CONNECTIONS

    async def create_unbounded() -> None:
        await create()
        unbound()

    api._create_session = create_unbounded
    unbound()  # kr8s made one already, to check the server's version


def _canonical(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


class K8s:
    """Thin async wrapper over the API. Raises ApiError on unexpected answers."""

    def __init__(self, api: Any, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self._api = api
        self.cache: dict[str, Any] = {}  # per-client memo, e.g. discovery answers (integrations.py)
        # Requests in flight at once (watches apart). Without a bound, a burst of reconciles queues
        # hundreds of requests in httpx's connection pool, whose assignment of requests to connections
        # is quadratic, and connections beyond its keep-alive limit are closed and re-opened with a TLS
        # handshake each: at 1000 resources that was most of the operator's CPU (py-spy).
        self._in_flight = asyncio.Semaphore(max_in_flight)
        # (plural, namespace, name) -> (resourceVersion, digest of the desired object) last found in
        # sync: the same live version against the same desired object needs no comparison again
        # (most of an idle reconcile's CPU was is_subset over unchanged children).
        self._in_sync: dict[tuple[str, str, str], tuple[str, bytes]] = {}

    @classmethod
    async def connect(cls, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> K8s:
        """From $KUBECONFIG / ~/.kube/config, or the in-cluster service account."""
        api = await kr8s.asyncio.api()
        _unbounded_pool(api)
        return cls(api, max_in_flight)

    async def _call(self, method: str, api_version: str, path: str, namespace: str | None = None,
                    **kwargs: Any) -> httpx.Response:
        async with self._in_flight, self._api.call_api(method, version=api_version, namespace=namespace, url=path,
                                                       raise_for_status=False, **kwargs) as response:
            if response.status_code >= 400 and response.status_code != 404:
                metrics.record_api_error(method, response.status_code)
            return response  # type: ignore[no-any-return]

    @staticmethod
    def _raise(response: httpx.Response) -> None:
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise ApiError(response.status_code, message, retry_after_seconds(response.headers.get("Retry-After")))

    async def get(self, kind: Kind, namespace: str | None, name: str, sub: str = "") -> dict[str, Any] | None:
        path = f"{kind.plural}/{name}" + (f"/{sub}" if sub else "")
        resp = await self._call("GET", kind.api_version, path, namespace if kind.namespaced else None)
        if resp.status_code == 404:
            return None
        self._raise(resp)
        return dict(resp.json())

    async def list(self, kind: Kind, namespace: str | None, selector: dict[str, str]) -> list[dict[str, Any]]:
        """Objects of `kind` in `namespace` whose labels match `selector` exactly. [] if the API is absent."""
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in sorted(selector.items()))}
        resp = await self._call("GET", kind.api_version, kind.plural, namespace, params=params)
        if resp.status_code == 404:
            return []
        self._raise(resp)
        items: list[dict[str, Any]] = resp.json().get("items", [])
        for item in items:  # lists carry no per-item kind/apiVersion
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
        return items

    async def list_page(self, kind: Kind, namespace: str | None, params: dict[str, str],
                        ) -> Page | None:
        """One page of a list: (items, the list's resourceVersion, the continue token). None: API absent."""
        resp = await self._call("GET", kind.api_version, kind.plural, namespace, params=params)
        if resp.status_code == 404:
            return None
        self._raise(resp)
        body = resp.json()
        items: list[dict[str, Any]] = body.get("items", [])
        for item in items:
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
        meta = body.get("metadata", {})
        return items, str(meta.get("resourceVersion", "")), str(meta.get("continue", "") or "")

    async def watch(self, kind: Kind, namespace: str | None, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch request (`watch=true` is added), until the server ends it.

        Raises ApiError when the request itself is refused (403, 404 for an absent API, 410).
        """
        async with self._api.call_api("GET", version=kind.api_version, namespace=namespace, url=kind.plural,
                                      raise_for_status=False, stream=True,
                                      params={**params, "watch": "true"}) as response:
            if response.status_code >= 400:
                await response.aread()
                metrics.record_api_error("WATCH", response.status_code)
                self._raise(response)
            async for line in response.aiter_lines():
                if line.strip():
                    yield json.loads(line)

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind = kind_of(obj)
        resp = await self._call("POST", kind.api_version, kind.plural, obj["metadata"].get("namespace"), json=obj)
        self._raise(resp)
        return dict(resp.json())

    async def patch(self, kind: Kind, namespace: str | None, name: str, patch: dict[str, Any],
                    sub: str = "") -> dict[str, Any]:
        path = f"{kind.plural}/{name}" + (f"/{sub}" if sub else "")
        resp = await self._call("PATCH", kind.api_version, path, namespace, content=json.dumps(patch),
                                headers={"Content-Type": MERGE_PATCH})
        self._raise(resp)
        return dict(resp.json())

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        """Delete (background propagation); the object as the server last had it, None if already gone."""
        self._in_sync.pop((kind.plural, namespace or "", name), None)
        resp = await self._call("DELETE", kind.api_version, f"{kind.plural}/{name}", namespace,
                                json={"propagationPolicy": "Background"})
        if resp.status_code == 404:
            return None
        self._raise(resp)
        body = resp.json()
        return dict(body) if body.get("kind") != "Status" else None

    async def served(self, api_version: str) -> set[str]:
        """Plurals served under a group version; empty when the API is not installed."""
        group, _, version = api_version.rpartition("/")
        base = f"/apis/{group}" if group else "/api"
        resp = await self._call("GET", "", version, base=base)
        if resp.status_code == 404:
            return set()
        self._raise(resp)
        return {r["name"] for r in resp.json().get("resources", []) if "/" not in r["name"]}

    async def apply(self, desired: dict[str, Any], create_only: bool = False) -> str:
        """Create or patch `desired` to match. Returns created, patched or unchanged.

        `create_only`: an object that exists is left as it is (immutable specs, such as a Job's pod
        template or a claim's, and data another party owns)."""
        kind, meta = kind_of(desired), desired["metadata"]
        live = await self.get(kind, meta.get("namespace"), meta["name"])
        if live is None:
            body = _deep_merge(desired, {"metadata": {"annotations": {LAST_APPLIED: _canonical(desired)}}})
            await self.create(body)
            return "created"
        if create_only:
            return "unchanged"
        canonical = _canonical(desired)
        key = (kind.plural, meta.get("namespace") or "", meta["name"])
        version = (str(live.get("metadata", {}).get("resourceVersion", "")),
                   hashlib.blake2b(canonical.encode(), digest_size=16).digest())
        if version[0] and self._in_sync.get(key) == version:
            return "unchanged"
        patch = apply_patch(desired, live, canonical)
        if patch is None:
            self._in_sync[key] = version
            return "unchanged"
        await self.patch(kind, meta.get("namespace"), meta["name"], patch)
        return "patched"


async def list_by_name(api: K8s, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
    """One object read from the API through a list by name (`fieldSelector=metadata.name=...`), as
    `kubectl wait` reads one: `list` is granted for every kind the operator reads, so it needs no `get`
    (RBAC). None: no such object, or the kind's API is not served. Always one request (no cache)."""
    page = await api.list_page(kind, namespace, {"fieldSelector": f"metadata.name={name}"})
    return page[0][0] if page and page[0] else None
