"""Issue 19 item 2: a default an earlier CRD stored is told from the user's choice (stored_defaults.py).

The managedFields shapes are those the real apiserver records (kube-apiserver 1.36, this CRD);
tests/e2e/test_operator_upgrade.py checks the rule against it. A resource whose
`networkPolicy.enabled: false` no manager wrote gets NetworkPolicyReady False StoredDefaultDisabled,
through the real reconcile too; the operator does not turn the policy on by itself.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from deepseek_operator.reconcile import reconcile
from deepseek_operator.stored_defaults import (
    LAST_APPLIED_CONFIGURATION,
    NETWORK_POLICY_ENABLED,
    chosen_by_user,
    stored_default_conditions,
)
from tests.unit.test_operator_upgrades import SPEC, FakeApi, notify, resource

OWNS_ENABLED = {"f:spec": {".": {}, "f:image": {}, "f:networkPolicy": {".": {}, "f:enabled": {}}}}
OWNS_IMAGE = {"f:spec": {"f:image": {}, "f:model": {"f:id": {}}}}
STATUS = {"f:status": {"f:conditions": {}}}


def body(managers: list[dict[str, Any]], last_applied: dict[str, Any] | None = None,
         enabled: bool = False) -> dict[str, Any]:
    annotations = {LAST_APPLIED_CONFIGURATION: json.dumps(last_applied)} if last_applied is not None else {}
    return {"metadata": {"name": "chat", "annotations": annotations, "managedFields": managers},
            "spec": {**SPEC, "networkPolicy": {"enabled": enabled}}}


def manager(name: str, operation: str, fields: dict[str, Any], subresource: str = "") -> dict[str, Any]:
    entry = {"manager": name, "operation": operation, "apiVersion": "deepseek.ai/v1alpha1", "fieldsType": "FieldsV1",
             "fieldsV1": fields}
    return {**entry, "subresource": subresource} if subresource else entry


CSA_WITHOUT = {"spec": {"image": "x"}}
CSA_WITH = {"spec": {"image": "x", "networkPolicy": {"enabled": False}}}


@pytest.mark.parametrize("managers, last_applied, users", [
    ([manager("kubectl", "Apply", OWNS_IMAGE)], None, False),                     # SSA without it: a default
    ([manager("kubectl", "Apply", OWNS_ENABLED)], None, True),                    # SSA with it
    ([manager("kubectl-client-side-apply", "Update", OWNS_ENABLED)], CSA_WITHOUT, False),  # CSA: not recorded
    ([manager("kubectl-client-side-apply", "Update", OWNS_ENABLED)], CSA_WITH, True),      # CSA: recorded
    ([manager("kubectl-create", "Update", OWNS_ENABLED)], None, True),            # cannot tell: the user's
    ([], None, False),                                                            # nobody: a default
    ([manager("deepseek-operator", "Update", OWNS_ENABLED, "status")], None, False),  # status writes don't count
], ids=["ssa-without", "ssa-with", "csa-without", "csa-with", "create", "no-manager", "status-only"])
def test_chosen_by_user(managers: list[dict[str, Any]], last_applied: dict[str, Any] | None, users: bool) -> None:
    assert chosen_by_user(body(managers, last_applied), NETWORK_POLICY_ENABLED) is users
    conditions = stored_default_conditions(body(managers, last_applied))
    assert [(t, ok, reason) for t, ok, reason, _ in conditions] == (
        [] if users else [("NetworkPolicyReady", False, "StoredDefaultDisabled")])


def test_enabled_or_absent_says_nothing() -> None:
    assert stored_default_conditions(body([], enabled=True)) == []
    assert stored_default_conditions({"metadata": {}, "spec": SPEC}) == []


async def test_reconcile_reports_the_stored_default() -> None:
    cr = resource({**SPEC, "networkPolicy": {"enabled": False}}, 1, {})
    cr["metadata"]["managedFields"] = [manager("kubectl", "Apply", OWNS_IMAGE)]
    api = FakeApi(cr)
    await reconcile(api.cr, api, notify)  # type: ignore[arg-type]
    cond = next(c for c in api.cr["status"]["conditions"] if c["type"] == "NetworkPolicyReady")
    assert (cond["status"], cond["reason"]) == ("False", "StoredDefaultDisabled")
    assert "spec.networkPolicy.enabled" in cond["message"]
    assert not [k for k, _ in api.objects if k == "NetworkPolicy"]  # reported, not turned on


class ListingApi(FakeApi):
    """The caches drop managedFields: the full object comes from a list by name, counted."""

    def __init__(self, cr: dict[str, Any], full: dict[str, Any]) -> None:
        super().__init__(cr)
        self.full = full
        self.listed = 0

    async def list_page(self, _kind: Any, _ns: str | None, params: dict[str, str]) -> Any:
        assert params == {"fieldSelector": "metadata.name=chat"}
        self.listed += 1
        return [self.full], "1", ""


async def test_reconcile_reads_managed_fields_the_cache_dropped_once_per_version() -> None:
    full = resource({**SPEC, "networkPolicy": {"enabled": False}}, 1, {})
    full["metadata"]["managedFields"] = [manager("kubectl", "Apply", OWNS_IMAGE)]
    slim = {**full, "metadata": {k: v for k, v in full["metadata"].items() if k != "managedFields"}}
    api = ListingApi(slim, full)
    await reconcile(slim, api, notify)  # type: ignore[arg-type]
    await reconcile(slim, api, notify)  # type: ignore[arg-type]  # same resourceVersion: memoised
    assert api.listed == 1
    cond = next(c for c in api.cr["status"]["conditions"] if c["type"] == "NetworkPolicyReady")
    assert cond["reason"] == "StoredDefaultDisabled"

    enabled = resource(SPEC, 1, {})  # enabled (the default now): nothing to read
    api = ListingApi(enabled, full)
    await reconcile(enabled, api, notify)  # type: ignore[arg-type]
    assert api.listed == 0
