"""render/gateway.py and what the gateway changes elsewhere (workers, Services, ingress, NetworkPolicies).

The gateway's document is checked with the worker's own model (gateway/config.py: what the gateway
process loads at start-up); every object with kubernetes-validate --strict, and, on the real
kube-apiserver, as a server-side dry run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from upstream_crds import HTTPROUTE, kube_validate, validate

from deepseek_operator.api import parse_spec, resolve_variants
from deepseek_operator.render.common import LABEL_DEPLOYMENT, Capabilities, Owner
from deepseek_operator.render.gateway import (
    CONFIG_FILE,
    CONFIG_HASH,
    FALLBACK_KEY_ENV,
    LABEL_GATEWAY,
    concurrency_cap,
    gateway_condition,
    gateway_config,
    render_gateway,
    report_configmap,
)
from deepseek_operator.render.ingress import render_ingress
from deepseek_operator.render.network_policy import render_network_policy
from deepseek_operator.render.workload import render_workload
from deepseek_sandbox.real_cluster import RealCluster
from deepseek_worker.gateway.config import GatewayConfig
from tests.pss import pod_spec_of, pod_violations

OWNER = Owner(name="chat", namespace="llm", uid="uid-1")
AUTH = {"apiKeysSecretRef": {"name": "keys"}, "jwt": {"secretRef": {"name": "jwt"}}}
FALLBACK = {"apiKeySecretRef": {"name": "deepseek", "key": "api-key"}, "when": ["ColdStart"], "maxShare": 0.3,
            "allowExternal": ["team-a"]}
PVC = {"pvc": {"claimName": "models"}}
CANARY = {"name": "canary", "weight": 10, "autoscaling": {"minReplicas": 0, "maxReplicas": 2}}


def _spec(**extra: Any) -> Any:
    raw: dict[str, Any] = {"image": "registry.example.com/worker:1", "model": {"id": "m", "source": PVC},
                           "gateway": {"enabled": True}, **extra}
    return parse_spec(raw)


def _by_kind(children: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for child in children:
        out.setdefault(child["kind"], []).append(child)
    return out


def test_off_by_default_renders_nothing_and_leaves_the_workers_as_they_were() -> None:
    spec = parse_spec({"image": "img:1", "model": {"id": "m"}, "auth": AUTH})
    assert render_gateway(OWNER, spec, spec.image, resolve_variants(spec)) == []
    deployment = next(c for c in render_workload(OWNER, spec) if c["kind"] == "Deployment")
    env = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "DEEPSEEK_API_KEYS_FILE" in env and "DEEPSEEK_JWT_SECRET_FILE" in env


def test_the_gateway_children_in_order() -> None:
    spec = _spec(variants=[CANARY], fallback=FALLBACK)
    children = render_gateway(OWNER, spec, spec.image, resolve_variants(spec))
    assert [(c["kind"], c["metadata"]["name"]) for c in children] == [
        ("ServiceAccount", "chat-gateway"), ("Role", "chat-gateway"), ("RoleBinding", "chat-gateway"),
        ("ConfigMap", "chat-gateway"), ("ConfigMap", "chat-gateway-report"), ("Service", "chat-primary-pods"),
        ("Service", "chat-canary-pods"),
        ("Deployment", "chat-gateway"), ("Service", "chat-gateway"), ("PodDisruptionBudget", "chat-gateway")]
    for child in children:
        kube_validate(child)
        assert child["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_the_document_is_what_the_gateway_loads() -> None:
    spec = _spec(variants=[CANARY], fallback=FALLBACK, gateway={"enabled": True, "maxHeldRequests": 8,
                                                                "holdTimeoutSeconds": 900})
    children = _by_kind(render_gateway(OWNER, spec, spec.image, resolve_variants(spec), load_seconds=95))
    text = children["ConfigMap"][0]["data"][CONFIG_FILE]
    config = GatewayConfig.model_validate_json(text)
    # Nominal weights: the gateway gates them on readiness by its own probes (the module docstring).
    assert [(v.name, v.weight) for v in config.variants] == [("primary", 90), ("canary", 10)]
    assert config.variants[1].service is not None
    assert config.variants[1].service.host == "chat-canary-pods.llm.svc.cluster.local"
    assert (config.hold.maxQueue, config.hold.deadlineSeconds, config.hold.loadSeconds) == (8, 900, 95)
    assert config.statusFrom is not None and (config.statusFrom.name, config.statusFrom.namespace) == ("chat", "llm")
    assert config.fallback is not None
    assert config.fallback.baseURL == "https://api.deepseek.com" and config.fallback.apiKeyEnv == FALLBACK_KEY_ENV
    assert (config.fallback.when, config.fallback.maxShare, config.fallback.allowExternal) == (
        ["ColdStart"], 0.3, ["team-a"])
    # Issue 22: the workers serve /metrics on their metrics port alone: the gauge is read there.
    assert (config.discovery.queueMetric, config.discovery.metricsPort) == ("deepseek_worker_queue_depth", 9090)
    assert [v.queueMetric for v in config.variants] == [None, None]  # one runtime: the document's gauge


# name -> (spec fields, the document's queue gauge, each variant's own). Issue 22.
RUNTIME_GAUGES = {
    "builtin": ({}, "deepseek_worker_queue_depth", [None]),
    "vllm": ({"runtime": {"name": "vllm"}}, "vllm:num_requests_waiting", [None]),
    "sglang": ({"runtime": {"name": "sglang"}}, "sglang:num_queue_reqs", [None]),
    "builtin primary, vLLM canary": ({"variants": [{**CANARY, "runtime": {"name": "vllm"}}]},
                                     "deepseek_worker_queue_depth", [None, "vllm:num_requests_waiting"]),
    "sglang primary, builtin canary": ({"runtime": {"name": "sglang"},
                                        "variants": [{**CANARY, "runtime": {"name": "builtin"}}]},
                                       "sglang:num_queue_reqs", [None, "deepseek_worker_queue_depth"]),
}


@pytest.mark.parametrize("case", RUNTIME_GAUGES)
def test_the_queue_gauge_of_each_runtime_is_read_on_the_workers_metrics_port(case: str) -> None:
    """Each runtime's queue series (the ones the autoscalers read), on the port the worker pods serve
    /metrics on: the builtin worker's own, or the engine's that a proxy-mode edge re-exposes there."""
    fields, document_gauge, variant_gauges = RUNTIME_GAUGES[case]
    spec = _spec(**fields)
    config = GatewayConfig.model_validate(gateway_config(OWNER, spec, resolve_variants(spec), 60))
    assert config.discovery.queueMetric == document_gauge
    assert [v.queueMetric for v in config.variants] == variant_gauges
    # The port the rendered worker pods serve /metrics on alone (DEEPSEEK_METRICS_PORT, container port).
    for deployment in (c for c in render_workload(OWNER, spec) if c["kind"] == "Deployment"):
        (api,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "worker"]
        env = {e["name"]: e.get("value") for e in api["env"]}
        assert env["DEEPSEEK_METRICS_PORT"] == str(config.discovery.metricsPort)
        assert {"name": "metrics", "containerPort": config.discovery.metricsPort, "protocol": "TCP"} in api["ports"]


def test_the_gateway_pod() -> None:
    spec = _spec(fallback=FALLBACK, auth=AUTH, rateLimit={"requestsPerMinute": 60, "burst": 10})
    deployment = _by_kind(render_gateway(OWNER, spec, "registry.example.com/worker:0", resolve_variants(spec)))[
        "Deployment"][0]
    template = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["selector"]["matchLabels"] == {LABEL_GATEWAY: "chat"}
    # Not a worker: the worker Services, budgets and NetworkPolicy select on deepseek.ai/deployment.
    assert LABEL_DEPLOYMENT not in template["metadata"]["labels"]
    assert LABEL_DEPLOYMENT in deployment["metadata"]["labels"]  # the object itself: the informers, prune
    pod = template["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/worker:0"  # the primary's, as rendered
    env = {e["name"]: e for e in container["env"]}
    assert env["DEEPSEEK_GATEWAY_CONFIG"]["value"] == "/etc/deepseek-gateway/gateway.json"
    assert env[FALLBACK_KEY_ENV]["valueFrom"] == {"secretKeyRef": {"name": "deepseek", "key": "api-key"}}
    assert {"DEEPSEEK_API_KEYS_FILE", "DEEPSEEK_JWT_SECRET_FILE", "DEEPSEEK_RATE_LIMIT_RPM"} <= set(env)
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "512Mi"}}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["serviceAccountName"] == "chat-gateway"
    assert template["metadata"]["annotations"][CONFIG_HASH]
    assert pod_violations(pod_spec_of(deployment) or {}) == []  # Pod Security "restricted"


def test_gateway_scheduling_is_its_own() -> None:
    """No GPU toleration by default (it needs no GPU); spec.gateway.scheduling places it."""
    def pod(gateway: dict[str, Any]) -> dict[str, Any]:
        spec = _spec(gateway=gateway)
        deployment = _by_kind(render_gateway(OWNER, spec, spec.image, resolve_variants(spec)))["Deployment"][0]
        return dict(deployment["spec"]["template"]["spec"])

    assert "tolerations" not in pod({"enabled": True}) and "nodeSelector" not in pod({"enabled": True})
    placed = pod({"enabled": True, "scheduling": {"nodeSelector": {"pool": "cpu"}, "priorityClassName": "edge",
                                                  "tolerations": [{"key": "dedicated", "operator": "Exists"}]}})
    assert placed["nodeSelector"] == {"pool": "cpu"} and placed["priorityClassName"] == "edge"
    assert placed["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]


def test_only_what_the_gateway_reads_at_start_rolls_it() -> None:
    """Weights, hold and the fallback's rules reload from the mounted file; the hosted API's client
    (baseURL, timeout, present or not) is built at start, so those roll the gateway."""
    def checksum(weight: int, fallback: dict[str, Any] | None = None) -> str:
        spec = _spec(variants=[{**CANARY, "weight": weight}], **({"fallback": fallback} if fallback else {}))
        deployment = _by_kind(render_gateway(OWNER, spec, spec.image, resolve_variants(spec)))["Deployment"][0]
        return str(deployment["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH])

    assert checksum(10) == checksum(20)
    assert checksum(10, FALLBACK) == checksum(20, {**FALLBACK, "maxShare": 0.1, "when": ["Overloaded"]})
    assert checksum(10) != checksum(10, FALLBACK) != checksum(10, {**FALLBACK, "baseURL": "https://llm.example.com"})


@pytest.mark.parametrize(("deployment", "expected"), [
    (None, (False, "GatewayCreating")),
    ({"status": {}}, (False, "GatewayUnavailable")),
    ({"status": {"readyReplicas": 1}}, (True, "GatewayDegraded")),
    ({"status": {"readyReplicas": 2}}, (True, "GatewayAvailable")),
])
def test_gateway_ready_follows_the_live_deployment(deployment: dict[str, Any] | None,
                                                   expected: tuple[bool, str]) -> None:
    ((ctype, ok, reason, _),) = gateway_condition(_spec(), deployment)
    assert (ctype, ok, reason) == ("GatewayReady", *expected)
    assert gateway_condition(parse_spec({"image": "img:1", "model": {"id": "m"}}), deployment) == []


def test_the_role_reads_only_this_resource_and_patches_only_its_report() -> None:
    spec = _spec()
    children = _by_kind(render_gateway(OWNER, spec, spec.image, resolve_variants(spec)))
    role = children["Role"][0]
    assert role["rules"] == [{"apiGroups": ["deepseek.ai"], "resources": ["deepseekdeployments"],
                              "resourceNames": ["chat"], "verbs": ["get"]},
                             {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["chat-gateway-report"],
                              "verbs": ["patch"]}]
    report = children["ConfigMap"][1]
    assert report["metadata"]["name"] == report_configmap(OWNER) and "data" not in report  # the gateway's data
    env = {e["name"]: e.get("value") for e in children["Deployment"][0]["spec"]["template"]["spec"]["containers"][0][
        "env"]}
    assert (env["DEEPSEEK_REPORT_CONFIGMAP"], env["DEEPSEEK_REPORT_NAMESPACE"]) == ("chat-gateway-report", "llm")


@pytest.mark.parametrize(("extra", "expected"), [
    ({}, 64 * 1 + 64),  # one pod's slots, the hold queue (maxHeldRequests 64 by default)
    ({"autoscaling": {"minReplicas": 0, "maxReplicas": 4}, "variants": [CANARY],
      "gateway": {"enabled": True, "maxHeldRequests": 100}}, 64 * (4 + 2) + 100 * 2),
    ({"fallback": FALLBACK, "serving": {"maxConcurrentRequests": 8}}, 8 * 1 * 2 + 64),  # overflow goes out too
])
def test_the_gateway_admits_every_held_request_on_top_of_the_pods_slots(extra: dict[str, Any],
                                                                        expected: int) -> None:
    """Held requests count against the gateway edge's cap: it must not refuse what the hold would queue."""
    spec = _spec(**extra)
    deployment = _by_kind(render_gateway(OWNER, spec, spec.image, resolve_variants(spec)))["Deployment"][0]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    cap = int(env["DEEPSEEK_MAX_CONCURRENT_REQUESTS"])
    assert cap == concurrency_cap(spec) == expected
    gateway = spec.gateway
    assert cap >= gateway.max_held_requests * (1 + len(spec.variants)) + spec.serving.max_concurrent_requests


