"""core/v1 EnvVar as `spec.env`, `spec.variants[].env` and `model.cache.env` hold it (issue 18 item 6).

Users add environment to the worker (proxies, `HF_HUB_DISABLE_XET`, `PYTORCH_CUDA_ALLOC_CONF`,
`NCCL_*`) and to the model cache's download Job. The operator appends it after its own settings and
never drops an entry. A name the operator sets itself is refused (here and by a CEL rule naming the
variable, tools/crd_rules.py): two entries with one name leave the container with whichever the
kubelet applies last, so a user's `HF_TOKEN` would silently replace the Secret reference.

WORKER_NAMES and DOWNLOAD_NAMES are what render/worker_env.py and render/model_cache.py can set;
tests/unit/test_user_env.py renders every branch of both and asserts the same sets, so the lists
cannot drift from the renderers. Grammars are the apiserver's (what a pod template holds).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from deepseek_operator.wire import DNS_SUBDOMAIN, Model

# The C_IDENTIFIER-like grammar every apiserver version accepts for an env name (dots and dashes too).
ENV_NAME = "^[-._a-zA-Z][-._a-zA-Z0-9]*$"
CONFIG_KEY = "^[-._a-zA-Z0-9]+$"  # a Secret or ConfigMap key
# The pod fields the downward API gives a container's env (ValidateEnvVarSource's list).
FIELD_PATH = (r"^(?:metadata[.](?:name|namespace|uid)|metadata[.](?:labels|annotations)\['[-A-Za-z0-9_./]+'\]"
              "|spec[.](?:nodeName|serviceAccountName)|status[.](?:hostIP|hostIPs|podIP|podIPs))$")
MAX_ENV = 64

# Every name render/worker_env.py and render/engine.py may set (test_user_env.py proves it against the renderers).
WORKER_NAMES = (
    "DEEPSEEK_MODEL", "DEEPSEEK_MODEL_REVISION", "DEEPSEEK_SERVED_MODEL_NAME", "DEEPSEEK_METRICS_PORT",
    "DEEPSEEK_DTYPE", "DEEPSEEK_QUANTIZATION", "DEEPSEEK_ATTENTION", "DEEPSEEK_MAX_MODEL_LEN",
    "DEEPSEEK_MAX_BATCH_SIZE", "DEEPSEEK_GPU_MEMORY_UTILIZATION", "DEEPSEEK_MAX_NUM_BATCHED_TOKENS",
    "DEEPSEEK_MAX_CONCURRENT_REQUESTS", "DEEPSEEK_MAX_CONCURRENT_REQUESTS_PER_KEY", "DEEPSEEK_MAX_NEW_TOKENS",
    "DEEPSEEK_REQUEST_TIMEOUT_SECONDS", "DEEPSEEK_DRAIN_TIMEOUT_SECONDS", "DEEPSEEK_PORT",
    "DEEPSEEK_REPORT_NAMESPACE", "DEEPSEEK_REPORT_CONFIGMAP", "HF_HOME", "HF_HUB_OFFLINE", "HF_ENDPOINT",
    "HF_TOKEN", "DEEPSEEK_RATE_LIMIT_RPM", "DEEPSEEK_RATE_LIMIT_BURST", "DEEPSEEK_API_KEYS_FILE",
    "DEEPSEEK_JWT_SECRET_FILE", "DEEPSEEK_JWT_CLIENTS_FILE", "DEEPSEEK_JWT_ISSUER", "DEEPSEEK_JWT_AUDIENCE",
    "DEEPSEEK_JWT_TTL_SECONDS", "FORWARDED_ALLOW_IPS", "DEEPSEEK_VARIANT", "DEEPSEEK_TRUST_GATEWAY_PRIORITY",
    "DEEPSEEK_UPSTREAM", "HOME",  # engine runtimes (render/engine.py): the edge's upstream, the engine's home
)
# Every name render/model_cache.py's download_env may set.
DOWNLOAD_NAMES = (
    "DEEPSEEK_DOWNLOAD_SOURCE", "DEEPSEEK_MODEL", "DEEPSEEK_MODEL_REVISION", "DEEPSEEK_DOWNLOAD_DIR",
    "DEEPSEEK_PROGRESS_CONFIGMAP", "DEEPSEEK_PROGRESS_NAMESPACE", "HF_HUB_OFFLINE", "HF_HOME",
    "MODELSCOPE_CACHE", "DEEPSEEK_DOWNLOAD_ENDPOINT", "DEEPSEEK_DOWNLOAD_TOKEN",
)
RESERVED_MESSAGE = "is set by the operator: use the spec field that sets it (docs/api.md lists them)"
SOURCE_MESSAGE = "set exactly one of secretKeyRef, configMapKeyRef or fieldRef"
VALUE_MESSAGE = "set value or valueFrom, not both"


class KeyRef(Model):
    """A key of a Secret or ConfigMap in the resource's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=f"^{DNS_SUBDOMAIN}$", description="Object name.")
    key: str = Field(min_length=1, max_length=253, pattern=CONFIG_KEY, description="Key inside it.")
    optional: bool | None = Field(None, description="Start the pod even when the object or key is missing.")


