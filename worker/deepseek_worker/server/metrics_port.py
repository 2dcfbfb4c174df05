"""The metrics-only listener (--metrics-port): the worker's registry in Prometheus' text format 0.0.4.

Always text 0.0.4, whatever the scraper's Accept header asks: prometheus-client 0.26 writes OpenMetrics
sample names with the label-name alphabet, so a `:` becomes `_` in the samples (`vllm:kv_cache_usage_perc`
-> `vllm_kv_cache_usage_perc`) while its `# TYPE` line keeps the colon. The engines' series that proxy
mode re-exposes (server/engine_metrics.py) carry colons, and Prometheus asks for OpenMetrics first; text
0.0.4 keeps every name as the engine wrote it. Our own metrics use no OpenMetrics-only feature
(exemplars, units), so nothing is lost. Serves in daemon threads, as prometheus-client's own server does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _get_best_family, _SilentHandler

TEXT_FORMAT = "text/plain; version=0.0.4"


def text_only(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """The WSGI app answering every scrape in text 0.0.4 (module docstring)."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return app({**environ, "HTTP_ACCEPT": TEXT_FORMAT}, start_response)

    return wrapped


def start_metrics_server(port: int, addr: str, registry: CollectorRegistry) -> ThreadingWSGIServer:
    """Serve `registry` on addr:port from a daemon thread; the server (shutdown() stops it)."""
    class Server(ThreadingWSGIServer):
        pass

    # An IPv6 host (`::`) needs an AF_INET6 socket, as prometheus-client's own server picks it.
    Server.address_family, addr = _get_best_family(addr, port)  # type: ignore[no-untyped-call]
    server = make_server(addr, port, text_only(make_wsgi_app(registry)), Server, handler_class=_SilentHandler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics-port").start()
    return server
