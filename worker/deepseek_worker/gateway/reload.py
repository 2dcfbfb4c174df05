"""Re-reading the configuration file when it changes (a ConfigMap the operator re-renders, e.g. for
a canary's new weight). A document that does not validate is logged and ignored: the gateway keeps
routing by the last good one."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pydantic import ValidationError

from .config import load_config
from .fleet import Fleet

log = logging.getLogger("deepseek_worker.gateway.reload")

POLL_SECONDS = 2.0  # kubelet updates a mounted ConfigMap within about a minute; this adds little


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        stat = path.stat()  # follows the ..data symlink of a ConfigMap volume
    except OSError:
        return None
    return stat.st_mtime, stat.st_size


class Reloader:
    """Polls `path`'s mtime and size; applies a changed, valid document to `fleet`."""

    def __init__(self, path: Path, fleet: Fleet, poll_seconds: float = POLL_SECONDS) -> None:
        self.path, self.fleet, self.poll_seconds = path, fleet, poll_seconds
        self.seen = _stamp(path)
        self.applied = 0  # reloads applied (tests wait on it)

    async def check(self) -> bool:
        """One poll; True when a new document was applied."""
        stamp = _stamp(self.path)
        if stamp is None or stamp == self.seen:
            return False
        self.seen = stamp
        try:
            config = load_config(self.path)
        except (ValidationError, ValueError, OSError) as exc:
            log.error("gateway configuration %s not applied (the last good one stays): %s", self.path, exc)
            return False
        await self.fleet.apply(config)
        self.applied += 1
        log.info("gateway configuration %s applied: %s", self.path,
                 ", ".join(f"{v.name}={v.weight}" for v in config.variants))
        return True

    async def run(self) -> None:
        """Forever (cancelled at shutdown)."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.check()
            except Exception:  # a failed apply must not end the watcher
                log.exception("reloading %s failed", self.path)
