"""The "restricted" Pod Security Standard, which includes the "baseline" one, checked offline.

Each control of https://kubernetes.io/docs/concepts/security/pod-security-standards/ (Kubernetes
1.33) as a rule over a pod's spec, for every container, init container and ephemeral container:
what the admission controller of a namespace labelled `pod-security.kubernetes.io/enforce:
restricted` would refuse. Linux pods only: a Windows pod (`spec.os.name: windows`) is exempt
from some restricted controls, and no project of this template has one.
"""

from collections.abc import Iterator
from typing import Any

# Baseline, "Capabilities": what a container may add.
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
# Baseline, "Sysctls": the safe set.
SAFE_SYSCTLS = {
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
# Baseline, "SELinux": the types a pod or container may ask for.
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
# Restricted, "Volume Types".
VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip
SECCOMP_TYPES = {"RuntimeDefault", "Localhost"}
APPARMOR_TYPES = {"RuntimeDefault", "Localhost"}
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}


def pod_template(document: dict[str, Any]) -> dict[str, Any] | None:
    """The pod (metadata and spec) that a workload document makes, or None for other kinds."""
    kind = document.get("kind")
    if kind not in WORKLOAD_KINDS:
        return None
    if kind == "Pod":
        return document
    spec = document["spec"]
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template: dict[str, Any] = spec["template"]
    return template


def violations(pod: dict[str, Any]) -> list[str]:
    """What in this pod (a Pod, or a workload's pod template) the restricted profile forbids."""
    found: list[str] = []
    spec = pod.get("spec", {})
    context = spec.get("securityContext") or {}

    # Baseline.
    for namespace in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(namespace):
            found.append(f"host namespaces: {namespace} is true")
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        found.append("HostProcess: the pod asks for hostProcess")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            found.append(f"hostPath volumes: {volume['name']}")
        elif not kinds <= VOLUME_TYPES:
            found.append(f"volume types: {volume['name']} is {', '.join(sorted(kinds))}")
    for name, value in ((pod.get("metadata") or {}).get("annotations") or {}).items():
        if name.startswith(APPARMOR_ANNOTATION) and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            found.append(f"AppArmor: annotation {name} is {value}")
    found += _apparmor("the pod", context)
    found += _selinux("the pod", context)
    for sysctl in context.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            found.append(f"sysctls: {sysctl['name']} is not in the safe set")

    # Restricted, at the level of the pod.
    if context.get("runAsUser") == 0:
        found.append("running as non-root user: the pod's runAsUser is 0")
    pod_non_root = context.get("runAsNonRoot") is True
    pod_seccomp = (context.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in SECCOMP_TYPES:
        found.append(f"seccomp: the pod's profile is {pod_seccomp}")

    for where, container in _containers(spec):
        security = container.get("securityContext") or {}
        if security.get("privileged"):
            found.append(f"privileged containers: {where}")
        if (security.get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"HostProcess: {where}")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"host ports: {where} asks for {port['hostPort']}")
        found += _apparmor(where, security)
        found += _selinux(where, security)
        if security.get("procMount", "Default") != "Default":
            found.append(f"/proc mount type: {where} asks for {security['procMount']}")
        if security.get("allowPrivilegeEscalation") is not False:
            found.append(f"privilege escalation: {where} does not set it false")
        non_root = security.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            found.append(f"running as non-root: neither {where} nor the pod sets runAsNonRoot")
        if security.get("runAsUser") == 0:
            found.append(f"running as non-root user: {where}'s runAsUser is 0")
        seccomp = (security.get("seccompProfile") or {}).get("type")
        if seccomp is None and pod_seccomp is None:
            found.append(f"seccomp: neither {where} nor the pod sets a profile")
        elif seccomp is not None and seccomp not in SECCOMP_TYPES:
            found.append(f"seccomp: {where}'s profile is {seccomp}")
        capabilities = security.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"capabilities: {where} does not drop ALL")
        for capability in capabilities.get("add") or []:
            if capability != "NET_BIND_SERVICE":
                baseline = "" if capability in BASELINE_CAPABILITIES else " (not even baseline)"
                found.append(f"capabilities: {where} adds {capability}{baseline}")
    return found


def _containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for field in ("containers", "initContainers", "ephemeralContainers"):
        for container in spec.get(field) or []:
            yield f"{field} {container.get('name')}", container


def _apparmor(where: str, context: dict[str, Any]) -> list[str]:
    profile = (context.get("appArmorProfile") or {}).get("type")
    if profile is not None and profile not in APPARMOR_TYPES:
        return [f"AppArmor: {where} asks for {profile}"]
    return []


def _selinux(where: str, context: dict[str, Any]) -> list[str]:
    options = context.get("seLinuxOptions") or {}
    found = []
    if options.get("type", "") not in SELINUX_TYPES:
        found.append(f"SELinux: {where} asks for type {options['type']}")
    for field in ("user", "role"):
        if options.get(field):
            found.append(f"SELinux: {where} sets {field}")
    return found
