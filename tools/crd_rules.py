"""The hand-written CEL rules of the DeepSeekDeployment CRD, keyed by the api.py model they sit on.

Each rule mirrors a check in api.cross_field_errors (or a pydantic validator) so a spec refused at
`kubectl apply` is refused the same way by parse_spec(); tests/crd/test_parity.py holds them together.
Rules assume the apiserver has applied the schema defaults first (it always does), so they only
guard with has() the fields that have no default. They stay cheap for the cost estimator: every
list they iterate has maxItems and every string they compare has maxLength or an enum.
docs/validation.md explains each rule.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))

from deepseek_operator import affinity, api, envvars, precision, runtimes
from deepseek_operator.resource import workload


@dataclass(frozen=True)
class Rule:
    """One x-kubernetes-validations entry. field_path is relative to the node, e.g. `.variants`."""

    rule: str
    message: str
    field_path: str = ""
    reason: str = ""
    message_expression: str = ""  # CEL giving the message (naming a value); `message` when it fails


_NO_QUANT = "(!has({m}.quantization) || {m}.quantization == 'none')"
# Defaults spelt out where a rule reads fields of two subtrees: the apiserver has applied them
# (the has() guards never fire there), but the rule stays right on its own.
_DEADLINE = "(has(self.rollout.progressDeadlineSeconds) ? self.rollout.progressDeadlineSeconds : {d})"
_REQUIRE_DIGEST = "has(self.rollout.requireDigest) && self.rollout.requireDigest"
_CACHED = "has({m}.cache) && {m}.cache.enabled"
# A variant's model inherits source and cache from spec.model where it does not set them.
_V_CACHED = f"(has(v.model.cache) ? v.model.cache.enabled : ({_CACHED.format(m='self.model')}))"
_V_SOURCE = "(has(v.model.source) ? has(v.model.source.{s}) : has(self.model.source.{s}))"
IMAGE_MESSAGE = f"image: must be a valid OCI image reference ({api.IMAGE_REF_HELP})"
# The image grammar and the OCI name limit (api.image_reference_ok says the same in Python).


def _image_ok(i: str) -> str:
    """The rule on the image expression `i`."""
    fits = f"size({i}) <= {api.IMAGE_NAME_MAX} || {i}.matches('{api.IMAGE_NAME_FITS}')"
    return f"{i}.matches('{api.IMAGE_REF}') && ({fits})"


def _requirement_rules(*, integers: bool) -> tuple[Rule, ...]:
    """affinity.value_count_errors as CEL: values by operator, as the apiserver checks them."""
    values = "(has(self.values) ? size(self.values) : 0)"
    rules = (
        Rule(rule=f"!(self.operator in ['In', 'NotIn']) || {values} > 0",
             message=affinity.VALUES_NEEDED_MESSAGE, field_path=".values"),
        Rule(rule=f"!(self.operator in ['Exists', 'DoesNotExist']) || {values} == 0",
             message=affinity.VALUES_FORBIDDEN_MESSAGE, field_path=".values"),
    )
    if not integers:
        return rules
    one_integer = f"{values} == 1 && self.values[0].matches('{affinity.INTEGER}')"
    return (*rules, Rule(rule=f"!(self.operator in ['Gt', 'Lt']) || ({one_integer})",
                         message=affinity.ONE_INTEGER_MESSAGE, field_path=".values"))


DIGEST_MESSAGE = "rollout.requireDigest is set: pin the image by digest (...@sha256:<64 hex>)"


def _label_keys_rule(field: str, message: str) -> Rule:
    """affinity.label_keys as CEL on the map `field`: every key a label key."""
    return Rule(rule=f"!has(self.{field}) || self.{field}.all(k, size(k) <= {affinity.QUALIFIED_NAME_MAX} "
                f"&& k.matches('{affinity.QUALIFIED_NAME}'))",
                message=f"{field}: {message}", field_path=f".{field}")


def _env_rules(reserved: tuple[str, ...]) -> tuple[Rule, ...]:
    """An env entry's rules: one value, and not a name the operator sets (envvars.py)."""
    names = ", ".join(f"'{n}'" for n in reserved)
    return (
        Rule(rule="!has(self.value) || !has(self.valueFrom)", message=envvars.VALUE_MESSAGE),
        Rule(rule=f"!(self.name in [{names}])", message=f"name: {envvars.RESERVED_MESSAGE}", field_path=".name",
             message_expression=f"'name: ' + self.name + ' {envvars.RESERVED_MESSAGE}'"),
    )

