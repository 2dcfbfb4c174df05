"""Per-key token metering through the gateway (server/metering.py, gateway/forward.py): each response's
usage is counted under the key and the variant that served it (`x-served-by`: a variant of the
configuration, or `fallback` for the hosted API), replies and streams alike; the key's quota is charged
whatever served it. Stub backends and the gateway run on loopback (gateway_fakes.py); waits have deadlines."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import wait_until
from gateway_fakes import StubBackend, chat, fast, gateway, serve
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from deepseek_worker.gateway.forward import FALLBACK
from deepseek_worker.server.keys import Caller
from deepseek_worker.server.metering import Metering, report_served_by, report_usage

KEYS = ("- {id: team-a, key: sk-gateway-team-a-0123456789, quota: {tokensPerDay: 10000}}\n"
        "- {id: team-b, key: sk-gateway-team-b-0123456789}\n")
TEAM_A, TEAM_B = "sk-gateway-team-a-0123456789", "sk-gateway-team-b-0123456789"
PROMPT, COMPLETION = "deepseek_worker_key_prompt_tokens_total", "deepseek_worker_key_completion_tokens_total"
HOSTED_KEY = "sk-hosted-account-key"

Meter = Counter[tuple[str, str, str]]  # (metric, key label, variant) -> tokens


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[ExitStack]:
    monkeypatch.setenv("TEST_HOSTED_KEY", HOSTED_KEY)
    with ExitStack() as stack:
        yield stack


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys"
    path.write_text(KEYS, encoding="utf-8")
    return path


def stub(stack: ExitStack, name: str) -> tuple[StubBackend, str]:
    backend = StubBackend(name)
    stack.callback(backend.release.set)  # never leave a stream waiting when a test fails
    return backend, stack.enter_context(serve(backend))


def meter(url: str) -> Meter:
    """The gateway's per-key token counters, as exported on /metrics."""
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {TEAM_B}"}, timeout=30).text
    out: Meter = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (PROMPT, COMPLETION):
                out[(sample.name, sample.labels["key"], sample.labels["variant"])] = int(sample.value)
    return out


def usage_of(body: bytes, stream: bool) -> dict[str, Any]:
    """The usage object the client received: the reply's, or the last event's that carries one."""
    if not stream:
        return dict(json.loads(body)["usage"])
    events = [json.loads(line[len(b"data: "):]) for line in body.split(b"\n")
              if line.startswith(b"data: {")]
    return next(event["usage"] for event in reversed(events) if event.get("usage"))


class Client:
    """Sends chat requests to the gateway and tallies, from the responses alone, the tokens each key
    should have metered under each `x-served-by`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.expected: Meter = Counter()
        self.headers: httpx.Headers = httpx.Headers()

    def send(self, key: str, label: str, stream: bool = False) -> str:
        """One request with `key` (metered as `label`); returns who served it."""
        body = chat("stream" if stream else "reply", stream=stream)
        with httpx.stream("POST", self.url + "/v1/chat/completions", content=body, timeout=30,
                          headers={"content-type": "application/json", "Authorization": f"Bearer {key}"}) as r:
            content = r.read()
        assert r.status_code == 200, content
        self.headers = r.headers
        usage, served_by = usage_of(content, stream), r.headers["x-served-by"]
        self.expected[(PROMPT, label, served_by)] += usage["prompt_tokens"]
        self.expected[(COMPLETION, label, served_by)] += usage["completion_tokens"]
        return served_by

    def wait_metered(self) -> None:
        """Until the gateway's counters are exactly the tally (no other key or variant label)."""
        wait_until(lambda: meter(self.url) == self.expected, 10, f"counters {meter(self.url)} == {self.expected}")


