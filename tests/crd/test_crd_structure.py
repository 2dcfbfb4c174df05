"""The committed CRD is what tools/gen_crd.py generates, and it is a structural schema."""

from __future__ import annotations

from typing import Any

import celpy
import pytest
from crd_structural import json_path_exists, nodes, structural_problems
from crd_support import CRD_FILE, crd, gen_crd, schema


def test_committed_crd_and_docs_match_the_generator() -> None:
    for path, text in gen_crd.outputs(with_docs=True).items():
        assert path.read_text() == text, f"{path.name} is stale: run tools/gen_crd.py --docs"


def test_generator_is_deterministic() -> None:
    assert gen_crd.render_yaml(gen_crd.build_crd()) == gen_crd.render_yaml(gen_crd.build_crd())


def test_schema_is_structural() -> None:
    assert structural_problems(schema()) == []


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ({"type": "object", "properties": {"a": {"description": "x"}}}, ".a: no type"),
        ({"type": "object", "properties": {"a": {"type": "string"}}}, ".a: no description"),
        ({"type": "object", "properties": {"a": {"description": "x", "$ref": "#/x"}}}, "forbidden keyword $ref"),
        ({"type": "object", "properties": {"a": {"description": "x", "type": "object"}}}, "object without"),
        (
            {"type": "object", "properties": {"a": {"description": "x", "type": "integer", "default": "1"}}},
            "default '1' is invalid",
        ),
        ({"type": "object", "anyOf": [{"type": "string"}]}, "anyOf is not allowed"),
    ],
)
def test_checker_finds_problems(bad: dict[str, Any], problem: str) -> None:
    assert any(problem in p for p in structural_problems(bad)), structural_problems(bad)


def test_names_subresources_and_columns() -> None:
    spec = crd()["spec"]
    assert spec["group"] == "deepseek.ai"
    assert spec["names"] == {
        "kind": "DeepSeekDeployment",
        "listKind": "DeepSeekDeploymentList",
        "plural": "deepseekdeployments",
        "singular": "deepseekdeployment",
        "shortNames": ["dsd"],
        "categories": ["all", "deepseek"],
    }
    version = spec["versions"][0]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = [(c["name"].upper(), c.get("priority", 0)) for c in version["additionalPrinterColumns"]]
    assert columns == [("READY", 0), ("IMAGE", 0), ("MODEL", 0), ("STATUS", 0), ("DOWNLOAD", 0), ("URL", 0),
                       ("AGE", 0),
                       ("STRATEGY", 1), ("FIT", 1), ("UPGRADE", 1)]  # priority 1: `kubectl get -o wide` only


def test_printer_columns_and_scale_paths_name_declared_fields() -> None:
    root = schema()
    version = crd()["spec"]["versions"][0]
    paths = [c["jsonPath"] for c in version["additionalPrinterColumns"]]
    paths += list(version["subresources"]["scale"].values())
    for path in paths:
        assert json_path_exists(root, path), path
    assert not json_path_exists(root, ".status.nope")
    assert not json_path_exists(root, '.status.conditions[?(@.kind=="Ready")].reason')


def test_scale_fields_have_the_types_the_apiserver_requires() -> None:
    props = schema()["properties"]
    assert props["spec"]["properties"]["replicas"]["type"] == "integer"
    assert props["status"]["properties"]["replicas"]["type"] == "integer"
    assert props["status"]["properties"]["selector"]["type"] == "string"


def test_every_cel_rule_compiles_and_names_a_field() -> None:
    env = celpy.Environment()
    rules = [(p, r) for p, n in nodes(schema()) for r in n.get("x-kubernetes-validations", [])]
    assert len(rules) >= 10
    for path, rule in rules:
        env.compile(rule["rule"])
        named = rule["message"].split(":")[0].split(" ")[0]
        assert named and any(c.isalpha() for c in named), (path, rule)


def test_lists_iterated_by_cel_are_bounded() -> None:
    """The apiserver's CEL cost estimator refuses rules over unbounded lists."""
    for path, node in nodes(schema()):
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path} has no maxItems"


def test_no_null_defaults_and_no_nullable() -> None:
    text = CRD_FILE.read_text()
    assert "nullable" not in text
    assert "$ref" not in text


def test_validation_doc_explains_every_cel_rule() -> None:
    """docs/validation.md has a row for each rule: a new rule needs its reason written down."""
    from crd_support import REPO, crd_rules

    doc = (REPO / "docs" / "validation.md").read_text()
    rules = [r for group in crd_rules.RULES.values() for r in group] + list(crd_rules.ROOT_RULES)
    table_rows = [line for line in doc.splitlines() if line.startswith("| `spec") or line.startswith("| (object)")]
    assert len(table_rows) == len(rules)
    assert "tokenSecretRef" in doc and "Public DeepSeek models" in doc
