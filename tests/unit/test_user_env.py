"""spec.env, spec.variants[].env and model.cache.env (issue 18 item 6), and the serving settings the
operator renders for the worker's edge (issue 18 item 20): what reaches the containers, that nothing
the user gave is lost, that the refused names are exactly what the renderers set (so the CRD's list
cannot drift from them), that the worker and uvicorn read what is rendered, and that the real
apiserver holds the rendered Deployment and Job unchanged.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from upstream_crds import kube_validate

from deepseek_operator import envvars
from deepseek_operator.api import DeepSeekDeploymentSpec, parse_spec, resolve_variants
from deepseek_operator.render.common import Owner
from deepseek_operator.render.gateway import render_gateway
from deepseek_operator.render.model_cache import download_env, render_model_cache
from deepseek_operator.render.worker_env import worker_env
from deepseek_operator.render.workload import render_workload
from deepseek_sandbox.real_cluster import RealCluster
from deepseek_worker.settings import Settings

OWNER = Owner("chat", "team-a", "uid-1", 3)
CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "deepseek.ai_deepseekdeployments.yaml"
MODEL = {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}
CACHE = {"enabled": True, "size": "40Gi"}
USER_ENV: list[dict[str, Any]] = [
    {"name": "HTTPS_PROXY", "value": "http://10.0.0.5:3128"},
    {"name": "NO_PROXY", "value": ".svc,.cluster.local"},
    {"name": "HF_HUB_DISABLE_XET"},
    {"name": "NCCL_SOCKET_IFNAME", "valueFrom": {"configMapKeyRef": {"name": "nccl", "key": "if", "optional": True}}},
    {"name": "PROXY_AUTH", "valueFrom": {"secretKeyRef": {"name": "proxy", "key": "auth"}}},
    {"name": "ZONE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['topology.kubernetes.io/zone']"}}},
]


def _spec(**extra: Any) -> DeepSeekDeploymentSpec:
    return parse_spec({"image": "reg/worker:1", "model": MODEL, **extra})


def _names(env: list[dict[str, Any]]) -> list[str]:
    return [e["name"] for e in env]


def _containers(children: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c["spec"]["template"]["spec"]["containers"][0]
            for c in children if c["kind"] == kind}


# -- the refused names are what the renderers set ---------------------------------------------------------
# Specs that between them take every branch of worker_env() and download_env().
EVERY_WORKER_BRANCH: list[dict[str, Any]] = [
    {"model": {"id": "org/m", "source": {"huggingFace": {"endpoint": "https://hf-mirror.com",
                                                         "tokenSecretRef": {"name": "hf"}}}},
     "serving": {"gpuMemoryUtilization": 0.8, "maxNumBatchedTokens": 4096, "maxConcurrentRequestsPerKey": 4,
                 "forwardedAllowIPs": ["10.0.0.0/8"]},
     "rateLimit": {"requestsPerMinute": 60},
     "auth": {"apiKeysSecretRef": {"name": "keys"}, "jwt": {"secretRef": {"name": "jwt"}}}},
    # A canary: its pods carry the variant's name (DEEPSEEK_VARIANT, the token counters' label).
    {"model": {"id": "org/m", "source": {"pvc": {"claimName": "models"}}},
     "variants": [{"name": "canary", "weight": 10, "image": "registry.example.com/deepseek-worker:3.0.0"}]},
    # Behind the gateway: no edge settings, the gateway's priority header trusted.
    {"model": {"id": "org/m"}, "gateway": {"enabled": True}},
]
EVERY_DOWNLOAD_BRANCH: list[dict[str, Any]] = [
    {"model": {"id": "org/m", "cache": CACHE, "source": {"huggingFace": {"endpoint": "https://hf-mirror.com",
                                                                         "tokenSecretRef": {"name": "hf"}}}}},
]


def _crd_reserved(crd: dict[str, Any], *path: str) -> set[str]:
    """The names in the `self.name in [...]` rule of the env items at `path` in the CRD's schema."""
    node = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for part in path:
        node = node["items"] if part == "[]" else node["properties"][part]
    (rule,) = [r["rule"] for r in node["items"]["x-kubernetes-validations"] if "self.name in" in r["rule"]]
    return set(re.findall(r"'([^']+)'", rule))


def test_refused_worker_names_are_exactly_what_the_renderer_sets() -> None:
    rendered: set[str] = set()
    for extra in EVERY_WORKER_BRANCH:
        spec = _spec(**extra)
        for variant in resolve_variants(spec):
            rendered |= set(_names(worker_env(spec, variant, 30, ("ns", "cm"))))
        # An engine runtime's two containers (render/engine.py): the edge's upstream, the engine's env.
        engine = _spec(**extra, runtime={"name": "vllm"})
        for child in render_workload(OWNER, engine):
            if child["kind"] == "Deployment":
                for container in child["spec"]["template"]["spec"]["containers"]:
                    rendered |= set(_names(container["env"]))
    assert rendered == set(envvars.WORKER_NAMES)
    assert len(envvars.WORKER_NAMES) == len(set(envvars.WORKER_NAMES))


