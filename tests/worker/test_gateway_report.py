"""gateway/report.py: the gateway's cold starts and fallback share reach its report ConfigMap as the
operator reads them (measured.read_gateway_report), on change only and never more often than the
interval, through the Role the operator renders (on the real kube-apiserver: that ConfigMap only)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import free_port, wait_until
from gateway_fakes import AUTH, StubBackend, chat, gateway, serve

from deepseek_operator.api import parse_spec, resolve_variants
from deepseek_operator.measured import read_gateway_report
from deepseek_operator.render.common import Owner
from deepseek_operator.render.gateway import render_gateway, report_configmap
from deepseek_sandbox.real_cluster import RealCluster
from deepseek_worker.gateway.report import KEEP, ColdStarts, GatewayReporter
from deepseek_worker.settings import Settings


class Api:
    """A stand-in API server: records each PATCH's path and body, answers `status`."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200


@pytest.fixture
def api() -> Iterator[tuple[Api, str]]:
    state = Api()

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append({"path": self.path, "body": json.loads(body)})
            self.send_response(state.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def rendered(namespace: str = "llm") -> tuple[list[dict[str, Any]], Settings]:
    """The gateway's children as the operator renders them, and the report settings its pod gets."""
    spec = parse_spec({"image": "r/w:1", "model": {"id": "m", "source": {"pvc": {"claimName": "models"}}},
                       "gateway": {"enabled": True}, "autoscaling": {"minReplicas": 0, "maxReplicas": 2}})
    children = render_gateway(Owner("chat", namespace, "uid-1"), spec, spec.image, resolve_variants(spec))
    deployment = next(c for c in children if c["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    return children, Settings(report_configmap=env["DEEPSEEK_REPORT_CONFIGMAP"],
                              report_namespace=env["DEEPSEEK_REPORT_NAMESPACE"])


def test_cold_starts_keep_the_last_and_the_median() -> None:
    cold = ColdStarts(clock=lambda: 1_780_000_000.0)
    for seconds in (30.0, 50.0, 40.0):
        cold.record("primary", seconds)
    assert cold.summary() == {"primary": {"lastSeconds": 40.0, "p50Seconds": 40.0, "count": 3,
                                          "observedAt": "2026-05-28T20:26:40Z"}}
    for _ in range(KEEP):
        cold.record("primary", 10.0)
    assert cold.summary()["primary"]["count"] == KEEP and cold.summary()["primary"]["p50Seconds"] == 10.0


def test_writes_on_change_only_and_the_operator_reads_it(api: tuple[Api, str]) -> None:
    state, url = api
    _, settings = rendered()
    cold, share = ColdStarts(), [0.0]
    reporter = GatewayReporter(settings, cold, lambda: share[0], env={"DEEPSEEK_KUBE_API": url, "HOSTNAME": "gw-1"})
    assert asyncio.run(reporter.tick()) is False and state.requests == []  # idle: nothing to say, no request
    cold.record("primary", 52.37)
    share[0] = 0.123
    assert asyncio.run(reporter.tick()) is True
    assert asyncio.run(reporter.tick()) is False  # unchanged: no second write
    [request] = state.requests
    assert request["path"] == "/api/v1/namespaces/llm/configmaps/chat-gateway-report"
    found = read_gateway_report({"data": request["body"]["data"]}, ["primary", "canary"], {"primary": "41.3"})
    assert found is not None
    assert found.gateway["fallbackShare"] == "0.12" and found.gateway["pod"] == "gw-1"
    assert found.cold_starts["primary"]["lastSeconds"] == "52.4" and found.cold_starts["primary"]["count"] == 1
    assert "the model's load 41.3 s, scheduling, pod start and the gateway 11.1 s" in (
        found.cold_starts["primary"]["message"])
    assert "canary" not in found.cold_starts
    share[0] = 0.0  # the window emptied: that is news too
    assert asyncio.run(reporter.tick()) is True and len(state.requests) == 2


def test_a_refused_write_is_tried_again(api: tuple[Api, str]) -> None:
    state, url = api
    _, settings = rendered()
    cold = ColdStarts()
    cold.record("primary", 5.0)
    reporter = GatewayReporter(settings, cold, lambda: 0.0, env={"DEEPSEEK_KUBE_API": url})
    state.status = 403
    assert asyncio.run(reporter.tick()) is False
    state.status = 200
    assert asyncio.run(reporter.tick()) is True and reporter.writes == 1


@pytest.mark.parametrize("interval", [0.1, 3600.0], ids=["by the loop", "at shutdown"])
def test_a_held_request_through_the_gateway_is_reported(api: tuple[Api, str], monkeypatch: pytest.MonkeyPatch,
                                                        interval: float) -> None:
    """The whole path: a request held for a variant at zero, its backend appears, the cold start is
    written once: by the reporter loop (interval 0.1 s), or, with an hour's interval, by the last
    report as the gateway shuts down."""
    state, url = api
    monkeypatch.setenv("DEEPSEEK_KUBE_API", url)
    monkeypatch.setattr("deepseek_worker.gateway.report.INTERVAL_SECONDS", interval)
    port = free_port()
    config = {"variants": [{"name": "v", "weight": 100, "backends": [f"http://127.0.0.1:{port}"]}],
              "hold": {"deadlineSeconds": 30}}
    with ExitStack() as stack:
        gw, _app = stack.enter_context(gateway(config, report_configmap="chat-gateway-report",
                                               report_namespace="llm"))
        out: list[httpx.Response] = []
        thread = threading.Thread(target=lambda: out.append(httpx.post(
            gw + "/v1/chat/completions", content=chat(), headers=AUTH, timeout=30)), daemon=True)
        thread.start()
        wait_until(lambda: httpx.get(gw + "/scaling/v", timeout=5).json()["held"] == 1, 10, "the request held")
        time.sleep(0.3)  # the pod's start: the cold start is at least this
        stack.enter_context(serve(StubBackend("late"), port))
        thread.join(30)
        assert out and out[0].status_code == 200
        if interval < 1:
            wait_until(lambda: len(state.requests) >= 1, 10, "the gateway's report")
        else:
            assert state.requests == []  # the loop has not ticked yet
    found = read_gateway_report({"data": state.requests[0]["body"]["data"]}, ["v"])
    assert found is not None and float(found.cold_starts["v"]["lastSeconds"]) >= 0.3
    assert len(state.requests) == 1  # one cold start, one write (the last report has nothing new)


@pytest.fixture(scope="module")
def namespace(real_cluster: RealCluster) -> Iterator[str]:
    with real_cluster.scratch_namespace("gateway-report") as name:
        yield name


def test_the_rendered_role_lets_the_gateway_write_its_report_and_nothing_else(
        real_cluster: RealCluster, namespace: str, tmp_path: Path) -> None:
    children, settings = rendered(namespace)
    plurals = {"ServiceAccount": "serviceaccounts", "Role": "roles.rbac.authorization.k8s.io",
               "RoleBinding": "rolebindings.rbac.authorization.k8s.io", "ConfigMap": "configmaps"}
    for child in children:
        if child["kind"] in plurals:  # without the owner reference: no DeepSeekDeployment owns them here
            body = {**child, "metadata": {k: v for k, v in child["metadata"].items() if k != "ownerReferences"}}
            created = real_cluster.http.post(real_cluster.resource(plurals[child["kind"]]).path(namespace), json=body)
            assert created.status_code == 201, created.text
    account = next(c for c in children if c["kind"] == "ServiceAccount")["metadata"]["name"]
    issued = real_cluster.http.post(f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
                                    json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                          "spec": {"expirationSeconds": 600}})
    assert issued.status_code == 201, issued.text
    token = tmp_path / "token"
    token.write_text(issued.json()["status"]["token"])
    env = {"DEEPSEEK_KUBE_API": str(real_cluster.http.base_url), "DEEPSEEK_KUBE_TOKEN_FILE": str(token),
           "DEEPSEEK_KUBE_CA_FILE": str(real_cluster.directory / "pki" / "apiserver.crt"), "HOSTNAME": "gw-0"}
    cold = ColdStarts()
    cold.record("primary", 61.0)
    reporter = GatewayReporter(settings, cold, lambda: 0.25, env=env)
    assert asyncio.run(reporter.tick()) is True
    live = real_cluster.get("configmaps", namespace, report_configmap(Owner("chat", namespace, "uid-1")))
    found = read_gateway_report(live, ["primary"])
    assert found is not None and found.gateway["fallbackShare"] == "0.25"
    assert found.cold_starts["primary"]["lastSeconds"] == "61.0"
    # The same token may not write the gateway's own document, nor read its report.
    as_gateway = httpx.Client(base_url=str(real_cluster.http.base_url), headers={
        "Authorization": f"Bearer {token.read_text()}"}, verify=env["DEEPSEEK_KUBE_CA_FILE"], timeout=10)
    with as_gateway:
        other = as_gateway.patch(real_cluster.resource("configmaps").path(namespace, "chat-gateway"), content=b"{}",
                                 headers={"Content-Type": "application/merge-patch+json"})
        assert other.status_code == 403
        assert as_gateway.get(real_cluster.resource("configmaps").path(
            namespace, "chat-gateway-report")).status_code == 403


def test_the_gateway_exports_every_metric_its_alerts_and_docs_name() -> None:
    """GATEWAY_METRICS (render/gateway_monitoring.py) against a live gateway's /metrics: each name has
    its TYPE line, counters included before their first increment."""
    from deepseek_operator.render.gateway_monitoring import GATEWAY_METRICS

    config = {"variants": [{"name": "v", "weight": 100, "backends": ["http://127.0.0.1:1"]}]}
    with gateway(config) as (url, _app):
        text = httpx.get(url + "/metrics", headers=AUTH, timeout=5).text
    typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert typed >= GATEWAY_METRICS, GATEWAY_METRICS - typed


def test_no_report_loop_outside_a_cluster_or_without_a_configmap() -> None:
    _, settings = rendered()
    assert GatewayReporter(settings, ColdStarts(), lambda: 0.0, env={"KUBERNETES_SERVICE_HOST": "10.0.0.1"}).enabled
    assert not GatewayReporter(settings, ColdStarts(), lambda: 0.0, env={}).enabled  # e.g. a gateway on a laptop
    assert not GatewayReporter(Settings(), ColdStarts(), lambda: 0.0, env={"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
                               ).enabled
