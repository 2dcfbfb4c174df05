"""render/autoscaling.py: which autoscaler a variant gets, its shape, and the replicas it takes over.

ScaledObjects are checked against KEDA v2.21.0's own CRD and scaler schema (tests/crd/keda_crd.py),
HPAs with kubernetes-validate --strict and, as a server-side dry run, by the real kube-apiserver.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from upstream_crds import LEADER_WORKER_SET, kube_validate, validate

from deepseek_operator.api import parse_spec, resolve_variants
from deepseek_operator.k8s import LAST_APPLIED, apply_patch
from deepseek_operator.render.autoscaling import (
    HELD_TARGET,
    autoscaling_conditions,
    choose,
    render_autoscalers,
)
from deepseek_operator.render.common import Capabilities, Owner
from deepseek_operator.render.multinode import render_leader_worker_set
from deepseek_operator.render.workload import render_pod_spec, render_workload
from deepseek_sandbox.real_cluster import RealCluster
from tests.crd.keda_crd import keda_errors

OWNER = Owner(name="chat", namespace="llm", uid="uid-1")
KEDA = Capabilities(keda=True)
NONE = Capabilities()
PROMETHEUS = "http://prometheus.monitoring.svc:9090"
GATEWAY_URL = "http://chat-gateway.llm.svc:8000/scaling/"


def _spec(autoscaling: dict[str, Any] | None = None, gateway: bool = True, **extra: Any) -> Any:
    raw: dict[str, Any] = {"image": "img:1", "model": {"id": "m"}, **extra}
    if gateway:
        raw["gateway"] = {"enabled": True}
    if autoscaling is not None:
        raw["autoscaling"] = autoscaling
    return parse_spec(raw)


def test_scale_from_zero_through_the_gateway_is_a_valid_scaled_object() -> None:
    spec = _spec({"minReplicas": 0, "maxReplicas": 4, "target": 3, "scaleDownDelaySeconds": 600})
    (obj,) = render_autoscalers(OWNER, spec, KEDA)
    assert keda_errors(obj) == []
    body = obj["spec"]
    assert obj["metadata"]["name"] == "chat-primary"
    assert body["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat-primary"}
    assert (body["minReplicaCount"], body["idleReplicaCount"], body["maxReplicaCount"]) == (0, 0, 4)
    assert body["cooldownPeriod"] == 600
    assert body["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 600}
    held, load = body["triggers"]
    # Any held (or, behind a ready variant, passed-over) request activates the variant and asks for
    # one pod; the load trigger sizes it.
    assert held["metadata"] == {"url": GATEWAY_URL + "primary", "format": "json", "valueLocation": "wanted",
                                "targetValue": str(HELD_TARGET), "activationTargetValue": "0"}
    assert load["type"] == "metrics-api"
    assert (load["metadata"]["valueLocation"], load["metadata"]["targetValue"]) == ("demand", "3")


def test_running_reads_the_gateways_in_flight_count() -> None:
    spec = _spec({"minReplicas": 1, "maxReplicas": 4, "metric": "running", "target": 8})
    (obj,) = render_autoscalers(OWNER, spec, KEDA)
    assert keda_errors(obj) == []
    assert "idleReplicaCount" not in obj["spec"] and obj["spec"]["minReplicaCount"] == 1
    assert obj["spec"]["triggers"][1]["metadata"]["valueLocation"] == "inflight"


def test_kv_cache_usage_reads_prometheus() -> None:
    spec = _spec(None, runtime={"name": "vllm"}, monitoring={"prometheusURL": PROMETHEUS},
                 variants=[{"name": "canary", "weight": 10,
                            "autoscaling": {"minReplicas": 0, "maxReplicas": 2, "metric": "kvCacheUsage",
                                            "target": 80}}])
    (obj,) = render_autoscalers(OWNER, spec, KEDA)
    assert keda_errors(obj) == []
    assert obj["metadata"]["name"] == "chat-canary"
    held, load = obj["spec"]["triggers"]
    assert held["metadata"]["url"] == GATEWAY_URL + "canary"
    assert load["type"] == "prometheus" and load["metricType"] == "Value"
    assert load["metadata"]["serverAddress"] == PROMETHEUS
    assert load["metadata"]["query"] == (
        '100 * avg(vllm:kv_cache_usage_perc{namespace="llm",deepseek_deployment="chat",variant="canary"})')
    assert load["metadata"]["threshold"] == "80"


def test_without_the_gateway_keda_reads_prometheus_per_pod() -> None:
    spec = _spec({"minReplicas": 1, "maxReplicas": 3, "metric": "queueDepth", "target": 2}, gateway=False,
                 monitoring={"prometheusURL": PROMETHEUS})
    (obj,) = render_autoscalers(OWNER, spec, KEDA)
    assert keda_errors(obj) == []
    (load,) = obj["spec"]["triggers"]  # no gateway, no held trigger
    assert load["metricType"] == "AverageValue"
    assert load["metadata"]["query"].startswith("sum(deepseek_worker_queue_depth{")


def test_without_keda_an_hpa_on_pods_metrics() -> None:
    spec = _spec({"minReplicas": 2, "maxReplicas": 5, "target": 4, "scaleDownDelaySeconds": 120}, gateway=False)
    (hpa,) = render_autoscalers(OWNER, spec, NONE)
    kube_validate(hpa)
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["kind"] == "HorizontalPodAutoscaler"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": "deepseek_worker_queue_depth"}, "target": {"type": "AverageValue", "averageValue": "4"}}}]
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 120}}


def test_an_hpa_on_the_engines_kv_usage_in_its_own_units() -> None:
    spec = _spec({"minReplicas": 1, "maxReplicas": 2, "metric": "kvCacheUsage", "target": 80},
                 runtime={"name": "sglang"})
    (hpa,) = render_autoscalers(OWNER, spec, KEDA)  # KEDA, but no Prometheus to read KV usage from
    kube_validate(hpa)
    assert hpa["spec"]["metrics"][0]["pods"] == {"metric": {"name": "sglang:token_usage"},
                                                 "target": {"type": "AverageValue", "averageValue": "800m"}}


def test_scale_to_zero_without_keda_gets_nothing_and_says_why() -> None:
    spec = _spec({"minReplicas": 0, "maxReplicas": 2})
    assert render_autoscalers(OWNER, spec, NONE) == []
    (condition,) = autoscaling_conditions(spec, NONE)
    assert condition[:3] == ("AutoscalingReady", False, "KEDANotInstalled")
    assert "primary: minReplicas 0 needs KEDA" in condition[3]


def test_kv_usage_from_zero_needs_prometheus() -> None:
    spec = _spec({"minReplicas": 0, "maxReplicas": 2, "metric": "kvCacheUsage", "target": 90},
                 runtime={"name": "vllm"})
    assert choose(spec, resolve_variants(spec)[0], KEDA).reason == "MetricsSourceMissing"
    (condition,) = autoscaling_conditions(spec, KEDA)
    assert condition[1] is False and "spec.monitoring.prometheusURL" in condition[3]


def test_conditions_name_what_each_variant_got() -> None:
    spec = _spec({"minReplicas": 0, "maxReplicas": 2}, variants=[
        {"name": "canary", "weight": 5, "autoscaling": {"minReplicas": 1, "maxReplicas": 2, "metric": "running"}}])
    assert autoscaling_conditions(spec, KEDA) == [(
        "AutoscalingReady", True, "KEDA",
        "primary: ScaledObject on queueDepth (target 4, 0-2 pods); "
        "canary: ScaledObject on running (target 4, 1-2 pods)")]
    assert autoscaling_conditions(_spec(None), KEDA) == []  # nothing autoscales: no condition


def test_the_operator_stops_writing_replicas_of_an_autoscaled_variant() -> None:
    spec = _spec({"minReplicas": 1, "maxReplicas": 4}, replicas=3,
                 variants=[{"name": "canary", "weight": 5, "replicas": 2}])
    deployments = {c["metadata"]["name"]: c for c in render_workload(OWNER, spec) if c["kind"] == "Deployment"}
    assert "replicas" not in deployments["chat-primary"]["spec"]
    assert deployments["chat-canary"]["spec"]["replicas"] == 2


def test_an_autoscaled_leader_worker_set_leaves_replicas_to_the_autoscaler() -> None:
    spec = _spec({"minReplicas": 1, "maxReplicas": 2}, gateway=False, runtime={"name": "vllm"},
                 resources={"gpus": 16, "gpusPerNode": 8})
    primary = resolve_variants(spec)[0]
    lws = render_leader_worker_set(OWNER, spec, primary, render_pod_spec(OWNER, spec, primary, "img:1"))
    assert "replicas" not in lws["spec"]
    validate(lws, LEADER_WORKER_SET)
    (hpa,) = render_autoscalers(OWNER, spec, NONE)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "leaderworkerset.x-k8s.io/v1",
                                             "kind": "LeaderWorkerSet", "name": lws["metadata"]["name"]}


def test_apply_hands_replicas_over_instead_of_nulling_them() -> None:
    """The previous apply set replicas: 3; now the autoscaler owns them (and set 5). The patch brings
    the rest of the object up to date and leaves replicas alone (a null would reset it to 1)."""
    before = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
              "spec": {"replicas": 3, "revisionHistoryLimit": 3}}
    live = {**before, "metadata": {"name": "d", "annotations": {LAST_APPLIED: json.dumps(before)}},
            "spec": {"replicas": 5, "revisionHistoryLimit": 3}}
    desired = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"revisionHistoryLimit": 3}}
    patch = apply_patch(desired, live)
    assert patch is not None and "replicas" not in patch["spec"]
    live["metadata"]["annotations"][LAST_APPLIED] = patch["metadata"]["annotations"][LAST_APPLIED]
    assert apply_patch(desired, live) is None  # and the next pass writes nothing


def test_removing_autoscaling_removes_the_autoscaler_and_writes_replicas_again() -> None:
    spec = _spec(None, replicas=2)
    assert render_autoscalers(OWNER, spec, KEDA) == []
    deployment = next(c for c in render_workload(OWNER, spec) if c["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2


@pytest.fixture(scope="module")
def namespace(real_cluster: RealCluster) -> Iterator[str]:
    with real_cluster.scratch_namespace("autoscaling-render") as name:
        yield name


@pytest.mark.parametrize("runtime", ["builtin", "vllm", "sglang"])
def test_the_real_apiserver_accepts_the_hpas(real_cluster: RealCluster, namespace: str, runtime: str) -> None:
    owner = Owner(name="chat", namespace=namespace, uid="uid-1")
    metrics = ["queueDepth", "running"] + (["kvCacheUsage"] if runtime != "builtin" else [])
    for metric in metrics:
        spec = _spec({"minReplicas": 1, "maxReplicas": 3, "metric": metric, "target": 50}, gateway=False,
                     runtime={"name": runtime})
        (hpa,) = render_autoscalers(owner, spec, NONE)
        path = real_cluster.resource("horizontalpodautoscalers.autoscaling").path(namespace)
        response = real_cluster.http.post(path, json=hpa, params={"dryRun": "All", "fieldValidation": "Strict"})
        assert response.status_code == 201, (metric, response.text)
