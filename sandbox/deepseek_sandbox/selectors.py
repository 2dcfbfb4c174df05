"""Label and field selectors for list and watch requests.

kmock 0.8 ignores ``labelSelector`` and ``fieldSelector`` entirely; the operator lists its children
by label, and ``kubectl wait`` watches one object through ``fieldSelector=metadata.name=...``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from . import errors

Predicate = Callable[[dict[str, Any]], bool]

_SET_RE = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)\s*$")


def _split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside ``( ... )``."""
    terms, depth, cur = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    return [t for t in terms if t.strip()]


def _label_term(term: str) -> Callable[[dict[str, str]], bool]:
    eq = _EQ_RE.match(term)
    if eq:
        key, op, value = eq.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    st = _SET_RE.match(term)
    if not st:
        raise errors.bad_request(f"unable to parse requirement: {term!r}")
    neg, key, op, values = st.groups()
    if op is None:
        return (lambda labels: key not in labels) if neg else (lambda labels: key in labels)
    choices = {v.strip() for v in values.split(",") if v.strip()}
    if op == "in":
        return lambda labels: labels.get(key) in choices
    return lambda labels: labels.get(key) not in choices


def label_selector(selector: str | None) -> Predicate:
    """Predicate over objects for ``a=b,c in (x,y),!d,e,f!=g``; empty matches everything."""
    tests = [_label_term(t) for t in _split_terms(selector or "")]

    def check(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(test(labels) for test in tests)

    return check


def _field_value(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def _field_test(path: str, value: str, negate: bool) -> Predicate:
    return lambda obj: (_field_value(obj, path) == value) != negate


def field_selector(selector: str | None) -> Predicate:
    """Predicate for ``metadata.name=x,status.phase!=Running`` (equality terms only)."""
    tests: list[Predicate] = []
    for term in _split_terms(selector or ""):
        match = _EQ_RE.match(term)
        if not match:
            raise errors.bad_request(f"invalid field selector: {term!r}")
        path, op, value = match.groups()
        negate = op == "!="
        tests.append(_field_test(path, value, negate))
    return lambda obj: all(test(obj) for test in tests)


def selector_from_match_labels(selector: dict[str, Any] | None) -> str:
    """Render a LabelSelector (matchLabels + matchExpressions) as the string form."""
    selector = selector or {}
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), expr.get("values") or []
        if op in ("In", "NotIn"):
            terms.append(f"{key} {op.lower()} ({','.join(values)})")
        elif op == "Exists":
            terms.append(key)
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
    return ",".join(terms)
