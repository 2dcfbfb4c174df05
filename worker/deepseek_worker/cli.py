"""`deepseek-worker`: flags and DEEPSEEK_* env (docs/worker-settings.md) -> a draining uvicorn server.

Exit codes: 0 after a clean shutdown or drain, 2 for invalid settings (one line naming the
setting, before any model loading), 1 when the server fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import uvicorn
from pydantic import ValidationError

from .settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("deepseek_worker.cli")

# In the order of docs/worker-settings.md; `--max-model-len` sets Settings.max_model_len, and so on.
FLAGS = [
    "--model",
    "--model-revision",
    "--served-model-name",
    "--dtype",
    "--quantization",
    "--attention",
    "--max-model-len",
    "--max-batch-size",
    "--gpu-memory-utilization",
    "--kv-cache-bytes",
    "--max-num-batched-tokens",
    "--enforce-eager",
    "--max-concurrent-requests",
    "--max-concurrent-requests-per-key",
    "--max-new-tokens",
    "--request-timeout-seconds",
    "--rate-limit-rpm",
    "--rate-limit-burst",
    "--auth-failures-per-minute",
    "--api-keys",
    "--api-keys-file",
    "--jwt-secret-file",
    "--jwt-clients-file",
    "--jwt-issuer",
    "--jwt-audience",
    "--jwt-ttl-seconds",
    "--host",
    "--port",
    "--metrics-port",
    "--drain-timeout-seconds",
    "--max-body-bytes",
    "--report-configmap",
    "--report-namespace",
    "--upstream",
    "--upstream-timeout-seconds",
    "--variant",
    "--gateway-config",
    "--gateway-config-json",
    "--trust-gateway-priority",
]


def parser() -> argparse.ArgumentParser:
    """Every flag defaults to 'unset' so the environment (then the built-in default) applies."""
    p = argparse.ArgumentParser(prog="deepseek-worker", description="OpenAI/DeepSeek-compatible LLM worker.")
    for flag in FLAGS:
        field = flag[2:].replace("-", "_")
        # Strings: pydantic converts and validates, so flag and env errors read the same.
        p.add_argument(flag, dest=field, default=argparse.SUPPRESS, help=f"env DEEPSEEK_{field.upper()}")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def load_settings(argv: Sequence[str] | None = None) -> tuple[Settings, str]:
    """Parse flags + env. On invalid settings print one line naming the setting and exit 2."""
    args = vars(parser().parse_args(argv))
    log_level = args.pop("log_level")
    try:
        return Settings(**args), log_level
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else ""
        where = f"--{name.replace('_', '-')} / DEEPSEEK_{name.upper()}" if name else "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        print(f"deepseek-worker: invalid setting {name or '(combination)'} ({where}): {message}", file=sys.stderr)
        raise SystemExit(2) from None


class _PathOnlyAccessLog(logging.Filter):
    """uvicorn's access line prints the path with its query string, where a caller may have put a
    credential (`?api_key=...`); no route takes a query, so log the path alone (docs/security.md)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


def _app(settings: Settings) -> FastAPI:
    """Gateway mode, proxy mode in front of an upstream engine server, else our own engine."""
    if settings.gateway:
        return _gateway_app(settings)
    if settings.upstream is not None:
        from .server.proxy import build_proxy_app

        # No engine import on this path: torch and transformers are never loaded by a proxy.
        return build_proxy_app(settings)
    # Imported late: torch/transformers take seconds, and a bad flag should fail fast.
    from .engine import Engine
    from .server import build_app

    return build_app(Engine(settings.engine_config()), settings)


def _gateway_app(settings: Settings) -> FastAPI:
    """The gateway; an invalid configuration exits 2 with one line, as an invalid setting does."""
    from .gateway import build_gateway_app, load_config

    try:
        config = load_config(settings.gateway_config, settings.gateway_config_json)
    except (ValidationError, ValueError, OSError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else None
        where = ".".join(str(p) for p in first["loc"]) if first else ""
        message = str(first["msg"]) if first else str(exc)
        print(f"deepseek-worker: invalid gateway configuration {where or ''}: {message}".replace("  ", " "),
              file=sys.stderr)
        raise SystemExit(2) from None
    return build_gateway_app(settings, config, config_path=settings.gateway_config)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    settings, log_level = load_settings(argv)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.access").addFilter(_PathOnlyAccessLog())
    from .server.lifecycle import DrainingServer

    app = _app(settings)
    if settings.metrics_port:
        # A daemon thread on the same registry as the API's /metrics, in text 0.0.4 (server/metrics_port.py).
        from .server.metrics_port import start_metrics_server

        start_metrics_server(settings.metrics_port, settings.host, app.state.metrics.registry)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=2,  # after our own drain; stragglers are cancelled
        timeout_keep_alive=5,
    )
    # uvicorn picks uvloop/httptools when installed (the worker extra pins them), else asyncio/h11.
    log.debug("uvicorn: loop=%s http=%s", config.loop, config.http)
    server = DrainingServer(config, app.state.worker, settings.drain_timeout_seconds)
    server.run()
    return server.exit_code


if __name__ == "__main__":
    sys.exit(main())
