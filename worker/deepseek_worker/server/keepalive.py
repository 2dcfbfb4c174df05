"""SSE keep-alive: while a stream waits for the engine (queued behind other requests, a long prefill,
a preemption), an SSE comment line every KEEPALIVE_SECONDS, as DeepSeek's own API sends
(`: keep-alive`). Clients ignore comments (the SSE spec), but a client or proxy with a read timeout
sees bytes, and a person reading the raw stream can tell a request that waits from a stalled one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TypeVar

# Well below the idle timeouts in front of a worker (nginx proxy_read_timeout and cloud load
# balancers: 60 s by default) and below typical client read timeouts, yet one 15-byte line per
# 5 s of waiting costs nothing. Read at call time, so tests can shorten it.
KEEPALIVE_SECONDS = 5.0
KEEPALIVE_EVENT = ": keep-alive\n\n"

T = TypeVar("T")


class _End:
    """Marks the end of the source in the queue."""


_END = _End()


async def with_keepalive(source: AsyncGenerator[T], interval: float) -> AsyncGenerator[T | None]:
    """The items of `source`, and None after every `interval` seconds without one.

    `source` runs in its own task feeding a queue, so waiting for it never cancels it (cancelling
    the engine's iterator would end the request). Closing this generator cancels that task, which
    closes `source` (and so frees the engine slot). An exception that ends `source` is raised here
    after the items before it. The queue is unbounded: it holds what the engine already produced,
    which the engine's own per-request queue would hold otherwise.
    """
    queue: asyncio.Queue[T | _End] = asyncio.Queue()

    async def pump() -> None:
        try:
            async with aclosing(source):
                async for item in source:
                    queue.put_nowait(item)
        finally:
            queue.put_nowait(_END)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                async with asyncio.timeout(interval):
                    item = await queue.get()
            except TimeoutError:
                yield None
                continue
            if isinstance(item, _End):
                await task  # raises what ended `source`, if anything
                return
            yield item
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
