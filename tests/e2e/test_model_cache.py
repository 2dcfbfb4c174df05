"""The model cache on the real control plane, with the real downloader and the real hub client.

kwok runs no containers, so the test plays the download pod: it starts `deepseek-worker-download`
here with the env the operator rendered into the Job, authenticated as the Job's own ServiceAccount
(a token from the TokenRequest API), against a local hub (tests/fakehub.py) serving the tiny model.
The pod itself is held Running by kwok (`download-hold` images, tools/control-plane/kwok-stages.yaml)
until the test gives it the downloader's exit code. The claim binds to a PersistentVolume the test
creates (the real PV controller binds it). At the end the real worker is started from the
downloaded files with the env of the rendered worker Deployment, and the hub stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from deepseek_sandbox.real_cluster import RealCluster
from tests.e2e.conftest import Kubectl, StartOperator, condition, free_port, warnings
from tests.waiting import eventually

pytestmark = pytest.mark.real_only(reason="claims, Jobs and RBAC of a download pod need the real control plane")

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
REPO = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
IMAGE = "registry.example.com/deepseek-worker:1.0.0-download-hold"
CLASS = "deepseek-e2e-manual"
HOLD_EXIT = "sandbox.deepseek.ai/exit-code"


@pytest.fixture(scope="module")
def tiny_model_dir() -> pathlib.Path:
    from deepseek_worker.testing.tiny import build_tiny_model

    return build_tiny_model()


@dataclass
class Hub:
    url: str
    proc: asyncio.subprocess.Process

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


@pytest.fixture
async def start_hub(tiny_model_dir: pathlib.Path, tmp_path: pathlib.Path) -> AsyncIterator[Callable[..., Any]]:
    """Start tests/fakehub.py serving the tiny model as REPO (stopped by PID at teardown)."""
    hubs: list[Hub] = []

    async def start(*flags: str) -> Hub:
        ready = tmp_path / f"hub-{len(hubs)}.port"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.fakehub", "--root", str(tiny_model_dir), "--repo", REPO, "--port", "0",
            "--ready-file", str(ready), *flags, cwd=ROOT)
        hub = Hub("", proc)
        hubs.append(hub)
        await eventually(ready.exists, timeout=30, interval=0.1, what="the fake hub listening")
        hub.url = f"http://127.0.0.1:{ready.read_text().strip()}"
        return hub

    yield start
    for hub in hubs:
        await hub.stop()


@pytest.fixture
async def volumes(real_cluster: RealCluster) -> AsyncIterator[Callable[[], str]]:
    """Create PersistentVolumes of the test's storage class for cache claims to bind (deleted after)."""
    names: list[str] = []

    def create() -> str:
        name = f"model-cache-{secrets.token_hex(3)}"
        pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
              "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": CLASS,
                       "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": f"/tmp/{name}"}}}
        created = real_cluster.http.post("/api/v1/persistentvolumes", json=pv)
        assert created.status_code == 201, created.text
        names.append(name)
        return name

    yield create
    for name in names:
        real_cluster.http.delete(f"/api/v1/persistentvolumes/{name}")


@pytest.fixture
def volume(volumes: Callable[[], str]) -> str:
    return volumes()


def manifest(hub_url: str, image: str = IMAGE, stall_seconds: int = 60) -> str:
    return json.dumps({
        "apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment", "metadata": {"name": "chat"},
        "spec": {
            "image": image, "replicas": 1,
            "model": {"id": REPO, "loadTimeoutSeconds": 10, "maxModelLen": 2048,
                      "source": {"huggingFace": {"endpoint": hub_url}},
                      "cache": {"enabled": True, "size": "1Gi", "storageClassName": CLASS,
                                "stallTimeoutSeconds": stall_seconds}},
            "serving": {"maxNewTokens": 64},
            "rollout": {"progressDeadlineSeconds": 60},
        },
    })


def dsd(cluster: RealCluster) -> dict[str, Any]:
    return cluster.get("dsd", "default", "chat") or {}


def one(cluster: RealCluster, resource: str, selector: str = "deepseek.ai/deployment=chat") -> dict[str, Any]:
    items = cluster.objects(resource, "default", selector)
    assert len(items) == 1, [i["metadata"]["name"] for i in items]
    return items[0]