class FieldRef(Model):
    field_path: str = Field(
        min_length=1, max_length=512, pattern=FIELD_PATH,
        description="A pod field: metadata.name, metadata.namespace, metadata.uid, metadata.labels['k'], "
        "metadata.annotations['k'], spec.nodeName, spec.serviceAccountName, status.hostIP(s), status.podIP(s).")


class EnvVarSource(Model):
    """Where an env value comes from: exactly one of secretKeyRef, configMapKeyRef or fieldRef."""

    secret_key_ref: KeyRef | None = Field(None, description="A key of a Secret.")
    config_map_key_ref: KeyRef | None = Field(None, description="A key of a ConfigMap.")
    field_ref: FieldRef | None = Field(None, description="A field of the pod (downward API).")

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvVarSource:
        if sum(s is not None for s in (self.secret_key_ref, self.config_map_key_ref, self.field_ref)) != 1:
            raise ValueError(SOURCE_MESSAGE)
        return self


class EnvVar(Model):
    """A core/v1 EnvVar: a literal value or a reference."""

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME, description="Variable name.")
    value: str | None = Field(None, max_length=32768, description="Literal value.")
    value_from: EnvVarSource | None = Field(None, description="Value from a Secret, ConfigMap or pod field.")

    @model_validator(mode="after")
    def _one_value(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError(VALUE_MESSAGE)
        return self

    def to_container(self) -> dict[str, Any]:
        """The container env entry, in the form the apiserver returns unchanged (fieldRef with apiVersion v1,
        which it would otherwise add: the next apply would see a difference)."""
        out = self.model_dump(by_alias=True, exclude_none=True)
        field_ref = out.get("valueFrom", {}).get("fieldRef")
        if field_ref is not None:
            field_ref["apiVersion"] = "v1"
        return out


def _not_reserved(name: str, reserved: tuple[str, ...]) -> str:
    if name in reserved:
        raise ValueError(f"{name} {RESERVED_MESSAGE}")
    return name


class WorkerEnvVar(EnvVar):
    """An env entry of the worker container: not a name the operator sets (envvars.WORKER_NAMES)."""

    @field_validator("name")
    @classmethod
    def _reserved(cls, name: str) -> str:
        return _not_reserved(name, WORKER_NAMES)


class DownloadEnvVar(EnvVar):
    """An env entry of the download Job: not a name the operator sets (envvars.DOWNLOAD_NAMES)."""

    @field_validator("name")
    @classmethod
    def _reserved(cls, name: str) -> str:
        return _not_reserved(name, DOWNLOAD_NAMES)


def unique_names(env: list[Any] | None) -> None:
    """The list-map key's check (the apiserver refuses duplicates by name itself)."""
    names = [e.name for e in env or []]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate name {', '.join(duplicates)}")


def merged(base: list[WorkerEnvVar], override: list[WorkerEnvVar] | None) -> tuple[WorkerEnvVar, ...]:
    """A variant's env: its entries replace spec.env's of the same name, the rest are appended."""
    if not override:
        return tuple(base)
    mine = {e.name: e for e in override}
    return (*[mine.pop(e.name, e) for e in base], *mine.values())
