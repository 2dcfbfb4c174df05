"""kopf runs against the sandbox: finalizer added, create handler ran, deletion released."""

from __future__ import annotations

import pathlib
import textwrap

import pytest
from kopf.testing import KopfRunner

from deepseek_sandbox import Sandbox

from .conftest import Kubectl, eventually

OPERATOR = textwrap.dedent("""
    import kopf

    # The kubernetes client freezes $KUBECONFIG at import; read the sandbox's kubeconfig now.
    @kopf.on.login()
    def login(**kwargs):
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.create("sandbox.test", "v1alpha1", "widgets")
    def created(spec, patch, **_):
        patch.status["seen"] = spec.get("image")

    @kopf.on.delete("sandbox.test", "v1alpha1", "widgets")
    def deleted(**_):
        pass
""")


async def test_kopf_handler_runs_and_finalizer_added(sandbox: Sandbox, kubectl: Kubectl, tmp_path: pathlib.Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "op.py"
    script.write_text(OPERATOR)
    for key, value in sandbox.kubectl_env().items():
        monkeypatch.setenv(key, value)
    args = ["run", "--standalone", "--namespace=default", "--verbose", str(script)]
    with KopfRunner(args, timeout=30) as runner:
        await _exercise(sandbox, kubectl)
    assert runner.exception is None, runner.output
    assert "Handler 'created' succeeded" in runner.output
    assert "Handler 'deleted' succeeded" in runner.output


async def _exercise(sandbox: Sandbox, kubectl: Kubectl) -> None:
    manifest = "apiVersion: sandbox.test/v1alpha1\nkind: Widget\nmetadata: {name: k1}\nspec: {image: img}\n"
    rc, out = await kubectl("apply", "-f", "-", stdin=manifest)
    assert rc == 0, out

    def handled() -> bool:
        obj = sandbox.get("widgets", "default", "k1") or {}
        return bool(obj.get("metadata", {}).get("finalizers")) and obj.get("status", {}).get("seen") == "img"

    await eventually(handled, timeout=20)
    rc, out = await kubectl("delete", "widget", "k1", "--timeout=20s")
    assert rc == 0, out
    await eventually(lambda: sandbox.get("widgets", "default", "k1") is None, timeout=20)
