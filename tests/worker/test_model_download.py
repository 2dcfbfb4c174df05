"""`deepseek-worker-download` (docs/model-cache.md, "The downloader") end to end: the real
huggingface_hub and modelscope clients against tests/fakehub.py serving the tiny model, every
progress write recorded by a stand-in Kubernetes API server, and a worker that starts from the
downloaded directory while the hub is unreachable.

Every process is started here and stopped by its PID; every wait has a deadline.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import free_port, wait_until

from deepseek_worker.download.hubs import RepoFiles, classify, verify
from deepseek_worker.download.job import MARKER, DownloadSettings, run
from deepseek_worker.download.progress import RateWindow, measure

ROOT = Path(__file__).resolve().parents[2]
REPO = "org/tiny"
HUB_TOKEN = "hf_s3cret-hub-token-0042"
SA_TOKEN, SA_TOKEN_ROTATED = "sa-token-first", "sa-token-rotated"
NAMESPACE, CONFIGMAP = "models", "chat-model-download"
INTERVAL = 0.25
RATE = 8_000_000  # bytes/s: the tiny model (~27 MB) takes ~3.5 s
KEYS = {"phase", "source", "model", "revision", "commit", "bytesDone", "bytesTotal", "filesDone", "filesTotal",
        "bytesPerSecond", "startedAt", "updatedAt", "progressAt", "reason", "message", "config"}
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
CONFIGMAP_PATH = f"/api/v1/namespaces/{NAMESPACE}/configmaps/{CONFIGMAP}"


# -- the stand-in API server -------------------------------------------------------------------------


@dataclass
class Write:
    at: float
    method: str
    path: str
    content_type: str
    authorization: str
    raw: bytes

    @property
    def progress(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(json.loads(self.raw)["data"]["progress"])
        return doc


@dataclass
class Recorder:
    """Records each request (a progress write) and answers `status`."""

    url: str = ""
    status: int = 200
    writes: list[Write] = field(default_factory=list)

    def docs(self) -> list[dict[str, Any]]:
        return [w.progress for w in list(self.writes)]


@contextmanager
def recorder(status: int = 200) -> Iterator[Recorder]:
    rec = Recorder(status=status)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_PATCH(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            rec.writes.append(Write(time.time(), self.command, self.path, self.headers.get("Content-Type", ""),
                                    self.headers.get("Authorization", ""), raw))
            body = (b'{"kind":"ConfigMap"}' if rec.status < 300 else
                    b'{"kind":"Status","status":"Failure","message":"configmaps is forbidden","code":403}')
            self.send_response(rec.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# -- the fake hub and the downloader processes -----------------------------------------------------


@dataclass
class Hub:
    url: str
    requests: Path

    def requested(self) -> list[str]:
        return self.requests.read_text().splitlines() if self.requests.exists() else []


@contextmanager
def fake_hub(model_dir: Path, tmp: Path, *flags: str) -> Iterator[Hub]:
    """tests/fakehub.py in its own process, until the block ends (stopped by PID)."""
    tmp.mkdir(parents=True, exist_ok=True)
    ready, requests = tmp / "hub.port", tmp / "hub.requests"
    cmd = [sys.executable, "-m", "tests.fakehub", "--root", str(model_dir), "--repo", REPO, "--port", "0",
           "--ready-file", str(ready), "--request-log", str(requests), *flags]
    log = (tmp / "hub.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: ready.exists() or proc.poll() is not None, 30, "fake hub listening")
        assert proc.poll() is None, (tmp / "hub.log").read_text()
        yield Hub(f"http://127.0.0.1:{ready.read_text()}", requests)
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, 9)
    proc.wait(30)


def downloader_env(tmp: Path, hub: Hub, target: Path, rec: Recorder | None, **overrides: str) -> dict[str, str]:
    """A clean environment (no ambient hub settings or tokens) plus the operator's variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DEEPSEEK_", "HF_", "MODELSCOPE_", "KUBERNETES_")) and k != "TRANSFORMERS_OFFLINE"}
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    token_file = tmp / "sa-token"
    if not token_file.exists():
        token_file.write_text(SA_TOKEN + "\n")
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), DEEPSEEK_DOWNLOAD_SOURCE="huggingFace", DEEPSEEK_MODEL=REPO,
               DEEPSEEK_DOWNLOAD_DIR=str(target), DEEPSEEK_DOWNLOAD_ENDPOINT=hub.url,
               DEEPSEEK_PROGRESS_INTERVAL_SECONDS=str(INTERVAL), DEEPSEEK_TERMINATION_LOG=str(tmp / "termination-log"),
               DEEPSEEK_KUBE_TOKEN_FILE=str(token_file), DEEPSEEK_KUBE_CA_FILE=str(tmp / "no-ca.crt"))
    if rec is not None:
        env.update(DEEPSEEK_PROGRESS_CONFIGMAP=CONFIGMAP, DEEPSEEK_PROGRESS_NAMESPACE=NAMESPACE,
                   DEEPSEEK_KUBE_API=rec.url)
    env.update(overrides)
    return env


