"""No module-level mutable state in the operator: what lives between reconciles lives in the Controller.

Scans `operator/deepseek_operator/**/*.py` with `ast`. A module may bind, at its top level, only
- constants: CONSTANT_CASE names bound to literals, tables of literals, or calls whose result is
  immutable (frozenset, re.compile, a frozen dataclass: checked on the imported module's value);
  by convention they are never rebound nor mutated;
- type aliases (CamelCase names bound to a type expression) and `log = logging.getLogger(...)`.
It may not use `global`, assign attributes of another operator module, keep an empty container or a
`None` slot to fill in later, or read the environment at import (settings.py reads it at startup).
The exceptions are listed with their reasons; each test below shows the check can fail.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import importlib
import logging
import pathlib
import re
from collections.abc import Mapping
from typing import Any

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "operator" / "deepseek_operator"
CONSTANT = re.compile(r"^_?[A-Z][A-Z0-9_]*$")
TYPE_ALIAS = re.compile(r"^_?[A-Z][a-zA-Z0-9]*$")
PURE_CALLS = frozenset({"frozenset", "tuple", "re.compile", "logging.getLogger", "Kind", "TypeVar", "NewType",
                        "MappingProxyType", "types.MappingProxyType", "int", "float", "str", "bool"})
ENV_READS = frozenset({"os.environ.get", "os.getenv", "os.environ"})
# A whole module (by file name), or a name wherever it is bound: why it may stay.
EXCEPTIONS = {
    "metrics.py": "Prometheus collectors on the operator's own registry: process-wide by design, like logging",
    "BUILTIN_RUNTIME": "the default RuntimeSpec, a pydantic model (not frozen) that nothing mutates",
}


def immutable(value: Any) -> bool:
    """Whether `value` cannot change: scalars, patterns, loggers, enums, and tuples, frozensets and
    frozen dataclasses of immutable values."""
    if value is None or isinstance(value, int | float | str | bytes | range | re.Pattern | logging.Logger
                                   | enum.Enum | type):
        return True
    if isinstance(value, tuple | frozenset):
        return all(immutable(v) for v in value)
    if dataclasses.is_dataclass(value):
        return bool(value.__dataclass_params__.frozen) and all(
            immutable(getattr(value, f.name)) for f in dataclasses.fields(value))
    return False


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _reads_env(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute | ast.Name) and _dotted(n) in ENV_READS for n in ast.walk(node))


def _value_problem(name: str, value: ast.expr | None, namespace: Mapping[str, Any] | None) -> str | None:
    """Why binding `name` to `value` at module level is state, or None when it is a constant.

    `namespace`: the imported module's globals, where a call's result is checked (None: calls other
    than the known-pure ones are state)."""
    if value is None or (isinstance(value, ast.Constant) and value.value is None):
        return "a None slot filled in later"
    if _reads_env(value):
        return "reads the environment at import"
    if isinstance(value, ast.List | ast.Dict | ast.Set) and not (getattr(value, "elts", None) or
                                                                getattr(value, "keys", None)):
        return "an empty container"
    if name.startswith("__") and name.endswith("__"):  # __all__ and friends: read by Python's machinery
        return None
    if name == "log":
        return None if isinstance(value, ast.Call) and _dotted(value.func) == "logging.getLogger" else "not a logger"
    if TYPE_ALIAS.match(name) and not CONSTANT.match(name):
        return None if isinstance(value, ast.Subscript | ast.BinOp | ast.Name | ast.Attribute) else "not a type alias"
    if not CONSTANT.match(name):
        return "not a CONSTANT_CASE name"
    if isinstance(value, ast.Call) and _dotted(value.func) not in PURE_CALLS:
        if namespace is not None and name in namespace and immutable(namespace[name]):
            return None
        return f"the result of {_dotted(value.func) or 'a call'}(), not immutable"
    return None


def _bound(node: ast.stmt) -> list[tuple[str, ast.expr | None]]:
    """(name, value) for each name a top-level statement binds."""
    if isinstance(node, ast.Assign):
        names = [n for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        value = node.value if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) else None
        return [(n.id, value if value is not None else ast.Constant(0)) for n in names]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [(node.target.id, node.value)]
    if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
        return [(node.target.id, ast.Call(ast.Name("augmented"), [], []))]
    if isinstance(node, ast.For | ast.AsyncFor):
        return [(n.id, ast.Call(ast.Name("loop"), [], [])) for n in ast.walk(node.target) if isinstance(n, ast.Name)]
    return []


def _top_level(tree: ast.Module) -> list[ast.stmt]:
    """The module's statements, those inside top-level if/try/with blocks included (not functions, classes)."""
    out: list[ast.stmt] = []
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        out.append(node)
        for field in ("body", "orelse", "finalbody", "handlers"):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                todo.extend(child for child in getattr(node, field, []) if isinstance(child, ast.stmt))
        if isinstance(node, ast.Try):
            todo.extend(s for h in node.handlers for s in h.body)
    return out


