"""The write counter: every write request received over HTTP, by (verb, resource, subresource).

The sandbox's own controllers write through the store directly, never over HTTP, so their writes
are not counted: a test can assert that an idle operator makes zero writes.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

WriteKey = tuple[str, str, str]  # (verb, resource like "deployments.apps", subresource or "")
VERB_BY_METHOD = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclasses.dataclass
class WriteStats:
    """Counts of write requests; ``total`` is their sum."""

    by_key: collections.Counter[WriteKey] = dataclasses.field(default_factory=collections.Counter)

    @property
    def total(self) -> int:
        return sum(self.by_key.values())

    def record(self, method: str, resource: str, subresource: str, collection: bool = False) -> None:
        """Count one write request (``collection`` marks DELETE on a list URL)."""
        verb = VERB_BY_METHOD[method]
        if verb == "delete" and collection:
            verb = "deletecollection"
        self.by_key[(verb, resource, subresource)] += 1

    def reset(self) -> None:
        self.by_key.clear()

    def count(self, verb: str | None = None, resource: str | None = None, subresource: str | None = None) -> int:
        """Sum of counts matching the given parts (None matches anything)."""
        return sum(
            n for (v, r, s), n in self.by_key.items()
            if (verb is None or v == verb) and (resource is None or r == resource)
            and (subresource is None or s == subresource)
        )

    def snapshot(self) -> WriteStats:
        """An independent copy (what ``Sandbox.stats()`` returns)."""
        return WriteStats(collections.Counter(self.by_key))

    def to_json(self) -> dict[str, Any]:
        """``{"total": N, "writes": [{"verb", "resource", "subresource", "count"}, ...]}``."""
        return {
            "total": self.total,
            "writes": [
                {"verb": v, "resource": r, "subresource": s, "count": n}
                for (v, r, s), n in sorted(self.by_key.items())
            ],
        }