def test_behind_the_gateway_the_workers_check_no_credential_and_the_stable_service_is_the_gateways() -> None:
    spec = _spec(auth=AUTH, rateLimit={"requestsPerMinute": 60, "burst": 10})
    children = render_workload(OWNER, spec)
    deployment = next(c for c in children if c["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert not env & {"DEEPSEEK_API_KEYS_FILE", "DEEPSEEK_JWT_SECRET_FILE", "DEEPSEEK_RATE_LIMIT_RPM"}
    assert not {v["name"] for v in pod["volumes"]} & {"api-keys", "jwt"}
    stable = next(c for c in children if c["kind"] == "Service" and c["metadata"]["name"] == "chat")
    assert stable["spec"]["selector"] == {LABEL_GATEWAY: "chat"}


@pytest.mark.parametrize("provider", ["ingress-nginx", "gateway-api"])
def test_the_ingress_has_one_backend_the_gateway(provider: str) -> None:
    ingress = {"provider": provider, "host": "chat.example.com", "gateway": {"parentRefs": [{"name": "gw"}]}}
    spec = _spec(ingress=ingress, variants=[CANARY])
    objs = render_ingress(OWNER, spec, {"primary": 90, "canary": 10}, Capabilities(gateway_api=True))
    assert len(objs) == 1
    text = json.dumps(objs[0])
    assert '"chat-gateway"' in text and '"chat-primary"' not in text and '"chat-canary"' not in text
    if provider == "gateway-api":
        validate(objs[0], HTTPROUTE)
        assert objs[0]["spec"]["rules"][0]["timeouts"]["request"] == "1200s"  # generation + hold
    else:
        kube_validate(objs[0])


def test_network_policies_admit_only_the_gateway_to_the_workers() -> None:
    spec = _spec(fallback={**FALLBACK, "baseURL": "https://llm.example.com:8443"},
                 autoscaling={"minReplicas": 0, "maxReplicas": 2})
    workers, gateway = render_network_policy(OWNER, spec)
    for policy in (workers, gateway):
        kube_validate(policy)
    api_rule = workers["spec"]["ingress"][0]
    assert api_rule["from"] == [{"podSelector": {"matchLabels": {LABEL_GATEWAY: "chat"}}}]
    # Issue 22: the API port and the metrics port, where the gateway reads the workers' queue gauge.
    assert api_rule["ports"] == [{"protocol": "TCP", "port": 8000}, {"protocol": "TCP", "port": 9090}]
    assert gateway["metadata"]["name"] == "chat-gateway"
    assert gateway["spec"]["podSelector"] == {"matchLabels": {LABEL_GATEWAY: "chat"}}
    sources = gateway["spec"]["ingress"][0]["from"]
    assert {"podSelector": {}} in sources  # the namespace's clients, as the workers admitted them before
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}} in sources
    egress = gateway["spec"]["egress"]
    assert {"to": [{"podSelector": {"matchLabels": {LABEL_DEPLOYMENT: "chat"}}}],
            "ports": [{"protocol": "TCP", "port": 8000}, {"protocol": "TCP", "port": 9090}]} in egress
    assert any(r["ports"] == [{"protocol": "TCP", "port": 8443}] for r in egress)  # the hosted API