def _module_aliases(tree: ast.Module) -> set[str]:
    """Names this module binds to other operator modules (`from deepseek_operator import handlers`)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deepseek_operator"):
            names |= {a.asname or a.name for a in node.names if node.module in ("deepseek_operator",
                                                                                  "deepseek_operator.render")}
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("deepseek_operator")}
    return names


def violations(source: str, module: str, namespace: Mapping[str, Any] | None = None) -> list[str]:
    """Every piece of module-level state in `source` (`module`: its file name, for the exceptions;
    `namespace`: its globals once imported)."""
    tree = ast.parse(source)
    found = [f"{module}:{n.lineno}: `global {', '.join(n.names)}`" for n in ast.walk(tree) if isinstance(n, ast.Global)]
    aliases = _module_aliases(tree)
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign) else [])
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id in aliases:
                found.append(f"{module}:{node.lineno}: assigns {_dotted(target)}, another module's attribute")
    if module in EXCEPTIONS:
        return found
    for node in _top_level(tree):
        for name, value in _bound(node):
            problem = _value_problem(name, value, namespace)
            if problem and name not in EXCEPTIONS:
                found.append(f"{module}:{node.lineno}: {name}: {problem}")
    return found


def _namespace(path: pathlib.Path) -> dict[str, Any]:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return vars(importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts)))


def test_no_operator_module_keeps_mutable_state() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20 and (PACKAGE / "controller.py") in files  # the scan sees the package
    found = [v for path in files for v in violations(path.read_text(), path.name, _namespace(path))]
    assert found == [], "\n".join(found)


def test_the_exceptions_still_exist() -> None:
    """An exception whose module or name is gone is dropped from the list, not kept as a blank cheque."""
    paths = list(PACKAGE.rglob("*.py"))
    texts = [path.read_text() for path in paths]
    stale = [e for e in EXCEPTIONS if e not in {path.name for path in paths}
             and not any(re.search(rf"^{e}\b", text, re.M) for text in texts)]
    assert stale == []


def test_the_scan_finds_the_runtime_state_handlers_py_used_to_keep() -> None:
    old = '''
import asyncio, os
from deepseek_operator import handlers
from deepseek_operator.leadership import Leadership
RESYNC_SECONDS = float(os.environ.get("DEEPSEEK_OPERATOR_RESYNC_SECONDS", "600"))
_slots = asyncio.Semaphore(64)
NAMESPACES: list[str] | None = None
_locks: dict[tuple[str, str], asyncio.Lock] = {}
_waiting = set()
LEADERSHIP = Leadership()
_client = None
_QUEUE = []
counter = 0
counter += 1
for _task in range(3):
    pass

def client():
    global _client

def cli():
    handlers.NAMESPACES = ["default"]
'''
    found = "\n".join(violations(old, "old_handlers.py"))
    for expected in ("RESYNC_SECONDS: reads the environment", "_slots: not a CONSTANT_CASE name",
                     "NAMESPACES: a None slot", "_locks: an empty container", "_waiting: not a CONSTANT_CASE",
                     "LEADERSHIP: the result of Leadership(), not immutable", "_client: a None slot",
                     "_QUEUE: an empty container",
                     "counter: not a CONSTANT_CASE", "_task: not a CONSTANT_CASE", "`global _client`",
                     "assigns handlers.NAMESPACES"):
        assert expected in found, (expected, found)


def test_constants_type_aliases_and_loggers_pass() -> None:
    fine = '''
import logging, re
from typing import Any
from deepseek_operator.k8s import Kind
log = logging.getLogger(__name__)
PREFIX = "deepseek.ai"
TABLE = {"a": 1}
KINDS = (Kind("v1", "Pod", "pods"),)
_PATTERN = re.compile("x")
NAMES = frozenset({"a"})
Key = tuple[str, str]
Maybe = str | None
'''
    assert violations(fine, "fine.py") == []


def test_a_call_passes_only_when_its_result_is_immutable() -> None:
    source = "PLAN = make()\n"
    assert violations(source, "m.py", {"PLAN": (1, "a", frozenset({2}))}) == []
    assert violations(source, "m.py", {"PLAN": (1, ["a"])}) != []  # a list inside the tuple
    assert violations(source, "m.py", {"PLAN": {"a": 1}}) != []

    @dataclasses.dataclass(frozen=True)
    class Frozen:
        x: int

    @dataclasses.dataclass
    class Thawed:
        x: int

    assert immutable(Frozen(1)) and not immutable(Thawed(1))
