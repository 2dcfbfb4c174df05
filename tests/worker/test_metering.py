"""Tokens metered per API key on the real tiny-model worker: the per-key counters equal the `usage` of
every response, streams included (also a stream whose client did not ask for usage), by key id and
variant; the label set stays bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import make_app, serve_in_thread, sse_events, wait_until
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from deepseek_worker.server import build_app
from deepseek_worker.server.metering import OTHER, TokenMeter
from deepseek_worker.settings import Settings

MODEL = "deepseek-chat"
KEYS = "- {id: team-a, key: sk-team-a}\n- {id: team-b, key: sk-team-b, priority: batch}\n- {key: sk-no-id}\n"
PROMPT = "ignored, only the usage counts"
NAMES = ("deepseek_worker_key_prompt_tokens_total", "deepseek_worker_key_completion_tokens_total")


def counters(url: str, key: str = "sk-team-a") -> dict[tuple[str, str, str], float]:
    """(metric, key label, variant) -> value, for the per-key token counters."""
    text = httpx.get(url + "/metrics", headers=bearer(key), timeout=30).text
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in NAMES:
                out[(sample.name, sample.labels["key"], sample.labels["variant"])] = sample.value
    return out


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def url(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from deepseek_worker.engine import Engine

    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text(KEYS, encoding="utf-8")
    settings = Settings(model=str(tiny_model_dir), served_model_name=MODEL, max_model_len=512, max_new_tokens=24,
                        api_keys_file=keys, variant="canary")
    app = build_app(Engine(settings.engine_config()), settings)
    with serve_in_thread(app) as base:
        wait_until(lambda: httpx.get(base + "/health/ready").status_code == 200, 120, "model load")
        yield base


def _post(url: str, path: str, body: dict[str, Any], key: str) -> httpx.Response:
    r = httpx.post(url + path, json=body, headers=bearer(key), timeout=120)
    assert r.status_code == 200, r.text
    return r


def _usage(r: httpx.Response) -> tuple[int, int] | None:
    """(prompt, completion) of a JSON reply or of a stream's usage event; None when the stream has none."""
    if r.headers["content-type"].startswith("text/event-stream"):
        events = [e for e in sse_events(r.text) if isinstance(e, dict) and e.get("usage")]
        if not events:
            return None
        usage = events[-1]["usage"]
    else:
        usage = r.json()["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]


CASES = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": PROMPT}]}),
    ("/v1/completions", {"prompt": PROMPT}),
]


@pytest.mark.parametrize(("path", "request_body"), CASES)
def test_counters_equal_usage_of_replies_and_streams(url: str, path: str, request_body: dict[str, Any]) -> None:
    body = {"model": MODEL, "max_tokens": 12, "temperature": 0, **request_body}
    before = counters(url)
    seen = [0, 0]
    for r in (
        _post(url, path, body, "sk-team-a"),
        _post(url, path, {**body, "stream": True, "stream_options": {"include_usage": True}}, "sk-team-a"),
    ):
        usage = _usage(r)
        assert usage is not None and usage[1] > 0
        seen = [seen[0] + usage[0], seen[1] + usage[1]]
    after = counters(url)
    assert after[("deepseek_worker_key_prompt_tokens_total", "team-a", "canary")] - before.get(
        ("deepseek_worker_key_prompt_tokens_total", "team-a", "canary"), 0) == seen[0]
    assert after[("deepseek_worker_key_completion_tokens_total", "team-a", "canary")] - before.get(
        ("deepseek_worker_key_completion_tokens_total", "team-a", "canary"), 0) == seen[1]


def test_a_stream_without_include_usage_is_counted_all_the_same(url: str) -> None:
    """Greedy, so the same request with include_usage reports the usage the silent one had."""
    body = {"model": MODEL, "max_tokens": 10, "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": PROMPT}]}
    before = counters(url)
    silent = _post(url, "/v1/chat/completions", body, "sk-team-b")
    assert _usage(silent) is None  # the client did not ask: no usage event
    middle = counters(url)
    told = _usage(_post(url, "/v1/chat/completions", {**body, "stream_options": {"include_usage": True}},
                        "sk-team-b"))
    assert told is not None
    after = counters(url)
    prompt, completion = ("deepseek_worker_key_prompt_tokens_total", "team-b", "canary"), (
        "deepseek_worker_key_completion_tokens_total", "team-b", "canary")
    assert middle[prompt] - before.get(prompt, 0) == told[0] == after[prompt] - middle[prompt]
    assert middle[completion] - before.get(completion, 0) == told[1] == after[completion] - middle[completion]


