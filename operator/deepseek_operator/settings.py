"""The operator's own settings, read once from the environment at startup (docs/architecture.md lists them).

A frozen value passed to whatever needs it (the Controller, kopf's settings), never a module global:
tests build one with the values they need instead of patching the environment or a module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "DEEPSEEK_OPERATOR_"
# Set by main.cli() from kopf's -n/--namespace options (comma-separated; absent: every namespace).
NAMESPACES_VARIABLE = PREFIX + "NAMESPACES"
DEFAULT_MAX_IN_FLIGHT = 20  # also k8s.K8s's default, for clients built without Settings (tests, tools)


@dataclass(frozen=True)
class Settings:
    """`namespaces`: the ones the operator handles, as given to `deepseek-operator`; None: all of them."""

    resync_seconds: float = 600.0
    # Reconciles running at once, all resources together. More would only queue on the API client's
    # in-flight limit (`max_in_flight`) while each holds its rendered children in memory.
    max_reconciles: int = 64
    # API requests in flight at once, watches apart (k8s.K8s): more wait their turn.
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    # Every watch (kopf's and the caches') ends after this many seconds and resumes (main.py).
    watch_timeout_seconds: int = 600
    # With leader election, how long a silent replica keeps the lead (kopf heartbeats every 5-10 s less).
    peering_lifetime_seconds: int = 30
    metrics_port: int = 9090
    namespaces: tuple[str, ...] | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """The settings `environ` gives; a variable left unset keeps its default."""
        default = cls()
        names = environ.get(NAMESPACES_VARIABLE)
        return cls(
            resync_seconds=float(environ.get(PREFIX + "RESYNC_SECONDS", default.resync_seconds)),
            max_reconciles=int(environ.get(PREFIX + "MAX_RECONCILES", default.max_reconciles)),
            max_in_flight=int(environ.get(PREFIX + "MAX_IN_FLIGHT", default.max_in_flight)),
            watch_timeout_seconds=int(environ.get(PREFIX + "WATCH_TIMEOUT_SECONDS", default.watch_timeout_seconds)),
            peering_lifetime_seconds=int(environ.get(PREFIX + "PEERING_LIFETIME_SECONDS",
                                                     default.peering_lifetime_seconds)),
            metrics_port=int(environ.get(PREFIX + "METRICS_PORT", default.metrics_port)),
            namespaces=tuple(n for n in names.split(",") if n) if names else None,
        )
