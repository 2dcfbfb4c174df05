"""Scale-from-zero hold (gateway/hold.py, forward.py): a request for a variant without a ready backend
waits, held streams get `: waiting: <phase>` comments, a backend that appears answers it (found by
a fixed address or by DNS), a full hold queue is a 429 with Retry-After, a passed deadline a 504."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import CHUNKS
from fakes import free_port, wait_until
from gateway_fakes import AUTH, StubBackend, chat, dead_port, gateway, reply, serve

from deepseek_worker.gateway.backends import Pool
from deepseek_worker.gateway.hold import WANT_WINDOW_SECONDS, Hold, HoldFull
from deepseek_worker.gateway.status import FixedStatus, KubeStatusSource, describe_variant


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def cold(port: int, **hold: Any) -> dict[str, Any]:
    """One variant whose only backend (127.0.0.1:port) is not up yet."""
    return {"variants": [{"name": "v", "weight": 100, "backends": [f"http://127.0.0.1:{port}"]}],
            "hold": {"deadlineSeconds": 30, "commentSeconds": 0.2, **hold}}


def in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def scaling(url: str) -> dict[str, Any]:
    return dict(httpx.get(url + "/scaling/v", timeout=5).json())


def test_held_request_is_answered_when_a_backend_appears(stack: ExitStack) -> None:
    port = free_port()
    url, _app = stack.enter_context(gateway(cold(port)))
    thread, out = in_thread(lambda: httpx.post(url + "/v1/chat/completions", content=chat(), headers=AUTH,
                                               timeout=30))
    wait_until(lambda: scaling(url)["held"] == 1, 10, "the request held")
    assert 'deepseek_gateway_held_requests{variant="v"} 1.0' in httpx.get(url + "/metrics", headers=AUTH).text
    backend = StubBackend("late")
    stack.enter_context(serve(backend, port))  # the pod becomes ready
    thread.join(30)
    assert not thread.is_alive() and out[0].status_code == 200
    assert out[0].content == reply("late") and out[0].headers["x-served-by"] == "v"
    assert scaling(url)["held"] == 0
    metrics = httpx.get(url + "/metrics", headers=AUTH).text
    assert 'deepseek_gateway_cold_start_seconds_count{variant="v"} 1.0' in metrics


def test_backend_found_by_dns_while_held(stack: ExitStack) -> None:
    backend = StubBackend("dns")
    port = free_port()
    stack.enter_context(serve(backend, port))
    addresses: list[str] = []

    async def resolve(host: str, service_port: int) -> list[str]:
        assert (host, service_port) == ("v-pods.ns.svc.cluster.local", port)
        return list(addresses)

    config = {"variants": [{"name": "v", "weight": 100,
                            "service": {"host": "v-pods.ns.svc.cluster.local", "port": port}}]}
    url, _ = stack.enter_context(gateway(config, resolve=resolve))
    thread, out = in_thread(lambda: httpx.post(url + "/v1/chat/completions", content=chat(), headers=AUTH,
                                               timeout=30))
    wait_until(lambda: scaling(url)["held"] == 1, 10, "the request held")
    addresses.append("127.0.0.1")  # the Service now lists the pod
    thread.join(30)
    assert out and out[0].content == reply("dns")


def test_held_stream_gets_waiting_comments_then_the_exact_stream(stack: ExitStack) -> None:
    port = free_port()
    status = FixedStatus({"v": "scheduling"})
    url, _ = stack.enter_context(gateway(cold(port), status=status))
    received: list[bytes] = []
    seen = threading.Event()

    def read() -> None:
        with httpx.stream("POST", url + "/v1/chat/completions", content=chat("stream", stream=True), headers=AUTH,
                          timeout=30) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for piece in response.iter_raw():
                received.append(piece)
                seen.set()

    thread, _ = in_thread(read)
    wait_until(lambda: b": waiting: scheduling\n\n" in b"".join(received), 10, "scheduling comment")
    status.phases["v"] = "downloading 42%"
    wait_until(lambda: b": waiting: downloading 42%\n\n" in b"".join(received), 10, "download comment")
    status.phases["v"] = "loading"
    wait_until(lambda: b": waiting: loading\n\n" in b"".join(received), 10, "loading comment")
    stack.enter_context(serve(StubBackend("late"), port))
    thread.join(30)
    body = b"".join(received)
    comments, _, rest = body.rpartition(b": waiting: loading\n\n")
    while rest.startswith(b": waiting"):  # repeated comments before the backend answered
        rest = rest.split(b"\n\n", 1)[1]
    assert rest == b"".join(CHUNKS)
    assert all(line.startswith(b": waiting") for line in comments.split(b"\n\n") if line)


def test_full_hold_queue_is_429_with_retry_after_from_the_load_time(stack: ExitStack) -> None:
    port = stack.enter_context(dead_port())
    url, _ = stack.enter_context(gateway(cold(port, maxQueue=1, loadSeconds=37, deadlineSeconds=3)))
    thread, out = in_thread(lambda: httpx.post(url + "/v1/chat/completions", content=chat(), headers=AUTH,
                                               timeout=30))
    wait_until(lambda: scaling(url)["held"] == 1, 10, "the first request held")
    refused = httpx.post(url + "/v1/chat/completions", content=chat(), headers=AUTH, timeout=30)
    assert refused.status_code == 429
    assert 30 <= int(refused.headers["retry-after"]) <= 37
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert "hold queue is full" in refused.json()["error"]["message"]
    assert 'deepseek_gateway_hold_refused_total{variant="v"} 1.0' in httpx.get(url + "/metrics",
                                                                             headers=AUTH).text
    thread.join(30)
    assert out[0].status_code == 504  # the held one: its deadline passed


def test_deadline_expiry_is_a_clear_504_json_and_a_stream_error_event(stack: ExitStack) -> None:
    url, _ = stack.enter_context(gateway(cold(stack.enter_context(dead_port()), deadlineSeconds=0.5)))
    expired = httpx.post(url + "/v1/chat/completions", content=chat(), headers=AUTH, timeout=30)
    assert expired.status_code == 504
    error = expired.json()["error"]
    assert error["type"] == "timeout_error" and "became ready within 0.5 s" in error["message"]
    streamed = httpx.post(url + "/v1/chat/completions", content=chat("stream", stream=True), headers=AUTH,
                          timeout=30)
    assert streamed.status_code == 200  # the SSE head went out with the first comment
    assert streamed.content.startswith(b": waiting\n\n")
    assert b'"type":"timeout_error"' in streamed.content and streamed.content.endswith(b"data: [DONE]\n\n")
    assert 'deepseek_gateway_hold_expired_total{variant="v"} 2.0' in httpx.get(url + "/metrics",
                                                                             headers=AUTH).text


def test_status_of_a_deepseekdeployment_names_the_phase() -> None:
    status = {"variants": [
        {"name": "a", "replicas": 0, "readyReplicas": 0},
        {"name": "b", "replicas": 1, "download": {"phase": "Running", "percent": 42}},
        {"name": "c", "replicas": 1, "readyReplicas": 0, "download": {"phase": "Complete", "percent": 100}}]}
    assert [describe_variant(status, n) for n in "abcd"] == ["scheduling", "downloading 42%", "loading", None]


def test_kube_status_source_reads_the_deployment_with_the_service_account(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token-1\n")
    seen: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = {"variants": [{"name": "primary", "replicas": 1, "download": {"phase": "Running", "percent": 42}}]}
        return httpx.Response(200, json={"kind": "DeepSeekDeployment", "status": status})

    async def run() -> tuple[str | None, str | None]:
        source = KubeStatusSource("chat", "ns1", api="https://api.test", account=tmp_path,
                                  transport=httpx.MockTransport(api))
        try:
            return await source.describe("primary"), await source.describe("other")
        finally:
            await source.close()

    assert asyncio.run(run()) == ("downloading 42%", None)
    assert seen[0].url == "https://api.test/apis/deepseek.ai/v1alpha1/namespaces/ns1/deepseekdeployments/chat"
    assert seen[0].headers["authorization"] == "Bearer sa-token-1"


def test_hold_times_a_cold_start_from_its_own_first_request() -> None:
    now = [100.0]
    hold = Hold(max_queue=2, load_seconds=50, clock=lambda: now[0])
    hold.enter()
    now[0] = 110.0
    assert hold.retry_after() == 40  # the declared load time, less what has passed
    assert hold.first_byte() == 10.0 and hold.first_byte() is None
    hold.leave()
    assert hold.retry_after() == 10  # the measured one now
    hold.enter()
    hold.enter()
    with pytest.raises(HoldFull) as full:
        hold.enter()
    assert full.value.retry_after == 10
    hold.leave()
    hold.leave()
    hold.warm()  # served without holding: the stale clock is dropped
    now[0] = 500.0
    hold.enter()
    assert hold.cold_since == 500.0


def test_a_held_client_that_leaves_frees_its_place(stack: ExitStack) -> None:
    url, _ = stack.enter_context(gateway(cold(stack.enter_context(dead_port()), maxQueue=1)))
    with httpx.stream("POST", url + "/v1/chat/completions", content=chat("stream", stream=True), headers=AUTH,
                      timeout=30) as response:
        chunks = response.iter_raw()  # kept: a dropped iterator closes the connection at once
        assert next(chunks).startswith(b": waiting")
        assert scaling(url)["held"] == 1
    wait_until(lambda: scaling(url)["held"] == 0, 10, "the place freed after the client left")


def test_a_wait_cancelled_as_readiness_changes_is_cancelled() -> None:
    """The client left (cancel) just as the pool changed: the held request must end, not go on
    (asyncio.wait_for on 3.11 swallows such a cancellation)."""

    async def run() -> bool:
        pool = Pool("v", 1.0, random.Random(0))
        waiter = asyncio.create_task(pool.wait_changed(10))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        pool.notify()
        waiter.cancel()
        try:
            await waiter
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(run())


def test_wanted_counts_held_and_passed_over_requests_for_a_minute() -> None:
    now = [100.0]
    hold = Hold(max_queue=2, load_seconds=30, clock=lambda: now[0])
    assert hold.wanted() == 0
    hold.pass_over()
    now[0] += 30
    hold.pass_over()
    hold.enter()
    assert (hold.held, hold.wanted()) == (1, 3)
    now[0] += WANT_WINDOW_SECONDS - 29  # the first pass-over is older than the window
    assert hold.wanted() == 2
    hold.leave()
    now[0] += 30
    assert hold.wanted() == 0
    assert hold.cold_since == 100.0 + 30  # a pass-over starts no cold-start clock; the held request did


def test_a_canary_at_zero_behind_a_ready_primary_is_wanted_and_then_served(stack: ExitStack) -> None:
    """Requests drawn for the canary go to the primary while the canary has no ready pod, and mark it
    wanted (what its ScaledObject's trigger reads); once a canary pod is ready it gets its share."""
    primary = StubBackend("primary")
    primary_url = stack.enter_context(serve(primary))
    port = free_port()
    config = {"variants": [{"name": "primary", "weight": 50, "backends": [primary_url]},
                           {"name": "canary", "weight": 50, "backends": [f"http://127.0.0.1:{port}"]}]}
    url, app = stack.enter_context(gateway(config))
    with httpx.Client(timeout=30) as client:
        served = [client.post(url + "/v1/chat/completions", content=chat(), headers=AUTH) for _ in range(40)]
        assert {r.headers["x-served-by"] for r in served} == {"primary"}  # no wait, no 5xx
        canary = client.get(url + "/scaling/canary").json()
        assert canary["held"] == 0 and canary["wanted"] >= 5, canary  # ~20 of 40 (binomial, 5 sigma)
        assert client.get(url + "/scaling/primary").json()["wanted"] == 0
        metrics = client.get(url + "/metrics", headers=AUTH).text
        assert f'deepseek_gateway_passed_over_total{{variant="canary"}} {float(canary["wanted"])}' in metrics
        stack.enter_context(serve(StubBackend("canary"), port))  # KEDA woke it: its pod is ready
        pool = app.state.router.pools["canary"]
        wait_until(lambda: pool.has_ready, 10, "the canary's pod found ready")
        later = {client.post(url + "/v1/chat/completions", content=chat(), headers=AUTH).headers["x-served-by"]
                 for _ in range(40)}
    assert later == {"primary", "canary"}
