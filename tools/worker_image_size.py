#!/usr/bin/env python3
"""Measure the worker image's Python layer without a container engine (docs/install.md, "Image size").

The image is `python:3.11.14-slim-bookworm` plus one venv holding `pyproject.toml`'s base and `worker`
dependencies. This resolves that set as pip would inside the image (CPython 3.11, linux x86_64,
manylinux up to glibc 2.36, bookworm's), with `pip install --dry-run --report` (metadata only, no
wheel downloaded), then sums:
  - the wheel sizes from PyPI's JSON simple index: what a build downloads, close to the layer's
    compressed (pushed and pulled) size, since wheels are zip-compressed as layers are gzip-compressed;
  - the unpacked sizes from the RECORD files of the same name==version installed in .venv (this
    machine installs the same pins): the layer's size on disk.
Needs network access to PyPI; prints a table and the totals. Not run by the tests.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GLIBC_MINORS = range(5, 37)  # manylinux_2_5 .. manylinux_2_36 (Debian bookworm's glibc)
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


def requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["worker"]]


def resolve(reqs: list[str], workdir: Path) -> list[dict[str, str]]:
    """[{name, version, filename}] that pip would install in the image."""
    platforms = ["linux_x86_64", "manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64",
                 *(f"manylinux_2_{minor}_x86_64" for minor in GLIBC_MINORS)]
    report = workdir / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--report", str(report), "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
           "--abi", "cp311", "--target", str(workdir / "target"),
           *(arg for p in platforms for arg in ("--platform", p)), *reqs]
    subprocess.run(cmd, check=True, timeout=600)
    out = []
    for item in json.loads(report.read_text())["install"]:
        url = item["download_info"]["url"]
        out.append({"name": item["metadata"]["name"], "version": item["metadata"]["version"],
                    "filename": url.rsplit("/", 1)[-1]})
    return out


def wheel_size(name: str, filename: str) -> int:
    normalized = re.sub(r"[-_.]+", "-", name).lower()
    request = urllib.request.Request(f"https://pypi.org/simple/{normalized}/", headers={"Accept": SIMPLE_JSON})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    return next(int(f["size"]) for f in files if f["filename"] == filename)


def unpacked_size(name: str, version: str) -> int | None:
    """Bytes the installed distribution occupies, from its RECORD; None when .venv holds another version."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != version or not dist.read_text("RECORD"):
        return None
    rows = csv.reader((dist.read_text("RECORD") or "").splitlines())
    return sum(int(row[2]) for row in rows if len(row) > 2 and row[2].isdigit())


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        dists = resolve(requirements(), Path(tmp))
    rows = [(d["name"], d["version"], wheel_size(d["name"], d["filename"]), unpacked_size(d["name"], d["version"]))
            for d in dists]
    rows.sort(key=lambda row: -row[2])
    mib = 1024 * 1024
    for name, version, wheel, unpacked in rows:
        on_disk = "" if unpacked is None else f"{unpacked / mib:9.1f} MiB"
        print(f"{name:32} {version:16} {wheel / mib:9.1f} MiB  {on_disk}")
    wheels = sum(row[2] for row in rows)
    known = [row for row in rows if row[3] is not None]
    nvidia = sum(row[2] for row in rows if row[0].startswith(("nvidia-", "cuda-")))
    print(f"\n{len(rows)} distributions; wheels {wheels / mib:.0f} MiB (CUDA/NVIDIA wheels {nvidia / mib:.0f} MiB, "
          f"torch {next(r[2] for r in rows if r[0] == 'torch') / mib:.0f} MiB)")
    print(f"unpacked {sum(row[3] or 0 for row in known) / mib:.0f} MiB for the {len(known)} of {len(rows)} "
          "installed in .venv at the same version")
    return 0


if __name__ == "__main__":
    sys.exit(main())
