"""The worker's engine against transformers' own `generate`, in one process, on a GPU (or the CPU).

    # GPU (what issue 17 measures; about 8 minutes on an H200 for both geometries):
    python benchmarks/worker_gpu.py --device cuda --geometry 7b,v2-lite --out $OUT
    # CPU (2 cores, a couple of minutes):
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/worker_gpu.py --device cpu --geometry cpu-bench \\
        --concurrency 1,8,32 --new-tokens 16

For each geometry: a random-weight model of that shape (benchmarks/_common.py GEOMETRIES: "7b" is
DeepSeek-R1-Distill-Qwen-7B's, "v2-lite" DeepSeek-V2-Lite's, "cpu-*" small ones) is built on the device,
made EOS-proof (every request runs to max_tokens) and saved with the real DeepSeek tokenizer to a
temporary directory, which the worker's own loader loads. Then, each phase within its share of
`--budget-seconds`, results appended to `<out>/worker_gpu.json` as they come:

1. engine: `Engine.generate` in process, every concurrency, greedy and sampled (0.6 / 0.95);
2. http: the same engine behind the worker's real HTTP app (uvicorn on 127.0.0.1; the engine runs on
   the server's loop, in-process measurements are submitted to that loop), streaming chat, greedy;
3. flood: 64 requests of max_model_len (prompt + max_tokens) offered at once: errors counted;
   memory: peak allocated / reserved (torch.cuda.max_memory_*) against the operator's GPU-fit plan;
4. with the engine STOPPED and its model kept: `model.generate` eager, and
5. `model.generate(cache_implementation="static")` (compiled by transformers on CUDA; on the CPU
   static without compile), at the same batch sizes.
Tokens/s = generated tokens / wall time from the first request to the last token (prefill included).
A table of ratios follows: engine / static generate, engine / eager generate, sampled / greedy,
HTTP / in process, and the fraction of the memory-bandwidth bound (weight bytes x steps/s /
`--bandwidth`, steps/s = tokens/s / concurrency), then issue 17's goals, met or not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import fields
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
# The imports below come after the offline switches: transformers reads them at import time.
import _common as common
import torch

from deepseek_worker.engine import Engine
from deepseek_worker.types import EngineConfig, SamplingParams

GREEDY = {"temperature": 0.0, "top_p": 1.0}
SAMPLED = {"temperature": 0.6, "top_p": 0.95}  # R1's recommended settings
PHASES = {"engine": 3.0, "http": 2.0, "flood": 1.0, "eager": 1.5, "static": 2.5}  # budget weights
FLOOD_REQUESTS = 64
_ids = iter(range(10**9))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ---- the engine, hosted on its own loop (the HTTP server's when the app imports) ----------------------

class Host:
    """One engine on one event loop thread: behind the worker's HTTP app when it can be built, else bare."""

    def __init__(self, args: argparse.Namespace, model_dir: Path, max_batch: int) -> None:
        self.app_error: str | None = None
        overrides = {"model": str(model_dir), "served_model_name": "bench", "dtype": args.dtype,
                     "max_model_len": args.max_model_len, "max_batch_size": max_batch,
                     "gpu_memory_utilization": args.gpu_memory_utilization, "kv_cache_bytes": args.kv_cache_bytes,
                     "max_num_batched_tokens": args.max_num_batched_tokens, "enforce_eager": args.enforce_eager}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        known = {f.name for f in fields(EngineConfig)}
        self.config = EngineConfig(**{k: v for k, v in overrides.items() if k in known})
        self.server: common.ServerThread | None = None
        self.loop: common.LoopThread | None = None
        try:
            settings_cls, build_app = common.settings_cls(), common.build_app_fn()
            allowed = set(settings_cls.model_fields)
            settings = settings_cls(**{k: v for k, v in overrides.items() if k in allowed},
                                    max_new_tokens=max(args.new_tokens, args.flood_new_tokens),
                                    max_concurrent_requests=2 * max(max_batch, FLOOD_REQUESTS))
            config = settings.engine_config() if hasattr(settings, "engine_config") else self.config
            self.engine = Engine(config)
            self.server = common.ServerThread(build_app(self.engine, settings))
        except Exception as exc:  # noqa: BLE001 -- the HTTP phase is skipped, the rest still runs
            self.app_error = f"{type(exc).__name__}: {exc}"
            self.engine = Engine(self.config)
            self.loop = common.LoopThread()

    def start(self, deadline_s: float) -> float:
        t = time.perf_counter()
        if self.server is not None:  # the app's lifespan starts the engine
            self.server.start(lambda: bool(self.engine.ready), deadline_s)
        else:
            assert self.loop is not None
            self.loop.run(self.engine.start(), deadline_s)
        return time.perf_counter() - t

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        runner = self.server if self.server is not None else self.loop
        assert runner is not None
        return runner.run(coro, timeout)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()  # the lifespan stops the engine
        else:
            assert self.loop is not None
            self.loop.run(self.engine.stop(), 300)
            self.loop.stop()

    def prompt_ids(self, text: str) -> list[int]:
        messages = [{"role": "user", "content": text}]
        if hasattr(self.engine, "apply_chat_template") and hasattr(self.engine, "tokenize"):
            return list(self.engine.tokenize(self.engine.apply_chat_template(messages)))
        tok = self.engine.loaded.tokenizer
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return [int(i) for i in tok(rendered, add_special_tokens=False)["input_ids"]]


