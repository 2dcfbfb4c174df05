"""The real kubectl 1.36 against the sandbox: CRUD, apply, scale, tables, watch, wait, errors.

`kubectl wait` and `rollout status` use client-go's watch list (sendInitialEvents, then a BOOKMARK).
"""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from deepseek_sandbox import Sandbox

from .conftest import KUBECTL, Kubectl, deployment, eventually

WIDGET = "apiVersion: sandbox.test/v1alpha1\nkind: Widget\nmetadata: {{name: {name}}}\nspec: {{image: {image}}}\n"


async def test_crud_cycle(kubectl: Kubectl) -> None:
    # `kubectl create configmap ...` (typed generators) sends protobuf, which is not decoded: use -f.
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c1}\ndata: {a: '1'}\n"
    rc, out = await kubectl("create", "-f", "-", stdin=manifest)
    assert rc == 0, out
    rc, out = await kubectl("get", "configmap", "c1", "-o", "jsonpath={.data.a}")
    assert (rc, out) == (0, "1")
    rc, out = await kubectl("patch", "configmap", "c1", "--type=merge", "-p", '{"data":{"a":"2"}}')
    assert rc == 0, out
    rc, out = await kubectl("label", "configmap", "c1", "tier=web")
    assert rc == 0, out
    rc, out = await kubectl("get", "configmaps", "-l", "tier=web", "-o", "name")
    assert out.split() == ["configmap/c1"]
    rc, out = await kubectl("delete", "configmap", "c1")
    assert rc == 0, out
    rc, out = await kubectl("get", "configmap", "c1")
    assert rc == 1 and "NotFound" in out


async def test_apply_twice_and_scale_custom_resource(kubectl: Kubectl, sandbox: Sandbox) -> None:
    rc, out = await kubectl("apply", "-f", "-", stdin=WIDGET.format(name="w", image="a"))
    assert rc == 0 and "created" in out, out
    rc, out = await kubectl("apply", "-f", "-", stdin=WIDGET.format(name="w", image="b"))
    assert rc == 0 and "configured" in out, out
    rc, out = await kubectl("apply", "-f", "-", stdin=WIDGET.format(name="w", image="b"))
    assert rc == 0 and "unchanged" in out, out
    rc, out = await kubectl("scale", "wd/w", "--replicas=3")
    assert rc == 0, out
    obj = sandbox.get("widgets", "default", "w")
    assert obj is not None and obj["spec"] == {"image": "b", "replicas": 3}
    assert obj["metadata"]["generation"] == 3


async def test_table_columns(kubectl: Kubectl, sandbox: Sandbox) -> None:
    await kubectl("apply", "-f", "-", stdin=WIDGET.format(name="t", image="img:1"))
    rc, out = await kubectl("get", "wd")
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "READY", "IMAGE", "STATUS", "AGE"]
    assert row.split()[:2] == ["t", "img:1"]
    await kubectl("apply", "-f", "-", stdin=deployment("web", replicas=1))
    await eventually(lambda: sandbox.objects("pods", "default"))
    rc, out = await kubectl("get", "deploy,pods")
    assert rc == 0, out
    lines = [line.split() for line in out.splitlines() if line.strip()]
    assert ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"] in lines
    assert ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] in lines


async def test_wait_for_available_and_rollout_status(kubectl: Kubectl) -> None:
    rc, out = await kubectl("apply", "-f", "-", stdin=deployment("ready", replicas=2))
    assert rc == 0, out
    rc, out = await kubectl("wait", "--for=condition=Available", "deploy/ready", "--timeout=20s", timeout=30)
    assert rc == 0 and "condition met" in out, out
    rc, out = await kubectl("rollout", "status", "deploy/ready", "--timeout=20s", timeout=30)
    assert rc == 0 and "successfully rolled out" in out, out


async def test_get_watch_prints_changes(kubectl: Kubectl, sandbox: Sandbox) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(KUBECTL), "--kubeconfig", str(sandbox.kubeconfig_path), "--cache-dir", str(sandbox.kubectl_cache_dir),
        "get", "configmaps", "-w",
        "--request-timeout=10s", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        await asyncio.sleep(0)  # let kubectl start; the creation below is awaited by the watcher
        await kubectl("apply", "-f", "-", stdin="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: seen-by-watch}\n")
        assert proc.stdout is not None
        async with asyncio.timeout(15):
            while b"seen-by-watch" not in await proc.stdout.readline():
                pass
    finally:
        proc.terminate()
        await proc.wait()


async def test_invalid_custom_resource_refused_with_field_path(kubectl: Kubectl) -> None:
    if importlib.util.find_spec("deepseek_sandbox.admission") is None:
        pytest.skip("admission.py not present")
    bad = "apiVersion: sandbox.test/v1alpha1\nkind: Widget\nmetadata: {name: bad}\nspec: {replicas: -1}\n"
    rc, out = await kubectl("apply", "-f", "-", stdin=bad)
    assert rc == 1 and "spec.replicas" in out and "invalid" in out, out


async def test_conflict_on_stale_replace(kubectl: Kubectl, sandbox: Sandbox) -> None:
    await kubectl("apply", "-f", "-", stdin=WIDGET.format(name="c", image="a"))
    stale = WIDGET.format(name="c", image="z").replace("name: c}", 'name: c, resourceVersion: "1"}')
    rc, out = await kubectl("replace", "-f", "-", stdin=stale)
    assert rc == 1 and "the object has been modified" in out, out


async def test_delete_cascades_to_pods(kubectl: Kubectl, sandbox: Sandbox) -> None:
    await kubectl("apply", "-f", "-", stdin=deployment("gone", replicas=2))
    await eventually(lambda: len(sandbox.objects("pods", "default", "app=gone")) == 2)
    rc, out = await kubectl("delete", "deployment", "gone")
    assert rc == 0, out
    await eventually(lambda: not sandbox.objects("pods", "default", "app=gone"))
