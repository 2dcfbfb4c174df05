"""Metrics move as requests flow, carry the documented names, and pass `promtool check metrics`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import FakeEngine, make_app
from prometheus_client.parser import text_string_to_metric_families

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
DOCUMENTED = [
    "deepseek_worker_request_duration_seconds",
    "deepseek_worker_time_to_first_token_seconds",
    "deepseek_worker_inter_token_latency_seconds",
    "deepseek_worker_prompt_tokens",
    "deepseek_worker_completion_tokens",
    "deepseek_worker_requests",
    "deepseek_worker_queue_depth",
    "deepseek_worker_running_requests",
    "deepseek_worker_max_concurrent_requests",
    "deepseek_worker_prefix_cache_bytes",
    "deepseek_worker_prefix_cache_hits",
    "deepseek_worker_prefix_cache_lookups",
    "deepseek_worker_model_loaded",
    "deepseek_worker_model_weight_bytes",
    "deepseek_worker_kv_cache_bytes_per_token",
    "deepseek_worker_draining",
]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(c: httpx.AsyncClient) -> str:
    r = await c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text


@pytest.fixture
async def client() -> Any:
    app, engine = make_app(FakeEngine())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker") as c:
        c.engine = engine  # type: ignore[attr-defined]
        yield c


async def test_documented_names_present(client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", json=CHAT)
    names = {f.name for f in text_string_to_metric_families(await scrape(client))}
    missing = [n for n in DOCUMENTED if n not in names]
    assert not missing


async def test_metrics_move_with_requests(client: httpx.AsyncClient) -> None:
    before = samples(await scrape(client))
    ok = ("deepseek_worker_requests_total", (("code", "200"), ("route", "/v1/chat/completions")))
    bad = ("deepseek_worker_requests_total", (("code", "400"), ("route", "/v1/chat/completions")))
    assert ok not in before
    await client.post("/v1/chat/completions", json=CHAT)
    await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    await client.post("/v1/chat/completions", json={**CHAT, "temperature": 9})
    after = samples(await scrape(client))
    assert after[ok] == 2 and after[bad] == 1
    pieces = len(client.engine.pieces())  # type: ignore[attr-defined]
    assert after[("deepseek_worker_completion_tokens_total", ())] == 2 * pieces
    assert after[("deepseek_worker_prompt_tokens_total", ())] > 0
    assert after[("deepseek_worker_time_to_first_token_seconds_count", ())] == 2
    assert after[("deepseek_worker_inter_token_latency_seconds_count", ())] == 2 * (pieces - 1)
    duration = ("deepseek_worker_request_duration_seconds_count", (("code", "200"), ("route", "/v1/chat/completions")))
    assert after[duration] == 2
    assert after[("deepseek_worker_prefix_cache_lookups_total", ())] == 2
    assert after[("deepseek_worker_model_loaded", ())] == 1
    assert after[("deepseek_worker_draining", ())] == 0


async def test_unknown_paths_share_one_label(client: httpx.AsyncClient) -> None:
    for i in range(3):
        await client.get(f"/random/{i}")
    after = samples(await scrape(client))
    assert after[("deepseek_worker_requests_total", (("code", "404"), ("route", "other")))] == 3


@pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool not installed")
async def test_promtool_check_metrics_is_clean(client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", json=CHAT)
    await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    text = await scrape(client)
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


async def test_metrics_port_set_means_no_metrics_on_the_api_port() -> None:
    """Issue 19: with DEEPSEEK_METRICS_PORT (every pod the operator renders) /metrics lives on that
    listener alone (cli.py), which the NetworkPolicy opens to Prometheus only; the API port, which the
    ingress routes `/` to, answers 404. Without it (a local run) the API port serves it."""
    app, _ = make_app(FakeEngine(), metrics_port=9090)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker") as c:
        r = await c.get("/metrics")
        assert r.status_code == 404 and r.json()["error"]["code"] == 404
        assert (await c.get("/health/ready")).status_code == 200
        assert "/metrics" not in (await c.get("/openapi.json")).json()["paths"]
    app, _ = make_app(FakeEngine())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker") as c:
        await scrape(c)
