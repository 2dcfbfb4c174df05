"""Priority per key (keys.py): the engine's waiting queue admits interactive before batch
(engine/admission.py), the key's priority reaches the engine, and the edge's concurrency gate keeps
the last slots for interactive keys (limits.py, proxy mode's only gate). Behind our gateway the
priority travels in x-deepseek-priority: the gateway sets it (over a client's own), and only a worker
with DEEPSEEK_TRUST_GATEWAY_PRIORITY honours it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fakes import make_app

from deepseek_worker.engine.admission import WaitingQueue
from deepseek_worker.server.keys import PRIORITY_HEADER
from deepseek_worker.server.limits import interactive_reserve
from deepseek_worker.types import EngineConfig, SamplingParams

DEADLINE = 120.0
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
KEYS = "- {id: chat, key: sk-chat}\n- {id: nightly, key: sk-nightly, priority: batch}\n"


def seq(name: str, priority: int) -> Any:
    return SimpleNamespace(name=name, key=name, params=SimpleNamespace(priority=priority))


def test_waiting_queue_orders_by_priority_then_arrival() -> None:
    queue = WaitingQueue()
    items = [seq("b1", 1), seq("i1", 0), seq("b2", 1), seq("i2", 0)]
    for item in items:
        queue.append(item)
    assert len(queue) == 4 and bool(queue) and items[2] in queue
    assert [s.name for s in queue] == ["i1", "i2", "b1", "b2"]  # iteration is admission order
    queue.remove(items[1])  # i1's consumer left
    assert items[1] not in queue
    assert [queue.popleft().name for _ in range(3)] == ["i2", "b1", "b2"]
    assert not queue and len(queue) == 0
    with pytest.raises(IndexError):
        queue.popleft()
    with pytest.raises(ValueError):
        queue.remove(items[0])
    queue.append(seq("late-batch", 1))
    queue.append(seq("late-interactive", 0))
    queue.clear()
    assert not queue


def test_engine_admits_interactive_first_when_slots_are_short() -> None:
    """Engine._admit with 1 free slot and no model: the interactive request that came last goes first."""
    from deepseek_worker.engine.core import Engine

    engine = Engine(EngineConfig(model="unused"))
    engine._runner = SimpleNamespace(free_slots=1)
    for item in (seq("batch", 1), seq("chat", 0)):
        engine._waiting.append(item)
    assert [s.name for s in engine._admit(0)] == ["chat"]
    assert [s.name for s in engine._admit(0)] == ["batch"]


async def test_tiny_engine_serves_a_waiting_interactive_request_before_an_earlier_batch_one(
        tiny_model_dir: Path) -> None:
    from deepseek_worker.engine.core import Engine

    engine = Engine(EngineConfig(model=str(tiny_model_dir), max_batch_size=1, max_model_len=256))
    await asyncio.wait_for(engine.start(), DEADLINE)
    try:
        ids = engine.tokenize("Hello there")
        first_chunk: list[str] = []

        async def run(name: str, max_tokens: int, priority: int) -> None:
            params = SamplingParams(max_tokens=max_tokens, temperature=0, priority=priority)
            async for chunk in engine.generate(ids, params, name):
                if name not in first_chunk:
                    first_chunk.append(name)
                if chunk.finish_reason is not None:
                    assert chunk.finish_reason != "error", chunk.error
                    return

        async def until(predicate: Any, what: str) -> None:
            async with asyncio.timeout(DEADLINE):
                while not predicate():
                    await asyncio.sleep(0.01)

        holder = asyncio.create_task(run("holder", 60, 0))
        await until(lambda: engine.stats().running == 1, "the holder to run")
        batch = asyncio.create_task(run("batch", 3, 1))
        await until(lambda: engine.stats().waiting == 1, "the batch request to wait")
        chat = asyncio.create_task(run("chat", 3, 0))
        await until(lambda: engine.stats().waiting == 2, "both to wait (one slot, held)")
        assert engine.stats().running == 1 and not holder.done()
        await asyncio.wait_for(asyncio.gather(holder, batch, chat), DEADLINE)
        assert first_chunk == ["holder", "chat", "batch"]
    finally:
        await asyncio.wait_for(engine.stop(), DEADLINE)


def test_interactive_reserve() -> None:
    assert [interactive_reserve(n) for n in (1, 3, 4, 8, 64)] == [0, 0, 1, 2, 16]


async def test_key_priority_reaches_the_engine_and_the_gate_keeps_slots_for_interactive(tmp_path: Path) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text(KEYS, encoding="utf-8")
    app, engine = make_app(api_keys_file=keys, max_concurrent_requests=4, max_concurrent_requests_per_key=4)
    worker = app.state.worker
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://w") as c:
        async def ask(key: str) -> httpx.Response:
            return await c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})

        assert (await ask("sk-nightly")).status_code == 200 and engine.last_params.priority == 1
        assert (await ask("sk-chat")).status_code == 200 and engine.last_params.priority == 0
        worker.enter()
        worker.enter()  # 2 of 4 slots held: the batch key may take the third
        assert (await ask("sk-nightly")).status_code == 200
        worker.enter()  # 3 held: the last slot is kept for interactive keys
        refused = await ask("sk-nightly")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "x-ratelimit-limit-tokens" not in refused.headers  # this key has no quota
        assert "interactive" in refused.json()["error"]["message"]
        assert (await ask("sk-chat")).status_code == 200
        worker.enter()  # all 4 held: everyone waits
        assert (await ask("sk-chat")).status_code == 503


async def test_proxy_mode_gate_keeps_slots_for_interactive(tmp_path: Path) -> None:
    """Proxy mode: the engine's queue is the engine's own, the edge's gate is where priority applies."""
    from fake_upstream import REPLY, FakeUpstream

    from deepseek_worker.server.proxy import build_proxy_app
    from deepseek_worker.server.upstream import Upstream
    from deepseek_worker.settings import Settings

    keys = tmp_path / "api-keys"
    keys.write_text(KEYS, encoding="utf-8")
    upstream = Upstream("http://engine", 30, transport=httpx.ASGITransport(FakeUpstream()))
    app = build_proxy_app(Settings(upstream="http://engine", api_keys_file=keys, max_concurrent_requests=8,
                                   max_concurrent_requests_per_key=8), upstream)
    body = {"model": "served", "messages": [{"role": "user", "content": "hi"}]}
    await upstream.start()
    try:
        assert await upstream.probe() is None
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://w") as c:
            async def ask(key: str) -> httpx.Response:
                return await c.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})

            for _ in range(6):  # 6 of 8 held; 2 kept for interactive keys
                app.state.worker.enter()
            batch = await ask("sk-nightly")
            assert batch.status_code == 503 and "interactive" in batch.json()["error"]["message"]
            chat = await ask("sk-chat")
            assert chat.status_code == 200 and chat.content == REPLY
    finally:
        await upstream.stop()


