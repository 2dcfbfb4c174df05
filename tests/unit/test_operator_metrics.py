"""The operator's own metrics: names, labels, closed label sets and the HTTP endpoint."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from deepseek_operator import metrics


def _value(name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or {}) or 0.0


# name -> (call, sample name, labels)
RECORDS = {
    "reconcile success": (
        lambda: metrics.record_reconcile("success", 0.2), "deepseek_operator_reconciles_total", {"result": "success"}
    ),
    "reconcile waiting": (
        lambda: metrics.record_reconcile("waiting", 0.0), "deepseek_operator_reconciles_total", {"result": "waiting"}
    ),
    "reconcile duration observed": (
        lambda: metrics.record_reconcile("error", 0.2), "deepseek_operator_reconcile_duration_seconds_count", {}
    ),
    "child patched": (
        lambda: metrics.record_child("Deployment", "patched"),
        "deepseek_operator_children_applied_total",
        {"kind": "Deployment", "action": "patched"},
    ),
    "api error 409": (
        lambda: metrics.record_api_error("PATCH", 409),
        "deepseek_operator_api_errors_total",
        {"verb": "patch", "code": "409"},
    ),
    "resync skipped an invalid resource": (
        lambda: metrics.record_resync("skipped_invalid"),
        "deepseek_operator_resyncs_total",
        {"result": "skipped_invalid"},
    ),
    "api error without response": (
        lambda: metrics.record_api_error("get", 0), "deepseek_operator_api_errors_total", {"verb": "get", "code": "0"}
    ),
}


@pytest.mark.parametrize("call,sample,labels", list(RECORDS.values()), ids=list(RECORDS))
def test_recorders_increment(call: Callable[[], None], sample: str, labels: dict[str, str]) -> None:
    before = _value(sample, labels)
    call()
    assert _value(sample, labels) == before + 1


def test_duration_lands_in_bucket() -> None:
    before = _value("deepseek_operator_reconcile_duration_seconds_bucket", {"le": "0.25"})
    metrics.record_reconcile("success", 0.2)
    assert _value("deepseek_operator_reconcile_duration_seconds_bucket", {"le": "0.25"}) == before + 1


def test_managed_deployments_gauge() -> None:
    metrics.set_managed_deployments(3)
    assert _value("deepseek_operator_managed_deployments") == 3
    metrics.set_managed_deployments(0)
    assert _value("deepseek_operator_managed_deployments") == 0


BAD = {
    "unknown result": (lambda: metrics.record_reconcile("ok", 1.0), "result must be one of"),
    "unknown action": (lambda: metrics.record_child("Service", "updated"), "action must be one of"),
    "unknown resync result": (lambda: metrics.record_resync("skipped"), "result must be one of"),
    "empty kind": (lambda: metrics.record_child("", "created"), "kind"),
    "empty verb": (lambda: metrics.record_api_error("", 500), "verb"),
    "negative count": (lambda: metrics.set_managed_deployments(-1), "negative"),
}


@pytest.mark.parametrize("call,message", list(BAD.values()), ids=list(BAD))
def test_bad_label_values_are_refused(call: Callable[[], None], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_metrics_server_serves_the_registry() -> None:
    port = _free_port()
    metrics.start_metrics_server(port, addr="127.0.0.1")
    metrics.record_reconcile("success", 0.01)
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                body = resp.read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    for name in (
        "deepseek_operator_reconciles_total",
        "deepseek_operator_reconcile_duration_seconds_bucket",
        "deepseek_operator_children_applied_total",
        "deepseek_operator_api_errors_total",
        "deepseek_operator_managed_deployments",
        "deepseek_operator_resyncs_total",
        "process_cpu_seconds_total",
    ):
        assert name in body, name


def test_every_operator_metric_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
    names = {m.name for m in metrics.REGISTRY.collect() if m.name.startswith("deepseek_operator_")}
    assert names
    for name in names:
        documented = f"`{name}`" in doc or f"`{name}_total`" in doc
        assert documented, f"{name} is not in docs/observability.md"
