"""Multi-node workers: a LeaderWorkerSet instead of a Deployment when a pod's GPUs exceed a node. Pure.

When `resources.gpus` exceeds a node's GPUs (`node_gpus`: `resources.gpusPerNode`, else the
`nvidia.com/gpu.count` label of `scheduling.nodeSelector`; runtime vllm or sglang: the CRD refuses builtin),
each replica of a variant is a group of `size = gpus / per_node` pods, one per node, each asking for
per_node GPUs. The LeaderWorkerSet controller (kubernetes-sigs/lws) runs a group as a leader pod and
`size - 1` worker pods; its pod webhook gives every pod LWS_LEADER_ADDRESS (the leader's DNS name under
the group's headless Service) and LWS_WORKER_INDEX (0 on the leader), which the engine's arguments read
through Kubernetes' `$(VAR)` expansion.

- The leader runs the same two containers as a single-node pod (render/engine.py): our worker in proxy
  mode in front, and the engine as rank 0 with the multi-node flags (runtimes.MultiNode: vLLM's
  `--nnodes --node-rank --master-addr --master-port`, SGLang's `--nnodes --node-rank --dist-init-addr`).
- A worker runs the engine alone, as rank `$(LWS_WORKER_INDEX)` (vLLM: `--headless`); it serves no API,
  so it has no probes (an exec probe of /health would restart it for ever).
- vLLM without runtime.parallelism splits tensor-parallel within a node and pipeline-parallel across
  nodes (`--tensor-parallel-size per_node --pipeline-parallel-size size`): inter-node links are the slow
  ones. SGLang keeps tensor parallel over every GPU of the group (`--tp-size gpus`), as its multi-node
  guide does.
- Startup policy LeaderCreated, restart policy RecreateGroupOnPodRestart (a lost rank breaks the whole
  engine), the rollout's maxSurge / maxUnavailable as for a Deployment (strategy.rolling_update), counted
  in groups.
- The leader template carries `deepseek.ai/role: leader`, the worker template `worker`: the variant's
  and the stable Service select leaders only (`leaders_only`), where the API is.
- The LeaderWorkerSet is `<name>-<variant>-lws` (`lws_name`): the controller makes a headless Service of
  that name for the pods' DNS names (LWS_LEADER_ADDRESS is `<lws>-<group>.<lws>.<namespace>`).
"""

from __future__ import annotations

from typing import Any

from deepseek_operator import runtimes
from deepseek_operator.api import DeepSeekDeploymentSpec, Parallelism, ResolvedVariant
from deepseek_operator.render import engine as engine_pod
from deepseek_operator.render.common import MAX_DEPLOYMENT_NAME, Owner, child_name, common_labels, metadata
from deepseek_operator.resource.workload import gpus_per_node
from deepseek_operator.strategy import Strategy, rolling_update

API_VERSION = "leaderworkerset.x-k8s.io/v1"
KIND = "LeaderWorkerSet"
CRD_NAME = "leaderworkersets.leaderworkerset.x-k8s.io"
LABEL_ROLE = "deepseek.ai/role"
LEADER_ADDRESS = "$(LWS_LEADER_ADDRESS)"
WORKER_INDEX = "$(LWS_WORKER_INDEX)"
# The engines' rendezvous ports on the leader: vLLM's torch.distributed master, SGLang's dist-init.
RENDEZVOUS_PORTS = {"vllm": 29501, "sglang": 20000}
ENGINE = "engine"


def lws_name(owner: Owner, variant: str) -> str:
    """`<name>-<variant>-lws`: the LWS controller names its headless Service after the LeaderWorkerSet, so
    the variant's own Service (`<name>-<variant>`) must not share the name."""
    return child_name(owner.name, variant, "lws", max_len=MAX_DEPLOYMENT_NAME)


def node_gpus(spec: DeepSeekDeploymentSpec) -> int | None:
    """GPUs one node offers a pod (workload.gpus_per_node): resources.gpusPerNode, else the node selector's
    nvidia.com/gpu.count label; None when neither is set (one node holds the pod)."""
    return gpus_per_node(spec.resources.gpus_per_node, spec.scheduling.node_selector)


