"""Multi-node workers (render/multinode.py, lws_status.py): a LeaderWorkerSet when a pod's GPUs exceed a node."""

from __future__ import annotations

from typing import Any

import pytest

from deepseek_operator import strategy
from deepseek_operator.api import InvalidSpec, parse_spec
from deepseek_operator.integrations import integration_conditions
from deepseek_operator.lws_status import as_deployment
from deepseek_operator.observe import VariantObservation, variant_state
from deepseek_operator.render.common import Capabilities, Owner
from deepseek_operator.render.multinode import LABEL_ROLE, group_size
from deepseek_operator.render.workload import render_workload
from tests.unit.upstream_crds import LEADER_WORKER_SET, validate

OWNER = Owner("chat", "team-a", "uid-1", 3)
V3 = {"id": "deepseek-ai/DeepSeek-V3"}


def spec(runtime: str = "vllm", gpus: int = 16, per_node: int | None = 8, **extra: Any) -> Any:
    resources: dict[str, Any] = {"gpus": gpus, **({"gpusPerNode": per_node} if per_node else {})}
    return parse_spec({"image": "reg/worker:1", "model": V3, "resources": resources,
                       "runtime": {"name": runtime}, **extra})


def lws(children: list[dict[str, Any]], name: str = "chat-primary-lws") -> dict[str, Any]:
    (found,) = [c for c in children if c["kind"] == "LeaderWorkerSet" and c["metadata"]["name"] == name]
    return found