def download(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deepseek_worker.download"], env=env, cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def sha256s(directory: Path) -> dict[str, str]:
    """Repo files (no dot-named paths: the clients' .cache, the marker, the tiny model's stamp)."""
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in directory.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)}


def total_bytes(model_dir: Path) -> int:
    return sum((model_dir / rel).stat().st_size for rel in sha256s(model_dir))


# -- the throttled Hugging Face download (shared by the tests that read what it left) ---------------


@dataclass
class Throttled:
    tmp: Path
    hub: Hub
    rec: Recorder
    target: Path
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def throttled(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Throttled]:
    """One throttled download; the ServiceAccount token file is rotated after the third write."""
    tmp = tmp_path_factory.mktemp("throttled")
    target = tmp / "pvc" / "model"
    with fake_hub(tiny_model_dir, tmp, "--bytes-per-second", str(RATE)) as hub, recorder() as rec:
        env = downloader_env(tmp, hub, target, rec)
        proc = subprocess.Popen([sys.executable, "-m", "deepseek_worker.download"], env=env, cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: len(rec.writes) >= 3 or proc.poll() is not None, 30, "three progress writes")
            (tmp / "sa-token").write_text(SA_TOKEN_ROTATED + "\n")
            out, err = proc.communicate(timeout=60)
        finally:
            _stop(proc)
        yield Throttled(tmp, hub, rec, target, subprocess.CompletedProcess(proc.args, proc.returncode, out, err))


def test_huggingface_download_reports_rising_progress(throttled: Throttled, tiny_model_dir: Path) -> None:
    assert throttled.result.returncode == 0, throttled.result.stderr
    docs = throttled.rec.docs()
    total = total_bytes(tiny_model_dir)
    assert all(set(d) == KEYS for d in docs)
    first, last = docs[0], docs[-1]
    assert (first["phase"], first["bytesDone"], first["bytesPerSecond"]) == ("Downloading", 0, 0)
    assert first["progressAt"] == first["startedAt"]
    assert (last["phase"], last["bytesDone"], last["bytesTotal"], last["reason"], last["message"]) == (
        "Complete", total, total, "", "")
    assert last["filesDone"] == last["filesTotal"] == len(sha256s(tiny_model_dir))
    assert {d["source"] for d in docs} == {"huggingFace"} and {d["model"] for d in docs} == {REPO}
    assert {d["revision"] for d in docs} == {"main"} and re.fullmatch(r"[0-9a-f]{40}", last["commit"])
    assert all(RFC3339.fullmatch(d[k]) for d in docs for k in ("startedAt", "updatedAt", "progressAt"))
    # Rising over several writes, never falling, and the totals known while downloading.
    done = [d["bytesDone"] for d in docs]
    assert done == sorted(done)
    between = sorted({n for n in done if 0 < n < total})
    assert len(between) >= 3, done
    assert all(d["bytesTotal"] == total for d in docs if d["bytesDone"] > 0)
    assert any(d["bytesPerSecond"] > 0 for d in docs if d["phase"] == "Downloading")
    assert [d["updatedAt"] for d in docs] == sorted(d["updatedAt"] for d in docs)


