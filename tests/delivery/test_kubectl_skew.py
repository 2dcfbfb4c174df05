"""kubectl stays within one minor of the control plane the tests build (Kubernetes' version-skew policy).

The pins live in two scripts (tools/install-binaries.sh: kubectl; tools/control-plane/build.sh:
kube-apiserver); the installed binary and, where the real control plane runs, the live apiserver are
checked too, so a stale .tools/bin/kubectl from an older checkout fails here instead of somewhere odd.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from deepseek_sandbox.real_cluster import RealCluster

from .conftest import ROOT, run, tool

INSTALL_BINARIES = ROOT / "tools" / "install-binaries.sh"
CONTROL_PLANE_BUILD = ROOT / "tools" / "control-plane" / "build.sh"
MAX_SKEW = 1


def minor(version: str) -> int:
    """'v1.36.3' (or '1.36') -> 36; only Kubernetes 1.x exists."""
    match = re.match(r"v?1\.(\d+)", version)
    assert match, f"not a Kubernetes version: {version!r}"
    return int(match.group(1))


def pinned(script: Path, pattern: str) -> str:
    match = re.search(pattern, script.read_text(), flags=re.MULTILINE)
    assert match, f"{script.relative_to(ROOT)} pins no version ({pattern})"
    return match.group(1)


def control_plane_version() -> str:
    return pinned(CONTROL_PLANE_BUILD, r"^KUBE_VERSION=\$\{KUBE_VERSION:-(v1\.\d+\.\d+)\}$")


def kubectl_pin() -> str:
    return pinned(INSTALL_BINARIES, r"^kubectl_version=(v1\.\d+\.\d+)$")


def test_the_pins_are_within_one_minor() -> None:
    assert abs(minor(kubectl_pin()) - minor(control_plane_version())) <= MAX_SKEW, (
        f"kubectl {kubectl_pin()} vs control plane {control_plane_version()}")


def test_the_installed_kubectl_is_the_pinned_one() -> None:
    """What `make bootstrap` left in .tools/bin: the pin, so within the skew of the control plane."""
    client = json.loads(run([tool("kubectl"), "version", "--client", "-o", "json"]).stdout)["clientVersion"]
    assert client["gitVersion"] == kubectl_pin()
    assert abs(int(client["minor"]) - minor(control_plane_version())) <= MAX_SKEW


def test_kubectl_and_the_live_apiserver_are_within_one_minor(real_cluster: RealCluster) -> None:
    env = {**os.environ, **real_cluster.kubectl_env()}
    versions = json.loads(run([tool("kubectl"), "version", "-o", "json"], env=env).stdout)
    client, server = versions["clientVersion"], versions["serverVersion"]
    assert server["gitVersion"] == control_plane_version(), "the cluster runs the pinned control plane"
    assert abs(int(client["minor"]) - int(server["minor"])) <= MAX_SKEW, (client["gitVersion"], server["gitVersion"])
