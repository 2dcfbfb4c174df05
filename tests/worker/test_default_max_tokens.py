"""Issue 18 item 1, the worker's side: a request without max_tokens gets the DEEPSEEK_MAX_NEW_TOKENS the
operator renders (the model family's default when the spec leaves serving.maxNewTokens unset: 16384 for
R1-style models), bounded only by the room the prompt leaves in DEEPSEEK_MAX_MODEL_LEN."""

from __future__ import annotations

import httpx
import pytest
from fakes import FakeEngine

from deepseek_worker.server import build_app
from deepseek_worker.settings import Settings


@pytest.fixture
def reasoning_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The env render/worker_env.py writes for DeepSeek-R1-Distill-Qwen-7B with the lengths unset."""
    monkeypatch.setenv("DEEPSEEK_MODEL", "fake")
    monkeypatch.setenv("DEEPSEEK_MAX_MODEL_LEN", "32768")
    monkeypatch.setenv("DEEPSEEK_MAX_NEW_TOKENS", "16384")


async def test_a_request_without_max_tokens_gets_the_configured_default(reasoning_env: None) -> None:
    engine = FakeEngine(max_model_len=32768)
    app = build_app(engine, Settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://worker") as client:
        chat = await client.post("/v1/chat/completions", json={
            "model": "fake", "messages": [{"role": "user", "content": "think hard"}]})
        assert chat.status_code == 200, chat.text
        assert engine.last_params is not None and engine.last_params.max_tokens == 16384
        long_prompt = " ".join(["word"] * 20000)  # FakeEngine: one token per word; 12768 tokens of room left
        text = await client.post("/v1/completions", json={"model": "fake", "prompt": long_prompt})
        assert text.status_code == 200, text.text
        assert engine.last_params.max_tokens == 32768 - 20000
