"""A local model hub for tests: serves one directory as one model repo to the real clients,
huggingface_hub 2.4 (`model_info(files_metadata=True)`, `snapshot_download(local_dir=)`) and
modelscope 1.40 (`HubApi.list_repo_files`, `snapshot_download(local_dir=)`).

    python -m tests.fakehub --root DIR --repo ORG/NAME --port PORT [--bytes-per-second N]
        [--stall-after-bytes N] [--require-token TOKEN] [--ready-file F] [--request-log F]

--port 0 picks a free port; --ready-file receives the port once the server listens. Files whose
path has a component starting with "." are not part of the repo (e.g. the tiny model's stamp).
The repo has one commit (a sha derived from the content), reachable as `main`, `master` or the sha.

Hugging Face endpoints: GET /api/models/{repo}[/revision/{rev}] (`?blobs=true` adds sizes, blob ids
and LFS data), GET /api/models/{repo}/tree/{rev}[/{path}], HEAD/GET /{repo}/resolve/{rev}/{path}
(X-Repo-Commit, ETag, X-Linked-Etag/X-Linked-Size for LFS files, Content-Length, Range -> 206).
ModelScope endpoints: GET /api/v1/models/{repo}[/revisions], GET /api/v1/models/{repo}/repo/files
(Revision, Recursive, Root), GET /api/v1/models/{repo}/repo?Revision=&FilePath= (Range -> 206).
Errors use each hub's shape: X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound and a JSON
{"error": ...} on the Hugging Face side, {"Code", "Message", "Success": false} on ModelScope's.

Modes: --bytes-per-second caps the rate of all file bodies together and sends bodies over 64 KiB
one at a time (a single slow link: the steps of progress on disk stay apart, although
huggingface_hub writes in 10 MiB blocks); --stall-after-bytes sends that
many bytes of each file body and then holds the connection open without sending anything;
--require-token answers 401 unless `Authorization: Bearer TOKEN`; --request-log appends
"METHOD /path?query" per request.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

CHUNK = 64 * 1024
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


@dataclass(frozen=True)
class RepoFile:
    path: str
    disk: Path
    size: int
    sha256: str
    blob_id: str  # git blob sha1 (of the LFS pointer for LFS files)
    lfs: bool


def scan(root: Path) -> dict[str, RepoFile]:
    files: dict[str, RepoFile] = {}
    for disk in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = disk.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        data = disk.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        lfs = rel.endswith(LFS_SUFFIXES) or len(data) >= 10 * 1024 * 1024
        blob = _pointer(sha, len(data)) if lfs else data
        blob_id = hashlib.sha1(b"blob %d\0" % len(blob) + blob).hexdigest()
        files[rel] = RepoFile(rel, disk, len(data), sha, blob_id, lfs)
    return files


def _pointer(sha: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {size}\n".encode()


class Hub:
    """The repo, the modes, and the shared byte counters."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.repo: str = args.repo
        self.files = scan(Path(args.root))
        listing = json.dumps([(f.path, f.sha256) for f in self.files.values()])
        self.commit = hashlib.sha1(listing.encode()).hexdigest()
        self.revisions = {"main", "master", self.commit}
        self.token: str | None = args.require_token
        self.rate: int | None = args.bytes_per_second
        self.stall_after: int | None = args.stall_after_bytes
        self.log_path: Path | None = Path(args.request_log) if args.request_log else None
        self.lock = threading.Lock()
        self.lane = threading.Lock()  # throttled: one large body at a time
        self.next_send = 0.0

    def record(self, method: str, target: str) -> None:
        if self.log_path is not None:
            with self.lock, self.log_path.open("a") as f:
                f.write(f"{method} {target}\n")

    def allow(self, n: int, body_sent: int) -> int:
        """How many of the next n bytes of a body that has sent `body_sent` may go now, after pacing
        the global rate; blocks forever (until the process is stopped) at the stall threshold."""
        if self.stall_after is not None:
            n = min(n, self.stall_after - body_sent)
            if n <= 0:
                while True:
                    time.sleep(3600)
        with self.lock:
            start = max(time.monotonic(), self.next_send)
            self.next_send = start + (n / self.rate if self.rate else 0.0)
            wait = start - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return n

    def hf_sibling(self, f: RepoFile, blobs: bool) -> dict[str, Any]:
        sibling: dict[str, Any] = {"rfilename": f.path}
        if blobs:
            sibling.update(size=f.size, blobId=f.blob_id)
            if f.lfs:
                sibling["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": len(_pointer(f.sha256, f.size))}
        return sibling

    def hf_tree_entries(self, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        entries: dict[str, dict[str, Any]] = {}
        base = prefix.strip("/")
        for f in self.files.values():
            if base and not f.path.startswith(base + "/"):
                continue
            rest = f.path[len(base) + 1 :] if base else f.path
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(([base] if base else []) + parts[:depth])
                entries.setdefault(folder, {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(),
                                            "size": 0, "path": folder})
                if not recursive:
                    break
            if len(parts) > 1 and not recursive:
                continue
            entry: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(_pointer(f.sha256, f.size))}
            entries[f.path] = entry
        return list(entries.values())

    def ms_entries(self, root: str) -> list[dict[str, Any]]:
        base = root.strip("/")
        return [{"Name": f.path.rsplit("/", 1)[-1], "Path": f.path, "Revision": self.commit, "Sha256": f.sha256,
                 "Size": f.size, "Type": "blob", "IsLFS": f.lfs, "Mode": "33188", "CommitterName": "fakehub",
                 "CommittedDate": 1764590400, "CommitMessage": "upload"}
                for f in self.files.values() if not base or f.path.startswith(base + "/")]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakehub/1"
    hub: Hub

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the request log (if any) records requests

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    # -- routing ------------------------------------------------------------------------------------

    def _dispatch(self, head: bool) -> None:
        self.hub.record(self.command, self.path)
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        modelscope = parts[:3] == ["api", "v1", "models"]
        if not self._authorized(modelscope):
            return
        if modelscope:
            self._modelscope(parts[3:], query, head)
        elif parts[:2] == ["api", "models"]:
            self._hf_api(parts[2:], query)
        elif len(parts) >= 5 and parts[2] == "resolve":
            self._hf_resolve(parts, head)
        else:
            self._hf_error(404, "EntryNotFound" if parts else "", f"Not found: {url.path}")

    def _authorized(self, modelscope: bool) -> bool:
        if self.hub.token is None:
            return True
        sent = self.headers.get("Authorization")
        if sent == f"Bearer {self.hub.token}":
            return True
        text = "Invalid username or password." if sent is None else "Invalid credentials in Authorization header"
        if modelscope:
            self._ms_error(401, text)
        else:
            self._hf_error(401, "", text)
        return False

    def _repo(self, parts: list[str]) -> bool:
        return "/".join(parts[:2]) == self.hub.repo

    # -- Hugging Face ---------------------------------------------------------------------------------

    def _hf_api(self, parts: list[str], query: dict[str, str]) -> None:
        if not self._repo(parts):
            return self._hf_error(404, "RepoNotFound", "Repository not found")
        rest = parts[2:]
        revision = rest[1] if len(rest) >= 2 and rest[0] in ("revision", "tree") else "main"
        if revision not in self.hub.revisions:
            return self._hf_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if not rest or rest[0] == "revision":
            blobs = query.get("blobs", "").lower() == "true"
            return self._json(200, {
                "_id": self.hub.commit[:24], "id": self.hub.repo, "modelId": self.hub.repo, "author":
                self.hub.repo.split("/")[0], "sha": self.hub.commit, "private": False, "disabled": False,
                "gated": False, "downloads": 0, "likes": 0, "tags": [], "library_name": "transformers",
                "siblings": [self.hub.hf_sibling(f, blobs) for f in self.hub.files.values()]})
        if rest[0] == "tree":
            recursive = query.get("recursive", "").lower() == "true"
            return self._json(200, self.hub.hf_tree_entries("/".join(rest[2:]), recursive))
        return self._hf_error(404, "", "Not found")

    def _hf_resolve(self, parts: list[str], head: bool) -> None:
        if not self._repo(parts):
            return self._hf_error(404, "RepoNotFound", "Repository not found")
        revision, path = parts[3], "/".join(parts[4:])
        if revision not in self.hub.revisions:
            return self._hf_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        f = self.hub.files.get(path)
        if f is None:
            return self._hf_error(404, "EntryNotFound", f"{path} does not exist on \"{revision}\"",
                                  {"X-Repo-Commit": self.hub.commit})
        headers = {"X-Repo-Commit": self.hub.commit, "ETag": f'"{f.sha256 if f.lfs else f.blob_id}"'}
        if f.lfs:
            headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)})
        self._file(f, headers, head)

    def _hf_error(self, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
        headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {}), **(extra or {})}
        self._json(status, {"error": message}, headers)

    # -- ModelScope -----------------------------------------------------------------------------------

    def _modelscope(self, parts: list[str], query: dict[str, str], head: bool) -> None:
        if parts[:2] == ["repos", "internalAccelerationInfo"] or not self._repo(parts):
            return self._ms_error(404, f"Model not found: {'/'.join(parts[:2])}")
        rest = parts[2:]
        if rest == ["revisions"]:
            return self._ms_ok({"RevisionMap": {"Branches": [{"Revision": "master"}, {"Revision": "main"}],
                                                "Tags": []}})
        if not rest:
            owner, name = parts[:2]
            return self._ms_ok({"Name": name, "Path": owner, "ChineseName": "", "Revision": "master"})
        revision = query.get("Revision", "master")
        if revision not in self.hub.revisions:
            return self._ms_error(404, f"Revision not found: {revision}")
        if rest == ["repo", "files"]:
            return self._ms_ok({"Files": self.hub.ms_entries(query.get("Root", ""))})
        if rest == ["repo"]:
            f = self.hub.files.get(query.get("FilePath", "").lstrip("/"))
            if f is None:
                return self._ms_error(404, f"File not found: {query.get('FilePath', '')}")
            return self._file(f, {"X-Linked-ETag": f'"{f.sha256}"'} if f.lfs else {}, head)
        return self._ms_error(404, "Not found")

    def _ms_ok(self, data: Any) -> None:
        self._json(200, {"Code": 200, "Data": data, "Message": "success", "RequestId": uuid.uuid4().hex,
                         "Success": True})

    def _ms_error(self, status: int, message: str) -> None:
        self._json(status, {"Code": status, "Message": message, "RequestId": uuid.uuid4().hex, "Success": False})

    # -- responses ------------------------------------------------------------------------------------

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _file(self, f: RepoFile, headers: dict[str, str], head: bool) -> None:
        """The file with the hub's headers; `Range: bytes=a-b` (or `a-`, `-n`) gets 206, a bad range 416."""
        try:
            ranged = self._range(f.size)
        except ValueError:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{f.size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = ranged or (0, f.size - 1)
        self.send_response(206 if ranged else 200)
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end}/{f.size}")
        for key, value in {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if not head:
            self._send_body(f.disk, start, end + 1)

    def _range(self, size: int) -> tuple[int, int] | None:
        """(first, last) byte of a Range header, None without one; ValueError when unsatisfiable."""
        header = self.headers.get("Range", "")
        if not header.startswith("bytes="):
            return None
        first, _, last = header[len("bytes="):].split(",")[0].partition("-")
        start = int(first) if first else size - int(last)
        end = min(int(last), size - 1) if first and last else size - 1
        if not 0 <= start <= end:
            raise ValueError(header)
        return start, end

    def _send_body(self, disk: Path, start: int, stop: int) -> None:
        lane = self.hub.lane if self.hub.rate and stop - start > CHUNK else contextlib.nullcontext()
        try:
            with lane, disk.open("rb") as fh:
                fh.seek(start)
                position = start
                while position < stop:
                    n = self.hub.allow(min(CHUNK, stop - position), position - start)
                    self.wfile.write(fh.read(n))
                    position += n
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakehub", description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--bytes-per-second", type=int)
    parser.add_argument("--stall-after-bytes", type=int)
    parser.add_argument("--require-token")
    parser.add_argument("--ready-file")
    parser.add_argument("--request-log")
    args = parser.parse_args(argv)
    handler = type("BoundHandler", (Handler,), {"hub": Hub(args)})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    if args.ready_file:
        tmp = f"{args.ready_file}.tmp"
        Path(tmp).write_text(str(server.server_address[1]))
        os.replace(tmp, args.ready_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
