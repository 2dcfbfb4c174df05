"""The operator's API client against the real apiserver: connections are kept, never outnumbered by watches.

httpcore 1.0.9 closes idle connections once the pool holds more than 20 connections in all, busy
ones included (https://github.com/encode/httpcore/pull/1000), and caps the pool at 100: the
informers' watches alone hold about 21 per watched namespace. k8s._unbounded_pool works around both;
these tests count the connections the pool opens (httpcore's own connect step).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpcore._async.connection as httpcore_connection
import pytest

from deepseek_operator.k8s import KINDS, K8s
from deepseek_sandbox.real_cluster import RealCluster

CONFIG_MAP = KINDS[("v1", "ConfigMap")]


@pytest.fixture
async def api(real_cluster: RealCluster, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[K8s, list[int]]]:
    """A K8s client as the operator makes it (admin credentials), and a list counting new connections."""
    for key, value in real_cluster.kubectl_env().items():
        monkeypatch.setenv(key, value)
    opened: list[int] = []
    connect = httpcore_connection.AsyncHTTPConnection._connect

    async def counted(self: Any, request: Any) -> Any:
        opened.append(1)
        return await connect(self, request)

    monkeypatch.setattr(httpcore_connection.AsyncHTTPConnection, "_connect", counted)
    client = await K8s.connect()
    yield client, opened
    await client._api._session.aclose()


async def _with_watches(client: K8s, count: int, namespace: str, work: Any) -> None:
    """Run `work` while `count` watches (as long-lived as the informers') hold their connections."""
    async def watch() -> None:
        async for _ in client.watch(CONFIG_MAP, namespace, {"timeoutSeconds": "600"}):
            pass

    tasks = [asyncio.create_task(watch()) for _ in range(count)]
    try:
        await work()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_requests_reuse_connections_beside_the_informers_watches(
        api: tuple[K8s, list[int]], real_cluster: RealCluster) -> None:
    client, opened = api
    with real_cluster.scratch_namespace("pool") as namespace:
        async def creates() -> None:
            await asyncio.sleep(1)  # the watches have their connections
            before = len(opened)
            await asyncio.wait_for(asyncio.gather(*(client.create(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}", "namespace": namespace}})
                for i in range(200))), 120)
            assert len(opened) - before <= 25, f"{len(opened) - before} connections opened for 200 creates"

        await _with_watches(client, 19, namespace, creates)


async def test_watches_of_many_namespaces_do_not_starve_requests(
        api: tuple[K8s, list[int]], real_cluster: RealCluster) -> None:
    """120 watches (eight namespaces' worth) are held open while requests still get connections."""
    client, _ = api
    with real_cluster.scratch_namespace("pool") as namespace:
        async def creates() -> None:
            await asyncio.sleep(1)
            await asyncio.wait_for(asyncio.gather(*(client.create(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}", "namespace": namespace}})
                for i in range(20))), 60)

        await _with_watches(client, 120, namespace, creates)
