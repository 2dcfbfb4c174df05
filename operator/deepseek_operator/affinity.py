"""core/v1 Affinity as `spec.scheduling.affinity` holds it, with the apiserver's own checks.

Free-form, an affinity the Deployment cannot hold (operator `Bogus`, `Exists` with values, a
full-width key) passed the CRD and was refused only in the child: the resource got no status and
its pods no NetworkPolicy (issue 19, item 1). Typed, `kubectl apply` refuses it and names the field.

The checks are those of the apiserver's ValidateNodeSelectorRequirement and
ValidateLabelSelectorRequirement (k8s.io/kubernetes pkg/apis/core/validation); tools/crd_rules.py
states each as a CEL rule with the same message. List bounds keep those rules within the
apiserver's CEL cost budget; they are far above what a scheduler configuration needs.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from deepseek_operator.wire import DNS_LABEL, LABEL_VALUE, QUALIFIED_NAME, QUALIFIED_NAME_MAX, Model

NodeSelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
LabelSelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]

MAX_TERMS = 16
MAX_EXPRESSIONS = 32
MAX_VALUES = 64

VALUES_NEEDED_MESSAGE = "values must be non-empty when operator is In or NotIn"
VALUES_FORBIDDEN_MESSAGE = "values must be empty when operator is Exists or DoesNotExist"
ONE_INTEGER_MESSAGE = "values must hold exactly one integer when operator is Gt or Lt"
LABEL_KEY_MESSAGE = "not a label key ([prefix/]name, ASCII letters, digits, '-', '_', '.')"
# The integer grammar Gt/Lt accept (strconv.ParseInt), as a CEL-safe regex.
INTEGER = "^[-+]?[0-9]{1,18}$"

Key = Annotated[str, Field(min_length=1, max_length=QUALIFIED_NAME_MAX, pattern=QUALIFIED_NAME)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]
Namespace = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]


def label_keys(labels: dict[str, str]) -> dict[str, str]:
    """`labels` when every key is a label key, else ValueError naming the others. A CEL rule says the
    same in the CRD (tools/crd_rules.py): a structural schema cannot constrain map keys."""
    bad = sorted(k for k in labels if not re.fullmatch(QUALIFIED_NAME, k) or len(k) > QUALIFIED_NAME_MAX)
    if bad:
        raise ValueError(f"{', '.join(bad)}: {LABEL_KEY_MESSAGE}")
    return labels


def value_count_errors(operator: str, values: list[str], *, integers: bool) -> list[str]:
    """What the apiserver says about `values` for `operator` (empty: nothing)."""
    if operator in ("In", "NotIn") and not values:
        return [VALUES_NEEDED_MESSAGE]
    if operator in ("Exists", "DoesNotExist") and values:
        return [VALUES_FORBIDDEN_MESSAGE]
    if operator in ("Gt", "Lt") and integers and (len(values) != 1 or not re.fullmatch(INTEGER, values[0])):
        return [ONE_INTEGER_MESSAGE]
    return []


class NodeSelectorRequirement(Model):
    """A node label test: key, operator and values."""

    key: Key = Field(description="Node label key.")
    operator: NodeSelectorOperator = Field(description="In, NotIn, Exists, DoesNotExist, Gt or Lt.")
    values: list[LabelValue] = Field(
        default_factory=list, max_length=MAX_VALUES,
        description="Label values: some for In/NotIn, none for Exists/DoesNotExist, one integer for Gt/Lt.")

    @model_validator(mode="after")
    def _apiserver_rules(self) -> NodeSelectorRequirement:
        errors = value_count_errors(self.operator, self.values, integers=True)
        if errors:
            raise ValueError("; ".join(errors))
        return self


class NodeFieldRequirement(Model):
    """A node field test; the apiserver supports only metadata.name."""

    key: str = Field(pattern="^metadata[.]name$", description="Node field: metadata.name, the only one supported.")
    operator: Literal["In", "NotIn"] = Field(description="In or NotIn.")
    values: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        min_length=1, max_length=1, description="Exactly one node name.")


class NodeSelectorTerm(Model):
    """Tests ANDed together; a term with none matches no node."""

    match_expressions: list[NodeSelectorRequirement] = Field(
        default_factory=list, max_length=MAX_EXPRESSIONS, description="Tests on node labels.")
    match_fields: list[NodeFieldRequirement] = Field(
        default_factory=list, max_length=MAX_EXPRESSIONS, description="Tests on node fields (metadata.name).")


class NodeSelector(Model):
    """Terms ORed together."""

    node_selector_terms: list[NodeSelectorTerm] = Field(
        min_length=1, max_length=MAX_TERMS, description="The node must match one of these terms.")


class PreferredSchedulingTerm(Model):
    """A weighted node preference."""

    weight: int = Field(ge=1, le=100, description="Weight 1-100 added to the node's score when it matches.")
    preference: NodeSelectorTerm = Field(description="The node term preferred.")


class NodeAffinity(Model):
    """Which nodes the worker pods may (required) or would rather (preferred) run on."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        None, description="Nodes the pods must run on.")
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, max_length=MAX_TERMS, description="Nodes the scheduler prefers.")


