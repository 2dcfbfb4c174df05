"""LangChain's ChatOpenAI (langchain-openai) and ChatDeepSeek (langchain-deepseek) against a running
worker (uvicorn on 127.0.0.1) serving the tiny model: invoke, stream, usage, reasoning, errors.

ChatDeepSeek gets the worker's root URL as base_url, as it would https://api.deepseek.com (no /v1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fakes import serve_tiny
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_deepseek import ChatDeepSeek
from langchain_openai import ChatOpenAI

pytestmark = pytest.mark.slow
KEY = "sk-langchain"
MODEL = "deepseek-chat"
MESSAGES = [SystemMessage("Be brief."), HumanMessage("Say hi.")]


@pytest.fixture(scope="module")
def base_url(tiny_model_dir: Path) -> Iterator[str]:
    with serve_tiny(tiny_model_dir, MODEL, KEY, max_new_tokens=32) as url:
        yield url


def chat_openai(base_url: str, **kwargs: object) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=base_url + "/v1", api_key=KEY, model=MODEL, temperature=0, max_tokens=8, max_retries=0,
        timeout=60, **kwargs,  # type: ignore[arg-type]
    )


def chat_deepseek(base_url: str, **kwargs: object) -> ChatDeepSeek:
    return ChatDeepSeek(
        base_url=base_url, api_key=KEY, model=MODEL, temperature=0, max_tokens=8, max_retries=0,
        timeout=60, **kwargs,  # type: ignore[arg-type]
    )


def test_chat_openai_invoke_and_stream_agree(base_url: str) -> None:
    llm = chat_openai(base_url, stream_usage=True)
    reply = llm.invoke(MESSAGES)
    assert isinstance(reply, AIMessage) and isinstance(reply.content, str)
    assert reply.usage_metadata is not None
    assert 1 <= reply.usage_metadata["output_tokens"] <= 8
    assert reply.response_metadata["finish_reason"] in {"stop", "length"}
    chunks = list(llm.stream(MESSAGES))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    joined = chunks[0]
    for chunk in chunks[1:]:
        joined += chunk
    assert joined.content == reply.content  # greedy: the stream says what the JSON said
    assert joined.usage_metadata is not None
    assert joined.usage_metadata["output_tokens"] == reply.usage_metadata["output_tokens"]


def test_chat_openai_async_stream(base_url: str) -> None:
    llm = chat_openai(base_url)

    async def run() -> str:
        parts = [chunk.content async for chunk in llm.astream(MESSAGES)]
        return "".join(str(p) for p in parts)

    streamed = asyncio.run(asyncio.wait_for(run(), 60))
    assert streamed == llm.invoke(MESSAGES).content


def test_chat_openai_bad_parameter_is_bad_request(base_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        chat_openai(base_url, top_p=5).invoke(MESSAGES)
    assert bad.value.body["param"] == "top_p"  # type: ignore[index]


def test_chat_deepseek_root_base_url(base_url: str) -> None:
    llm = chat_deepseek(base_url)
    reply = llm.invoke(MESSAGES)
    assert isinstance(reply.content, str)
    assert reply.response_metadata["model_provider"] == "deepseek"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] >= 1
    streamed = "".join(str(c.content) for c in llm.stream(MESSAGES))
    assert streamed == reply.content


def test_chat_deepseek_reasoning_content(base_url: str) -> None:
    llm = chat_deepseek(base_url, extra_body={"thinking": {"type": "enabled"}})
    reply = llm.invoke(MESSAGES)
    reasoning = reply.additional_kwargs.get("reasoning_content")
    assert isinstance(reasoning, str) and reasoning
    assert reply.usage_metadata is not None
    assert reply.usage_metadata.get("output_token_details", {}).get("reasoning", 0) >= 1
    chunks = list(llm.stream(MESSAGES))
    streamed = "".join(str(c.additional_kwargs.get("reasoning_content", "")) for c in chunks)
    assert streamed == reasoning


def test_chat_deepseek_unknown_model_is_not_found(base_url: str) -> None:
    with pytest.raises(openai.NotFoundError):
        ChatDeepSeek(base_url=base_url, api_key=KEY, model="nope", max_retries=0).invoke(MESSAGES)