# Engine runtimes (runtimes.py): a variant's runtime replaces spec.runtime whole, its quantization inherits.
_GPUS = "(self.resources.gpus > 0 ? self.resources.gpus : 1)"
_V_RUNTIME = "(has(v.runtime) ? v.runtime.name : (has(self.runtime) ? self.runtime.name : 'builtin'))"
_V_QUANT = "(has(v.model) && has(v.model.quantization) ? v.model.quantization : self.model.quantization)"
_ENGINE_QUANT = "[" + ", ".join(f"'{q}'" for q in runtimes.ENGINE_QUANTIZATIONS) + "]"


def _parallel_fits(p: str) -> str:
    """api._parallel_fits on the parallelism expression `p` (pipeline and data are defaulted)."""
    return (f"(has({p}.tensor) ? {p}.tensor * {p}.pipeline * {p}.data == {_GPUS} "
            f": {_GPUS} % ({p}.pipeline * {p}.data) == 0)")


# A node's GPUs (workload.gpus_per_node): resources.gpusPerNode, else the node selector's nvidia.com/gpu.count
# when it is a positive integer (GPU_COUNT keeps int() within int64), else 0: unknown, one node holds the pod.
_COUNT = f"self.scheduling.nodeSelector['{workload.GPU_COUNT_LABEL}']"
_HAS_COUNT = (f"(has(self.scheduling) && has(self.scheduling.nodeSelector) "
              f"&& '{workload.GPU_COUNT_LABEL}' in self.scheduling.nodeSelector)")
_PER_NODE = (f"(has(self.resources.gpusPerNode) ? self.resources.gpusPerNode : "
             f"({_HAS_COUNT} && {_COUNT}.matches('{workload.GPU_COUNT}') ? int({_COUNT}) : 0))")
_SPANS = f"({_PER_NODE} > 0 && self.resources.gpus > {_PER_NODE})"
MULTINODE_SPEC_RULES = (
    Rule(rule=f"!{_HAS_COUNT} || {_COUNT}.matches('{workload.GPU_COUNT}')",
         message=f'scheduling.nodeSelector["{workload.GPU_COUNT_LABEL}"]: {workload.GPU_COUNT_MESSAGE}',
         field_path=".scheduling.nodeSelector"),
    Rule(rule=f"!{_SPANS} || self.resources.gpus % {_PER_NODE} == 0",
         message=f"resources.gpus: {api.MULTINODE_GPUS_MESSAGE}", field_path=".resources.gpus"),
    Rule(rule=f"!{_SPANS} || (has(self.runtime) && self.runtime.name != 'builtin' && "
         f"(!has(self.variants) || self.variants.all(v, !has(v.runtime) || v.runtime.name != 'builtin')))",
         message=f"runtime: {api.MULTINODE_RUNTIME_MESSAGE}", field_path=".runtime"),
)