def group_size(spec: DeepSeekDeploymentSpec) -> int:
    """Pods per replica: ceil(gpus / node_gpus) when a node's GPUs are known and exceeded, else 1."""
    per_node = node_gpus(spec)
    if not per_node or spec.resources.gpus <= per_node:
        return 1
    return -(-spec.resources.gpus // per_node)


def spans_nodes(spec: DeepSeekDeploymentSpec) -> bool:
    """The workers are LeaderWorkerSets (a pod's GPUs exceed a node)."""
    return group_size(spec) > 1


def render_leader_worker_set(owner: Owner, spec: DeepSeekDeploymentSpec, variant: ResolvedVariant,
                             pod: dict[str, Any], strategy: Strategy = "Surge") -> dict[str, Any]:
    """The LeaderWorkerSet of one variant from its single-node pod spec `pod` (workload.render_pod_spec)."""
    size = group_size(spec)
    labels = common_labels(owner, variant.name)
    rollout = spec.rollout
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(owner, lws_name(owner, variant.name), variant.name),
        "spec": {
            **({"replicas": variant.replicas} if variant.autoscaling is None else {}),  # see workload.replicas_field
            "startupPolicy": "LeaderCreated",
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": rolling_update(strategy, rollout.max_surge, rollout.max_unavailable),
            },
            "networkConfig": {"subdomainPolicy": "Shared"},
            "leaderWorkerTemplate": {
                "size": size,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {"metadata": {"labels": {**labels, LABEL_ROLE: "leader"}},
                                   "spec": leader_pod(spec, variant, pod)},
                "workerTemplate": {"metadata": {"labels": {**labels, LABEL_ROLE: "worker"}},
                                   "spec": worker_pod(spec, variant, pod)},
            },
        },
    }


def leader_pod(spec: DeepSeekDeploymentSpec, variant: ResolvedVariant, pod: dict[str, Any]) -> dict[str, Any]:
    """The single-node pod with the engine as rank 0 on a node's GPUs; the edge stays in front."""
    containers = [_engine(spec, variant, c, rank=0) if c["name"] == ENGINE else c for c in pod["containers"]]
    return {**pod, "containers": containers}


def worker_pod(spec: DeepSeekDeploymentSpec, variant: ResolvedVariant, pod: dict[str, Any]) -> dict[str, Any]:
    """The engine alone as rank $(LWS_WORKER_INDEX), without probes, with only the volumes it mounts."""
    engine = next(c for c in pod["containers"] if c["name"] == ENGINE)
    container = {k: v for k, v in _engine(spec, variant, engine, rank=None).items()
                 if k not in ("startupProbe", "livenessProbe", "readinessProbe")}
    mounted = {m["name"] for m in container.get("volumeMounts", [])}
    return {**pod, "containers": [container], "volumes": [v for v in pod.get("volumes", []) if v["name"] in mounted]}


def leaders_only(service: dict[str, Any]) -> dict[str, Any]:
    """A Service of the workload that selects the groups' leaders: the pods that serve the API."""
    return {**service, "spec": {**service["spec"], "selector": {**service["spec"]["selector"], LABEL_ROLE: "leader"}}}


def engine_args(spec: DeepSeekDeploymentSpec, variant: ResolvedVariant, rank: int | None) -> list[str]:
    """The engine's arguments on one node: rank 0 (the leader) or, for `None`, $(LWS_WORKER_INDEX)."""
    runtime = variant.runtime
    gpus, size = spec.resources.gpus, group_size(spec)
    if runtime.name == "vllm" and runtime.parallelism is None:  # tensor within a node, pipeline across
        variant = variant.model_copy(update={"runtime": runtime.model_copy(
            update={"parallelism": Parallelism(tensor=gpus // size, pipeline=size)})})
    node = runtimes.MultiNode(size, 0 if rank == 0 else 1, LEADER_ADDRESS, RENDEZVOUS_PORTS[runtime.name])
    args = engine_pod.engine_args(spec, variant, node)
    if rank is None:  # the rendered rank 1 stands for every worker: the index comes from the LWS webhook
        at = args.index("--node-rank") + 1
        args = [*args[:at], WORKER_INDEX, *args[at + 1:]]
    return args


def _engine(spec: DeepSeekDeploymentSpec, variant: ResolvedVariant, container: dict[str, Any],
            rank: int | None) -> dict[str, Any]:
    """The engine container on one node: multi-node arguments, a node's GPUs (node_gpus)."""
    per_node = str(node_gpus(spec))
    name = spec.resources.gpu_resource_name
    resources = {kind: {**values, name: per_node} if name in values else dict(values)
                 for kind, values in container["resources"].items()}
    return {**container, "args": engine_args(spec, variant, rank), "resources": resources}
