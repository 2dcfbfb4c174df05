"""Where a hub-downloading worker connects: the destination of its egress policy. Pure.

A worker whose model comes from the Hugging Face hub (and is not in a model cache) downloads from
`model.source.huggingFace.endpoint` (unset: https://huggingface.co), directly or through the proxy
its env names: `https_proxy`/`HTTPS_PROXY` for an https endpoint, `http_proxy`/`HTTP_PROXY` for an
http one, `all_proxy`/`ALL_PROXY` otherwise (lower case first, as Python's urllib reads them). A
NetworkPolicy holds addresses and ports, never host names (docs/security.md), so:
- the port is the proxy's when a proxy is set, else the endpoint's own (its URL's port, else 443 for
  https and 80 for http): a mirror on http://mirror:8080 or a proxy on 3128 is reachable (issue 18
  item 13);
- the addresses are `networkPolicy.hubEgress.cidrs` when set; else the proxy's address when the
  proxy is named by an IP; else any address.
Only literal `value`s are read: a proxy from a Secret (`valueFrom`) is unknown here, so the endpoint's
port is opened; narrow the addresses with hubEgress.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from deepseek_operator.api import ResolvedVariant
from deepseek_operator.envvars import WorkerEnvVar

DEFAULT_ENDPOINT = "https://huggingface.co"
# The port a URL without one means (proxies as requests/httpx read them).
SCHEME_PORTS = {"https": 443, "http": 80, "socks5": 1080, "socks5h": 1080, "socks4": 1080}


@dataclass(frozen=True)
class Destination:
    """Where the pods may connect: these CIDRs (empty: any address) on this TCP port."""

    cidrs: tuple[str, ...]
    port: int


def _split(url: str) -> SplitResult:
    """The URL's parts; a bare `host[:port]` (as proxies are often written) read as http://host[:port]."""
    return urlsplit(url if "://" in url else f"http://{url}")


def url_port(url: str) -> int:
    """The TCP port a URL connects to: its own, else its scheme's (a bare `host` is http: 80); 443 for
    a scheme not in SCHEME_PORTS."""
    parts = _split(url)
    try:
        port = parts.port
    except ValueError:  # out of range: the connection fails anyway; open the scheme's port
        port = None
    return port or SCHEME_PORTS.get(parts.scheme.lower(), 443)


def _ip_cidr(url: str) -> str | None:
    """host/32 (or /128) when the URL's host is an IP address, else None."""
    host = _split(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return f"{address}/{address.max_prefixlen}"


def proxy(env: Iterable[WorkerEnvVar], scheme: str) -> str | None:
    """The proxy URL the worker's HTTP client uses for `scheme`, from literal env values; None when unset."""
    literal = {e.name: e.value for e in env if e.value}
    for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
        if literal.get(name):
            return literal[name]
    return None


def destination(variant: ResolvedVariant, cidrs: tuple[str, ...]) -> Destination:
    """The egress a hub-downloading variant needs; `cidrs` is networkPolicy.hubEgress.cidrs (or ())."""
    hub = variant.model.source.hugging_face
    endpoint = (hub.endpoint if hub is not None else None) or DEFAULT_ENDPOINT
    via = proxy(variant.env, urlsplit(endpoint).scheme.lower())
    if via is None:
        return Destination(cidrs, url_port(endpoint))
    proxy_address = _ip_cidr(via)
    return Destination(cidrs or ((proxy_address,) if proxy_address else ()), url_port(via))
