"""Proxy mode re-exposes the engine's own /metrics on ours (issue 20 item 3): the engine listens on
loopback only, so our scrape is the only way Prometheus sees vllm:* and sglang:* series."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from fake_upstream import answer_lifespan
from fakes import free_port, serve_in_thread, wait_until
from prometheus_client import CollectorRegistry

from deepseek_worker.server.engine_metrics import EngineMetricsCollector
from deepseek_worker.server.metrics_port import start_metrics_server
from deepseek_worker.server.proxy import build_proxy_app
from deepseek_worker.settings import Settings

# What vLLM 0.32 and SGLang expose (names from vLLM's v1/metrics/loggers.py and SGLang's metrics collector).
ENGINE_TEXT = b"""# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="served"} 3.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="served"} 0.42
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="served"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="served"} 3.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="served"} 3.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="served"} 0.5
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="served"} 120.0
# HELP sglang:token_usage The token usage.
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="served"} 0.5
"""


class FakeEngine:
    """/health 200 and /metrics with ENGINE_TEXT, or `metrics_status` when set otherwise."""

    def __init__(self) -> None:
        self.metrics_status = 200

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        status, body = 200, b""
        if scope["path"] == "/metrics":
            status, body = self.metrics_status, ENGINE_TEXT if self.metrics_status == 200 else b"busy"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4")]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def engine_url() -> Iterator[str]:
    with serve_in_thread(FakeEngine()) as url:  # type: ignore[arg-type]
        yield url


@pytest.fixture
def proxied() -> Iterator[tuple[FakeEngine, str]]:
    with ExitStack() as stack:
        engine = FakeEngine()
        upstream = stack.enter_context(serve_in_thread(engine))  # type: ignore[arg-type]
        app = build_proxy_app(Settings(upstream=upstream))
        url = stack.enter_context(serve_in_thread(app))
        wait_until(lambda: app.state.upstream.ready, 30, "the proxy sees the engine healthy")
        yield engine, url


def test_our_scrape_carries_the_engines_series(proxied: tuple[FakeEngine, str]) -> None:
    _, url = proxied
    text = httpx.get(url + "/metrics", timeout=10).text
    assert 'vllm:num_requests_waiting{engine="0",model_name="served"} 3.0' in text
    assert 'vllm:kv_cache_usage_perc{engine="0",model_name="served"} 0.42' in text
    assert 'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="served"} 2.0' in text
    assert 'vllm:prompt_tokens_total{engine="0",model_name="served"} 120.0' in text
    assert 'sglang:token_usage{model_name="served"} 0.5' in text
    assert "deepseek_worker_engine_metrics_up 1.0" in text
    assert "deepseek_worker_model_loaded 1.0" in text  # ours, unchanged


def test_an_engine_without_metrics_leaves_our_scrape_whole(proxied: tuple[FakeEngine, str]) -> None:
    engine, url = proxied
    engine.metrics_status = 503
    reply = httpx.get(url + "/metrics", timeout=10)
    assert reply.status_code == 200
    assert "deepseek_worker_engine_metrics_up 0.0" in reply.text and "vllm:" not in reply.text
    assert "deepseek_worker_max_concurrent_requests" in reply.text


def test_the_metrics_port_keeps_the_engines_names_when_openmetrics_is_asked(engine_url: str) -> None:
    """Prometheus asks for OpenMetrics first; prometheus-client 0.26 would write vllm_... samples there."""
    upstream = engine_url
    registry = CollectorRegistry()
    registry.register(EngineMetricsCollector(upstream))
    port = free_port()
    server = start_metrics_server(port, "127.0.0.1", registry)
    try:
        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        reply = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Accept": accept}, timeout=10)
    finally:
        server.shutdown()
        server.server_close()
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'vllm:kv_cache_usage_perc{engine="0",model_name="served"} 0.42' in reply.text
    assert "vllm_kv_cache_usage_perc" not in reply.text
