"""kopf's Event queue, captured inside a kopf handler and adopted by the Controller's own tasks.

kopf.event() posts through context variables kopf sets only in its per-object tasks; the Controller's
workers are not such tasks, and without them their reconciles could not post Events (rollbacks,
missing integrations). Private kopf API (kopf is pinned): tests/unit/test_resync.py fails if it moves.
"""

from __future__ import annotations

import asyncio
import contextlib

from kopf._core.engines import posting as kopf_posting


class EventSink:
    """The (loop, queue) pair kopf.event() posts to; empty until a kopf handler has run."""

    def __init__(self) -> None:
        self._sink: tuple[asyncio.AbstractEventLoop, kopf_posting.K8sEventQueue] | None = None

    def capture(self) -> None:
        """From inside a kopf handler: remember kopf's queue (outside kopf, as in unit tests: no-op)."""
        with contextlib.suppress(LookupError):
            self._sink = (kopf_posting.event_queue_loop_var.get(), kopf_posting.event_queue_var.get())

    def adopt(self) -> None:
        """In a task kopf did not create: let kopf.event() post to the captured queue, if any yet.

        Context variables are per task: call it in the task that posts, before it posts.
        """
        if self._sink is not None:
            kopf_posting.event_queue_loop_var.set(self._sink[0])
            kopf_posting.event_queue_var.set(self._sink[1])