def test_progress_is_a_merge_patch_with_the_current_token(throttled: Throttled) -> None:
    writes = throttled.rec.writes
    assert {(w.method, w.path, w.content_type) for w in writes} == {
        ("PATCH", CONFIGMAP_PATH, "application/merge-patch+json")}
    assert all(set(json.loads(w.raw)) == {"data"} and set(json.loads(w.raw)["data"]) == {"progress"}
               for w in writes)
    assert writes[0].authorization == f"Bearer {SA_TOKEN}"
    assert writes[-1].authorization == f"Bearer {SA_TOKEN_ROTATED}"  # re-read on every write


def test_files_and_marker(throttled: Throttled, tiny_model_dir: Path) -> None:
    assert sha256s(throttled.target) == sha256s(tiny_model_dir)
    marker = json.loads((throttled.target / MARKER).read_text())
    assert set(marker) == {"source", "model", "revision", "commit", "bytes", "completedAt"}
    assert (marker["source"], marker["model"], marker["revision"], marker["bytes"]) == (
        "huggingFace", REPO, "main", total_bytes(tiny_model_dir))
    assert marker["commit"] == throttled.rec.docs()[-1]["commit"]
    assert RFC3339.fullmatch(marker["completedAt"])


def test_a_second_run_reports_complete_without_downloading(throttled: Throttled, tiny_model_dir: Path) -> None:
    before = throttled.hub.requested()
    assert any("/resolve/" in line for line in before)  # the first run did fetch files
    with recorder() as rec:
        result = download(downloader_env(throttled.tmp, throttled.hub, throttled.target, rec))
    assert result.returncode == 0, result.stderr
    assert throttled.hub.requested() == before  # not a single request to the hub
    docs = rec.docs()
    total = total_bytes(tiny_model_dir)
    assert [(d["phase"], d["bytesDone"], d["bytesTotal"]) for d in docs] == [("Complete", total, total)]
    assert docs[0]["filesDone"] == docs[0]["filesTotal"] == len(sha256s(tiny_model_dir))
    assert docs[0]["commit"] == throttled.rec.docs()[-1]["commit"]
    assert docs[0]["config"] == throttled.rec.docs()[-1]["config"] != {}


def test_the_complete_report_carries_the_checkpoints_own_geometry(throttled: Throttled, tiny_model_dir: Path) -> None:
    """For the operator's GPU-fit plan (operator config_geometry.py): config.json's sizing keys and the
    parameters counted from the safetensors headers, only once Complete."""
    from safetensors.torch import load_file

    docs = throttled.rec.docs()
    assert all(d["config"] == {} for d in docs[:-1])
    config = json.loads((tiny_model_dir / "config.json").read_text())
    published = docs[-1]["config"]
    assert published["model_type"] == config["model_type"] == "deepseek_v3"
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "kv_lora_rank", "vocab_size"):
        assert published[key] == config[key], key
    tensors = load_file(str(tiny_model_dir / "model.safetensors"))
    assert published["parameters"] == sum(t.numel() for t in tensors.values()) > 0


@pytest.mark.slow
def test_worker_starts_from_the_download_with_the_hub_unreachable(throttled: Throttled) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEEPSEEK_", "HF_"))}
    env.update(HOME=str(throttled.tmp / "home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_ENDPOINT="http://127.0.0.1:9", DEEPSEEK_MODEL=str(throttled.target),
               DEEPSEEK_MAX_MODEL_LEN="512", DEEPSEEK_MAX_NEW_TOKENS="16")
    cmd = [sys.executable, "-m", "deepseek_worker.cli", "--host", "127.0.0.1", "--port", str(port),
           "--served-model-name", "tiny"]
    log_path = throttled.tmp / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _ready(url) or proc.poll() is not None, 120, "worker ready")
            assert proc.poll() is None, log_path.read_text()
            body = {"model": "tiny", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8,
                    "temperature": 0}
            reply = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
            assert reply.status_code == 200, reply.text
            answer = reply.json()["choices"][0]
            assert answer["message"]["content"] and answer["finish_reason"] in ("stop", "length")
        finally:
            _stop(proc)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# -- ModelScope, failures, tokens --------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_hub(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with fake_hub(tiny_model_dir, tmp_path_factory.mktemp("plain-hub")) as hub:
        yield hub


