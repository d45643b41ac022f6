"""Policy checks on parsed Kubernetes objects (what ``kubectl_apply`` is about to send).

Pure: no I/O, no cluster. Every object is inspected as the API server would receive it
(``KubeObject.body``). Bodies may be hostile, so every field is read defensively: nothing here
raises on odd shapes, and a security-relevant field of an unexpected type is itself a finding
(fail closed), e.g. ``privileged: "true"``, ``hostNetwork: 1`` or ``securityContext: "privileged"``.

Categories (the caller's policy decides which ones block or need approval):

``pod_security_baseline``
    The upstream Pod Security Standards *baseline* profile
    (https://kubernetes.io/docs/concepts/security/pod-security-standards/), on every pod spec
    (Pods and the pod templates of workloads, see :func:`pod_specs`) and every container in
    ``containers``, ``initContainers`` and ``ephemeralContainers``. A pod-spec field of the wrong
    shape (``containers: "x"``) is ``pss.baseline.malformed``.
``pod_security_restricted``
    What the *restricted* profile adds on top of baseline (only restricted-only failures: a
    connection enforcing ``restricted`` blocks on both categories). As upstream, the
    ``allowPrivilegeEscalation``, seccomp and capabilities rules are skipped for pods whose
    ``spec.os.name`` is ``windows``.
``rbac_escalation``
    RBAC objects (and Secrets) that let a holder gain more privilege than the change shows:
    bindings to ``cluster-admin``/``admin``/``edit``/``system:*`` ClusterRoles, to
    ``system:masters`` or to everyone-groups; rules with wildcards, ``escalate``/``bind``/
    ``impersonate``, secrets access, exec/attach, token requests, node proxy, CSR approval,
    webhook or RBAC writes; aggregated ClusterRoles and ``aggregate-to-*`` labels; legacy
    service-account token Secrets.
``rbac``
    Any RBAC object at all (``rbac.change``), and reads of secrets named by ``resourceNames``.
``admission_webhook``
    Admission webhooks, admission policies and their bindings, and ``APIService`` registrations
    (an ``APIService`` sends a whole API group's traffic to a service of its choice, which like a
    webhook sees and answers every request of that group).
``crd``
    ``CustomResourceDefinition`` (new API types, conversion webhooks).
``secret_write``
    Any ``Secret``.
``scale_to_zero``
    A Deployment, StatefulSet, ReplicaSet or ReplicationController with ``spec.replicas: 0``.

Cluster-scoped objects are left to the caller. ``automountServiceAccountToken`` left unset is not
a finding (too noisy). Kinds are compared case-insensitively and regardless of API group (a
custom resource named like a built-in kind is checked like it: over-checking only).

Choices for RBAC: binding ``admin`` or ``edit`` is an escalation like ``cluster-admin`` (both read
and write Secrets, exec into pods and, for ``edit``, impersonate service accounts), and so is
binding any ``system:*`` ClusterRole (node and controller roles). Write access to secrets is an
escalation; read access (``get``/``list``/``watch``) is one too, because every service-account
token Secret of the namespace is readable, unless the rule names its secrets with
``resourceNames`` (then ``rbac.secrets_read_named``, category ``rbac``). Any verb on
``pods/exec``, ``pods/attach``, ``pods/portforward`` and ``nodes/proxy`` counts (``get`` is
enough for a websocket exec). Verbs and resources are compared case-insensitively (upstream is
exact, so this only over-reports). Granting ``create`` on plain ``pods`` is not reported: every
deployer has it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from hoop_mcp.backends.k8s_objects import KubeObject

Category = Literal[
    "pod_security_baseline",
    "pod_security_restricted",
    "rbac_escalation",
    "rbac",
    "admission_webhook",
    "crd",
    "secret_write",
    "scale_to_zero",
]

#: Every check id and its category.
CHECKS: Final[Mapping[str, Category]] = {
    # Pod Security Standards, baseline.
    "pss.baseline.host_process": "pod_security_baseline",
    "pss.baseline.host_namespaces": "pod_security_baseline",
    "pss.baseline.privileged": "pod_security_baseline",
    "pss.baseline.capabilities": "pod_security_baseline",
    "pss.baseline.host_path": "pod_security_baseline",
    "pss.baseline.host_ports": "pod_security_baseline",
    "pss.baseline.apparmor": "pod_security_baseline",
    "pss.baseline.selinux": "pod_security_baseline",
    "pss.baseline.proc_mount": "pod_security_baseline",
    "pss.baseline.seccomp": "pod_security_baseline",
    "pss.baseline.sysctls": "pod_security_baseline",
    "pss.baseline.malformed": "pod_security_baseline",
    # Pod Security Standards, restricted only.
    "pss.restricted.volume_types": "pod_security_restricted",
    "pss.restricted.allow_privilege_escalation": "pod_security_restricted",
    "pss.restricted.run_as_non_root": "pod_security_restricted",
    "pss.restricted.run_as_user": "pod_security_restricted",
    "pss.restricted.seccomp": "pod_security_restricted",
    "pss.restricted.capabilities": "pod_security_restricted",
    # RBAC.
    "rbac.change": "rbac",
    "rbac.secrets_read_named": "rbac",
    "rbac.bind_cluster_admin": "rbac_escalation",
    "rbac.bind_privileged_role": "rbac_escalation",
    "rbac.subject_system_masters": "rbac_escalation",
    "rbac.subject_broad_group": "rbac_escalation",
    "rbac.wildcard_verbs": "rbac_escalation",
    "rbac.wildcard_resources": "rbac_escalation",
    "rbac.wildcard_api_groups": "rbac_escalation",
    "rbac.escalate_verb": "rbac_escalation",
    "rbac.bind_verb": "rbac_escalation",
    "rbac.impersonate_verb": "rbac_escalation",
    "rbac.secrets_write": "rbac_escalation",
    "rbac.secrets_read": "rbac_escalation",
    "rbac.pod_exec": "rbac_escalation",
    "rbac.token_request": "rbac_escalation",
    "rbac.node_proxy": "rbac_escalation",
    "rbac.csr_approval": "rbac_escalation",
    "rbac.webhook_write": "rbac_escalation",
    "rbac.rbac_write": "rbac_escalation",
    "rbac.non_resource_wildcard": "rbac_escalation",
    "rbac.aggregated_clusterrole": "rbac_escalation",
    "rbac.aggregate_to_builtin": "rbac_escalation",
    "rbac.malformed": "rbac_escalation",
    "secret.service_account_token": "rbac_escalation",
    # Others.
    "webhook.configuration": "admission_webhook",
    "admission.policy": "admission_webhook",
    "apiservice.registration": "admission_webhook",
    "crd.definition": "crd",
    "secret.write": "secret_write",
    "workload.scale_to_zero": "scale_to_zero",
}


@dataclass(frozen=True, slots=True)
class Finding:
    #: Stable id, a key of :data:`CHECKS`.
    check: str
    category: str
    #: ``KubeObject.label`` of the offending object.
    object: str
    #: ``KubeObject.source``.
    source: str
    #: JSON path of the offending field (dotted, ``[i]`` for list items, map keys verbatim).
    path: str
    #: What is wrong and what would fix it; never quotes a secret value.
    message: str


# ---------------------------------------------------------------------------------------------
# Constants from the Pod Security Standards.

BASELINE_CAPABILITIES: Final = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
SAFE_SYSCTLS: Final = frozenset(
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
SELINUX_TYPES: Final = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
RESTRICTED_VOLUME_TYPES: Final = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
_APPARMOR_ANNOTATION: Final = "container.apparmor.security.beta.kubernetes.io/"
_PROFILE_TYPES_OK: Final = frozenset({"RuntimeDefault", "Localhost"})
_CONTAINER_LISTS: Final = ("initContainers", "containers", "ephemeralContainers")

#: kind (casefolded) -> path from the object to its pod template ({metadata, spec}); () = the
#: object is the pod itself.
_TEMPLATE_PATHS: Final[Mapping[str, tuple[str, ...]]] = {
    "pod": (),
    "deployment": ("spec", "template"),
    "statefulset": ("spec", "template"),
    "daemonset": ("spec", "template"),
    "replicaset": ("spec", "template"),
    "replicationcontroller": ("spec", "template"),
    "job": ("spec", "template"),
    "cronjob": ("spec", "jobTemplate", "spec", "template"),
    "podtemplate": ("template",),
}
_SCALABLE: Final = frozenset({"deployment", "statefulset", "replicaset", "replicationcontroller"})


# ---------------------------------------------------------------------------------------------
# Small helpers.


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _show(value: object) -> str:
    """A short, printable rendering of an identifier-like value an agent chose (not a secret)."""
    text = value if isinstance(value, str) else _type_name(value)
    text = text if len(text) <= 64 else text[:61] + "..."
    return repr(text)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _set_bool(value: object) -> bool:
    """A boolean security field that is on, or not a boolean at all (fail closed)."""
    return value is not None and value is not False


def _is_int(value: object) -> bool:
    return type(value) is int


class _Out:
    """Collects findings for one object."""

    def __init__(self, obj: KubeObject) -> None:
        self.obj = obj
        self.findings: list[Finding] = []

    def add(self, check: str, path: str, message: str) -> None:
        self.findings.append(
            Finding(
                check=check,
                category=CHECKS[check],
                object=self.obj.label,
                source=self.obj.source,
                path=path,
                message=message,
            )
        )

    def malformed(self, check: str, path: str, value: object, expected: str) -> None:
        self.add(
            check,
            path,
            f"`{path}` is {_type_name(value)}, not {expected}: the API server reads it differently "
            "from these checks, so it is refused; write it with its documented type",
        )


def _dict_at(out: _Out, parent: Mapping[str, Any], key: str, path: str, check: str) -> dict[str, Any] | None:
    """``parent[key]`` as a dict: ``{}`` when absent, ``None`` (and a finding) when malformed."""
    value = parent.get(key)
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    out.malformed(check, _join(path, key), value, "an object")
    return None


def _list_at(out: _Out, parent: Mapping[str, Any], key: str, path: str, check: str) -> list[Any] | None:
    """``parent[key]`` as a list: ``[]`` when absent, ``None`` (and a finding) when malformed."""
    value = parent.get(key)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    out.malformed(check, _join(path, key), value, "a list")
    return None


def _kind(obj: KubeObject) -> str:
    return obj.kind.casefold() if isinstance(obj.kind, str) else ""


# ---------------------------------------------------------------------------------------------
# Pod templates.


@dataclass(frozen=True, slots=True)
class _Template:
    #: Path of the template's ``metadata`` ("metadata" for a Pod).
    metadata_path: str
    metadata: dict[str, Any] | None
    #: Path of the pod spec.
    spec_path: str
    spec: dict[str, Any]


def _templates(obj: KubeObject, out: _Out) -> list[_Template]:
    steps = _TEMPLATE_PATHS.get(_kind(obj))
    body: object = obj.body
    if steps is None or not isinstance(body, dict):
        return []
    node: dict[str, Any] = body
    path = ""
    for step in steps:
        child = _dict_at(out, node, step, path, "pss.baseline.malformed")
        path = _join(path, step)
        if not child:
            return []
        node = child
    metadata = _dict_at(out, node, "metadata", path, "pss.baseline.malformed")
    spec = _dict_at(out, node, "spec", path, "pss.baseline.malformed")
    if not spec:
        return []
    return [_Template(_join(path, "metadata"), metadata, _join(path, "spec"), spec)]


def pod_specs(obj: KubeObject) -> list[tuple[str, dict[str, Any]]]:
    """``(path, pod spec)`` of the pod or pod template an object carries (none for other kinds).

    Pod (``spec``), Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController and Job
    (``spec.template.spec``), CronJob (``spec.jobTemplate.spec.template.spec``) and PodTemplate
    (``template.spec``). A template of the wrong shape yields nothing here (the checks report it).
    """
    return [(t.spec_path, t.spec) for t in _templates(obj, _Out(obj))]


def _containers(out: _Out, spec: Mapping[str, Any], spec_path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for key in _CONTAINER_LISTS:
        items = _list_at(out, spec, key, spec_path, "pss.baseline.malformed")
        for i, item in enumerate(items or ()):
            path = f"{_join(spec_path, key)}[{i}]"
            if isinstance(item, dict):
                yield path, item
            else:
                out.malformed("pss.baseline.malformed", path, item, "a container object")


# ---------------------------------------------------------------------------------------------
# Pod Security Standards.


@dataclass(frozen=True, slots=True)
class _Ctx:
    """A container's (or the pod's) security context, read once."""

    path: str
    sc: dict[str, Any] | None  # None: malformed (already reported)


def _check_profile_baseline(out: _Out, sc: Mapping[str, Any], sc_path: str) -> None:
    """seccompProfile, appArmorProfile, seLinuxOptions and windowsOptions.hostProcess of one context."""
    seccomp = _dict_at(out, sc, "seccompProfile", sc_path, "pss.baseline.seccomp")
    if seccomp is not None and sc.get("seccompProfile") is not None:
        kind = seccomp.get("type")
        if not isinstance(kind, str) or kind == "Unconfined":
            out.add(
                "pss.baseline.seccomp",
                _join(sc_path, "seccompProfile.type"),
                f"seccomp profile type {_show(kind)} turns syscall filtering off; use RuntimeDefault or Localhost",
            )
    apparmor = _dict_at(out, sc, "appArmorProfile", sc_path, "pss.baseline.apparmor")
    if apparmor is not None and sc.get("appArmorProfile") is not None:
        kind = apparmor.get("type")
        if kind not in _PROFILE_TYPES_OK:
            out.add(
                "pss.baseline.apparmor",
                _join(sc_path, "appArmorProfile.type"),
                f"AppArmor profile type {_show(kind)} is not allowed; use RuntimeDefault or Localhost",
            )
    selinux = _dict_at(out, sc, "seLinuxOptions", sc_path, "pss.baseline.selinux")
    if selinux:
        se_path = _join(sc_path, "seLinuxOptions")
        se_type = selinux.get("type")
        if se_type is not None and se_type not in SELINUX_TYPES:
            out.add(
                "pss.baseline.selinux",
                _join(se_path, "type"),
                f"SELinux type {_show(se_type)} is not allowed; use container_t (or leave it unset)",
            )
        for field in ("user", "role"):
            value = selinux.get(field)
            if value is not None and value != "":
                out.add(
                    "pss.baseline.selinux",
                    _join(se_path, field),
                    f"a custom SELinux {field} is not allowed; remove seLinuxOptions.{field}",
                )
    windows = _dict_at(out, sc, "windowsOptions", sc_path, "pss.baseline.host_process")
    if windows and _set_bool(windows.get("hostProcess")):
        out.add(
            "pss.baseline.host_process",
            _join(sc_path, "windowsOptions.hostProcess"),
            "Windows HostProcess containers run with full access to the node; remove hostProcess",
        )


def _check_baseline(
    out: _Out, tpl: _Template, pod_sc: _Ctx, containers: list[tuple[str, _Ctx, dict[str, Any]]]
) -> None:
    spec, spec_path = tpl.spec, tpl.spec_path
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if _set_bool(spec.get(field)):
            out.add(
                "pss.baseline.host_namespaces",
                _join(spec_path, field),
                f"{field} shares the node's namespace with the pod; remove it or set it to false",
            )
    volumes = _list_at(out, spec, "volumes", spec_path, "pss.baseline.malformed") or []
    for i, volume in enumerate(volumes):
        v_path = f"{_join(spec_path, 'volumes')}[{i}]"
        if not isinstance(volume, dict):
            out.malformed("pss.baseline.malformed", v_path, volume, "a volume object")
        elif volume.get("hostPath") is not None:
            out.add(
                "pss.baseline.host_path",
                _join(v_path, "hostPath"),
                "hostPath volumes expose the node's filesystem; use a persistentVolumeClaim, "
                "configMap, secret or emptyDir volume",
            )
    if pod_sc.sc is not None:
        _check_profile_baseline(out, pod_sc.sc, pod_sc.path)
        sysctls = _list_at(out, pod_sc.sc, "sysctls", pod_sc.path, "pss.baseline.sysctls") or []
        for i, sysctl in enumerate(sysctls):
            s_path = f"{_join(pod_sc.path, 'sysctls')}[{i}]"
            name = sysctl.get("name") if isinstance(sysctl, dict) else sysctl
            if name not in SAFE_SYSCTLS:
                out.add(
                    "pss.baseline.sysctls",
                    _join(s_path, "name") if isinstance(sysctl, dict) else s_path,
                    f"sysctl {_show(name)} is not in the safe set; remove it",
                )
    metadata = tpl.metadata
    if metadata is not None:
        annotations = (
            _dict_at(out, metadata, "annotations", tpl.metadata_path, "pss.baseline.malformed") or {}
        )
        for key, value in annotations.items():
            if not isinstance(key, str) or not key.startswith(_APPARMOR_ANNOTATION):
                continue
            if not (
                value == "runtime/default" or (isinstance(value, str) and value.startswith("localhost/"))
            ):
                out.add(
                    "pss.baseline.apparmor",
                    _join(_join(tpl.metadata_path, "annotations"), key),
                    f"AppArmor profile {_show(value)} is not allowed; use runtime/default or localhost/<profile>",
                )
    for c_path, ctx, container in containers:
        ports = _list_at(out, container, "ports", c_path, "pss.baseline.host_ports") or []
        for j, port in enumerate(ports):
            p_path = f"{_join(c_path, 'ports')}[{j}]"
            if not isinstance(port, dict):
                out.malformed("pss.baseline.host_ports", p_path, port, "a port object")
                continue
            host_port = port.get("hostPort")
            if host_port is not None and not (_is_int(host_port) and host_port == 0):
                out.add(
                    "pss.baseline.host_ports",
                    _join(p_path, "hostPort"),
                    "hostPort binds a port on the node; remove it and use a Service",
                )
        sc = ctx.sc
        if sc is None:
            continue
        if _set_bool(sc.get("privileged")):
            out.add(
                "pss.baseline.privileged",
                _join(ctx.path, "privileged"),
                "privileged containers have full access to the node; remove privileged or set it to false",
            )
        caps = _dict_at(out, sc, "capabilities", ctx.path, "pss.baseline.capabilities")
        if caps:
            adds = (
                _list_at(out, caps, "add", _join(ctx.path, "capabilities"), "pss.baseline.capabilities") or []
            )
            for j, cap in enumerate(adds):
                if cap not in BASELINE_CAPABILITIES:
                    out.add(
                        "pss.baseline.capabilities",
                        f"{_join(ctx.path, 'capabilities.add')}[{j}]",
                        f"capability {_show(cap)} is not in the baseline set; remove it",
                    )
        proc_mount = sc.get("procMount")
        if proc_mount is not None and proc_mount != "Default":
            out.add(
                "pss.baseline.proc_mount",
                _join(ctx.path, "procMount"),
                f"procMount {_show(proc_mount)} unmasks /proc; remove it or use Default",
            )
        _check_profile_baseline(out, sc, ctx.path)


def _check_restricted(
    out: _Out, tpl: _Template, pod_sc: _Ctx, containers: list[tuple[str, _Ctx, dict[str, Any]]]
) -> None:
    spec, spec_path = tpl.spec, tpl.spec_path
    volumes = spec.get("volumes")
    for i, volume in enumerate(volumes if isinstance(volumes, list) else ()):
        if not isinstance(volume, dict):
            continue
        for key, value in volume.items():
            if key in ("name", "hostPath") or key in RESTRICTED_VOLUME_TYPES or value is None:
                continue  # hostPath is a baseline finding already
            out.add(
                "pss.restricted.volume_types",
                f"{_join(spec_path, 'volumes')}[{i}].{key}",
                f"volume type {_show(key)} is not allowed; use configMap, csi, downwardAPI, emptyDir, "
                "ephemeral, persistentVolumeClaim, projected or secret",
            )
    os_spec = spec.get("os")
    windows = isinstance(os_spec, dict) and os_spec.get("name") == "windows"
    psc = pod_sc.sc or {}

    pod_non_root = psc.get("runAsNonRoot")
    if pod_non_root is not None and pod_non_root is not True:
        out.add(
            "pss.restricted.run_as_non_root",
            _join(pod_sc.path, "runAsNonRoot"),
            "runAsNonRoot must be true; set securityContext.runAsNonRoot: true",
        )
    for path, sc_map in [(pod_sc.path, psc)] + [(ctx.path, ctx.sc or {}) for _, ctx, _ in containers]:
        user = sc_map.get("runAsUser")
        if user is not None and not (_is_int(user) and user != 0):
            out.add(
                "pss.restricted.run_as_user",
                _join(path, "runAsUser"),
                "runAsUser 0 runs as root; use a non-zero user id",
            )
    pod_profile = psc.get("seccompProfile")
    pod_seccomp_ok = isinstance(pod_profile, dict) and pod_profile.get("type") in _PROFILE_TYPES_OK
    if isinstance(pod_profile, dict) and not windows:
        kind = pod_profile.get("type")
        if isinstance(kind, str) and kind not in _PROFILE_TYPES_OK and kind != "Unconfined":
            out.add(
                "pss.restricted.seccomp",
                _join(pod_sc.path, "seccompProfile.type"),
                f"seccomp profile type {_show(kind)} is not allowed; use RuntimeDefault or Localhost",
            )

    for _c_path, ctx, _container in containers:
        sc = ctx.sc or {}
        non_root = sc.get("runAsNonRoot")
        if non_root is not None and non_root is not True:
            out.add(
                "pss.restricted.run_as_non_root",
                _join(ctx.path, "runAsNonRoot"),
                "runAsNonRoot must be true; set securityContext.runAsNonRoot: true",
            )
        elif non_root is None and pod_non_root is not True:
            out.add(
                "pss.restricted.run_as_non_root",
                _join(ctx.path, "runAsNonRoot"),
                "runAsNonRoot is not set here nor on the pod; set securityContext.runAsNonRoot: true",
            )
        if windows:
            continue
        if sc.get("allowPrivilegeEscalation") is not False:
            out.add(
                "pss.restricted.allow_privilege_escalation",
                _join(ctx.path, "allowPrivilegeEscalation"),
                "allowPrivilegeEscalation must be false; set securityContext.allowPrivilegeEscalation: false",
            )
        profile = sc.get("seccompProfile")
        if profile is None:
            if not pod_seccomp_ok:
                out.add(
                    "pss.restricted.seccomp",
                    _join(ctx.path, "seccompProfile.type"),
                    "no seccomp profile here nor on the pod; set seccompProfile.type: RuntimeDefault",
                )
        elif isinstance(profile, dict):
            kind = profile.get("type")
            if isinstance(kind, str) and kind not in _PROFILE_TYPES_OK and kind != "Unconfined":
                out.add(
                    "pss.restricted.seccomp",
                    _join(ctx.path, "seccompProfile.type"),
                    f"seccomp profile type {_show(kind)} is not allowed; use RuntimeDefault or Localhost",
                )
        caps = sc.get("capabilities")
        caps_path = _join(ctx.path, "capabilities")
        drop = caps.get("drop") if isinstance(caps, dict) else None
        if not (isinstance(drop, list) and "ALL" in drop):
            out.add(
                "pss.restricted.capabilities",
                _join(caps_path, "drop"),
                "capabilities must drop ALL; set securityContext.capabilities.drop: [ALL]",
            )
        adds = caps.get("add") if isinstance(caps, dict) else None
        for j, cap in enumerate(adds if isinstance(adds, list) else ()):
            if cap in BASELINE_CAPABILITIES and cap != "NET_BIND_SERVICE":
                out.add(
                    "pss.restricted.capabilities",
                    f"{_join(caps_path, 'add')}[{j}]",
                    f"capability {_show(cap)} is not allowed; only NET_BIND_SERVICE may be added",
                )


def _check_pods(obj: KubeObject, out: _Out) -> None:
    for tpl in _templates(obj, out):
        psc_dict = _dict_at(out, tpl.spec, "securityContext", tpl.spec_path, "pss.baseline.malformed")
        pod_sc = _Ctx(_join(tpl.spec_path, "securityContext"), psc_dict)
        containers: list[tuple[str, _Ctx, dict[str, Any]]] = []
        for c_path, container in _containers(out, tpl.spec, tpl.spec_path):
            sc = _dict_at(out, container, "securityContext", c_path, "pss.baseline.malformed")
            containers.append((c_path, _Ctx(_join(c_path, "securityContext"), sc), container))
        _check_baseline(out, tpl, pod_sc, containers)
        _check_restricted(out, tpl, pod_sc, containers)


# ---------------------------------------------------------------------------------------------
# RBAC.

_RBAC_KINDS: Final = frozenset({"role", "clusterrole", "rolebinding", "clusterrolebinding"})
_WRITE_VERBS: Final = frozenset({"create", "update", "patch", "delete", "deletecollection"})
_READ_VERBS: Final = frozenset({"get", "list", "watch"})
_ALL: Final = "*"
_BROAD_SUBJECTS: Final = frozenset(
    {"system:anonymous", "system:unauthenticated", "system:authenticated", "system:serviceaccounts"}
)
_AGGREGATE_LABELS: Final = tuple(
    f"rbac.authorization.k8s.io/aggregate-to-{role}" for role in ("admin", "edit", "view")
)
#: Resource names (casefolded) that make an ``apiGroups: ["*"]`` rule an escalation.
_SENSITIVE_RESOURCES: Final = frozenset(
    {
        "secrets",
        "pods",
        "pods/exec",
        "pods/attach",
        "pods/portforward",
        "serviceaccounts",
        "serviceaccounts/token",
        "nodes",
        "nodes/proxy",
        "certificatesigningrequests",
        "certificatesigningrequests/approval",
        "signers",
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
        "mutatingadmissionpolicies",
        "mutatingadmissionpolicybindings",
        "roles",
        "rolebindings",
        "clusterroles",
        "clusterrolebindings",
        "customresourcedefinitions",
        "apiservices",
    }
)
_RBAC = "rbac.authorization.k8s.io"
#: A Secret type, not a secret.
_SA_TOKEN_TYPE: Final = "kubernetes.io/service-account-token"  # noqa: S105
_ADMISSION = "admissionregistration.k8s.io"


@dataclass(frozen=True, slots=True)
class _Rule:
    path: str
    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    names: tuple[object, ...]

    def grants(self, group: str, resource: str, verbs: frozenset[str] | None = None) -> bool:
        """Whether the rule allows ``verbs`` (any verb when ``None``) on ``group``/``resource``."""
        if _ALL not in self.groups and group not in self.groups:
            return False
        if verbs is not None and _ALL not in self.verbs and not (self.verbs & verbs):
            return False
        if verbs is None and not self.verbs:
            return False
        sub = resource.partition("/")[2]
        return any(r in (_ALL, resource) or (sub and r == f"*/{sub}") for r in self.resources)


def _strings(out: _Out, rule: Mapping[str, Any], key: str, path: str) -> frozenset[str] | None:
    value = rule.get(key)
    if value is None:
        return frozenset()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(v.casefold() for v in value)
    out.malformed("rbac.malformed", _join(path, key), value, "a list of strings")
    return None


def _check_rule(out: _Out, rule: _Rule, non_resource: frozenset[str]) -> None:
    path = rule.path
    if _ALL in rule.verbs:
        out.add(
            "rbac.wildcard_verbs",
            _join(path, "verbs"),
            "verbs '*' grants every verb, including escalate, bind and impersonate; list the verbs needed",
        )
    if any(r == _ALL or r.startswith("*/") for r in rule.resources):
        out.add(
            "rbac.wildcard_resources",
            _join(path, "resources"),
            "a wildcard resource covers secrets and every future resource; list the resources needed",
        )
    if _ALL in rule.groups and any(
        r == _ALL or r.startswith("*/") or r in _SENSITIVE_RESOURCES for r in rule.resources
    ):
        out.add(
            "rbac.wildcard_api_groups",
            _join(path, "apiGroups"),
            "apiGroups '*' with sensitive resources applies to every API group; name the groups",
        )
    for verb, check in (
        ("escalate", "rbac.escalate_verb"),
        ("bind", "rbac.bind_verb"),
        ("impersonate", "rbac.impersonate_verb"),
    ):
        if verb in rule.verbs:
            out.add(
                check,
                _join(path, "verbs"),
                f"the {verb!r} verb lets the holder gain privileges it does not have; remove it",
            )
    if _ALL in non_resource:
        out.add(
            "rbac.non_resource_wildcard",
            _join(path, "nonResourceURLs"),
            "nonResourceURLs '*' grants every non-resource URL; list the URLs needed",
        )
    if rule.grants("", "secrets", _WRITE_VERBS):
        out.add(
            "rbac.secrets_write",
            path,
            "writing secrets lets the holder plant credentials and mint service-account tokens; remove write verbs on secrets",
        )
    if rule.grants("", "secrets", _READ_VERBS):
        if rule.names and _ALL not in rule.verbs:
            out.add("rbac.secrets_read_named", path, "reads the secrets named in resourceNames")
        else:
            out.add(
                "rbac.secrets_read",
                path,
                "reading every secret exposes service-account tokens and credentials; name the secrets in resourceNames",
            )
    if any(rule.grants("", r) for r in ("pods/exec", "pods/attach", "pods/portforward")):
        out.add(
            "rbac.pod_exec",
            path,
            "exec/attach/port-forward into pods runs as their service accounts; remove it",
        )
    if rule.grants("", "serviceaccounts/token", frozenset({"create"})):
        out.add(
            "rbac.token_request",
            path,
            "creating serviceaccounts/token mints tokens for any service account; remove it",
        )
    if rule.grants("", "nodes/proxy"):
        out.add(
            "rbac.node_proxy",
            path,
            "nodes/proxy reaches the kubelet API (exec into any pod on the node); remove it",
        )
    if rule.grants("certificates.k8s.io", "certificatesigningrequests/approval", _WRITE_VERBS) or rule.grants(
        "certificates.k8s.io", "signers", frozenset({"approve"})
    ):
        out.add(
            "rbac.csr_approval", path, "approving CSRs lets the holder issue client certificates; remove it"
        )
    if any(
        rule.grants(_ADMISSION, r, _WRITE_VERBS)
        for r in (
            "mutatingwebhookconfigurations",
            "validatingwebhookconfigurations",
            "validatingadmissionpolicies",
            "validatingadmissionpolicybindings",
            "mutatingadmissionpolicies",
            "mutatingadmissionpolicybindings",
        )
    ):
        out.add(
            "rbac.webhook_write",
            path,
            "writing admission webhooks or policies lets the holder intercept or disable admission; remove it",
        )
    if any(
        rule.grants(_RBAC, r, _WRITE_VERBS)
        for r in ("roles", "rolebindings", "clusterroles", "clusterrolebindings")
    ):
        out.add(
            "rbac.rbac_write", path, "writing RBAC objects lets the holder grant itself anything; remove it"
        )


def _check_role(obj: KubeObject, out: _Out, body: Mapping[str, Any]) -> None:
    rules = _list_at(out, body, "rules", "", "rbac.malformed") or []
    for i, raw in enumerate(rules):
        path = f"rules[{i}]"
        if not isinstance(raw, dict):
            out.malformed("rbac.malformed", path, raw, "a rule object")
            continue
        fields = {
            key: _strings(out, raw, key, path)
            for key in ("apiGroups", "resources", "verbs", "nonResourceURLs")
        }
        names = raw.get("resourceNames")
        if names is not None and not isinstance(names, list):
            out.malformed("rbac.malformed", _join(path, "resourceNames"), names, "a list of strings")
            names = []
        groups, resources, verbs, non_resource = (
            fields["apiGroups"],
            fields["resources"],
            fields["verbs"],
            fields["nonResourceURLs"],
        )
        if groups is None or resources is None or verbs is None or non_resource is None:
            continue
        _check_rule(out, _Rule(path, groups, resources, verbs, tuple(names or ())), non_resource)
    if _kind(obj) != "clusterrole":
        return
    if body.get("aggregationRule") is not None:
        out.add(
            "rbac.aggregated_clusterrole",
            "aggregationRule",
            "an aggregated ClusterRole takes its rules from every ClusterRole matching its selectors, "
            "now and later; list the rules explicitly",
        )
    metadata = body.get("metadata")
    labels = (
        _dict_at(out, metadata, "labels", "metadata", "rbac.malformed") if isinstance(metadata, dict) else {}
    )
    for key in _AGGREGATE_LABELS:
        value = (labels or {}).get(key)
        if value is not None and value not in ("false", False):
            out.add(
                "rbac.aggregate_to_builtin",
                f"metadata.labels.{key}",
                f"this label adds the role's rules to the built-in {key.rpartition('-')[2]!r} ClusterRole "
                "held by many users; remove it",
            )


def _check_binding(out: _Out, body: Mapping[str, Any]) -> None:
    ref = body.get("roleRef")
    if (
        not isinstance(ref, dict)
        or not isinstance(ref.get("kind"), str)
        or not isinstance(ref.get("name"), str)
    ):
        out.malformed("rbac.malformed", "roleRef", ref, "an object with string kind and name")
    elif ref["kind"].casefold() == "clusterrole":
        name = ref["name"]
        if name == "cluster-admin":
            out.add(
                "rbac.bind_cluster_admin",
                "roleRef.name",
                "binds cluster-admin (every permission); bind a role that lists only what is needed",
            )
        elif name in ("admin", "edit") or name.startswith("system:"):
            out.add(
                "rbac.bind_privileged_role",
                "roleRef.name",
                f"binds the built-in ClusterRole {_show(name)} (secrets, exec, or system powers); "
                "bind a role that lists only what is needed",
            )
    subjects = _list_at(out, body, "subjects", "", "rbac.malformed") or []
    for i, subject in enumerate(subjects):
        path = f"subjects[{i}]"
        if not isinstance(subject, dict):
            out.malformed("rbac.malformed", path, subject, "a subject object")
            continue
        kind, name = subject.get("kind"), subject.get("name")
        if not isinstance(kind, str) or not isinstance(name, str):
            out.malformed("rbac.malformed", path, subject, "an object with string kind and name")
        elif kind.casefold() == "group" and name == "system:masters":
            out.add(
                "rbac.subject_system_masters",
                _join(path, "name"),
                "binds to the system:masters group; bind a named user, group or service account",
            )
        elif kind.casefold() in ("group", "user") and name in _BROAD_SUBJECTS:
            out.add(
                "rbac.subject_broad_group",
                _join(path, "name"),
                f"binds to {_show(name)}, which covers every (or every anonymous) caller; bind named subjects",
            )


# ---------------------------------------------------------------------------------------------
# Entry point.

_ADMISSION_POLICIES: Final = frozenset(
    {
        "validatingadmissionpolicy",
        "validatingadmissionpolicybinding",
        "mutatingadmissionpolicy",
        "mutatingadmissionpolicybinding",
    }
)


def _check_object(obj: KubeObject) -> list[Finding]:
    out = _Out(obj)
    kind = _kind(obj)
    body: Mapping[str, Any] = obj.body if isinstance(obj.body, dict) else {}
    if kind in _TEMPLATE_PATHS:
        _check_pods(obj, out)
    if kind in _SCALABLE:
        spec = body.get("spec")
        replicas = spec.get("replicas") if isinstance(spec, dict) else None
        if replicas is not None and not (_is_int(replicas) and replicas != 0):
            out.add(
                "workload.scale_to_zero",
                "spec.replicas",
                "replicas 0 stops every pod of this workload; confirm the outage is intended",
            )
    if kind in _RBAC_KINDS:
        out.add("rbac.change", "", f"changes RBAC ({obj.kind}); review who gains which permissions")
        if kind.endswith("binding"):
            _check_binding(out, body)
        else:
            _check_role(obj, out, body)
    elif kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        out.add(
            "webhook.configuration",
            "webhooks",
            "an admission webhook sees (and a mutating one rewrites) every matching API request; "
            "review where it sends them",
        )
    elif kind in _ADMISSION_POLICIES:
        out.add(
            "admission.policy", "spec", "admission policies change what the API server admits; review them"
        )
    elif kind == "apiservice":
        out.add(
            "apiservice.registration",
            "spec.service",
            "an APIService sends a whole API group's requests (with callers' identities) to a service, "
            "like a webhook; review the target",
        )
    elif kind == "customresourcedefinition":
        out.add(
            "crd.definition", "spec", "defines a new API type (and possibly a conversion webhook); review it"
        )
    elif kind == "secret":
        out.add("secret.write", "data", "writes a Secret; its values are masked here")
        secret_type = body.get("type")
        if secret_type is not None and not isinstance(secret_type, str):
            out.malformed("secret.service_account_token", "type", secret_type, "a string")
        elif secret_type == _SA_TOKEN_TYPE:
            out.add(
                "secret.service_account_token",
                "type",
                "a service-account-token Secret makes the cluster mint a long-lived token for the service "
                "account named in its annotation; use a TokenRequest instead",
            )
    return out.findings


def _expand(obj: KubeObject) -> Iterator[KubeObject]:
    """The object, or the items of a ``List``-shaped object (defensive: the parser expands them)."""
    items = obj.body.get("items") if isinstance(obj.body, dict) else None
    if not (_kind(obj).endswith("list") and isinstance(items, list)):
        yield obj
        return
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        meta = item.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        name, namespace = meta.get("name"), meta.get("namespace")
        api_version, kind = item.get("apiVersion"), item.get("kind")
        yield from _expand(
            KubeObject(
                api_version=api_version if isinstance(api_version, str) else "",
                kind=kind if isinstance(kind, str) else "",
                name=name if isinstance(name, str) else "",
                namespace=namespace if isinstance(namespace, str) else None,
                body=item,
                index=obj.index,
                source=f"{obj.source}, item {i + 1}",
            )
        )


def check_objects(objects: Sequence[KubeObject]) -> list[Finding]:
    """Every finding on every object, in object order (then field order)."""
    return [finding for obj in objects for item in _expand(obj) for finding in _check_object(item)]
