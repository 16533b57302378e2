"""The offline check of the restricted Pod Security Standard refuses what the standard refuses."""

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.pod_security import pod_template, violations


def good_pod() -> dict[str, Any]:
    """A pod as the baked projects write them: restricted, as a user of the image's own."""
    return {
        "metadata": {"labels": {"app": "x"}},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "web",
                    "image": "app:1",
                    "ports": [{"containerPort": 8000}],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [
                {"name": "tmp", "emptyDir": {}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
            ],
        },
    }


def container(pod: dict[str, Any]) -> dict[str, Any]:
    security: dict[str, Any] = pod["spec"]["containers"][0]["securityContext"]
    return security


def pod_context(pod: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = pod["spec"]["securityContext"]
    return context


# Each control of the standard, broken once: what to change, and what the check must say.
BROKEN: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "privileged": (lambda p: container(p).update(privileged=True), "privileged containers"),
    "host network": (lambda p: p["spec"].update(hostNetwork=True), "hostNetwork"),
    "host PID": (lambda p: p["spec"].update(hostPID=True), "hostPID"),
    "host IPC": (lambda p: p["spec"].update(hostIPC=True), "hostIPC"),
    "hostPath": (
        lambda p: p["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        "hostPath volumes",
    ),
    "other volume type": (
        lambda p: p["spec"]["volumes"].append({"name": "n", "nfs": {"server": "s", "path": "/"}}),
        "volume types",
    ),
    "host port": (
        lambda p: p["spec"]["containers"][0]["ports"][0].update(hostPort=80),
        "host ports",
    ),
    "capability beyond NET_BIND_SERVICE": (
        lambda p: container(p)["capabilities"]["add"].append("CHOWN"),
        "adds CHOWN",
    ),
    "capability beyond baseline": (
        lambda p: container(p)["capabilities"]["add"].append("SYS_ADMIN"),
        "adds SYS_ADMIN (not even baseline)",
    ),
    "capabilities not dropped": (
        lambda p: container(p)["capabilities"].update(drop=["NET_RAW"]),
        "does not drop ALL",
    ),
    "privilege escalation allowed": (
        lambda p: container(p).update(allowPrivilegeEscalation=True),
        "privilege escalation",
    ),
    "privilege escalation unset": (
        lambda p: container(p).pop("allowPrivilegeEscalation"),
        "privilege escalation",
    ),
    "may run as root": (lambda p: pod_context(p).pop("runAsNonRoot"), "running as non-root:"),
    "container runs as root": (
        lambda p: container(p).update(runAsNonRoot=False),
        "running as non-root:",
    ),
    "user 0": (lambda p: container(p).update(runAsUser=0), "runAsUser is 0"),
    "pod user 0": (lambda p: pod_context(p).update(runAsUser=0), "runAsUser is 0"),
    "no seccomp profile": (lambda p: pod_context(p).pop("seccompProfile"), "seccomp"),
    "unconfined seccomp": (
        lambda p: container(p).update(seccompProfile={"type": "Unconfined"}),
        "seccomp",
    ),
    "unconfined AppArmor": (
        lambda p: container(p).update(appArmorProfile={"type": "Unconfined"}),
        "AppArmor",
    ),
    "unconfined AppArmor annotation": (
        lambda p: p["metadata"].update(
            annotations={"container.apparmor.security.beta.kubernetes.io/web": "unconfined"}
        ),
        "AppArmor",
    ),
    "SELinux type": (
        lambda p: pod_context(p).update(seLinuxOptions={"type": "spc_t"}),
        "SELinux",
    ),
    "SELinux user": (
        lambda p: container(p).update(seLinuxOptions={"user": "system_u"}),
        "SELinux",
    ),
    "unmasked /proc": (lambda p: container(p).update(procMount="Unmasked"), "/proc mount"),
    "unsafe sysctl": (
        lambda p: pod_context(p).update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
        "sysctls",
    ),
    "host process": (
        lambda p: container(p).update(windowsOptions={"hostProcess": True}),
        "HostProcess",
    ),
    "init container left open": (
        lambda p: p["spec"].update(initContainers=[{"name": "init", "image": "app:1"}]),
        "initContainers init does not drop ALL",
    ),
}


def test_a_restricted_pod_passes() -> None:
    assert violations(good_pod()) == []
    # Each container may carry runAsNonRoot and the seccomp profile instead of the pod.
    pod = good_pod()
    container(pod).update(runAsNonRoot=True, seccompProfile={"type": "Localhost"})
    del pod_context(pod)["runAsNonRoot"], pod_context(pod)["seccompProfile"]
    assert violations(pod) == []


@pytest.mark.parametrize("control", BROKEN)
def test_a_pod_that_breaks_a_control_is_refused(control: str) -> None:
    pod = good_pod()
    breaking, expected = BROKEN[control]
    breaking(pod)
    found = violations(pod)
    assert found, f"{control}: not refused"
    assert any(expected in violation for violation in found), found


def test_the_pod_of_each_kind_of_workload_is_checked() -> None:
    pod = good_pod()
    template = copy.deepcopy(pod)
    job = {"kind": "Job", "spec": {"template": template}}
    cron = {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": template}}}}
    assert pod_template({"kind": "Deployment", "spec": {"template": template}}) is template
    assert pod_template(job) is template
    assert pod_template(cron) is template
    assert pod_template({"kind": "Pod", **pod}) is not None
    assert pod_template({"kind": "Service", "spec": {}}) is None
