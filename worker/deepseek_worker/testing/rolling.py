"""A rolling update of two real `deepseek-worker` processes behind a real nginx, under load.

Used by tests/reliability/test_rolling_update_nginx.py (short) and benchmarks/rolling_update_nginx.py
(long); its pieces also by gateway_restart.py (the gateway's two replicas restarted). The sequence is
what a Kubernetes rollout with `maxSurge: 1, maxUnavailable: 0` does to one replica, with nginx standing
in for the endpoints controller + ingress:

1. the old worker serves alone (nginx upstream: old);
2. the new worker starts; it is added only once its readiness endpoint says ready (the readinessProbe);
3. the new worker is added to the upstream, `nginx -s reload`;
4. the old worker is removed from the upstream, `nginx -s reload` (the endpoint removal), and we wait
   until no nginx worker process of the old configuration still accepts connections (preStop);
5. SIGTERM to the old worker, which drains what is in flight and exits.

A client sends chat completions at a fixed rate the whole time; one long stream, started while the old
worker serves alone (so it is on the old worker), is still running at the SIGTERM and must complete.
Everything is on 127.0.0.1 with free ports, nginx runs in the foreground from a temporary prefix and
is stopped by its PID; every wait has a deadline and the client is bounded in count and in time.
Linux only (nginx's worker processes are read from /proc).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
HOST = "127.0.0.1"
CHAT = "/v1/chat/completions"
GENERATION = "/__generation"  # answered by nginx itself: which configuration a new connection gets
REQUEST_TIMEOUT = 30.0  # a client request slower than this is a failure


class RolloutError(RuntimeError):
    """A step of the sequence did not happen within its deadline (or a process misbehaved)."""


def find_nginx() -> str | None:
    """Debian's nginx binary (/usr/sbin is not on every user's PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.1,
             log: Path | None = None) -> T:
    """Call probe until it returns something other than None; RolloutError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            result = probe()
        except (httpx.HTTPError, OSError) as exc:
            result, last = None, repr(exc)
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RolloutError(f"timed out after {timeout:.0f}s waiting for {what} {last}\n{tail}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Signal proc (by its PID), wait up to timeout, then SIGKILL. Its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return int(proc.returncode)


# -- the workers --------------------------------------------------------------------------------------
def worker_command() -> list[str]:
    exe = Path(sys.executable).parent / "deepseek-worker"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "deepseek_worker.cli"]


class Worker:
    """One `deepseek-worker --model tiny` process on a free port, its output in `log`."""

    def __init__(self, name: str, workdir: Path, drain_timeout: float) -> None:
        self.name = name
        self.port = free_port()
        self.addr = f"{HOST}:{self.port}"
        self.log = workdir / f"worker-{name}.log"
        self.drain_timeout = drain_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "DEEPSEEK_DRAIN_TIMEOUT_SECONDS": str(self.drain_timeout)}
        argv = [*worker_command(), "--model", "tiny", "--host", HOST, "--port", str(self.port), "--log-level", "info"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float) -> None:
        """Poll /health/ready as a kubelet readinessProbe would, until it answers 200."""
        def ready() -> bool | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RolloutError(f"worker {self.name} exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            return True if httpx.get(f"http://{self.addr}/health/ready", timeout=2).status_code == 200 else None

        wait_for(f"worker {self.name} to be ready", ready, timeout, interval=0.2, log=self.log)

    def stop(self, timeout: float = 30) -> int | None:
        return stop_process(self.proc, timeout=timeout) if self.proc is not None else None


# -- nginx --------------------------------------------------------------------------------------------
NGINX_CONF = """\
# A production-style reverse proxy for the workers (generation {generation}).
{user}worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    log_format rollout '$msec\\t$status\\t$upstream_addr\\t$upstream_status\\t$request_time\\t$request_method $uri';
    access_log {prefix}/access.log rollout;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;

    upstream deepseek {{
{servers}
        keepalive 16;
        keepalive_timeout 4s;  # below uvicorn's keep-alive (5 s): nginx closes idle connections first
    }}
    server {{
        listen {host}:{port};
        location = {generation_path} {{
            access_log off;
            return 200 "{generation}\\n";
        }}
        location / {{
            proxy_pass http://deepseek;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 2;
            proxy_next_upstream_timeout 10s;
            proxy_connect_timeout 2s;
            proxy_send_timeout 60s;
            proxy_read_timeout 300s;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground (`-g 'daemon off;'`) from a temporary prefix; config rewritten per step."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.prefix = workdir / "nginx"
        self.conf = self.prefix / "nginx.conf"
        self.access_log = self.prefix / "access.log"
        self.error_log = self.prefix / "error.log"
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.generation = 0
        self.proc: subprocess.Popen[bytes] | None = None
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)

    def _argv(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(self.conf), "-e", str(self.error_log), *extra]

    def _write(self, upstreams: list[str]) -> None:
        self.generation += 1
        # As root, nginx would run its workers as `nobody`, who cannot enter a private tmp dir.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
        servers = "\n".join(f"        server {addr} weight=5 max_fails=3 fail_timeout=10s;" for addr in upstreams)
        self.conf.write_text(NGINX_CONF.format(generation=self.generation, user=user, prefix=self.prefix,
                                               servers=servers, host=HOST, port=self.port,
                                               generation_path=GENERATION))
        check = subprocess.run(self._argv("-t", "-q"), capture_output=True, text=True, timeout=30, check=False)
        if check.returncode != 0:
            raise RolloutError(f"nginx -t refused the configuration:\n{check.stderr}\n{self.conf.read_text()}")

    def start(self, upstreams: list[str], timeout: float = 20) -> None:
        self._write(upstreams)
        with (self.prefix / "stderr.log").open("wb") as out:
            self.proc = subprocess.Popen(self._argv("-g", "daemon off;"), stdout=out, stderr=subprocess.STDOUT)
        self._wait_generation(set(), timeout)

    def reload(self, upstreams: list[str], timeout: float = 30) -> None:
        """Rewrite the upstream block, `nginx -s reload`, wait until the new configuration has taken over."""
        before = set(self.worker_pids())
        self._write(upstreams)
        done = subprocess.run(self._argv("-s", "reload"), capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise RolloutError(f"nginx -s reload exited {done.returncode}: {done.stderr}")
        self._wait_generation(before, timeout)

    def _wait_generation(self, old_workers: set[int], timeout: float) -> None:
        """New connections get this generation, and no worker of an older one still accepts connections.

        A worker of the old configuration closes its listening sockets when it gets the master's QUIT
        and renames itself "worker process is shutting down"; it then only finishes what it has in
        flight (so requests it already passed to an upstream still complete).
        """
        def taken_over() -> bool | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RolloutError(f"nginx exited {self.proc.returncode}: {self.error_log.read_text()[-3000:]}")
            with httpx.Client(timeout=2) as client:  # a fresh connection: accepted by a current worker
                served = client.get(f"{self.url}{GENERATION}").text.strip()
            if served != str(self.generation):
                return None
            return True if not any(_still_accepting(pid) for pid in old_workers) else None

        wait_for(f"nginx generation {self.generation} to take over", taken_over, timeout, interval=0.05,
                 log=self.error_log)

    def worker_pids(self) -> list[int]:
        """The master's children (its worker processes), from /proc."""
        assert self.proc is not None
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    children.append(int(stat.parent.name))
        return children

    def stop(self, timeout: float = 15) -> None:
        """Graceful stop (SIGQUIT to the master's PID), SIGKILL at the deadline."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGQUIT, timeout)


def _still_accepting(pid: int) -> bool:
    """An nginx worker that has neither exited nor renamed itself "... is shutting down"."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:  # exited
        return False
    return bool(title) and "shutting down" not in title  # a zombie (exited, not yet reaped) has no title


# -- the client ---------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One client request: when it was sent (s since the client started), in which phase, how it went."""

    sent: float
    phase: str
    latency: float
    status: int | None  # None: connection error or timeout
    error: str = ""
    upstream: str = ""
    stream: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and not self.error


class LoadClient:
    """Chat completions at `rate` per second (open loop: each is sent on schedule, however slow the others).

    Bounded: at most `max_requests`, none scheduled after `max_seconds`. `keepalive=False` opens a new
    connection per request (many independent API clients, as nginx sees them); with keepalive a request
    can race nginx closing an idle client connection at a reload, which is nginx's behaviour, not the
    workers'.
    """

    def __init__(self, url: str, rate: float, max_requests: int, max_seconds: float, max_tokens: int = 4,
                 keepalive: bool = False, stream_every: int = 0) -> None:
        self.url = url
        self.stream_every = stream_every  # every Nth request streams (0: none); it must end with [DONE]
        self.rate = rate
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": max_tokens}
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=32 if keepalive else 0)
        self.client = httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT, limits=limits)
        self.phase = "start"
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="client")
        self._thread = threading.Thread(target=self._schedule, name="client-scheduler", daemon=True)
        self._pending: list[tuple[float, str, concurrent.futures.Future[None]]] = []
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._thread.start()

    def _schedule(self) -> None:
        for i in range(self.max_requests):
            at = i / self.rate
            if at > self.max_seconds or self._stop.wait(max(0.0, self.t0 + at - time.monotonic())):
                return
            sent, phase = time.monotonic() - self.t0, self.phase
            stream = bool(self.stream_every) and i % self.stream_every == 0
            self._pending.append((sent, phase, self._pool.submit(self._one, sent, phase, stream)))

    def _one(self, sent: float, phase: str, stream: bool = False) -> None:
        started = time.monotonic()
        try:
            resp = self.client.post(CHAT, json={**self.body, "stream": True} if stream else self.body)
            sample = Sample(sent, phase, time.monotonic() - started, resp.status_code,
                            upstream=resp.headers.get("x-upstream", ""), stream=stream)
            if stream and resp.is_success:
                if not resp.text.rstrip().endswith("data: [DONE]") or '"choices"' not in resp.text:
                    sample.error = f"incomplete stream: {resp.text[-200:]}"
            elif resp.is_success and not resp.json().get("choices"):
                sample.error = f"no choices: {resp.text[:200]}"
            elif not resp.is_success:
                sample.error = resp.text[:200]
        except (httpx.HTTPError, ValueError) as exc:  # connection error, timeout, bad JSON
            sample = Sample(sent, phase, time.monotonic() - started, None, repr(exc), stream=stream)
        with self._lock:
            self.samples.append(sample)

    def stop(self, timeout: float = REQUEST_TIMEOUT + 10) -> list[Sample]:
        """Stop scheduling, wait (bounded) for what is in flight; the samples in sending order."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._thread.join(timeout)
        concurrent.futures.wait([f for _, _, f in self._pending], timeout=max(0.0, deadline - time.monotonic()))
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for sent, phase, future in self._pending:
                if not future.done():  # counted as failed; its thread ends with its own timeout
                    self.samples.append(Sample(sent, phase, timeout, None, "no answer before the client stopped"))
            samples = sorted(self.samples, key=lambda s: s.sent)
        if all(future.done() for _, _, future in self._pending):
            self.client.close()
        return samples


class Stream(threading.Thread):
    """One long streaming chat completion through nginx: the request in flight at the SIGTERM."""

    def __init__(self, url: str, max_tokens: int) -> None:
        super().__init__(name="long-stream", daemon=True)
        self.url = url
        self.max_tokens = max_tokens
        self.upstream = ""
        self.status: int | None = None
        self.events: list[Any] = []
        self.error = ""
        self.started = threading.Event()  # headers (and the upstream) known
        self.done = threading.Event()

    def run(self) -> None:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "Tell me a long story."}],
                "max_tokens": self.max_tokens, "temperature": 0, "stream": True}
        try:
            with httpx.stream("POST", self.url + CHAT, json=body, timeout=REQUEST_TIMEOUT * 4) as resp:
                self.status, self.upstream = resp.status_code, resp.headers.get("x-upstream", "")
                self.started.set()
                for line in resp.iter_lines():
                    if line.startswith("data: "):
                        data = line[len("data: "):]
                        self.events.append(data if data == "[DONE]" else json.loads(data))
        except (httpx.HTTPError, ValueError) as exc:
            self.error = repr(exc)
        finally:
            self.started.set()
            self.done.set()

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error and self.events[-1:] == ["[DONE]"]

    @property
    def tokens(self) -> int:
        return sum(1 for e in self.events if isinstance(e, dict) and e["choices"] and e["choices"][0]["delta"].get(
            "content"))


# -- the sequence -------------------------------------------------------------------------------------
@dataclass
class Timings:
    old_alone: float = 2.0  # seconds of traffic before the new worker starts
    both: float = 3.0  # seconds with both in the upstream
    new_alone: float = 2.0  # seconds of traffic after the old worker exited
    total: float | None = None  # if set, the last phase lasts until this many seconds since the client started


@dataclass
class Report:
    samples: list[Sample]
    phases: list[tuple[str, float]]  # (phase, started at s)
    per_upstream: Counter[str]  # chat completions per upstream address, from nginx's access log
    retried: int  # access log lines naming more than one upstream (proxy_next_upstream used)
    old_addr: str
    new_addr: str
    old_exit: int | None
    drain_seconds: float  # SIGTERM to exit of the old worker
    drain_log: str  # the old worker's "SIGTERM: draining N in-flight request(s)" line
    stream: Stream
    stream_running_at_sigterm: bool
    nginx_version: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    @property
    def inflight_at_sigterm(self) -> int | None:
        found = re.search(r"draining (\d+) in-flight", self.drain_log)
        return int(found.group(1)) if found else None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def parse_access_log(path: Path) -> tuple[Counter[str], int]:
    """Chat completions per upstream (the one that answered: the last named) and how many were retried."""
    per: Counter[str] = Counter()
    retried = 0
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 6 or fields[5] != f"POST {CHAT}":
            continue
        tried = [a.strip() for a in re.split(r"[,:] (?=\d)", fields[2]) if a.strip()]
        per[tried[-1] if tried else "-"] += 1
        retried += len(tried) > 1
    return per, retried


def run_rollout(workdir: Path, nginx_binary: str, *, rate: float = 10, timings: Timings | None = None,
                stream_tokens: int = 1000, keepalive: bool = False, drain_timeout: float = 120,
                ready_timeout: float = 120, log: Callable[[str], None] = lambda _: None) -> Report:
    """The whole sequence (module docstring); every process started here is stopped before returning."""
    timings = timings or Timings()
    old, new = Worker("old", workdir, drain_timeout), Worker("new", workdir, drain_timeout)
    nginx = Nginx(nginx_binary, workdir)
    version = subprocess.run([nginx_binary, "-v"], capture_output=True, text=True, timeout=10, check=False)
    phases: list[tuple[str, float]] = []
    client: LoadClient | None = None
    stream = Stream(nginx.url, stream_tokens)
    old_exit: int | None = None
    drain_started = drain_ended = 0.0
    running_at_sigterm = False
    # The longest the client can be needed: every phase and wait at its deadline.
    budget = (timings.total or 0) + timings.old_alone + timings.both + timings.new_alone + ready_timeout + \
        drain_timeout + 120

    def phase(name: str) -> None:
        assert client is not None
        client.phase = name
        phases.append((name, time.monotonic() - client.t0))
        log(f"[{phases[-1][1]:6.1f}s] {name}")

    try:
        old.start()
        old.wait_ready(ready_timeout)
        nginx.start([old.addr])
        client = LoadClient(nginx.url, rate, max_requests=math.ceil(rate * budget), max_seconds=budget,
                            keepalive=keepalive)
        client.start()
        phase("1 old alone")
        time.sleep(timings.old_alone)

        phase("2 new starting")
        new.start()
        new.wait_ready(ready_timeout)
        # Started while the upstream is the old worker alone: in flight on it through steps 3-5.
        stream.start()
        if not stream.started.wait(REQUEST_TIMEOUT):
            raise RolloutError("the long stream got no response headers")

        phase("3 both")
        nginx.reload([old.addr, new.addr])
        time.sleep(timings.both)

        phase("4 old removed")
        nginx.reload([new.addr])

        phase("5 old draining")
        running_at_sigterm = not stream.done.is_set()
        drain_started = time.monotonic()
        assert old.proc is not None
        old.proc.send_signal(signal.SIGTERM)
        try:
            old_exit = old.proc.wait(timeout=drain_timeout + 30)
        except subprocess.TimeoutExpired as exc:
            raise RolloutError(f"the old worker did not exit within {drain_timeout + 30:.0f}s of SIGTERM") from exc
        drain_ended = time.monotonic()

        phase("6 new alone")
        remaining = timings.new_alone
        if timings.total is not None:
            remaining = max(remaining, timings.total - (time.monotonic() - client.t0))
        time.sleep(remaining)
        samples = client.stop()
        client = None
        if not stream.done.wait(REQUEST_TIMEOUT * 4):
            raise RolloutError("the long stream did not finish")
    finally:
        if client is not None:
            client.stop()
        nginx.stop()
        new.stop()
        old.stop()
    per_upstream, retried = parse_access_log(nginx.access_log)
    drain_line = next((line for line in old.log.read_text(errors="replace").splitlines() if "SIGTERM:" in line), "")
    return Report(samples=samples, phases=phases, per_upstream=per_upstream, retried=retried, old_addr=old.addr,
                  new_addr=new.addr, old_exit=old_exit, drain_seconds=drain_ended - drain_started,
                  drain_log=drain_line, stream=stream, stream_running_at_sigterm=running_at_sigterm,
                  nginx_version=(version.stderr or version.stdout).strip())


def markdown(report: Report, rate: float) -> str:
    """The figures as a markdown table (per phase and in total) plus the per-upstream and drain lines."""
    def row(name: str, samples: list[Sample]) -> str:
        lat = [s.latency * 1000 for s in samples if s.ok]
        failed = sum(not s.ok for s in samples)
        return f"| {name} | {len(samples)} | {failed} | {percentile(lat, 50):.0f} | {percentile(lat, 99):.0f} |"

    duration = max((s.sent for s in report.samples), default=0.0)
    lines = [f"| phase (client at {rate:g} req/s) | requests | failed | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for name, _ in report.phases:
        lines.append(row(name, [s for s in report.samples if s.phase == name]))
    lines.append(row(f"**total** ({duration:.0f} s)", report.samples))
    served = ", ".join(f"{'old' if a == report.old_addr else 'new' if a == report.new_addr else a} {n}"
                       for a, n in sorted(report.per_upstream.items()))
    s = report.stream
    lines += [
        "",
        f"- served (nginx access log, $upstream_addr): {served}; retried by nginx: {report.retried}",
        f"- old worker: {report.inflight_at_sigterm} request(s) in flight at SIGTERM, exit status {report.old_exit}"
        f" after {report.drain_seconds:.1f} s of drain",
        f"- long stream ({s.max_tokens} max tokens, on {'old' if s.upstream == report.old_addr else s.upstream}):"
        f" running at SIGTERM: {report.stream_running_at_sigterm}, completed: {s.ok} ({s.tokens} content chunks)",
        f"- {report.nginx_version}",
    ]
    for failure in report.failed[:10]:
        lines.append(f"- failed: t={failure.sent:.1f}s {failure.phase} status={failure.status} {failure.error[:160]}")
    return "\n".join(lines)

