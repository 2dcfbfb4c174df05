"""Restarting each of two real gateway processes behind a real nginx, under load (rolling.py's pieces).

Used by tests/reliability/test_gateway_restart.py. One `deepseek-worker --model tiny` is the backend;
two `deepseek-worker` processes in gateway mode (DEEPSEEK_GATEWAY_CONFIG_JSON naming that backend) are
nginx's upstream, as the operator's two gateway replicas are the Service's endpoints. Each gateway pod
is restarted as Kubernetes deletes a pod: the endpoint is removed (nginx reload, and no worker of the old
configuration still accepts connections) while the preStop sleep runs, then SIGTERM (the gateway
drains what is in flight and exits), then the replacement (a new address) is added once its
/health/ready says ready and it sees a ready backend. A is restarted, then B. A client sends mixed
streaming and non-streaming chat completions the whole time; one long stream is in flight on each
gateway at its SIGTERM and must complete. Every process is stopped by its PID; every wait has a deadline.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .rolling import (
    HOST,
    REQUEST_TIMEOUT,
    LoadClient,
    Nginx,
    RolloutError,
    Sample,
    Stream,
    Worker,
    parse_access_log,
    wait_for,
    worker_command,
)


class Gateway(Worker):
    """`deepseek-worker` in gateway mode on a free port, forwarding to `backend` (one variant)."""

    def __init__(self, name: str, workdir: Path, drain_timeout: float, backend: str) -> None:
        super().__init__(name, workdir, drain_timeout)
        self.log = workdir / f"gateway-{name}.log"
        self.config = {"variants": [{"name": "primary", "weight": 100, "backends": [backend]}]}

    def start(self) -> None:
        env = {**os.environ, "DEEPSEEK_GATEWAY_CONFIG_JSON": json.dumps(self.config),
               "DEEPSEEK_DRAIN_TIMEOUT_SECONDS": str(self.drain_timeout)}
        argv = [*worker_command(), "--host", HOST, "--port", str(self.port), "--log-level", "info"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float) -> None:
        """Ready, and its variant has a ready backend (else the first requests would be held)."""
        super().wait_ready(timeout)
        wait_for(f"gateway {self.name} to see its backend", lambda: True if httpx.get(
            f"http://{self.addr}/health/ready", timeout=2).json()["variants"]["primary"] > 0 else None,
            timeout, log=self.log)


@dataclass
class Restart:
    """One gateway's restart: its in-flight count at SIGTERM, exit status, drain time, its long stream."""

    name: str
    addr: str
    exit: int | None
    drain_seconds: float
    inflight_at_sigterm: int | None
    stream: Stream
    stream_running_at_sigterm: bool


