"""The two model hubs behind `deepseek-worker-download`, through their own client libraries, and the
classification of what they raise into the downloader's failure reasons and exit codes.

Each hub lists the repo's files with sizes first (`list_files`: the totals of the progress document,
and the first place a bad token or a missing repo/revision shows) and then fetches a snapshot into
`local_dir` (`download`): the directory then holds the plain repo files `from_pretrained(dir)` loads.
The client libraries are imported inside the methods: a bad setting fails before seconds of imports.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
MESSAGE_LIMIT = 400
# Exit codes: the Job's podFailurePolicy fails at once on 2 and retries on 1.
PERMANENT, RETRY = 2, 1


@dataclass(frozen=True)
class RepoFiles:
    """A repo at a revision: the resolved commit ("" when the hub does not say) and path -> size."""

    commit: str
    sizes: dict[str, int | None]


class Hub(Protocol):
    def prepare(self) -> None: ...

    def list_files(self) -> RepoFiles: ...

    def download(self, files: RepoFiles) -> None: ...


@dataclass
class HubRepo:
    """One repo revision of a hub, to download into `local_dir` (what both clients take)."""

    model: str
    revision: str
    local_dir: Path
    endpoint: str | None
    token: str | None


@dataclass
class HuggingFaceHub(HubRepo):
    """huggingface_hub: `model_info(files_metadata=True)`, then `snapshot_download(local_dir=)` of the
    resolved commit (so the branch cannot move between listing and download)."""

    def prepare(self) -> None:
        """Remove partial files of an earlier, killed run: huggingface_hub names them per process and
        never resumes them, so they would only hold disk space (and count as progress)."""
        for partial in (self.local_dir / ".cache" / "huggingface" / "download").rglob("*.incomplete"):
            partial.unlink(missing_ok=True)

    def list_files(self) -> RepoFiles:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=self.endpoint, token=self.token or False)
        info = api.model_info(self.model, revision=self.revision, files_metadata=True)
        sizes = {s.rfilename: (s.lfs.size if s.lfs is not None else s.size) for s in info.siblings or []}
        return RepoFiles(info.sha or "", sizes)

    def download(self, files: RepoFiles) -> None:
        from huggingface_hub import snapshot_download

        snapshot_download(self.model, revision=files.commit or self.revision, local_dir=self.local_dir,
                          endpoint=self.endpoint, token=self.token or False)


@dataclass
class ModelScopeHub(HubRepo):
    """modelscope: `HubApi.list_repo_files`, then `snapshot_download(local_dir=)`. The file listing
    carries no repo commit, so `commit` is the revision when that is a commit sha, else "". The
    client's lock files go to `local_dir/.cache/modelscope` (the PVC), not to $HOME.

    ModelScope's default branch is `master`: the resource's default revision `main` means it here
    (a repo has no `main`, and asking for it fails as NotFound)."""

    def __post_init__(self) -> None:
        if self.revision == "main":
            self.revision = "master"

    def prepare(self) -> None:
        """Nothing: modelscope resumes its `<file>.incomplete` with a Range request."""

    def list_files(self) -> RepoFiles:
        from modelscope_hub import HubApi

        # "" is "no token" to modelscope; None would fall back to a stored login.
        api = HubApi(endpoint=self.endpoint, token=self.token or "")
        if self.endpoint is None:  # the client's own choice between modelscope.cn and modelscope.ai
            self.endpoint = api.resolve_endpoint_for_read(self.model, repo_type="model")
            api = HubApi(endpoint=self.endpoint, token=self.token or "")
        entries = api.list_repo_files(self.model, "model", revision=self.revision)
        sizes: dict[str, int | None] = {f.path: f.size for f in entries if not f.is_dir}
        return RepoFiles(self.revision if COMMIT_SHA.fullmatch(self.revision) else "", sizes)

    def download(self, files: RepoFiles) -> None:
        from modelscope.hub.snapshot_download import snapshot_download

        snapshot_download(model_id=self.model, revision=self.revision, local_dir=str(self.local_dir),
                          cache_dir=str(self.local_dir / ".cache" / "modelscope"),
                          token=self.token or "", endpoint=self.endpoint)


class IncompleteDownload(Exception):
    """The client returned, but files of the listing are missing or have another size."""


def verify(root: Path, files: RepoFiles) -> int:
    """Every listed file is under `root` with its listed size; returns the bytes they hold."""
    missing, total = [], 0
    for rel, size in sorted(files.sizes.items()):
        path = root / rel
        on_disk = path.stat().st_size if path.is_file() else -1
        if on_disk < 0 or (size is not None and on_disk != size):
            missing.append(rel)
        total += max(on_disk, 0)
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise IncompleteDownload(f"{len(missing)} of {len(files.sizes)} files missing or incomplete: {shown}")
    return total


@dataclass(frozen=True)
class Failure:
    """What the downloader reports for an exception: reason, one-line message, exit code."""

    reason: str
    message: str
    exit_code: int


def classify(exc: BaseException) -> Failure:
    """DiskFull (ENOSPC/EDQUOT anywhere in the chain), Unauthorized (HTTP 401/403), NotFound (404, or
    the clients' not-found errors) exit 2; everything else (network, 5xx, timeouts) is Error, exit 1."""
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f": {e.filename}" if e.filename else ""
            return Failure("DiskFull", one_line(f"{e.strerror or 'No space left on device'}{where}"), PERMANENT)
    for e in chain:
        status = http_status(e)
        if status in (401, 403):
            return Failure("Unauthorized", describe_http(e, status), PERMANENT)
        if status == 404:
            return Failure("NotFound", describe_http(e, status), PERMANENT)
    for e in chain:
        name = type(e).__name__
        if name in ("RepositoryNotFoundError", "RevisionNotFoundError", "NotExistError"):
            return Failure("NotFound", describe(e), PERMANENT)
        if name in ("GatedRepoError", "AuthenticationError", "PermissionDeniedError"):
            return Failure("Unauthorized", describe(e), PERMANENT)
    for e in chain:
        status = http_status(e)
        if status is not None:
            return Failure("Error", describe_http(e, status), RETRY)
    return Failure("Error", describe(exc), RETRY)


def expected(exc: BaseException) -> bool:
    """A failure of the hub, the network or the disk (logged in one line), not a bug (traceback)."""
    for e in _chain(exc):
        module = type(e).__module__.split(".")[0]
        if isinstance(e, OSError | IncompleteDownload) or http_status(e) is not None or module in (
                "huggingface_hub", "modelscope", "modelscope_hub", "httpx", "httpx2", "requests", "urllib3"):
            return True
    return False


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, its causes and contexts, and the per-file errors of modelscope's FileDownloadError."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        e = pending.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        failed = getattr(e, "failed_files", None)
        if isinstance(failed, dict):
            pending.extend(v for v in failed.values() if isinstance(v, BaseException))
        pending.extend(c for c in (e.__cause__, e.__context__) if c is not None)


def http_status(e: BaseException) -> int | None:
    """The HTTP status of a client error: `.response.status_code` (huggingface_hub, requests, httpx)
    or `.status_code` (modelscope)."""
    for holder in (getattr(e, "response", None), e):
        status = getattr(holder, "status_code", None)
        if isinstance(status, int) and status >= 400:
            return status
    return None


def describe_http(e: BaseException, status: int | None) -> str:
    """`HTTP 401 Unauthorized: <the hub's error text> (GET <url>)`."""
    response: Any = getattr(e, "response", None)
    phrase = getattr(response, "reason_phrase", None) or getattr(response, "reason", None) or ""
    text = getattr(e, "server_message", None) or getattr(e, "message", None) or _first_line(e)
    request = getattr(response, "request", None)
    method = getattr(request, "method", None) or getattr(e, "method", None)
    url = getattr(response, "url", None) or getattr(e, "url", None)
    where = f" ({method} {url})" if method and url else f" ({url})" if url else ""
    return one_line(f"HTTP {status} {phrase}".rstrip() + f": {text}{where}")


def describe(e: BaseException) -> str:
    return one_line(f"{type(e).__name__}: {_first_line(e)}")


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(e).__name__


def one_line(text: str) -> str:
    """Whitespace collapsed to single spaces, at most MESSAGE_LIMIT characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= MESSAGE_LIMIT else flat[: MESSAGE_LIMIT - 3] + "..."
