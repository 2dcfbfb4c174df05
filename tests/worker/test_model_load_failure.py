"""A worker that cannot load its model exits with status 3 and a termination message the operator reads."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

from deepseek_worker.server.lifecycle import MODEL_LOAD_EXIT_CODE, MODEL_LOAD_PREFIX

WORKER = pathlib.Path(sys.executable).parent / "deepseek-worker"


def test_missing_model_exits_3_with_termination_message(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "termination-log"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DEEPSEEK_TERMINATION_LOG": str(log)}
    done = subprocess.run([str(WORKER), "--model", str(tmp_path / "no-such-model"), "--port", str(port),
                           "--host", "127.0.0.1"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == MODEL_LOAD_EXIT_CODE, done.stderr[-2000:]
    message = log.read_text()
    assert message.startswith(f"{MODEL_LOAD_PREFIX}: ")
    assert "no-such-model" in message
