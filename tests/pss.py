"""Pod Security Standards "restricted" profile checker (baseline + restricted controls).

`pod_violations(pod_spec)` returns one message per violated control; an empty list means the pod
would be admitted by a namespace labelled `pod-security.kubernetes.io/enforce: restricted`.
`pod_spec_of(obj)` finds the pod spec inside a Pod or a workload object.
Reference: kubernetes.io/docs/concepts/security/pod-security-standards (Linux pods).
"""

from __future__ import annotations

from typing import Any

# Volume types the restricted profile allows (anything else, e.g. hostPath, nfs, is refused).
RESTRICTED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
ALLOWED_ADDED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
ALLOWED_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
ALLOWED_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
POD_KINDS_TEMPLATE = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


def pod_spec_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a Pod, a workload (Deployment, ...) or a CronJob; None for other kinds."""
    kind = obj.get("kind")
    if kind == "Pod":
        return dict(obj["spec"])
    if kind in POD_KINDS_TEMPLATE:
        return dict(obj["spec"]["template"]["spec"])
    if kind == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return None


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *pod.get("initContainers", []),
        *pod.get("containers", []),
        *pod.get("ephemeralContainers", []),
    ]


def _host_namespaces(pod: dict[str, Any]) -> list[str]:
    return [f"spec.{field} must not be true" for field in ("hostNetwork", "hostPID", "hostIPC") if pod.get(field)]


def _volumes(pod: dict[str, Any]) -> list[str]:
    out = []
    for volume in pod.get("volumes", []):
        types = set(volume) - {"name"}
        for bad in sorted(types - RESTRICTED_VOLUME_TYPES):
            out.append(f"volume {volume.get('name')!r}: type {bad} is not allowed")
    return out


def _pod_level(pod: dict[str, Any]) -> list[str]:
    out: list[str] = []
    psc = pod.get("securityContext") or {}
    for sysctl in psc.get("sysctls", []):
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"sysctl {sysctl.get('name')} is not allowed")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("spec.securityContext.windowsOptions.hostProcess must not be true")
    if psc.get("runAsUser") == 0:
        out.append("spec.securityContext.runAsUser must not be 0")
    return out


def _container(c: dict[str, Any], psc: dict[str, Any]) -> list[str]:
    """Controls checked per container; pod-level securityContext fields count as inherited."""
    name = c.get("name", "?")
    sc = c.get("securityContext") or {}
    out: list[str] = []

    def bad(msg: str) -> None:
        out.append(f"container {name!r}: {msg}")

    if sc.get("privileged"):
        bad("privileged must not be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        bad("allowPrivilegeEscalation must be false")
    caps = sc.get("capabilities") or {}
    if "ALL" not in caps.get("drop", []):
        bad("capabilities.drop must include ALL")
    for cap in caps.get("add", []):
        if cap not in ALLOWED_ADDED_CAPABILITIES:
            bad(f"capability {cap} must not be added")
    if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
        bad("runAsNonRoot must be true (container or pod)")
    if sc.get("runAsUser") == 0:
        bad("runAsUser must not be 0")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp not in ALLOWED_SECCOMP:
        bad(f"seccompProfile.type must be RuntimeDefault or Localhost (container or pod), got {seccomp}")
    if sc.get("procMount", "Default") != "Default":
        bad("procMount must be Default")
    selinux = sc.get("seLinuxOptions") or psc.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in ALLOWED_SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        bad("seLinuxOptions not allowed")
    apparmor = (sc.get("appArmorProfile") or psc.get("appArmorProfile") or {}).get("type")
    if apparmor == "Unconfined":
        bad("appArmorProfile must not be Unconfined")
    if (sc.get("windowsOptions") or {}).get("hostProcess"):
        bad("windowsOptions.hostProcess must not be true")
    for port in c.get("ports", []):
        if port.get("hostPort"):
            bad(f"hostPort {port['hostPort']} is not allowed")
    return out


def pod_violations(pod: dict[str, Any]) -> list[str]:
    """Every violation of the restricted profile in a pod spec (empty: compliant)."""
    psc = pod.get("securityContext") or {}
    out = [*_host_namespaces(pod), *_volumes(pod), *_pod_level(pod)]
    for container in _containers(pod):
        out.extend(_container(container, psc))
    return out


def object_violations(obj: dict[str, Any]) -> list[str]:
    """Violations of the pod inside `obj`, prefixed with kind/name; [] for objects without pods."""
    pod = pod_spec_of(obj)
    if pod is None:
        return []
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    return [f"{where}: {v}" for v in pod_violations(pod)]
