"""Tool calling through HTTP and the openai SDK on the tiny random-weight model: forced calls
(named, `required`) always carry arguments valid for the function's schema, streamed and not;
`auto` lets the model choose; earlier calls and tool results are accepted in the conversation."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from feature_server import MODEL, concurrently, validates

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 12},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "hourly": {"type": "boolean"},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
SEARCH = {
    "type": "object",
    "properties": {"query": {"type": "string", "maxLength": 20},
                   "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3}},
    "required": ["query", "tags"],
}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Forecast", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "search", "description": "Web search", "parameters": SEARCH}},
]
SCHEMAS = {"get_weather": WEATHER, "search": SEARCH}
MESSAGES: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED: Any = {"type": "function", "function": {"name": "get_weather"}}


def test_named_tool_choice_always_valid_arguments_over_20_seeds(client: openai.OpenAI) -> None:
    def call(seed: int) -> Any:
        return client.chat.completions.create(
            model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice=NAMED, seed=seed, temperature=1.0, max_tokens=200
        )

    for r in concurrently(call, 20):
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        assert choice.message.content is None
        calls = choice.message.tool_calls or []
        assert len(calls) == 1
        assert calls[0].type == "function" and calls[0].id.startswith("call_")
        assert calls[0].function.name == "get_weather"
        validates(calls[0].function.arguments, WEATHER)


def test_required_picks_declared_tools_with_valid_arguments(client: openai.OpenAI) -> None:
    def call(seed: int) -> Any:
        return client.chat.completions.create(
            model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
            seed=seed, temperature=1.0, max_tokens=200,
        )

    for r in concurrently(call, 20):
        calls = r.choices[0].message.tool_calls or []
        assert r.choices[0].finish_reason == "tool_calls" and len(calls) == 1
        validates(calls[0].function.arguments, SCHEMAS[calls[0].function.name])


def test_required_parallel_calls_each_validate(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="required", seed=2, temperature=1.0, max_tokens=256
    )
    calls = r.choices[0].message.tool_calls or []
    assert r.choices[0].finish_reason in {"tool_calls", "length"}
    complete = calls if r.choices[0].finish_reason == "tool_calls" else calls[:-1]
    assert complete, r.choices[0]
    assert len({c.id for c in calls}) == len(calls)
    for c in complete:
        validates(c.function.arguments, SCHEMAS[c.function.name])


def test_streamed_forced_call_has_openai_deltas(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice=NAMED, seed=7, max_tokens=200, stream=True
    )
    deltas, finish = [], None
    for chunk in stream:
        if chunk.choices:
            deltas += chunk.choices[0].delta.tool_calls or []
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert deltas and deltas[0].index == 0 and deltas[0].id and deltas[0].function
    assert deltas[0].type == "function" and deltas[0].function.name == "get_weather"
    assert all(d.index == 0 and d.id is None for d in deltas[1:])
    validates("".join(d.function.arguments or "" for d in deltas if d.function), WEATHER)


def test_stream_and_json_agree_on_a_seeded_call(client: openai.OpenAI) -> None:
    kwargs: Any = {"model": MODEL, "messages": MESSAGES, "tools": TOOLS, "tool_choice": NAMED, "seed": 11,
                   "max_tokens": 200}
    whole = client.chat.completions.create(**kwargs).choices[0].message.tool_calls
    pieces = [c.choices[0].delta.tool_calls for c in client.chat.completions.create(**kwargs, stream=True)
              if c.choices and c.choices[0].delta.tool_calls]
    assert whole is not None
    args = "".join(d.function.arguments or "" for p in pieces for d in p if d.function)
    assert args == whole[0].function.arguments


def test_auto_lets_the_model_choose(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS, seed=1, max_tokens=24)
    choice = r.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason in {"tool_calls", "length"}
    else:
        assert choice.finish_reason in {"stop", "length"} and isinstance(choice.message.content, str)


def test_tool_results_fed_back(client: openai.OpenAI) -> None:
    args = json.dumps({"city": "Paris", "unit": "celsius", "days": 1})
    messages: Any = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": args}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "Sunny, 21C"},
    ]
    r = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, max_tokens=8, temperature=0)
    assert r.choices[0].finish_reason in {"stop", "length", "tool_calls"}
    assert r.usage is not None and r.usage.prompt_tokens > 100  # the tools section and the call are in the prompt


def test_tool_choice_none_is_plain_text(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="none",
                                       max_tokens=8, temperature=0)
    plain = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0)
    assert r.choices[0].message.content == plain.choices[0].message.content  # tools not even rendered
    assert r.choices[0].message.tool_calls is None


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "function": {"description": "x"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
         "tools[0].function.parameters"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
         "tools[0].function.parameters"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}}}],
          "tool_choice": "required"},
         "tools[0].function.parameters"),
    ],
)
def test_bad_tools_input_is_a_400_naming_the_field(url: str, extra: dict[str, Any], param: str) -> None:
    r = httpx.post(url + "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, **extra}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.json()