def containers(obj: dict[str, Any], template: str) -> dict[str, dict[str, Any]]:
    pod = obj["spec"]["leaderWorkerTemplate"][template]["spec"]
    return {c["name"]: c for c in pod["containers"]}


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_vllm_over_two_nodes_is_a_leader_worker_set_of_two_pods_with_eight_gpus_each() -> None:
    out = render_workload(OWNER, spec())
    assert [c["kind"] for c in out] == ["LeaderWorkerSet", "Service", "PodDisruptionBudget", "Service"]
    obj = lws(out)
    validate(obj, LEADER_WORKER_SET)  # the upstream CRD's schema, strictly
    assert obj["spec"]["replicas"] == 1 and obj["spec"]["startupPolicy"] == "LeaderCreated"
    template = obj["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2 and template["restartPolicy"] == "RecreateGroupOnPodRestart"
    assert obj["spec"]["rolloutStrategy"] == {"type": "RollingUpdate",
                                              "rollingUpdateConfiguration": {"maxSurge": 1, "maxUnavailable": 0}}
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1"

    leader = containers(obj, "leaderTemplate")
    assert list(leader) == ["worker", "engine"]  # our edge in front, only on the leader
    assert "nvidia.com/gpu" not in leader["worker"]["resources"]["limits"]
    engine = leader["engine"]
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert engine["resources"]["requests"]["nvidia.com/gpu"] == "8"
    args = engine["args"]
    assert (flag(args, "--tensor-parallel-size"), flag(args, "--pipeline-parallel-size")) == ("8", "2")
    assert (flag(args, "--nnodes"), flag(args, "--node-rank")) == ("2", "0")
    assert flag(args, "--master-addr") == "$(LWS_LEADER_ADDRESS)"
    assert "--headless" not in args and "startupProbe" in engine

    worker = containers(obj, "workerTemplate")
    assert list(worker) == ["engine"]
    wargs = worker["engine"]["args"]
    assert flag(wargs, "--node-rank") == "$(LWS_WORKER_INDEX)" and "--headless" in wargs
    assert flag(wargs, "--tensor-parallel-size") == "8"
    assert not {"startupProbe", "livenessProbe", "readinessProbe"} & set(worker["engine"])  # no API to probe
    assert worker["engine"]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    worker_pod = obj["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]
    mounted = {m["name"] for m in worker["engine"]["volumeMounts"]}
    assert {v["name"] for v in worker_pod["volumes"]} == mounted


def test_roles_label_the_templates_and_the_services_select_leaders() -> None:
    out = render_workload(OWNER, spec())
    template = lws(out)["spec"]["leaderWorkerTemplate"]
    assert template["leaderTemplate"]["metadata"]["labels"][LABEL_ROLE] == "leader"
    assert template["workerTemplate"]["metadata"]["labels"][LABEL_ROLE] == "worker"
    for service in (c for c in out if c["kind"] == "Service"):
        assert service["spec"]["selector"][LABEL_ROLE] == "leader", service["metadata"]["name"]


def test_sglang_keeps_tensor_parallel_over_the_group_and_uses_its_dist_init_address() -> None:
    obj = lws(render_workload(OWNER, spec("sglang")))
    args = containers(obj, "leaderTemplate")["engine"]["args"]
    assert flag(args, "--tp-size") == "16" and flag(args, "--nnodes") == "2"
    assert flag(args, "--dist-init-addr") == "$(LWS_LEADER_ADDRESS):20000"
    wargs = containers(obj, "workerTemplate")["engine"]["args"]
    assert flag(wargs, "--node-rank") == "$(LWS_WORKER_INDEX)" and "--headless" not in wargs


def test_replace_strategy_and_explicit_parallelism_carry_over() -> None:
    s = parse_spec({"image": "reg/worker:1", "model": V3, "resources": {"gpus": 16, "gpusPerNode": 8},
                    "runtime": {"name": "vllm", "parallelism": {"tensor": 16}},
                    "rollout": {"strategy": "Replace", "maxUnavailable": 2}})
    obj = lws(render_workload(OWNER, s))
    assert obj["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"] == {"maxSurge": 0, "maxUnavailable": 2}
    args = containers(obj, "leaderTemplate")["engine"]["args"]
    assert flag(args, "--tensor-parallel-size") == "16" and "--pipeline-parallel-size" not in args


@pytest.mark.parametrize(("gpus", "per_node", "size"), [(8, 8, 1), (8, None, 1), (16, 8, 2), (16, 4, 4), (4, 8, 1)])
def test_group_size(gpus: int, per_node: int | None, size: int) -> None:
    assert group_size(spec(gpus=gpus, per_node=per_node)) == size


def test_a_pod_within_a_node_stays_a_deployment() -> None:
    out = render_workload(OWNER, spec(gpus=8, per_node=8))
    assert [c["kind"] for c in out] == ["Deployment", "Service", "PodDisruptionBudget", "Service"]
    assert all(LABEL_ROLE not in c["spec"]["selector"] for c in out if c["kind"] == "Service")


def test_canaries_are_leader_worker_sets_too() -> None:
    s = spec(variants=[{"name": "canary", "weight": 10, "image": "reg/worker:2", "runtime": {"name": "sglang"}}])
    out = render_workload(OWNER, s)
    names = [c["metadata"]["name"] for c in out if c["kind"] == "LeaderWorkerSet"]
    assert names == ["chat-primary-lws", "chat-canary-lws"]
    assert containers(lws(out, "chat-canary-lws"), "leaderTemplate")["worker"]["image"] == "reg/worker:2"
    assert strategy.template_hash(lws(out)) != strategy.template_hash(lws(out, "chat-canary-lws"))


def test_builtin_cannot_span_nodes_and_the_message_names_spec_runtime() -> None:
    with pytest.raises(InvalidSpec,
                       match=r"spec\.runtime: resources\.gpus exceeds a node's GPUs \(resources\.gpusPerNode"):
        parse_spec({"image": "reg/worker:1", "model": V3, "resources": {"gpus": 16, "gpusPerNode": 8}})
    with pytest.raises(InvalidSpec, match=r"spec\.runtime: .*only runtime vllm or sglang"):
        spec(variants=[{"name": "canary", "runtime": {"name": "builtin"}}])
    with pytest.raises(InvalidSpec, match=r"spec\.resources\.gpus: above a node's GPUs .* it must be a multiple"):
        spec(gpus=12)
    assert spec(runtime="builtin", gpus=8, per_node=8).resources.gpus_per_node == 8  # within a node: fine


def test_multinode_condition_says_the_group_shape_or_the_missing_api() -> None:
    lacking = [c for c in integration_conditions(spec(), Capabilities()) if c[0] == "MultiNodeReady"]
    assert [c[:3] for c in lacking] == [("MultiNodeReady", False, "LeaderWorkerSetMissing")]
    assert "install the LeaderWorkerSet controller" in lacking[0][3]
    served = [c for c in integration_conditions(spec(), Capabilities(leader_worker_set=True))
              if c[0] == "MultiNodeReady"]
    assert served[0][:3] == ("MultiNodeReady", True, "Configured") and "2 pods with 8 GPUs" in served[0][3]
    assert not [c for c in integration_conditions(spec(gpus=8), Capabilities()) if c[0] == "MultiNodeReady"]


COUNT = "nvidia.com/gpu.count"


def labelled(count: str, runtime: str = "vllm", gpus: int = 16, per_node: int | None = None, **extra: Any) -> Any:
    """A spec whose worker pods select nodes by GPU feature discovery's nvidia.com/gpu.count label."""
    return spec(runtime, gpus, per_node, scheduling={"nodeSelector": {COUNT: count}}, **extra)


def test_the_gpu_count_label_sizes_a_node_without_gpus_per_node() -> None:
    """Issue 20 item 4: 16 GPUs on nodes labelled nvidia.com/gpu.count=8 are a group of 2 pods of 8."""
    s = labelled("8")
    assert s.resources.gpus_per_node is None and group_size(s) == 2
    obj = lws(render_workload(OWNER, s))
    template = obj["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2
    assert template["leaderTemplate"]["spec"]["nodeSelector"] == {COUNT: "8"}  # the label pins every pod
    assert template["workerTemplate"]["spec"]["nodeSelector"] == {COUNT: "8"}
    for role in ("leaderTemplate", "workerTemplate"):
        engine = containers(obj, role)["engine"]
        assert engine["resources"]["limits"]["nvidia.com/gpu"] == "8", role
        assert (flag(engine["args"], "--tensor-parallel-size"), flag(engine["args"], "--nnodes")) == ("8", "2")
    assert render_workload(OWNER, labelled("16"))[0]["kind"] == "Deployment"  # one node holds 16


@pytest.mark.parametrize(("gpus", "per_node", "count", "size"), [
    (16, 4, "8", 4),  # gpusPerNode wins over the label
    (16, 16, "8", 1),
    (8, None, "8", 1),
    (16, None, "4", 4),
    (4, None, "2", 2),
])
def test_gpus_per_node_wins_over_the_label(gpus: int, per_node: int | None, count: str, size: int) -> None:
    assert group_size(labelled(count, gpus=gpus, per_node=per_node)) == size


@pytest.mark.parametrize("count", ["0", "x", "08", "8.0", "", "10000"])
@pytest.mark.parametrize("per_node", [None, 8])
def test_a_gpu_count_that_is_not_a_positive_integer_is_refused_naming_the_field(count: str,
                                                                                per_node: int | None) -> None:
    with pytest.raises(InvalidSpec, match=r'spec\.scheduling\.nodeSelector\["nvidia\.com/gpu\.count"\]: must be a '
                       r"positive integer"):
        labelled(count, per_node=per_node)


def test_the_gpu_count_label_bounds_builtin_and_whole_nodes_too() -> None:
    with pytest.raises(InvalidSpec,
                       match=r"spec\.runtime: resources\.gpus exceeds a node's GPUs .*nvidia\.com/gpu\.count"):
        labelled("8", runtime="builtin")
    with pytest.raises(InvalidSpec, match=r"spec\.resources\.gpus: above a node's GPUs"):
        labelled("8", gpus=12)
    assert labelled("8", runtime="builtin", gpus=8).resources.gpus == 8  # within a node: fine


def test_the_multinode_condition_counts_the_labelled_node() -> None:
    served = [c for c in integration_conditions(labelled("8"), Capabilities(leader_worker_set=True))
              if c[0] == "MultiNodeReady"]
    assert served[0][:3] == ("MultiNodeReady", True, "Configured") and "2 pods with 8 GPUs" in served[0][3]
    (lacking,) = [c for c in integration_conditions(labelled("8"), Capabilities()) if c[0] == "MultiNodeReady"]
    assert "resources.gpus (16) exceeds a node's GPUs (8)" in lacking[3]


def lws_obj(ready: int, updated: int, replicas: int = 2, available: bool = True,
            updating: bool = False, generation: int = 2, observed: int = 2) -> dict[str, Any]:
    conditions = [{"type": "Available", "status": "True" if available else "False"},
                  {"type": "Progressing", "status": "True" if updating else "False"},
                  {"type": "UpdateInProgress", "status": "True" if updating else "False"}]
    return {"metadata": {"name": "chat-primary-lws", "generation": generation},
            "spec": {"replicas": 2},
            "status": {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated,
                       "observedGeneration": observed, "conditions": conditions}}


@pytest.mark.parametrize(("obj", "phase"), [
    (lws_obj(2, 2), "Available"),
    (lws_obj(1, 1, available=False, updating=True), "RollingOut"),
    (lws_obj(2, 2, generation=3, observed=2), "RollingOut"),  # the controller has not seen the new spec
    (lws_obj(1, 2, available=False), "RollingOut"),  # not every group ready: no Available yet
    (None, "RollingOut"),
])
def test_leader_worker_set_status_reads_as_a_deployment(obj: dict[str, Any] | None, phase: str) -> None:
    state = variant_state(VariantObservation("primary", "reg/worker:1", 2, as_deployment(obj)))
    assert state.phase == phase, state
