"""tools/control-plane/up.sh restarts a cluster one of whose components died (issue 19 item 10).

Before, every component inherited up.sh's start-lock descriptor, so the lock stayed held while any
of them lived: after one died, the next up.sh waited for the lock forever (a silent hang of the
fixture). Now the components close it, and a lock held too long fails with its holders.

A cluster of its own (its own CLUSTER_DIR and ports; kwok, the scheduler and the controller-manager
listen on none), started once for the module and stopped by down.sh: the shared `.cluster` is never
touched. One start costs some 5-10 s.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import ROOT, TOOLS

CONTROL_PLANE = ROOT / "tools" / "control-plane"
START_DEADLINE = 240  # one start's own waits (wait_for) stay well below this


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class OwnCluster:
    directory: Path
    env: dict[str, str]

    @property
    def lock(self) -> Path:
        return Path(f"{self.directory}.start.lock")

    def pid(self, component: str) -> int:
        return int((self.directory / "pids" / component).read_text())

    def up(self, timeout: float | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
        """Run up.sh; a hang past `timeout` (START_DEADLINE) fails the test with what it printed so far.
        Its output goes to a file: a pipe would keep the call waiting for any child still holding it."""
        log = self.directory.parent / "up.log"
        with log.open("w") as out:
            try:
                done = subprocess.run([str(CONTROL_PLANE / "up.sh")], env={**self.env, **extra}, stdout=out,
                                      stderr=subprocess.STDOUT, timeout=timeout or START_DEADLINE, check=False)
            except subprocess.TimeoutExpired:
                pytest.fail(f"up.sh still running after {timeout or START_DEADLINE} s:\n{log.read_text()}")
        return subprocess.CompletedProcess(done.args, done.returncode, log.read_text(), log.read_text())

    def kill(self, component: str) -> int:
        """SIGKILL one component (by the PID up.sh recorded) and wait until it is gone."""
        pid = self.pid(component)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _alive(pid):
            assert time.monotonic() < deadline, f"{component} ({pid}) survived SIGKILL"
            time.sleep(0.05)
        return pid


def _text(value: str | bytes | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value or ""


def _alive(pid: int) -> bool:
    """A live process (a zombie counts as gone: up.sh's children are reaped by init, not by us)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnCluster]:
    if not (TOOLS / "kubectl").exists():
        pytest.skip("kubectl missing at .tools/bin: run `make bootstrap`")
    directory = tmp_path_factory.mktemp("control-plane") / "cluster"
    env = {**os.environ, "CLUSTER_DIR": str(directory), "PATH": f"{TOOLS}:{os.environ['PATH']}",
           "CLUSTER_API_PORT": str(free_port()), "CLUSTER_ETCD_PORT": str(free_port()),
           "CLUSTER_ETCD_PEER_PORT": str(free_port()), "CLUSTER_LWS_WEBHOOK_PORT": str(free_port())}
    cluster = OwnCluster(directory, env)
    try:
        started = cluster.up()  # the binaries are built once per machine (`make cluster`, cached)
        assert started.returncode == 0, started.stderr
        yield cluster
    finally:
        subprocess.run([str(CONTROL_PLANE / "down.sh")], env=env, capture_output=True, timeout=120, check=False)


def test_no_component_holds_the_start_lock(own_cluster: OwnCluster) -> None:
    held = [name for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
            for fd in Path(f"/proc/{own_cluster.pid(name)}/fd").iterdir()
            if os.readlink(fd) == str(own_cluster.lock)]
    assert held == [], f"components holding {own_cluster.lock}: {held}"
    free = subprocess.run(["flock", "-n", str(own_cluster.lock), "true"], capture_output=True, timeout=10)
    assert free.returncode == 0, "the start lock is held after up.sh returned"


def test_a_lock_held_too_long_fails_naming_its_holder(own_cluster: OwnCluster) -> None:
    own_cluster.kill("kube-scheduler")  # so that up.sh must take the lock to restart
    with own_cluster.lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # this test process holds it, as a stuck up.sh would
        done = own_cluster.up(timeout=60, CLUSTER_LOCK_WAIT_SECONDS="2")
    assert done.returncode == 1, done.stderr
    # Exactly this process: not up.sh itself nor the subshells it forks for the message (they were named
    # too, after this one, until PIDs wrapped around in CI and one came first).
    line = next((x for x in done.stderr.splitlines() if "still held after 2s by: " in x), "")
    holders = re.findall(r"(\d+) \(([^)]*)\)", line.split("still held after 2s by: ", 1)[-1])
    assert [int(pid) for pid, _ in holders] == [os.getpid()], done.stderr


def test_a_dead_component_is_restarted_within_the_deadline(own_cluster: OwnCluster) -> None:
    if _alive(own_cluster.pid("kube-scheduler")):
        own_cluster.kill("kube-scheduler")
    dead = own_cluster.pid("kube-scheduler")
    done = own_cluster.up()
    assert done.returncode == 0, done.stderr
    restarted = own_cluster.pid("kube-scheduler")
    assert restarted != dead and _alive(restarted), done.stderr
    assert "already running" not in done.stderr, done.stderr  # a fresh start, not a no-op


def test_a_slow_apiserver_is_waited_for_not_restarted(own_cluster: OwnCluster) -> None:
    """Every process alive but /readyz not answering for 8 s (a loaded machine): up.sh
    waits instead of tearing down a cluster that other test sessions may be using."""
    pids = {name: own_cluster.pid(name) for name in ("etcd", "kube-apiserver", "kwok")}
    os.kill(pids["kube-apiserver"], signal.SIGSTOP)  # frozen: /readyz times out
    resume = threading.Timer(8.0, os.kill, (pids["kube-apiserver"], signal.SIGCONT))
    resume.start()
    try:
        done = own_cluster.up(timeout=60)
    finally:
        resume.cancel()
        with contextlib.suppress(ProcessLookupError):  # gone if up.sh restarted the cluster after all
            os.kill(pids["kube-apiserver"], signal.SIGCONT)
    assert done.returncode == 0 and "already running" in done.stderr, done.stderr
    assert {name: own_cluster.pid(name) for name in pids} == pids  # nothing was restarted