# -- behind the gateway: x-deepseek-priority ----------------------------------------------------------------
def test_gateway_sends_the_keys_priority_over_the_clients_header(tmp_path: Path) -> None:
    from gateway_fakes import StubBackend, chat, gateway, serve

    keys = tmp_path / "api-keys"
    keys.write_text(KEYS, encoding="utf-8")
    backend = StubBackend("a")
    with serve(backend) as backend_url, gateway({"variants": [{"name": "a", "weight": 100, "backends": [backend_url]}]},
                                                api_keys=None, api_keys_file=keys) as (url, _):
        def ask(key: str, claimed: str | None) -> str:
            headers = {"content-type": "application/json", "Authorization": f"Bearer {key}"}
            if claimed is not None:
                headers[PRIORITY_HEADER] = claimed
            response = httpx.post(url + "/v1/chat/completions", content=chat(), headers=headers, timeout=30)
            assert response.status_code == 200, response.text
            seen, _ = backend.requests[-1]
            assert "authorization" not in seen  # the credential stays at the gateway
            return seen[PRIORITY_HEADER]

        assert ask("sk-nightly", "interactive") == "batch", "a batch key cannot claim interactive"
        assert ask("sk-nightly", None) == "batch"
        assert ask("sk-chat", "batch") == "interactive"
        assert ask("sk-chat", None) == "interactive"


