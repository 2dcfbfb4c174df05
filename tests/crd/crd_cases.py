"""Tables of invalid and valid DeepSeekDeployments for tests/crd.

Each invalid case names the field path the apiserver reports and a piece of its message, and
whether the refusal comes from the OpenAPI schema or a CEL rule. `spec` is merged over a minimal
valid spec (top-level keys replace); `meta_name` replaces metadata.name.

`message` is the sandbox's wording (Python jsonschema's); `real_message`, where the real kube-apiserver
words it otherwise, is a piece of the real one, and `real_code` its HTTP status when that is not 422
(tests/crd/test_real_apiserver.py; the differences are listed in docs/sandbox.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NGINX = {"provider": "ingress-nginx", "host": "chat.example.com"}
GATEWAY = {"provider": "gateway-api", "host": "chat.example.com", "gateway": {"parentRefs": [{"name": "gw"}]}}
MODEL = {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}
SHA = "sha256:" + "0123456789abcdef" * 4
PINNED = f"registry.example.com/deepseek-worker@{SHA}"
CACHE = {"enabled": True, "size": "40Gi"}
# An image name (registry and repository) of exactly the OCI limit, 255 characters.
LONG_NAME = "registry.example.com:5000/" + "/".join(["w" * 49] * 4) + "/" + "w" * 29
WIDE = "\uff47\uff50\uff55"  # full-width letters: not ASCII, refused in every child
ARCH = {"parameters": "7.6B", "layers": 28, "hiddenSize": 3584, "attentionHeads": 28}


_TERM0 = ("spec.scheduling.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
          ".nodeSelectorTerms[0].matchExpressions[0]")


def _node_terms(requirement: dict[str, Any]) -> dict[str, Any]:
    """An affinity whose one required node term holds `requirement`."""
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [requirement]}]}}}


@dataclass(frozen=True)
class Invalid:
    """A resource the apiserver must refuse, with where and why."""

    id: str
    spec: dict[str, Any]
    path: str
    message: str
    by: str  # "schema" or "cel"
    meta_name: str = "chat"
    drop: tuple[str, ...] = ()  # spec keys to remove from the minimal spec
    status: dict[str, Any] | None = None
    parse_spec: bool = True  # api.parse_spec refuses it too (spec-only cases)
    real_message: str | None = None  # the real apiserver's wording, only where `message` is not in it
    real_code: int = 422  # the real apiserver's HTTP status (with fieldValidation=Strict, as kubectl sends)


def _variants(*weights: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": f"c{i}", "weight": w, **extra} for i, w in enumerate(weights)]


INVALID = [
    Invalid("image-missing", {}, "spec.image", "Required value", "schema", drop=("image",)),
    Invalid("model-missing", {}, "spec.model", "Required value", "schema", drop=("model",)),
    Invalid(
        "image-empty",
        {"image": ""},
        "spec.image",
        "should be non-empty",
        "schema",
        real_message="should be at least 1 chars long",
    ),
    Invalid("model-id-missing", {"model": {"revision": "main"}}, "spec.model.id", "Required value", "schema"),
    Invalid(
        "replicas-too-many",
        {"replicas": 300},
        "spec.replicas",
        "maximum of 256",
        "schema",
        real_message="less than or equal to 256",
    ),
    Invalid(
        "replicas-negative",
        {"replicas": -1},
        "spec.replicas",
        "minimum of 0",
        "schema",
        real_message="greater than or equal to 0",
    ),
    Invalid(
        "replicas-string",
        {"replicas": "two"},
        "spec.replicas",
        "not of type 'integer'",
        "schema",
        real_message="must be of type integer",
    ),
    Invalid("dtype-enum", {"model": {**MODEL, "dtype": "int4"}}, "spec.model.dtype", "Unsupported value", "schema"),
    Invalid(
        "quantization-enum", {"model": {**MODEL, "quantization": "gptq"}}, "spec.model.quantization", '"nf4"', "schema"
    ),
    Invalid(
        "attention-enum", {"model": {**MODEL, "attention": "fa3"}}, "spec.model.attention", "Unsupported", "schema"
    ),
    Invalid("max-model-len-small", {"model": {**MODEL, "maxModelLen": 64}}, "spec.model.maxModelLen", "128", "schema"),
    Invalid(
        "cpu-quantity",
        {"resources": {"cpu": "four"}},
        "spec.resources.cpu",
        "does not match",
        "schema",
        real_message="should match '^[0-9]+",
    ),
    Invalid(
        "gpus-too-many",
        {"resources": {"gpus": 17}},
        "spec.resources.gpus",
        "maximum of 16",
        "schema",
        real_message="less than or equal to 16",
    ),
    Invalid(
        "variant-name-pattern",
        {"variants": [{"name": "Canary_1"}]},
        "spec.variants[0].name",
        "does not match",
        "schema",
        real_message="should match '^[a-z0-9]",
    ),
    Invalid(
        "variant-name-long",
        {"variants": [{"name": "c" * 21}]},
        "spec.variants[0].name",
        "is too long",
        "schema",
        real_message="Too long: may not be more than 20 bytes",
    ),
    Invalid(
        "variant-weight",
        {"variants": _variants(101)},
        "spec.variants[0].weight",
        "maximum of 100",
        "schema",
        real_message="less than or equal to 100",
    ),
    Invalid(
        "variants-max-items",
        {"variants": _variants(*[1] * 9), "ingress": GATEWAY},
        "spec.variants",
        "is too long",
        "schema",
        real_message="Too many: 9: must have at most 8 items",
    ),
    Invalid(
        "unknown-spec-field",
        {"gpu": 1},
        "spec.gpu",
        'unknown field "gpu"',
        "schema",
        real_message='strict decoding error: unknown field "spec.gpu"',
        real_code=400,
    ),
    Invalid(
        "unknown-model-field",
        {"model": {**MODEL, "tokenizer": "x"}},
        "spec.model.tokenizer",
        "unknown",
        "schema",
        real_code=400,
    ),
    Invalid(
        "ingress-path",
        {"ingress": {**NGINX, "path": "api"}},
        "spec.ingress.path",
        "does not match",
        "schema",
        real_message="should match '^/",
    ),
    Invalid(
        "ingress-host-missing", {"ingress": {"provider": "ingress-nginx"}}, "spec.ingress.host", "Required", "schema"
    ),
    Invalid(
        "ingress-provider", {"ingress": {**NGINX, "provider": "traefik"}}, "spec.ingress.provider", "Unsup", "schema"
    ),
    Invalid(
        "scrape-interval",
        {"monitoring": {"serviceMonitor": {"interval": "30 seconds"}}},
        "spec.monitoring.serviceMonitor.interval",
        "does not match",
        "schema",
        real_message="should match '^[0-9]+(ms|s|m|h)$'",
    ),
    Invalid("jwt-secret-missing", {"auth": {"jwt": {}}}, "spec.auth.jwt.secretRef", "Required value", "schema"),
    Invalid(
        "jwt-ttl-short",
        {"auth": {"jwt": {"secretRef": {"name": "jwt"}, "tokenTTLSeconds": 10}}},
        "spec.auth.jwt.tokenTTLSeconds",
        "minimum of 60",
        "schema",
        real_message="greater than or equal to 60",
    ),
    Invalid(
        "batch-zero",
        {"serving": {"maxBatchSize": 0}},
        "spec.serving.maxBatchSize",
        "minimum of 1",
        "schema",
        real_message="greater than or equal to 1",
    ),
    Invalid(
        "gpu-memory-utilization-zero",
        # An integer 0: the apiserver once let it pass `minimum: 0.01` (it compares integers with the
        # minimum truncated), so the bound is `minimum: 0, exclusiveMinimum: true`.
        {"serving": {"gpuMemoryUtilization": 0}},
        "spec.serving.gpuMemoryUtilization",
        "minimum of 0",
        "schema",
        real_message="greater than 0",
    ),
    Invalid(
        "gpu-memory-utilization-above-one",
        {"serving": {"gpuMemoryUtilization": 1.2}},
        "spec.serving.gpuMemoryUtilization",
        "maximum of 1",
        "schema",
        real_message="less than or equal to 1",
    ),
    Invalid(
        "max-num-batched-tokens-small",
        {"serving": {"maxNumBatchedTokens": 8}},
        "spec.serving.maxNumBatchedTokens",
        "minimum of 16",
        "schema",
        real_message="greater than or equal to 16",
    ),
    Invalid(
        "rate-zero",
        {"rateLimit": {"requestsPerMinute": 0}},
        "spec.rateLimit.requestsPerMinute",
        "min",
        "schema",
        real_message="greater than or equal to 1",
    ),
    Invalid(
        "pvc-claim-missing",
        {"model": {**MODEL, "source": {"pvc": {"subPath": "x"}}}},
        "spec.model.source.pvc.claimName",
        "Required value",
        "schema",
    ),
    Invalid(
        "node-selector-type",
        {"scheduling": {"nodeSelector": {"gpu": True}}},
        "spec.scheduling.nodeSelector.gpu",
        "not of type 'string'",
        "schema",
        real_message="must be of type string",
    ),
    Invalid(
        "variant-duplicate-key",
        {"variants": [{"name": "a"}, {"name": "a"}]},
        "spec.variants[1]",
        "Duplicate value",
        "schema",
    ),
    Invalid(
        "status-condition-enum",
        {},
        "status.conditions[0].status",
        "Unsupported value",
        "schema",
        status={"conditions": [{"type": "Ready", "status": "Maybe", "reason": "X", "lastTransitionTime": "t"}]},
        parse_spec=False,
    ),
    # CEL rules, each mirrored by api.cross_field_errors or a pydantic validator.
    Invalid("variants-unique", {"variants": [{"name": "a"}, {"name": "a"}]}, "spec.variants", "unique", "cel"),
    Invalid("variant-primary", {"variants": [{"name": "primary"}]}, "spec.variants[0].name", "reserved", "cel"),
    Invalid("weights-sum", {"variants": _variants(60, 50), "ingress": GATEWAY}, "spec.variants", "at most 100", "cel"),
    Invalid(
        "source-both",
        {"model": {**MODEL, "source": {"pvc": {"claimName": "m"}, "huggingFace": {}}}},
        "spec.model.source",
        "exactly one of pvc, huggingFace or modelScope",
        "cel",
    ),
    Invalid(
        "source-three",
        {"model": {**MODEL, "source": {"huggingFace": {}, "modelScope": {}}, "cache": CACHE}},
        "spec.model.source",
        "exactly one of pvc, huggingFace or modelScope",
        "cel",
    ),
    Invalid("cache-size-missing", {"model": {**MODEL, "cache": {"enabled": True}}}, "spec.model.cache.size",
            "required when cache.enabled", "cel"),
    Invalid("cache-bad-size", {"model": {**MODEL, "cache": {"enabled": True, "size": "lots"}}},
            "spec.model.cache.size", "does not match", "schema", real_message="should match '^[0-9]+"),
    Invalid("cache-bad-mode", {"model": {**MODEL, "cache": {**CACHE, "accessModes": ["ReadMostly"]}}},
            "spec.model.cache.accessModes[0]", "ReadWriteOnce", "schema"),
    Invalid("cache-stall-too-short", {"model": {**MODEL, "cache": {**CACHE, "stallTimeoutSeconds": 1}}},
            "spec.model.cache.stallTimeoutSeconds", "less than the minimum", "schema",
            real_message="should be greater than or equal to 10"),
    Invalid("cache-download-requests-over-limits",
            {"model": {**MODEL, "cache": {**CACHE, "download": {"resources": {"requests": {"cpu": "4",
                                                                                        "memory": "1Gi"}}}}}},
            "spec.model.cache.download.resources.requests", "cpu and memory must not exceed their limits", "cel"),
    Invalid("cache-of-pvc", {"model": {**MODEL, "source": {"pvc": {"claimName": "m"}}, "cache": CACHE}},
            "spec.model.cache", "a pvc source is on a volume already", "cel"),
    Invalid("modelscope-without-cache", {"model": {**MODEL, "source": {"modelScope": {}}}},
            "spec.model.source.modelScope", "needs cache.enabled", "cel"),
    Invalid("endpoint-not-url", {"model": {**MODEL, "source": {"huggingFace": {"endpoint": "hf-mirror.com"}}}},
            "spec.model.source.huggingFace.endpoint", "does not match", "schema", real_message="should match '^https?"),
    Invalid("variant-modelscope-without-cache",
            {"variants": [{"name": "c", "model": {"source": {"modelScope": {}}}}]},
            "spec.variants", "needs cache.enabled", "cel"),
    Invalid("variant-cache-of-inherited-pvc",
            {"model": {**MODEL, "source": {"pvc": {"claimName": "m"}}},
             "variants": [{"name": "c", "model": {"cache": CACHE}}]},
            "spec.variants", "a pvc source is on a volume already", "cel"),
    Invalid("source-none", {"model": {**MODEL, "source": {}}}, "spec.model.source", "exactly one", "cel"),
    Invalid(
        "variant-source-both",
        {"variants": [{"name": "c", "model": {"source": {"pvc": {"claimName": "m"}, "huggingFace": {}}}}]},
        "spec.variants[0].model.source",
        "exactly one",
        "cel",
    ),
    Invalid("rollout-stuck", {"rollout": {"maxUnavailable": 0}}, "spec.rollout", "must not both be 0", "cel"),
    Invalid(
        "quantization-cpu",
        {"model": {**MODEL, "quantization": "nf4"}, "resources": {"gpus": 0}},
        "spec.resources.gpus",
        "needs resources.gpus >= 1",
        "cel",
    ),
    Invalid(
        "variant-quantization-cpu",
        {"variants": [{"name": "c", "model": {"quantization": "int8"}}], "resources": {"gpus": 0}},
        "spec.resources.gpus",
        "quantization",
        "cel",
    ),
    Invalid(
        "nginx-two-canaries", {"variants": _variants(5, 5), "ingress": NGINX}, "spec.variants", "gateway-api", "cel"
    ),
    Invalid(
        "gateway-no-parents",
        {"ingress": {**NGINX, "provider": "gateway-api"}},
        "spec.ingress.gateway.parentRefs",
        "required when ingress.provider is gateway-api",
        "cel",
    ),
    Invalid(
        "gateway-empty-parents",
        {"ingress": {**GATEWAY, "gateway": {"parentRefs": []}}},
        "spec.ingress.gateway.parentRefs",
        "required",
        "cel",
    ),
    Invalid(
        "new-tokens-fill-context",
        {"model": {**MODEL, "maxModelLen": 8192}, "serving": {"maxNewTokens": 8192}},
        "spec.serving.maxNewTokens",
        "less than model.maxModelLen",
        "cel",
    ),
    Invalid(
        "variant-context-small",
        {"serving": {"maxNewTokens": 2048}, "variants": [{"name": "c", "model": {"maxModelLen": 1024}}]},
        "spec.variants",
        "greater than serving.maxNewTokens",
        "cel",
    ),
    Invalid(
        "alert-label-severity",
        {"monitoring": {"prometheusRule": {"labels": {"team": "ml", "severity": "page"}}}},
        "spec.monitoring.prometheusRule.labels",
        "severity is set per alert by the operator",
        "cel",
    ),
    Invalid(
        "alert-threshold-zero",
        {"monitoring": {"prometheusRule": {"thresholds": {"errorPercent": 0}}}},
        "spec.monitoring.prometheusRule.thresholds.errorPercent",
        "minimum of 1",
        "schema",
        real_message="greater than or equal to 1",
    ),
    Invalid(
        "alert-threshold-over-100",
        {"monitoring": {"prometheusRule": {"thresholds": {"gpuMemoryPercent": 101}}}},
        "spec.monitoring.prometheusRule.thresholds.gpuMemoryPercent",
        "maximum of 100",
        "schema",
        real_message="less than or equal to 100",
    ),
    Invalid(
        "runbook-url-scheme",
        {"monitoring": {"prometheusRule": {"runbookBaseURL": "wiki.example.com/llm"}}},
        "spec.monitoring.prometheusRule.runbookBaseURL",
        "does not match",
        "schema",
        real_message="should match '^https?://",
    ),
    # Images (issue 9 item 10): OCI references only; rollout.requireDigest pins every image by digest.
    Invalid("image-not-a-reference", {"image": "NOT a valid ref!!"}, "spec.image", "valid OCI image reference",
            "cel"),
    Invalid("image-uppercase-repository", {"image": "registry.example.com/DeepSeek-Worker:1.0"}, "spec.image",
            "valid OCI image reference", "cel"),
    Invalid("image-bad-tag", {"image": "registry.example.com/deepseek-worker:-1"}, "spec.image",
            "valid OCI image reference", "cel"),
    Invalid("image-url-scheme", {"image": "https://registry.example.com/deepseek-worker:1.0"}, "spec.image",
            "valid OCI image reference", "cel"),
    Invalid("image-trailing-newline", {"image": "registry.example.com/deepseek-worker:1.0\n"}, "spec.image",
            "valid OCI image reference", "cel"),
    Invalid("variant-image-not-a-reference", {"variants": [{"name": "c", "image": "worker 2.0"}]},
            "spec.variants[0].image", "valid OCI image reference", "cel"),
    # The name limit, the port range and IPv6 registries (issue 19 item 5).
    Invalid("image-name-414", {"image": f"registry.example.com/{'w' * 414}:1.0"}, "spec.image",
            "at most 255 characters", "cel"),
    Invalid("image-name-256-with-digest", {"image": f"{LONG_NAME}w@{SHA}"}, "spec.image", "at most 255 characters",
            "cel"),
    Invalid("image-port-99999", {"image": "registry.example.com:99999/deepseek-worker:1.0"}, "spec.image",
            "port 1-65535", "cel"),
    Invalid("image-port-0", {"image": "localhost:0/deepseek-worker:1.0"}, "spec.image", "port 1-65535", "cel"),
    Invalid("variant-image-name-too-long", {"variants": [{"name": "c", "image": f"{LONG_NAME}w"}]},
            "spec.variants[0].image", "at most 255 characters", "cel"),
    Invalid("image-ipv6-unbracketed", {"image": "::1:5000/w:1"}, "spec.image", "valid OCI image reference", "cel"),
    Invalid("require-digest-tag", {"rollout": {"requireDigest": True}}, "spec.image", "pin the image by digest",
            "cel"),
    Invalid("require-digest-short-digest",
            {"image": "registry.example.com/deepseek-worker@sha256:" + "ab" * 16, "rollout": {"requireDigest": True}},
            "spec.image", "pin the image by digest", "cel"),
    Invalid("require-digest-variant",
            {"image": PINNED, "rollout": {"requireDigest": True},
             "variants": [{"name": "c", "image": "registry.example.com/deepseek-worker:2.0"}]},
            "spec.variants", "pin the image by digest", "cel"),
    # The model load budget (issue 9 item 5): a progress deadline never shorter than a model load.
    Invalid("deadline-shorter-than-load", {"rollout": {"progressDeadlineSeconds": 600}},
            "spec.rollout.progressDeadlineSeconds", "at least the model load budget", "cel"),
    Invalid("deadline-shorter-than-variant-load",
            {"model": {**MODEL, "loadTimeoutSeconds": 300}, "rollout": {"progressDeadlineSeconds": 600},
             "variants": [{"name": "big", "model": {"id": "deepseek-ai/DeepSeek-R1", "loadTimeoutSeconds": 900}}]},
            "spec.rollout.progressDeadlineSeconds", "at least the model load budget", "cel"),
    Invalid("load-timeout-small", {"model": {**MODEL, "loadTimeoutSeconds": 5}}, "spec.model.loadTimeoutSeconds",
            "minimum of 10", "schema", real_message="greater than or equal to 10"),
    # GPU-fit inputs (issue 11): the GPU's memory and the geometry of a model outside the catalogue.
    Invalid("gpu-memory-not-a-quantity", {"resources": {"gpus": 1, "gpuMemory": "80 GB"}},
            "spec.resources.gpuMemory", "does not match", "schema", real_message="should match"),
    Invalid("architecture-parameters-missing", {"model": {**MODEL, "architecture": {"layers": 2, "hiddenSize": 64,
            "attentionHeads": 4}}}, "spec.model.architecture.parameters", "Required value", "schema"),
    Invalid("architecture-parameters-word", {"model": {**MODEL, "architecture": {**ARCH, "parameters": "7 billion"}}},
            "spec.model.architecture.parameters", "does not match", "schema", real_message="should match"),
    Invalid("architecture-mla-without-dims",
            {"model": {**MODEL, "architecture": {**ARCH, "kvLoraRank": 512, "qkRopeHeadDim": 64}}},
            "spec.model.architecture", "kvLoraRank (MLA) needs qkRopeHeadDim, qkNopeHeadDim and vHeadDim", "cel"),
    Invalid("variant-architecture-mla-without-dims",
            {"variants": [{"name": "c", "model": {"id": "x/y", "architecture": {**ARCH, "kvLoraRank": 512}}}]},
            "spec.variants[0].model.architecture", "kvLoraRank (MLA) needs", "cel"),
    # What a child cannot hold (issue 19 item 1): the apiserver refused the Deployment or Ingress with 422.
    Invalid("toleration-operator-sideways",
            {"scheduling": {"tolerations": [{"key": "gpu", "operator": "Sideways", "effect": "Never"}]}},
            "spec.scheduling.tolerations[0].operator", "Unsupported value", "schema"),
    Invalid("toleration-exists-with-value",
            {"scheduling": {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]}},
            "spec.scheduling.tolerations[0].value", "value must be empty when operator is Exists", "cel"),
    Invalid("toleration-no-key-equal", {"scheduling": {"tolerations": [{"operator": "Equal", "value": "x"}]}},
            "spec.scheduling.tolerations[0].operator", "operator must be Exists when key is empty", "cel"),
    Invalid("toleration-seconds-no-execute",
            {"scheduling": {"tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule",
                                             "tolerationSeconds": 30}]}},
            "spec.scheduling.tolerations[0].tolerationSeconds", "needs effect NoExecute", "cel"),
    Invalid("affinity-operator-bogus", {"scheduling": {"affinity": _node_terms({"key": "gpu", "operator": "Bogus"})}},
            f"{_TERM0}.operator", "Unsupported value", "schema"),
    Invalid("affinity-exists-with-values",
            {"scheduling": {"affinity": _node_terms({"key": "gpu", "operator": "Exists", "values": ["a"]})}},
            f"{_TERM0}.values", "values must be empty when operator is Exists or DoesNotExist", "cel"),
    Invalid("affinity-in-without-values", {"scheduling": {"affinity": _node_terms({"key": "gpu", "operator": "In"})}},
            f"{_TERM0}.values", "values must be non-empty when operator is In or NotIn", "cel"),
    Invalid("affinity-gt-not-integer",
            {"scheduling": {"affinity": _node_terms({"key": "gpus", "operator": "Gt", "values": ["many"]})}},
            f"{_TERM0}.values", "exactly one integer", "cel"),
    Invalid("affinity-full-width-key",
            {"scheduling": {"affinity": _node_terms({"key": WIDE, "operator": "Exists"})}},
            f"{_TERM0}.key", "does not match", "schema", real_message="should match"),
    Invalid("affinity-no-terms",
            {"scheduling": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}}},
            "spec.scheduling.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
            "Required value", "schema"),
    Invalid("pod-affinity-no-topology-key",
            {"scheduling": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "db"}}}]}}}},
            "spec.scheduling.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey",
            "Required value", "schema"),
    Invalid("pod-affinity-selector-exists-with-values",
            {"scheduling": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchExpressions": [
                    {"key": "app", "operator": "DoesNotExist", "values": ["x"]}]}}]}}}},
            "spec.scheduling.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0]"
            ".labelSelector.matchExpressions[0].values",
            "values must be empty when operator is Exists or DoesNotExist", "cel"),
    Invalid("affinity-unknown-field", {"scheduling": {"affinity": {"nodeAffinity": {"x": 1}}}},
            "spec.scheduling.affinity.nodeAffinity.x", "unknown", "schema", real_code=400),
    Invalid("node-selector-full-width-key", {"scheduling": {"nodeSelector": {WIDE + "/gpu": "h100"}}},
            "spec.scheduling.nodeSelector", "not a label key", "cel"),
    Invalid("node-selector-bad-value", {"scheduling": {"nodeSelector": {"gpu": "h 100"}}},
            "spec.scheduling.nodeSelector.gpu", "does not match", "schema", real_message="should match"),
    Invalid("gpu-resource-full-width", {"resources": {"gpuResourceName": f"{WIDE}.com/gpu"}},
            "spec.resources.gpuResourceName", "does not match", "schema", real_message="should match"),
    Invalid("gpu-resource-no-domain", {"resources": {"gpuResourceName": "gpu"}},
            "spec.resources.gpuResourceName", "does not match", "schema", real_message="should match"),
    Invalid("ingress-host-full-width", {"ingress": {**NGINX, "host": f"{WIDE}.example.com"}}, "spec.ingress.host",
            "does not match", "schema", real_message="should match"),
    Invalid("ingress-path-nul", {"ingress": {**NGINX, "path": "/v1\u0000"}}, "spec.ingress.path", "does not match",
            "schema", real_message="should match"),
    Invalid("ingress-path-dot-dot", {"ingress": {**NGINX, "path": "/v1/../admin"}}, "spec.ingress.path",
            "must not contain", "cel"),
    # Extra environment (issue 18 item 6): core/v1 EnvVar, never a name the operator sets.
    Invalid("env-reserved-name", {"env": [{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": "HF_TOKEN", "value": "x"}]},
            "spec.env[1].name", "name: HF_TOKEN is set by the operator", "cel"),
    Invalid("variant-env-reserved-name",
            {"variants": [{"name": "c", "env": [{"name": "DEEPSEEK_PORT", "value": "1"}]}]},
            "spec.variants[0].env[0].name", "name: DEEPSEEK_PORT is set by the operator", "cel"),
    Invalid("cache-env-reserved-name",
            {"model": {**MODEL, "cache": {**CACHE, "env": [{"name": "DEEPSEEK_DOWNLOAD_TOKEN", "value": "t"}]}}},
            "spec.model.cache.env[0].name", "name: DEEPSEEK_DOWNLOAD_TOKEN is set by the operator", "cel"),
    Invalid("env-value-and-value-from",
            {"env": [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
            "spec.env[0]", "set value or valueFrom, not both", "cel"),
    Invalid("env-two-sources",
            {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"},
                                                 "configMapKeyRef": {"name": "c", "key": "k"}}}]},
            "spec.env[0].valueFrom", "exactly one of secretKeyRef, configMapKeyRef or fieldRef", "cel"),
    Invalid("env-duplicate-name", {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
            "spec.env[1]", "Duplicate value", "schema"),
    Invalid("env-bad-name", {"env": [{"name": "NO=PROXY", "value": "1"}]}, "spec.env[0].name", "does not match",
            "schema", real_message="should match"),
    Invalid("env-field-path", {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}}]},
            "spec.env[0].valueFrom.fieldRef.fieldPath", "does not match", "schema", real_message="should match"),
    # serving (issue 18 item 20): the per-key cap within the worker's; forwarded trust by address.
    Invalid("per-key-above-total", {"serving": {"maxConcurrentRequests": 8, "maxConcurrentRequestsPerKey": 9}},
            "spec.serving.maxConcurrentRequestsPerKey", "must not exceed maxConcurrentRequests", "cel"),
    Invalid("forwarded-not-an-address", {"serving": {"forwardedAllowIPs": ["ingress-nginx"]}},
            "spec.serving.forwardedAllowIPs[0]", "does not match", "schema", real_message="should match"),
    # networkPolicy (issue 19 item 6): client selectors never match-all; hub egress by CIDR.
    Invalid("client-without-selector", {"networkPolicy": {"clients": [{}]}}, "spec.networkPolicy.clients[0]",
            "set podSelector, namespaceSelector or both", "cel"),
    Invalid("client-empty-namespace-selector", {"networkPolicy": {"clients": [{"namespaceSelector": {}}]}},
            "spec.networkPolicy.clients[0].namespaceSelector", "an empty selector matches every namespace", "cel"),
    Invalid("hub-egress-not-a-cidr", {"networkPolicy": {"hubEgress": {"cidrs": ["10.0.0.1"]}}},
            "spec.networkPolicy.hubEgress.cidrs[0]", "does not match", "schema", real_message="should match"),
    Invalid("name-digit", {}, "", "DNS-1035", "cel", meta_name="7b-chat", parse_spec=False),
    Invalid("name-dot", {}, "", "DNS-1035", "cel", meta_name="chat.v1", parse_spec=False),
    Invalid("name-long", {}, "", "at most 63", "cel", meta_name="c" * 64, parse_spec=False),
    # spec.runtime (docs/runtimes.md): engine runtimes, their args, quantization and parallel sizes.
    Invalid("runtime-unknown", {"runtime": {"name": "tgi"}}, "spec.runtime.name", "Unsupported value", "schema"),
    Invalid("runtime-builtin-args", {"runtime": {"args": ["--kv-cache-dtype=fp8"]}}, "spec.runtime",
            "are for name vllm or sglang", "cel"),
    Invalid("runtime-args-owned", {"runtime": {"name": "vllm",
                                               "args": ["--enforce-eager", "--tensor-parallel-size=2"]}},
            "spec.runtime.args", "--tensor-parallel-size", "cel"),
    Invalid("runtime-args-owned-short", {"runtime": {"name": "vllm", "args": ["-tp", "2"]}},
            "spec.runtime.args", "the operator sets these flags", "cel"),
    Invalid("runtime-image", {"runtime": {"name": "sglang", "image": "Bad Image"}}, "spec.runtime.image",
            "valid OCI image reference", "cel"),
    Invalid("runtime-int8", {"runtime": {"name": "sglang"}, "model": {**MODEL, "quantization": "int8"}},
            "spec.runtime", "bitsandbytes 4-bit only", "cel"),
    Invalid("variant-runtime-fp4", {"variants": [{"name": "v", "runtime": {"name": "vllm"},
                                                  "model": {"quantization": "fp4"}}]},
            "spec.variants", "bitsandbytes 4-bit only", "cel"),
    Invalid("variant-inherits-int8-runtime", {"runtime": {"name": "vllm"}, "model": {**MODEL, "quantization": "int8"},
                                              "variants": [{"name": "v", "runtime": {"name": "builtin"}}]},
            "spec.runtime", "bitsandbytes 4-bit only", "cel"),
    Invalid("runtime-parallel-sizes", {"resources": {"gpus": 8}, "runtime": {"name": "vllm", "parallelism": {
        "tensor": 4}}}, "spec.runtime.parallelism", "must equal resources.gpus", "cel"),
    Invalid("runtime-parallel-indivisible", {"resources": {"gpus": 8}, "runtime": {"name": "sglang", "parallelism": {
        "pipeline": 3}}}, "spec.runtime.parallelism", "must equal resources.gpus", "cel"),
    Invalid("variant-runtime-parallel-sizes", {"resources": {"gpus": 2}, "variants": [
        {"name": "v", "runtime": {"name": "vllm", "parallelism": {"tensor": 4}}}]},
            "spec.variants", "must equal resources.gpus", "cel"),
    # Scaling with demand (issue 22): what needs the gateway, the autoscaler's bounds, the fallback.
    Invalid("autoscaling-zero-without-gateway", {"autoscaling": {"minReplicas": 0, "maxReplicas": 2}},
            "spec.autoscaling.minReplicas", "0 needs spec.gateway.enabled", "cel"),
    Invalid("autoscaling-zero-gateway-off", {"gateway": {"enabled": False},
                                             "autoscaling": {"minReplicas": 0, "maxReplicas": 2}},
            "spec.autoscaling.minReplicas", "0 needs spec.gateway.enabled", "cel"),
    Invalid("variant-autoscaling-zero-without-gateway", {"variants": [
        {"name": "c", "autoscaling": {"minReplicas": 0, "maxReplicas": 2}}]},
            "spec.variants", "0 needs spec.gateway.enabled", "cel"),
    Invalid("autoscaling-min-above-max", {"autoscaling": {"minReplicas": 3, "maxReplicas": 2}},
            "spec.autoscaling.minReplicas", "must not exceed maxReplicas", "cel"),
    Invalid("autoscaling-max-missing", {"autoscaling": {"minReplicas": 1}},
            "spec.autoscaling.maxReplicas", "Required value", "schema"),
    Invalid("autoscaling-metric-unknown", {"autoscaling": {"maxReplicas": 2, "metric": "gpu"}},
            "spec.autoscaling.metric", "Unsupported value", "schema"),
    Invalid("autoscaling-kv-percent", {"runtime": {"name": "vllm"}, "autoscaling": {
        "maxReplicas": 2, "metric": "kvCacheUsage", "target": 150}},
            "spec.autoscaling.target", "at most 100", "cel"),
    Invalid("autoscaling-kv-builtin", {"autoscaling": {"maxReplicas": 2, "metric": "kvCacheUsage", "target": 80}},
            "spec.autoscaling.metric", "kvCacheUsage needs runtime vllm or sglang", "cel"),
    Invalid("variant-autoscaling-kv-builtin", {"variants": [
        {"name": "c", "autoscaling": {"maxReplicas": 2, "metric": "kvCacheUsage"}}]},
            "spec.variants", "kvCacheUsage needs runtime vllm or sglang", "cel"),
    Invalid("fallback-without-gateway", {"fallback": {"apiKeySecretRef": {"name": "ds", "key": "key"}}},
            "spec.fallback", "needs spec.gateway.enabled", "cel"),
    Invalid("fallback-key-missing", {"gateway": {"enabled": True}, "fallback": {"model": "deepseek-chat"}},
            "spec.fallback.apiKeySecretRef", "Required value", "schema"),
    Invalid("fallback-share-above-one", {"gateway": {"enabled": True}, "fallback": {
        "apiKeySecretRef": {"name": "ds"}, "maxShare": 1.5}},
            "spec.fallback.maxShare", "maximum of 1", "schema", real_message="less than or equal to 1"),
    Invalid("fallback-base-url-v1", {"gateway": {"enabled": True}, "fallback": {
        "apiKeySecretRef": {"name": "ds"}, "baseURL": "https://api.deepseek.com/v1"}},
            "spec.fallback.baseURL", "without /v1", "cel"),
    Invalid("fallback-when-unknown", {"gateway": {"enabled": True}, "fallback": {
        "apiKeySecretRef": {"name": "ds"}, "when": ["Always"]}},
            "spec.fallback.when[0]", "Unsupported value", "schema"),
    Invalid("gateway-variant-name", {"gateway": {"enabled": True}, "variants": [{"name": "gateway"}]},
            "spec.variants", "'gateway' names the request gateway", "cel"),
    Invalid("gateway-replicas-zero", {"gateway": {"enabled": True, "replicas": 0}},
            "spec.gateway.replicas", "minimum of 1", "schema", real_message="greater than or equal to 1"),
]


@dataclass(frozen=True)
class Valid:
    """A resource the apiserver must accept."""

    id: str
    spec: dict[str, Any]
    status: dict[str, Any] = field(default_factory=dict)


VALID = [
    Valid("minimal", {}),
    Valid("cpu-only", {"resources": {"gpus": 0}}),
    Valid("serving-pool-knobs", {"serving": {"gpuMemoryUtilization": 0.85, "maxNumBatchedTokens": 4096}}),
    Valid("serving-whole-gpu", {"serving": {"gpuMemoryUtilization": 1}}),
    Valid("cache-huggingface-mirror", {"model": {**MODEL, "cache": {**CACHE, "storageClassName": "fast",
                                                                   "accessModes": ["ReadOnlyMany"]},
                                                 "source": {"huggingFace": {"endpoint": "https://hf-mirror.com"}}}}),
    Valid("cache-modelscope", {"model": {**MODEL, "cache": CACHE, "source": {"modelScope": {
        "tokenSecretRef": {"name": "ms"}}}}}),
    Valid("variant-modelscope-inherits-cache", {"model": {**MODEL, "cache": CACHE},
                                               "variants": [{"name": "c", "model": {"source": {"modelScope": {}}}}]}),
    Valid("cache-disabled-without-size", {"model": {**MODEL, "cache": {"enabled": False}}}),
    Valid("one-canary-nginx", {"variants": _variants(10), "ingress": NGINX}),
    Valid("three-canaries-gateway", {"variants": _variants(40, 30, 30), "ingress": GATEWAY}),
    Valid("canary-paused", {"variants": [{"name": "c", "weight": 20, "replicas": 0}]}),
    Valid("variant-pvc", {"variants": [{"name": "pvc", "model": {"source": {"pvc": {"claimName": "m"}}}}]}),
    Valid("variant-context", {"variants": [{"name": "long", "model": {"maxModelLen": 32768}}]}),
    # Unset, the lengths come from the model family (family.py): a cap alone or a short context alone is fine.
    Valid("new-tokens-alone", {"serving": {"maxNewTokens": 16384}}),
    Valid("short-context-alone", {"model": {**MODEL, "maxModelLen": 1024}}),
    Valid("surge-only", {"rollout": {"maxSurge": 1, "maxUnavailable": 0}}),
    Valid(
        "alert-routing-and-thresholds",
        {
            "monitoring": {
                "prometheusRule": {
                    "labels": {"team": "ml-platform"},
                    "runbookBaseURL": "https://wiki.example.com/runbooks/llm",
                    "thresholds": {"p99LatencySeconds": 30, "errorPercent": 1, "gpuMemoryPercent": 100},
                }
            }
        },
    ),
    Valid("image-registry-port-tag-digest",
          {"image": f"registry.example.com:5000/ml/deepseek-worker:1.2.0@{SHA}"}),
    Valid("image-digest-only", {"image": PINNED}),
    Valid("image-short-names",
          {"image": "deepseek-worker", "variants": [{"name": "c", "image": "localhost:5000/w_x"}]}),
    Valid("image-ipv6-registry", {"image": "[::1]:5000/w:1",
                                  "variants": [{"name": "c", "image": "[fe80::1]/ml/worker@" + SHA}]}),
    Valid("image-name-at-the-limit", {"image": f"{LONG_NAME}:{'t' * 128}@{SHA}",
                                      "variants": [{"name": "c", "image": LONG_NAME}]}),
    Valid("image-port-65535", {"image": "registry.example.com:65535/deepseek-worker:1.0"}),
    Valid("require-digest-pinned",
          {"image": PINNED, "rollout": {"requireDigest": True},
           "variants": [{"name": "c", "weight": 10, "image": f"registry.example.com/deepseek-worker:2.0@{SHA}"},
                        {"name": "inherits"}]}),
    Valid("short-deadline-with-short-load",
          {"model": {**MODEL, "loadTimeoutSeconds": 10}, "rollout": {"progressDeadlineSeconds": 10}}),
    Valid("variant-load-budget",
          {"model": {**MODEL, "loadTimeoutSeconds": 600}, "rollout": {"progressDeadlineSeconds": 900},
           "variants": [{"name": "big", "model": {"loadTimeoutSeconds": 900}}]}),
    Valid("children-grammar", {"scheduling": {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                                                                "pool": ""},
                                               "tolerations": [{"operator": "Exists"},
                                                               {"key": "k", "value": "v", "effect": "NoExecute",
                                                                "tolerationSeconds": 60}]},
                                "resources": {"gpuResourceName": "amd.com/gpu"},
                                "ingress": {**NGINX, "host": "*.chat.example.com", "path": "/v1/chat%20api"}}),
    Valid("network-policy-off", {"networkPolicy": {"enabled": False}}),
    Valid("network-policy-scoped",
          {"networkPolicy": {"clients": [{"podSelector": {"matchLabels": {"app": "chat-ui"}}},
                                         {"namespaceSelector": {"matchLabels": {"team": "ml"}},
                                          "podSelector": {}}],
                             "hubEgress": {"cidrs": ["10.20.0.0/16", "2001:db8::/32"]}}}),
    Valid("network-policy-no-clients", {"networkPolicy": {"clients": []}}),
    Valid("env-and-serving-trust",
          {"env": [{"name": "HTTPS_PROXY", "value": "http://10.0.0.5:3128"}, {"name": "NO_PROXY", "value": ".svc"},
                   {"name": "HF_HUB_DISABLE_XET"},
                   {"name": "NCCL_SOCKET_IFNAME", "valueFrom": {"configMapKeyRef": {"name": "nccl", "key": "if",
                                                                                    "optional": True}}},
                   {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['zone']"}}},
                   {"name": "PROXY_AUTH", "valueFrom": {"secretKeyRef": {"name": "proxy", "key": "auth"}}}],
           "variants": [{"name": "c", "env": [{"name": "PYTORCH_CUDA_ALLOC_CONF",
                                               "value": "expandable_segments:True"}]}],
           "model": {**MODEL, "cache": {**CACHE, "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]}},
           "serving": {"maxConcurrentRequests": 8, "maxConcurrentRequestsPerKey": 8,
                       "forwardedAllowIPs": ["10.244.0.0/16", "fd00::/8", "127.0.0.1"]}}),
    Valid("gpu-fit-inputs",
          {"resources": {"gpus": 8, "gpuMemory": "141Gi"},
           "model": {"id": "my-org/my-moe", "architecture": {
               "parameters": "671B", "layers": 61, "hiddenSize": 7168, "attentionHeads": 128, "vocabSize": 129280,
               "kvLoraRank": 512, "qkRopeHeadDim": 64, "qkNopeHeadDim": 128, "vHeadDim": 128,
               "routedExpertParameters": "653.9B"}},
           "variants": [{"name": "gqa", "model": {"id": "my-org/dense", "architecture": {**ARCH, "kvHeads": 4}}}]}),
    Valid("hf-token", {"model": {**MODEL, "source": {"huggingFace": {"tokenSecretRef": {"name": "hf"}}}}}),
    Valid(
        "scheduling-typed",
        {
            "scheduling": {
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "nvidia.com/gpu.count", "operator": "Gt", "values": ["3"]},
                                              {"key": "spot", "operator": "DoesNotExist"}],
                         "matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["bad-node"]}]}]}},
                    "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100, "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname", "matchLabelKeys": ["pod-template-hash"],
                            "labelSelector": {"matchExpressions": [{
                                "key": "app.kubernetes.io/name", "operator": "In", "values": ["deepseek-worker"]}]}}}]},
                },
            }
        },
    ),
    Valid(
        "with-status",
        {},
        {
            "observedGeneration": 2,
            "replicas": 1,
            "readyReplicas": 1,
            "ready": "1/1",
            "selector": "deepseek.ai/deployment=chat",
            "variants": [{"name": "primary", "weight": 100, "gpuFit": {"fits": "Unknown", "message": "m"}}],
            "gpuFit": {"fits": "True", "requiredPerGPU": "24.1Gi", "availablePerGPU": "79.6Gi", "gpus": 1,
                       "kvSlots": 16, "kvPoolTokens": 131072, "summary": "True 24.1/79.6Gi", "message": "m",
                       "measured": {"matches": "True", "pod": "chat-primary-x", "reportedAt": "2026-01-01T00:00:00Z",
                                    "device": "cuda:0", "weightsPerGPU": "14.2Gi", "kvPoolTokens": 131072,
                                    "kvPoolPerGPU": "7.0Gi", "peakMemoryPerGPU": "23.0Gi", "loadSeconds": "41.2",
                                    "message": "within 10% of the plan"}},
            "conditions": [{"type": "GPUFitAccurate", "status": "True", "reason": "MatchesPlan",
                            "lastTransitionTime": "t"}],
        },
    ),
    Valid(
        "with-status-unfit",
        {},
        {
            "gpuFit": {"fits": "False", "requiredPerGPU": "201.3Gi", "availablePerGPU": "79.6Gi", "gpus": 8,
                       "summary": "False 201.3/79.6Gi", "message": "m"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "lastTransitionTime": "t"}],
        },
    ),
    Valid("runtime-vllm", {"runtime": {"name": "vllm"}}),
    Valid("runtime-builtin-explicit", {"runtime": {"name": "builtin"}}),
    Valid("runtime-sglang-parallel", {"resources": {"gpus": 8}, "model": {"id": "deepseek-ai/DeepSeek-V3"},
                                      "runtime": {"name": "sglang", "parallelism": {"tensor": 4, "data": 2,
                                                                                    "expert": True},
                                                  "args": ["--kv-cache-dtype", "fp8_e4m3"]}}),
    Valid("runtime-vllm-nf4-pipeline", {"resources": {"gpus": 4}, "model": {**MODEL, "quantization": "nf4"},
                                        "runtime": {"name": "vllm", "image": "vllm/vllm-openai:v0.32.0",
                                                    "parallelism": {"pipeline": 2}}}),
    Valid("variant-vllm-canary", {"variants": [{"name": "vllm", "weight": 10, "runtime": {"name": "vllm"}}]}),
    Valid("gateway-default", {"gateway": {"enabled": True}}),
    Valid("autoscaling-without-gateway", {"autoscaling": {"minReplicas": 1, "maxReplicas": 4}}),
    Valid("scale-to-zero-with-fallback", {
        "gateway": {"enabled": True, "replicas": 3, "resources": {"cpu": "1", "memory": "1Gi"}},
        "autoscaling": {"minReplicas": 0, "maxReplicas": 4, "metric": "queueDepth", "target": 4,
                        "scaleDownDelaySeconds": 600},
        "variants": [{"name": "c", "weight": 10, "runtime": {"name": "vllm"},
                      "autoscaling": {"minReplicas": 0, "maxReplicas": 2, "metric": "kvCacheUsage", "target": 80}}],
        "fallback": {"apiKeySecretRef": {"name": "ds", "key": "key"}, "when": ["ColdStart", "Overloaded"],
                     "maxShare": 0.3, "allowExternal": ["team-a"]}}),
    Valid("gateway-off-variant-named-gateway", {"variants": [{"name": "gateway"}]}),
    Valid("gateway-nginx-many-canaries", {"gateway": {"enabled": True}, "ingress": NGINX,
                                          "variants": _variants(10, 10)}),
]
