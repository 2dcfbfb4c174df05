"""Progress of a model download: the JSON document the downloader writes to its ConfigMap and log.

`Progress` is the document (camelCase keys, all always present; docs/model-cache.md). `Reporter`
measures the bytes on disk from a thread every interval (library-agnostic: it counts the repo's
files plus the clients' partial `*.incomplete` files, so progress shows inside one big file) and
writes the document with `ConfigMapSink`, a JSON merge patch of `data.progress`. Every write logs
one INFO line. A failed write logs one WARNING line and is otherwise ignored: reporting never
stops a download.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

log = logging.getLogger("deepseek_worker.download")

# huggingface_hub: local_dir/.cache/huggingface/download/<name>.<etag>.<id>.incomplete;
# modelscope: <target>.incomplete next to the file, <target>.parallel_tmp for ranged downloads.
PARTIAL_SUFFIXES = (".incomplete", ".parallel_tmp")
RATE_WINDOW_SECONDS = 30.0
WRITE_TIMEOUT_SECONDS = 5.0


def rfc3339(epoch: float) -> str:
    """UTC, whole seconds: 2026-12-01T14:05:41Z."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Progress:
    """The progress document. Times are epoch seconds here and RFC 3339 in `document()`."""

    source: str
    model: str
    revision: str
    phase: str = "Downloading"
    commit: str = ""
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0
    bytes_per_second: float = 0.0
    started_at: float = field(default_factory=time.time)
    updated_at: float = 0.0
    progress_at: float = 0.0
    reason: str = ""
    message: str = ""
    config: dict[str, object] = field(default_factory=dict)  # geometry.read_geometry(), once Complete

    def __post_init__(self) -> None:
        self.updated_at = self.updated_at or self.started_at
        self.progress_at = self.progress_at or self.started_at

    def document(self) -> dict[str, object]:
        """The JSON value of the ConfigMap's `data.progress`."""
        return {
            "phase": self.phase,
            "source": self.source,
            "model": self.model,
            "revision": self.revision,
            "commit": self.commit,
            "bytesDone": self.bytes_done,
            "bytesTotal": self.bytes_total,
            "filesDone": self.files_done,
            "filesTotal": self.files_total,
            "bytesPerSecond": round(self.bytes_per_second, 1),
            "startedAt": rfc3339(self.started_at),
            "updatedAt": rfc3339(self.updated_at),
            "progressAt": rfc3339(self.progress_at),
            "reason": self.reason,
            "message": self.message,
            "config": self.config,
        }

    def summary(self) -> str:
        """The log line of one write: phase, percent, bytes, rate (or the failure)."""
        if self.phase == "Failed":
            return f"progress Failed {self.reason}: {self.message}"
        percent = f"{100 * self.bytes_done / self.bytes_total:.1f}%" if self.bytes_total else "?%"
        total = _mb(self.bytes_total) if self.bytes_total else "?"
        return (f"progress {self.phase} {percent} {_mb(self.bytes_done)}/{total} MB, "
                f"{self.files_done}/{self.files_total} files, {_mb(self.bytes_per_second)} MB/s")


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def measure(root: Path, sizes: Mapping[str, int | None]) -> tuple[int, int]:
    """(bytes on disk, complete files) of a download into `root`: the repo files present (each capped
    at its listed size), then every partial file anywhere under `root`. Final files are scanned first,
    so a file renamed between the two scans is missed once rather than counted twice."""
    done, complete = 0, 0
    for rel, size in sizes.items():
        try:
            on_disk = (root / rel).stat().st_size
        except OSError:
            continue
        done += on_disk if size is None else min(on_disk, size)
        complete += size is None or on_disk == size
    for folder, _dirs, names in os.walk(root):
        for name in names:
            if name.endswith(PARTIAL_SUFFIXES):
                try:
                    done += os.stat(os.path.join(folder, name)).st_size
                except OSError:
                    continue  # renamed or removed meanwhile
    return done, complete


class RateWindow:
    """Bytes per second over the last ~30 s of (time, bytes) samples."""

    def __init__(self, seconds: float = RATE_WINDOW_SECONDS) -> None:
        self.seconds = seconds
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, at: float, done: int) -> float:
        """Record a sample; the rate from the oldest sample still in the window (0 with only one)."""
        self._samples.append((at, done))
        while len(self._samples) > 2 and at - self._samples[1][0] >= self.seconds:
            self._samples.popleft()
        first_at, first_done = self._samples[0]
        return (done - first_done) / (at - first_at) if at > first_at else 0.0


@dataclass(frozen=True)
class KubeTarget:
    """The ConfigMap to report into, and how to reach the API server."""

    api: str
    namespace: str
    name: str
    token_file: Path
    ca_file: Path

    @property
    def url(self) -> str:
        return f"{self.api.rstrip('/')}/api/v1/namespaces/{self.namespace}/configmaps/{self.name}"


class SinkError(Exception):
    """A progress write that the API server refused or that did not reach it."""


