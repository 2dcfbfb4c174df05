"""Gateway mode's cost: per-request overhead (p50) and streaming throughput, through the gateway vs direct.

    .venv/bin/python benchmarks/gateway_overhead.py [--requests 400] [--events 2000] [--concurrency 4]
    .venv/bin/python benchmarks/gateway_overhead.py --backend tiny   # our worker on the tiny model

Three processes on 127.0.0.1, each in its own session and stopped by its PID: a backend, the
gateway (`deepseek-worker` with DEEPSEEK_GATEWAY_CONFIG_JSON: one variant, that backend, an API key)
and this driver. The default backend is a raw ASGI stub (this file, `--serve-stub PORT`) that answers
a fixed JSON reply at once and streams `--events` SSE events of ~120 bytes as fast as it can: what
is measured is the gateway alone, not an engine. `--backend tiny` puts our worker on the tiny model
behind it instead (tokens per second of real streams; slower, and dominated by the model).

Measured, each after a warm-up, direct first then through the gateway, alternated `--repeats` times
(2 by default):
- overhead: p50 (and p90) of sequential non-streaming requests, the best of the repeats; the gateway's
  p50 minus direct's;
- streaming: events (stub) or tokens (tiny) per second over --concurrency parallel streams, the best of
  the repeats, and their ratio; with the ratio of each repeat's pair (run back to back, so a change in
  the machine's load hits both sides of a pair alike) and the median of those: on a shared machine the
  paired median is the figure to read, the best-of ratio compares two different moments.
`--via proxy` runs the same edge in proxy mode (DEEPSEEK_UPSTREAM) in place of the gateway, for reference.
Results: $OUT/gateway_overhead_<via>_<backend>.json (or under /tmp/worker-bench) and stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

KEY = "sk-gateway-bench-0123456789"
REPLY = (b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"bench","choices":[{"index":0,'
         b'"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],'
         b'"usage":{"prompt_tokens":7,"completion_tokens":1,"total_tokens":8}}')
EVENT = (b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"bench","choices":[{"index":0,'
         b'"delta":{"content":"tok"}}]}\n\n')
DEADLINE = 120.0
COMPLETION_TOKENS = re.compile(rb'"completion_tokens":\s*(\d+)')


# ---- the stub backend (run in its own process) ----------------------------------------------------

def stub_app(events: int) -> Any:
    """A raw ASGI worker pod: /health/ready, /metrics, chat (JSON or a stream of `events` events)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] != "/v1/chat/completions":
            text = b"deepseek_worker_queue_depth 0\n" if scope["path"] == "/metrics" else b"{}"
            await _whole(send, text)
        elif b'"stream":true' not in body.replace(b" ", b""):
            await _whole(send, REPLY)
        else:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
            for _ in range(events):
                await send({"type": "http.response.body", "body": EVENT, "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    return app


async def _whole(send: Any, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---- processes ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def process(argv: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[None]:
    """Start `argv` in its own session, wait for `ready_url` to answer 200; SIGTERM, then SIGKILL, by PID."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + DEADLINE
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{argv[1:3]} exited {proc.returncode}: {log.read_text()[-2000:]}")
                try:
                    if httpx.get(ready_url, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{ready_url} not ready within {DEADLINE:g} s")
                time.sleep(0.1)
            yield
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(20)


# ---- measurements ---------------------------------------------------------------------------------

def chat(model: str, stream: bool, max_tokens: int) -> dict[str, Any]:
    request: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Tell me a story."}],
                               "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    if stream:
        request["stream_options"] = {"include_usage": True}
    return request


def latencies(url: str, headers: dict[str, str], request: dict[str, Any], n: int) -> list[float]:
    """Seconds per sequential non-streaming request over one keep-alive connection."""
    out = []
    with httpx.Client(timeout=DEADLINE, headers=headers) as client:
        for _ in range(n):
            started = time.perf_counter()
            response = client.post(url + "/v1/chat/completions", json=request)
            out.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
    return out


async def stream_rate(url: str, headers: dict[str, str], request: dict[str, Any], concurrency: int,
                      rounds: int, tokens: bool) -> tuple[float, int]:
    """(units per second, errors) over `concurrency` parallel streams, `rounds` each; a unit is an event
    (stub) or a completion token (usage of the last event, tiny)."""
    errors = 0
    units = 0

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal errors, units
        for _ in range(rounds):
            async with client.stream("POST", url + "/v1/chat/completions", json=request) as response:
                if response.status_code != 200:
                    errors += 1
                    await response.aread()
                    continue
                tail = b""
                async for chunk in response.aiter_raw():
                    units += 0 if tokens else chunk.count(b"data: {")
                    tail = (tail + chunk)[-4096:]
                if not tail.endswith(b"data: [DONE]\n\n"):
                    errors += 1
                elif tokens and (found := COMPLETION_TOKENS.findall(tail)):
                    units += int(found[-1])

    async with httpx.AsyncClient(timeout=DEADLINE, headers=headers,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        started = time.perf_counter()
        await asyncio.gather(*(one(client) for _ in range(concurrency)))
        took = time.perf_counter() - started
    return units / took, errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(direct: str, through: str, args: argparse.Namespace, model: str, tokens: bool) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {KEY}"}
    plain = chat(model, False, 1)
    streamed = chat(model, True, args.new_tokens)
    for url, headers in ((direct, {}), (through, auth)):  # warm-up: connections, caches
        latencies(url, headers, plain, 20)
        asyncio.run(stream_rate(url, headers, streamed, args.concurrency, 1, tokens))
    runs: dict[str, dict[str, list[Any]]] = {"direct": {"lat": [], "rate": []}, "gateway": {"lat": [], "rate": []}}
    for _ in range(args.repeats):
        for name, url, headers in (("direct", direct, {}), ("gateway", through, auth)):
            runs[name]["lat"].append(latencies(url, headers, plain, args.requests))
            runs[name]["rate"].append(asyncio.run(stream_rate(url, headers, streamed, args.concurrency,
                                                              args.rounds, tokens)))
    result: dict[str, Any] = {}
    for name, run in runs.items():
        p50 = min(statistics.median(lat) for lat in run["lat"])
        p90 = min(percentile(lat, 0.9) for lat in run["lat"])
        rate = max(r for r, _ in run["rate"])
        result[name] = {"p50_ms": round(p50 * 1000, 3), "p90_ms": round(p90 * 1000, 3),
                        "stream_units_per_s": round(rate, 1), "stream_errors": sum(e for _, e in run["rate"])}
    result["overhead_p50_ms"] = round(result["gateway"]["p50_ms"] - result["direct"]["p50_ms"], 3)
    result["stream_throughput_ratio"] = round(result["gateway"]["stream_units_per_s"]
                                              / result["direct"]["stream_units_per_s"], 3)
    paired = [through[0] / direct[0] for direct, through in zip(runs["direct"]["rate"], runs["gateway"]["rate"],
                                                                strict=True)]
    result["stream_ratio_per_repeat"] = [round(r, 3) for r in paired]
    result["stream_ratio_paired_median"] = round(statistics.median(paired), 3)
    return result


def pinned(backend: list[str], gateway: list[str], backend_env: dict[str, str]
           ) -> tuple[list[str], list[str], dict[str, str]]:
    """`--pin`: the backend alone on the last CPU with one torch thread; the gateway and this driver on
    the rest. Co-located on shared cores, every CPU second the gateway spends is taken from the model's
    threads (and torch's parallel ops wait for the slowest), which is not what a cluster measures."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs two CPUs")
    rest = ",".join(str(c) for c in cpus[:-1])
    os.sched_setaffinity(0, set(cpus[:-1]))
    return (["taskset", "-c", str(cpus[-1]), *backend], ["taskset", "-c", rest, *gateway],
            {**backend_env, "OMP_NUM_THREADS": "1"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["stub", "tiny"], default="stub")
    parser.add_argument("--requests", type=int, default=400, help="sequential requests per latency run")
    parser.add_argument("--events", type=int, default=2000, help="events per stub stream")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens per tiny-model stream")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="streams per client per throughput run")
    parser.add_argument("--repeats", type=int, default=2, help="direct/gateway alternations (paired ratios)")
    parser.add_argument("--pin", action="store_true",
                        help="the backend on the last CPU (one torch thread), the gateway and this driver on "
                             "the others: as in a cluster, where the gateway pods run off the GPU nodes")
    parser.add_argument("--via", choices=["gateway", "proxy"], default="gateway",
                        help="proxy: the same edge in proxy mode (DEEPSEEK_UPSTREAM) instead, for reference")
    parser.add_argument("--serve-stub", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stub:
        import uvicorn

        uvicorn.run(stub_app(args.events), host="127.0.0.1", port=args.serve_stub, log_level="warning")
        return 0
    out_dir = Path(os.environ.get("OUT") or "/tmp/worker-bench")
    out_dir.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    backend_port, gateway_port = free_port(), free_port()
    backend = f"http://127.0.0.1:{backend_port}"
    gateway = f"http://127.0.0.1:{gateway_port}"
    if args.backend == "stub":
        backend_argv = [sys.executable, __file__, "--serve-stub", str(backend_port), "--events", str(args.events)]
        backend_env: dict[str, str] = {}
        model = "bench"
    else:
        from deepseek_worker.testing.tiny import build_tiny_model

        backend_argv = [sys.executable, "-m", "deepseek_worker.cli", "--model", str(build_tiny_model()),
                        "--served-model-name", "bench", "--max-model-len", "512", "--max-new-tokens", "256",
                        "--host", "127.0.0.1", "--port", str(backend_port)]
        backend_env = {}
        model = "bench"
    config = {"variants": [{"name": "primary", "weight": 100, "backends": [backend]}]}
    mode = ({"DEEPSEEK_GATEWAY_CONFIG_JSON": json.dumps(config)} if args.via == "gateway"
            else {"DEEPSEEK_UPSTREAM": backend})
    gateway_env = {**mode, "DEEPSEEK_API_KEYS": KEY,
                   "DEEPSEEK_HOST": "127.0.0.1", "DEEPSEEK_PORT": str(gateway_port),
                   "DEEPSEEK_MAX_CONCURRENT_REQUESTS": "256"}
    gateway_argv = [sys.executable, "-m", "deepseek_worker.cli", "--log-level", "warning"]
    if args.pin:
        backend_argv, gateway_argv, backend_env = pinned(backend_argv, gateway_argv, backend_env)
    with process(backend_argv, backend_env, backend + "/health/ready", logs / "backend.log"), \
            process(gateway_argv, gateway_env,
                    gateway + "/health/ready", logs / "gateway.log"):
        result = measure(backend, gateway, args, model, tokens=args.backend == "tiny")
    result.update(via=args.via, backend=args.backend, requests=args.requests, concurrency=args.concurrency,
                  repeats=args.repeats, pinned=args.pin,
                  events=args.events if args.backend == "stub" else None,
                  new_tokens=args.new_tokens if args.backend == "tiny" else None,
                  load_average=os.getloadavg()[0], cpus=os.cpu_count())
    (out_dir / f"gateway_overhead_{args.via}_{args.backend}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["gateway"]["stream_errors"] == result["direct"]["stream_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
