"""scripts/deploy.sh decision logic against a scripted kubectl (tests/delivery/fake_kubectl.py).

The end-to-end run against the real operator and sandbox is test_deploy_script.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT

DEPLOY = ROOT / "scripts" / "deploy.sh"
FAKE = Path(__file__).with_name("fake_kubectl.py")
OLD, NEW = "registry.example.com/worker:1.0", "registry.example.com/worker:2.0"


def cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def status(
    observed: int,
    image: str,
    ready: str,
    ready_reason: str,
    degraded: str = "False",
    degraded_reason: str = "AsExpected",
    failed: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "observedGeneration": observed,
        "image": image,
        "conditions": [
            cond("Ready", ready, ready_reason, f"ready is {ready}"),
            cond("Degraded", degraded, degraded_reason, f"rollout of {failed} failed; rolled back to {image}"),
        ],
    }
    if failed:
        out["failedImage"] = failed
    return out


SERVING = status(1, OLD, "True", "Available")
ROLLING = status(2, OLD, "False", "RollingOut")
DONE = status(2, NEW, "True", "Available")
ROLLED_BACK = status(2, OLD, "True", "Available", "True", "RolledBack", failed=NEW)


def deploy(
    tmp_path: Path,
    timeline: list[dict[str, Any]],
    *extra: str,
    initial: dict[str, Any] = SERVING,
    refuse_patch: str | None = None,
    name: str = "chat",
    spec: dict[str, Any] | None = None,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    state_file = tmp_path / "state.json"
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE} "$@"\n')
    kubectl.chmod(0o755)
    obj = {"metadata": {"name": "chat", "generation": 1}, "spec": {"image": OLD, **(spec or {})}, "status": initial}
    state_file.write_text(json.dumps({"object": obj, "timeline": timeline, "refuse_patch": refuse_patch}))
    proc = subprocess.run(
        ["bash", str(DEPLOY), name, NEW, "--namespace", "llm", "--interval", "0", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env={"KUBECTL": str(kubectl), "FAKE_KUBECTL_STATE": str(state_file), "PATH": "/usr/bin:/bin"},
    )
    return proc, json.loads(state_file.read_text())


def test_success_waits_for_the_new_generation_ready_and_image(tmp_path: Path) -> None:
    # A stale Ready=True for generation 1 must not end the wait early.
    proc, state = deploy(tmp_path, [SERVING, ROLLING, ROLLING, DONE])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert state["object"]["spec"]["image"] == NEW
    assert "rolled out" in proc.stdout
    assert ["--namespace", "llm", "get", "deepseekdeployments.deepseek.ai", "chat"] in state["calls"]
    patch = next(c for c in state["calls"] if "patch" in c)
    assert patch[-1] == json.dumps({"spec": {"image": NEW}}, separators=(",", ":"))


def test_ready_for_the_new_generation_but_old_image_is_not_success(tmp_path: Path) -> None:
    proc, _ = deploy(tmp_path, [status(2, OLD, "True", "Available")], "--timeout", "2")
    assert proc.returncode == 2, proc.stdout + proc.stderr


def test_rolled_back_exits_1_with_the_reason(tmp_path: Path) -> None:
    proc, _ = deploy(tmp_path, [ROLLING, ROLLED_BACK])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "RolledBack" in proc.stdout
    assert f"rollout of {NEW} failed" in proc.stdout


def test_rolled_back_counts_before_observed_generation_catches_up(tmp_path: Path) -> None:
    early = status(1, OLD, "True", "Available", "True", "RolledBack", failed=NEW)
    proc, _ = deploy(tmp_path, [early])
    assert proc.returncode == 1, proc.stdout + proc.stderr


def test_stale_rollback_of_the_same_image_is_not_a_verdict(tmp_path: Path) -> None:
    """Redeploying an image that failed before: the old RolledBack must not fail the new attempt."""
    stale = status(1, OLD, "True", "Available", "True", "RolledBack", failed=NEW)
    proc, _ = deploy(tmp_path, [stale, ROLLING, DONE], initial=stale)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_degraded_for_the_current_generation_fails(tmp_path: Path) -> None:
    broken = status(2, OLD, "False", "ProgressDeadlineExceeded", "True", "ProgressDeadlineExceeded")
    proc, _ = deploy(tmp_path, [ROLLING, broken])
    assert proc.returncode == 1
    assert "ProgressDeadlineExceeded" in proc.stdout


def test_timeout_exits_2(tmp_path: Path) -> None:
    proc, _ = deploy(tmp_path, [ROLLING], "--timeout", "2")
    assert proc.returncode == 2
    assert "TIMED OUT" in proc.stdout
    assert "RollingOut" in proc.stdout


def test_missing_resource_exits_1(tmp_path: Path) -> None:
    proc, state = deploy(tmp_path, [DONE], name="nope")
    assert proc.returncode == 1
    assert not any("patch" in call for call in state["calls"])


def test_refused_patch_exits_1(tmp_path: Path) -> None:
    proc, _ = deploy(tmp_path, [DONE], refuse_patch='The DeepSeekDeployment "chat" is invalid: spec.image')
    assert proc.returncode == 1
    assert "spec.image" in proc.stderr


@pytest.mark.parametrize(
    "args", [[], ["chat"], ["chat", NEW, "--timeout", "soon"], ["chat", 'x"; rm -rf /'], ["chat", NEW, "--bogus"]]
)
def test_bad_usage_exits_64(args: list[str]) -> None:
    proc = subprocess.run(
        ["bash", str(DEPLOY), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"KUBECTL": "/bin/false", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 64, proc.stderr


# -- the deadline: derived from the patched resource unless --timeout names one ---------------------------
def replace(max_unavailable: int = 1) -> dict[str, Any]:
    return {"strategy": "Replace", "maxUnavailable": max_unavailable, "progressDeadlineSeconds": 1800,
            "surgeTimeoutSeconds": 120}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # 3 waves of one pod: two full loads, then the last may run to the progress deadline; + 5m margin.
        ({"replicas": 3, "model": {"loadTimeoutSeconds": 1500}, "rollout": replace()},
         "timeout 1h25m00s derived from the resource (primary: 3 replica(s), 1 at a time (Replace), "
         "loadTimeoutSeconds 1500, progressDeadlineSeconds 1800, margin 300s)"),
        # maxUnavailable 2 halves the waves: ceil(3 / 2) = 2.
        ({"replicas": 3, "model": {"loadTimeoutSeconds": 1500}, "rollout": replace(2)},
         "timeout 1h00m00s derived from the resource (primary: 3 replica(s), 2 at a time (Replace), "),
        # Surge uses max(maxSurge, 1): 5 replicas, 2 at a time = 3 waves.
        ({"replicas": 5, "model": {"loadTimeoutSeconds": 600},
          "rollout": {"strategy": "Surge", "maxSurge": 2, "progressDeadlineSeconds": 900}},
         "timeout 40m00s derived from the resource (primary: 5 replica(s), 2 at a time (Surge), "),
        # Nothing set: the CRD's defaults (1 replica, 1800 s, Auto: + surgeTimeoutSeconds 120).
        ({}, "timeout 37m00s derived from the resource (primary: 1 replica(s), 1 at a time (Auto), "
             "loadTimeoutSeconds 1800, progressDeadlineSeconds 1800, surgeTimeoutSeconds 120, margin 300s)"),
        # A canary that inherits spec.image rolls too, with its own load budget; one with its own image does not.
        ({"replicas": 1, "variants": [
            {"name": "canary", "weight": 10, "replicas": 4, "model": {"loadTimeoutSeconds": 600}},
            {"name": "pinned", "weight": 10, "replicas": 30, "image": "registry.example.com/worker:pinned"}]},
         "timeout 1h07m00s derived from the resource (variant canary: 4 replica(s), 1 at a time (Auto), "
         "loadTimeoutSeconds 600, "),
    ],
    ids=["replace-3", "replace-3-by-2", "surge-5-by-2", "defaults", "inheriting-canary"],
)
def test_the_default_timeout_is_derived_from_the_resource(tmp_path: Path, spec: dict[str, Any], expected: str) -> None:
    proc, _ = deploy(tmp_path, [ROLLING, DONE], spec=spec)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert expected in proc.stdout, proc.stdout


def test_the_derived_deadline_is_the_one_waited_for(tmp_path: Path) -> None:
    """Two waves of a 1 s load and a 1 s progress deadline, no margin: timed out after 2 s, not 30 min."""
    spec = {"replicas": 2, "model": {"loadTimeoutSeconds": 1},
            "rollout": {"strategy": "Replace", "maxUnavailable": 1, "progressDeadlineSeconds": 1}}
    proc, _ = deploy(tmp_path, [ROLLING], "--timeout-margin", "0", spec=spec)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "timeout 2s derived from the resource" in proc.stdout
    assert "TIMED OUT after 2s" in proc.stdout


def test_an_explicit_timeout_overrides_the_derived_one(tmp_path: Path) -> None:
    proc, state = deploy(tmp_path, [ROLLING], "--timeout", "2", spec={"replicas": 8})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "timeout 2s (--timeout 2)" in proc.stdout
    assert not any("loadTimeoutSeconds" in " ".join(call) for call in state["calls"]), "nothing to derive"