def test_refused_download_names_are_exactly_what_the_renderer_sets() -> None:
    rendered: set[str] = set()
    for extra in EVERY_DOWNLOAD_BRANCH:
        spec = _spec(**extra)
        for variant in resolve_variants(spec):
            rendered |= set(_names(download_env(OWNER, variant.model)))
    assert rendered == set(envvars.DOWNLOAD_NAMES)


def test_the_crd_refuses_the_same_names() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    assert _crd_reserved(crd, "env") == set(envvars.WORKER_NAMES)
    assert _crd_reserved(crd, "variants", "[]", "env") == set(envvars.WORKER_NAMES)
    assert _crd_reserved(crd, "model", "cache", "env") == set(envvars.DOWNLOAD_NAMES)


# -- what reaches the containers ----------------------------------------------------------------------------
def test_user_env_is_appended_whole_after_the_operators_settings() -> None:
    plain = _containers(render_workload(OWNER, _spec()), "Deployment")["chat-primary"]["env"]
    with_env = _containers(render_workload(OWNER, _spec(env=USER_ENV)), "Deployment")["chat-primary"]["env"]
    assert with_env[:len(plain)] == plain, "the operator's settings unchanged, in their order"
    added = with_env[len(plain):]
    assert _names(added) == _names(USER_ENV), "every entry, in the user's order"
    assert added[2] == {"name": "HF_HUB_DISABLE_XET"}
    assert added[3]["valueFrom"] == USER_ENV[3]["valueFrom"]
    # The apiserver adds apiVersion v1 to a fieldRef: rendered with it, the next apply changes nothing.
    assert added[5]["valueFrom"]["fieldRef"] == {"fieldPath": "metadata.labels['topology.kubernetes.io/zone']",
                                                 "apiVersion": "v1"}


def test_a_variant_replaces_entries_by_name_and_adds_its_own() -> None:
    spec = _spec(env=[{"name": "NCCL_DEBUG", "value": "WARN"}, {"name": "NO_PROXY", "value": ".svc"}],
                 variants=[{"name": "canary", "env": [{"name": "NCCL_DEBUG", "value": "INFO"},
                                                      {"name": "PYTORCH_CUDA_ALLOC_CONF",
                                                       "value": "expandable_segments:True"}]}])
    containers = _containers(render_workload(OWNER, spec), "Deployment")
    tail = {name: [(e["name"], e.get("value")) for e in c["env"][-3:]] for name, c in containers.items()}
    assert tail["chat-primary"][-2:] == [("NCCL_DEBUG", "WARN"), ("NO_PROXY", ".svc")]
    assert tail["chat-canary"] == [("NCCL_DEBUG", "INFO"), ("NO_PROXY", ".svc"),
                                   ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")]


def test_cache_env_reaches_the_download_job_only() -> None:
    cache_env = [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}, {"name": "HF_HUB_DISABLE_XET", "value": "1"}]
    spec = _spec(model={**MODEL, "cache": {**CACHE, "env": cache_env}})
    (job,) = _containers(render_model_cache(OWNER, spec), "Job").values()
    assert job["env"][-2:] == cache_env
    worker = _containers(render_workload(OWNER, spec), "Deployment")["chat-primary"]
    assert "HTTPS_PROXY" not in _names(worker["env"])


@pytest.mark.parametrize("env", [[{"name": "HF_TOKEN", "value": "x"}], [{"name": "FORWARDED_ALLOW_IPS", "value": "*"}]])
def test_parse_spec_refuses_a_name_the_operator_sets_naming_it(env: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match=rf"spec\.env\[0\]\.name: {env[0]['name']} is set by the operator"):
        _spec(env=env)


# -- serving: the per-key cap and the forwarded-address trust ------------------------------------------------
def _worker_env(**serving: Any) -> dict[str, str]:
    spec = _spec(serving=serving)
    return {e["name"]: e["value"] for e in worker_env(spec, resolve_variants(spec)[0], 30) if "value" in e}


def test_per_key_cap_rendered_when_set_and_read_by_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "DEEPSEEK_MAX_CONCURRENT_REQUESTS_PER_KEY" not in _worker_env(), "unset: the worker's default applies"
    env = _worker_env(maxConcurrentRequests=32, maxConcurrentRequestsPerKey=4)
    assert env["DEEPSEEK_MAX_CONCURRENT_REQUESTS_PER_KEY"] == "4"
    for name, value in env.items():
        if name.startswith("DEEPSEEK_") and name not in ("DEEPSEEK_MODEL",):
            monkeypatch.setenv(name, value)
    assert Settings().per_key_concurrency == 4


