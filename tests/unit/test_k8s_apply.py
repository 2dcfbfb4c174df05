"""Table tests for the owned-field diff in k8s.py: when apply writes, and what the patch holds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deepseek_operator.k8s import LAST_APPLIED, apply_patch, is_subset, removals

SUBSET = [
    ("equal", {"a": 1}, {"a": 1}, True),
    ("live has server defaults", {"a": {"b": 1}}, {"a": {"b": 1, "c": 2}, "status": {}}, True),
    ("value differs", {"a": 1}, {"a": 2}, False),
    ("key missing live", {"a": 1}, {}, False),
    ("list items defaulted", {"p": [{"port": 80}]}, {"p": [{"port": 80, "protocol": "TCP"}]}, True),
    ("list length differs", {"p": [1, 2]}, {"p": [1]}, False),
    ("quantity as number vs string", {"replicas": 2}, {"replicas": "2"}, True),
]


@pytest.mark.parametrize(("desired", "live", "expected"), [c[1:] for c in SUBSET], ids=[c[0] for c in SUBSET])
def test_is_subset(desired: Any, live: Any, expected: bool) -> None:
    assert is_subset(desired, live) is expected


def annotated(live: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    return {**live, "metadata": {**live.get("metadata", {}), "annotations": {LAST_APPLIED: json.dumps(previous)}}}


def test_unchanged_object_needs_no_write() -> None:
    desired = {"metadata": {"name": "x"}, "spec": {"replicas": 2}}
    live = annotated({"metadata": {"name": "x", "uid": "u"}, "spec": {"replicas": 2, "paused": False}}, desired)
    assert apply_patch(desired, live) is None


def test_drifted_value_is_patched_back_and_annotation_refreshed() -> None:
    desired = {"metadata": {"name": "x"}, "spec": {"replicas": 2}}
    live = annotated({"metadata": {"name": "x"}, "spec": {"replicas": 5}}, desired)
    patch = apply_patch(desired, live)
    assert patch is not None and patch["spec"] == {"replicas": 2}
    assert json.loads(patch["metadata"]["annotations"][LAST_APPLIED]) == desired
    assert desired == {"metadata": {"name": "x"}, "spec": {"replicas": 2}}, "apply_patch mutated its input"


def test_field_dropped_from_desired_is_nulled_but_foreign_fields_stay() -> None:
    previous = {"spec": {"nodeSelector": {"gpu": "a100"}, "replicas": 1}}
    desired = {"spec": {"replicas": 1}}
    live = annotated({"spec": {"nodeSelector": {"gpu": "a100"}, "replicas": 1, "added_by_someone": True}}, previous)
    patch = apply_patch(desired, live)
    assert patch is not None and patch["spec"] == {"replicas": 1, "nodeSelector": None}


def test_removals_only_for_keys_still_live() -> None:
    assert removals({"a": 1, "b": {"c": 1, "d": 2}}, {"b": {"c": 1}}, {"a": 1, "b": {"c": 1, "d": 2}}) == \
        {"a": None, "b": {"d": None}}
    assert removals({"a": 1}, {}, {}) is None


def test_object_without_annotation_is_patched_once_to_record_it() -> None:
    desired = {"spec": {"replicas": 1}}
    patch = apply_patch(desired, {"spec": {"replicas": 1}})
    assert patch is not None and LAST_APPLIED in patch["metadata"]["annotations"]
