"""Gateway forwarding (gateway/): weights, ready gating, least-loaded choice, retry before the first
byte, byte-exact relay, the edge (auth), /scaling and the metrics. Stub backends and the gateway run
under uvicorn on loopback (gateway_fakes.py); every wait has a deadline."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstream import CHUNKS, answer_lifespan
from fakes import wait_until
from gateway_fakes import AUTH, StubBackend, chat, dead_port, fast, gateway, reply, serve

from deepseek_worker.gateway.choose import choose_variant
from deepseek_worker.gateway.config import GatewayConfig, Variant
from deepseek_worker.gateway.discovery import metrics_url


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def stub(stack: ExitStack, name: str) -> tuple[StubBackend, str]:
    backend = StubBackend(name)
    stack.callback(backend.release.set)  # never leave a stream waiting when a test fails
    return backend, stack.enter_context(serve(backend))


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {"content-type": "application/json", **(AUTH if headers is None else headers)}
    return httpx.post(url + "/v1/chat/completions", content=body, headers=sent, timeout=30)


def served(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["served"])


def test_weights_draw_by_a_seeded_rng_statistically() -> None:
    variants = [Variant(name="a", weight=70, backends=["http://a:1"]), Variant(name="b", weight=30,
                backends=["http://b:1"])]
    rng = random.Random(3)
    draws = Counter(choose_variant(variants, lambda _: True, rng).served.name for _ in range(20000))
    assert abs(draws["a"] / 20000 - 0.7) < 0.015  # 5 sigma is 0.016

    def sequence(seed: int) -> list[str]:
        seeded = random.Random(seed)
        return [choose_variant(variants, lambda _: True, seeded).served.name for _ in range(50)]

    assert sequence(3) == sequence(3) != sequence(4)  # seedable: the same seed, the same draws
    # Only variants with a ready backend serve; none ready: every weighted one (the request is held).
    assert {choose_variant(variants, lambda n: n == "b", rng).served.name for _ in range(200)} == {"b"}
    assert {choose_variant(variants, lambda _: False, rng).served.name for _ in range(200)} == {"a", "b"}


def test_a_variant_without_a_ready_backend_is_drawn_by_weight_and_passed_over() -> None:
    """The first draw is over every weighted variant, so a canary at zero behind a ready primary is
    still drawn (and woken: hold.py's `wanted`); the ready one serves it, and the served shares stay
    the weights renormalised over the ready variants."""
    variants = [Variant(name="primary", weight=60, backends=["http://p:1"]),
                Variant(name="canary", weight=30, backends=["http://c:1"]),
                Variant(name="blue", weight=10, backends=["http://b:1"]),
                Variant(name="off", weight=0, backends=["http://o:1"])]
    rng = random.Random(5)
    draws = [choose_variant(variants, lambda n: n != "canary", rng) for _ in range(20000)]
    passed = [d for d in draws if d.passed_over]
    assert {d.drawn.name for d in passed} == {"canary"} and {d.served.name for d in passed} <= {"primary", "blue"}
    assert abs(len(passed) / 20000 - 0.3) < 0.017  # the canary's weight share (5 sigma 0.016)
    served = Counter(d.served.name for d in draws)
    assert set(served) == {"primary", "blue"}
    assert abs(served["primary"] / 20000 - 60 / 70) < 0.013  # renormalised over the ready ones
    assert all(not d.passed_over for d in (choose_variant(variants, lambda _: True, rng) for _ in range(500)))
    assert all(not d.passed_over for d in (choose_variant(variants, lambda _: False, rng) for _ in range(500)))


def test_weights_respected_through_the_gateway_and_ready_gated(stack: ExitStack) -> None:
    _a, a_url = stub(stack, "a")
    b, b_url = stub(stack, "b")
    config = {"variants": [{"name": "a", "weight": 75, "backends": [a_url]},
                           {"name": "b", "weight": 25, "backends": [b_url]}]}
    url, app = stack.enter_context(gateway(config))
    with httpx.Client(timeout=30) as client:
        counts = Counter(served(client.post(url + "/v1/chat/completions", content=chat(), headers=AUTH))
                         for _ in range(400))
    assert abs(counts["a"] / 400 - 0.75) < 0.11, counts  # 5 sigma of a binomial(400, 0.75)
    b.health = 503
    wait_until(lambda: not app.state.router.pools["b"].has_ready, 10, "b not ready")
    assert {served(post(url, chat())) for _ in range(30)} == {"a"}


def test_least_loaded_backend_by_inflight_then_by_polled_queue(stack: ExitStack) -> None:
    one, one_url = stub(stack, "one")
    two, two_url = stub(stack, "two")
    url, app = stack.enter_context(gateway({"variants": [{"name": "v", "weight": 100,
                                                          "backends": [one_url, two_url]}]}))
    first: list[bytes] = []
    started = threading.Event()

    def waiting_stream() -> None:
        with httpx.stream("POST", url + "/v1/chat/completions", content=chat("wait", stream=True), headers=AUTH,
                          timeout=30) as response:
            for piece in response.iter_raw():
                first.append(piece)
                started.set()

    reader = threading.Thread(target=waiting_stream, daemon=True)
    reader.start()
    assert started.wait(30)
    busy = "one" if one.requests else "two"
    idle = "two" if busy == "one" else "one"
    assert {served(post(url, chat())) for _ in range(10)} == {idle}  # in-flight 1 vs 0
    one.release.set()
    two.release.set()
    reader.join(30)
    assert b"".join(first) == b"".join(CHUNKS)
    # The polled queue gauge refines the choice: "one" reports 5 waiting requests.
    one.queue = 5
    wait_until(lambda: app.state.router.pools["v"].backends[one_url].queue == 5, 10, "queue polled")
    assert {served(post(url, chat())) for _ in range(10)} == {"two"}


# fast()'s periods, repeated: a document's own "discovery" replaces fast()'s whole object.
FAST_DISCOVERY = {"probeSeconds": 0.1, "heldProbeSeconds": 0.05, "resolveSeconds": 0.1}


class MetricsStub:
    """A metrics-only listener (a worker's DEEPSEEK_METRICS_PORT) shared by backends that differ by host
    name: /metrics answers `texts[host]`, 503 for a host it has none for; `hosts` records each read."""

    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = texts
        self.hosts: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode().rsplit(":", 1)[0]
        self.hosts.append(host)
        text = self.texts.get(host) if scope["path"] == "/metrics" else None
        body = (text or "").encode()
        await send({"type": "http.response.start", "status": 200 if text is not None else 503,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def test_the_queue_gauge_is_read_on_the_metrics_port_under_the_variants_own_name(stack: ExitStack) -> None:
    """Issue 22: with discovery.metricsPort the gauge comes from each backend's host on that port (the
    rendered workers serve /metrics there alone), summed over its samples, under the variant's own
    queueMetric (a vLLM variant) rather than the document's; least-loaded then avoids the busy one."""
    one, one_url = stub(stack, "one")
    two, two_url = stub(stack, "two")
    two_url = two_url.replace("127.0.0.1", "localhost")  # another host name: its own text on the shared stub
    one.queue = two.queue = 0  # the API port's /metrics: not where the document says the gauge is
    waiting = "# TYPE vllm:num_requests_waiting gauge\n"
    gauges = MetricsStub({
        "127.0.0.1": waiting + 'vllm:num_requests_waiting{engine="0"} 3\nvllm:num_requests_waiting{engine="1"} 2\n',
        "localhost": waiting + "vllm:num_requests_waiting 0\ndeepseek_worker_queue_depth 9\n"})
    port = httpx.URL(stack.enter_context(serve(gauges))).port
    config = {"variants": [{"name": "v", "weight": 100, "backends": [one_url, two_url],
                            "queueMetric": "vllm:num_requests_waiting"}],
              "discovery": {**FAST_DISCOVERY, "metricsPort": port}}  # queueMetric: the builtin worker's
    url, app = stack.enter_context(gateway(config))
    pool = app.state.router.pools["v"]
    wait_until(lambda: pool.backends[one_url].queue == 5, 10, "one's gauge read on the metrics port")
    assert pool.backends[two_url].queue == 0  # read in the same round: its vLLM gauge, not the document's 9
    assert {"127.0.0.1", "localhost"} <= set(gauges.hosts)
    assert {served(post(url, chat())) for _ in range(10)} == {"two"}
    assert not one.requests


@pytest.mark.parametrize(("backend", "port", "url"), [
    ("http://10.0.0.7:8000", 9090, "http://10.0.0.7:9090/metrics"),
    ("http://[fd00::7]:8000", 9090, "http://[fd00::7]:9090/metrics"),  # a pod's IPv6 address, as resolved
    ("https://w.example:8443/prefix", 9090, "http://w.example:9090/metrics"),  # the listener serves no TLS
    ("https://w.example:8443/prefix", None, "https://w.example:8443/prefix/metrics"),  # under the root
])
def test_where_the_queue_gauge_is_read(backend: str, port: int | None, url: str) -> None:
    assert metrics_url(backend, port) == url


@pytest.mark.parametrize("listener", ["refused", "answers 503"])
def test_an_unreadable_queue_gauge_costs_no_readiness(stack: ExitStack, listener: str) -> None:
    """Issue 22: readiness is /health/ready's alone. A metrics port that refuses (nothing listens, or a
    NetworkPolicy rejects) or answers an error counts as a queue of 0, round after round, and the
    backend keeps serving; a gauge read that failed used to take the backend out of rotation."""
    a, a_url = stub(stack, "a")
    a.queue = 7  # on the API port: never read once the document names the metrics port
    gauges = MetricsStub({})
    port = (stack.enter_context(dead_port()) if listener == "refused"
            else httpx.URL(stack.enter_context(serve(gauges))).port)
    url, app = stack.enter_context(gateway({"variants": [{"name": "a", "weight": 100, "backends": [a_url]}],
                                            "discovery": {**FAST_DISCOVERY, "metricsPort": port}}))
    backend = app.state.router.pools["a"].backends[a_url]
    if listener == "answers 503":
        wait_until(lambda: len(gauges.hosts) >= 3, 10, "three rounds of gauge reads")
    assert backend.ready and backend.queue == 0
    assert {served(post(url, chat())) for _ in range(5)} == {"a"}


def test_byte_exact_json_and_stream_with_served_by(stack: ExitStack) -> None:
    _, a_url = stub(stack, "a")
    url, _ = stack.enter_context(gateway({"variants": [{"name": "a", "weight": 100, "backends": [a_url]}]}))
    response = post(url, chat())
    assert response.content == reply("a")
    assert response.headers["x-served-by"] == "a"
    with httpx.stream("POST", url + "/chat/completions", content=chat("stream", stream=True), headers=AUTH,
                      timeout=30) as streamed:
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert streamed.headers["x-served-by"] == "a"
        assert b"".join(streamed.iter_raw()) == b"".join(CHUNKS)
    assert post(url, chat(), headers={}).status_code == 401  # our auth at the edge


def test_failed_backend_is_retried_on_another_before_any_byte(stack: ExitStack) -> None:
    _live, live_url = stub(stack, "live")
    draining, draining_url = stub(stack, "draining")
    dead_url = f"http://127.0.0.1:{stack.enter_context(dead_port())}"  # nothing listens: connection refused
    url, app = stack.enter_context(gateway({"variants": [{"name": "v", "weight": 100,
                                                          "backends": [dead_url, draining_url, live_url]}]}))
    pool = app.state.router.pools["v"]
    wait_until(lambda: len(pool.ready_backends()) == 2, 10, "two ready backends")
    pool.set_ready(pool.backends[dead_url], True)  # as if it had just died after its last probe
    draining.status = 503  # a pod that is shutting down answers 503
    results = [post(url, chat()) for _ in range(6)]
    assert [served(r) for r in results] == ["live"] * 6
    assert draining.requests  # it was tried, then left
    metrics = httpx.get(url + "/metrics", headers=AUTH).text
    assert 'deepseek_gateway_backend_retries_total{variant="v"}' in metrics
    assert 'deepseek_gateway_requests_served_total{served_by="v"} 6.0' in metrics


def test_scaling_endpoint_and_gauges(stack: ExitStack) -> None:
    _, a_url = stub(stack, "a")
    url, _ = stack.enter_context(gateway({"variants": [{"name": "a", "weight": 100, "backends": [a_url]}]}))
    assert httpx.get(url + "/scaling/a").json() == {"held": 0, "wanted": 0, "inflight": 0, "queue": 0.0,
                                                    "demand": 0, "readyBackends": 1}
    assert httpx.get(url + "/scaling/nope").status_code == 404
    metrics = httpx.get(url + "/metrics", headers=AUTH).text
    for name in ('deepseek_gateway_held_requests{variant="a"} 0.0', 'deepseek_gateway_ready_backends{variant="a"} 1.0',
                 "deepseek_gateway_fallback_share 0.0"):
        assert name in metrics


def test_config_refuses_bad_documents() -> None:
    with pytest.raises(ValueError, match="unique"):
        GatewayConfig.model_validate({"variants": [{"name": "a", "weight": 1, "backends": ["http://x"]}] * 2})
    with pytest.raises(ValueError, match="backends, a service"):
        GatewayConfig.model_validate({"variants": [{"name": "a", "weight": 1}]})
    with pytest.raises(ValueError, match="without /v1"):
        GatewayConfig.model_validate({"variants": [{"name": "a", "weight": 1, "backends": ["http://x/v1"]}]})


def test_a_changed_configuration_file_is_applied_and_a_bad_one_ignored(stack: ExitStack, tmp_path: Path) -> None:
    _, a_url = stub(stack, "a")
    _, b_url = stub(stack, "b")
    path = tmp_path / "gateway.json"

    def document(a: int, b: int) -> dict[str, Any]:
        return fast({"variants": [{"name": "a", "weight": a, "backends": [a_url]},
                                  {"name": "b", "weight": b, "backends": [b_url]}]})

    url, app = stack.enter_context(gateway(document(100, 0), config_path=path))
    reloader = app.state.reloader
    reloader.poll_seconds = 0.1  # the loop reads it each round
    assert {served(post(url, chat())) for _ in range(10)} == {"a"}
    path.write_text(json.dumps(document(0, 100)) + " ")  # the canary takes all the traffic
    wait_until(lambda: reloader.applied == 1, 10, "the new weights applied")
    assert {served(post(url, chat())) for _ in range(10)} == {"b"}
    path.write_text('{"variants": []}')
    time.sleep(0.5)
    assert reloader.applied == 1  # refused: the last good document stays
    assert {served(post(url, chat())) for _ in range(10)} == {"b"}
    _, c_url = stub(stack, "c")
    path.write_text(json.dumps(fast({"variants": [{"name": "c", "weight": 100, "backends": [c_url]}]})))
    wait_until(lambda: reloader.applied == 2, 10, "a new variant applied")
    assert sorted(app.state.router.pools) == ["c"]
    assert {served(post(url, chat())) for _ in range(5)} == {"c"}
    assert httpx.get(url + "/scaling/a").status_code == 404
