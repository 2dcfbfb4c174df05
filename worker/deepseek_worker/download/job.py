"""`deepseek-worker-download` (== `python -m deepseek_worker.download`): pre-download a model into a
directory (the operator's PVC) for a Kubernetes Job, reporting progress to a ConfigMap.

Contract (docs/model-cache.md, "The downloader"): settings come from DEEPSEEK_* environment
variables (`DownloadSettings.from_env`); progress is the JSON document of progress.py,
written at start, every interval and at the end; a marker file `.deepseek-download.json` in the
directory records a finished download, and a run that finds one for the same source, model and
revision reports Complete without contacting the hub.

Exit codes: 0 done (or already there); 2 permanent failures the Job must not retry (bad settings,
HTTP 401/403 Unauthorized, 404 NotFound, no space left DiskFull); 1 anything else (network, 5xx,
timeouts: Error), which the Job retries. Before fetching, the listing's bytes are checked against the
directory's free space (space.py): too little is DiskFull at once, with "needs X, has Y". A failure
also writes `reason: message` to the termination log. Messages are one line, never a traceback,
never the token.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .geometry import read_geometry
from .hubs import PERMANENT, Hub, HuggingFaceHub, ModelScopeHub, classify, expected, one_line, verify
from .progress import ConfigMapSink, KubeTarget, Progress, Reporter, rfc3339
from .space import check_space, human

log = logging.getLogger("deepseek_worker.download")

SOURCES = ("huggingFace", "modelScope")
MARKER = ".deepseek-download.json"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
MARKER_KEYS = ("source", "model", "revision")


class SettingsError(ValueError):
    """An invalid environment variable; the message names it."""


@dataclass(frozen=True)
class DownloadSettings:
    """What one download needs, from the DEEPSEEK_* environment (see the module docstring)."""

    source: str
    model: str
    revision: str
    directory: Path
    endpoint: str | None = None
    token: str | None = None
    interval: float = 5.0
    kube: KubeTarget | None = None
    termination_log: Path = Path("/dev/termination-log")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DownloadSettings:
        """Parse and validate; raises SettingsError naming the first bad variable."""
        source = env.get("DEEPSEEK_DOWNLOAD_SOURCE", "")
        if source not in SOURCES:
            raise SettingsError(f"DEEPSEEK_DOWNLOAD_SOURCE: must be huggingFace or modelScope, not {source!r}")
        return cls(
            source=source,
            model=_required(env, "DEEPSEEK_MODEL"),
            revision=env.get("DEEPSEEK_MODEL_REVISION", "").strip() or "main",
            directory=Path(_required(env, "DEEPSEEK_DOWNLOAD_DIR")),
            endpoint=_endpoint(env.get("DEEPSEEK_DOWNLOAD_ENDPOINT", "")),
            token=env.get("DEEPSEEK_DOWNLOAD_TOKEN", "").strip() or None,
            interval=_interval(env.get("DEEPSEEK_PROGRESS_INTERVAL_SECONDS", "5")),
            kube=_kube_target(env),
            termination_log=Path(env.get("DEEPSEEK_TERMINATION_LOG", "") or "/dev/termination-log"),
        )

    def hub(self) -> Hub:
        hub_class = HuggingFaceHub if self.source == "huggingFace" else ModelScopeHub
        return hub_class(self.model, self.revision, self.directory, self.endpoint, self.token)

    def redact(self, text: str) -> str:
        """`text` with the hub token replaced by ***."""
        return text.replace(self.token, "***") if self.token else text


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"{name}: required")
    return value


def _endpoint(raw: str) -> str | None:
    """A hub base URL without a trailing slash; a bare domain means https."""
    value = raw.strip().rstrip("/")
    if not value:
        return None
    return value if "://" in value else f"https://{value}"


def _interval(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise SettingsError(f"DEEPSEEK_PROGRESS_INTERVAL_SECONDS: must be a number of seconds > 0, not {raw!r}")
    return value


def _kube_target(env: Mapping[str, str]) -> KubeTarget | None:
    """The ConfigMap to report into, or None (log only) when neither of its variables is set."""
    name = env.get("DEEPSEEK_PROGRESS_CONFIGMAP", "").strip()
    namespace = env.get("DEEPSEEK_PROGRESS_NAMESPACE", "").strip()
    if not name and not namespace:
        return None
    if not name or not namespace:
        missing = "DEEPSEEK_PROGRESS_CONFIGMAP" if not name else "DEEPSEEK_PROGRESS_NAMESPACE"
        raise SettingsError(f"{missing}: required when the other of the two progress variables is set")
    api = env.get("DEEPSEEK_KUBE_API", "").strip()
    if not api:
        host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise SettingsError("DEEPSEEK_KUBE_API: required outside a pod (no KUBERNETES_SERVICE_HOST)")
        api = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return KubeTarget(api=api, namespace=namespace, name=name,
                      token_file=Path(env.get("DEEPSEEK_KUBE_TOKEN_FILE") or f"{SA_DIR}/token"),
                      ca_file=Path(env.get("DEEPSEEK_KUBE_CA_FILE") or f"{SA_DIR}/ca.crt"))


def read_marker(directory: Path) -> dict[str, object] | None:
    """The marker of a finished download in `directory`, or None (absent or unreadable)."""
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def write_marker(settings: DownloadSettings, commit: str, size: int) -> None:
    """Atomically (temporary file + rename) record the finished download."""
    marker = {"source": settings.source, "model": settings.model, "revision": settings.revision,
              "commit": commit, "bytes": size, "completedAt": rfc3339(time.time())}
    tmp = settings.directory / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=2) + "\n")
    os.replace(tmp, settings.directory / MARKER)


def _marker_matches(marker: dict[str, object] | None, settings: DownloadSettings) -> bool:
    return marker is not None and all(marker.get(key) == getattr(settings, key) for key in MARKER_KEYS)


def _int(value: object) -> int:
    try:
        return max(int(str(value)), 0)
    except ValueError:
        return 0


def _model_files(directory: Path) -> int:
    """Files of a finished download: everything but the clients' .cache folder and the marker."""
    return sum(1 for p in directory.rglob("*")
               if p.is_file() and p.name != MARKER and ".cache" not in p.relative_to(directory).parts)


