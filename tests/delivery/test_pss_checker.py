"""tests/pss.py itself: it accepts a compliant pod and names every violated restricted control."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pss import object_violations, pod_violations

GOOD: dict[str, Any] = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "app",
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }
    ],
    "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "models", "persistentVolumeClaim": {"claimName": "m"}}],
}


def mutated(path: str, value: Any) -> dict[str, Any]:
    """GOOD with one field set; path like "containers.0.securityContext.privileged"."""
    pod = copy.deepcopy(GOOD)
    *parents, leaf = path.split(".")
    node: Any = pod
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[int(leaf) if leaf.isdigit() else leaf] = value
    return pod


def test_compliant_pod_passes() -> None:
    assert pod_violations(GOOD) == []


def test_net_bind_service_may_be_added() -> None:
    assert pod_violations(mutated("containers.0.securityContext.capabilities.add", ["NET_BIND_SERVICE"])) == []


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("hostNetwork", True, "hostNetwork"),
        ("hostPID", True, "hostPID"),
        ("hostIPC", True, "hostIPC"),
        ("volumes", [{"name": "h", "hostPath": {"path": "/"}}], "hostPath"),
        ("volumes", [{"name": "n", "nfs": {"server": "s", "path": "/"}}], "nfs"),
        ("containers.0.securityContext.privileged", True, "privileged"),
        ("containers.0.securityContext.allowPrivilegeEscalation", True, "allowPrivilegeEscalation"),
        ("containers.0.securityContext.capabilities", {"drop": ["NET_RAW"]}, "drop must include ALL"),
        ("containers.0.securityContext.capabilities.add", ["SYS_ADMIN"], "SYS_ADMIN"),
        ("securityContext.runAsNonRoot", False, "runAsNonRoot"),
        ("containers.0.securityContext.runAsUser", 0, "runAsUser"),
        ("securityContext.seccompProfile", {"type": "Unconfined"}, "seccompProfile"),
        ("containers.0.securityContext.seccompProfile", {"type": "Unconfined"}, "seccompProfile"),
        ("containers.0.ports", [{"containerPort": 80, "hostPort": 80}], "hostPort"),
        ("containers.0.securityContext.procMount", "Unmasked", "procMount"),
        ("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}], "sysctl"),
    ],
)
def test_each_control_is_enforced(path: str, value: Any, expected: str) -> None:
    violations = pod_violations(mutated(path, value))
    assert any(expected in v for v in violations), violations


def test_init_containers_are_checked() -> None:
    pod = mutated("initContainers", [{"name": "init"}])
    assert any("'init'" in v for v in pod_violations(pod))


def test_object_violations_finds_the_pod_template() -> None:
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "w"},
        "spec": {"template": {"spec": mutated("hostNetwork", True)}},
    }
    assert object_violations(deployment) == ["Deployment/w: spec.hostNetwork must not be true"]
    assert object_violations({"kind": "Service", "metadata": {"name": "s"}, "spec": {}}) == []