class ConfigMapSink:
    """Writes the progress document as a JSON merge patch of the ConfigMap's `data.progress`.
    The ServiceAccount token is re-read on every write (projected tokens rotate); a `http://` API URL
    uses no TLS, a `https://` one trusts the CA file when it exists (else the system store)."""

    def __init__(self, target: KubeTarget) -> None:
        self.target = target
        verify: ssl.SSLContext | bool = True
        if target.api.startswith("https://") and target.ca_file.is_file():
            try:
                verify = ssl.create_default_context(cafile=str(target.ca_file))
            except OSError as exc:  # ssl.SSLError too: an unreadable CA is a failed write, not a crash
                log.warning("ignoring the CA file %s (%s): using the system's CAs", target.ca_file, exc)
        self._client = httpx.Client(verify=verify, timeout=WRITE_TIMEOUT_SECONDS)

    def write(self, document: Mapping[str, object]) -> None:
        """PATCH the ConfigMap; raises SinkError with a one-line reason on any failure."""
        headers = {"Content-Type": "application/merge-patch+json"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = json.dumps({"data": {"progress": json.dumps(document, separators=(",", ":"))}})
        try:
            response = self._client.patch(self.target.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SinkError(f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 300:
            raise SinkError(f"HTTP {response.status_code} {response.reason_phrase}: {_status_message(response)}")

    def _token(self) -> str:
        try:
            return self.target.token_file.read_text().strip()
        except OSError:
            return ""

    def close(self) -> None:
        self._client.close()


def _status_message(response: httpx.Response) -> str:
    """The `message` of a Kubernetes Status body, else the start of the body."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or response.text[:200]).replace("\n", " ")


class Reporter:
    """Owns the progress document: measures the directory and writes it every `interval` seconds
    from a daemon thread between `start()` and `stop()`, and on `write_now()` / `finish()`."""

    def __init__(self, progress: Progress, root: Path, sink: ConfigMapSink | None, interval: float,
                 redact: Callable[[str], str] = lambda text: text) -> None:
        self.progress = progress
        self.root = root
        self.sink = sink
        self.interval = interval
        self.redact = redact
        self._sizes: dict[str, int | None] = {}
        self._rate = RateWindow()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set_files(self, commit: str, sizes: Mapping[str, int | None]) -> None:
        """The repo's file list is known: set commit and totals (bytesTotal 0 when a size is unknown)."""
        with self._lock:
            self._sizes = dict(sizes)
            self.progress.commit = commit
            self.progress.files_total = len(sizes)
            known = [size for size in sizes.values() if size is not None]
            self.progress.bytes_total = sum(known) if len(known) == len(sizes) else 0

    def start(self) -> None:
        """Begin the periodic writes (the first one after one interval)."""
        self._thread = threading.Thread(target=self._loop, name="download-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the periodic writes; returns once no write is in flight."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.write_now()

    def write_now(self) -> None:
        """Measure (while downloading) and write the document once."""
        with self._lock:
            now = time.time()
            if self.progress.phase == "Downloading" and self._sizes:
                self._advance(now, *measure(self.root, self._sizes))
            self.progress.bytes_per_second = self._rate.add(now, self.progress.bytes_done)
            self._write(now)

    def _advance(self, now: float, done: int, complete: int) -> None:
        """bytesDone never decreases and never exceeds a known bytesTotal; progressAt moves with it."""
        if self.progress.bytes_total:
            done = min(done, self.progress.bytes_total)
        if done > self.progress.bytes_done:
            self.progress.bytes_done = done
            self.progress.progress_at = now
        self.progress.files_done = max(self.progress.files_done, complete)

    def finish(self, phase: str, reason: str = "", message: str = "") -> None:
        """The final write: Complete (bytesDone = bytesTotal, all files) or Failed with its reason."""
        self.stop()
        with self._lock:
            now = time.time()
            if phase == "Complete":
                if self._sizes:
                    self._advance(now, *measure(self.root, self._sizes))
                if self.progress.bytes_done < self.progress.bytes_total:
                    self.progress.progress_at = now
                self.progress.bytes_done = max(self.progress.bytes_done, self.progress.bytes_total)
                self.progress.files_done = self.progress.files_total
            self.progress.bytes_per_second = self._rate.add(now, self.progress.bytes_done)
            self.progress.phase, self.progress.reason = phase, reason
            self.progress.message = self.redact(message)
            self._write(now)

    def _write(self, now: float) -> None:
        self.progress.updated_at = now
        log.info("%s", self.redact(self.progress.summary()))
        if self.sink is None:
            return
        try:
            self.sink.write(self.progress.document())
        except SinkError as exc:
            log.warning("progress write to configmap %s/%s failed (the download goes on): %s",
                        self.sink.target.namespace, self.sink.target.name, self.redact(str(exc)))

    def close(self) -> None:
        self.stop()
        if self.sink is not None:
            self.sink.close()