def run(settings: DownloadSettings) -> int:
    """Download (or find already downloaded) the model; returns the exit code."""
    sink = ConfigMapSink(settings.kube) if settings.kube is not None else None
    progress = Progress(settings.source, settings.model, settings.revision)
    reporter = Reporter(progress, settings.directory, sink, settings.interval, settings.redact)
    try:
        marker = read_marker(settings.directory)
        if _marker_matches(marker, settings):
            assert marker is not None
            log.info("%s@%s is already in %s (marker %s): nothing to download",
                     settings.model, settings.revision, settings.directory, MARKER)
            progress.commit = str(marker.get("commit") or "")
            progress.bytes_total = _int(marker.get("bytes"))
            progress.files_total = _model_files(settings.directory)
            progress.config = read_geometry(settings.directory)
            reporter.finish("Complete")
            return 0
        return _download(settings, reporter)
    finally:
        reporter.close()


def _download(settings: DownloadSettings, reporter: Reporter) -> int:
    log.info("downloading %s@%s from %s%s into %s", settings.model, settings.revision, settings.source,
             f" ({settings.endpoint})" if settings.endpoint else "", settings.directory)
    reporter.write_now()
    hub = settings.hub()
    try:
        settings.directory.mkdir(parents=True, exist_ok=True)
        (settings.directory / MARKER).unlink(missing_ok=True)  # another revision's: no longer true
        hub.prepare()
        files = hub.list_files()
        reporter.set_files(files.commit, files.sizes)
        # Before any byte: a claim too small fails now as DiskFull ("needs X, has Y"), not hours later.
        log.info("%s to fetch", human(check_space(settings.directory, files)))
        reporter.start()
        hub.download(files)
        write_marker(settings, files.commit, verify(settings.directory, files))
    except Exception as exc:  # noqa: BLE001 -- every failure is reported, then mapped to an exit code
        return _fail(settings, reporter, exc)
    reporter.progress.config = read_geometry(settings.directory)  # the operator plans from it
    reporter.finish("Complete")
    return 0


def _fail(settings: DownloadSettings, reporter: Reporter, exc: Exception) -> int:
    failure = classify(exc)
    message = settings.redact(failure.message)
    reporter.finish("Failed", failure.reason, message)
    if expected(exc):
        log.error("download failed (%s, exit %d): %s", failure.reason, failure.exit_code, message)
    else:  # a bug rather than the hub, network or disk: keep the traceback in the log
        log.error("download failed (%s, exit %d): %s", failure.reason, failure.exit_code, message,
                  exc_info=(type(exc), exc, exc.__traceback__))
    _termination_log(settings.termination_log, f"{failure.reason}: {message}")
    return failure.exit_code


def _termination_log(path: Path, line: str) -> None:
    """Kubernetes shows this file's content as the container's termination message."""
    with contextlib.suppress(OSError):
        path.write_text(line + "\n")


def main() -> int:
    """Console entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = DownloadSettings.from_env(os.environ)
    except SettingsError as exc:
        line = one_line(f"invalid setting {exc}")
        print(f"deepseek-worker-download: {line}", file=sys.stderr)
        _termination_log(Path(os.environ.get("DEEPSEEK_TERMINATION_LOG") or "/dev/termination-log"),
                         f"Error: {line}")
        return PERMANENT
    # Read by the clients at import: no per-process user-agent lookup on huggingface.co (it ignores
    # the endpoint override), and no tqdm bars in the Job's log (the progress lines say it all).
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
