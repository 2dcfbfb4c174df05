"""The chart's RBAC against what the operator actually did on the real control plane.

The operator suites run the operator as the chart's ServiceAccount (tests/conftest.py `real_cluster`),
and the apiserver's audit log records each of its requests. After every other test of the session
(`after_suite`), this module reads those requests and checks that none was refused, and that every
grant in the chart's ClusterRole was used or is justified in docs/install.md's table of grants the
suites do not exercise. A grant neither used nor justified is one to trim; a justification of a
grant that was used is stale.

Without the suites, `test_the_chart_grants_every_child_kind_its_verbs` checks the chart's rules against
the registry of owned children (children.py): a kind added there without its grant fails here.
"""

from __future__ import annotations

import re

import pytest

from deepseek_operator import children
from deepseek_sandbox.real_cluster import RealCluster, audit_usage
from tests.delivery.conftest import ROOT, one, render_chart

Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)
INSTALL_DOC = ROOT / "docs" / "install.md"
UNEXERCISED_HEADING = "### Grants the test suites do not exercise"
SOMETIMES_HEADING = "### Grants the test suites exercise only sometimes"


def chart_grants() -> set[Grant]:
    """Every (group, resource, verb) the chart's ClusterRole grants, as the suites install it
    (tests/conftest.py: default values, leader election on)."""
    rules = one(render_chart("leaderElection.enabled=true"), "ClusterRole")["rules"]
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def namespaced_grants(*values: str) -> set[Grant]:
    """The grants on namespaced resources: the ClusterRole's, or with `watchNamespace` the Role's."""
    kind = "Role" if any(v.startswith("watchNamespace=") for v in values) else "ClusterRole"
    rules = one(render_chart(*values), kind)["rules"]
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


@pytest.mark.parametrize("values", [(), ("watchNamespace=models",)], ids=["cluster-wide", "one-namespace"])
def test_the_chart_grants_every_child_kind_its_verbs(values: tuple[str, ...]) -> None:
    """Each owned child kind gets exactly the verbs its registry entry needs (Child.verbs): list and
    watch for the informers, create/patch/delete for the kinds the operator renders and prunes."""
    grants = namespaced_grants(*values)
    for child in children.CHILDREN:
        group = child.kind.api_version.rpartition("/")[0]
        granted = {verb for g, resource, verb in grants if (g, resource) == (group, child.kind.plural)}
        assert granted == set(child.verbs()), f"{child.kind.kind}: the chart grants {sorted(granted)}"


def justified_grants(heading: str = UNEXERCISED_HEADING) -> set[Grant]:
    """Rows `| group | resource | verb | why |` of a grants table in docs/install.md: the unexercised
    ones by default, or those whose use depends on timing (SOMETIMES_HEADING)."""
    text = INSTALL_DOC.read_text()
    assert heading in text, f"{INSTALL_DOC} lacks {heading!r}"
    table = text.split(heading, 1)[1].split("\n#", 1)[0]
    rows = set()
    for line in table.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("API group", "---") and not re.fullmatch(r"-+", cells[0]):
            rows.add(("" if cells[0] == '""' else cells[0], cells[1], cells[2]))
    return rows


@pytest.mark.after_suite
def test_every_operator_request_was_allowed_and_every_grant_is_used_or_justified(
        real_cluster: RealCluster) -> None:
    usage = audit_usage(real_cluster.audit.path, real_cluster.operator_user, since=real_cluster.session_start)
    if not any(verb == "create" and resource == "deployments" for verb, _, resource, _, _ in usage):
        pytest.skip("run with the operator suites (tests/e2e) in the same session: no operator writes audited")
    refused = {key: n for key, n in usage.items() if key[4] in (401, 403)}
    assert not refused, f"requests the apiserver refused the operator (verb, group, resource, sub, code): {refused}"

    used = {(group, f"{resource}/{sub}" if sub else resource, verb) for verb, group, resource, sub, _ in usage
            if resource}
    sometimes = justified_grants(SOMETIMES_HEADING)
    grants = chart_grants()
    unused = grants - used - sometimes
    justified = justified_grants()
    assert sometimes <= grants, "a grant listed as exercised only sometimes is not granted"
    assert not sometimes & justified, "a grant in both tables of docs/install.md"
    assert sorted(unused - justified) == [], "granted, never used and not justified in docs/install.md: trim them"
    assert sorted(justified - unused) == [], "justified as unexercised in docs/install.md, but used or not granted"
    assert sorted(used - grants) == [], "used without a grant (impossible unless refused)"