RUNTIME_SPEC_RULES = (
    Rule(rule="!has(self.runtime) || self.runtime.name == 'builtin' || self.model.quantization in " + _ENGINE_QUANT,
         message=runtimes.QUANTIZATION_MESSAGE, field_path=".runtime"),
    Rule(rule=f"!has(self.variants) "
         f"|| self.variants.all(v, {_V_RUNTIME} == 'builtin' || {_V_QUANT} in {_ENGINE_QUANT})",
         message=f"variants[].{runtimes.QUANTIZATION_MESSAGE}", field_path=".variants"),
    Rule(rule="!has(self.runtime) || !has(self.runtime.parallelism) || " + _parallel_fits("self.runtime.parallelism"),
         message=f"runtime.parallelism: {api.PARALLELISM_MESSAGE}", field_path=".runtime.parallelism"),
    Rule(rule="!has(self.variants) || self.variants.all(v, !has(v.runtime) || !has(v.runtime.parallelism) || "
         + _parallel_fits("v.runtime.parallelism") + ")",
         message=f"variants[].runtime.parallelism: {api.PARALLELISM_MESSAGE}", field_path=".variants"),
)

# Scaling with demand (resource/scaling.py, validation.scaling_errors): what needs the gateway.
_GATEWAY_ON = "(has(self.gateway) && has(self.gateway.enabled) && self.gateway.enabled)"
SCALING_SPEC_RULES = (
    Rule(rule=f"!has(self.autoscaling) || self.autoscaling.minReplicas > 0 || {_GATEWAY_ON}",
         message=f"autoscaling.{api.SCALE_TO_ZERO_MESSAGE}", field_path=".autoscaling.minReplicas"),
    Rule(rule=f"{_GATEWAY_ON} || !has(self.variants) || self.variants.all(v, !has(v.autoscaling) "
         "|| v.autoscaling.minReplicas > 0)",
         message=f"variants[].autoscaling.{api.SCALE_TO_ZERO_MESSAGE}", field_path=".variants"),
    Rule(rule=f"!has(self.fallback) || {_GATEWAY_ON}", message=api.FALLBACK_GATEWAY_MESSAGE,
         field_path=".fallback"),
    Rule(rule="!has(self.autoscaling) || self.autoscaling.metric != 'kvCacheUsage' "
         "|| (has(self.runtime) && self.runtime.name != 'builtin')",
         message=api.KV_RUNTIME_MESSAGE, field_path=".autoscaling.metric"),
    Rule(rule=f"!has(self.variants) || self.variants.all(v, !has(v.autoscaling) "
         f"|| v.autoscaling.metric != 'kvCacheUsage' || {_V_RUNTIME} != 'builtin')",
         message=f"variants[].{api.KV_RUNTIME_MESSAGE}", field_path=".variants"),
    Rule(rule=f"!{_GATEWAY_ON} || !has(self.variants) || self.variants.all(v, v.name != 'gateway')",
         message=f"variants[].{api.GATEWAY_NAME_MESSAGE}", field_path=".variants"),
)