async def ready_reason(cluster: RealCluster, reason: str, timeout: float = 60) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        obj = dsd(cluster)
        current = obj.get("status", {}).get("observedGeneration") == obj.get("metadata", {}).get("generation")
        return obj if current and condition(obj, "Ready").get("reason") == reason else None

    return await eventually(check, timeout=timeout, interval=0.2, what=f"Ready reason {reason}")


async def held_pod(cluster: RealCluster, job: str) -> dict[str, Any]:
    """The download Job's pod, once kwok runs it."""
    async def running() -> dict[str, Any] | None:
        pods = cluster.objects("pods", "default", f"batch.kubernetes.io/job-name={job}")
        return pods[0] if pods and pods[0].get("status", {}).get("phase") == "Running" else None

    return await eventually(running, timeout=60, interval=0.2, what=f"the pod of Job {job} running")


def end_pod(cluster: RealCluster, pod: dict[str, Any], code: int) -> None:
    """The download container exits with `code` (kwok's download-exit stage)."""
    path = cluster.resource("pods").path("default", pod["metadata"]["name"])
    response = cluster.http.patch(path, json={"metadata": {"annotations": {HOLD_EXIT: str(code)}}},
                                  headers={"Content-Type": "application/merge-patch+json"})
    response.raise_for_status()


async def job_token(kubectl: Kubectl, service_account: str, path: pathlib.Path) -> pathlib.Path:
    """A token of the download pod's ServiceAccount, as the kubelet would mount it."""
    path.write_text((await kubectl("create", "token", service_account, "-n", "default", "--duration=10m")).strip())
    return path


def downloader_env(cluster: RealCluster, job: dict[str, Any], token: pathlib.Path,
                   target: pathlib.Path) -> dict[str, str]:
    """The Job container's env (plain values; the test Secrets-free) with the pod's files mapped here."""
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    port = cluster.http.base_url.port
    return {**os.environ, **env, "DEEPSEEK_DOWNLOAD_DIR": str(target / "model"), "HF_HOME": str(target / "hf"),
            "MODELSCOPE_CACHE": str(target / "ms"), "DEEPSEEK_KUBE_API": f"https://127.0.0.1:{port}",
            "DEEPSEEK_KUBE_TOKEN_FILE": str(token),
            "DEEPSEEK_KUBE_CA_FILE": str(cluster.directory / "pki" / "apiserver.crt"),
            "DEEPSEEK_PROGRESS_INTERVAL_SECONDS": "0.5", "DEEPSEEK_TERMINATION_LOG": str(target / "termination")}


