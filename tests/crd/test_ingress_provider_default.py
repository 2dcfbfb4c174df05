"""The ingress provider's default is gateway-api (ingress-nginx was retired in 2026; still supported).

One default in three places that must agree: the pydantic model, the CRD (what the apiserver persists)
and so the rendering. On the real apiserver: a spec without `provider` is stored as gateway-api and
needs `gateway.parentRefs`; an explicit ingress-nginx is kept. docs/traffic.md has the upgrade note.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from crd_support import resource, schema

from deepseek_operator.api import IngressSpec, parse_spec
from deepseek_operator.render.common import Capabilities, Owner
from deepseek_operator.render.ingress import render_ingress
from deepseek_sandbox.real_cluster import RealCluster

HOST = "chat.example.com"
PARENT_REFS = {"parentRefs": [{"name": "public", "namespace": "gateway-system"}]}


def test_the_model_defaults_to_gateway_api() -> None:
    assert IngressSpec.model_validate({"host": HOST}).provider == "gateway-api"


def test_the_crd_defaults_to_gateway_api() -> None:
    provider = schema()["properties"]["spec"]["properties"]["ingress"]["properties"]["provider"]
    assert provider["default"] == "gateway-api"
    assert set(provider["enum"]) == {"gateway-api", "ingress-nginx"}, "ingress-nginx stays supported"


def test_a_spec_without_provider_renders_an_httproute() -> None:
    spec = parse_spec({"image": "img:1", "model": {"id": "m"}, "ingress": {"host": HOST, "gateway": PARENT_REFS}})
    objects = render_ingress(Owner("chat", "llm", "uid-1"), spec, {"primary": 100}, Capabilities(gateway_api=True))
    kinds = [o["kind"] for o in objects]
    assert kinds == ["HTTPRoute"]


def test_a_spec_without_provider_or_parent_refs_is_refused_in_code() -> None:
    with pytest.raises(ValueError, match=r"gateway\.parentRefs"):
        parse_spec({"image": "img:1", "model": {"id": "m"}, "ingress": {"host": HOST}})


@pytest.fixture(scope="module")
def namespace(real_cluster: RealCluster) -> Any:
    with real_cluster.scratch_namespace("ingress-default") as name:
        yield name


def _dry_run_create(cluster: RealCluster, namespace: str, ingress: dict[str, Any]) -> httpx.Response:
    obj = resource({"ingress": ingress}, name="ingress-default")
    obj["metadata"]["namespace"] = namespace
    return cluster.http.post(cluster.resource("dsd").path(namespace), json=obj,
                             params={"dryRun": "All", "fieldValidation": "Strict"})


def test_the_apiserver_stores_gateway_api_when_provider_is_unset(real_cluster: RealCluster, namespace: str) -> None:
    created = _dry_run_create(real_cluster, namespace, {"host": HOST, "gateway": PARENT_REFS})
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["ingress"]["provider"] == "gateway-api"


def test_the_apiserver_asks_for_parent_refs_when_provider_is_unset(real_cluster: RealCluster,
                                                                    namespace: str) -> None:
    refused = _dry_run_create(real_cluster, namespace, {"host": HOST})
    assert refused.status_code == 422, refused.text
    assert "spec.ingress.gateway.parentRefs" in refused.text


def test_the_apiserver_keeps_an_explicit_ingress_nginx(real_cluster: RealCluster, namespace: str) -> None:
    created = _dry_run_create(real_cluster, namespace, {"provider": "ingress-nginx", "host": HOST})
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["ingress"]["provider"] == "ingress-nginx"


def test_a_stored_ingress_nginx_survives_a_reapply_without_provider(real_cluster: RealCluster, namespace: str) -> None:
    """The upgrade note's promise: an object stored with the old default keeps it when its manifest (no
    provider) is applied again. A defaulted field has no manager; emulated by clearing managedFields."""
    obj = resource({"ingress": {"provider": "ingress-nginx", "host": HOST}}, name="stored-before-upgrade")
    obj["metadata"]["namespace"] = namespace
    path = real_cluster.resource("dsd").path(namespace)
    created = real_cluster.http.post(path, json=obj)
    assert created.status_code == 201, created.text
    item = f"{path}/stored-before-upgrade"
    try:
        cleared = real_cluster.http.patch(item, json={"metadata": {"managedFields": [{}]}},
                                          headers={"Content-Type": "application/merge-patch+json"})
        assert cleared.status_code == 200 and not cleared.json()["metadata"].get("managedFields"), cleared.text
        manifest = resource({"ingress": {"host": HOST}}, name="stored-before-upgrade")
        manifest["metadata"]["namespace"] = namespace
        applied = real_cluster.http.patch(item, content=json.dumps(manifest), params={"fieldManager": "user"},
                                          headers={"Content-Type": "application/apply-patch+yaml"})
        assert applied.status_code == 200, applied.text
        assert applied.json()["spec"]["ingress"]["provider"] == "ingress-nginx"
    finally:
        real_cluster.http.delete(item)
