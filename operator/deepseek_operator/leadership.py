"""Leader election with kopf peering: which replica may write, for the operator's own triggers too.

With peering on (`deepseek-operator --peering=NAME`, the chart's leaderElection.enabled), every
replica keeps a heartbeat with its priority in one peering object (ClusterKopfPeering, or KopfPeering
per watched namespace), and kopf pauses its handlers in every replica but the live one with the
highest priority (https://docs.kopf.dev/en/stable/peering/). kopf's pause covers only kopf's own
handlers. The operator's caches and resync loop run outside kopf, so `Leadership.active()` answers
the same question for them from the same object, with kopf's own `Peer` (a replica whose
`lastseen + lifetime` has passed is dead): active when no live peer has a higher priority, nor the
same one under another identity (kopf pauses both then). Without peering, always active.

The peering object arrives through an informer like every other cached object, so the question costs
no API request; `on_change` hears when a namespace's answer turns from paused to active, so the
reconciles skipped meanwhile are made up at once (controller.py) instead of at the next resync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kopf._core.engines.peering import Peer  # kopf's own liveness rule (kopf is pinned)

from deepseek_operator.k8s import Kind

log = logging.getLogger(__name__)
CLUSTER_PEERING = Kind("kopf.dev/v1", "ClusterKopfPeering", "clusterkopfpeerings", namespaced=False)
PEERING = Kind("kopf.dev/v1", "KopfPeering", "kopfpeerings")
# namespace (None: cluster-wide) -> the peering object, None if there is none; LookupError while the
# cache has not listed it yet (then nobody can tell whether another replica leads: paused).
Lookup = Callable[[str | None], dict[str, Any] | None]


@dataclass
class Leadership:
    """This replica's standing in its peering objects. `name` None: peering off (standalone)."""

    name: str | None = None
    priority: int = 0
    identity: str = ""
    clusterwide: bool = True
    lookup: Lookup | None = None
    _was_active: dict[str, bool] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.name is not None

    def active(self, namespace: str) -> bool:
        """May this replica reconcile resources of `namespace` now?"""
        if self.name is None or self.lookup is None:
            return True
        try:
            peering = self.lookup(None if self.clusterwide else namespace)
        except LookupError:
            return False
        if peering is None:  # no peering object: kopf finds no peers and runs, so do we
            return True
        peers = [Peer(identity=ident, **info) for ident, info in (peering.get("status") or {}).items()
                 if isinstance(info, dict)]
        live = [p for p in peers if not p.is_dead and p.identity != self.identity]
        if not self.identity:  # kopf's own id is unknown (no POD_ID): take the entry of our priority as ours
            live = [p for p in live if p.priority != self.priority]
        return not any(p.priority >= self.priority for p in live)

    def turned_active(self, namespace: str) -> bool:
        """True once each time `namespace`'s answer changes from paused to active (for catching up)."""
        now = self.active(namespace)
        before = self._was_active.get(namespace, True)
        self._was_active[namespace] = now
        if now != before:
            state = "leading: reconciling" if now else "paused: another replica leads"
            log.info("%s: %s", namespace or "cluster", state)
        return now and not before
