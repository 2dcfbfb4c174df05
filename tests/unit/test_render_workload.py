"""Table tests for render/workload.py: named cases, expected fragments of the rendered objects."""

from __future__ import annotations

from typing import Any

import pytest

from deepseek_operator.api import parse_spec
from deepseek_operator.render.common import Owner, child_name
from deepseek_operator.render.workload import render_workload
from tests.unit.upstream_crds import kube_validate

OWNER = Owner("chat", "team-a", "uid-1", 3)
BASE: dict[str, Any] = {"image": "reg/worker:1", "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}}


def spec(**extra: Any) -> Any:
    return parse_spec({**BASE, **extra})


def by_name(children: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [c for c in children if c["kind"] == kind and c["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name} not rendered exactly once"
    return matches[0]


def container(children: list[dict[str, Any]], name: str = "chat-primary") -> dict[str, Any]:
    pod = by_name(children, "Deployment", name)["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return dict(pod["containers"][0])


def env(children: list[dict[str, Any]], name: str = "chat-primary") -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(children, name)["env"]}


def test_minimal_spec_renders_deployment_services_in_order() -> None:
    out = render_workload(OWNER, spec())
    assert [(c["kind"], c["metadata"]["name"]) for c in out] == [
        ("Deployment", "chat-primary"), ("Service", "chat-primary"), ("PodDisruptionBudget", "chat-primary"),
        ("Service", "chat")]


def test_children_carry_owner_reference_and_selector_labels() -> None:
    for child in render_workload(OWNER, spec()):
        meta = child["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["ownerReferences"] == [{
            "apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "name": "chat",
            "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}]
        assert meta["labels"]["deepseek.ai/deployment"] == "chat"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "deepseek-operator"
        assert "annotations" not in meta


GPU_CASES = [
    ("one nvidia gpu", {}, {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "1"}),
    ("four gpus, custom resources", {"resources": {"gpus": 4, "cpu": "16", "memory": "128Gi"}},
     {"cpu": "16", "memory": "128Gi", "nvidia.com/gpu": "4"}),
    ("amd gpus", {"resources": {"gpus": 2, "gpuResourceName": "amd.com/gpu"}},
     {"cpu": "4", "memory": "32Gi", "amd.com/gpu": "2"}),
    ("cpu only", {"resources": {"gpus": 0}}, {"cpu": "4", "memory": "32Gi"}),
]


@pytest.mark.parametrize(("extra", "limits"), [c[1:] for c in GPU_CASES], ids=[c[0] for c in GPU_CASES])
def test_gpu_limits(extra: dict[str, Any], limits: dict[str, str]) -> None:
    res = container(render_workload(OWNER, spec(**extra)))["resources"]
    assert res["limits"] == limits
    # The hub download's volume is requested too (test_a_hub_download_is_bounded_and_requested).
    assert res["requests"] == {**limits, "ephemeral-storage": "18Gi"}


ZONE_AFFINITY = {
    "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "preference": {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In",
                                                            "values": ["a"]}]}}]},
    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "chat"}}}]},
}