def test_without_fallback_or_autoscaling_the_gateway_policy_stays_narrow() -> None:
    _, gateway = render_network_policy(OWNER, _spec())
    assert all("keda" not in json.dumps(rule) for rule in gateway["spec"]["ingress"])
    ports = [p["port"] for rule in gateway["spec"]["egress"] for p in rule["ports"]]
    assert sorted(set(ports)) == [53, 443, 6443, 8000, 9090]  # 9090: the workers' queue gauge (issue 22)


MONITORING = {"kubernetes.io/metadata.name": "monitoring"}


@pytest.mark.parametrize("monitoring", [None, MONITORING], ids=["no monitoring namespace", "monitoring namespace"])
def test_behind_the_gateway_the_workers_metrics_port_admits_the_gateway_and_prometheus_only(
        monitoring: dict[str, str] | None) -> None:
    """Issue 22: still default-deny; the gateway's pods reach 8000 and 9090, Prometheus 9090 alone, nobody
    else either port (not the namespace's clients, not the ingress namespaces: the gateway replaced them)."""
    policy = {"ingressNamespaceSelector": {"kubernetes.io/metadata.name": "ingress"},
              **({"monitoringNamespaceSelector": monitoring} if monitoring else {})}
    workers, _ = render_network_policy(OWNER, _spec(networkPolicy=policy))
    assert workers["spec"]["policyTypes"] == ["Ingress", "Egress"]
    by_port: dict[int, list[Any]] = {}
    for rule in workers["spec"]["ingress"]:
        assert rule["from"]  # a rule without `from` would admit every source
        for port in rule["ports"]:
            by_port.setdefault(port["port"], []).extend(rule["from"])
    gateway = {"podSelector": {"matchLabels": {LABEL_GATEWAY: "chat"}}}
    assert by_port[8000] == [gateway]
    assert by_port[9090] == [gateway] + ([{"namespaceSelector": {"matchLabels": monitoring}}] if monitoring else [])
    assert set(by_port) == {8000, 9090}


