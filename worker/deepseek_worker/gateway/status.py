"""What a held request is waiting for: `scheduling`, `downloading 42%` or `loading`.

`StatusSource.describe(variant)` answers from the DeepSeekDeployment's status (`status.variants[]`:
replicas, readyReplicas, download.percent/phase) read through the Kubernetes API with the pod's
service account (KubeStatusSource); `FixedStatus` answers what a test sets. None: nothing known.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import httpx

log = logging.getLogger("deepseek_worker.gateway.status")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
GROUP_VERSION = "deepseek.ai/v1alpha1"
TIMEOUT_SECONDS = 2.0


class StatusSource(Protocol):
    async def describe(self, variant: str) -> str | None: ...


class FixedStatus:
    """A status source for tests: `phases[variant]`, changed by the test as it goes."""

    def __init__(self, phases: dict[str, str] | None = None) -> None:
        self.phases = dict(phases or {})

    async def describe(self, variant: str) -> str | None:
        return self.phases.get(variant)


def describe_variant(status: dict[str, Any], variant: str) -> str | None:
    """The phase of `variant` in a DeepSeekDeployment status: a download not complete -> `downloading N%`;
    no pod running yet -> `scheduling`; pods but none ready -> `loading`; None when it is not listed."""
    for entry in status.get("variants", []):
        if entry.get("name") != variant:
            continue
        download = entry.get("download") or {}
        if download and download.get("phase") not in ("Complete", "Succeeded", None):
            return f"downloading {int(download.get('percent', 0))}%"
        if not entry.get("replicas"):
            return "scheduling"
        return "loading"
    return None


class KubeStatusSource:
    """Reads deepseekdeployments/<name> in <namespace> with in-cluster credentials (token re-read each time)."""

    def __init__(self, name: str, namespace: str, api: str = "https://kubernetes.default.svc",
                 account: Path = SERVICE_ACCOUNT, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = f"{api}/apis/{GROUP_VERSION}/namespaces/{namespace}/deepseekdeployments/{name}"
        self.account = account
        ca = account / "ca.crt"
        self.client = httpx.AsyncClient(verify=str(ca) if ca.is_file() else True, timeout=TIMEOUT_SECONDS,
                                        trust_env=False, transport=transport)

    async def describe(self, variant: str) -> str | None:
        try:
            token = (self.account / "token").read_text(encoding="utf-8").strip()
            response = await self.client.get(self.url, headers={"Authorization": f"Bearer {token}"})
            response.raise_for_status()
            return describe_variant(response.json().get("status") or {}, variant)
        except (OSError, httpx.HTTPError, ValueError) as exc:
            log.debug("status of %s unavailable: %s", self.url, exc)
            return None

    async def close(self) -> None:
        await self.client.aclose()
