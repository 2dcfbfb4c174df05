"""The write counter (in-process and HTTP) and the deepseek-sandbox command line."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import sys

import aiohttp

from deepseek_sandbox import Sandbox

from .conftest import KUBECTL, STAND_IN_CRDS, Kubectl, deployment, eventually


async def test_counts_client_writes_not_controller_writes(sandbox: Sandbox, kubectl: Kubectl) -> None:
    sandbox.reset_stats()
    await kubectl("apply", "-f", "-", stdin=deployment("counted", replicas=2))
    await eventually(lambda: (sandbox.get("deployments", "default", "counted") or {})
                     .get("status", {}).get("readyReplicas") == 2)
    stats = sandbox.stats()
    assert stats.by_key == {("create", "deployments.apps", ""): 1}  # pods and status writes are the sandbox's
    async with aiohttp.ClientSession(sandbox.url) as http:
        async with http.get("/sandbox/v1/stats") as resp:
            body = await resp.json()
        assert body["total"] == 1
        assert body["writes"] == [{"verb": "create", "resource": "deployments.apps", "subresource": "", "count": 1}]
        async with http.post("/sandbox/v1/stats/reset") as resp:
            assert (await resp.json())["total"] == 0
    await kubectl("scale", "deploy/counted", "--replicas=1")
    assert sandbox.stats().count(verb="patch", subresource="scale") == 1
    await asyncio.sleep(0.3)  # idle: the controllers keep running but write only in-process
    assert sandbox.stats().total == 1


async def test_cli_serves_until_sigterm(tmp_path: pathlib.Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deepseek_sandbox.cli", "--port", "0", "--kubeconfig", str(kubeconfig),
        "--crds", str(STAND_IN_CRDS), "--ready-delay", "0.1", "--with-monitoring",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            url_line = (await proc.stdout.readline()).decode()
            export_line = (await proc.stdout.readline()).decode()
            cache_line = (await proc.stdout.readline()).decode()
        assert url_line.startswith("deepseek-sandbox serving http://127.0.0.1:")
        assert export_line.strip() == f"export KUBECONFIG={kubeconfig.resolve()}"
        cache = tmp_path / "kubeconfig.kubectl-cache"
        assert cache_line.strip() == f"export KUBECACHEDIR={cache.resolve()}"
        kc = await asyncio.create_subprocess_exec(
            str(KUBECTL), "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache),
            "get", "servicemonitors,widgets,ns",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(kc.communicate(), 30)
        assert kc.returncode == 0 and b"kube-system" in out, out
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            rc = await proc.wait()
    assert rc == 0