class LabelSelectorRequirement(Model):
    """A pod label test: key, operator and values."""

    key: Key = Field(description="Pod label key.")
    operator: LabelSelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[LabelValue] = Field(
        default_factory=list, max_length=MAX_VALUES,
        description="Label values: some for In/NotIn, none for Exists/DoesNotExist.")

    @model_validator(mode="after")
    def _apiserver_rules(self) -> LabelSelectorRequirement:
        errors = value_count_errors(self.operator, self.values, integers=False)
        if errors:
            raise ValueError("; ".join(errors))
        return self


class LabelSelector(Model):
    """A metav1.LabelSelector: matchLabels and matchExpressions ANDed."""

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict, max_length=MAX_EXPRESSIONS, description="Labels the object must carry.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=MAX_EXPRESSIONS, description="Tests on the object's labels.")

    @field_validator("match_labels")
    @classmethod
    def _label_keys(cls, labels: dict[str, str]) -> dict[str, str]:
        return label_keys(labels)


class PodAffinityTerm(Model):
    """Pods (by labels, in namespaces) whose topology domain the worker pod joins or avoids."""

    label_selector: LabelSelector | None = Field(None, description="The pods this term is about.")
    namespaces: list[Namespace] = Field(
        default_factory=list, max_length=MAX_TERMS, description="Their namespaces; none: the pod's own.")
    namespace_selector: LabelSelector | None = Field(None, description="Their namespaces, by label.")
    topology_key: Key = Field(description="Node label that defines the domain, e.g. kubernetes.io/hostname.")
    match_label_keys: list[Key] = Field(
        default_factory=list, max_length=MAX_EXPRESSIONS,
        description="Pod label keys whose values (taken from the incoming pod) are ANDed into labelSelector.")
    mismatch_label_keys: list[Key] = Field(
        default_factory=list, max_length=MAX_EXPRESSIONS,
        description="Pod label keys whose values must differ from the incoming pod's.")


class WeightedPodAffinityTerm(Model):
    """A weighted pod (anti-)affinity preference."""

    weight: int = Field(ge=1, le=100, description="Weight 1-100 added to the node's score when it matches.")
    pod_affinity_term: PodAffinityTerm = Field(description="The term preferred.")


class PodAffinity(Model):
    """Pod (anti-)affinity: required and preferred terms."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] = Field(
        default_factory=list, max_length=MAX_TERMS, description="Terms every node must satisfy.")
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] = Field(
        default_factory=list, max_length=MAX_TERMS, description="Terms the scheduler prefers.")


class Affinity(Model):
    """core/v1 Affinity of the worker pods."""

    node_affinity: NodeAffinity | None = Field(None, description="Node affinity.")
    pod_affinity: PodAffinity | None = Field(None, description="Pod affinity: run near these pods.")
    pod_anti_affinity: PodAffinity | None = Field(None, description="Pod anti-affinity: run away from these pods.")

    def to_pod_spec(self) -> dict[str, object]:
        """The pod spec's `affinity`: exactly what the user wrote (unset fields stay unset)."""
        return self.model_dump(by_alias=True, exclude_unset=True)
