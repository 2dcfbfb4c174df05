# ruff: noqa: RUF001  -- DeepSeek's tool tokens use fullwidth bars
"""Tool calling, protocol layer: the DeepSeek tool-call parser on handcrafted text and token ids,
the plan (400s naming the field), the forced-call grammar, and prompt rendering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import xgrammar as xgr
from transformers import AutoTokenizer

from deepseek_worker.engine.text import IncrementalDetokenizer
from deepseek_worker.protocol import tools
from deepseek_worker.protocol.chat import ChatMessage
from deepseek_worker.protocol.structured import prefix_rules, schema_ebnf
from deepseek_worker.protocol.tools import CALL_BEGIN, CALL_END, CALLS_BEGIN, CALLS_END, SEP

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def v3_call(name: str, args: str) -> str:
    return f"{CALL_BEGIN}function{SEP}{name}\n```json\n{args}\n```{CALL_END}"


PARIS = '{"city": "Paris"}'
TEXT = f"Let me check. {CALLS_BEGIN}{v3_call('get_weather', PARIS)}\n{v3_call('noop', '{}')}{CALLS_END}"


def tool(name: str, parameters: dict[str, Any] | None = None) -> tools.ToolDef:
    return tools.ToolDef.model_validate({"type": "function", "function": {"name": name, "parameters": parameters}})


def test_parse_whole_v3_output() -> None:
    content, calls = tools.parse(TEXT)
    assert content == "Let me check. "
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Paris"}'), ("noop", "{}")]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)


def test_parse_v31_format_too() -> None:
    oslo = '{"city": "Oslo"}'
    text = f"{CALLS_BEGIN}{CALL_BEGIN}get_weather{SEP}{oslo}{CALL_END}{CALLS_END}"
    content, calls = tools.parse(text)
    assert content == "" and [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Oslo"}')]


def test_text_without_calls_is_all_content() -> None:
    assert tools.parse("no <｜tool▁calls partial marker at the end <｜tool") == (
        "no <｜tool▁calls partial marker at the end <｜tool", []
    )


@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
def test_streamed_parse_equals_whole_parse_at_any_split(piece: int) -> None:
    parser = tools.ToolCallParser()
    content, deltas = "", []
    for i in range(0, len(TEXT), piece):
        c, d = parser.feed(TEXT[i : i + piece])
        content, deltas = content + c, deltas + d
    c, d = parser.flush()
    content, deltas = content + c, deltas + d
    assert content == "Let me check. "
    firsts = [d for d in deltas if "id" in d]
    assert [(d["index"], d["function"]["name"], d["type"]) for d in firsts] == [
        (0, "get_weather", "function"), (1, "noop", "function")
    ]
    args = ["".join(d["function"]["arguments"] for d in deltas if d["index"] == i) for i in (0, 1)]
    assert args == ['{"city": "Paris"}', "{}"]
    assert [c.id for c in parser.calls] == [d["id"] for d in firsts]


def test_cut_off_call_keeps_partial_arguments() -> None:
    content, calls = tools.parse(f"{CALLS_BEGIN}{CALL_BEGIN}function{SEP}get_weather\n```json\n{{\"ci")
    assert content == "" and calls[0].name == "get_weather" and calls[0].arguments == '{"ci'


def test_tool_tokens_survive_detokenization(tiny_model_dir: Path) -> None:
    """The markers are single (non-special) tokens of the real DeepSeek tokenizer: generated ids
    come out of the engine's detokenizer as marker text, which the parser reads."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    for marker in (CALLS_BEGIN, CALL_BEGIN, SEP, CALL_END, CALLS_END):
        assert tok.convert_tokens_to_ids(marker) in ids
    detok = IncrementalDetokenizer(tok, [0])
    text = "".join(detok.push(i) for i in ids)
    content, calls = tools.parse(text)
    assert content.strip() == "Let me check." and [c.name for c in calls] == ["get_weather", "noop"]


# --- plan ---------------------------------------------------------------------------------------


def test_plan_modes() -> None:
    ts = [tool("get_weather", WEATHER), tool("noop")]
    assert tools.plan(None, None, None) is None
    assert tools.plan(ts, "none", None) is None
    auto = tools.plan(ts, None, None)
    assert auto is not None and auto.choice == "auto" and auto.grammar is None
    noop = tools.NamedToolChoice.model_validate({"type": "function", "function": {"name": "noop"}})
    named = tools.plan(ts, noop, None)
    assert named is not None and named.choice == "noop" and named.grammar is not None
    assert "get_weather" not in named.grammar.ebnf  # only the named function may be called
    required = tools.plan(ts, "required", False)
    assert required is not None and required.grammar is not None
    assert required.grammar.ebnf.splitlines()[0].endswith(" call \"<｜tool▁calls▁end｜>\"")  # exactly one call