async def start_downloader(env: dict[str, str], log: pathlib.Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(str(BIN / "deepseek-worker-download"), env=env, stdout=out,
                                                    stderr=asyncio.subprocess.STDOUT)


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


async def columns(kubectl: Kubectl) -> dict[str, str]:
    header, row = (await kubectl("get", "dsd", "chat")).splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    return {name: row[start:end].strip() for name, start, end in zip(names, starts, [*starts[1:], None], strict=False)}


async def test_progress_rises_then_workers_start_from_the_cache_and_a_new_image_does_not_download(
        real_cluster: RealCluster, kubectl: Kubectl, start_operator: StartOperator, start_hub: Callable[..., Any],
        volumes: Callable[[], str], tmp_path: pathlib.Path) -> None:
    volumes()
    hub = await start_hub("--bytes-per-second", str(4 * 1024 * 1024))
    await start_operator()
    await kubectl("apply", "-f", "-", stdin=manifest(hub.url))
    obj = await ready_reason(real_cluster, "Downloading")
    assert obj["status"]["download"]["phase"] == "Pending"
    assert real_cluster.objects("deployments", "default", "deepseek.ai/deployment=chat") == []  # no worker yet
    job = one(real_cluster, "jobs")
    name = job["metadata"]["name"]
    claim = await eventually(lambda: (real_cluster.get("persistentvolumeclaims", "default", name) or {}).get(
        "status", {}).get("phase") == "Bound", timeout=60, what="the cache claim bound")
    assert claim
    pod = await held_pod(real_cluster, name)

    # The download pod's identity may patch its progress ConfigMap and nothing else.
    token = await job_token(kubectl, job["spec"]["template"]["spec"]["serviceAccountName"], tmp_path / "token")
    as_job = httpx.Client(base_url=str(real_cluster.http.base_url), verify=str(real_cluster.directory / "pki" /
                          "apiserver.crt"), headers={"Authorization": f"Bearer {token.read_text()}"}, timeout=10)
    merge = {"Content-Type": "application/merge-patch+json"}
    assert as_job.patch(real_cluster.resource("dsd").path("default", "chat"), content=b'{"spec":{"replicas":9}}',
                        headers=merge).status_code == 403
    assert as_job.get(real_cluster.resource("configmaps").path("default", name)).status_code == 403
    assert as_job.patch(real_cluster.resource("configmaps").path("default", f"{name}-other"), content=b"{}",
                        headers=merge).status_code == 403

    proc = await start_downloader(downloader_env(real_cluster, job, token, tmp_path), tmp_path / "download.log")
    seen: list[int] = []
    try:
        async def percents() -> bool:
            cols = await columns(kubectl)
            if cols["STATUS"] == "Downloading" and re.fullmatch(r"\d+%", cols["DOWNLOAD"]):
                value = int(cols["DOWNLOAD"].rstrip("%"))
                if not seen or value != seen[-1]:
                    seen.append(value)
            return proc.returncode is not None
        await eventually(percents, timeout=90, interval=0.3, what="the download finished")
    finally:
        await stop(proc)
    assert proc.returncode == 0, (tmp_path / "download.log").read_text()
    assert len([p for p in seen if 0 < p < 100]) >= 2 and seen == sorted(seen), seen
    status = dsd(real_cluster)["status"]["download"]
    assert status["bytesTotal"] > 20_000_000 and status["job"] == name, status

    end_pod(real_cluster, pod, 0)  # the container exits 0: the Job completes, the workers start
    obj = await ready_reason(real_cluster, "Ready", timeout=90)
    assert obj["status"]["download"]["phase"] == "Complete" and obj["status"]["download"]["percent"] == 100
    assert (await columns(kubectl))["DOWNLOAD"] == "Complete"
    deployment = one(real_cluster, "deployments")
    template = deployment["spec"]["template"]["spec"]
    assert {"name": "model", "persistentVolumeClaim": {"claimName": name, "readOnly": True}} in template["volumes"]
    (worker,) = template["containers"]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["DEEPSEEK_MODEL"] == "/models/model" and env["HF_HUB_OFFLINE"] == "1" and "HF_TOKEN" not in env

    # A new image rolls out without a second download: same Job (uid), same claim.
    await kubectl("patch", "dsd", "chat", "--type=merge", "-p",
                  json.dumps({"spec": {"image": IMAGE.replace("1.0.0", "1.1.0")}}))
    obj = await ready_reason(real_cluster, "Ready", timeout=90)
    assert obj["status"]["image"].endswith("1.1.0-download-hold")
    assert one(real_cluster, "jobs")["metadata"]["uid"] == job["metadata"]["uid"]

    # A new revision is a new cache: while it waits (no volume for its claim) the workers keep serving
    # the old one, untouched, and the claim they mount is kept.
    serving = one(real_cluster, "deployments")
    await kubectl("patch", "dsd", "chat", "--type=merge", "-p", json.dumps({"spec": {"model": {"revision": "v2"}}}))
    obj = await ready_reason(real_cluster, "Downloading")
    assert "to be bound" in condition(obj, "Ready")["message"] and condition(obj, "Available")["status"] == "True"
    new_job = one(real_cluster, "jobs")
    assert new_job["metadata"]["name"] != name  # the old Job is pruned, not its claim
    assert one(real_cluster, "deployments")["metadata"]["generation"] == serving["metadata"]["generation"]
    assert real_cluster.get("persistentvolumeclaims", "default", name) is not None
    # Once the new cache is downloaded the workers move to it, and the old claim goes.
    volumes()
    end_pod(real_cluster, await held_pod(real_cluster, new_job["metadata"]["name"]), 0)
    await ready_reason(real_cluster, "Ready", timeout=90)
    claims = await eventually(lambda: [c for c in real_cluster.objects("persistentvolumeclaims", "default")
                                       if c["metadata"]["name"] == name and not c["metadata"].get(
                                           "deletionTimestamp")] == [], timeout=60, what="the old claim pruned")
    assert claims

    # The worker starts from the downloaded files with the hub gone, on the rendered env.
    await hub.stop()
    await _worker_answers_from(env, tmp_path / "model", tmp_path)


async def _worker_answers_from(env: dict[str, str | None], model_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    port = free_port()
    worker_env = {k: v for k, v in env.items() if v is not None and not k.startswith("DEEPSEEK_JWT")}
    worker_env.update({"DEEPSEEK_MODEL": str(model_dir), "HF_HOME": str(tmp_path / "worker-hf"),
                       "DEEPSEEK_PORT": str(port), "DEEPSEEK_METRICS_PORT": str(free_port()),
                       "DEEPSEEK_MAX_MODEL_LEN": "2048", "HF_ENDPOINT": "http://127.0.0.1:9",
                       "DEEPSEEK_API_KEYS": "sk-cache"})
    with (tmp_path / "worker.log").open("wb") as out:
        proc = await asyncio.create_subprocess_exec(str(BIN / "deepseek-worker"), "--host", "127.0.0.1",
                                                    env={**os.environ, **worker_env}, stdout=out,
                                                    stderr=asyncio.subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            async def ready() -> bool:
                if proc.returncode is not None:
                    pytest.fail(f"worker exited {proc.returncode}:\n{(tmp_path / 'worker.log').read_text()}")
                try:
                    return (await client.get("/health/ready")).status_code == 200
                except httpx.HTTPError:
                    return False
            await eventually(ready, timeout=120, interval=0.5, what="the worker loaded from the cache")
            reply = await client.post("/v1/chat/completions", headers={"Authorization": "Bearer sk-cache"},
                                      json={"model": REPO, "max_tokens": 4,
                                            "messages": [{"role": "user", "content": "hi"}]})
            assert reply.status_code == 200, reply.text
            assert reply.json()["usage"]["completion_tokens"] >= 1
    finally:
        await stop(proc)


async def test_a_stalled_hub_is_reported_as_download_stalled(
        real_cluster: RealCluster, kubectl: Kubectl, start_operator: StartOperator, start_hub: Callable[..., Any],
        volume: str, tmp_path: pathlib.Path) -> None:
    hub = await start_hub("--stall-after-bytes", str(3 * 1024 * 1024))
    await start_operator()
    await kubectl("apply", "-f", "-", stdin=manifest(hub.url, stall_seconds=10))
    await ready_reason(real_cluster, "Downloading")
    job = one(real_cluster, "jobs")
    await held_pod(real_cluster, job["metadata"]["name"])
    token = await job_token(kubectl, job["spec"]["template"]["spec"]["serviceAccountName"], tmp_path / "token")
    # The client's own read timeout (10 s) would end this attempt first; the pod's Job would retry it.
    env = {**downloader_env(real_cluster, job, token, tmp_path), "HF_HUB_DOWNLOAD_TIMEOUT": "300"}
    proc = await start_downloader(env, tmp_path / "download.log")
    try:
        obj = await ready_reason(real_cluster, "DownloadStalled", timeout=60)
        assert proc.returncode is None  # still trying: the stall is the operator's verdict, by its clock
    finally:
        await stop(proc)
    message = condition(obj, "Ready")["message"]
    assert "no byte of" in message and "check the hub endpoint" in message, message
    download = obj["status"]["download"]
    assert download["phase"] == "Stalled" and download["bytesDone"] < download["bytesTotal"], download
    assert (await columns(kubectl))["DOWNLOAD"].startswith("Stalled ")
    assert condition(obj, "Degraded")["status"] == "False"  # not a rollout failure: nothing rolls back
    await eventually(lambda: warnings(real_cluster, "DownloadStalled"), timeout=30, what="a DownloadStalled event")


async def test_a_refused_download_fails_the_job_and_names_the_fix(
        real_cluster: RealCluster, kubectl: Kubectl, start_operator: StartOperator, start_hub: Callable[..., Any],
        volume: str, tmp_path: pathlib.Path) -> None:
    hub = await start_hub("--require-token", "hf_right")
    await start_operator()
    await kubectl("apply", "-f", "-", stdin=manifest(hub.url))
    job = await eventually(lambda: real_cluster.objects("jobs", "default", "deepseek.ai/deployment=chat"),
                           timeout=60, what="the download Job")
    (job,) = job
    pod = await held_pod(real_cluster, job["metadata"]["name"])
    token = await job_token(kubectl, job["spec"]["template"]["spec"]["serviceAccountName"], tmp_path / "token")
    proc = await start_downloader(downloader_env(real_cluster, job, token, tmp_path), tmp_path / "download.log")
    assert await asyncio.wait_for(proc.wait(), 60) == 2, (tmp_path / "download.log").read_text()
    obj = await ready_reason(real_cluster, "DownloadFailed")
    message = condition(obj, "Ready")["message"]
    assert "Unauthorized" in message and "401" in message and "tokenSecretRef" in message, message
    assert f"kubectl delete job {job['metadata']['name']}" in message, message
    assert "hf_right" not in json.dumps(obj)
    end_pod(real_cluster, pod, 2)  # podFailurePolicy: exit 2 fails the Job at once, no retry pod
    failed = await eventually(lambda: next((c for c in (real_cluster.get("jobs", "default", job["metadata"]["name"])
                                                        or {}).get("status", {}).get("conditions", [])
                                            if c["type"] == "Failed" and c["status"] == "True"), None),
                              timeout=60, what="the Job failed")
    assert failed["reason"] == "PodFailurePolicy", failed
    assert len(real_cluster.objects("pods", "default", f"batch.kubernetes.io/job-name={job['metadata']['name']}")) == 1
    assert (await columns(kubectl))["DOWNLOAD"] == "Failed"


@pytest.fixture
async def expandable_class(real_cluster: RealCluster) -> AsyncIterator[str]:
    """A StorageClass that allows volume expansion and a 1Gi PersistentVolume of it (both deleted after)."""
    name, pv = f"deepseek-e2e-expand-{secrets.token_hex(3)}", f"model-cache-{secrets.token_hex(3)}"
    storage_class = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
                     "provisioner": "kubernetes.io/no-provisioner", "allowVolumeExpansion": True}
    created = real_cluster.http.post("/apis/storage.k8s.io/v1/storageclasses", json=storage_class)
    assert created.status_code == 201, created.text
    volume = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
              "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": name,
                       "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": f"/tmp/{pv}"}}}
    created = real_cluster.http.post("/api/v1/persistentvolumes", json=volume)
    assert created.status_code == 201, created.text
    yield name
    real_cluster.http.delete(f"/api/v1/persistentvolumes/{pv}")
    real_cluster.http.delete(f"/apis/storage.k8s.io/v1/storageclasses/{name}")


