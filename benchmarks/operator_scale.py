"""Operator benchmark: convergence time and API writes for 1 and N resources, and the idle cost.

Runs the sandbox cluster in this process and the real `deepseek-operator` as a subprocess, creates
resources through kubectl, and reads the sandbox's write counter and the operator's metrics.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/operator_scale.py --count 20

Prints a markdown table of ratios measured in this one run (docs/benchmarks.md, "Operator").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import re
import socket
import sys
import time
from typing import Any

import httpx

from deepseek_sandbox import Sandbox

ROOT = pathlib.Path(__file__).resolve().parents[1]
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
OPERATOR = pathlib.Path(sys.executable).parent / "deepseek-operator"
RESOURCE = """\
apiVersion: deepseek.ai/v1alpha1
kind: DeepSeekDeployment
metadata: {{name: {name}}}
spec:
  image: registry.example.com/deepseek-worker:1.0.0
  replicas: 2
  model: {{id: deepseek-ai/DeepSeek-R1-Distill-Qwen-7B}}
  resources: {{gpus: 0}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def kubectl(sb: Sandbox, *args: str, stdin: str | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(KUBECTL), *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={**os.environ, **sb.kubectl_env()})
    out, _ = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 120)
    if proc.returncode:
        raise RuntimeError(out.decode())
    return out.decode()


async def metric(port: int, name: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def all_ready(sb: Sandbox, names: list[str]) -> bool:
    for name in names:
        obj = sb.get("dsd", "default", name) or {}
        status = obj.get("status", {})
        ready = [c for c in status.get("conditions", []) if c["type"] == "Ready" and c["status"] == "True"]
        if not ready or status.get("observedGeneration") != obj["metadata"].get("generation"):
            return False
    return True


async def until(check: Any, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def converge(sb: Sandbox, names: list[str]) -> tuple[float, int]:
    """Apply `names` at once; seconds until all are Ready and the writes it took."""
    sb.reset_stats()
    started = time.perf_counter()
    await kubectl(sb, "apply", "-f", "-",
                  stdin="---\n".join(RESOURCE.format(name=n) for n in names))

    async def ready() -> bool:
        return all_ready(sb, names)

    await until(ready, 300)
    return time.perf_counter() - started, sb.stats().total


async def run(count: int) -> None:
    async with Sandbox(ROOT / "crds", ready_delay=0.2) as sb:
        port = free_port()
        env = {**os.environ, **sb.kubectl_env(), "DEEPSEEK_OPERATOR_METRICS_PORT": str(port),
               "DEEPSEEK_OPERATOR_RESYNC_SECONDS": "2"}
        proc = await asyncio.create_subprocess_exec(str(OPERATOR), "--standalone", "--namespace=default",
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL, env=env)
        try:
            async def up() -> bool:
                try:
                    await metric(port, "deepseek_operator_reconciles_total")
                    return True
                except httpx.HTTPError:
                    return False

            await until(up, 60)
            one_s, one_w = await converge(sb, ["single"])
            names = [f"bulk-{i}" for i in range(count)]
            many_s, many_w = await converge(sb, names)
            sb.reset_stats()
            before = await metric(port, "deepseek_operator_reconciles_total")
            sum_before = await metric(port, "deepseek_operator_reconcile_duration_seconds_sum")
            idle_started = time.perf_counter()

            async def idle_round() -> bool:  # every resource reconciled at least twice more
                return await metric(port, "deepseek_operator_reconciles_total") >= before + 2 * (count + 1)

            await until(idle_round, 120)
            idle_s = time.perf_counter() - idle_started
            idle_reconciles = await metric(port, "deepseek_operator_reconciles_total") - before
            idle_seconds = await metric(port, "deepseek_operator_reconcile_duration_seconds_sum") - sum_before
            print(f"| figure | value (one run, {count} resources, 2 replicas each) |")
            print("|---|---|")
            print(f"| time to Ready: {count} resources / 1 resource | {many_s / one_s:.2f}x "
                  f"({many_s:.1f} s / {one_s:.1f} s) |")
            print(f"| API writes to converge, per resource ({count} at once / alone) | "
                  f"{many_w / count:.1f} / {one_w} |")
            print(f"| writes while idle ({idle_reconciles:.0f} reconciles in {idle_s:.1f} s) | "
                  f"{sb.stats().total} |")
            print(f"| idle reconciles per second (sandbox and operator sharing the machine) | "
                  f"{idle_reconciles / idle_s:.1f} |")
            print(f"| mean idle reconcile wall time ({count + 1} resources resyncing together) | "
                  f"{1000 * idle_seconds / max(idle_reconciles, 1):.0f} ms |")
        finally:
            proc.terminate()
            await proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20, help="resources created at once")
    asyncio.run(run(parser.parse_args().count))


if __name__ == "__main__":
    main()
