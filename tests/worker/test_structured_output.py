"""Structured output: response_format json_schema / json_object by constrained decoding, on the
tiny random-weight model. Every finished output parses and validates; unsupported schemas are a
400 naming response_format; a constrained request shares decode passes with plain ones without
changing their output; grammars compile once per schema."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from feature_server import MODEL, concurrently, validates
from test_engine_helpers import GREEDY, chat_ids, collect

from deepseek_worker.engine import Engine
from deepseek_worker.protocol.structured import SchemaError, check_schema, schema_ebnf
from deepseek_worker.types import EngineConfig, GrammarSpec, SamplingParams

pytestmark = pytest.mark.slow

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "email": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"enum": ["x", "y", "z"]}, "minItems": 1, "maxItems": 3},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "pet": {"$ref": "#/$defs/pet"},
    },
    "required": ["name", "age", "tags", "pet"],
    "additionalProperties": False,
    "$defs": {"pet": {"type": "object",
                      "properties": {"kind": {"const": "cat"},
                                     "code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]$"}},
                      "required": ["kind", "code"]}},
}
FORMAT: Any = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
MESSAGES: Any = [{"role": "user", "content": "Describe a person as JSON."}]


def test_json_schema_output_validates_over_20_sampled_requests(client: openai.OpenAI) -> None:
    def call(seed: int) -> Any:
        return client.chat.completions.create(
            model=MODEL, messages=MESSAGES, response_format=FORMAT, seed=seed, temperature=1.0, max_tokens=200
        )

    for r in concurrently(call, 20):
        assert r.choices[0].finish_reason == "stop", r.choices[0]
        validates(r.choices[0].message.content or "", PERSON)


def test_greedy_and_streamed_output_validates(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, response_format=FORMAT, temperature=0, max_tokens=200
    ).choices[0].message.content
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=MODEL, messages=MESSAGES, response_format=FORMAT, temperature=0, max_tokens=200, stream=True
    ) if c.choices]
    assert "".join(pieces) == whole
    validates(whole or "", PERSON)


def test_json_object_is_an_object_or_cut_by_length(client: openai.OpenAI) -> None:
    """Any JSON object is allowed, so random weights may ramble until max_tokens ("length", possibly
    incomplete JSON, as with OpenAI); a finished one is an object."""
    fmt: Any = {"type": "json_object"}
    for r in concurrently(lambda seed: client.chat.completions.create(
            model=MODEL, messages=MESSAGES, response_format=fmt, seed=seed, max_tokens=48), 6):
        text = r.choices[0].message.content or ""
        assert text.startswith("{")
        if r.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(text), dict)
        else:
            assert r.choices[0].finish_reason == "length" and r.usage is not None and r.usage.completion_tokens == 48


def test_max_tokens_cut_gives_length(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=MESSAGES, response_format=FORMAT, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.choices[0].message.content or "")


@pytest.mark.parametrize("keyword", ["not", "allOf", "oneOf", "if", "uniqueItems", "contains", "dependentRequired"])
def test_unenforceable_keywords_are_a_400_naming_them(url: str, keyword: str) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "array", keyword: {}}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    r = httpx.post(url + "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, "response_format": fmt})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "response_format"
    assert repr(keyword) in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fmt", "param"),
    [
        ({"type": "xml"}, "response_format.type"),
        ({"type": "json_schema"}, "response_format"),
        ({"type": "json_schema", "json_schema": {"schema": {}}}, "response_format.json_schema.name"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "wat"}}}, "response_format"),
    ],
)
def test_bad_response_format_is_a_400(url: str, fmt: dict[str, Any], param: str) -> None:
    r = httpx.post(url + "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, "response_format": fmt})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_check_schema_walks_nested_schemas() -> None:
    check_schema(PERSON)
    with pytest.raises(SchemaError, match=r"'not' at schema\.properties\.a\.items"):
        check_schema({"type": "object", "properties": {"a": {"type": "array", "items": {"not": {}}}}})


def test_bounded_strings_exclude_control_characters() -> None:
    ebnf = schema_ebnf({"type": "string", "maxLength": 3})
    assert "[^\\0-\\x1f" in ebnf and '[^\\"\\\\\\r\\n]' not in ebnf


# --- engine level: batching ---------------------------------------------------------------------


async def test_constrained_row_shares_decode_passes_and_leaves_plain_rows_alone(tiny_model_dir: Path) -> None:
    engine = Engine(EngineConfig(model=str(tiny_model_dir), max_batch_size=4, dtype="float32"))
    await engine.start()
    try:
        plain_ids = chat_ids(engine, "Tell me a story")
        plain = SamplingParams(max_tokens=24, temperature=0)
        alone = await collect(engine, plain_ids, plain, "alone")
        grammar = GrammarSpec(schema_ebnf(PERSON))
        constrained = SamplingParams(max_tokens=120, temperature=0, grammar=grammar)
        warm = await collect(engine, chat_ids(engine, "warm up"), constrained, "warm")  # compiles the grammar
        validates(warm.text, PERSON)
        together = await asyncio.gather(
            collect(engine, plain_ids, plain, "plain"),
            collect(engine, chat_ids(engine, "JSON please"), constrained, "json"),
            collect(engine, chat_ids(engine, "hi"), GREEDY, "other"),
        )
        assert together[0].text == alone.text  # the mask touched only the constrained row
        validates(together[1].text, PERSON)
        assert together[1].last.finish_reason == "stop"
        shared = [ids for _, ids in engine.step_log if "plain" in ids and "json" in ids]
        assert shared, "the constrained request never shared a decode pass with the plain one"
        assert engine._runner is not None and engine._runner.grammars.compiles == 1  # compiled once, then cached
    finally:
        await engine.stop()


async def test_bad_grammar_fails_only_that_request(tiny_model_dir: Path) -> None:
    engine = Engine(EngineConfig(model=str(tiny_model_dir), max_batch_size=4))
    await engine.start()
    try:
        ids = chat_ids(engine, "hi")
        bad = await collect(engine, ids, SamplingParams(max_tokens=4, grammar=GrammarSpec("root ::= nope")), "bad")
        assert bad.last.finish_reason == "error" and bad.last.error
        good = await collect(engine, ids, GREEDY, "good")
        assert good.last.finish_reason in {"stop", "length"}
    finally:
        await engine.stop()