SPEC_RULES = (
    Rule(
        rule="!has(self.serving) || !has(self.serving.maxConcurrentRequestsPerKey) "
        "|| self.serving.maxConcurrentRequestsPerKey <= self.serving.maxConcurrentRequests",
        message=f"serving.{api.PER_KEY_MESSAGE}",
        field_path=".serving.maxConcurrentRequestsPerKey",
    ),
    Rule(
        rule="!has(self.variants) || self.variants.all(v, self.variants.exists_one(w, w.name == v.name))",
        message="variants: variant names must be unique",
        field_path=".variants",
        # No reason FieldValueDuplicate: the real apiserver then reports a bare "Duplicate value" and
        # drops this message (tests/crd/test_real_apiserver.py); the list-map key already refuses
        # duplicates with that reason at spec.variants[i].
    ),
    Rule(
        rule="!has(self.variants) || self.variants.map(v, has(v.weight) ? v.weight : 0).sum() <= 100",
        message="variants: canary weights must sum to at most 100 (the primary gets the rest)",
        field_path=".variants",
    ),
    Rule(
        rule="self.resources.gpus >= 1 || ("
        + _NO_QUANT.format(m="self.model")
        + " && (!has(self.variants) || self.variants.all(v, !has(v.model) || "
        + _NO_QUANT.format(m="v.model")
        + ")))",
        message="resources.gpus: bitsandbytes quantization (model.quantization or a variant's) needs "
        "resources.gpus >= 1",
        field_path=".resources.gpus",
    ),
    Rule(
        # Generated from precision.FP8_MODELS (tests/crd/test_fp8_rule.py). Variants: parse_spec only
        # (an unbounded model.id matched in a loop over the variants is over the CEL cost budget).
        rule="(has(self.gpuFit) && has(self.gpuFit.mode) && self.gpuFit.mode == 'Advisory') || "
        + _NO_QUANT.format(m="self.model") + f" || !self.model.id.matches('{precision.FP8_MODEL_ID}')",
        message=api.FP8_QUANTIZATION_MESSAGE,
        field_path=".model.quantization",
    ),
    Rule(
        rule="!has(self.ingress) || self.ingress.provider != 'ingress-nginx' || !has(self.variants) "
        f"|| size(self.variants) <= 1 || {_GATEWAY_ON}",
        message="variants: ingress-nginx splits traffic between two backends only; use ingress.provider "
        "gateway-api (or spec.gateway.enabled) for more than one canary",
        field_path=".variants",
    ),
    Rule(
        rule="!has(self.serving) || !has(self.serving.maxNewTokens) || !has(self.model.maxModelLen) "
        "|| self.serving.maxNewTokens < self.model.maxModelLen",
        message="serving.maxNewTokens must be less than model.maxModelLen (the prompt needs room)",
        field_path=".serving.maxNewTokens",
    ),
    Rule(
        rule="!has(self.variants) || !has(self.serving) || !has(self.serving.maxNewTokens) "
        "|| self.variants.all(v, !has(v.model) || !has(v.model.maxModelLen) "
        "|| v.model.maxModelLen > self.serving.maxNewTokens)",
        message="variants[].model.maxModelLen must be greater than serving.maxNewTokens",
        field_path=".variants",
    ),
    Rule(
        rule=f"!has(self.variants) || self.variants.all(v, !has(v.model) || !{_V_CACHED} || "
        f"!{_V_SOURCE.format(s='pvc')})",
        message=f"variants[].model.{api.CACHE_PVC_MESSAGE}",
        field_path=".variants",
    ),
    Rule(
        rule=f"!has(self.variants) || self.variants.all(v, !has(v.model) || !{_V_SOURCE.format(s='modelScope')} "
        f"|| {_V_CACHED})",
        message=f"variants[].model.{api.MODELSCOPE_CACHE_MESSAGE}",
        field_path=".variants",
    ),
    Rule(
        rule=_image_ok("self.image"),
        message=IMAGE_MESSAGE,
        field_path=".image",
    ),
    Rule(
        rule=f"!({_REQUIRE_DIGEST}) || self.image.matches('{api.DIGEST_PINNED}')",
        message=f"image: {DIGEST_MESSAGE}",
        field_path=".image",
    ),
    Rule(
        rule=f"!({_REQUIRE_DIGEST}) || !has(self.variants) || self.variants.all(v, !has(v.image) "
        f"|| v.image.matches('{api.DIGEST_PINNED}'))",
        message=f"variants[].image: {DIGEST_MESSAGE}",
        field_path=".variants",
    ),
    Rule(
        rule=_DEADLINE.format(d=api.Rollout.model_fields["progress_deadline_seconds"].default)
        + " >= (has(self.model.loadTimeoutSeconds) ? self.model.loadTimeoutSeconds : "
        + str(api.ModelSpec.model_fields["load_timeout_seconds"].default)
        + ") && (!has(self.variants) || self.variants.all(v, !has(v.model) || !has(v.model.loadTimeoutSeconds) || "
        + _DEADLINE.format(d=api.Rollout.model_fields["progress_deadline_seconds"].default)
        + " >= v.model.loadTimeoutSeconds))",
        message="rollout.progressDeadlineSeconds must be at least the model load budget (model.loadTimeoutSeconds "
        "and every variant's): a shorter deadline fails every rollout while the model is still loading",
        field_path=".rollout.progressDeadlineSeconds",
    ),
)