def test_document_without_variants_weight_is_refused_by_the_model_not_rendered() -> None:
    """Canary weights at 100 leave the primary 0: the document is still valid (one weight above 0)."""
    spec = _spec(variants=[{"name": "canary", "weight": 100}])
    GatewayConfig.model_validate(gateway_config(OWNER, spec, resolve_variants(spec), 60))


def test_the_rendered_pod_starts_the_worker_in_gateway_mode(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The container's env and the mounted document, as the worker binary reads them (cli.load_settings,
    then the gateway app): settings valid, gateway mode chosen, the fallback key read from the env."""
    from deepseek_worker.cli import _app, load_settings

    spec = _spec(variants=[CANARY], fallback=FALLBACK, rateLimit={"requestsPerMinute": 60, "burst": 10})
    children = _by_kind(render_gateway(OWNER, spec, spec.image, resolve_variants(spec)))
    document = tmp_path / CONFIG_FILE
    document.write_text(children["ConfigMap"][0]["data"][CONFIG_FILE])
    for entry in children["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["env"]:
        value = entry.get("value", "hosted-key")  # valueFrom: the Secret's value in the pod
        monkeypatch.setenv(entry["name"], str(document) if entry["name"] == "DEEPSEEK_GATEWAY_CONFIG" else value)
    settings, _ = load_settings([])
    assert settings.gateway and settings.port == 8000 and settings.metrics_port == 9090
    app = _app(settings)
    assert app.title == "deepseek-worker (gateway)"
    assert app.state.router.config.fallback.api_key() == "hosted-key"


@pytest.fixture(scope="module")
def namespace(real_cluster: RealCluster) -> Iterator[str]:
    with real_cluster.scratch_namespace("gateway-render") as name:
        yield name


def test_the_real_apiserver_accepts_the_gateway_children(real_cluster: RealCluster, namespace: str) -> None:
    owner = Owner(name="chat", namespace=namespace, uid="uid-1")
    spec = _spec(variants=[CANARY], fallback=FALLBACK, auth=AUTH)
    children = render_gateway(owner, spec, spec.image, resolve_variants(spec)) + render_network_policy(owner, spec)
    plurals = {"ServiceAccount": "serviceaccounts", "Role": "roles.rbac.authorization.k8s.io",
               "RoleBinding": "rolebindings.rbac.authorization.k8s.io", "ConfigMap": "configmaps",
               "Service": "services", "Deployment": "deployments.apps",
               "PodDisruptionBudget": "poddisruptionbudgets.policy",
               "NetworkPolicy": "networkpolicies.networking.k8s.io"}
    for obj in children:
        path = real_cluster.resource(plurals[obj["kind"]]).path(namespace)
        response = real_cluster.http.post(path, json=obj, params={"dryRun": "All", "fieldValidation": "Strict"})
        assert response.status_code == 201, (obj["kind"], response.text)
