"""Process lifecycle: in-flight tracking, graceful drain on SIGTERM, and the uvicorn server.

Kubernetes sends SIGTERM and, `terminationGracePeriodSeconds` later, SIGKILL. On SIGTERM we keep
listening (so clients get a clean 503 + Retry-After instead of connection refused while endpoints
propagate), report not-ready, let in-flight requests and streams finish (bounded by
drain_timeout_seconds), then stop uvicorn and exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from types import FrameType

import uvicorn

log = logging.getLogger("deepseek_worker.lifecycle")


# The operator reads these from the pod's terminated state to report ModelLoadFailed with our message
# (operator/deepseek_operator/observe.py): exit status 3 and a termination message starting so.
MODEL_LOAD_EXIT_CODE = 3
MODEL_LOAD_PREFIX = "model load failed"
# A CUDA out-of-memory while loading: the operator reports OOMAtLoad beside its GPU-fit plan.
OOM_AT_LOAD_EXIT_CODE = 4
OOM_AT_LOAD_PREFIX = "out of GPU memory while loading the model"
TERMINATION_LOG = os.environ.get("DEEPSEEK_TERMINATION_LOG", "/dev/termination-log")


def is_out_of_memory(error: object) -> bool:
    """server/app.py records a start failure as "<exception type>: <message>"; torch.cuda.OutOfMemoryError
    (and bitsandbytes' re-raised CUDA errors) say "CUDA out of memory"."""
    text = str(error)
    return text.startswith("OutOfMemoryError") or "CUDA out of memory" in text


def load_failure(error: object) -> tuple[int, str]:
    """(exit status, termination message) of a worker whose model did not load."""
    if is_out_of_memory(error):
        return OOM_AT_LOAD_EXIT_CODE, f"{OOM_AT_LOAD_PREFIX}: {error}"
    return MODEL_LOAD_EXIT_CODE, f"{MODEL_LOAD_PREFIX}: {error}"


def report_model_load_failure(error: object) -> int:
    """Write the Kubernetes termination message (outside a pod the path may not exist: ignored);
    returns the exit status to end with."""
    code, message = load_failure(error)
    try:
        with open(TERMINATION_LOG, "w", encoding="utf-8") as fh:
            fh.write(message[:4000])
    except OSError:
        log.debug("no termination log at %s", TERMINATION_LOG)
    return code


class WorkerState:
    """Shared by the admission middleware, health routes, metrics and the drain coordinator."""

    def __init__(self) -> None:
        self.draining = False
        self.inflight = 0
        self.start_error: str | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        """One admitted API request started."""
        self.inflight += 1
        self._idle.clear()

    def leave(self) -> None:
        """One admitted API request finished (response fully sent or client gone)."""
        self.inflight -= 1
        if self.inflight <= 0:
            self.inflight = 0
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no API request is in flight; False when `timeout` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM drains instead of closing the listener at once.

    SIGINT and a second SIGTERM keep uvicorn's behaviour (immediate shutdown).
    """

    def __init__(self, config: uvicorn.Config, state: WorkerState, drain_timeout: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_timeout = drain_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self.exit_code = 0

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    async def on_tick(self, counter: int) -> bool:
        """uvicorn calls this every 0.1 s; a failed model load ends the process with MODEL_LOAD_EXIT_CODE
        (OOM_AT_LOAD_EXIT_CODE for a CUDA out-of-memory)."""
        if self.state.start_error is not None:
            log.error("engine failed to start (%s); exiting", self.state.start_error)
            self.exit_code = report_model_load_failure(self.state.start_error)
            return True
        return await super().on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.state.draining or self._loop is None:
            super().handle_exit(sig, frame)
            return
        # Runs in the main thread between bytecodes: only flip flags and hand over to the loop.
        # Not recorded in _captured_signals, so uvicorn does not re-raise SIGTERM after shutdown
        # (which would turn our clean drain into exit status -15).
        self.state.draining = True
        self._loop.call_soon_threadsafe(self._begin_drain)

    def _begin_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        log.info("SIGTERM: draining %d in-flight request(s), up to %.0fs", self.state.inflight, self.drain_timeout)
        if await self.state.wait_idle(self.drain_timeout):
            log.info("drained; shutting down")
        else:
            log.warning("drain timeout: %d request(s) still in flight are cancelled", self.state.inflight)
        self.should_exit = True
