"""Worker throughput: bare `model.generate` vs the engine (in process and over HTTP), on the CPU.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/worker_throughput.py [--tokens 64] [--repeats 3]

Builds a random DeepSeek-V3 model (MLA + MoE, wider than the test model so that the model, not
Python, dominates a step) once under ~/.cache/deepseek-worker/bench-v1, then measures greedy
tokens/s for: bare generate at batch 1 and 8, the engine at concurrency 1 and 8, and the same
engine behind the HTTP app (uvicorn on 127.0.0.1, /v1/completions). It also measures
time-to-first-token (TTFT) overhead and the prefix-cache speed-up for a long shared system prompt.
Then, on the tiny test model: 8 concurrent streaming chat requests over HTTP (max_tokens 64) vs
one bare batched `model.generate` of the same 8 prompts, interleaved, ratio measured in one run
(`--stream-chat-only` runs just that). Prints a markdown table of ratios and writes
docs/worker-throughput.png. Numbers are medians of
`--repeats` interleaved runs; EOS is disabled so every request generates exactly `--tokens`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The imports below come after the offline switches: transformers reads them at import time.
import torch

from deepseek_worker.engine import Engine
from deepseek_worker.testing.tiny import build_random_model
from deepseek_worker.types import EngineConfig, SamplingParams

BENCH = {  # ~37M parameters, 4 layers (1 dense + 3 MoE with 8 experts, top-2)
    "hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 128, "num_hidden_layers": 4,
    "num_attention_heads": 8, "num_key_value_heads": 8, "n_routed_experts": 8, "kv_lora_rank": 128,
    "q_lora_rank": 128, "qk_rope_head_dim": 32, "qk_nope_head_dim": 32, "v_head_dim": 32,
    "initializer_range": 0.02,
}
PROMPT = "Explain, step by step, how continuous batching improves the throughput of an LLM server."
DOCS = Path(__file__).resolve().parent.parent / "docs"


def bench_model() -> Path:
    dest = Path.home() / ".cache" / "deepseek-worker" / "bench-v1"
    if not (dest / "model.safetensors").exists():
        build_random_model(dest, **BENCH)
    return dest


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


async def atimed(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


class Bench:
    """Holds the engine (for bare runs its loaded model too) and the measurements."""

    def __init__(self, engine: Engine, tokens: int) -> None:
        assert engine.loaded is not None and engine._runner is not None
        engine._runner.eos_ids = frozenset()  # generate exactly `tokens` every time
        self.engine, self.model, self.tokens = engine, engine.loaded.model, tokens
        self.ids = engine.tokenize(engine.apply_chat_template([{"role": "user", "content": PROMPT}]))
        self.results: dict[str, list[float]] = {}

    def record(self, name: str, value: float) -> None:
        self.results.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.results[name])

    @torch.inference_mode()
    def bare(self, batch: int, new_tokens: int) -> float:
        ids = torch.tensor([self.ids] * batch)
        return timed(lambda: self.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, do_sample=False, pad_token_id=1))

    async def engine_run(self, conc: int, new_tokens: int, ids: list[int] | None = None) -> float:
        params = SamplingParams(max_tokens=new_tokens, temperature=0)

        async def one(i: int) -> None:
            async for _ in self.engine.generate(ids or self.ids, params, f"bench-{i}"):
                pass

        return await atimed(lambda: asyncio.gather(*(one(i) for i in range(conc))))

    async def ttft(self, ids: list[int]) -> float:
        start = time.perf_counter()
        async for _ in self.engine.generate(ids, SamplingParams(max_tokens=1, temperature=0), "ttft"):
            break
        return time.perf_counter() - start


async def measure_in_process(b: Bench, repeats: int) -> None:
    n = b.tokens
    for _ in range(repeats):  # interleaved so drift (other load on the box) hits all alike
        for batch in (1, 8):
            b.record(f"bare b{batch}", batch * n / await asyncio.to_thread(b.bare, batch, n))
            b.record(f"engine c{batch}", batch * n / await b.engine_run(batch, n))
        b.record("bare ttft", await asyncio.to_thread(b.bare, 1, 1))
        b.record("engine ttft", await b.ttft(b.ids))


async def measure_prefix(b: Bench, repeats: int) -> None:
    for r in range(repeats):
        system = f"Session {r}. " + " ".join(f"Rule {i}: answer precisely and cite sources." for i in range(120))
        cold, warm = (b.engine.tokenize(b.engine.apply_chat_template(
            [{"role": "system", "content": system}, {"role": "user", "content": q}])) for q in ("Hi", "Hello?"))
        b.record("prefix cold ttft", await b.ttft(cold))
        b.record("prefix warm ttft", await b.ttft(warm))
    b.record("prefix prompt tokens", float(len(warm)))


def measure_http(b: Bench, repeats: int) -> bool:
    """Same engine behind build_app + uvicorn; returns False when the HTTP layer is absent."""
    try:
        import httpx
        import uvicorn

        from deepseek_worker.server import build_app
        from deepseek_worker.settings import Settings
    except ImportError:
        return False
    engine = Engine(b.engine.config)
    app = build_app(engine, Settings(model=b.engine.config.model, max_new_tokens=4096))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not (server.started and engine.ready):
        if time.monotonic() > deadline:
            raise RuntimeError("HTTP server or engine did not start")
        time.sleep(0.05)
    assert engine._runner is not None
    engine._runner.eos_ids = frozenset()
    port = server.servers[0].sockets[0].getsockname()[1]
    body = {"model": b.engine.config.model, "prompt": b.engine.apply_chat_template(
        [{"role": "user", "content": PROMPT}]), "max_tokens": b.tokens, "temperature": 0}

    async def run(conc: int) -> float:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
            async def one() -> None:
                r = await client.post("/v1/completions", json=body)
                r.raise_for_status()
                assert r.json()["usage"]["completion_tokens"] == b.tokens

            return await atimed(lambda: asyncio.gather(*(one() for _ in range(conc))))

    try:
        for _ in range(repeats):
            for conc in (1, 8):
                b.record(f"http c{conc}", conc * b.tokens / asyncio.run(run(conc)))
    finally:
        server.should_exit = True
        thread.join(60)
    return True


STREAM_QUESTIONS = [f"Question {i}: in one paragraph, what is {i} times {i + 1}, and why?" for i in range(8)]


class StreamChatBench:
    """Streaming chat over HTTP vs bare batched `model.generate`, on the tiny test model.

    The worker (build_app + uvicorn on 127.0.0.1, in a thread of this process) gets `conc`
    concurrent `POST /v1/chat/completions` with `stream: true`, `max_tokens` = `tokens`, greedy,
    EOS disabled; the client (httpx, on this process's event loop) reads every SSE event. The
    baseline is one `model.generate` of the same prompts (the chat template rendered and tokenized
    by the worker's own tokenizer, left-padded) with exactly `tokens` new tokens. Both run in
    the same process, interleaved, so their ratio is measured in one run.
    """

    def __init__(self, tokens: int, conc: int) -> None:
        from deepseek_worker.server import build_app
        from deepseek_worker.settings import Settings
        from deepseek_worker.testing.tiny import build_tiny_model

        self.tokens, self.conc = tokens, conc
        settings = Settings(model=str(build_tiny_model()), served_model_name="tiny", max_model_len=512,
                            max_new_tokens=tokens, max_batch_size=conc, max_concurrent_requests=4 * conc)
        self.engine = Engine(settings.engine_config())
        self.server, self.thread = serve(build_app(self.engine, settings))
        assert self.engine._runner is not None and self.engine.loaded is not None
        self.engine._runner.eos_ids = frozenset()  # exactly `tokens` per request
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.messages = [[{"role": "user", "content": q}] for q in STREAM_QUESTIONS[:conc]]
        prompts = [self.engine.tokenize(self.engine.apply_chat_template(m)) for m in self.messages]
        width = max(len(p) for p in prompts)
        self.ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
        self.mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        self.model = self.engine.loaded.model

    @torch.inference_mode()
    def bare(self) -> float:
        """Generated tokens/s of one batched greedy `model.generate`."""
        seconds = timed(lambda: self.model.generate(
            self.ids, attention_mask=self.mask, max_new_tokens=self.tokens, min_new_tokens=self.tokens,
            do_sample=False, pad_token_id=0))
        return self.conc * self.tokens / seconds

    async def http(self) -> float:
        """Generated tokens/s of `conc` concurrent streaming chat requests, first byte sent to last [DONE]."""
        import httpx

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=300) as client:
            async def one(messages: list[dict[str, str]]) -> None:
                body = {"model": "tiny", "messages": messages, "max_tokens": self.tokens, "temperature": 0,
                        "stream": True, "stream_options": {"include_usage": True}}
                usage = None
                async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    r.raise_for_status()
                    async for line in r.aiter_lines():
                        if line.startswith("data: {") and '"usage":{' in line:
                            usage = json.loads(line[6:])["usage"]
                assert usage is not None and usage["completion_tokens"] == self.tokens, usage

            seconds = await atimed(lambda: asyncio.gather(*(one(m) for m in self.messages)))
        return self.conc * self.tokens / seconds

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


def serve(app: Any) -> tuple[Any, threading.Thread]:
    """uvicorn on 127.0.0.1:<free port> in a daemon thread; returns once the app's engine is ready."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not (server.started and app.state.engine.ready):
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("HTTP server or engine did not start")
        time.sleep(0.05)
    return server, thread


def measure_stream_chat(tokens: int, conc: int, repeats: int) -> dict[str, float]:
    """Interleaved repeats of bare generate and streaming chat over HTTP; medians and their ratio."""
    bench = StreamChatBench(tokens, conc)
    try:
        bench.bare()  # warm-up: first-call allocations, lazy inits, the connection pool
        asyncio.run(bench.http())
        bare, http = [], []
        for _ in range(repeats):
            bare.append(bench.bare())
            http.append(asyncio.run(bench.http()))
    finally:
        bench.close()
    ratios = [h / b for h, b in zip(http, bare, strict=True)]
    return {"bare": statistics.median(bare), "http": statistics.median(http), "ratio": statistics.median(ratios)}


def stream_chat_report(result: dict[str, float], tokens: int, conc: int) -> str:
    return (f"Streaming chat over HTTP (tiny model, {conc} concurrent, max_tokens {tokens}): "
            f"{result['http']:.0f} tok/s; bare batched model.generate of the same {conc} prompts: "
            f"{result['bare']:.0f} tok/s; ratio {result['ratio']:.2f}x (aim >= 0.8).")


def report(b: Bench, http: bool) -> str:
    m = b.median
    rows = [
        ("engine c1 / bare b1", m("engine c1") / m("bare b1"), ">= 0.9"),
        ("engine c8 / bare b8", m("engine c8") / m("bare b8"), ">= 0.8"),
        ("engine c8 / engine c1", m("engine c8") / m("engine c1"), ">= 4"),
        ("bare b8 / bare b1 (the model's own batching gain: ceiling of the line above)",
         m("bare b8") / m("bare b1"), ""),
    ]
    if http:
        rows += [("http c1 / engine c1", m("http c1") / m("engine c1"), ""),
                 ("http c8 / engine c8", m("http c8") / m("engine c8"), "")]
    rows += [("prefix cache: cold TTFT / warm TTFT", m("prefix cold ttft") / m("prefix warm ttft"), "> 1")]
    lines = ["| ratio | measured | aim |", "|---|---|---|"]
    lines += [f"| {name} | {value:.2f}x | {aim} |" for name, value, aim in rows]
    absolute = ", ".join(f"{k} {m(k):.0f} tok/s" for k in b.results if k[-2:] in ("b1", "b8", "c1", "c8"))
    lines += ["", f"Absolute (this machine, this run): {absolute}.",
              f"TTFT: bare {m('bare ttft') * 1e3:.1f} ms, engine {m('engine ttft') * 1e3:.1f} ms "
              f"(overhead {(m('engine ttft') - m('bare ttft')) * 1e3:+.1f} ms); prefix cache "
              f"({m('prefix prompt tokens'):.0f}-token prompt): cold {m('prefix cold ttft') * 1e3:.1f} ms, "
              f"warm {m('prefix warm ttft') * 1e3:.1f} ms."]
    return "\n".join(lines)


def plot(b: Bench, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in ("bare b1", "engine c1", "http c1", "bare b8", "engine c8", "http c8") if k in b.results]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(names, [b.median(k) for k in names],
           color=["#888" if k.startswith("bare") else "#3a7" if k.startswith("engine") else "#37a" for k in names])
    ax.set_ylabel("generated tokens / s")
    ax.set_title(f"Worker throughput, random DeepSeek-V3 (~37M params), CPU x{torch.get_num_threads()}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main_async(args: argparse.Namespace) -> Bench:
    engine = Engine(EngineConfig(model=str(bench_model()), max_batch_size=8, max_model_len=4096))
    await engine.start()
    try:
        b = Bench(engine, args.tokens)
        await b.engine_run(2, 4)  # warm-up: first-call allocations and lazy inits
        await asyncio.to_thread(b.bare, 2, 4)
        await measure_in_process(b, args.repeats)
        await measure_prefix(b, args.repeats)
        return b
    finally:
        await engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plot", type=Path, default=DOCS / "worker-throughput.png")
    parser.add_argument("--stream-chat-only", action="store_true",
                        help="only the tiny-model streaming chat vs bare generate comparison")
    args = parser.parse_args()
    stream_chat = measure_stream_chat(args.tokens, 8, max(args.repeats, 5))
    if args.stream_chat_only:
        print(stream_chat_report(stream_chat, args.tokens, 8))
        return
    b = asyncio.run(main_async(args))
    http = measure_http(b, args.repeats)
    plot(b, args.plot)
    print(report(b, http))
    print("\n" + stream_chat_report(stream_chat, args.tokens, 8))
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