def test_gateway_priority_trusted_by_the_workers_exactly_behind_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "DEEPSEEK_TRUST_GATEWAY_PRIORITY" not in _worker_env(), "no gateway: clients reach the workers"
    spec = _spec(gateway={"enabled": True}, auth={"apiKeysSecretRef": {"name": "keys"}})
    for variant in resolve_variants(spec):
        env = {e["name"]: e.get("value") for e in worker_env(spec, variant, 30)}
        assert env["DEEPSEEK_TRUST_GATEWAY_PRIORITY"] == "true"
        assert "DEEPSEEK_API_KEYS_FILE" not in env, "the edge is the gateway's"
    gateways = [c for child in render_gateway(OWNER, spec, spec.image, resolve_variants(spec))
                if child["kind"] == "Deployment" for c in child["spec"]["template"]["spec"]["containers"]]
    assert gateways
    for container in gateways:  # the gateway sets the header itself and must never trust a client's
        assert "DEEPSEEK_TRUST_GATEWAY_PRIORITY" not in _names(container["env"])
        assert "DEEPSEEK_API_KEYS_FILE" in _names(container["env"])
    monkeypatch.setenv("DEEPSEEK_TRUST_GATEWAY_PRIORITY", env["DEEPSEEK_TRUST_GATEWAY_PRIORITY"])
    assert Settings().trust_gateway_priority is True


def test_forwarded_trust_rendered_when_set_and_honoured_by_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rendered FORWARDED_ALLOW_IPS is what uvicorn (the worker's server) reads: a request from a
    trusted peer is seen from its X-Forwarded-For address, one from elsewhere from its own."""
    assert "FORWARDED_ALLOW_IPS" not in _worker_env(), "unset: no forwarded header is trusted"
    env = _worker_env(forwardedAllowIPs=["10.244.0.0/16", "fd00::/8"])
    assert env["FORWARDED_ALLOW_IPS"] == "10.244.0.0/16,fd00::/8"
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", env["FORWARDED_ALLOW_IPS"])

    async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["client"][0].encode()})

    config = uvicorn.Config(echo, proxy_headers=True)  # the worker's cli.py leaves both at uvicorn's defaults
    config.load()

    async def client_seen(peer: str) -> str:
        transport = httpx.ASGITransport(app=config.loaded_app, client=(peer, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
            return (await client.get("/", headers={"X-Forwarded-For": "203.0.113.7"})).text

    assert asyncio.run(client_seen("10.244.3.9")) == "203.0.113.7", "the ingress pod: its header names the client"
    assert asyncio.run(client_seen("10.99.0.4")) == "10.99.0.4", "any other peer: its own address"


# -- the real apiserver ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def namespace(real_cluster: RealCluster) -> Iterator[str]:
    with real_cluster.scratch_namespace("user-env") as name:
        yield name


def test_the_real_apiserver_holds_the_env_unchanged(real_cluster: RealCluster, namespace: str) -> None:
    spec = _spec(env=USER_ENV, variants=[{"name": "c", "env": [{"name": "NCCL_DEBUG", "value": "INFO"}]}],
                 serving={"maxConcurrentRequestsPerKey": 8, "forwardedAllowIPs": ["10.244.0.0/16"]},
                 model={**MODEL, "cache": {**CACHE, "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]}})
    owner = Owner("chat", namespace, "uid-1", 3)
    objs = [o for o in render_workload(owner, spec) + render_model_cache(owner, spec)
            if o["kind"] in ("Deployment", "Job")]
    assert len(objs) == 3
    for obj in objs:
        kube_validate(obj)
        kind = {"Deployment": "deployments.apps", "Job": "jobs.batch"}[obj["kind"]]
        path = real_cluster.resource(kind).path(namespace)
        response = real_cluster.http.post(path, json=obj, params={"dryRun": "All", "fieldValidation": "Strict"})
        assert response.status_code == 201, response.text
        returned = response.json()["spec"]["template"]["spec"]["containers"][0]["env"]
        assert returned == obj["spec"]["template"]["spec"]["containers"][0]["env"], obj["metadata"]["name"]


def test_a_cidr_uvicorn_would_not_read_is_refused_naming_the_field() -> None:
    """uvicorn takes `10.244.1.0/16` (host bits set) for a literal name that never matches: the trust
    would silently not apply, so parse_spec refuses it (the CRD's pattern cannot tell)."""
    with pytest.raises(ValueError, match=r"spec\.serving\.forwardedAllowIPs: 10\.244\.1\.0/16: .*host bits set"):
        _spec(serving={"forwardedAllowIPs": ["10.244.1.0/16"]})
    config = uvicorn.Config(lambda: None, forwarded_allow_ips="10.244.1.0/16")
    config.load()
    assert "10.244.3.9" not in config.loaded_app.trusted_hosts