@pytest.mark.parametrize(
    ("ts", "choice", "param"),
    [
        (None, "required", "tool_choice"),
        ([tool("f")], {"type": "function", "function": {"name": "g"}}, "tool_choice"),
        ([tool("f"), tool("f")], "auto", "tools[1].function.name"),
        ([tool("f", {"type": "object", "not": {}})], "required", "tools[0].function.parameters"),
    ],
)
def test_plan_refusals_name_the_field(ts: list[tools.ToolDef] | None, choice: Any, param: str) -> None:
    if isinstance(choice, dict):
        choice = tools.NamedToolChoice.model_validate(choice)
    with pytest.raises(tools.FieldError) as err:
        tools.plan(ts, choice, None)
    assert err.value.param == param


def test_forced_grammar_accepts_exactly_the_call_span() -> None:
    plan = tools.plan([tool("get_weather", WEATHER), tool("noop")], "required", None)
    assert plan is not None and plan.grammar is not None
    grammar = xgr.Grammar.from_ebnf(plan.grammar.ebnf)
    info = xgr.TokenizerInfo([chr(c) for c in range(32, 127)])  # a byte vocabulary is enough here
    compiled = xgr.GrammarCompiler(info).compile_grammar(grammar)
    good = TEXT[TEXT.index(CALLS_BEGIN):]
    assert xgr.GrammarMatcher(compiled).accept_string(good)
    bad = good.replace('{"city": "Paris"}', '{"town": "Paris"}')
    assert not xgr.GrammarMatcher(compiled).accept_string(bad)
    assert not xgr.GrammarMatcher(compiled).accept_string("hello")


def test_prefix_rules_leaves_literals_alone() -> None:
    schema = {"type": "object", "properties": {"root": {"enum": ["root", "basic_string"]}}, "required": ["root"]}
    ebnf = schema_ebnf(schema)
    renamed = prefix_rules(ebnf, "f0_")
    assert renamed.startswith("f0_") or "\nf0_root ::=" in renamed
    assert '"\\"root\\""' in renamed and '"\\"basic_string\\""' in renamed
    xgr.Grammar.from_ebnf(renamed, root_rule_name="f0_root")


# --- prompt -------------------------------------------------------------------------------------


def test_chat_messages_carry_tools_and_calls(tiny_model_dir: Path) -> None:
    plan = tools.plan([tool("get_weather", WEATHER)], "auto", None)
    msgs = [
        ChatMessage.model_validate({"role": "system", "content": "Be brief."}),
        ChatMessage.model_validate({"role": "user", "content": "Weather in Paris?"}),
        ChatMessage.model_validate({
            "role": "assistant", "content": None,
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
        }),
        ChatMessage.model_validate({"role": "tool", "tool_call_id": "call_1", "content": "sunny"}),
    ]
    rendered = tools.chat_messages(msgs, plan)
    assert rendered[0]["content"].startswith("Be brief.\n\n## Tools") and "### get_weather" in rendered[0]["content"]
    assert json.dumps(WEATHER) in rendered[0]["content"]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = tok.apply_chat_template(rendered, tokenize=False, add_generation_prompt=True)
    call = v3_call("get_weather", '{"city": "Paris"}')
    assert f"<｜Assistant｜>{CALLS_BEGIN}{call}{CALLS_END}<｜end▁of▁sentence｜>" in prompt
    assert "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>sunny<｜tool▁output▁end｜><｜tool▁outputs▁end｜>" in prompt


def test_no_system_message_gets_one_for_tools() -> None:
    named = tools.NamedToolChoice.model_validate({"type": "function", "function": {"name": "f"}})
    plan = tools.plan([tool("f")], named, None)
    rendered = tools.chat_messages([ChatMessage.model_validate({"role": "user", "content": "hi"})], plan)
    assert rendered[0]["role"] == "system" and "You must call the tool `f` now." in rendered[0]["content"]
    assert tools.chat_messages([ChatMessage.model_validate({"role": "user", "content": "hi"})], None) == [
        {"role": "user", "content": "hi"}
    ]
