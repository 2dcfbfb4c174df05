"""Shared fixtures of the monitoring tests: the rendered rule file and the Prometheus binaries.

The binaries come from Debian's `prometheus` package (tools/install-apt.sh); a machine without
them skips these tests with that reason instead of failing on a missing tool.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring_cases import rendered_rule_groups


def _binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
    if path is None:
        pytest.skip(f"{name} not installed (tools/install-apt.sh installs Debian's prometheus package)")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return _binary("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return _binary("prometheus")


@pytest.fixture
def rendered_rules() -> dict[str, Any]:
    rules: dict[str, Any] = rendered_rule_groups()
    return rules


@pytest.fixture
def rules_file(tmp_path: Path, rendered_rules: dict[str, Any]) -> Path:
    path = tmp_path / "deepseek-rules.yaml"
    path.write_text(yaml.safe_dump(rendered_rules, sort_keys=False))
    return path