def test_scheduling_fields_and_gpu_toleration() -> None:
    sched = {"nodeSelector": {"gpu": "h100"}, "tolerations": [{"key": "dedicated", "operator": "Exists"}],
             "affinity": ZONE_AFFINITY, "priorityClassName": "llm", "runtimeClassName": "nvidia"}
    pod = by_name(render_workload(OWNER, spec(scheduling=sched)), "Deployment", "chat-primary")
    podspec = pod["spec"]["template"]["spec"]
    assert podspec["nodeSelector"] == {"gpu": "h100"}
    assert podspec["tolerations"] == [{"key": "dedicated", "operator": "Exists"},
                                      {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert podspec["affinity"] == ZONE_AFFINITY  # as written: no defaults, no empty lists added
    assert podspec["priorityClassName"] == "llm"
    assert podspec["runtimeClassName"] == "nvidia"


def test_empty_scheduling_is_omitted_and_cpu_pods_get_no_gpu_toleration() -> None:
    podspec = by_name(render_workload(OWNER, spec(resources={"gpus": 0})), "Deployment",
                      "chat-primary")["spec"]["template"]["spec"]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "runtimeClassName"):
        assert key not in podspec


def test_shm_is_memory_backed_with_size_and_restricted_security() -> None:
    out = render_workload(OWNER, spec(resources={"shmSize": "16Gi"}))
    podspec = by_name(out, "Deployment", "chat-primary")["spec"]["template"]["spec"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in podspec["volumes"]
    assert podspec["securityContext"]["runAsNonRoot"] is True
    assert podspec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(out)["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                  "capabilities": {"drop": ["ALL"]}}


def test_probes_allow_slow_model_loads_and_grace_covers_drain() -> None:
    out = render_workload(OWNER, spec(serving={"requestTimeoutSeconds": 120}))
    c = container(out)
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 1800, "model.loadTimeoutSeconds default"
    assert startup["httpGet"]["path"] == "/health/ready", "liveness answers 200 while the model loads"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    grace = by_name(out, "Deployment", "chat-primary")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert env(out)["DEEPSEEK_DRAIN_TIMEOUT_SECONDS"] == "120"
    assert grace > 120 + c["lifecycle"]["preStop"]["sleep"]["seconds"]


# name -> (spec.model.loadTimeoutSeconds, failureThreshold of the 10 s startup probe)
LOAD_BUDGETS = {"default 30 min": (None, 180), "minimum": (10, 1), "not a multiple of the period": (95, 10),
                "a day for a 600 GB download": (86400, 8640)}


@pytest.mark.parametrize(("budget", "threshold"), list(LOAD_BUDGETS.values()), ids=list(LOAD_BUDGETS))
def test_startup_probe_allows_exactly_the_model_load_budget(budget: int | None, threshold: int) -> None:
    """periodSeconds * failureThreshold covers model.loadTimeoutSeconds, by less than one period."""
    model = {**BASE["model"], **({"loadTimeoutSeconds": budget} if budget else {})}
    startup = container(render_workload(OWNER, spec(model=model, rollout={"progressDeadlineSeconds": 86400})))[
        "startupProbe"]
    assert (startup["periodSeconds"], startup["failureThreshold"]) == (10, threshold)
    allowed = startup["periodSeconds"] * startup["failureThreshold"]
    assert (budget or 1800) <= allowed < (budget or 1800) + startup["periodSeconds"]


def test_each_variant_gets_its_own_load_budget() -> None:
    out = render_workload(OWNER, spec(model={**BASE["model"], "loadTimeoutSeconds": 300},
                                      rollout={"progressDeadlineSeconds": 3600},
                                      variants=[{"name": "big", "model": {"loadTimeoutSeconds": 3600}},
                                                {"name": "same"}]))
    thresholds = {name: container(out, f"chat-{name}")["startupProbe"]["failureThreshold"]
                  for name in ("primary", "big", "same")}
    assert thresholds == {"primary": 30, "big": 360, "same": 30}
    for name in ("primary", "big", "same"):
        dep = by_name(out, "Deployment", f"chat-{name}")
        assert dep["spec"]["progressDeadlineSeconds"] == 3600
        kube_validate(dep)


def test_pvc_source_mounts_claim_read_only_and_points_worker_at_it() -> None:
    out = render_workload(OWNER, spec(model={"id": "r1-7b", "source": {"pvc": {"claimName": "models",
                                                                                "subPath": "r1-7b"}}}))
    podspec = by_name(out, "Deployment", "chat-primary")["spec"]["template"]["spec"]
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in podspec["volumes"]
    assert {"name": "model", "mountPath": "/models", "readOnly": True, "subPath": "r1-7b"} in \
        container(out)["volumeMounts"]
    assert env(out)["DEEPSEEK_MODEL"] == "/models"
    assert env(out)["DEEPSEEK_SERVED_MODEL_NAME"] == "r1-7b"
    assert env(out)["HF_HUB_OFFLINE"] == "1"


def test_hf_token_from_secret_and_auth_and_rate_limit_env() -> None:
    out = render_workload(OWNER, spec(
        model={"id": "org/gated", "source": {"huggingFace": {"tokenSecretRef": {"name": "hf", "key": "tok"}}}},
        auth={"apiKeysSecretRef": {"name": "keys"}, "jwt": {"secretRef": {"name": "jwt"}, "issuer": "me"}},
        rateLimit={"requestsPerMinute": 120, "burst": 10}))
    e = env(out)
    assert e["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "tok"}}
    assert e["DEEPSEEK_API_KEYS_FILE"] == "/etc/deepseek/api-keys/api-keys"
    assert e["DEEPSEEK_JWT_SECRET_FILE"] == "/etc/deepseek/jwt/signing-key"
    assert e["DEEPSEEK_JWT_ISSUER"] == "me"
    assert e["DEEPSEEK_RATE_LIMIT_RPM"] == "120"
    assert e["DEEPSEEK_RATE_LIMIT_BURST"] == "10"
    volumes = by_name(out, "Deployment", "chat-primary")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "api-keys", "secret": {"secretName": "keys"}} in volumes
    assert {"name": "jwt", "secret": {"secretName": "jwt"}} in volumes


def test_variant_inherits_and_overrides() -> None:
    out = render_workload(OWNER, spec(variants=[{"name": "canary", "weight": 10, "image": "reg/worker:2",
                                                 "replicas": 2, "model": {"quantization": "nf4"}}]))
    canary = by_name(out, "Deployment", "chat-canary")
    assert canary["spec"]["replicas"] == 2
    assert container(out, "chat-canary")["image"] == "reg/worker:2"
    assert env(out, "chat-canary")["DEEPSEEK_QUANTIZATION"] == "nf4"
    assert env(out, "chat-canary")["DEEPSEEK_MODEL"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert env(out)["DEEPSEEK_QUANTIZATION"] == "none"
    assert by_name(out, "Service", "chat-canary")["spec"]["selector"] == {
        "deepseek.ai/deployment": "chat", "deepseek.ai/variant": "canary"}
    assert by_name(out, "Service", "chat")["spec"]["selector"] == {"deepseek.ai/deployment": "chat"}


def test_image_override_is_what_rollback_uses() -> None:
    out = render_workload(OWNER, spec(), images={"primary": "reg/worker:0"})
    assert container(out)["image"] == "reg/worker:0"


def test_rollout_strategy_from_spec() -> None:
    dep = by_name(render_workload(OWNER, spec(model={**BASE["model"], "loadTimeoutSeconds": 600},
                                              rollout={"maxSurge": 1, "maxUnavailable": 0,
                                                       "progressDeadlineSeconds": 600})),
                  "Deployment", "chat-primary")
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert dep["spec"]["progressDeadlineSeconds"] == 600


def test_long_names_stay_within_limits_and_deterministic() -> None:
    owner = Owner("a" * 60, "ns", "uid")
    out = render_workload(owner, spec(variants=[{"name": "canary-long-name-xx", "weight": 5}]))
    names = [c["metadata"]["name"] for c in out]
    assert all(len(n) <= 63 for n in names)
    assert all(len(c["metadata"]["name"]) <= 47 for c in out if c["kind"] == "Deployment")
    assert names == [c["metadata"]["name"] for c in render_workload(owner, spec(
        variants=[{"name": "canary-long-name-xx", "weight": 5}]))]
    keys = [(c["kind"], c["metadata"]["name"]) for c in out]
    assert len(set(keys)) == len(keys)


def test_child_name_hashes_only_when_too_long() -> None:
    assert child_name("chat", "primary") == "chat-primary"
    long = child_name("x" * 70)
    assert len(long) == 63 and long != child_name("x" * 71)


FULL: dict[str, Any] = {
    "resources": {"gpus": 2, "shmSize": "16Gi"},
    "scheduling": {"nodeSelector": {"gpu": "h100"}, "tolerations": [{"key": "a", "operator": "Exists"}],
                   "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                       "nodeSelectorTerms": [{"matchExpressions": [
                           {"key": "gpu", "operator": "In", "values": ["h100"]}]}]}}},
                   "priorityClassName": "llm", "runtimeClassName": "nvidia"},
    "model": {"id": "r1", "source": {"pvc": {"claimName": "models", "subPath": "r1"}}},
    "auth": {"apiKeysSecretRef": {"name": "keys"}, "jwt": {"secretRef": {"name": "jwt"}}},
    "variants": [{"name": "canary", "weight": 10, "image": "reg/worker:2"}],
}