async def engine_run(engine: Any, prompts: list[list[int]], n: int, sampling: dict[str, float],
                     timeout: float) -> dict[str, Any]:
    """len(prompts) concurrent requests in process; tokens/s over the whole run, errors counted.
    Requests still running after `timeout` are cancelled and counted as unfinished."""
    params = SamplingParams(max_tokens=n, **sampling)
    last: dict[int, Any] = {}

    async def one(i: int, ids: list[int]) -> None:
        async for chunk in engine.generate(ids, params, f"bench-{next(_ids)}"):
            last[i] = chunk

    t = time.perf_counter()
    tasks = [asyncio.ensure_future(one(i, p)) for i, p in enumerate(prompts)]
    done, pending = await asyncio.wait(tasks, timeout=max(timeout, 1.0))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    seconds = time.perf_counter() - t
    finished = [c for c in last.values() if c.finish_reason is not None]
    errors = [c for c in finished if c.finish_reason == "error"]
    errors += [None] * sum(1 for task in done if task.exception() is not None)
    tokens = sum(c.completion_tokens for c in last.values())
    return {"tok_s": round(tokens / seconds, 1), "tokens": tokens, "expected": len(prompts) * n,
            "errors": len(errors), "unfinished": len(pending),
            "error_samples": [getattr(c, "error", None) or "exception" for c in errors[:3]],
            "seconds": round(seconds, 3)}


