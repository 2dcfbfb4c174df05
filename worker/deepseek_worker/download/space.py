"""The preflight size check: the hub's file listing says how many bytes a download needs before the
first byte is fetched, so a claim too small fails at once (`DiskFull`, "needs X, has Y") instead of
hours later with ENOSPC.

Contract: `check_space(root, files)` raises `NotEnoughSpace` when the bytes still to fetch exceed the
free space of the filesystem holding `root` (statvfs: what an unprivileged writer may use); it
returns the bytes still to fetch otherwise. Files already on disk with their listed size count as
fetched (a re-run Job, another revision), and a partial file that a client resumes counts as far as
it got. Files of unknown size count as 0: the figure is then a lower bound.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from pathlib import Path

from .hubs import RepoFiles

GB = 1000**3


class NotEnoughSpace(OSError):
    """The claim cannot hold the download; str() is the one-line "needs X, has Y" message."""

    def __init__(self, needed: int, free: int, where: Path) -> None:
        super().__init__(errno.ENOSPC, f"needs {human(needed)}, has {human(free)} free on {where}")
        self.needed, self.free = needed, free

    def __str__(self) -> str:
        return str(self.strerror)


def human(n: int) -> str:
    """Bytes in GB (the unit hubs list sizes in) with two decimals, or MB below 1 GB."""
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / 1000**2:.1f} MB"


def free_bytes(path: Path) -> int:
    """Free bytes of the filesystem holding `path` (its nearest existing ancestor)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def still_needed(root: Path, files: RepoFiles) -> int:
    """Bytes of the listing not yet under `root`: a file of the listed size is there; a partial
    `<file>.incomplete` (modelscope resumes it) counts as far as it got."""
    total = 0
    for rel, size in files.sizes.items():
        if size is None:
            continue
        path = root / rel
        if path.is_file() and path.stat().st_size == size:
            continue
        partial = path.with_name(path.name + ".incomplete")
        done = partial.stat().st_size if partial.is_file() else 0
        total += size - min(done, size)
    return total


def check_space(root: Path, files: RepoFiles, free: Callable[[Path], int] | None = None) -> int:
    """Raise NotEnoughSpace when the rest of the download does not fit; else return its bytes.
    `free`: the free-space probe (default `free_bytes`)."""
    needed = still_needed(root, files)
    available = (free or free_bytes)(root)
    if needed > available:
        raise NotEnoughSpace(needed, available, root)
    return needed
