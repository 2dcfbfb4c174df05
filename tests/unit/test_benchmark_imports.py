"""Benchmarks import the shipped packages, never the test suite (issue 21): a harness a benchmark needs
lives in deepseek_sandbox or deepseek_worker.testing, where both can use it. Checked by parsing every
benchmark with `ast`, so an import inside a function counts too."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEST_PACKAGES = ("tests", "conftest", "fakes", "gateway_fakes", "fake_upstream")


def imported_modules(path: pathlib.Path) -> set[str]:
    """The top-level names of the modules `path` imports (absolute imports; a relative one is its own)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_no_benchmark_imports_the_test_suite() -> None:
    scripts = sorted((ROOT / "benchmarks").rglob("*.py"))
    assert scripts, "no benchmarks found"
    offenders = {str(p.relative_to(ROOT)): sorted(imported_modules(p) & set(TEST_PACKAGES)) for p in scripts}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_sees_an_import_inside_a_function(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "bench.py"
    script.write_text("def main():\n    from tests.waiting import eventually\n    import fakes\n")
    assert imported_modules(script) >= {"tests", "fakes"}