@torch.inference_mode()
def generate_run(model: Any, ids: list[int], batch: int, n: int, static: bool, device: str) -> dict[str, Any]:
    """One batched greedy `model.generate` of `batch` copies of the prompt, exactly `n` new tokens."""
    x = torch.tensor([ids] * batch, device=model.get_input_embeddings().weight.device)
    kw: dict[str, Any] = {"attention_mask": torch.ones_like(x), "max_new_tokens": n, "min_new_tokens": n,
                          "do_sample": False, "pad_token_id": 0}
    if static:
        kw["cache_implementation"] = "static"
        if device != "cuda":
            kw["disable_compile"] = True
    sync(device)
    t = time.perf_counter()
    out = model.generate(x, **kw)
    sync(device)
    seconds = time.perf_counter() - t
    new = (out.shape[1] - x.shape[1]) * batch
    return {"tok_s": round(new / seconds, 1), "tokens": new, "expected": batch * n, "errors": 0,
            "seconds": round(seconds, 3)}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run's figures, with every run's tokens/s kept."""
    median = sorted(runs, key=lambda r: r["tok_s"])[len(runs) // 2]
    return {**median, "runs_tok_s": [r["tok_s"] for r in runs]}


# ---- phases ---------------------------------------------------------------------------------------

class GeometryRun:
    def __init__(self, args: argparse.Namespace, res: common.Results, geometry: str, seconds: float) -> None:
        self.args, self.res, self.geometry = args, res, geometry
        self.budget = common.Budget(seconds, {p: w for p, w in PHASES.items() if p in args.phases})
        self.conc: list[int] = args.concurrency
        self.n: int = args.new_tokens

    def put(self, *keys: Any) -> None:
        *path, value = keys
        self.res.put((self.geometry, *map(str, path)), value)

    def measure(self, phase: str, key: tuple[Any, ...], run: Any, warm: Any | None) -> None:
        """Warm once, then `--repeats` runs; skipped when the phase's share of the budget is spent."""
        if self.budget.phase_left() <= 0:
            self.put(phase, *key, "skipped (budget)")
            self.res.log(self.geometry, phase, *key, "skipped (budget)")
            return
        try:
            if warm is not None:
                warm()
            runs = []
            for _ in range(self.args.repeats):
                runs.append(run())
                if self.budget.phase_left() <= 0:
                    break
            value = summarize(runs)
        except Exception as exc:  # noqa: BLE001 -- one failed measurement must not lose the others
            value = {"failed": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
        self.put(phase, *key, value)
        self.res.log(self.geometry, phase, *key, {k: v for k, v in value.items() if k != "trace"})

    def run(self) -> None:
        args, device = self.args, self.args.device
        workdir = Path(tempfile.mkdtemp(prefix=f"worker-gpu-{self.geometry}-", dir=args.workdir or scratch_dir()))
        try:
            facts = common.build_model_dir(self.geometry, workdir / "model", device, args.build_dtype)
            facts["description"] = common.GEOMETRIES[self.geometry][0]
            self.put("model", facts)
            self.res.log(self.geometry, "built", facts)
            self.weight_bytes = int(facts["weight_bytes"])
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            model, tokenizer = self.engine_phases(workdir / "model", facts)
            gc.collect()  # the engine, its KV pool and its server are gone; the model stays
            if device == "cuda":
                torch.cuda.empty_cache()
                self.put("memory", "allocated_after_engine_stop_GiB",
                         round(torch.cuda.memory_allocated() / 2**30, 3))
            if model is not None:
                self.generate_phases(model, tokenizer)
            del model
        finally:
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
            shutil.rmtree(workdir, ignore_errors=True)

    def engine_phases(self, model_dir: Path, facts: dict[str, Any]) -> tuple[Any, Any]:
        args = self.args
        host = Host(args, model_dir, max(max(self.conc), FLOOD_REQUESTS))
        if host.app_error:
            self.put("http", "skipped", f"HTTP app unavailable: {host.app_error}")
        start_s = host.start(deadline_s=max(self.budget.left(), 60))
        engine = host.engine
        self.put("engine_start_s", round(start_s, 1))
        measurements = getattr(engine, "measurements", None)
        if callable(measurements):
            self.put("engine_measurements", vars(measurements()) if hasattr(measurements(), "__dict__")
                     else str(measurements()))
        self.text = common.prompt_text(engine.loaded.tokenizer, args.prompt_tokens)
        self.ids = host.prompt_ids(self.text)
        self.put("prompt_tokens", len(self.ids))
        try:
            # In process and over HTTP are interleaved per concurrency (one shared budget), so drift on
            # a shared machine hits both alike and their ratio comes from adjacent runs.
            http_on = "http" in args.phases and host.server is not None
            self.budget.start("engine", "http")
            port = host.server.port if http_on and host.server is not None else 0
            for c in self.conc:
                if "engine" in args.phases:
                    for name, sampling in (("greedy", GREEDY), ("sampled", SAMPLED)):
                        def once(n: int, c: int = c, sampling: dict[str, float] = sampling) -> dict[str, Any]:
                            # A started measurement runs to its end (the whole budget is its limit).
                            return dict(host.run(engine_run(engine, [self.ids] * c, n, sampling,
                                                            max(self.budget.left(), 60))))
                        self.measure("engine", (f"c{c}", name), lambda once=once: once(self.n),
                                     lambda once=once: once(min(self.n, 8)))
                if http_on:
                    def http(n: int, c: int = c) -> dict[str, Any]:
                        return asyncio.run(common.stream_chat(f"http://127.0.0.1:{port}", "bench", c, n, self.text,
                                                              temperature=GREEDY["temperature"],
                                                              top_p=GREEDY["top_p"]))
                    self.measure("http", (f"c{c}", "greedy"), lambda http=http: http(self.n),
                                 lambda http=http: http(min(self.n, 8)))
            if "flood" in args.phases:
                self.budget.start("flood")
                self.flood(host)
            self.memory(engine, facts)
        finally:
            host.stop()
        loaded = engine.loaded
        return (loaded.model, loaded.tokenizer) if loaded is not None else (None, None)

    def flood(self, host: Host) -> None:
        """FLOOD_REQUESTS requests of max_model_len tokens (prompt + max_tokens) offered at once."""
        args = self.args
        if self.budget.phase_left() <= 0:
            self.put("flood", "skipped (budget)")
            return
        n = args.flood_new_tokens
        length = args.max_model_len - n
        gen = torch.Generator().manual_seed(7)
        prompts = [torch.randint(1000, 100000, (length,), generator=gen).tolist() for _ in range(FLOOD_REQUESTS)]
        try:
            value = dict(host.run(engine_run(host.engine, prompts, n, GREEDY, self.budget.phase_left())))
        except Exception as exc:  # noqa: BLE001
            value = {"failed": f"{type(exc).__name__}: {exc}"}
        value.update(requests=FLOOD_REQUESTS, prompt_tokens=length, max_tokens=n)
        stats = getattr(host.engine, "stats", None)
        if callable(stats):
            value["engine_stats"] = {k: v for k, v in vars(stats()).items() if isinstance(v, int | float)}
        self.put("flood", value)
        self.res.log(self.geometry, "flood", value)

    def memory(self, engine: Any, facts: dict[str, Any]) -> None:
        args = self.args
        mem: dict[str, Any] = {"weight_bytes_built": facts["weight_bytes"]}
        if args.device == "cuda":
            mem.update(peak_allocated_GiB=round(torch.cuda.max_memory_allocated() / 2**30, 3),
                       peak_reserved_GiB=round(torch.cuda.max_memory_reserved() / 2**30, 3),
                       device_total_GiB=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 3))
        else:
            mem["peak_rss_GiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
        mem.update(plan(args, facts, engine))
        if args.device == "cuda" and mem.get("plan_required_GiB"):
            mem["reserved_over_plan"] = round(mem["peak_reserved_GiB"] / mem["plan_required_GiB"], 3)
            mem["allocated_over_plan"] = round(mem["peak_allocated_GiB"] / mem["plan_required_GiB"], 3)
        self.put("memory", mem)
        self.res.log(self.geometry, "memory", mem)

    def generate_phases(self, model: Any, tokenizer: Any) -> None:
        args, device = self.args, self.args.device
        self.put("generate_attention", str(getattr(model.config, "_attn_implementation", "?")))
        for phase, static in (("eager", False), ("static", True)):
            if phase not in args.phases:
                continue
            self.budget.start(phase)
            if static and device == "cuda":
                torch._dynamo.reset()  # the engine's own compiled code must not count against the cache
            for c in self.conc:
                def gen(n: int, c: int = c, static: bool = static) -> dict[str, Any]:
                    return generate_run(model, self.ids, c, n, static, device)
                # Static on CUDA compiles for each shape (n included): warm with the same n, twice.
                warm = ((lambda gen=gen: (gen(self.n), gen(self.n))) if static and device == "cuda"
                        else (lambda gen=gen: gen(4)))
                self.measure(phase, (f"c{c}", "greedy"), lambda gen=gen: gen(self.n), warm)


def scratch_dir() -> str | None:
    """/dev/shm when it has room for the largest geometry (saving and loading 15-31 GB from memory takes
    seconds, not minutes), else $TMPDIR."""
    shm = Path("/dev/shm")
    with contextlib.suppress(OSError):
        if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 40 * 2**30:
            return str(shm)
    return None


def plan(args: argparse.Namespace, facts: dict[str, Any], engine: Any) -> dict[str, Any]:
    """The operator's GPU-fit plan for this model and these settings (not available: say why)."""
    gpufit = common.load_gpufit()
    if gpufit is None:
        return {"plan": "operator/deepseek_operator/gpufit.py not importable"}
    try:
        config = engine.loaded.model.config
        arch_fields = {f.name for f in fields(gpufit.Architecture)}
        mla = getattr(config, "kv_lora_rank", None)
        heads = config.num_attention_heads
        arch_kw: dict[str, Any] = {
            "parameters": facts["parameters"], "layers": config.num_hidden_layers, "hidden_size": config.hidden_size,
            "attention_heads": heads, "kv_heads": heads if mla else config.num_key_value_heads,
            "head_dim": (config.qk_nope_head_dim + config.qk_rope_head_dim) if mla else
            getattr(config, "head_dim", None) or config.hidden_size // heads,
            "vocab_size": config.vocab_size, "tied_embeddings": bool(config.tie_word_embeddings),
        }
        if mla:
            arch_kw.update(kv_lora_rank=mla, qk_rope_head_dim=config.qk_rope_head_dim,
                           qk_nope_head_dim=config.qk_nope_head_dim, v_head_dim=config.v_head_dim,
                           routed_expert_parameters=facts["routed_expert_parameters"])
        arch = gpufit.Architecture(**{k: v for k, v in arch_kw.items() if k in arch_fields})
        total = torch.cuda.get_device_properties(0).total_memory if args.device == "cuda" else 0
        inputs_kw: dict[str, Any] = {
            "model_id": "bench", "dtype": args.build_dtype, "quantization": "none",
            "max_model_len": args.max_model_len, "max_batch_size": max(max(args.concurrency), FLOOD_REQUESTS),
            "gpus": 1, "gpu_memory": f"{total // 2**20}Mi" if total else None, "architecture": arch,
            "gpu_memory_utilization": args.gpu_memory_utilization, "kv_cache_bytes": args.kv_cache_bytes,
            "max_num_batched_tokens": args.max_num_batched_tokens,
        }
        input_fields = {f.name for f in fields(gpufit.Inputs)}
        fit = gpufit.plan_inputs(gpufit.Inputs(**{k: v for k, v in inputs_kw.items()
                                                  if k in input_fields and v is not None}))
        gib = 2**30
        return {"plan_fits": fit.fits, "plan_required_GiB": round(fit.required / gib, 3),
                "plan_weights_GiB": round(fit.weights / gib, 3), "plan_kv_cache_GiB": round(fit.kv_cache / gib, 3),
                "plan_margin_GiB": round(fit.margin / gib, 3), "plan_message": fit.message,
                "plan_inputs_used": sorted(k for k in inputs_kw if k in input_fields)}
    except Exception as exc:  # noqa: BLE001 -- the plan's API may change; the measured figures stay
        return {"plan": f"failed: {type(exc).__name__}: {exc}"}


# ---- report ---------------------------------------------------------------------------------------

def tok_s(data: dict[str, Any], *keys: str) -> float | None:
    node: Any = data
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    if not isinstance(node, dict) or "tok_s" not in node or node.get("unfinished"):
        return None  # not measured, failed, or cut short by the budget (not comparable)
    return float(node["tok_s"])


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt(x: float | None, unit: str = "x") -> str:
    if x is None:
        return "-"
    return f"{x:.2f}{unit}" if unit == "x" else (f"{x:.0%}" if unit == "%" else f"{x:,.0f}")


def report(args: argparse.Namespace, data: dict[str, Any]) -> str:
    lines: list[str] = []
    for geometry in args.geometry:
        g = data.get(geometry)
        if not isinstance(g, dict):
            continue
        wb = g.get("model", {}).get("weight_bytes")
        lines += ["", f"### {geometry}: {g.get('model', {}).get('description', '')}", "",
                  "| c | engine greedy | sampled | HTTP | generate eager | static | engine/static | engine/eager "
                  "| sampled/greedy | HTTP/engine | bandwidth bound |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in args.concurrency:
            k = f"c{c}"
            eng, smp = tok_s(g, "engine", k, "greedy"), tok_s(g, "engine", k, "sampled")
            http, eager, static = tok_s(g, "http", k, "greedy"), tok_s(g, "eager", k, "greedy"), tok_s(
                g, "static", k, "greedy")
            bound = eng / c * wb / args.bandwidth if eng and wb and args.bandwidth else None
            lines.append(f"| {c} | {fmt(eng, '')} | {fmt(smp, '')} | {fmt(http, '')} | {fmt(eager, '')} | "
                         f"{fmt(static, '')} | {fmt(ratio(eng, static))} | {fmt(ratio(eng, eager))} | "
                         f"{fmt(ratio(smp, eng))} | {fmt(ratio(http, eng))} | {fmt(bound, '%')} |")
        flood, mem = g.get("flood"), g.get("memory", {})
        if isinstance(flood, dict):
            lines.append(f"\nflood: {flood.get('requests')} x {args.max_model_len} tokens offered at once: "
                         f"{flood.get('errors')} errors, {flood.get('unfinished')} unfinished, "
                         f"{flood.get('seconds')} s")
        if isinstance(mem, dict) and mem:
            shown = {k: v for k, v in mem.items() if k != "plan_message"}
            lines.append(f"memory: {shown}")
    lines += ["", goals(args, data)]
    return "\n".join(lines)


def goals(args: argparse.Namespace, data: dict[str, Any]) -> str:
    """Issue 17's goals for this device, each met / not met / not measured."""
    rows: list[tuple[str, bool | None, str]] = []

    def add(name: str, value: float | None, ok: bool | None) -> None:
        rows.append((name, ok if value is not None else None, fmt(value) if value is not None else "-"))

    for geometry in args.geometry:
        g = data.get(geometry)
        if not isinstance(g, dict):
            continue
        wb = g.get("model", {}).get("weight_bytes")
        if args.device == "cuda":
            for c in (1, 8, 32):
                r = ratio(tok_s(g, "engine", f"c{c}", "greedy"), tok_s(g, "static", f"c{c}", "greedy"))
                add(f"{geometry}: engine >= 0.9x compiled static generate at c{c}", r, r is not None and r >= 0.9)
            e1 = tok_s(g, "engine", "c1", "greedy")
            frac = e1 * wb / args.bandwidth if e1 and wb and args.bandwidth else None
            add(f"{geometry}: c1 >= 45% of the bandwidth bound", frac, frac is not None and frac >= 0.45)
            if geometry == "7b":
                e64 = tok_s(g, "engine", "c64", "greedy")
                add("7b: c64 >= 4,000 tok/s", e64, e64 is not None and e64 >= 4000)
            if geometry == "v2-lite":
                e32 = tok_s(g, "engine", "c32", "greedy")
                add("v2-lite: c32 >= 3x 234 tok/s (702)", e32, e32 is not None and e32 >= 702)
            mem = g.get("memory", {})
            r = mem.get("reserved_over_plan") if isinstance(mem, dict) else None
            add(f"{geometry}: peak reserved <= the plan", r, r is not None and r <= 1.0)
        else:
            for c in (8, 32):
                r = ratio(tok_s(g, "engine", f"c{c}", "greedy"), tok_s(g, "eager", f"c{c}", "greedy"))
                add(f"{geometry}: engine >= 1.0x eager generate at c{c}", r, r is not None and r >= 1.0)
        floor = 0.9 if args.device == "cuda" else 0.8
        for c in args.concurrency:
            r = ratio(tok_s(g, "engine", f"c{c}", "sampled"), tok_s(g, "engine", f"c{c}", "greedy"))
            add(f"{geometry}: sampled >= {floor}x greedy at c{c}", r, r is not None and r >= floor)
            if args.device == "cuda":
                r = ratio(tok_s(g, "http", f"c{c}", "greedy"), tok_s(g, "engine", f"c{c}", "greedy"))
                add(f"{geometry}: HTTP >= 0.9x in process at c{c}", r, r is not None and r >= 0.9)
        flood = g.get("flood")
        if isinstance(flood, dict) and "errors" in flood:
            bad = flood["errors"] + flood.get("unfinished", 0)
            rows.append((f"{geometry}: {FLOOD_REQUESTS} x max_model_len requests: 0 errors", bad == 0,
                         f"{flood['errors']} errors, {flood.get('unfinished', 0)} unfinished"))
    out = ["| goal | measured | |", "|---|---|---|"]
    out += [f"| {name} | {value} | {'met' if ok else 'not met' if ok is False else 'not measured'} |"
            for name, ok, value in rows]
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if cuda else "cpu")
    p.add_argument("--geometry", help=f"comma-separated, of {', '.join(common.GEOMETRIES)} "
                   "(default: 7b,v2-lite on cuda, cpu-bench on cpu)")
    p.add_argument("--concurrency", default="1,8,32,64", help="comma-separated concurrencies / batch sizes")
    p.add_argument("--new-tokens", type=int, help="new tokens per request (default 128 on cuda, 16 on cpu)")
    p.add_argument("--prompt-tokens", type=int, default=0,
                   help="pad the chat prompt to at least this many tokens (default: the 22-token prompt)")
    p.add_argument("--max-model-len", type=int, help="engine max_model_len and the flood's request length "
                   "(default 4096 on cuda, 512 on cpu)")
    p.add_argument("--flood-new-tokens", type=int, default=8, help="max_tokens of each flood request")
    p.add_argument("--repeats", type=int, default=1, help="measured runs per point (the median is kept)")
    p.add_argument("--budget-seconds", type=float, help="whole run (default 540 on cuda, 240 on cpu)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or Path(tempfile.gettempdir()) /
                                                    "worker-bench"), help="results dir (default $OUT)")
    p.add_argument("--workdir", default=None, help="where the temporary model directories go "
                   "(default /dev/shm when it has 40 GiB free, else $TMPDIR)")
    p.add_argument("--bandwidth", type=float, help="device memory bandwidth, bytes/s (default 4.8e12 on cuda: "
                   "H200 HBM3e)")
    p.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset of " + ",".join(PHASES))
    p.add_argument("--dtype", default=None, help="engine dtype (default bfloat16 on cuda, float32 on cpu)")
    p.add_argument("--gpu-memory-utilization", type=float, default=None)
    p.add_argument("--kv-cache-bytes", type=int, default=None)
    p.add_argument("--max-num-batched-tokens", type=int, default=None)
    p.add_argument("--enforce-eager", action="store_true", default=None)
    args = p.parse_args(argv)
    gpu = args.device == "cuda"
    if gpu and not cuda:
        p.error("--device cuda but torch.cuda.is_available() is False")
    args.geometry = (args.geometry or ("7b,v2-lite" if gpu else "cpu-bench")).split(",")
    unknown = [g for g in args.geometry if g not in common.GEOMETRIES]
    if unknown:
        p.error(f"unknown geometry {unknown}; known: {', '.join(common.GEOMETRIES)}")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.new_tokens = args.new_tokens or (128 if gpu else 16)
    args.max_model_len = args.max_model_len or (4096 if gpu else 512)
    args.budget_seconds = args.budget_seconds or (540 if gpu else 240)
    args.bandwidth = args.bandwidth or (4.8e12 if gpu else None)
    args.phases = args.phases.split(",")
    args.dtype = args.dtype or ("bfloat16" if gpu else "float32")
    args.build_dtype = args.dtype
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    res = common.Results(args.out / "worker_gpu.json")
    import transformers

    res.put(("env",), {
        "torch": torch.__version__, "transformers": transformers.__version__, "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(), "python": platform.python_version(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "code": common.code_version(),
    })
    res.log("env", res.data["env"])
    end = time.monotonic() + args.budget_seconds
    for i, geometry in enumerate(args.geometry):
        seconds = (end - time.monotonic()) / (len(args.geometry) - i)
        if seconds <= 0:
            res.put((geometry, "skipped"), "budget spent")
            continue
        try:
            GeometryRun(args, res, geometry, seconds).run()
        except Exception as exc:  # noqa: BLE001 -- the next geometry still runs; the error is recorded
            res.put((geometry, "failed"), f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}")
            res.log(geometry, "failed", traceback.format_exc())
    table = report(args, res.data)
    res.put(("report",), table)
    print(table)
    print(f"\nresults: {res.path}")


if __name__ == "__main__":
    main()
