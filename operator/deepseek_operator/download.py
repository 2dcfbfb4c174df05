"""Pure: a model cache's download Job, progress ConfigMap and claim -> its download state.

The download pod reports into its ConfigMap (`data.progress`, a JSON object; docs/model-cache.md); the
Job's conditions are the authority on the end: Complete, or Failed (podFailurePolicy, backoff limit).
Phases:
- Pending: no progress reported yet (the claim is not bound, or the pod is not scheduled or started).
- Downloading: bytes arrive (or a failed attempt is retried by the Job). Stalled: no byte for
  `stall_timeout_seconds`, by the operator's clock, so a pod that stopped reporting at all stalls too.
- Failed: the Job gave up, or the downloader reported a failure no retry can fix (Unauthorized,
  NotFound, DiskFull: it exits 2, which fails the Job through its podFailurePolicy). Ready's reason
  is DownloadDiskFull for DiskFull ("needs X, has Y"), DownloadFailed otherwise.
- Complete: the Job succeeded. Only then do workers of the model start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from deepseek_operator.render.model_cache import PROGRESS_KEY

Phase = Literal["Pending", "Downloading", "Stalled", "Failed", "Complete"]
GI, MI = 1024**3, 1024**2
# What to do about each of the downloader's failure reasons (docs/model-cache.md).
FIXES = {
    "Unauthorized": "set source.*.tokenSecretRef to a Secret with a token that may read the model",
    "NotFound": "check spec.model.id and revision (and source endpoint; ModelScope's default branch is usually "
                "master, not main)",
    "DiskFull": "raise model.cache.size (the claim grows in place where its StorageClass allows volume "
                "expansion; ModelCacheReady says when it cannot)",
}
# The Ready reason of a failed download: a full claim has its own (the downloader's preflight check
# reports "needs X, has Y" before fetching a byte), every other failure is DownloadFailed.
FAILED_REASONS = {"DiskFull": "DownloadDiskFull"}


@dataclass(frozen=True)
class DownloadState:
    phase: Phase
    claim: str
    job: str
    model: str
    bytes_done: int = 0
    bytes_total: int = 0
    bytes_per_second: int = 0
    eta_seconds: int | None = None
    commit: str = ""
    progress_at: str = ""
    reason: str = ""  # the Ready condition's reason while the variant waits for this cache
    message: str = ""
    stall_timeout_seconds: int = 0  # model.cache.stallTimeoutSeconds it was judged with

    @property
    def complete(self) -> bool:
        return self.phase == "Complete"

    @property
    def percent(self) -> int:
        if self.complete:
            return 100
        if self.bytes_total <= 0:
            return 0
        return min(99, self.bytes_done * 100 // self.bytes_total)

    def status(self) -> dict[str, Any]:
        """status.download (api.DownloadStatus)."""
        out: dict[str, Any] = {
            "phase": self.phase, "claimName": self.claim, "job": self.job, "model": self.model,
            "commit": self.commit, "bytesDone": self.bytes_done, "bytesTotal": self.bytes_total,
            "percent": self.percent, "bytesPerSecond": self.bytes_per_second, "progressAt": self.progress_at,
            "summary": summary(self), "message": self.message,
        }
        if self.eta_seconds is not None:
            out["etaSeconds"] = self.eta_seconds
        return out


def summary(state: DownloadState) -> str:
    """The DOWNLOAD column: 42%, Stalled 42%, Failed, Pending or Complete."""
    if state.phase == "Downloading":
        return f"{state.percent}%"
    if state.phase == "Stalled":
        return f"Stalled {state.percent}%"
    return state.phase


def progress_of(config_map: dict[str, Any] | None) -> dict[str, Any]:
    """The downloader's last report; {} when there is none or it is not a JSON object."""
    raw = ((config_map or {}).get("data") or {}).get(PROGRESS_KEY, "")
    try:
        report = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return report if isinstance(report, dict) else {}


