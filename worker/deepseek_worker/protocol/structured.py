"""Structured output at the protocol layer: `response_format` -> a grammar the engine enforces.

A JSON schema becomes xgrammar EBNF here (no tokenizer needed, a few milliseconds), so a schema
the grammar cannot enforce is refused with a 400 before any generation starts. The engine
(engine/constrained.py) then compiles that EBNF against the vocabulary, once per grammar.

Why an allowlist of keywords: xgrammar accepts some keywords without enforcing them (`not`,
`allOf`, `oneOf` (treated like anyOf), `uniqueItems`, `contains`, `if`/`then`, `dependentRequired`;
measured by random walks through the grammar), and output must validate against the schema every
time, so those are refused by name instead of silently producing invalid JSON.

Output is compact JSON (`", "` and `": "` separators, no other whitespace): free whitespace would let
a model (random weights, or a real one looping) pad forever instead of finishing the value.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..types import GrammarSpec

# Keywords whose constraint xgrammar enforces, plus annotations that constrain nothing.
SUPPORTED_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "prefixItems",
        "minItems", "maxItems", "enum", "const", "anyOf", "$ref", "$defs", "definitions",
        "minLength", "maxLength", "pattern", "format", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "multipleOf", "minProperties", "maxProperties", "propertyNames",
        "patternProperties",
        # annotations
        "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
        "readOnly", "writeOnly", "strict", "nullable",
    }
)
# Keywords whose values are maps of name -> schema, or lists of schemas, or one schema.
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SCHEMA_LISTS = ("anyOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "propertyNames")


class SchemaError(ValueError):
    """A schema the grammar cannot enforce; the message names the keyword and where it is."""


class JSONSchemaSpec(BaseModel):
    """`response_format.json_schema`: OpenAI's name/description/schema/strict."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """`response_format`: text (no constraint), json_object (any JSON object), json_schema."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaSpec | None = None


def check_schema(schema: Any, where: str = "schema") -> None:
    """Raise SchemaError unless every keyword of `schema` (recursively) is enforceable."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise SchemaError(f"{where} must be a JSON schema object")
    for key, value in schema.items():
        if key not in SUPPORTED_KEYWORDS:
            raise SchemaError(f"unsupported JSON schema keyword {key!r} at {where}")
        if key in _SCHEMA_MAPS:
            if not isinstance(value, dict):
                raise SchemaError(f"{where}.{key} must be an object")
            for name, sub in value.items():
                check_schema(sub, f"{where}.{key}.{name}")
        elif key in _SCHEMA_LISTS:
            if not isinstance(value, list):
                raise SchemaError(f"{where}.{key} must be a list")
            for i, sub in enumerate(value):
                check_schema(sub, f"{where}.{key}[{i}]")
        elif key in _SCHEMA_ONE:
            check_schema(value, f"{where}.{key}")


# xgrammar (0.2.8) renders length-bounded string characters as [^"\\\r\n], which admits raw
# control characters (invalid inside a JSON string); close that class like its own basic string.
_LOOSE_CHARS = '[^\\"\\\\\\r\\n]'
_STRICT_CHARS = '[^\\0-\\x1f\\"\\\\\\r\\n]'


def schema_ebnf(schema: dict[str, Any] | bool, where: str = "schema") -> str:
    """The EBNF (root rule `root`) of compact JSON matching `schema`. Raises SchemaError."""
    import xgrammar as xgr  # lazy: only constrained requests need it

    check_schema(schema, where)
    try:
        grammar = xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, strict_mode=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise SchemaError(f"{where}: {_short(exc)}") from exc
    return str(grammar).replace(_LOOSE_CHARS, _STRICT_CHARS)


def _short(exc: Exception) -> str:
    """xgrammar's messages start with a C++ file:line prefix; keep the human part."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", text)


def response_grammar(fmt: ResponseFormat | None) -> GrammarSpec | None:
    """The grammar a response_format asks for (None for text). Raises SchemaError."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return GrammarSpec(schema_ebnf({"type": "object"}))
    spec = fmt.json_schema
    if spec is None:
        raise SchemaError("json_schema is required when type is 'json_schema'")
    schema = spec.schema_ if spec.schema_ is not None else {"type": "object"}
    return GrammarSpec(schema_ebnf(schema, "json_schema.schema"))


# --- composing grammars (tool calls) ------------------------------------------------------------

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def prefix_rules(ebnf: str, prefix: str) -> str:
    """Rename every rule of `ebnf` to `prefix + name`, outside string literals and char classes,
    so several grammars can live in one EBNF text."""
    names = {line.split("::=", 1)[0].strip() for line in ebnf.splitlines() if "::=" in line}
    out: list[str] = []
    i, n = 0, len(ebnf)
    while i < n:
        ch = ebnf[i]
        if ch in "\"[":
            close = '"' if ch == '"' else "]"
            j = i + 1
            while j < n and ebnf[j] != close:
                j += 2 if ebnf[j] == "\\" else 1
            out.append(ebnf[i : j + 1])
            i = j + 1
            continue
        match = _IDENT.match(ebnf, i)
        if match and (i == 0 or not (ebnf[i - 1].isalnum() or ebnf[i - 1] == "_")):
            word = match.group()
            out.append(prefix + word if word in names else word)
            i = match.end()
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def ebnf_literal(text: str) -> str:
    """`text` as an EBNF string literal."""
    return json.dumps(text, ensure_ascii=False)