RULES: dict[type[BaseModel], tuple[Rule, ...]] = {
    envvars.WorkerEnvVar: _env_rules(envvars.WORKER_NAMES),
    envvars.DownloadEnvVar: _env_rules(envvars.DOWNLOAD_NAMES),
    envvars.EnvVarSource: (
        Rule(rule="[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef)].filter(x, x).size() == 1",
             message=f"valueFrom: {envvars.SOURCE_MESSAGE}"),
    ),
    api.ClientPeer: (
        Rule(rule="has(self.podSelector) || has(self.namespaceSelector)",
             message=f"clients[]: {api.CLIENT_SELECTOR_MESSAGE}"),
        Rule(rule="!has(self.namespaceSelector) || (has(self.namespaceSelector.matchLabels) "
             "&& size(self.namespaceSelector.matchLabels) > 0) || (has(self.namespaceSelector.matchExpressions) "
             "&& size(self.namespaceSelector.matchExpressions) > 0)",
             message=api.CLIENT_NAMESPACE_MESSAGE, field_path=".namespaceSelector"),
    ),
    api.DeepSeekDeploymentSpec: SPEC_RULES + RUNTIME_SPEC_RULES + MULTINODE_SPEC_RULES + SCALING_SPEC_RULES,
    api.Autoscaling: (
        Rule(rule="self.minReplicas <= self.maxReplicas", message=f"autoscaling.{api.MIN_REPLICAS_MESSAGE}",
             field_path=".minReplicas"),
        Rule(rule="self.metric != 'kvCacheUsage' || self.target <= 100", message=api.KV_TARGET_MESSAGE,
             field_path=".target"),
    ),
    api.Fallback: (
        Rule(rule="!self.baseURL.matches('/v1/?$')", message=api.BASE_URL_V1_MESSAGE, field_path=".baseURL"),
        Rule(rule="self.when.all(w, self.when.exists_one(x, x == w))", message="when: reasons must be unique",
             field_path=".when"),
    ),
    api.RequestGateway: (
        Rule(rule="!has(self.image) || (" + _image_ok("self.image") + ")", message=IMAGE_MESSAGE, field_path=".image"),
    ),
    api.RuntimeSpec: (
        Rule(rule="self.name != 'builtin' || (!has(self.image) && (!has(self.args) || size(self.args) == 0) "
             "&& !has(self.parallelism))",
             message=f"runtime: {api.BUILTIN_RUNTIME_MESSAGE}"),
        Rule(rule=f"!has(self.args) || self.args.all(a, !a.matches('{runtimes.OWNED_ARG}'))",
             message=runtimes.OWNED_MESSAGE, field_path=".args"),
        Rule(rule="!has(self.image) || (" + _image_ok("self.image") + ")", message=IMAGE_MESSAGE, field_path=".image"),
    ),
    api.Variant: (
        Rule(
            rule="self.name != 'primary'",
            message="name: 'primary' is reserved for the main deployment",
            field_path=".name",
        ),
        Rule(
            rule="!has(self.image) || (" + _image_ok("self.image") + ")",
            message=IMAGE_MESSAGE,
            field_path=".image",
        ),
    ),
    api.ModelSource: (
        Rule(
            rule="[has(self.pvc), has(self.huggingFace), has(self.modelScope)].filter(x, x).size() == 1",
            message=f"source: {api.SOURCE_MESSAGE}",
        ),
    ),
    api.ModelCache: (
        Rule(rule="!self.enabled || has(self.size)", message=f"cache.{api.CACHE_SIZE_MESSAGE}", field_path=".size"),
    ),
    # Kubernetes' CEL quantity library (the sandbox provides quantity() and isGreaterThan() too).
    api.DownloadResources: (
        Rule(rule=" && ".join(f"!quantity(self.requests.{r}).isGreaterThan(quantity(self.limits.{r}))"
                              for r in ("cpu", "memory")),
             message=f"resources.{api.DOWNLOAD_REQUESTS_MESSAGE}", field_path=".requests"),
    ),
    api.ModelSpec: (
        Rule(
            rule=f"!({_CACHED.format(m='self')}) || !has(self.source.pvc)",
            message=api.CACHE_PVC_MESSAGE,
            field_path=".cache",
        ),
        Rule(
            rule=f"!has(self.source.modelScope) || ({_CACHED.format(m='self')})",
            message=api.MODELSCOPE_CACHE_MESSAGE,
            field_path=".source.modelScope",
        ),
    ),
    api.ModelArchitecture: (
        Rule(
            rule="!has(self.kvLoraRank) || (has(self.qkRopeHeadDim) && has(self.qkNopeHeadDim) && has(self.vHeadDim))",
            message=f"architecture: {api.MLA_DIMS_MESSAGE}",
        ),
    ),
    api.Rollout: (
        Rule(
            rule="self.maxSurge > 0 || self.maxUnavailable > 0",
            message="rollout: maxSurge and maxUnavailable must not both be 0 (no pod could ever be replaced)",
        ),
    ),
    api.PrometheusRuleSpec: (
        Rule(
            rule="!has(self.labels) || !('severity' in self.labels)",
            message="labels: severity is set per alert by the operator; route on another label",
            field_path=".labels",
        ),
    ),
    api.Toleration: (
        Rule(rule="!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
             message=api.TOLERATION_VALUE_MESSAGE, field_path=".value"),
        Rule(rule="(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
             message=api.TOLERATION_KEY_MESSAGE, field_path=".operator"),
        Rule(rule="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
             message=api.TOLERATION_SECONDS_MESSAGE, field_path=".tolerationSeconds"),
    ),
    affinity.NodeSelectorRequirement: _requirement_rules(integers=True),
    affinity.LabelSelectorRequirement: _requirement_rules(integers=False),
    affinity.LabelSelector: (
        _label_keys_rule("matchLabels", affinity.LABEL_KEY_MESSAGE),
    ),
    api.Scheduling: (
        # maxProperties bounds the cost; the apiserver would refuse the Deployment's nodeSelector anyway.
        _label_keys_rule("nodeSelector", api.NODE_SELECTOR_KEY_MESSAGE),
    ),
    api.IngressSpec: (
        Rule(rule=f"!self.path.matches('{api.INGRESS_PATH_BAD}')", message=f"path: {api.INGRESS_PATH_MESSAGE}",
             field_path=".path"),
        Rule(
            rule="self.provider != 'gateway-api' || (has(self.gateway) && has(self.gateway.parentRefs) "
            "&& size(self.gateway.parentRefs) > 0)",
            message="gateway.parentRefs: required when ingress.provider is gateway-api",
            field_path=".gateway.parentRefs",
            reason="FieldValueRequired",
        ),
    ),
}

# Rules on the whole object: only metadata.name/generateName are visible there. Not in parse_spec
# (it sees the spec only); the operator's child names rely on it instead.
ROOT_RULES = (
    Rule(
        rule="!has(self.metadata.name) || (size(self.metadata.name) <= 63 "
        "&& self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$'))",
        message="metadata.name must be a DNS-1035 label of at most 63 characters (lowercase letters, "
        "digits and '-', starting with a letter): it names the worker Services and Deployments",
    ),
)

# Lists of objects keyed by a field: the apiserver merges them by key (server-side apply) and
# refuses duplicate keys itself.
LIST_MAP_KEYS: dict[tuple[type[BaseModel], str], tuple[str, ...]] = {
    (api.DeepSeekDeploymentSpec, "variants"): ("name",),
    (api.DeepSeekDeploymentSpec, "env"): ("name",),
    (api.Variant, "env"): ("name",),
    (api.ModelCache, "env"): ("name",),
    (api.DeepSeekDeploymentStatus, "variants"): ("name",),
    (api.DeepSeekDeploymentStatus, "conditions"): ("type",),
}