def test_keys_without_an_id_share_one_label_and_the_key_never_appears(url: str) -> None:
    usage = _usage(_post(url, "/v1/chat/completions", {"model": MODEL, "max_tokens": 4, "messages": [
        {"role": "user", "content": PROMPT}]}, "sk-no-id"))
    assert usage is not None
    values = counters(url)
    assert values[("deepseek_worker_key_prompt_tokens_total", "unnamed", "canary")] >= usage[0]
    metrics = httpx.get(url + "/metrics", headers=bearer("sk-team-a"), timeout=30).text
    assert "sk-team-a" not in metrics and "sk-no-id" not in metrics
    for bad in range(30):  # refused keys count nothing and add no label
        assert httpx.post(url + "/v1/chat/completions", json={"model": MODEL, "messages": []},
                          headers=bearer(f"sk-unknown-{bad}"), timeout=30).status_code in (401, 429)
    labels = {key for (_, key, _) in counters(url)}
    assert labels <= {"team-a", "team-b", "unnamed"}


# -- bounded labels without a model ---------------------------------------------------------------------


def test_label_set_is_bounded_by_max_labels() -> None:
    meter = TokenMeter(CollectorRegistry(), "primary", max_labels=3)
    for i in range(50):
        meter.count(f"client:c{i}", 1, 2)
    labels = {s.labels["key"] for s in meter.prompt.collect()[0].samples if s.name.endswith("_total")}
    assert labels == {"client:c0", "client:c1", "client:c2", OTHER}
    totals = {s.labels["key"]: s.value for s in meter.completion.collect()[0].samples if s.name.endswith("_total")}
    assert totals[OTHER] == 2 * 47 and sum(totals.values()) == 2 * 50  # nothing lost, only folded


async def test_without_auth_every_caller_is_anonymous() -> None:
    app, _ = make_app()
    completion = 0
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):  # rate limits key by address; the meter does not
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app, client=(address, 1)),
                                     base_url="http://w") as c:
            r = await c.post("/v1/chat/completions", json={"model": "fake", "messages": [
                {"role": "user", "content": "hi"}]})
            assert r.status_code == 200
            completion += r.json()["usage"]["completion_tokens"]
    families = {f.name: f for f in text_string_to_metric_families(app.state.metrics.render().decode())}
    samples = [s for s in families["deepseek_worker_key_completion_tokens"].samples if s.name.endswith("_total")]
    assert [(s.labels, s.value) for s in samples] == [({"key": "anonymous", "variant": "primary"}, completion)]


def test_callers_of_each_kind_of_identity(tmp_path: Path) -> None:
    from deepseek_worker.server.auth import Authenticator, key_identity

    keys = tmp_path / "api-keys"
    keys.write_text("- {id: team-a, key: sk-a, priority: batch, quota: {tokensPerDay: 9}}\n- {key: sk-b}\n",
                    encoding="utf-8")
    auth = Authenticator(Settings(api_keys="sk-env", api_keys_file=keys))
    team_a = auth.caller(key_identity("sk-a"))
    assert (team_a.label, team_a.priority, team_a.rank) == ("team-a", "batch", 1)
    assert team_a.quota is not None and team_a.quota.tokens_per_day == 9
    assert auth.caller(key_identity("sk-b")).label == "unnamed"
    assert auth.caller(key_identity("sk-env")).label == "unnamed"  # DEEPSEEK_API_KEYS: no ids
    assert auth.caller(key_identity("rotated-away")).label == "unnamed"
    assert auth.caller("client:ci pipeline/1").label == "client:ci_pipeline_1"
    assert auth.caller("ip:10.0.0.1").label == "anonymous"
    assert auth.caller("ip:10.0.0.2").rank == 0