@pytest.fixture(scope="module")
def locked_hub(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with fake_hub(tiny_model_dir, tmp_path_factory.mktemp("locked-hub"), "--require-token", HUB_TOKEN) as hub:
        yield hub


def test_modelscope_source_downloads_the_same_files(plain_hub: Hub, tiny_model_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "model"
    with recorder() as rec:
        result = download(downloader_env(tmp_path, plain_hub, target, rec, DEEPSEEK_DOWNLOAD_SOURCE="modelScope",
                                         DEEPSEEK_MODEL_REVISION="master"))
    assert result.returncode == 0, result.stderr
    assert sha256s(target) == sha256s(tiny_model_dir)
    assert any("/api/v1/models/org/tiny/repo?" in line for line in plain_hub.requested())
    docs = rec.docs()
    total = total_bytes(tiny_model_dir)
    assert (docs[0]["phase"], docs[-1]["phase"], docs[-1]["bytesDone"], docs[-1]["bytesTotal"]) == (
        "Downloading", "Complete", total, total)
    assert {d["source"] for d in docs} == {"modelScope"} and {d["revision"] for d in docs} == {"master"}
    marker = json.loads((target / MARKER).read_text())
    assert (marker["source"], marker["revision"], marker["bytes"]) == ("modelScope", "master", total)


def test_modelscope_asks_for_master_when_the_revision_is_the_default_main(plain_hub: Hub, tmp_path: Path) -> None:
    """ModelScope's default branch is `master` (issue 18, item 14): `revision: main`, the resource's
    default, would fail there with NotFound. The real ModelScope has no `main`; the fake hub answers
    both, so the requests tell."""
    seen = len(plain_hub.requested())
    result = download(downloader_env(tmp_path, plain_hub, tmp_path / "model", None,
                                     DEEPSEEK_DOWNLOAD_SOURCE="modelScope"))  # no DEEPSEEK_MODEL_REVISION: main
    assert result.returncode == 0, result.stderr
    asked = [line for line in plain_hub.requested()[seen:] if "/api/v1/models/" in line]
    assert any("Revision=master" in line for line in asked), asked
    assert not any("Revision=main" in line or "/main/" in line for line in asked), asked


def test_only_modelscope_maps_main_to_master(tmp_path: Path) -> None:
    from deepseek_worker.download.hubs import HuggingFaceHub, ModelScopeHub

    sha = "0123456789abcdef0123456789abcdef01234567"
    assert ModelScopeHub("org/m", "main", tmp_path, None, None).revision == "master"
    assert [ModelScopeHub("org/m", rev, tmp_path, None, None).revision for rev in ("master", "v1.0", sha)] == [
        "master", "v1.0", sha]
    assert HuggingFaceHub("org/m", "main", tmp_path, None, None).revision == "main"


@pytest.mark.parametrize("source", ["huggingFace", "modelScope"])
@pytest.mark.parametrize("token", [None, "wrong-token-9f8e"])
def test_a_refused_token_is_a_permanent_unauthorized(locked_hub: Hub, tmp_path: Path, source: str,
                                                     token: str | None) -> None:
    extra = {"DEEPSEEK_DOWNLOAD_TOKEN": token} if token else {}
    with recorder() as rec:
        result = download(downloader_env(tmp_path, locked_hub, tmp_path / "model", rec,
                                         DEEPSEEK_DOWNLOAD_SOURCE=source, **extra))
    assert result.returncode == 2, result.stderr
    last = rec.docs()[-1]
    assert (last["phase"], last["reason"]) == ("Failed", "Unauthorized")
    assert "401" in last["message"] and "\n" not in last["message"]
    assert (tmp_path / "termination-log").read_text().startswith("Unauthorized: ")
    assert "Traceback" not in result.stderr
    if token:
        _assert_secret_absent(token, rec, result, tmp_path)


def test_the_token_never_reaches_progress_or_logs(locked_hub: Hub, tiny_model_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "model"
    with recorder() as rec:
        result = download(downloader_env(tmp_path, locked_hub, target, rec, DEEPSEEK_DOWNLOAD_TOKEN=HUB_TOKEN))
    assert result.returncode == 0, result.stderr
    assert rec.docs()[-1]["phase"] == "Complete" and sha256s(target) == sha256s(tiny_model_dir)
    _assert_secret_absent(HUB_TOKEN, rec, result, tmp_path)
    assert HUB_TOKEN not in (target / MARKER).read_text()


def _assert_secret_absent(secret: str, rec: Recorder, result: subprocess.CompletedProcess[str], tmp: Path) -> None:
    assert rec.writes
    assert all(secret.encode() not in w.raw for w in rec.writes)
    assert secret not in result.stdout + result.stderr
    log = tmp / "termination-log"
    assert not log.exists() or secret not in log.read_text()


@pytest.mark.parametrize(("source", "model", "revision"), [
    ("huggingFace", "org/missing", "main"),
    ("huggingFace", REPO, "no-such-branch"),
    ("modelScope", "org/missing", "master"),
])
def test_a_missing_repo_or_revision_is_a_permanent_not_found(plain_hub: Hub, tmp_path: Path, source: str,
                                                             model: str, revision: str) -> None:
    with recorder() as rec:
        result = download(downloader_env(tmp_path, plain_hub, tmp_path / "model", rec, DEEPSEEK_MODEL=model,
                                         DEEPSEEK_DOWNLOAD_SOURCE=source, DEEPSEEK_MODEL_REVISION=revision))
    assert result.returncode == 2, result.stderr
    last = rec.docs()[-1]
    assert (last["phase"], last["reason"]) == ("Failed", "NotFound")
    assert "404" in last["message"]
    assert "Traceback" not in result.stderr


def test_a_stalled_hub_freezes_bytes_while_updates_go_on(tiny_model_dir: Path, tmp_path: Path) -> None:
    with fake_hub(tiny_model_dir, tmp_path, "--stall-after-bytes", "1000000") as hub, recorder() as rec:
        env = downloader_env(tmp_path, hub, tmp_path / "model", rec)
        proc = subprocess.Popen([sys.executable, "-m", "deepseek_worker.download"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: _stalled(rec.docs()) or proc.poll() is not None, 30, "a stall over two seconds")
            assert proc.poll() is None, "the downloader exited while the hub stalled"
        finally:
            _stop(proc)
    stalled = _stalled(rec.docs())
    assert stalled and stalled[0]["bytesDone"] < stalled[0]["bytesTotal"]


def _stalled(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The writes since bytesDone last rose, when they span more than two seconds of updatedAt with
    bytesDone and progressAt unchanged (how the operator tells a stall)."""
    if not docs or docs[-1]["bytesDone"] == 0 or docs[-1]["phase"] != "Downloading":
        return []
    tail = [d for d in docs if d["bytesDone"] == docs[-1]["bytesDone"]]
    stamps = sorted({d["updatedAt"] for d in tail})
    ok = len({d["progressAt"] for d in tail}) == 1 and len(stamps) >= 3 and tail[0]["progressAt"] < stamps[-1]
    return tail if ok else []


def test_a_refused_progress_write_does_not_stop_the_download(plain_hub: Hub, tmp_path: Path) -> None:
    target = tmp_path / "model"
    with recorder(status=403) as rec:
        result = download(downloader_env(tmp_path, plain_hub, target, rec))
    assert result.returncode == 0, result.stderr
    assert (target / MARKER).exists()
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line and "progress write" in line]
    assert len(warnings) == len(rec.writes) >= 2
    assert all("403" in line for line in warnings) and "Traceback" not in result.stderr


def test_a_retried_job_drops_partial_files_of_the_killed_run(plain_hub: Hub, tiny_model_dir: Path,
                                                             tmp_path: Path) -> None:
    """huggingface_hub never resumes another process's `.incomplete` file: left in place it would
    hold disk space and count as progress."""
    target = tmp_path / "model"
    orphan = target / ".cache" / "huggingface" / "download" / "model.safetensors.0123abcd.incomplete"
    orphan.parent.mkdir(parents=True)
    with orphan.open("wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: more than the whole repo
    with recorder() as rec:
        result = download(downloader_env(tmp_path, plain_hub, target, rec))
    assert result.returncode == 0, result.stderr
    assert not orphan.exists() and sha256s(target) == sha256s(tiny_model_dir)
    assert all(d["bytesDone"] < d["bytesTotal"] for d in rec.docs() if d["phase"] == "Downloading" and d["bytesTotal"])


def test_no_space_left_is_a_permanent_disk_full(plain_hub: Hub, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """In process (the conftest's HF_HUB_OFFLINE is lifted for the client): the first file write
    fails with ENOSPC."""
    import huggingface_hub.constants
    import huggingface_hub.file_download

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/models/model/model.safetensors")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(huggingface_hub.file_download, "http_get", disk_full)
    target = tmp_path / "model"
    with recorder() as rec:
        code = run(DownloadSettings.from_env(downloader_env(tmp_path, plain_hub, target, rec)))
    assert code == 2
    last = rec.docs()[-1]
    assert (last["phase"], last["reason"]) == ("Failed", "DiskFull")
    assert "No space left on device" in last["message"]
    assert (tmp_path / "termination-log").read_text().startswith("DiskFull: No space left on device")
    assert not (target / MARKER).exists()


def test_a_claim_too_small_fails_before_any_byte_as_disk_full(plain_hub: Hub, tiny_model_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The preflight check (space.py): the listing's bytes against the directory's free space; no file
    is fetched, and the message says how much is needed and how much there is."""
    import huggingface_hub.constants
    import huggingface_hub.file_download

    from deepseek_worker.download import space

    fetched: list[Any] = []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(huggingface_hub.file_download, "http_get", lambda *a, **k: fetched.append(a))
    monkeypatch.setattr(space, "free_bytes", lambda path: 1000)  # a claim with 1 kB left
    target = tmp_path / "model"
    with recorder() as rec:
        code = run(DownloadSettings.from_env(downloader_env(tmp_path, plain_hub, target, rec)))
    assert code == 2 and fetched == []
    last = rec.docs()[-1]
    assert (last["phase"], last["reason"]) == ("Failed", "DiskFull")
    assert last["message"] == f"needs {space.human(last['bytesTotal'])}, has 0.0 MB free on {target}"
    assert last["bytesTotal"] >= total_bytes(tiny_model_dir) > 1000
    assert (tmp_path / "termination-log").read_text() == f"DiskFull: {last['message']}\n"


def test_the_preflight_counts_only_what_is_still_to_fetch(tmp_path: Path) -> None:
    from deepseek_worker.download.hubs import RepoFiles
    from deepseek_worker.download.space import NotEnoughSpace, check_space

    (tmp_path / "done.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "half.safetensors.incomplete").write_bytes(b"x" * 30)
    files = RepoFiles("", {"done.safetensors": 100, "half.safetensors": 50, "new.json": 7, "unknown": None})
    assert check_space(tmp_path, files, free=lambda _: 27) == 27  # 20 left of half, 7 of new
    with pytest.raises(NotEnoughSpace) as refused:
        check_space(tmp_path, files, free=lambda _: 26)
    assert (refused.value.needed, refused.value.free) == (27, 26)
    assert str(refused.value) == f"needs 0.0 MB, has 0.0 MB free on {tmp_path}"


@pytest.mark.parametrize(("name", "value"), [
    ("DEEPSEEK_DOWNLOAD_SOURCE", "s3"),
    ("DEEPSEEK_PROGRESS_INTERVAL_SECONDS", "0"),
    ("DEEPSEEK_MODEL", ""),
])
def test_bad_settings_exit_2_naming_the_variable(plain_hub: Hub, tmp_path: Path, name: str, value: str) -> None:
    result = download(downloader_env(tmp_path, plain_hub, tmp_path / "model", None, **{name: value}))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], result.stderr


# -- units --------------------------------------------------------------------------------------------


def test_classify_maps_client_errors_to_reasons_and_exit_codes() -> None:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError
    from modelscope_hub.errors import FileDownloadError, NotExistError

    def hf(status: int) -> HfHubHTTPError:
        request = httpx2.Request("GET", "https://hub.example/api/models/org/x")
        return HfHubHTTPError("boom", response=httpx2.Response(status, request=request), server_message="down")

    enospc = OSError(errno.ENOSPC, "No space left on device", "/models/model/x")
    wrapped = FileDownloadError("1 of 2 files failed", failed_files={"x": enospc}, total=2, output_dir="/m")
    cases = {
        "enospc": (enospc, "DiskFull", 2),
        "edquot": (OSError(errno.EDQUOT, "Disk quota exceeded"), "DiskFull", 2),
        "modelscope per-file ENOSPC": (wrapped, "DiskFull", 2),
        "403": (hf(403), "Unauthorized", 2),
        "404": (hf(404), "NotFound", 2),
        "modelscope not found": (NotExistError("Model not found", status_code=404), "NotFound", 2),
        "503": (hf(503), "Error", 1),
        "timeout": (TimeoutError("timed out"), "Error", 1),
        "other": (RuntimeError("line one\n  line two"), "Error", 1),
    }
    for what, (exc, reason, code) in cases.items():
        failure = classify(exc)
        assert (failure.reason, failure.exit_code) == (reason, code), what
        assert failure.message and "\n" not in failure.message, what
    assert classify(hf(503)).message.startswith("HTTP 503")


def test_settings_defaults_and_redaction() -> None:
    env = {"DEEPSEEK_DOWNLOAD_SOURCE": "huggingFace", "DEEPSEEK_MODEL": "org/x", "DEEPSEEK_DOWNLOAD_DIR": "/m",
           "DEEPSEEK_DOWNLOAD_TOKEN": " tok-123\n", "DEEPSEEK_PROGRESS_CONFIGMAP": "cm",
           "DEEPSEEK_PROGRESS_NAMESPACE": "ns", "KUBERNETES_SERVICE_HOST": "10.0.0.1",
           "KUBERNETES_SERVICE_PORT": "6443"}
    settings = DownloadSettings.from_env(env)
    assert (settings.revision, settings.interval, settings.token, settings.endpoint) == ("main", 5.0, "tok-123", None)
    assert settings.kube is not None
    assert settings.kube.url == "https://10.0.0.1:6443/api/v1/namespaces/ns/configmaps/cm"
    assert str(settings.kube.token_file) == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert str(settings.termination_log) == "/dev/termination-log"
    assert settings.redact("got tok-123 back") == "got *** back"
    assert DownloadSettings.from_env({k: v for k, v in env.items() if "PROGRESS" not in k}).kube is None


def test_measure_counts_partial_files_and_caps_each_file(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "b.bin").write_bytes(b"x" * 50)  # bigger than listed: capped
    partial = tmp_path / ".cache" / "huggingface" / "download"
    partial.mkdir(parents=True)
    (partial / "c.bin.etag.1234.incomplete").write_bytes(b"x" * 7)
    (partial / "c.bin.metadata").write_bytes(b"x" * 1000)  # client bookkeeping: not progress
    assert measure(tmp_path, {"a.bin": 10, "b.bin": 20, "c.bin": 30}) == (10 + 20 + 7, 1)
    with pytest.raises(Exception, match="1 of 3 files"):
        verify(tmp_path, RepoFiles("", {"a.bin": 10, "b.bin": 50, "c.bin": 30}))


def test_rate_window_uses_the_last_thirty_seconds() -> None:
    window = RateWindow(30)
    assert window.add(0, 0) == 0
    assert window.add(10, 1000) == 100
    assert window.add(40, 1000 + 300 * 30) == pytest.approx(300)
    assert window.add(41, 10300) == pytest.approx((10300 - 1000) / 31)
