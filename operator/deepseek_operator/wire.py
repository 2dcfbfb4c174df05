"""What every spec model shares: the wire convention and the Kubernetes name grammars.

A module of its own so api.py and the core/v1 types it embeds (affinity.py) use one definition
without importing each other.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# What the apiserver holds in a child (issue 19 item 1): ASCII only, the Kubernetes grammars. No
# backslashes: tools/crd_rules.py puts the key grammar into a CEL string literal.
DNS_SUBDOMAIN = "[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:[.][a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
LABEL_NAME = "[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
QUALIFIED_NAME = f"^(?:{DNS_SUBDOMAIN}/)?{LABEL_NAME}$"  # a label key, a taint key
# A qualified name's longest form: a 253-character prefix, '/', a 63-character name.
QUALIFIED_NAME_MAX = 317
LABEL_VALUE = "^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"


class Model(BaseModel):
    """Base for every spec model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