async def test_a_larger_cache_size_grows_the_same_claim_and_a_smaller_one_is_refused_in_status(
        real_cluster: RealCluster, kubectl: Kubectl, start_operator: StartOperator, expandable_class: str) -> None:
    """The real apiserver takes the operator's resize patch (bound claim, class with allowVolumeExpansion:
    its PersistentVolumeClaimResize admission and the claim's update validation); the operator's own
    RBAC reads the class and patches the claim. No new claim, no new Job: nothing is downloaded again."""
    await start_operator()
    resource = json.loads(manifest("http://127.0.0.1:9"))
    resource["spec"]["model"]["cache"]["storageClassName"] = expandable_class
    await kubectl("apply", "-f", "-", stdin=json.dumps(resource))
    job = await eventually(lambda: real_cluster.objects("jobs", "default", "deepseek.ai/deployment=chat"),
                           timeout=60, what="the download Job")
    name = job[0]["metadata"]["name"]
    await eventually(lambda: (real_cluster.get("persistentvolumeclaims", "default", name) or {}).get(
        "status", {}).get("phase") == "Bound", timeout=60, what="the cache claim bound")

    await kubectl("patch", "dsd", "chat", "--type=merge", "-p", '{"spec":{"model":{"cache":{"size":"2Gi"}}}}')
    await eventually(lambda: (real_cluster.get("persistentvolumeclaims", "default", name) or {}).get(
        "spec", {}).get("resources", {}).get("requests", {}).get("storage") == "2Gi",
        timeout=60, what="the claim patched to 2Gi")
    assert [c["metadata"]["name"] for c in real_cluster.objects("persistentvolumeclaims", "default",
                                                                "deepseek.ai/deployment=chat")] == [name]
    assert [j["metadata"]["name"] for j in real_cluster.objects("jobs", "default", "deepseek.ai/deployment=chat")
            ] == [name]

    await kubectl("patch", "dsd", "chat", "--type=merge", "-p", '{"spec":{"model":{"cache":{"size":"1Gi"}}}}')

    async def shrink_refused() -> dict[str, Any] | None:
        obj = dsd(real_cluster)
        current = obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
        cond = condition(obj, "ModelCacheReady")
        return cond if current and cond.get("reason") == "CacheShrinkUnsupported" else None

    cond = await eventually(shrink_refused, timeout=60, interval=0.2, what="ModelCacheReady CacheShrinkUnsupported")
    assert cond["status"] == "False" and "cannot shrink" in cond["message"] and "keeps 2Gi" in cond["message"]
    claim = real_cluster.get("persistentvolumeclaims", "default", name) or {}
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
