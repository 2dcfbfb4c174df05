"""Every failure of engine.start() is recorded (issue 18, item 3): liveness answers 503 with the reason and
the server exits with the termination message, whatever the exception's type. Before the fix only
OSError/RuntimeError/ValueError/ImportError were caught; anything else killed the start task silently
(Live 200, never Ready, no reason)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest
import uvicorn
from fakes import DEADLINE, FakeEngine, free_port, make_app, wait_until

from deepseek_worker.server import lifecycle


class BrokenStartEngine(FakeEngine):
    """start() raises an exception outside the old list (a transformers config lookup, say)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(ready=False)
        self.error = error

    async def start(self) -> None:
        raise self.error


@pytest.mark.parametrize("error", [KeyError("deepseek_v3"), TypeError("unexpected keyword 'rope_scaling'"),
                                   AssertionError("shapes differ")])
def test_any_start_failure_fails_liveness_and_writes_the_termination_message(
        error: Exception, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setattr(lifecycle, "TERMINATION_LOG", str(log))
    app, _ = make_app(BrokenStartEngine(error))
    port = free_port()
    server = lifecycle.DrainingServer(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="on"),
        app.state.worker, drain_timeout=1)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: app.state.worker.start_error is not None, what="the start error to be recorded")
        assert app.state.worker.start_error == f"{type(error).__name__}: {error}"
        thread.join(DEADLINE)
        assert not thread.is_alive(), "the server did not exit after the failed start"
    finally:
        server.should_exit = True
        thread.join(DEADLINE)
    assert server.exit_code == lifecycle.MODEL_LOAD_EXIT_CODE
    assert log.read_text() == f"{lifecycle.MODEL_LOAD_PREFIX}: {type(error).__name__}: {error}"


async def test_liveness_names_an_unexpected_start_failure() -> None:
    app, _ = make_app(BrokenStartEngine(KeyError("deepseek_v3")))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker")
    async with app.router.lifespan_context(app), client as c:
        for _ in range(200):  # the start task runs on this loop: give it turns
            await asyncio.sleep(0.01)
            live = await c.get("/health/live")
            if live.status_code != 200:
                break
    assert live.status_code == 503
    assert live.json() == {"status": "failed", "error": "KeyError: 'deepseek_v3'"}
