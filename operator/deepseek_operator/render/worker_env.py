"""The worker's settings as container env: exactly the contract in docs/worker-settings.md, then the
user's spec.env (merged per variant). envvars.WORKER_NAMES lists every name set here: the CRD refuses
them in spec.env, and tests/unit/test_user_env.py keeps the two in step."""

from __future__ import annotations

from typing import Any

from deepseek_operator import family
from deepseek_operator.api import PRIMARY, DeepSeekDeploymentSpec, ResolvedVariant
from deepseek_operator.render.common import METRICS_PORT

MODEL_MOUNT = "/models"
CACHE_MOUNT = "/models-cache"
AUTH_MOUNT = "/etc/deepseek"
# Where the download Job puts a cached model's files on its claim (mounted at MODEL_MOUNT).
DOWNLOAD_DIR = f"{MODEL_MOUNT}/model"


def model_location(variant: ResolvedVariant) -> str:
    """What the worker loads: the downloaded files for a cached model, a path on the model volume for
    pvc sources, else the hub id."""
    model = variant.model
    if model.cached:
        return DOWNLOAD_DIR
    if model.source.pvc is None:
        return model.id
    if model.id.startswith("/"):
        return model.id
    return MODEL_MOUNT


def _env(name: str, value: str | int) -> dict[str, Any]:
    return {"name": name, "value": str(value)}


def worker_env(spec: DeepSeekDeploymentSpec, variant: ResolvedVariant, drain_seconds: int,
               report: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """Env of the worker container, in a fixed order (a reordering would restart every pod).

    Settings the spec leaves unset are not rendered (the worker's defaults apply), so a new optional
    field restarts no pod until it is set. `report`: (namespace, ConfigMap) the worker writes its
    start-up measurements into (render/measurements.py)."""
    model = variant.model
    serving = spec.serving
    lengths = family.lengths(model, serving)  # unset: the model family's defaults, always rendered
    env = [
        _env("DEEPSEEK_MODEL", model_location(variant)),
        _env("DEEPSEEK_MODEL_REVISION", model.revision),
        _env("DEEPSEEK_SERVED_MODEL_NAME", model.id),
        _env("DEEPSEEK_METRICS_PORT", METRICS_PORT),
        _env("DEEPSEEK_DTYPE", model.dtype),
        _env("DEEPSEEK_QUANTIZATION", model.quantization),
        _env("DEEPSEEK_ATTENTION", model.attention),
        _env("DEEPSEEK_MAX_MODEL_LEN", lengths.max_model_len),
        _env("DEEPSEEK_MAX_BATCH_SIZE", serving.max_batch_size),
        *([_env("DEEPSEEK_GPU_MEMORY_UTILIZATION", f"{serving.gpu_memory_utilization:g}")]
          if serving.gpu_memory_utilization is not None else []),
        *([_env("DEEPSEEK_MAX_NUM_BATCHED_TOKENS", serving.max_num_batched_tokens)]
          if serving.max_num_batched_tokens is not None else []),
        _env("DEEPSEEK_MAX_CONCURRENT_REQUESTS", serving.max_concurrent_requests),
        *([_env("DEEPSEEK_MAX_CONCURRENT_REQUESTS_PER_KEY", serving.max_concurrent_requests_per_key)]
          if serving.max_concurrent_requests_per_key is not None else []),
        _env("DEEPSEEK_MAX_NEW_TOKENS", lengths.max_new_tokens),
        _env("DEEPSEEK_REQUEST_TIMEOUT_SECONDS", serving.request_timeout_seconds),
        _env("DEEPSEEK_DRAIN_TIMEOUT_SECONDS", drain_seconds),
        _env("DEEPSEEK_PORT", 8000),
        *([_env("DEEPSEEK_REPORT_NAMESPACE", report[0]), _env("DEEPSEEK_REPORT_CONFIGMAP", report[1])]
          if report is not None else []),
        _env("HF_HOME", CACHE_MOUNT),
    ]
    if variant.name != PRIMARY:  # the per-key token counters' variant label; the worker's default is the primary's
        env.append(_env("DEEPSEEK_VARIANT", variant.name))
    if model.source.pvc is not None or model.cached:
        env.append(_env("HF_HUB_OFFLINE", 1))  # everything is on the volume: never call a hub
    hub = model.source.hugging_face
    if hub is not None and hub.endpoint and not model.cached:
        env.append(_env("HF_ENDPOINT", hub.endpoint))
    token = hub.token_secret_ref if hub is not None and not model.cached else None
    if token is not None:  # a cached model's token goes to its download Job only
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}}})
    if not spec.gateway_enabled:  # behind the gateway the edge is the gateway's (render/gateway.py)
        env += edge_env(spec)
    else:  # the gateway sends each request's priority (x-deepseek-priority); only it reaches these pods
        env.append(_env("DEEPSEEK_TRUST_GATEWAY_PRIORITY", "true"))
    # The user's env last, whole (api.py refuses the names above): nothing given is dropped.
    return env + [e.to_container() for e in variant.env]


def edge_env(spec: DeepSeekDeploymentSpec) -> list[dict[str, Any]]:
    """The edge's settings: rate limit, API keys, JWT, trusted forwarders. On the workers, or on the
    gateway when spec.gateway is enabled (the workers behind it get no credential to check)."""
    env = []
    if spec.rate_limit is not None:
        env.append(_env("DEEPSEEK_RATE_LIMIT_RPM", spec.rate_limit.requests_per_minute))
        env.append(_env("DEEPSEEK_RATE_LIMIT_BURST", spec.rate_limit.burst))
    if spec.auth.api_keys_secret_ref is not None:
        env.append(_env("DEEPSEEK_API_KEYS_FILE", f"{AUTH_MOUNT}/api-keys/api-keys"))
    jwt = spec.auth.jwt
    if jwt is not None:
        env += [
            _env("DEEPSEEK_JWT_SECRET_FILE", f"{AUTH_MOUNT}/jwt/signing-key"),
            _env("DEEPSEEK_JWT_CLIENTS_FILE", f"{AUTH_MOUNT}/jwt/clients"),
            _env("DEEPSEEK_JWT_ISSUER", jwt.issuer),
            _env("DEEPSEEK_JWT_AUDIENCE", jwt.audience),
            _env("DEEPSEEK_JWT_TTL_SECONDS", jwt.token_ttl_seconds),
        ]
    if spec.serving.forwarded_allow_ips is not None:
        # uvicorn reads it (cli.py leaves Config.forwarded_allow_ips unset): X-Forwarded-For from these
        # peers names the client, so limits and the failed-auth throttle count per client, not per ingress pod.
        env.append(_env("FORWARDED_ALLOW_IPS", ",".join(spec.serving.forwarded_allow_ips)))
    return env
