"""API key configuration: the keys file's two formats and what each key is allowed (docs/auth.md).

Plain format (unchanged): one key per line, `#` comments. Such keys have no id, no quota and the
`interactive` priority.

Structured format: a YAML (or JSON) list of mappings, one per key::

    - id: team-a                      # the key's name in metrics and logs (never the key itself)
      key: sk-team-a-...
      priority: interactive           # interactive (default) | batch
      quota: {tokensPerMinute: 100000, tokensPerDay: 2000000}

`parse_keys` reads either; a structured file that does not validate raises KeysFileError naming the
entry and the field (`entry 2 (id 'team-b'): quota.tokensPerMinute: ...`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Priority = Literal["interactive", "batch"]
PRIORITY_RANK: dict[str, int] = {"interactive": 0, "batch": 1}  # lower is served first
# The caller's priority as our gateway forwards it to the workers behind it (gateway/forward.py); a
# worker reads it only with DEEPSEEK_TRUST_GATEWAY_PRIORITY (server/limits.py).
PRIORITY_HEADER = "x-deepseek-priority"


def header_priority(value: str | None) -> Priority | None:
    """A PRIORITY_HEADER value as a priority; None when absent or not one (the key's own applies)."""
    text = (value or "").strip().lower()
    if text == "batch":
        return "batch"
    if text == "interactive":
        return "interactive"
    return None
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"  # a metric label value: short, no spaces or quotes
ANONYMOUS = "anonymous"  # the key label without auth (or for the token endpoint's callers)
UNNAMED = "unnamed"  # the key label of a plain-format key: keys without an id share it


class KeysFileError(ValueError):
    """A keys file that does not validate; the message names the entry and the field."""


class TokenQuota(BaseModel):
    """Tokens (prompt + completion) one key may use; an unset window is unlimited."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    tokens_per_minute: int | None = Field(None, alias="tokensPerMinute", ge=1)
    tokens_per_day: int | None = Field(None, alias="tokensPerDay", ge=1)


class KeyEntry(BaseModel):
    """One API key of the structured format."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str | None = Field(None, pattern=ID_PATTERN)
    key: str = Field(min_length=1)
    priority: Priority = "interactive"
    quota: TokenQuota | None = None

    @model_validator(mode="after")
    def _quota_needs_id(self) -> KeyEntry:
        if self.quota is not None and self.id is None:
            raise ValueError("a key with a quota needs an `id` (quotas and metrics are kept per id)")
        return self


@dataclass(frozen=True)
class Caller:
    """What the edge knows about an admitted caller: its metrics label, quota and priority.

    `label` is bounded by configuration: a configured key id, `client:<sub>` for a JWT client (from the
    clients file), UNNAMED for keys without an id, ANONYMOUS without auth; never a secret."""

    label: str
    quota: TokenQuota | None = None
    priority: Priority = "interactive"

    @property
    def rank(self) -> int:
        """The engine's admission rank: 0 (interactive) is served before 1 (batch)."""
        return PRIORITY_RANK[self.priority]


ANONYMOUS_CALLER = Caller(ANONYMOUS)


def parse_keys(text: str) -> list[KeyEntry]:
    """The keys of a keys file, in either format. Raises KeysFileError for a bad structured file."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        document = None
    if not (isinstance(document, list) and any(isinstance(item, dict) for item in document)):
        lines = [line.strip() for line in text.splitlines()]
        return [KeyEntry(key=line) for line in lines if line and not line.startswith("#")]
    entries = [_entry(index, item) for index, item in enumerate(document, start=1)]
    _check_unique(entries)
    return entries


def _entry(index: int, item: object) -> KeyEntry:
    if not isinstance(item, dict):
        raise KeysFileError(f"entry {index}: expected a mapping with `key` (and `id`, `priority`, `quota`)")
    name = f"entry {index}" + (f" (id {item['id']!r})" if isinstance(item.get("id"), str) else "")
    try:
        return KeyEntry.model_validate(item)
    except ValidationError as exc:
        problems = "; ".join(f"{_field(error['loc'])}: {error['msg']}" for error in exc.errors())
        raise KeysFileError(f"{name}: {problems}") from None


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "entry"


def _check_unique(entries: list[KeyEntry]) -> None:
    ids = [entry.id for entry in entries if entry.id is not None]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise KeysFileError(f"id: {', '.join(map(repr, duplicates))} used by more than one key")
    keys = [entry.key for entry in entries]
    if len(set(keys)) != len(keys):
        raise KeysFileError("key: the same key is listed twice")


def client_label(sub: str) -> str:
    """The label of a JWT client: its id from the clients file, folded to the label alphabet."""
    return "client:" + re.sub(r"[^A-Za-z0-9._-]", "_", sub)[:63]
