"""The worker's start-up measurements, reported to the operator (docs/gpu-sizing.md, "Measured").

`report_measurements(measurements, settings)` writes one JSON document into `data.measurements` of
the ConfigMap the operator names (`DEEPSEEK_REPORT_CONFIGMAP` / `DEEPSEEK_REPORT_NAMESPACE`), as a
JSON merge patch with the pod's ServiceAccount token: the only grant that account has. The operator
watches that ConfigMap and puts the figures beside its GPU-fit plan. The document echoes the
settings the plan depends on, so the operator can tell a report of the current template from an old
pod's.

Contract: called once, after the engine has loaded and warmed up. A no-op (False) outside a cluster
or when the ConfigMap is not configured; every failure is one WARNING line and False, never an
exception: reporting never stops serving. Blocking (one HTTP request, WRITE_TIMEOUT_SECONDS at most):
call it from a thread in async code (`await asyncio.to_thread(...)`).

Test hooks, as the downloader has them: DEEPSEEK_KUBE_API (else https://$KUBERNETES_SERVICE_HOST:
$KUBERNETES_SERVICE_PORT), DEEPSEEK_KUBE_TOKEN_FILE and DEEPSEEK_KUBE_CA_FILE (else the mounted
ServiceAccount's).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import httpx

from .settings import Settings
from .types import EngineMeasurements

log = logging.getLogger("deepseek_worker.report")

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
WRITE_TIMEOUT_SECONDS = 5.0
REPORT_KEY = "measurements"  # operator/deepseek_operator/measured.py reads this key


def document(measurements: EngineMeasurements, settings: Settings, pod: str, now: float) -> dict[str, object]:
    """The report: what the engine measured, who measured it, and the settings it ran with."""
    return {
        "pod": pod,
        "reportedAt": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": measurements.device,
        "weightBytes": measurements.weight_bytes,
        "kvCacheBytesPerToken": measurements.kv_cache_bytes_per_token,
        "kvPoolTokens": measurements.kv_pool_tokens,
        "kvPoolBytes": measurements.kv_pool_bytes,
        "peakMemoryBytes": measurements.peak_memory_bytes,
        "loadSeconds": round(measurements.load_seconds, 3),
        "settings": {
            "model": settings.served_name,
            "dtype": settings.dtype,
            "quantization": settings.quantization,
            "maxModelLen": settings.max_model_len,
            "maxBatchSize": settings.max_batch_size,
            "gpuMemoryUtilization": settings.gpu_memory_utilization,
            "kvCacheBytes": settings.kv_cache_bytes,
            "maxNumBatchedTokens": settings.max_num_batched_tokens,
        },
    }


def _api(env: Mapping[str, str]) -> str:
    """The API server's URL, or "" outside a cluster."""
    api = env.get("DEEPSEEK_KUBE_API", "").strip()
    if api:
        return api
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        return ""
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def in_cluster(env: Mapping[str, str]) -> bool:
    """Whether `env` names an API server (in a pod, or the DEEPSEEK_KUBE_API test hook)."""
    return bool(_api(env))


def _verify(api: str, ca_file: Path) -> ssl.SSLContext | bool:
    if not api.startswith("https://") or not ca_file.is_file():
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except OSError as exc:  # ssl.SSLError too: a bad CA file is a failed report, not a crash
        log.warning("ignoring the CA file %s (%s): using the system's CAs", ca_file, exc)
        return True


def _reason(response: httpx.Response) -> str:
    """HTTP status and the `message` of a Kubernetes Status body (else the start of the body)."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    text = str(message or response.text[:200]).replace("\n", " ")
    return f"HTTP {response.status_code} {response.reason_phrase}: {text}"


def report_measurements(measurements: EngineMeasurements, settings: Settings,
                        env: Mapping[str, str] | None = None) -> bool:
    """Patch the report ConfigMap with `measurements`; True when the API server took it (see the
    module docstring: never raises, a no-op outside a cluster or without a configured ConfigMap)."""
    env = os.environ if env is None else env
    pod = env.get("HOSTNAME") or socket.gethostname()
    done = patch_report(REPORT_KEY, document(measurements, settings, pod, time.time()), settings,
                        "measurement report", env)
    if done:
        log.info("reported measurements to configmap %s/%s: weight_bytes=%d kv_pool_tokens=%d "
                 "peak_memory_bytes=%d load_seconds=%.1f", settings.report_namespace, settings.report_configmap,
                 measurements.weight_bytes, measurements.kv_pool_tokens, measurements.peak_memory_bytes,
                 measurements.load_seconds)
    return done


def patch_report(key: str, doc: Mapping[str, object], settings: Settings, what: str,
                 env: Mapping[str, str] | None = None) -> bool:
    """Merge-patch `data[key]` of the report ConfigMap with `doc` as compact JSON (the channel of the
    module docstring, also the gateway's: gateway/report.py). True when the API server took it; False,
    with one WARNING line naming `what`, on any failure; False without a word outside a cluster or
    without a configured ConfigMap. Never raises; blocking."""
    env = os.environ if env is None else env
    name, namespace = settings.report_configmap, settings.report_namespace
    if not name or not namespace:
        return False
    api = _api(env)
    if not api:
        log.info("not writing the %s to configmap %s/%s: not in a cluster", what, namespace, name)
        return False
    token_file = Path(env.get("DEEPSEEK_KUBE_TOKEN_FILE") or f"{SA_DIR}/token")
    ca_file = Path(env.get("DEEPSEEK_KUBE_CA_FILE") or f"{SA_DIR}/ca.crt")
    body = json.dumps({"data": {key: json.dumps(doc, separators=(",", ":"))}})
    headers = {"Content-Type": "application/merge-patch+json"}
    try:
        token = token_file.read_text().strip()
    except OSError:
        token = ""
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = f"{api.rstrip('/')}/api/v1/namespaces/{namespace}/configmaps/{name}"
    try:
        with httpx.Client(verify=_verify(api, ca_file), timeout=WRITE_TIMEOUT_SECONDS) as client:
            response = client.patch(url, content=body, headers=headers)
    except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
        log.warning("%s to configmap %s/%s failed (serving goes on): %s: %s",
                    what, namespace, name, type(exc).__name__, exc)
        return False
    if response.status_code >= 300:
        log.warning("%s to configmap %s/%s refused (serving goes on): %s", what, namespace, name, _reason(response))
        return False
    return True