def _job_condition(job: dict[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    for cond in (job or {}).get("status", {}).get("conditions", []) or []:
        if cond.get("type") == ctype and cond.get("status") == "True":
            return dict(cond)
    return None


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def size(n: int) -> str:
    """Bytes for people: GiB above 1 GiB, else MiB."""
    return f"{n / GI:.1f} GiB" if n >= GI else f"{n / MI:.0f} MiB"


def download_state(names: tuple[str, str, str], job: dict[str, Any] | None, config_map: dict[str, Any] | None,
                   claim: dict[str, Any] | None, stall_timeout_seconds: int, now: datetime) -> DownloadState:
    """Classify one model cache; `names` is (claim/Job name, namespace, "model@revision")."""
    name, namespace, model = names
    report = progress_of(config_map)
    base = DownloadState("Pending", name, name, model, commit=str(report.get("commit", "")),
                         stall_timeout_seconds=stall_timeout_seconds, **_figures(report))
    if _job_condition(job, "Complete") is not None:
        return _with(base, "Complete", "", f"{model} is on claim {name} ({size(base.bytes_total)})")
    reported_failure = report.get("phase") == "Failed"
    why = str(report.get("reason") or "Error") if reported_failure else ""
    failed = _job_condition(job, "Failed")
    if failed is not None or why in FIXES:  # the Job gave up, or will: a permanent failure (exit 2)
        detail = str(report.get("message") or "") if reported_failure else ""
        if not detail and failed is not None:
            detail = f"{failed.get('reason', 'Failed')}: {failed.get('message', 'the download Job failed')}"
        fix = FIXES.get(why, f"see `kubectl logs job/{name} -n {namespace}`")
        return _with(base, "Failed", FAILED_REASONS.get(why, "DownloadFailed"),
                     f"download of {model} failed ({why or 'Error'}: {detail}); "
                     f"{fix}, then `kubectl delete job {name} -n {namespace}` to download again")
    if not report:
        return _with(base, "Pending", "Downloading", _pending_message(model, name, claim))
    progress_at = _parse_time(report.get("progressAt"))
    idle = (now - progress_at).total_seconds() if progress_at else 0.0
    if idle >= stall_timeout_seconds:
        return _with(base, "Stalled", "DownloadStalled",
                     f"no byte of {model} downloaded for {idle:.0f}s (at {_figures_text(base)}); check the hub "
                     f"endpoint and the network from the cluster (`kubectl logs job/{name} -n {namespace}`); the "
                     f"download goes on when bytes arrive")
    retrying = f"; the last attempt failed ({why}: {report.get('message', '')}), the Job retries" if why else ""
    return _with(base, "Downloading", "Downloading",
                 f"downloading {model} into claim {name}: {_figures_text(base)}{retrying}")


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    def number(key: str) -> int:
        try:
            return max(0, int(float(report.get(key) or 0)))
        except (TypeError, ValueError):
            return 0
    done, total, rate = number("bytesDone"), number("bytesTotal"), number("bytesPerSecond")
    eta = (total - done) // rate if rate > 0 and total >= done else None
    return {"bytes_done": done, "bytes_total": total, "bytes_per_second": rate, "eta_seconds": eta,
            "progress_at": str(report.get("progressAt", ""))}


def _figures_text(state: DownloadState) -> str:
    total = f" of {size(state.bytes_total)}" if state.bytes_total else ""
    text = f"{state.percent}% ({size(state.bytes_done)}{total})"
    if state.bytes_per_second:
        text += f", {size(state.bytes_per_second)}/s"
    if state.eta_seconds is not None:
        text += f", about {state.eta_seconds}s left"
    return text


def _pending_message(model: str, name: str, claim: dict[str, Any] | None) -> str:
    phase = (claim or {}).get("status", {}).get("phase", "")
    if claim is not None and phase != "Bound":
        return (f"waiting for claim {name} to be bound ({phase or 'Pending'}) before downloading {model}: check "
                "model.cache.storageClassName (`kubectl describe pvc` names the provisioner's error)")
    return f"waiting for the download Job {name} to start downloading {model} (`kubectl describe job {name}`)"


def _with(state: DownloadState, phase: Phase, reason: str, message: str) -> DownloadState:
    return replace(state, phase=phase, reason=reason, message=message)
