"""gateway/report.py: the gateway's cold starts and fallback share reach its report ConfigMap as the
operator reads them (measured.read_gateway_report), each replica under its own key with the counts
its share is of, on change only and never more often than the interval, through the Role the
operator renders (on the real kube-apiserver: that ConfigMap only)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
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
from deepseek_worker.gateway.fallback import ShareWindow
from deepseek_worker.gateway.report import KEEP, REFRESH_SECONDS, ColdStarts, GatewayReporter, report_key
from deepseek_worker.settings import Settings


class Api:
    """A stand-in API server: records each PATCH's path and body, answers `status`."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200

    def data(self) -> dict[str, str]:
        """The ConfigMap's data after every PATCH so far (merge patches of data keys)."""
        merged: dict[str, str] = {}
        for request in self.requests:
            merged.update(request["body"]["data"])
        return merged


def now() -> datetime:
    return datetime.now(UTC)


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
    cold, counts = ColdStarts(), [(0, 0)]
    reporter = GatewayReporter(settings, cold, lambda: counts[0], env={"DEEPSEEK_KUBE_API": url, "HOSTNAME": "gw-1"})
    assert asyncio.run(reporter.tick()) is False and state.requests == []  # idle: nothing to say, no request
    cold.record("primary", 52.37)
    counts[0] = (123, 1000)
    assert asyncio.run(reporter.tick()) is True
    assert asyncio.run(reporter.tick()) is False  # unchanged: no second write
    [request] = state.requests
    assert request["path"] == "/api/v1/namespaces/llm/configmaps/chat-gateway-report"
    assert list(request["body"]["data"]) == ["gateway.gw-1"]  # the replica's own key
    found = read_gateway_report({"data": request["body"]["data"]}, ["primary", "canary"], {"primary": "41.3"},
                                now=now())
    assert found is not None
    assert found.gateway["fallbackShare"] == "0.12" and found.gateway["pod"] == "gw-1"
    assert found.cold_starts["primary"]["lastSeconds"] == "52.4" and found.cold_starts["primary"]["count"] == 1
    assert "the model's load 41.3 s, scheduling, pod start and the gateway 11.1 s" in (
        found.cold_starts["primary"]["message"])
    assert "canary" not in found.cold_starts
    counts[0] = (0, 0)  # the window emptied: that is news too
    assert asyncio.run(reporter.tick()) is True and len(state.requests) == 2


def test_the_key_is_the_pods_own_in_configmap_key_characters() -> None:
    assert report_key("chat-gateway-6f7d9-x1b2c") == "gateway.chat-gateway-6f7d9-x1b2c"
    assert report_key("a host/with:odd chars") == "gateway.a_host_with_odd_chars"
    assert report_key("") == "gateway.unknown"
    long = report_key("p" * 300)
    assert len(long) == 253 and long.startswith("gateway.p")


def test_two_replicas_write_their_own_keys_and_the_share_is_weighted_by_requests(api: tuple[Api, str]) -> None:
    """Before per-pod keys, the second write replaced the first: the status showed one pod's share. Now
    both entries stay and the operator weighs them: 5 out of 10 and 0 of 90 are 5 of 100 together."""
    state, url = api
    _, settings = rendered()
    clock = [1000.0]
    windows = {pod: ShareWindow(60, clock=lambda: clock[0]) for pod in ("gw-a", "gw-b")}
    for outside in [True] * 5 + [False] * 5:
        windows["gw-a"].record(outside)
    for _ in range(90):
        windows["gw-b"].record(False)
    reporters = [GatewayReporter(settings, ColdStarts(), window.counts, env={"DEEPSEEK_KUBE_API": url, "HOSTNAME": pod})
                 for pod, window in windows.items()]
    assert all(asyncio.run(reporter.tick()) for reporter in reporters)  # b: share 0, but 90 requests to weigh
    data = state.data()
    assert sorted(data) == ["gateway.gw-a", "gateway.gw-b"]
    assert {k: (json.loads(v)["requests"], json.loads(v)["fallbackRequests"]) for k, v in data.items()} == {
        "gateway.gw-a": (10, 5), "gateway.gw-b": (90, 0)}
    found = read_gateway_report({"data": data}, ["primary"], now=now())
    assert found is not None
    assert found.gateway["fallbackShare"] == "0.05" and found.gateway["replicasReporting"] == 2


def test_counts_alone_wait_for_the_refresh_and_a_busy_window_stays_fresh(api: tuple[Api, str]) -> None:
    """The counts move with every request: alone they are written once per REFRESH_SECONDS, not every
    tick; a steady load (counts unchanged) is rewritten as often, so the operator never takes the
    replica for a dead one; news (a cold start) goes at the next tick; the window emptying is written
    once, and an idle gateway then writes nothing."""
    state, url = api
    _, settings = rendered()
    wall, mono = [1_780_000_000.0], [0.0]
    window, cold = ShareWindow(600, clock=lambda: mono[0]), ColdStarts(clock=lambda: wall[0])
    reporter = GatewayReporter(settings, cold, window.counts, env={"DEEPSEEK_KUBE_API": url, "HOSTNAME": "gw"},
                               clock=lambda: wall[0])

    def tick_after(seconds: float) -> bool:
        wall[0] += seconds
        mono[0] += seconds
        return asyncio.run(reporter.tick())

    def last() -> dict[str, Any]:
        return dict(json.loads(state.requests[-1]["body"]["data"]["gateway.gw"]))

    assert tick_after(0) is False  # nothing in the window: no request
    window.record(False)
    assert tick_after(15) is True and last()["requests"] == 1  # the first request: written at once
    window.record(False)
    assert tick_after(15) is False  # only the counts changed (1 -> 2 requests), the share is still 0
    assert tick_after(REFRESH_SECONDS) is True and last()["requests"] == 2
    assert tick_after(REFRESH_SECONDS) is True  # nothing changed, but requests in the window: kept fresh
    assert tick_after(15) is False
    cold.record("primary", 30.0)
    assert tick_after(15) is True and last()["coldStarts"]["primary"]["count"] == 1  # news: at once
    assert tick_after(600) is True and last()["requests"] == 0  # the window emptied: said once
    assert tick_after(5 * REFRESH_SECONDS) is False  # idle: no request any more
    assert reporter.writes == len(state.requests) == 5


def test_a_refused_write_is_tried_again(api: tuple[Api, str]) -> None:
    state, url = api
    _, settings = rendered()
    cold = ColdStarts()
    cold.record("primary", 5.0)
    reporter = GatewayReporter(settings, cold, lambda: (0, 0), env={"DEEPSEEK_KUBE_API": url})
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
    found = read_gateway_report({"data": state.requests[0]["body"]["data"]}, ["v"], now=now())
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
    reporter = GatewayReporter(settings, cold, lambda: (1, 4), env=env)
    assert asyncio.run(reporter.tick()) is True
    live = real_cluster.get("configmaps", namespace, report_configmap(Owner("chat", namespace, "uid-1")))
    found = read_gateway_report(live, ["primary"], now=now())
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
    assert GatewayReporter(settings, ColdStarts(), lambda: (0, 0), env={"KUBERNETES_SERVICE_HOST": "10.0.0.1"}).enabled
    assert not GatewayReporter(settings, ColdStarts(), lambda: (0, 0), env={}).enabled  # e.g. a gateway on a laptop
    assert not GatewayReporter(Settings(), ColdStarts(), lambda: (0, 0), env={"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
                               ).enabled