@dataclass
class GatewayReport:
    samples: list[Sample]
    restarts: list[Restart]
    per_upstream: dict[str, int]  # chat completions per gateway address (nginx's access log)
    retried: int
    names: dict[str, str] = field(default_factory=dict)  # address -> A, B, A2, B2

    @property
    def failed(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    def summary(self) -> str:
        streams = sum(s.stream for s in self.samples)
        served = ", ".join(sorted(f"{self.names.get(a, a)} {n}" for a, n in self.per_upstream.items()))
        lines = [f"{len(self.samples)} requests ({streams} streaming), {len(self.failed)} failed; "
                 f"per gateway: {served}; retried by nginx: {self.retried}"]
        for r in self.restarts:
            lines.append(f"- gateway {r.name}: {r.inflight_at_sigterm} in flight at SIGTERM, exit {r.exit} after "
                         f"{r.drain_seconds:.1f} s; long stream running at SIGTERM: {r.stream_running_at_sigterm}, "
                         f"complete: {r.stream.ok} ({r.stream.tokens} chunks) {r.stream.error}")
        for f in self.failed[:10]:
            lines.append(f"- failed: t={f.sent:.1f}s {f.phase} stream={f.stream} status={f.status} {f.error[:160]}")
        return "\n".join(lines)


def _inflight(log: Path) -> int | None:
    for line in log.read_text(errors="replace").splitlines():
        if "SIGTERM: draining" in line:
            return int(line.split("SIGTERM: draining", 1)[1].split()[0])
    return None


def run_gateway_restarts(workdir: Path, nginx_binary: str, *, rate: float = 8, stream_every: int = 3,
                         stream_tokens: int = 600, settle: float = 1.0, drain_timeout: float = 60,
                         ready_timeout: float = 90, log: Callable[[str], None] = lambda _: None) -> GatewayReport:
    """The whole sequence (module docstring); every process started here is stopped before returning."""
    backend = Worker("backend", workdir, drain_timeout)
    backend_url = f"http://{backend.addr}"
    a, b = (Gateway(n, workdir, drain_timeout, backend_url) for n in ("A", "B"))
    a2, b2 = (Gateway(n, workdir, drain_timeout, backend_url) for n in ("A2", "B2"))
    nginx = Nginx(nginx_binary, workdir)
    started: list[Worker] = [backend]
    client: LoadClient | None = None
    restarts: list[Restart] = []
    budget = 4 * ready_timeout + 2 * drain_timeout + 60

    def start(*workers: Worker) -> None:
        for w in workers:
            started.append(w)
            w.start()
        for w in workers:
            w.wait_ready(ready_timeout)

    def phase(name: str) -> None:
        assert client is not None
        client.phase = name
        log(f"[{time.monotonic() - client.t0:6.1f}s] {name}")

    def restart(old: Gateway, other: Gateway, new: Gateway, stream: Stream) -> None:
        """`stream` was started while `old` was nginx's only upstream (so it is on `old`)."""
        assert client is not None and old.proc is not None
        nginx.reload([old.addr, other.addr])
        time.sleep(settle)  # traffic on both
        phase(f"{old.name} removed")
        nginx.reload([other.addr])  # the endpoint removal, during the preStop sleep
        phase(f"{old.name} draining")
        running = not stream.done.is_set()
        sigterm = time.monotonic()
        old.proc.send_signal(signal.SIGTERM)
        try:
            code = old.proc.wait(timeout=drain_timeout + 30)
        except subprocess.TimeoutExpired as exc:
            raise RolloutError(f"gateway {old.name} did not exit within {drain_timeout + 30:.0f}s of SIGTERM") from exc
        restarts.append(Restart(old.name, old.addr, code, time.monotonic() - sigterm, _inflight(old.log), stream,
                                running))
        phase(f"{new.name} starting")
        start(new)

    def long_stream() -> Stream:
        stream = Stream(nginx.url, stream_tokens)
        stream.start()
        if not stream.started.wait(REQUEST_TIMEOUT):
            raise RolloutError("a long stream got no response headers")
        return stream

    try:
        backend.start()
        start(a, b)
        backend.wait_ready(ready_timeout)
        nginx.start([a.addr])
        client = LoadClient(nginx.url, rate, max_requests=math.ceil(rate * budget), max_seconds=budget,
                            stream_every=stream_every)
        client.start()
        phase("A alone")
        stream_a = long_stream()  # nginx has A only: on A
        restart(a, b, a2, stream_a)
        stream_b = long_stream()  # nginx has B only: on B
        restart(b, a2, b2, stream_b)
        nginx.reload([a2.addr, b2.addr])
        phase("A2 and B2")
        time.sleep(settle)
        samples = client.stop()
        client = None
        for s in (stream_a, stream_b):
            if not s.done.wait(REQUEST_TIMEOUT * 4):
                raise RolloutError("a long stream did not finish")
    finally:
        if client is not None:
            client.stop()
        nginx.stop()
        for w in reversed(started):
            w.stop()
    per_upstream, retried = parse_access_log(nginx.access_log)
    return GatewayReport(samples, restarts, dict(per_upstream), retried,
                         {g.addr: g.name for g in (a, b, a2, b2)})