@pytest.mark.parametrize("trusted", [True, False])
async def test_the_header_reaches_the_engine_only_with_the_setting(trusted: bool) -> None:
    """A worker reached directly (no setting) ignores a client's claim; behind the gateway it is the priority."""
    app, engine = make_app(trust_gateway_priority=trusted, max_concurrent_requests=4)
    worker = app.state.worker
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://w") as c:
        async def ask(priority: str | None) -> httpx.Response:
            return await c.post("/v1/chat/completions", json=CHAT,
                                headers={PRIORITY_HEADER: priority} if priority is not None else {})

        assert (await ask("batch")).status_code == 200
        assert engine.last_params.priority == (1 if trusted else 0)
        assert (await ask("interactive")).status_code == 200 and engine.last_params.priority == 0
        assert (await ask("urgent")).status_code == 200 and engine.last_params.priority == 0  # not a priority
        assert (await ask(None)).status_code == 200 and engine.last_params.priority == 0
        for _ in range(3):  # 3 of 4 held: the last slot is kept for interactive callers
            worker.enter()
        assert (await ask("batch")).status_code == (503 if trusted else 200)


def test_a_gateway_refuses_to_trust_the_header() -> None:
    from deepseek_worker.settings import Settings

    with pytest.raises(ValueError, match="trust_gateway_priority"):
        Settings(gateway_config_json='{"variants": []}', trust_gateway_priority=True)


async def test_a_trusting_worker_serves_a_waiting_interactive_request_before_an_earlier_batch_one(
        tiny_model_dir: Path) -> None:
    """The tiny engine with one slot behind a trusting edge: held by a long request, then a batch request
    (by the gateway's header) and an interactive one wait; the interactive one is served first."""
    from deepseek_worker.engine.core import Engine
    from deepseek_worker.server import build_app
    from deepseek_worker.settings import Settings

    settings = Settings(model=str(tiny_model_dir), max_model_len=256, max_new_tokens=64, max_batch_size=1,
                        trust_gateway_priority=True)
    engine = Engine(settings.engine_config())
    app = build_app(engine, settings)
    await asyncio.wait_for(engine.start(), DEADLINE)
    finished: list[str] = []
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://w",
                                     timeout=DEADLINE) as c:
            async def run(name: str, max_tokens: int, priority: str) -> None:
                body = {"model": str(tiny_model_dir), "prompt": "Hello there", "max_tokens": max_tokens,
                        "temperature": 0}
                response = await c.post("/v1/completions", json=body, headers={PRIORITY_HEADER: priority})
                assert response.status_code == 200, response.text
                finished.append(name)

            async def until(predicate: Any) -> None:
                async with asyncio.timeout(DEADLINE):
                    while not predicate():
                        await asyncio.sleep(0.01)

            holder = asyncio.create_task(run("holder", 60, "interactive"))
            await until(lambda: engine.stats().running == 1)
            batch = asyncio.create_task(run("batch", 3, "batch"))
            await until(lambda: engine.stats().waiting == 1)
            chat = asyncio.create_task(run("chat", 3, "interactive"))
            await until(lambda: engine.stats().waiting == 2)
            assert not holder.done()
            await asyncio.wait_for(asyncio.gather(holder, batch, chat), DEADLINE)
        assert finished == ["holder", "chat", "batch"]
    finally:
        await asyncio.wait_for(engine.stop(), DEADLINE)


async def test_proxy_mode_behind_the_gateway_the_header_drives_only_the_gate() -> None:
    """Proxy mode: the trusted header decides the edge's gate; the engine never gets it."""
    from fake_upstream import FakeUpstream

    from deepseek_worker.server.proxy import build_proxy_app
    from deepseek_worker.server.upstream import Upstream
    from deepseek_worker.settings import Settings

    fake = FakeUpstream()
    upstream = Upstream("http://engine", 30, transport=httpx.ASGITransport(fake))
    app = build_proxy_app(Settings(upstream="http://engine", max_concurrent_requests=8,
                                   trust_gateway_priority=True), upstream)
    body = {"model": "served", "messages": [{"role": "user", "content": "hi"}]}
    await upstream.start()
    try:
        assert await upstream.probe() is None
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://w") as c:
            for _ in range(6):  # 6 of 8 held; 2 kept for interactive callers
                app.state.worker.enter()
            batch = await c.post("/v1/chat/completions", json=body, headers={PRIORITY_HEADER: "batch"})
            assert batch.status_code == 503 and "interactive" in batch.json()["error"]["message"]
            chat = await c.post("/v1/chat/completions", json=body, headers={PRIORITY_HEADER: "interactive"})
            assert chat.status_code == 200
        assert fake.requests and all(PRIORITY_HEADER not in headers for _, _, headers, _ in fake.requests)
    finally:
        await upstream.stop()
