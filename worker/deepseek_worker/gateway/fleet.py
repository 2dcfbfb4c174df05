"""The variants' pools, holds and discovery loops, kept equal to the configuration: at start, and on
every reload of the configuration file (reload.py).

`apply(config)` is the one way they change. A variant that stays keeps its pool (its backends, their
in-flight counts, the requests held on it) and its hold (the measured load time); its discovery loop
restarts with the new definition (backends, service, periods), so its backend set follows at once.
A new variant is created and probed once before it counts; a removed one stops at once (requests
held on it wait out their deadline). Weights take effect with the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .backends import Pool
from .config import GatewayConfig
from .discovery import Discoverer, Resolve
from .forward import Router
from .hold import Hold

log = logging.getLogger("deepseek_worker.gateway.fleet")

class Fleet:
    """Owns the discovery tasks; mutates `router.pools` and `router.holds` in place (the metrics
    collector and the routes read the same dicts). Call from the event loop."""

    def __init__(self, router: Router, resolve: Resolve) -> None:
        self.router = router
        self.resolve = resolve
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def apply(self, config: GatewayConfig) -> None:
        """Make the pools, holds and loops those of `config`, then route by it."""
        router = self.router
        wanted = {v.name: v for v in config.variants}
        for name in [n for n in router.pools if n not in wanted]:
            await self._stop(name)
            pool = router.pools.pop(name)
            router.holds.pop(name, None)
            await pool.stop()
        fresh = []
        for name, variant in wanted.items():
            if name not in router.pools:
                router.pools[name] = Pool(name, config.backendTimeoutSeconds, router.rng)
                router.holds[name] = Hold(config.hold.maxQueue, config.hold.loadSeconds)
            hold = router.holds[name]
            hold.max_queue = config.hold.maxQueue
            discoverer = Discoverer(variant, router.pools[name], config.discovery, _held(hold), self.resolve)
            await self._stop(name)
            fresh.append(discoverer)
        # A first round before routing by the new configuration: fixed backends that answer are ready.
        await asyncio.gather(*(d.refresh(resolve=True) for d in fresh), return_exceptions=True)
        for discoverer in fresh:
            self.tasks[discoverer.variant.name] = asyncio.create_task(discoverer.run())
        router.config = config
        if config.fallback is not None and router.hosted is None:
            log.warning("a fallback added to the configuration takes effect at the next restart")
            return
        router.rule.config = config.fallback  # removed, or its rules changed: at once
        if router.hosted is not None and config.fallback is not None:
            router.hosted.config = config.fallback  # its model too; its key and base URL at the next restart

    async def _stop(self, name: str) -> None:
        task = self.tasks.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        """Stop every loop and close every backend client."""
        for name in list(self.tasks):
            await self._stop(name)
        for pool in self.router.pools.values():
            await pool.stop()


def _held(hold: Hold) -> Callable[[], int]:
    return lambda: hold.held