@pytest.mark.parametrize("extra", [{}, FULL], ids=["minimal", "everything set"])
def test_rendered_children_pass_kubernetes_validate_strict(extra: dict[str, Any]) -> None:
    children = render_workload(OWNER, spec(**extra))
    assert {c["kind"] for c in children} == {"Deployment", "Service", "PodDisruptionBudget"}
    for child in children:
        kube_validate(child)


def test_disruption_budget_per_variant_lets_one_worker_go_at_a_time() -> None:
    out = render_workload(OWNER, spec(variants=[{"name": "canary", "weight": 10}]))
    pdb = by_name(out, "PodDisruptionBudget", "chat-canary")
    assert pdb["spec"] == {"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow", "selector": {
        "matchLabels": {"deepseek.ai/deployment": "chat", "deepseek.ai/variant": "canary"}}}
    assert by_name(out, "PodDisruptionBudget", "chat-primary")["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


# --- issue 18: the worker's lengths by model family, the hub download's volume ------------------------


def volume(children: list[dict[str, Any]], name: str, deployment: str = "chat-primary") -> dict[str, Any]:
    pod = by_name(children, "Deployment", deployment)["spec"]["template"]["spec"]
    return next(v for v in pod["volumes"] if v["name"] == name)


@pytest.mark.parametrize(("model", "serving", "lengths"), [
    ({}, {}, ("32768", "16384")),  # R1-Distill-Qwen-7B: a reasoning model
    ({"id": "deepseek-ai/DeepSeek-V2-Lite-Chat"}, {}, ("8192", "2048")),
    ({"maxModelLen": 8192}, {}, ("8192", "4096")),
    ({"maxModelLen": 4096}, {"maxNewTokens": 512}, ("4096", "512")),
])
def test_worker_lengths_come_from_the_spec_else_the_model_family(
        model: dict[str, Any], serving: dict[str, Any], lengths: tuple[str, str]) -> None:
    e = env(render_workload(OWNER, spec(model={**BASE["model"], **model}, serving=serving)))
    assert (e["DEEPSEEK_MAX_MODEL_LEN"], e["DEEPSEEK_MAX_NEW_TOKENS"]) == lengths


def test_a_canary_of_another_family_gets_its_own_lengths() -> None:
    out = render_workload(OWNER, spec(variants=[{"name": "v2", "weight": 10, "model": {
        "id": "deepseek-ai/DeepSeek-V2-Lite-Chat"}}]))
    assert env(out)["DEEPSEEK_MAX_MODEL_LEN"] == "32768"
    assert (env(out, "chat-v2")["DEEPSEEK_MAX_MODEL_LEN"], env(out, "chat-v2")["DEEPSEEK_MAX_NEW_TOKENS"]) == (
        "8192", "2048")


@pytest.mark.parametrize(("model", "size"), [
    # 7.616B x 2 bytes = 15.2 GB; x1.1 + 2 GiB = 18.9 GB -> 18Gi (17.6 GiB rounded up)
    ({}, "18Gi"),
    ({"id": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B"}, "147Gi"),
    ({"id": "deepseek-ai/DeepSeek-R1"}, "708Gi"),  # the hub's FP8 files: 688.6 GB
    # outside the catalogue: 2 bytes per parameter of spec.model.architecture (8.0 GB -> 10.2 GiB -> 11Gi)
    ({"id": "my-org/my-4b", "architecture": {"parameters": "4B", "layers": 32, "hiddenSize": 3072,
                                            "attentionHeads": 24}}, "11Gi"),
])
def test_a_hub_download_is_bounded_and_requested(model: dict[str, Any], size: str) -> None:
    out = render_workload(OWNER, spec(model={**BASE["model"], **model}))
    assert volume(out, "cache")["emptyDir"] == {"sizeLimit": size}
    assert container(out)["resources"]["requests"]["ephemeral-storage"] == size
    assert "ephemeral-storage" not in container(out)["resources"]["limits"]  # the sizeLimit bounds it


@pytest.mark.parametrize("model", [
    {"cache": {"enabled": True, "size": "40Gi"}},  # the download Job fills a claim
    {"source": {"pvc": {"claimName": "models"}}},
    {"id": "/opt/models/r1-7b"},  # a path inside the image
    {"id": "my-org/unknown-model"},  # size unknown: unbounded, as docs/model-cache.md says
])
def test_no_download_or_an_unknown_size_leaves_the_cache_dir_unsized(model: dict[str, Any]) -> None:
    out = render_workload(OWNER, spec(model={**BASE["model"], **model}))
    assert volume(out, "cache")["emptyDir"] == {}
    assert "ephemeral-storage" not in container(out)["resources"]["requests"]
