"""ScaledObjects against KEDA v2.21.0's own CRD and scaler schema (tests/data/keda, keda_crd.py).

The shape issue 22 renders per variant: scale a Deployment from 0 (idleReplicaCount 0) on the
gateway's held-request count (a `metrics-api` trigger reading JSON from the gateway) and on a
Prometheus query. Valid as written; each broken copy is refused naming the field.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

import pytest
import yaml
from keda_crd import DATA, REPO, crd, keda_errors, scalers

GATEWAY = "http://chat-gateway.default.svc:8080"


def scaled_object() -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "chat-primary", "namespace": "default"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat-primary"},
            "minReplicaCount": 0,
            "idleReplicaCount": 0,
            "maxReplicaCount": 4,
            "cooldownPeriod": 300,
            "pollingInterval": 5,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
                },
            },
            "triggers": [
                {
                    "type": "metrics-api",
                    "name": "held",
                    "metricType": "AverageValue",
                    "metadata": {
                        "url": f"{GATEWAY}/scaling/primary",
                        "format": "json",
                        "valueLocation": "held",
                        "targetValue": "4",
                        "activationTargetValue": "0.5",
                    },
                },
                {
                    "type": "prometheus",
                    "name": "queue",
                    "metadata": {
                        "serverAddress": "http://prometheus.monitoring.svc:9090",
                        "query": 'sum(deepseek_queue_depth{deployment="chat",variant="primary"})',
                        "threshold": "8",
                        "activationThreshold": "1",
                    },
                },
            ],
        },
    }


def trigger_auth() -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "gateway-scaling", "namespace": "default"},
        "spec": {"secretTargetRef": [{"parameter": "token", "name": "chat-gateway-scaling", "key": "token"}]},
    }


def test_the_sample_is_valid() -> None:
    assert keda_errors(scaled_object()) == []


def test_trigger_authentication_is_valid() -> None:
    assert keda_errors(trigger_auth()) == []
    so = scaled_object()
    trigger = so["spec"]["triggers"][0]
    trigger["authenticationRef"] = {"name": "gateway-scaling"}
    trigger["metadata"]["authMode"] = "bearer"
    assert keda_errors(so) == []


def test_the_data_is_the_module_version() -> None:
    """The CRDs are KEDA's generated ones at the version the README names."""
    for kind in ("ScaledObject", "TriggerAuthentication", "ClusterTriggerAuthentication"):
        definition = crd(kind)
        assert definition["spec"]["group"] == "keda.sh"
        assert [v["name"] for v in definition["spec"]["versions"]] == ["v1alpha1"]
    assert {"metrics-api", "prometheus"} <= set(scalers())
    assert "v2.21.0" in (DATA / "README.md").read_text()


def _break(path: str, value: Any) -> dict[str, Any]:
    """The sample with `value` at the dotted `path` (None deletes it)."""
    so = copy.deepcopy(scaled_object())
    *parents, last = path.split(".")
    node: Any = so
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is None:
        del node[int(last) if last.isdigit() else last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return so


BROKEN: list[tuple[str, str, Any, str, str]] = [
    # (id, path to change, new value (None: delete), reported path, words of the message)
    ("no-target", "spec.scaleTargetRef", None, "spec.scaleTargetRef", "Required value"),
    ("target-without-name", "spec.scaleTargetRef.name", None, "spec.scaleTargetRef.name", "Required value"),
    ("no-triggers", "spec.triggers", [], "spec.triggers", "non-empty"),
    ("number-not-string", "spec.triggers.0.metadata.activationTargetValue", 0.5,
     "spec.triggers[0].metadata.activationTargetValue", "string"),
    ("negative-min", "spec.minReplicaCount", -1, "spec.minReplicaCount", "less than the minimum of 0"),
    ("min-above-max", "spec.minReplicaCount", 5, "spec",
     "minReplicaCount must be less than or equal to maxReplicaCount"),
    ("unknown-field", "spec.idleReplicas", 0, "spec.idleReplicas", "unknown field"),
    ("idle-not-below-min", "spec.idleReplicaCount", 1, "spec.idleReplicaCount",
     "must be less than MinReplicaCount=1"),
    ("unknown-trigger", "spec.triggers.0.type", "metrics_api", "spec.triggers[0].type", "unknown trigger type"),
    ("misspelt-key", "spec.triggers.0.metadata.valueLocation", None, "spec.triggers[0].metadata",
     "requires 'valueLocation'"),
    ("unknown-key", "spec.triggers.0.metadata.activationValue", "1", "spec.triggers[0].metadata.activationValue",
     "reads no metadata key"),
    ("bad-format", "spec.triggers.0.metadata.format", "JSON", "spec.triggers[0].metadata.format", "not one of"),
    ("not-a-number", "spec.triggers.1.metadata.threshold", "eight", "spec.triggers[1].metadata.threshold",
     "not a number"),
    ("prometheus-without-query", "spec.triggers.1.metadata.query", None, "spec.triggers[1].metadata",
     "requires 'query'"),
]


@pytest.mark.parametrize(("path", "value", "where", "words"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_is_refused(path: str, value: Any, where: str, words: str) -> None:
    errors = keda_errors(_break(path, value))
    assert any(p == where and words in m for p, m in errors), errors


def test_wrong_api_version_is_refused() -> None:
    so = scaled_object()
    so["apiVersion"] = "keda.sh/v1"
    assert keda_errors(so) == [("apiVersion", "'keda.sh/v1' is not served for ScaledObject: keda.sh/v1alpha1")]


def test_command_line(tmp_path: Any) -> None:
    """`python tests/crd/keda_crd.py FILE` prints each document's verdict; exit 1 when one is invalid."""
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump_all([scaled_object(), trigger_auth()]))
    bad.write_text(yaml.safe_dump(_break("spec.triggers.0.metadata.format", "JSON")))
    script = str(REPO / "tests" / "crd" / "keda_crd.py")
    ok = subprocess.run([sys.executable, script, str(good)], capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("valid (KEDA v2.21.0)") == 2
    refused = subprocess.run([sys.executable, script, str(bad)], capture_output=True, text=True, timeout=60,
                             check=False)
    assert refused.returncode == 1
    assert "spec.triggers[0].metadata.format: 'JSON' is not one of" in refused.stdout
