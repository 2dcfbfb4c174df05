"""Tokens metered per API key and variant, with the key's quota and priority: the edge's interface.

The edge (limits.AdmissionMiddleware; the gateway the same way) calls `Metering.admit(identity)`
once a request has passed auth and the rate limit. It gets a Ticket (or QuotaExceeded, a 429 with
`Retry-After` and the x-ratelimit-*-tokens headers), puts it in the ASGI scope (`attach`), adds
`ticket.headers()` to the response, and uses `ticket.caller.priority` at its concurrency gate.
Whoever learns the response's usage (our routes when the engine finishes, the proxy relay from the
upstream's reply or last SSE event) calls `report_usage(scope, prompt, completion)`: the ticket counts
the tokens (Prometheus counters) and charges the key's quota, once per request.

Behind our gateway (DEEPSEEK_TRUST_GATEWAY_PRIORITY) a worker runs without auth; the gateway sends
each request's priority in keys.PRIORITY_HEADER (overwriting a client's own) and `admit(identity, priority)`
gives the Ticket that priority. Without the setting the edge never passes the header on.

The gateway also says who served each request: once it has a variant's backend (or the hosted API)
answering, `report_served_by(scope, variant)` names it, and the usage is counted under that variant
instead of the gateway's own DEEPSEEK_VARIANT (which only a worker pod's edge means).

Labels are bounded: `key` is a configured key id, `client:<id>` of a configured JWT client,
`unnamed` (keys without an id) or `anonymous` (no auth); past `max_labels` distinct values, `other`.
`variant` is the worker's DEEPSEEK_VARIANT, or the variant the gateway names (a name from its
configuration, or `fallback`). A quota refusal comes before any variant is chosen: it carries the
edge's own DEEPSEEK_VARIANT.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from .keys import PRIORITY_RANK, Caller, Priority
from .quotas import QuotaExceeded, TokenQuotas, TokenState

SCOPE_KEY = "deepseek_worker.ticket"  # where the edge leaves a request's Ticket in the ASGI scope
MAX_LABELS = 1000  # distinct `key` label values before the rest are counted as OTHER
OTHER = "other"


class TokenMeter:
    """The per-key token counters (deepseek_worker_key_{prompt,completion}_tokens_total)."""

    def __init__(self, registry: CollectorRegistry, variant: str, max_labels: int = MAX_LABELS) -> None:
        self.variant = variant
        self.max_labels = max_labels
        self._labels: set[str] = set()
        names = ["key", "variant"]
        self.prompt = Counter("deepseek_worker_key_prompt_tokens", "Prompt tokens per API key and variant "
                              "(the usage of every response).", names, registry=registry)
        self.completion = Counter("deepseek_worker_key_completion_tokens", "Completion tokens per API key "
                                  "and variant (the usage of every response).", names, registry=registry)
        self.refusals = Counter("deepseek_worker_key_quota_refusals", "Requests refused (429) because the "
                                "key's token quota was used up.", names, registry=registry)

    def label(self, key: str) -> str:
        """`key`, or OTHER once `max_labels` other values have been seen (bounded series)."""
        if key in self._labels:
            return key
        if len(self._labels) >= self.max_labels:
            return OTHER
        self._labels.add(key)
        return key

    def count(self, key: str, prompt: int, completion: int, variant: str | None = None) -> None:
        """Add a response's usage to `key`'s counters under `variant` (None: the meter's own)."""
        label, served = self.label(key), variant or self.variant
        self.prompt.labels(label, served).inc(prompt)
        self.completion.labels(label, served).inc(completion)

    def refused(self, key: str) -> None:
        self.refusals.labels(self.label(key), self.variant).inc()


@dataclass
class Ticket:
    """One admitted request's caller and token state; `settle` counts its usage once."""

    caller: Caller
    tokens: TokenState | None
    meter: TokenMeter
    quotas: TokenQuotas
    settled: bool = field(default=False)
    # Who served the request when not this edge's own variant (the gateway's report_served_by):
    # a configured variant name or `fallback`, so the label stays bounded by configuration.
    served_by: str | None = field(default=None)

    def headers(self) -> dict[str, str]:
        """The x-ratelimit-*-tokens headers (none for a key without a quota)."""
        return self.tokens.headers() if self.tokens is not None else {}

    def settle(self, prompt: int, completion: int) -> None:
        """Count the response's usage (under `served_by`, else the meter's variant) and charge the
        key's quota, whoever served it; later calls do nothing."""
        if self.settled:
            return
        self.settled = True
        self.meter.count(self.caller.label, prompt, completion, self.served_by)
        self.quotas.charge(self.caller.label, self.caller.quota, prompt + completion)


class Metering:
    """What the edge calls: `admit(identity)` -> Ticket. `variant` labels the usage no gateway names
    (report_served_by) and the refusals; `callers` maps an identity from auth to its Caller
    (Authenticator.caller); `quotas` holds the token windows (tests drive its clock)."""

    def __init__(self, registry: CollectorRegistry, variant: str, callers: Callable[[str], Caller],
                 quotas: TokenQuotas | None = None, max_labels: int = MAX_LABELS) -> None:
        self.meter = TokenMeter(registry, variant, max_labels)
        self.callers = callers
        self.quotas = quotas or TokenQuotas()

    def admit(self, identity: str, priority: Priority | None = None) -> Ticket:
        """The request's Ticket; raises QuotaExceeded (429) when its key's token quota is used up.
        `priority` (the gateway's header, trusted by the edge) replaces the caller's own."""
        caller = self.callers(identity)
        if priority is not None and priority in PRIORITY_RANK:
            caller = replace(caller, priority=priority)
        try:
            tokens = self.quotas.admit(caller.label, caller.quota)
        except QuotaExceeded:
            self.meter.refused(caller.label)
            raise
        return Ticket(caller, tokens, self.meter, self.quotas)

    @staticmethod
    def attach(scope: MutableMapping[str, Any], ticket: Ticket) -> None:
        """Leave `ticket` in the request's ASGI scope, for `report_usage` and `priority_rank`."""
        scope[SCOPE_KEY] = ticket


def ticket_of(scope: MutableMapping[str, Any]) -> Ticket | None:
    """The request's Ticket, or None (a route reached without the edge, e.g. an app built in a test)."""
    ticket = scope.get(SCOPE_KEY)
    return ticket if isinstance(ticket, Ticket) else None


def report_usage(scope: MutableMapping[str, Any], prompt: int, completion: int) -> None:
    """Count a response's usage for its caller (nothing when the request has no Ticket)."""
    ticket = ticket_of(scope)
    if ticket is not None:
        ticket.settle(prompt, completion)


def report_served_by(scope: MutableMapping[str, Any], variant: str) -> None:
    """Name the variant whose answer this request's usage is (the gateway, before `report_usage`);
    the last call wins, so a retry on another upstream relabels it. Nothing without a Ticket.
    `variant` must come from configuration (or be `fallback`): it becomes a label value."""
    ticket = ticket_of(scope)
    if ticket is not None:
        ticket.served_by = variant


def priority_rank(scope: MutableMapping[str, Any]) -> int:
    """The request's admission rank for the engine: 0 interactive (also without a Ticket), 1 batch."""
    ticket = ticket_of(scope)
    return 0 if ticket is None else ticket.caller.rank