def test_each_variant_meters_the_tokens_it_served_per_key(stack: ExitStack, keys: Path, tmp_path: Path) -> None:
    (_, primary), (_, canary) = stub(stack, "primary"), stub(stack, "canary")
    path = tmp_path / "gateway.json"

    def document(primary_weight: int, canary_weight: int) -> dict[str, Any]:
        return fast({"variants": [{"name": "primary", "weight": primary_weight, "backends": [primary]},
                                  {"name": "canary", "weight": canary_weight, "backends": [canary]}]})

    url, app = stack.enter_context(gateway(document(100, 0), config_path=path, api_keys=None, api_keys_file=keys))
    app.state.reloader.poll_seconds = 0.1  # the loop reads it each round
    client = Client(url)
    assert {client.send(TEAM_A, "team-a"), client.send(TEAM_A, "team-a", stream=True),
            client.send(TEAM_B, "team-b")} == {"primary"}
    client.wait_metered()
    path.write_text(json.dumps(document(0, 100)) + " ")  # the canary takes all the traffic
    wait_until(lambda: app.state.reloader.applied == 1, 10, "the new weights applied")
    assert {client.send(TEAM_A, "team-a"), client.send(TEAM_A, "team-a", stream=True),
            client.send(TEAM_B, "team-b", stream=True)} == {"canary"}
    client.wait_metered()
    counted = meter(url)
    assert counted[(COMPLETION, "team-a", "primary")] == 5 + 4  # a reply's usage, then a stream's last event
    assert counted[(COMPLETION, "team-a", "canary")] == 5 + 4
    assert counted[(PROMPT, "team-b", "canary")] == 3


def test_the_hosted_api_meters_as_fallback_and_the_quota_is_charged_alike(stack: ExitStack, keys: Path) -> None:
    (_, hosted), (local, local_url) = stub(stack, "hosted"), stub(stack, "local")
    local.health = 503  # not ready: a cold start, which team-a may send out
    config = {"variants": [{"name": "primary", "weight": 100, "backends": [local_url]}],
              "hold": {"deadlineSeconds": 5},
              "fallback": {"baseURL": hosted, "model": "deepseek-chat", "apiKeyEnv": "TEST_HOSTED_KEY",
                           "when": ["ColdStart"], "maxShare": 1.0, "allowExternal": ["team-a"]}}
    url, app = stack.enter_context(gateway(config, api_keys=None, api_keys_file=keys))
    app.state.metering.quotas.clock = lambda: 0.0  # no refill: the quota moves by the charges alone
    client = Client(url)
    assert client.send(TEAM_A, "team-a") == "fallback"
    assert client.send(TEAM_A, "team-a", stream=True) == "fallback"
    client.wait_metered()
    local.health = 200
    wait_until(lambda: app.state.router.pools["primary"].has_ready, 10, "the local backend ready")
    assert client.send(TEAM_A, "team-a") == "primary"
    assert client.send(TEAM_B, "team-b", stream=True) == "primary"
    client.wait_metered()
    assert meter(url)[(PROMPT, "team-a", "fallback")] == 7 + 3
    # The quota is per key, whoever served: team-a's three responses so far, 12 + 7 + 12 tokens.
    client.send(TEAM_A, "team-a")
    assert int(client.headers["x-ratelimit-remaining-tokens"]) == 10000 - (12 + 7 + 12)


def test_the_named_variant_labels_the_usage_and_the_edges_own_is_the_default() -> None:
    registry = CollectorRegistry()
    metering = Metering(registry, "primary", lambda _identity: Caller(label="team-a"))
    scopes: list[dict[str, Any]] = [{}, {}, {}]
    for scope in scopes:
        Metering.attach(scope, metering.admit("key:x"))
    report_served_by(scopes[1], "canary")
    report_served_by(scopes[2], "canary")
    report_served_by(scopes[2], FALLBACK)  # a retry elsewhere: the last name wins
    for scope, tokens in zip(scopes, (1, 10, 100), strict=True):
        report_usage(scope, tokens, 0)
    report_served_by({}, "canary")  # no Ticket (a route without the edge): nothing to label
    samples = {s.labels["variant"]: s.value for s in metering.meter.prompt.collect()[0].samples
               if s.name.endswith("_total")}
    assert samples == {"primary": 1, "canary": 10, "fallback": 100}
