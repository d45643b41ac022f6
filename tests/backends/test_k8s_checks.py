"""Policy checks on Kubernetes objects: Pod Security Standards, RBAC escalation, the rest."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hoop_mcp.backends.k8s_checks import CHECKS, Finding, check_objects, pod_specs
from hoop_mcp.backends.k8s_objects import KubeObject


def obj(body: dict[str, Any], index: int = 0) -> KubeObject:
    meta = body.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    namespace = meta.get("namespace")
    return KubeObject(
        api_version=str(body.get("apiVersion", "v1")),
        kind=str(body.get("kind", "")),
        name=str(meta.get("name", "x")),
        namespace=namespace if isinstance(namespace, str) else None,
        body=body,
        index=index,
        source=f"document {index + 1}",
    )


def findings(body: dict[str, Any]) -> list[Finding]:
    return check_objects([obj(body)])


def pairs(body: dict[str, Any], *, skip: frozenset[str] = frozenset({"rbac.change"})) -> set[tuple[str, str]]:
    return {(f.check, f.path) for f in findings(body) if f.check not in skip}


def clean_container(name: str = "app") -> dict[str, Any]:
    return {
        "name": name,
        "image": "registry.example.com/app:1.0",
        "ports": [{"containerPort": 8080}],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }


def clean_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "annotations": {"team": "a"}},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [clean_container("init")],
            "containers": [clean_container("app")],
            "volumes": [{"name": "cache", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}],
        },
    }


def put(body: Any, path: str, value: Any) -> Any:
    """Set ``path`` (dots, ``[i]``; ``~`` deletes; a ``|`` separates a key holding dots) in place."""
    head, _, key = path.partition("|")
    steps: list[str | int] = []
    for part in head.split(".") if head else []:
        name, *idx = part.replace("]", "").split("[")
        if name:
            steps.append(name)
        steps.extend(int(i) for i in idx)
    if key:
        steps.append(key)
    node = body
    for step in steps[:-1]:
        node = node[step] if isinstance(step, int) else node.setdefault(step, {})
    last = steps[-1]
    if value == "~":
        del node[last]
    else:
        node[last] = value
    return body


C0 = "spec.containers[0]"
SC0 = f"{C0}.securityContext"
PSC = "spec.securityContext"
AA = "container.apparmor.security.beta.kubernetes.io/app"


# --------------------------------------------------------------------------------------------
# Pod Security Standards: one mutation of a restricted-clean pod, exact findings.


def test_a_restricted_clean_pod_has_no_findings() -> None:
    assert findings(clean_pod()) == []


PSS_CASES: list[tuple[str, str, Any, set[tuple[str, str]]]] = [
    # Host namespaces, booleans fail closed.
    ("host network", "spec.hostNetwork", True, {("pss.baseline.host_namespaces", "spec.hostNetwork")}),
    ("host pid as string", "spec.hostPID", "true", {("pss.baseline.host_namespaces", "spec.hostPID")}),
    ("host ipc as int", "spec.hostIPC", 1, {("pss.baseline.host_namespaces", "spec.hostIPC")}),
    (
        "host network false string",
        "spec.hostNetwork",
        "false",
        {("pss.baseline.host_namespaces", "spec.hostNetwork")},
    ),
    ("host network false", "spec.hostNetwork", False, set()),
    # HostProcess.
    (
        "pod hostProcess",
        f"{PSC}.windowsOptions.hostProcess",
        True,
        {("pss.baseline.host_process", f"{PSC}.windowsOptions.hostProcess")},
    ),
    (
        "container hostProcess",
        f"{SC0}.windowsOptions.hostProcess",
        True,
        {("pss.baseline.host_process", f"{SC0}.windowsOptions.hostProcess")},
    ),
    ("hostProcess false", f"{SC0}.windowsOptions.hostProcess", False, set()),
    (
        "windowsOptions as string",
        f"{SC0}.windowsOptions",
        "hostProcess",
        {("pss.baseline.host_process", f"{SC0}.windowsOptions")},
    ),
    # Privileged.
    ("privileged", f"{SC0}.privileged", True, {("pss.baseline.privileged", f"{SC0}.privileged")}),
    ("privileged as string", f"{SC0}.privileged", "true", {("pss.baseline.privileged", f"{SC0}.privileged")}),
    (
        "privileged 'false' string",
        f"{SC0}.privileged",
        "false",
        {("pss.baseline.privileged", f"{SC0}.privileged")},
    ),
    ("privileged as int", f"{SC0}.privileged", 1, {("pss.baseline.privileged", f"{SC0}.privileged")}),
    ("privileged as list", f"{SC0}.privileged", [True], {("pss.baseline.privileged", f"{SC0}.privileged")}),
    ("privileged false", f"{SC0}.privileged", False, set()),
    ("privileged null", f"{SC0}.privileged", None, set()),
    # Capabilities (exact upstream strings).
    (
        "add SYS_ADMIN",
        f"{SC0}.capabilities.add",
        ["SYS_ADMIN"],
        {("pss.baseline.capabilities", f"{SC0}.capabilities.add[0]")},
    ),
    (
        "add lowercase sys_admin",
        f"{SC0}.capabilities.add",
        ["sys_admin"],
        {("pss.baseline.capabilities", f"{SC0}.capabilities.add[0]")},
    ),
    (
        "add CAP_ prefixed",
        f"{SC0}.capabilities.add",
        ["NET_BIND_SERVICE", "CAP_SYS_ADMIN"],
        {("pss.baseline.capabilities", f"{SC0}.capabilities.add[1]")},
    ),
    (
        "add non-string",
        f"{SC0}.capabilities.add",
        [None],
        {("pss.baseline.capabilities", f"{SC0}.capabilities.add[0]")},
    ),
    (
        "add as a string",
        f"{SC0}.capabilities.add",
        "SYS_ADMIN",
        {("pss.baseline.capabilities", f"{SC0}.capabilities.add")},
    ),
    (
        "capabilities as a string",
        f"{SC0}.capabilities",
        "ALL",
        {
            ("pss.baseline.capabilities", f"{SC0}.capabilities"),
            ("pss.restricted.capabilities", f"{SC0}.capabilities.drop"),
        },
    ),
    (
        "add a baseline capability",
        f"{SC0}.capabilities.add",
        ["CHOWN"],
        {("pss.restricted.capabilities", f"{SC0}.capabilities.add[0]")},
    ),
    ("add NET_BIND_SERVICE", f"{SC0}.capabilities.add", ["NET_BIND_SERVICE"], set()),
    # hostPath (baseline only: restricted does not repeat it).
    (
        "hostPath volume",
        "spec.volumes[1]",
        {"name": "root", "hostPath": {"path": "/"}},
        {("pss.baseline.host_path", "spec.volumes[1].hostPath")},
    ),
    (
        "hostPath as a string",
        "spec.volumes[1]",
        {"name": "root", "hostPath": "/"},
        {("pss.baseline.host_path", "spec.volumes[1].hostPath")},
    ),
    # Host ports.
    (
        "hostPort",
        f"{C0}.ports[0].hostPort",
        8080,
        {("pss.baseline.host_ports", f"{C0}.ports[0].hostPort")},
    ),
    (
        "hostPort as string",
        f"{C0}.ports[0].hostPort",
        "8080",
        {("pss.baseline.host_ports", f"{C0}.ports[0].hostPort")},
    ),
    (
        "hostPort as bool",
        f"{C0}.ports[0].hostPort",
        True,
        {("pss.baseline.host_ports", f"{C0}.ports[0].hostPort")},
    ),
    ("hostPort zero", f"{C0}.ports[0].hostPort", 0, set()),
    (
        "hostPort on an init container",
        "spec.initContainers[0].ports[0].hostPort",
        9000,
        {("pss.baseline.host_ports", "spec.initContainers[0].ports[0].hostPort")},
    ),
    ("ports as a string", f"{C0}.ports", "80", {("pss.baseline.host_ports", f"{C0}.ports")}),
    ("port as a string", f"{C0}.ports[0]", "80:80", {("pss.baseline.host_ports", f"{C0}.ports[0]")}),
    # AppArmor.
    (
        "apparmor annotation unconfined",
        f"metadata.annotations|{AA}",
        "unconfined",
        {("pss.baseline.apparmor", f"metadata.annotations.{AA}")},
    ),
    (
        "apparmor annotation empty",
        f"metadata.annotations|{AA}",
        "",
        {("pss.baseline.apparmor", f"metadata.annotations.{AA}")},
    ),
    (
        "apparmor annotation non-string",
        f"metadata.annotations|{AA}",
        True,
        {("pss.baseline.apparmor", f"metadata.annotations.{AA}")},
    ),
    ("apparmor annotation runtime/default", f"metadata.annotations|{AA}", "runtime/default", set()),
    ("apparmor annotation localhost", f"metadata.annotations|{AA}", "localhost/k8s-nginx", set()),
    (
        "pod appArmorProfile unconfined",
        f"{PSC}.appArmorProfile",
        {"type": "Unconfined"},
        {("pss.baseline.apparmor", f"{PSC}.appArmorProfile.type")},
    ),
    (
        "container appArmorProfile unconfined",
        f"{SC0}.appArmorProfile",
        {"type": "Unconfined"},
        {("pss.baseline.apparmor", f"{SC0}.appArmorProfile.type")},
    ),
    (
        "appArmorProfile as a string",
        f"{SC0}.appArmorProfile",
        "Unconfined",
        {("pss.baseline.apparmor", f"{SC0}.appArmorProfile")},
    ),
    ("container appArmorProfile localhost", f"{SC0}.appArmorProfile", {"type": "Localhost"}, set()),
    # SELinux.
    (
        "selinux spc_t on pod",
        f"{PSC}.seLinuxOptions",
        {"type": "spc_t"},
        {("pss.baseline.selinux", f"{PSC}.seLinuxOptions.type")},
    ),
    (
        "selinux spc_t on container",
        f"{SC0}.seLinuxOptions",
        {"type": "spc_t"},
        {("pss.baseline.selinux", f"{SC0}.seLinuxOptions.type")},
    ),
    (
        "selinux user and role",
        f"{SC0}.seLinuxOptions",
        {"user": "system_u", "role": "sysadm_r", "level": "s0:c1"},
        {
            ("pss.baseline.selinux", f"{SC0}.seLinuxOptions.user"),
            ("pss.baseline.selinux", f"{SC0}.seLinuxOptions.role"),
        },
    ),
    (
        "selinux container_t with level",
        f"{SC0}.seLinuxOptions",
        {"type": "container_t", "level": "s0:c1"},
        set(),
    ),
    ("selinux container_engine_t", f"{PSC}.seLinuxOptions", {"type": "container_engine_t"}, set()),
    # /proc mount.
    ("procMount unmasked", f"{SC0}.procMount", "Unmasked", {("pss.baseline.proc_mount", f"{SC0}.procMount")}),
    ("procMount default", f"{SC0}.procMount", "Default", set()),
    # Seccomp.
    (
        "pod seccomp unconfined",
        f"{PSC}.seccompProfile",
        {"type": "Unconfined"},
        {
            ("pss.baseline.seccomp", f"{PSC}.seccompProfile.type"),
            ("pss.restricted.seccomp", "spec.initContainers[0].securityContext.seccompProfile.type"),
            ("pss.restricted.seccomp", f"{SC0}.seccompProfile.type"),
        },
    ),
    (
        "container seccomp unconfined",
        f"{SC0}.seccompProfile",
        {"type": "Unconfined"},
        {("pss.baseline.seccomp", f"{SC0}.seccompProfile.type")},
    ),
    (
        "seccomp without type",
        f"{SC0}.seccompProfile",
        {},
        {("pss.baseline.seccomp", f"{SC0}.seccompProfile.type")},
    ),
    (
        "seccomp as a string",
        f"{SC0}.seccompProfile",
        "Unconfined",
        {("pss.baseline.seccomp", f"{SC0}.seccompProfile")},
    ),
    (
        "container seccomp of an unknown type",
        f"{SC0}.seccompProfile",
        {"type": "Bogus"},
        {("pss.restricted.seccomp", f"{SC0}.seccompProfile.type")},
    ),
    (
        "container seccomp localhost",
        f"{SC0}.seccompProfile",
        {"type": "Localhost", "localhostProfile": "p"},
        set(),
    ),
    # Sysctls.
    (
        "unsafe sysctl",
        f"{PSC}.sysctls",
        [{"name": "net.ipv4.tcp_syncookies", "value": "1"}, {"name": "kernel.msgmax", "value": "1"}],
        {("pss.baseline.sysctls", f"{PSC}.sysctls[1].name")},
    ),
    (
        "sysctls as a string",
        f"{PSC}.sysctls",
        "kernel.msgmax=1",
        {("pss.baseline.sysctls", f"{PSC}.sysctls")},
    ),
    (
        "sysctl as a string",
        f"{PSC}.sysctls",
        ["kernel.msgmax"],
        {("pss.baseline.sysctls", f"{PSC}.sysctls[0]")},
    ),
    # Wrong shapes.
    ("containers as a string", "spec.containers", "x", {("pss.baseline.malformed", "spec.containers")}),
    ("container as a string", "spec.containers[0]", "x", {("pss.baseline.malformed", "spec.containers[0]")}),
    (
        "container securityContext as a string",
        SC0,
        "privileged",
        {
            ("pss.baseline.malformed", SC0),
            ("pss.restricted.allow_privilege_escalation", f"{SC0}.allowPrivilegeEscalation"),
            ("pss.restricted.capabilities", f"{SC0}.capabilities.drop"),
        },
    ),
    (
        "pod securityContext as a string",
        PSC,
        "x",
        {
            ("pss.baseline.malformed", PSC),
            ("pss.restricted.run_as_non_root", "spec.initContainers[0].securityContext.runAsNonRoot"),
            ("pss.restricted.run_as_non_root", f"{SC0}.runAsNonRoot"),
            ("pss.restricted.seccomp", "spec.initContainers[0].securityContext.seccompProfile.type"),
            ("pss.restricted.seccomp", f"{SC0}.seccompProfile.type"),
        },
    ),
    ("volumes as a string", "spec.volumes", "x", {("pss.baseline.malformed", "spec.volumes")}),
    ("volume as a string", "spec.volumes[0]", "x", {("pss.baseline.malformed", "spec.volumes[0]")}),
    (
        "annotations as a string",
        "metadata.annotations",
        "x",
        {("pss.baseline.malformed", "metadata.annotations")},
    ),
    ("spec as a string", "spec", "x", {("pss.baseline.malformed", "spec")}),
    # Restricted: volume types.
    (
        "nfs volume",
        "spec.volumes[0]",
        {"name": "n", "nfs": {"server": "x", "path": "/"}},
        {("pss.restricted.volume_types", "spec.volumes[0].nfs")},
    ),
    ("null volume source ignored", "spec.volumes[0]", {"name": "n", "nfs": None, "emptyDir": {}}, set()),
    # Restricted: allowPrivilegeEscalation.
    (
        "allowPrivilegeEscalation missing",
        f"{SC0}.allowPrivilegeEscalation",
        "~",
        {("pss.restricted.allow_privilege_escalation", f"{SC0}.allowPrivilegeEscalation")},
    ),
    (
        "allowPrivilegeEscalation true",
        f"{SC0}.allowPrivilegeEscalation",
        True,
        {("pss.restricted.allow_privilege_escalation", f"{SC0}.allowPrivilegeEscalation")},
    ),
    (
        "allowPrivilegeEscalation 'false' string",
        f"{SC0}.allowPrivilegeEscalation",
        "false",
        {("pss.restricted.allow_privilege_escalation", f"{SC0}.allowPrivilegeEscalation")},
    ),
    # Restricted: runAsNonRoot.
    (
        "container runAsNonRoot false overrides the pod",
        f"{SC0}.runAsNonRoot",
        False,
        {("pss.restricted.run_as_non_root", f"{SC0}.runAsNonRoot")},
    ),
    (
        "runAsNonRoot as a string",
        f"{SC0}.runAsNonRoot",
        "true",
        {("pss.restricted.run_as_non_root", f"{SC0}.runAsNonRoot")},
    ),
    (
        "pod runAsNonRoot missing",
        f"{PSC}.runAsNonRoot",
        "~",
        {
            ("pss.restricted.run_as_non_root", "spec.initContainers[0].securityContext.runAsNonRoot"),
            ("pss.restricted.run_as_non_root", f"{SC0}.runAsNonRoot"),
        },
    ),
    (
        "pod runAsNonRoot false",
        f"{PSC}.runAsNonRoot",
        False,
        {
            ("pss.restricted.run_as_non_root", f"{PSC}.runAsNonRoot"),
            ("pss.restricted.run_as_non_root", "spec.initContainers[0].securityContext.runAsNonRoot"),
            ("pss.restricted.run_as_non_root", f"{SC0}.runAsNonRoot"),
        },
    ),
    # Restricted: runAsUser.
    ("pod runAsUser 0", f"{PSC}.runAsUser", 0, {("pss.restricted.run_as_user", f"{PSC}.runAsUser")}),
    ("container runAsUser 0", f"{SC0}.runAsUser", 0, {("pss.restricted.run_as_user", f"{SC0}.runAsUser")}),
    ("runAsUser as string", f"{SC0}.runAsUser", "1000", {("pss.restricted.run_as_user", f"{SC0}.runAsUser")}),
    ("runAsUser false", f"{SC0}.runAsUser", False, {("pss.restricted.run_as_user", f"{SC0}.runAsUser")}),
    ("runAsUser 1000", f"{SC0}.runAsUser", 1000, set()),
    # Restricted: seccomp at pod level missing.
    (
        "pod seccomp missing",
        f"{PSC}.seccompProfile",
        "~",
        {
            ("pss.restricted.seccomp", "spec.initContainers[0].securityContext.seccompProfile.type"),
            ("pss.restricted.seccomp", f"{SC0}.seccompProfile.type"),
        },
    ),
    # Restricted: capabilities drop.
    (
        "drop missing",
        f"{SC0}.capabilities.drop",
        "~",
        {("pss.restricted.capabilities", f"{SC0}.capabilities.drop")},
    ),
    (
        "drop lowercase all",
        f"{SC0}.capabilities.drop",
        ["all"],
        {("pss.restricted.capabilities", f"{SC0}.capabilities.drop")},
    ),
    (
        "drop as a string",
        f"{SC0}.capabilities.drop",
        "ALL",
        {("pss.restricted.capabilities", f"{SC0}.capabilities.drop")},
    ),
]


@pytest.mark.parametrize(
    ("mutation", "value", "expected"), [c[1:] for c in PSS_CASES], ids=[c[0] for c in PSS_CASES]
)
def test_one_change_to_a_clean_pod_yields_exactly_the_documented_findings(
    mutation: str, value: Any, expected: set[tuple[str, str]]
) -> None:
    body = put(clean_pod(), mutation, value)
    assert pairs(body) == expected


@pytest.mark.parametrize(
    ("mutation", "value", "expected"), [c[1:] for c in PSS_CASES], ids=[c[0] for c in PSS_CASES]
)
def test_each_finding_is_in_the_category_of_its_profile(
    mutation: str, value: Any, expected: set[tuple[str, str]]
) -> None:
    for f in findings(put(clean_pod(), mutation, value)):
        assert f.category == CHECKS[f.check]
        profile = f.check.split(".")[1]
        assert (
            f.category
            == {"baseline": "pod_security_baseline", "restricted": "pod_security_restricted"}[profile]
        )
        assert (f.object, f.source) == ("Pod/shop/web", "document 1")
        assert f.message


def test_the_checks_never_change_the_object() -> None:
    body = put(clean_pod(), f"{SC0}.privileged", True)
    before = copy.deepcopy(body)
    findings(body)
    assert body == before


WORKLOADS: list[tuple[str, str, str]] = [
    ("Pod", "", "spec"),
    ("Deployment", "spec.template", "spec.template.spec"),
    ("StatefulSet", "spec.template", "spec.template.spec"),
    ("DaemonSet", "spec.template", "spec.template.spec"),
    ("ReplicaSet", "spec.template", "spec.template.spec"),
    ("ReplicationController", "spec.template", "spec.template.spec"),
    ("Job", "spec.template", "spec.template.spec"),
    ("CronJob", "spec.jobTemplate.spec.template", "spec.jobTemplate.spec.template.spec"),
    ("PodTemplate", "template", "template.spec"),
]


def workload(kind: str, template_path: str, pod: dict[str, Any]) -> dict[str, Any]:
    template = {"metadata": pod["metadata"], "spec": pod["spec"]}
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": "w", "namespace": "shop"},
    }
    if not template_path:
        return {**pod, "kind": kind}
    return put(body, template_path, template)


@pytest.mark.parametrize(("kind", "template_path", "spec_path"), WORKLOADS, ids=[w[0] for w in WORKLOADS])
@pytest.mark.parametrize("container_list", ["initContainers", "containers", "ephemeralContainers"])
def test_privileged_is_found_in_every_container_list_of_every_workload(
    kind: str, template_path: str, spec_path: str, container_list: str
) -> None:
    pod = clean_pod()
    pod["spec"][container_list] = [
        clean_container("ok"),
        put(clean_container("bad"), "securityContext.privileged", True),
    ]
    assert pairs(workload(kind, template_path, pod)) == {
        ("pss.baseline.privileged", f"{spec_path}.{container_list}[1].securityContext.privileged")
    }


@pytest.mark.parametrize(("kind", "template_path", "spec_path"), WORKLOADS, ids=[w[0] for w in WORKLOADS])
def test_pod_specs_finds_the_pod_spec_of_every_workload_kind(
    kind: str, template_path: str, spec_path: str
) -> None:
    pod = clean_pod()
    assert pod_specs(obj(workload(kind, template_path, pod))) == [(spec_path, pod["spec"])]


@pytest.mark.parametrize(("kind", "template_path", "spec_path"), WORKLOADS, ids=[w[0] for w in WORKLOADS])
def test_apparmor_annotations_are_read_from_the_pod_template_metadata(
    kind: str, template_path: str, spec_path: str
) -> None:
    pod = put(clean_pod(), f"metadata.annotations|{AA}", "unconfined")
    meta = f"{template_path}.metadata" if template_path else "metadata"
    assert pairs(workload(kind, template_path, pod)) == {
        ("pss.baseline.apparmor", f"{meta}.annotations.{AA}")
    }


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "ConfigMap", "data": {"a": "b"}},
        {"kind": "Service", "spec": {"ports": [{"port": 80}]}},
        {"kind": "Deployment", "spec": None},
        {"kind": "Deployment", "spec": {"template": None}},
        {"kind": "Pod"},
    ],
    ids=["configmap", "service", "deployment-null-spec", "deployment-null-template", "pod-no-spec"],
)
def test_objects_without_a_pod_spec_have_no_pod_specs_and_no_pod_findings(body: dict[str, Any]) -> None:
    assert pod_specs(obj(body)) == []
    assert findings(body) == []


@pytest.mark.parametrize(
    ("kind", "body_path", "bad_path"),
    [
        ("Deployment", "spec", "spec"),
        ("Deployment", "spec.template", "spec.template"),
        ("CronJob", "spec.jobTemplate", "spec.jobTemplate"),
        ("CronJob", "spec.jobTemplate.spec.template.spec", "spec.jobTemplate.spec.template.spec"),
        ("PodTemplate", "template", "template"),
        ("Job", "spec.template.metadata", "spec.template.metadata"),
    ],
)
def test_a_template_of_the_wrong_type_is_a_malformed_finding(
    kind: str, body_path: str, bad_path: str
) -> None:
    body = put({"kind": kind, "metadata": {"name": "w"}}, body_path, ["not", "an", "object"])
    assert ("pss.baseline.malformed", bad_path) in pairs(body)


def test_windows_pods_skip_the_linux_only_restricted_rules_as_upstream() -> None:
    pod = clean_pod()
    pod["spec"]["os"] = {"name": "windows"}
    pod["spec"]["securityContext"] = {"runAsNonRoot": True}
    pod["spec"]["containers"] = [{"name": "app", "image": "x"}]
    del pod["spec"]["initContainers"]
    assert pairs(pod) == set()
    pod["spec"]["os"] = {"name": "linux"}
    assert {check for check, _ in pairs(pod)} == {
        "pss.restricted.allow_privilege_escalation",
        "pss.restricted.seccomp",
        "pss.restricted.capabilities",
    }


def test_windows_pods_still_need_run_as_non_root() -> None:
    pod = clean_pod()
    pod["spec"]["os"] = {"name": "windows"}
    del pod["spec"]["securityContext"]["runAsNonRoot"]
    assert {check for check, _ in pairs(pod)} == {"pss.restricted.run_as_non_root"}


def test_every_container_setting_run_as_non_root_satisfies_restricted_without_the_pod() -> None:
    pod = clean_pod()
    del pod["spec"]["securityContext"]["runAsNonRoot"]
    for container in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
        container["securityContext"]["runAsNonRoot"] = True
    assert pairs(pod) == set()


def test_every_container_setting_seccomp_satisfies_restricted_without_the_pod() -> None:
    pod = clean_pod()
    del pod["spec"]["securityContext"]["seccompProfile"]
    for container in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
        container["securityContext"]["seccompProfile"] = {"type": "RuntimeDefault"}
    assert pairs(pod) == set()


@pytest.mark.parametrize(
    "sysctl",
    [
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
    ],
)
def test_safe_sysctls_are_allowed(sysctl: str) -> None:
    assert pairs(put(clean_pod(), f"{PSC}.sysctls", [{"name": sysctl, "value": "1"}])) == set()


@pytest.mark.parametrize(
    "capability",
    [
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    ],
)
def test_baseline_capabilities_pass_baseline_but_not_restricted(capability: str) -> None:
    got = pairs(put(clean_pod(), f"{SC0}.capabilities.add", [capability]))
    assert got == {("pss.restricted.capabilities", f"{SC0}.capabilities.add[0]")}


@pytest.mark.parametrize("value", [True, 1, "yes", "true", "false", "on", 0, [], {}, 1.5])
@pytest.mark.parametrize("field", ["hostNetwork", "hostPID", "hostIPC"])
def test_any_non_false_host_namespace_value_fails_closed(field: str, value: Any) -> None:
    assert ("pss.baseline.host_namespaces", f"spec.{field}") in pairs(
        put(clean_pod(), f"spec.{field}", value)
    )


# --------------------------------------------------------------------------------------------
# Hostile shapes: never a crash.

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
KINDS = [w[0] for w in WORKLOADS] + [
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "Secret",
    "List",
    "MutatingWebhookConfiguration",
]
FIELDS = st.sampled_from(
    [
        "spec",
        "spec.template",
        "spec.containers",
        "spec.containers[0]",
        "spec.containers[0].securityContext",
        "spec.containers[0].securityContext.capabilities",
        "spec.securityContext",
        "spec.securityContext.sysctls",
        "spec.volumes",
        "metadata",
        "metadata.labels",
        "rules",
        "rules[0]",
        "rules[0].verbs",
        "subjects",
        "roleRef",
        "items",
        "type",
        "aggregationRule",
    ]
)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(KINDS), field=FIELDS, value=JSON, extra=JSON)
def test_hostile_bodies_never_crash_the_checks(kind: str, field: str, value: Any, extra: Any) -> None:
    body: dict[str, Any] = {
        "kind": kind,
        "metadata": {"name": "x"},
        "spec": {"containers": [{"name": "a"}], "template": {"spec": {"containers": [extra]}}},
        "rules": [{"verbs": ["get"], "resources": ["pods"], "apiGroups": [""]}],
        "subjects": [extra],
        "items": [{"kind": "Pod", "spec": extra}],
    }
    put(body, field, value)
    for f in check_objects([obj(body)]):
        assert f.check in CHECKS
        assert f.category == CHECKS[f.check]


@settings(max_examples=200, deadline=None)
@given(value=JSON.filter(lambda v: v is not None and v is not False))
def test_any_non_false_privileged_value_is_a_finding(value: Any) -> None:
    assert ("pss.baseline.privileged", f"{SC0}.privileged") in pairs(
        put(clean_pod(), f"{SC0}.privileged", value)
    )


# --------------------------------------------------------------------------------------------
# RBAC.


def role(
    *rules: Any, kind: str = "Role", labels: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "r", "namespace": "shop"}
    if labels is not None:
        meta["labels"] = labels
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "rules": list(rules),
        **extra,
    }


def rule(verbs: Any, resources: Any, groups: Any = ("",), **extra: Any) -> dict[str, Any]:
    out = {
        "apiGroups": list(groups) if isinstance(groups, tuple) else groups,
        "resources": resources,
        "verbs": verbs,
    }
    return {**out, **extra}


RULE_CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("read pods", rule(["get", "list", "watch"], ["pods", "pods/log"]), set()),
    ("write deployments", rule(["create", "update", "patch"], ["deployments"], ("apps",)), set()),
    ("wildcard verbs", rule(["*"], ["configmaps"]), {"rbac.wildcard_verbs"}),
    ("wildcard resources", rule(["get"], ["*"], ("apps",)), {"rbac.wildcard_resources"}),
    ("wildcard subresource", rule(["get"], ["*/scale"], ("apps",)), {"rbac.wildcard_resources"}),
    ("wildcard slash wildcard", rule(["get"], ["*/*"], ("apps",)), {"rbac.wildcard_resources"}),
    (
        "wildcard everything",
        rule(["*"], ["*"], ("*",)),
        {
            "rbac.wildcard_verbs",
            "rbac.wildcard_resources",
            "rbac.wildcard_api_groups",
            "rbac.secrets_write",
            "rbac.secrets_read",
            "rbac.pod_exec",
            "rbac.token_request",
            "rbac.node_proxy",
            "rbac.csr_approval",
            "rbac.webhook_write",
            "rbac.rbac_write",
        },
    ),
    (
        "wildcard groups on secrets",
        rule(["get"], ["secrets"], ("*",)),
        {"rbac.wildcard_api_groups", "rbac.secrets_read"},
    ),
    ("wildcard groups on configmaps", rule(["get"], ["configmaps"], ("*",)), set()),
    (
        "escalate",
        rule(["escalate"], ["clusterroles"], ("rbac.authorization.k8s.io",)),
        {"rbac.escalate_verb"},
    ),
    ("bind", rule(["bind"], ["roles"], ("rbac.authorization.k8s.io",)), {"rbac.bind_verb"}),
    ("impersonate", rule(["impersonate"], ["users", "groups"]), {"rbac.impersonate_verb"}),
    ("impersonate capitalised", rule(["Impersonate"], ["serviceaccounts"]), {"rbac.impersonate_verb"}),
    ("secrets write", rule(["create", "patch"], ["secrets"]), {"rbac.secrets_write"}),
    ("secrets delete", rule(["delete"], ["secrets"]), {"rbac.secrets_write"}),
    ("secrets list", rule(["list"], ["secrets"]), {"rbac.secrets_read"}),
    ("secrets get named", rule(["get"], ["secrets"], resourceNames=["app-tls"]), {"rbac.secrets_read_named"}),
    ("secrets in another group", rule(["get", "create"], ["secrets"], ("example.com",)), set()),
    ("pods exec create", rule(["create"], ["pods/exec"]), {"rbac.pod_exec"}),
    ("pods exec get", rule(["get"], ["pods/exec"]), {"rbac.pod_exec"}),
    ("pods attach", rule(["create"], ["pods/attach"]), {"rbac.pod_exec"}),
    ("pods portforward", rule(["create"], ["pods/portforward"]), {"rbac.pod_exec"}),
    ("any exec subresource", rule(["create"], ["*/exec"]), {"rbac.wildcard_resources", "rbac.pod_exec"}),
    ("token request", rule(["create"], ["serviceaccounts/token"]), {"rbac.token_request"}),
    ("token read only", rule(["get"], ["serviceaccounts"]), set()),
    ("nodes proxy", rule(["get"], ["nodes/proxy"]), {"rbac.node_proxy"}),
    (
        "csr approval",
        rule(["update"], ["certificatesigningrequests/approval"], ("certificates.k8s.io",)),
        {"rbac.csr_approval"},
    ),
    ("signer approve", rule(["approve"], ["signers"], ("certificates.k8s.io",)), {"rbac.csr_approval"}),
    (
        "webhook write",
        rule(["create"], ["mutatingwebhookconfigurations"], ("admissionregistration.k8s.io",)),
        {"rbac.webhook_write"},
    ),
    (
        "admission policy delete",
        rule(["delete"], ["validatingadmissionpolicies"], ("admissionregistration.k8s.io",)),
        {"rbac.webhook_write"},
    ),
    (
        "webhook read",
        rule(["get", "list"], ["validatingwebhookconfigurations"], ("admissionregistration.k8s.io",)),
        set(),
    ),
    (
        "rbac write",
        rule(["create", "update"], ["rolebindings"], ("rbac.authorization.k8s.io",)),
        {"rbac.rbac_write"},
    ),
    ("rbac read", rule(["get"], ["clusterroles"], ("rbac.authorization.k8s.io",)), set()),
    ("non-resource wildcard", {"nonResourceURLs": ["*"], "verbs": ["get"]}, {"rbac.non_resource_wildcard"}),
    ("non-resource healthz", {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}, set()),
    ("verbs as a string", rule("*", ["pods"]), {"rbac.malformed"}),
    ("resources as a string", rule(["get"], "secrets"), {"rbac.malformed"}),
    ("verbs with a non-string", rule(["get", None], ["pods"]), {"rbac.malformed"}),
    (
        "resourceNames as a string",
        rule(["get"], ["secrets"], resourceNames="x"),
        {"rbac.malformed", "rbac.secrets_read"},
    ),
]


@pytest.mark.parametrize(
    ("the_rule", "expected"), [c[1:] for c in RULE_CASES], ids=[c[0] for c in RULE_CASES]
)
@pytest.mark.parametrize("kind", ["Role", "ClusterRole"])
def test_role_rules_yield_exactly_the_documented_checks(
    kind: str, the_rule: dict[str, Any], expected: set[str]
) -> None:
    got = findings(role(the_rule, kind=kind))
    assert {f.check for f in got} - {"rbac.change"} == expected
    assert "rbac.change" in {f.check for f in got}
    assert all(f.category == CHECKS[f.check] for f in got)


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "Role", "rules": "x"},
        {"kind": "Role", "rules": ["x"]},
        {"kind": "ClusterRoleBinding", "roleRef": "cluster-admin"},
        {"kind": "RoleBinding", "roleRef": {"kind": "ClusterRole", "name": ["admin"]}},
        {"kind": "RoleBinding", "roleRef": {"kind": "Role", "name": "r"}, "subjects": "system:masters"},
        {"kind": "RoleBinding", "roleRef": {"kind": "Role", "name": "r"}, "subjects": [{"kind": "Group"}]},
        {"kind": "RoleBinding", "roleRef": {"kind": "Role", "name": "r"}, "subjects": ["system:masters"]},
        {"kind": "ClusterRole", "metadata": {"labels": "aggregate"}, "rules": []},
    ],
    ids=[
        "rules-string",
        "rule-string",
        "roleref-string",
        "roleref-name-list",
        "subjects-string",
        "subject-without-name",
        "subject-string",
        "labels-string",
    ],
)
def test_rbac_objects_of_the_wrong_shape_are_escalation_findings(body: dict[str, Any]) -> None:
    got = findings(body)
    assert "rbac.malformed" in {f.check for f in got}
    assert {f.category for f in got if f.check == "rbac.malformed"} == {"rbac_escalation"}


def binding(
    ref_kind: str, ref_name: str, *subjects: dict[str, Any], kind: str = "RoleBinding"
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "b", "namespace": "shop"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": ref_kind, "name": ref_name},
        "subjects": list(subjects) or [{"kind": "ServiceAccount", "name": "app", "namespace": "shop"}],
    }


BINDING_CASES: list[tuple[str, dict[str, Any], set[tuple[str, str]]]] = [
    ("own role", binding("Role", "pod-reader"), set()),
    ("view", binding("ClusterRole", "view"), set()),
    ("cluster-admin", binding("ClusterRole", "cluster-admin"), {("rbac.bind_cluster_admin", "roleRef.name")}),
    (
        "cluster-admin cluster-wide",
        binding("ClusterRole", "cluster-admin", kind="ClusterRoleBinding"),
        {("rbac.bind_cluster_admin", "roleRef.name")},
    ),
    ("admin", binding("ClusterRole", "admin"), {("rbac.bind_privileged_role", "roleRef.name")}),
    ("edit", binding("ClusterRole", "edit"), {("rbac.bind_privileged_role", "roleRef.name")}),
    ("system role", binding("ClusterRole", "system:node"), {("rbac.bind_privileged_role", "roleRef.name")}),
    ("a namespaced Role named admin", binding("Role", "admin"), set()),
    (
        "system:masters",
        binding("Role", "r", {"kind": "Group", "name": "system:masters"}, kind="ClusterRoleBinding"),
        {("rbac.subject_system_masters", "subjects[0].name")},
    ),
    (
        "anonymous user",
        binding(
            "Role", "r", {"kind": "ServiceAccount", "name": "a"}, {"kind": "User", "name": "system:anonymous"}
        ),
        {("rbac.subject_broad_group", "subjects[1].name")},
    ),
    (
        "unauthenticated",
        binding("Role", "r", {"kind": "Group", "name": "system:unauthenticated"}),
        {("rbac.subject_broad_group", "subjects[0].name")},
    ),
    (
        "authenticated",
        binding("Role", "r", {"kind": "Group", "name": "system:authenticated"}),
        {("rbac.subject_broad_group", "subjects[0].name")},
    ),
    (
        "every service account",
        binding("Role", "r", {"kind": "Group", "name": "system:serviceaccounts"}),
        {("rbac.subject_broad_group", "subjects[0].name")},
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [c[1:] for c in BINDING_CASES], ids=[c[0] for c in BINDING_CASES]
)
def test_bindings_yield_exactly_the_documented_checks(
    body: dict[str, Any], expected: set[tuple[str, str]]
) -> None:
    assert pairs(body) == expected
    assert ("rbac.change", "") in pairs(body, skip=frozenset())


def test_an_aggregated_cluster_role_is_an_escalation() -> None:
    body = role(
        kind="ClusterRole", aggregationRule={"clusterRoleSelectors": [{"matchLabels": {"x": "true"}}]}
    )
    assert pairs(body) == {("rbac.aggregated_clusterrole", "aggregationRule")}


@pytest.mark.parametrize("target", ["admin", "edit", "view"])
@pytest.mark.parametrize("value", ["true", True, "yes"])
def test_aggregate_to_builtin_labels_are_escalations(target: str, value: Any) -> None:
    key = f"rbac.authorization.k8s.io/aggregate-to-{target}"
    body = role(rule(["get"], ["widgets"], ("example.com",)), kind="ClusterRole", labels={key: value})
    assert pairs(body) == {("rbac.aggregate_to_builtin", f"metadata.labels.{key}")}


def test_aggregate_labels_set_to_false_or_on_a_namespaced_role_are_not_escalations() -> None:
    key = "rbac.authorization.k8s.io/aggregate-to-admin"
    assert pairs(role(kind="ClusterRole", labels={key: "false"})) == set()
    assert pairs(role(kind="Role", labels={key: "true"})) == set()


# --------------------------------------------------------------------------------------------
# Other kinds.

OTHER_CASES: list[tuple[str, dict[str, Any], set[tuple[str, str, str]]]] = [
    (
        "mutating webhook",
        {"kind": "MutatingWebhookConfiguration", "webhooks": []},
        {("webhook.configuration", "admission_webhook", "webhooks")},
    ),
    (
        "validating webhook",
        {"kind": "ValidatingWebhookConfiguration"},
        {("webhook.configuration", "admission_webhook", "webhooks")},
    ),
    (
        "validating policy",
        {"kind": "ValidatingAdmissionPolicy"},
        {("admission.policy", "admission_webhook", "spec")},
    ),
    (
        "validating policy binding",
        {"kind": "ValidatingAdmissionPolicyBinding"},
        {("admission.policy", "admission_webhook", "spec")},
    ),
    (
        "mutating policy",
        {"kind": "MutatingAdmissionPolicy"},
        {("admission.policy", "admission_webhook", "spec")},
    ),
    (
        "mutating policy binding",
        {"kind": "MutatingAdmissionPolicyBinding"},
        {("admission.policy", "admission_webhook", "spec")},
    ),
    (
        "api service",
        {"kind": "APIService"},
        {("apiservice.registration", "admission_webhook", "spec.service")},
    ),
    ("crd", {"kind": "CustomResourceDefinition"}, {("crd.definition", "crd", "spec")}),
    ("secret", {"kind": "Secret", "data": {"a": "Yg=="}}, {("secret.write", "secret_write", "data")}),
    ("lowercase kind", {"kind": "secret"}, {("secret.write", "secret_write", "data")}),
    (
        "service account token secret",
        {"kind": "Secret", "type": "kubernetes.io/service-account-token"},
        {
            ("secret.write", "secret_write", "data"),
            ("secret.service_account_token", "rbac_escalation", "type"),
        },
    ),
    (
        "secret type of the wrong type",
        {"kind": "Secret", "type": ["kubernetes.io/service-account-token"]},
        {
            ("secret.write", "secret_write", "data"),
            ("secret.service_account_token", "rbac_escalation", "type"),
        },
    ),
    (
        "tls secret",
        {"kind": "Secret", "type": "kubernetes.io/tls"},
        {("secret.write", "secret_write", "data")},
    ),
    ("configmap", {"kind": "ConfigMap", "data": {"a": "b"}}, set()),
    ("namespace", {"kind": "Namespace"}, set()),
    ("service account", {"kind": "ServiceAccount"}, set()),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in OTHER_CASES], ids=[c[0] for c in OTHER_CASES])
def test_other_kinds_yield_exactly_the_documented_checks(
    body: dict[str, Any], expected: set[tuple[str, str, str]]
) -> None:
    assert {(f.check, f.category, f.path) for f in findings(body)} == expected


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"])
@pytest.mark.parametrize(
    ("replicas", "flagged"),
    [
        (0, True),
        ("0", True),
        (False, True),
        (0.0, True),
        ("zero", True),
        (None, False),
        (1, False),
        (3, False),
    ],
)
def test_scaling_a_workload_to_zero_is_found(kind: str, replicas: Any, flagged: bool) -> None:
    body = {"kind": kind, "metadata": {"name": "w"}, "spec": {"replicas": replicas}}
    got = {(f.check, f.category, f.path) for f in findings(body)}
    assert got == ({("workload.scale_to_zero", "scale_to_zero", "spec.replicas")} if flagged else set())


def test_replicas_zero_on_a_kind_that_does_not_scale_is_not_a_finding() -> None:
    assert findings({"kind": "HorizontalPodAutoscaler", "spec": {"replicas": 0}}) == []


# --------------------------------------------------------------------------------------------
# Bundles.


def test_findings_name_the_object_and_its_source_in_order() -> None:
    objects = [
        obj({"kind": "ConfigMap", "metadata": {"name": "c"}}, 0),
        obj(put(clean_pod(), "spec.hostPID", True), 1),
        obj({"kind": "Secret", "metadata": {"name": "s", "namespace": "shop"}}, 2),
    ]
    got = check_objects(objects)
    assert [(f.check, f.object, f.source) for f in got] == [
        ("pss.baseline.host_namespaces", "Pod/shop/web", "document 2"),
        ("secret.write", "Secret/shop/s", "document 3"),
    ]


def test_items_of_a_list_are_checked_one_by_one() -> None:
    bad = put(clean_pod(), f"{SC0}.privileged", True)
    body = {"apiVersion": "v1", "kind": "List", "items": [{"kind": "ConfigMap"}, "junk", bad]}
    got = check_objects([obj(body)])
    assert [(f.check, f.object, f.source, f.path) for f in got] == [
        ("pss.baseline.privileged", "Pod/shop/web", "document 1, item 3", f"{SC0}.privileged")
    ]


def test_every_documented_check_id_has_a_known_category() -> None:
    categories = {
        "pod_security_baseline",
        "pod_security_restricted",
        "rbac_escalation",
        "rbac",
        "admission_webhook",
        "crd",
        "secret_write",
        "scale_to_zero",
    }
    assert set(CHECKS.values()) == categories
    assert all(check.count(".") >= 1 for check in CHECKS)
