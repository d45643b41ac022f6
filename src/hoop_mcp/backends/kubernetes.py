"""Kubernetes backend: parse and check manifests offline, dry-run them on the server, then apply.

``plan`` never talks to the cluster: it parses the manifest the way the API server reads YAML,
validates every object against the offline OpenAPI schemas, reconciles namespaces, and runs the
policy checks (Pod Security Standards, RBAC escalation, admission webhooks, CRDs, Secrets). A call
that fails any of them is refused before a single request is sent.

``estimate`` (for calls that must be confirmed or reviewed) runs the server-side dry run and adds
its diff to the plan, so what people approve is what the server said it would do. ``execute``
always dry-runs again first; when a diff was shown, the new one must match it, else nothing is
applied. The bodies sent are the JSON the checks inspected, never the agent's YAML text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any

from pydantic import JsonValue

from hoop_mcp.backends.k8s_api import ApiResource, KubeApi
from hoop_mcp.backends.k8s_checks import Finding, check_objects
from hoop_mcp.backends.k8s_diff import ObjectDiff, diff_object, render_diff
from hoop_mcp.backends.k8s_manifest import is_dns1123_label, manifest_json, parse_manifest
from hoop_mcp.backends.k8s_mask import mask_object, scrub, secret_strings
from hoop_mcp.backends.k8s_objects import KubeObject
from hoop_mcp.backends.k8s_validate import is_namespaced, validate_objects
from hoop_mcp.config import KubernetesConnection
from hoop_mcp.core.backend import PlannedCall, ResultColumn, TableResult
from hoop_mcp.core.errors import BackendError, BackendRejected, InvalidInput
from hoop_mcp.core.models import Decision, Plan, Verdict

log = logging.getLogger(__name__)

K8S_TOOLS = (
    "kubectl_apply",
    "kubectl_diff",
    "kubectl_delete",
    "kubectl_get",
    "kubectl_events",
    "kubectl_rollout_status",
    "kubectl_logs",
)
#: apiVersion used when a read names only a kind.
DEFAULT_API_VERSIONS: dict[str, str] = {
    "Pod": "v1",
    "Service": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "ServiceAccount": "v1",
    "Namespace": "v1",
    "Node": "v1",
    "Event": "v1",
    "PersistentVolumeClaim": "v1",
    "PersistentVolume": "v1",
    "Endpoints": "v1",
    "LimitRange": "v1",
    "ResourceQuota": "v1",
    "ReplicationController": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "ReplicaSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "Ingress": "networking.k8s.io/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
    "ClusterRole": "rbac.authorization.k8s.io/v1",
    "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
    "CustomResourceDefinition": "apiextensions.k8s.io/v1",
}
_ROLLOUT_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
#: ``scheme://user:password@``: the password part, in free text (logs, event messages).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{1,20}://[^\s:/@]{0,200}:)[^\s@/]{1,200}@")


def mask_free_text(text: str) -> str:
    """Passwords in URLs masked (the pipeline's detectors cover tokens, keys and the rest)."""
    return _URL_PASSWORD.sub(r"\1[REDACTED:password]@", text)


_DELETABLE_SCALE = ("Deployment", "StatefulSet", "ReplicaSet", "ReplicationController")
_NAME_CHARS = 253
_SELECTOR_CHARS = 1_000

_OBJECT_COLUMNS = (
    ResultColumn("object", "text"),
    ResultColumn("action", "text"),
    ResultColumn("changes", "jsonb"),
)
_GET_COLUMNS = (
    ResultColumn("kind", "text"),
    ResultColumn("namespace", "text"),
    ResultColumn("name", "text"),
    ResultColumn("object", "jsonb"),
)
_EVENT_COLUMNS = (
    ResultColumn("last_seen", "text"),
    ResultColumn("type", "text"),
    ResultColumn("reason", "text"),
    ResultColumn("object", "text"),
    ResultColumn("count", "int4"),
    ResultColumn("message", "text"),
)


@dataclass(frozen=True, slots=True)
class _Target:
    """One object to apply, its namespace reconciled into ``obj``, and the exact bytes sent."""

    obj: KubeObject
    body: bytes

    @property
    def namespace(self) -> str | None:
        return self.obj.namespace

    @property
    def label(self) -> str:
        return self.obj.label


def _finding_json(f: Finding) -> dict[str, JsonValue]:
    return {
        "check": f.check,
        "category": f.category,
        "object": f.object,
        "source": f.source,
        "path": f.path,
        "message": f.message,
    }


def _digest(data: object) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _str_arg(
    arguments: Mapping[str, JsonValue], key: str, *, required: bool = False, limit: int = _NAME_CHARS
) -> str | None:
    value = arguments.get(key)
    if value is None:
        if required:
            raise InvalidInput(f"'{key}' is required", details={"rule_id": "k8s.missing_argument"})
        return None
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        raise InvalidInput(
            f"'{key}' must be a non-empty string of at most {limit} characters",
            details={"rule_id": "k8s.invalid_argument"},
        )
    return value


def _int_arg(arguments: Mapping[str, JsonValue], key: str, *, low: int, high: int) -> int | None:
    value = arguments.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidInput(
            f"'{key}' must be an integer from {low} to {high}", details={"rule_id": "k8s.invalid_argument"}
        )
    return value


def _dns_label(value: str, what: str) -> str:
    if not is_dns1123_label(value):
        raise InvalidInput(
            f"{what} {value[:80]!r} is not a valid name (lower-case letters, digits and '-', at most 63)",
            details={"rule_id": "k8s.invalid_name"},
        )
    return value


def _object_name(value: str, what: str) -> str:
    # The rule every object name follows (a path segment); kind-specific rules are the server's.
    if not re.fullmatch(r"[^/%]{1,253}", value) or value in (".", ".."):
        raise InvalidInput(
            f"{what} {value[:80]!r} is not a valid object name", details={"rule_id": "k8s.invalid_name"}
        )
    return value


def _selector(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    # Equality- and set-based selectors: keys, values, operators; nothing that could smuggle params.
    if not re.fullmatch(r"[A-Za-z0-9_./,=!() -]{1,1000}", value):
        raise InvalidInput(
            f"{what} {value[:80]!r} is not a valid selector (e.g. 'app=web,tier!=cache')",
            details={"rule_id": "k8s.invalid_selector"},
        )
    return value


class KubernetesBackend:
    kind = "kubernetes"

    def __init__(
        self,
        *,
        name: str,
        settings: KubernetesConnection,
        api: KubeApi,
        credential_secrets: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.settings = settings
        self.api = api
        self._credential_secrets = tuple(credential_secrets)

    async def close(self) -> None:
        await self.api.aclose()

    # -- namespaces ----------------------------------------------------------------------------------
    def namespace_problem(self, namespace: str) -> str | None:
        """Why this connection may not touch ``namespace`` (``None`` when it may)."""
        s = self.settings
        if any(fnmatchcase(namespace, p) for p in s.denied_namespaces):
            return f"namespace {namespace!r} is denied on connection {self.name!r} (denied_namespaces)"
        if not any(fnmatchcase(namespace, p) for p in s.namespaces):
            return f"namespace {namespace!r} is not among the namespaces connection {self.name!r} allows"
        return None

    def _namespace_refusal(self, namespaces: Sequence[str]) -> Decision | None:
        for ns in namespaces:
            problem = self.namespace_problem(ns)
            if problem:
                return Decision(verdict=Verdict.DENY, rule_id="k8s.namespace_denied", reason=problem)
        return None

    def _cluster_kind_allowed(self, api_version: str, kind: str) -> bool:
        """Whether ``cluster_scoped_kinds`` names this kind (as ``Kind`` or ``group/Kind``)."""
        group = api_version.rpartition("/")[0]
        names = (kind, f"{group}/{kind}") if group else (kind,)
        return any(fnmatchcase(n, p) for n in names for p in self.settings.cluster_scoped_kinds)

    # -- planning ------------------------------------------------------------------------------------
    async def plan(self, *, tool: str, arguments: Mapping[str, JsonValue]) -> PlannedCall:
        if tool in ("kubectl_apply", "kubectl_diff"):
            return self._plan_manifest(tool, arguments)
        if tool == "kubectl_delete":
            return self._plan_delete(arguments)
        if tool in ("kubectl_get", "kubectl_events", "kubectl_rollout_status", "kubectl_logs"):
            return self._plan_read(tool, arguments)
        raise InvalidInput(
            f"the kubernetes backend has no tool {tool!r}", details={"rule_id": "input.unknown_tool"}
        )

    def _reconcile(self, objects: Sequence[KubeObject], argument: str | None) -> list[_Target]:
        targets: list[_Target] = []
        for obj in objects:
            namespaced = is_namespaced(obj.api_version, obj.kind)
            if namespaced is None:
                raise InvalidInput(
                    f"{obj.source}: kind {obj.kind!r} ({obj.api_version}) is not a built-in kind this "
                    "connection knows",
                    details={"rule_id": "k8s.unknown_kind"},
                )
            if namespaced:
                given = obj.namespace
                if given is not None and argument is not None and given != argument:
                    raise InvalidInput(
                        f"{obj.source}: {obj.kind}/{obj.name} says namespace {given!r} but the call names "
                        f"namespace {argument!r}",
                        hint="remove metadata.namespace from the manifest or call with the same namespace",
                        details={"rule_id": "k8s.namespace_mismatch"},
                    )
                if given is None:
                    namespace = argument or self.settings.default_namespace
                    meta = {**obj.body.get("metadata", {}), "namespace": namespace}
                    obj = replace(obj, namespace=namespace, body={**obj.body, "metadata": meta})
            else:
                if obj.namespace is not None:
                    raise InvalidInput(
                        f"{obj.source}: {obj.kind} is cluster-scoped but metadata.namespace is "
                        f"{obj.namespace!r}",
                        hint="remove metadata.namespace from cluster-scoped objects",
                        details={"rule_id": "k8s.namespace_on_cluster_scoped"},
                    )
            targets.append(_Target(obj=obj, body=manifest_json(obj)))
        return targets

    def _plan_manifest(self, tool: str, arguments: Mapping[str, JsonValue]) -> PlannedCall:
        manifest = arguments.get("manifest")
        if not isinstance(manifest, str):
            raise InvalidInput(
                "'manifest' must be a string of YAML (one or more documents) or JSON",
                details={"rule_id": "k8s.invalid_argument"},
            )
        namespace = _str_arg(arguments, "namespace", limit=63)
        if namespace is not None:
            _dns_label(namespace, "namespace")
        dry_run = arguments.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise InvalidInput("'dry_run' must be true or false", details={"rule_id": "k8s.invalid_argument"})
        dry_run = dry_run or tool == "kubectl_diff"
        objects = parse_manifest(manifest, max_bytes=self.settings.max_manifest_bytes)
        if len(objects) > self.settings.max_objects:
            raise InvalidInput(
                f"the manifest has {len(objects)} objects; connection {self.name!r} applies at most "
                f"{self.settings.max_objects} per call",
                hint="split it into several calls",
                details={"rule_id": "k8s.too_many_objects"},
            )
        labels = [o.label for o in objects]
        if len(set(labels)) != len(labels):
            dup = next(label for label in labels if labels.count(label) > 1)
            raise InvalidInput(
                f"{dup} appears more than once in the manifest", details={"rule_id": "k8s.duplicate_object"}
            )
        validate_objects(objects, kubernetes_version=self.settings.kubernetes_version)
        targets = self._reconcile(objects, namespace)
        findings = check_objects([t.obj for t in targets])
        secrets = sorted({s for t in targets for s in secret_strings(t.obj.body)})
        namespaces = sorted(
            {t.namespace for t in targets if t.namespace}
            | {t.obj.name for t in targets if t.obj.kind == "Namespace" and t.obj.group == ""}
        )
        flags: set[str] = set()
        refusal = self._namespace_refusal(namespaces)
        for t in targets:
            if t.namespace is None:
                flags.add("cluster_scoped")
                if refusal is None and not self._cluster_kind_allowed(t.obj.api_version, t.obj.kind):
                    refusal = Decision(
                        verdict=Verdict.DENY,
                        rule_id="k8s.cluster_scoped",
                        reason=f"{t.obj.source}: {t.label} is cluster-scoped; connection {self.name!r} allows "
                        "no cluster-scoped kind "
                        + (
                            f"but {', '.join(self.settings.cluster_scoped_kinds)}"
                            if self.settings.cluster_scoped_kinds
                            else "(cluster_scoped_kinds)"
                        ),
                    )
        enforced = {"pod_security_baseline"} | (
            {"pod_security_restricted"} if self.settings.pod_security == "restricted" else set()
        )
        blocking = [f for f in findings if f.category in enforced]
        for f in findings:
            if f.category == "pod_security_restricted" and f.category not in enforced:
                flags.add("pod_security_restricted")
            elif f.category in (
                "secret_write",
                "rbac",
                "rbac_escalation",
                "admission_webhook",
                "crd",
                "scale_to_zero",
            ):
                flags.add(f.category)
        if refusal is None and blocking and not dry_run:
            level = (
                "restricted" if any(f.category == "pod_security_restricted" for f in blocking) else "baseline"
            )
            listed = "; ".join(f"{f.source} {f.object}: {f.path}: {f.message}" for f in blocking[:5])
            more = f" (and {len(blocking) - 5} more)" if len(blocking) > 5 else ""
            refusal = Decision(
                verdict=Verdict.DENY,
                rule_id=f"k8s.pod_security.{level}",
                reason=f"the manifest violates the Pod Security Standard '{self.settings.pod_security}' "
                f"enforced on connection {self.name!r}: {listed}{more}",
            )
        write = tool == "kubectl_apply" and not dry_run
        count = len(targets)
        statement = (
            f"{'server-side apply' if write else 'server-side dry run of'} {count} object(s) on "
            f"{self.name} as field manager {self.settings.field_manager!r}:\n"
            + "\n".join(f"{t.label} {_digest(t.obj.body)}" for t in targets)
        )
        plan = Plan(
            effect="write" if write else "read",
            effects=("write",) if write else ("read",),
            command="APPLY" if write else "DRY-RUN",
            objects=tuple(t.label for t in targets),
            namespaces=tuple(namespaces),
            kinds=tuple(sorted({t.obj.kind for t in targets})),
            flags=tuple(sorted(flags)) if write else (),
            statement=statement,
            estimate={
                "objects": [{"object": t.label, "source": t.obj.source} for t in targets],
                "findings": [_finding_json(f) for f in findings],
            },
            summary=f"{'apply' if write else 'dry-run'} {count} object(s) on {self.name}: "
            + ", ".join(t.label for t in targets[:5])
            + (f" and {count - 5} more" if count > 5 else ""),
        )
        private: dict[str, Any] = {
            "op": "apply" if write else "dry_run",
            "targets": targets,
            "findings": findings,
            "secrets": secrets,
        }
        return PlannedCall(plan=plan, refusal=refusal, private=private)

    def _plan_delete(self, arguments: Mapping[str, JsonValue]) -> PlannedCall:
        kind = _str_arg(arguments, "kind", required=True, limit=100) or ""
        name = _object_name(_str_arg(arguments, "name", required=True) or "", "name")
        api_version = _str_arg(arguments, "api_version", limit=100) or DEFAULT_API_VERSIONS.get(kind)
        if api_version is None:
            raise InvalidInput(
                f"kind {kind!r} needs 'api_version' (e.g. 'apps/v1')", details={"rule_id": "k8s.unknown_kind"}
            )
        namespaced = is_namespaced(api_version, kind)
        if namespaced is None:
            raise InvalidInput(
                f"unknown kind {kind!r} in apiVersion {api_version!r}",
                details={"rule_id": "k8s.unknown_kind"},
            )
        namespace = None
        if namespaced:
            namespace = _dns_label(
                _str_arg(arguments, "namespace", limit=63) or self.settings.default_namespace, "namespace"
            )
        label = f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"
        refusal = self._namespace_refusal([namespace] if namespace else [])
        if refusal is None and namespace is None and not self._cluster_kind_allowed(api_version, kind):
            refusal = Decision(
                verdict=Verdict.DENY,
                rule_id="k8s.cluster_scoped",
                reason=f"{label} is cluster-scoped; connection {self.name!r} does not allow kind {kind!r}",
            )
        flags = ["delete"] + (["cluster_scoped"] if namespace is None else [])
        if kind == "Secret":
            flags.append("secret_write")
        plan = Plan(
            effect="write",
            effects=("write",),
            command="DELETE",
            objects=(label,),
            namespaces=(namespace,) if namespace else (),
            kinds=(kind,),
            flags=tuple(sorted(flags)),
            statement=f"delete {label} ({api_version}) on {self.name}",
            summary=f"delete {label} on {self.name}",
        )
        return PlannedCall(
            plan=plan,
            refusal=refusal,
            private={
                "op": "delete",
                "api_version": api_version,
                "kind": kind,
                "name": name,
                "namespace": namespace,
            },
        )

    def _plan_read(self, tool: str, arguments: Mapping[str, JsonValue]) -> PlannedCall:
        namespace_arg = _str_arg(arguments, "namespace", limit=63)
        namespace = _dns_label(namespace_arg or self.settings.default_namespace, "namespace")
        private: dict[str, Any] = {"op": tool, "namespace": namespace}
        kind = "Pod"
        api_version = "v1"
        name: str | None = None
        if tool == "kubectl_get":
            kind = _str_arg(arguments, "kind", required=True, limit=100) or ""
            api_version = _str_arg(arguments, "api_version", limit=100) or DEFAULT_API_VERSIONS.get(kind, "")
            if not api_version:
                raise InvalidInput(
                    f"kind {kind!r} needs 'api_version' (e.g. 'apps/v1'); known without it: "
                    + ", ".join(sorted(DEFAULT_API_VERSIONS)),
                    details={"rule_id": "k8s.unknown_kind"},
                )
            name_arg = _str_arg(arguments, "name")
            name = _object_name(name_arg, "name") if name_arg else None
            private["label_selector"] = _selector(
                _str_arg(arguments, "label_selector", limit=_SELECTOR_CHARS), "label_selector"
            )
            private["limit"] = _int_arg(arguments, "limit", low=1, high=self.settings.max_list_items) or min(
                100, self.settings.max_list_items
            )
        elif tool == "kubectl_events":
            kind = "Event"
            name_arg = _str_arg(arguments, "object_name")
            name = _object_name(name_arg, "object_name") if name_arg else None
            private["limit"] = _int_arg(arguments, "limit", low=1, high=self.settings.max_list_items) or min(
                100, self.settings.max_list_items
            )
        elif tool == "kubectl_rollout_status":
            kind = _str_arg(arguments, "kind", limit=100) or "Deployment"
            if kind not in _ROLLOUT_KINDS:
                raise InvalidInput(
                    f"rollout status works on {', '.join(_ROLLOUT_KINDS)}, not {kind!r}",
                    details={"rule_id": "k8s.invalid_argument"},
                )
            api_version = "apps/v1"
            name = _object_name(_str_arg(arguments, "name", required=True) or "", "name")
        else:  # kubectl_logs
            name = _object_name(_str_arg(arguments, "pod", required=True) or "", "pod")
            container = _str_arg(arguments, "container", limit=63)
            private["container"] = _dns_label(container, "container") if container else None
            private["tail_lines"] = _int_arg(arguments, "tail_lines", low=1, high=100_000)
            private["since_seconds"] = _int_arg(arguments, "since_seconds", low=1, high=30 * 86_400)
            cap = self.settings.max_log_bytes
            private["limit_bytes"] = _int_arg(arguments, "max_bytes", low=1, high=cap) or cap
        namespaced = is_namespaced(api_version, kind)
        if namespaced is False and tool == "kubectl_get":
            namespace = ""
        private.update(
            {"kind": kind, "api_version": api_version, "name": name, "namespace": namespace or None}
        )
        refusal = self._namespace_refusal([namespace] if namespace else [])
        if (
            refusal is None
            and tool == "kubectl_get"
            and namespaced is False
            and not self._cluster_kind_allowed(api_version, kind)
        ):
            refusal = Decision(
                verdict=Verdict.DENY,
                rule_id="k8s.cluster_scoped",
                reason=f"{kind} is cluster-scoped; connection {self.name!r} does not allow kind {kind!r}",
            )
        what = f"{kind}/{namespace + '/' if namespace else ''}{name or '*'}"
        command = {
            "kubectl_get": "GET",
            "kubectl_events": "EVENTS",
            "kubectl_rollout_status": "ROLLOUT-STATUS",
            "kubectl_logs": "LOGS",
        }[tool]
        plan = Plan(
            effect="read",
            effects=("read",),
            command=command,
            objects=(what,),
            namespaces=(namespace,) if namespace else (),
            kinds=(kind,),
            summary=f"{command.lower()} {what} on {self.name}",
        )
        return PlannedCall(plan=plan, refusal=refusal, private=private)

    # -- dry run ---------------------------------------------------------------------------------------
    def _secrets(self, planned: PlannedCall) -> list[str]:
        return [*planned.private.get("secrets", ()), *self._credential_secrets]

    async def _resources(self, targets: Sequence[_Target]) -> list[ApiResource]:
        out = []
        for t in targets:
            res = await self.api.resource(t.obj.api_version, t.obj.kind)
            if res.namespaced != (t.namespace is not None):
                raise BackendRejected(
                    f"{t.obj.source}: the API server says {t.obj.kind} is "
                    f"{'namespaced' if res.namespaced else 'cluster-scoped'}, unlike this server's table",
                    details={"rule_id": "k8s.scope_mismatch"},
                )
            out.append(res)
        return out

    async def _dry_run(
        self, planned: PlannedCall
    ) -> tuple[list[ObjectDiff], list[dict[str, Any] | None], list[ApiResource]]:
        """Every object's diff, live state and resource (the dry run stores nothing). Raises on the
        first error."""
        targets: list[_Target] = planned.private["targets"]
        resources = await self._resources(targets)
        diffs: list[ObjectDiff] = []
        lives: list[dict[str, Any] | None] = []
        for t, res in zip(targets, resources, strict=True):
            live = await self.api.get(res, t.namespace, t.obj.name)
            answer = await self.api.apply(res, t.namespace, t.obj.name, t.body, dry_run=True)
            diffs.append(diff_object(label=t.label, kind=t.obj.kind, live=live, dry_run=answer))
            lives.append(live)
        return diffs, lives, resources

    @staticmethod
    def _diff_digest(diffs: Sequence[ObjectDiff]) -> str:
        return "sha256:" + hashlib.sha256("\n".join(d.digest() for d in diffs).encode()).hexdigest()

    @staticmethod
    def _diff_estimate(diffs: Sequence[ObjectDiff]) -> list[dict[str, JsonValue]]:
        return [
            {"object": d.label, "action": d.action, "fields_changed": len(d.changed), "diff": render_diff(d)}  # type: ignore[dict-item]
            for d in diffs
        ]

    async def estimate(self, planned: PlannedCall) -> PlannedCall:
        if planned.private.get("op") not in ("apply", "dry_run"):
            return planned
        try:
            diffs, _, _ = await self._dry_run(planned)
        except BackendError as exc:
            raise self._scrubbed(planned, exc) from None
        digest = self._diff_digest(diffs)
        estimate = dict(planned.plan.estimate or {})
        estimate["changes"] = self._diff_estimate(diffs)  # type: ignore[assignment]
        plan = planned.plan.model_copy(
            update={"statement": f"{planned.plan.statement}\ndry-run result {digest}", "estimate": estimate}
        )
        return PlannedCall(
            plan=plan,
            refusal=planned.refusal,
            private={**planned.private, "diff_digest": digest, "diffs": diffs},
        )

    # -- showing -------------------------------------------------------------------------------------
    def render(
        self, planned: PlannedCall, *, mask: Callable[[str], str], for_confirmation: bool
    ) -> str | None:
        op = planned.private.get("op")
        if op == "delete":
            return mask(planned.plan.statement or "")
        if op not in ("apply", "dry_run"):
            return None
        targets: list[_Target] = planned.private["targets"]
        head = "apply" if op == "apply" else "dry run"
        lines = [
            f"{head} on {self.name} (field manager {self.settings.field_manager!r}), {len(targets)} object(s):"
        ]
        diffs: list[ObjectDiff] | None = planned.private.get("diffs")
        if diffs is not None:
            for d in diffs:
                lines += render_diff(d)
        else:
            lines += [f"  {t.label} ({t.obj.source})" for t in targets]
        findings: list[Finding] = planned.private.get("findings", [])
        if findings:
            lines.append(f"checks ({len(findings)} finding(s)):")
            lines += [f"  [{f.category}] {f.object} {f.path}: {f.message}" for f in findings[:30]]
        return mask(scrub("\n".join(lines), self._secrets(planned)))

    # -- execution -----------------------------------------------------------------------------------
    def _scrubbed(self, planned: PlannedCall, exc: BackendError) -> BackendError:
        """The error with every secret value of the manifest (and the credential) removed: API
        server messages may quote what they were sent."""
        secrets = self._secrets(planned)
        exc.message = scrub(exc.message, secrets)
        if exc.hint:
            exc.hint = scrub(exc.hint, secrets)
        return exc

    async def execute(self, planned: PlannedCall) -> TableResult:
        try:
            return await self._execute(planned)
        except BackendError as exc:
            raise self._scrubbed(planned, exc) from None

    async def _execute(self, planned: PlannedCall) -> TableResult:
        op = planned.private.get("op")
        if op in ("apply", "dry_run"):
            return await self._apply(planned, write=op == "apply")
        if op == "delete":
            return await self._delete(planned)
        if op == "kubectl_get":
            return await self._get(planned)
        if op == "kubectl_events":
            return await self._events(planned)
        if op == "kubectl_rollout_status":
            return await self._rollout(planned)
        if op == "kubectl_logs":
            return await self._logs(planned)
        raise InvalidInput("unknown operation")

    async def _apply(self, planned: PlannedCall, *, write: bool) -> TableResult:
        diffs, lives, resources = await self._dry_run(planned)
        bound = planned.private.get("diff_digest")
        if write and bound is not None and self._diff_digest(diffs) != bound:
            raise BackendRejected(
                "the cluster changed since the plan was shown (the dry run now gives a different result); "
                "nothing was applied",
                hint="call kubectl_apply again to see and confirm the new plan",
                details={"rule_id": "k8s.plan_changed"},
            )
        rows: list[list[JsonValue]] = []
        if not write:
            rows = [
                [
                    d.label,
                    f"would {d.action}" if d.action != "unchanged" else "unchanged",
                    _change_lines(d),
                ]
                for d in diffs
            ]
            return TableResult(
                columns=_OBJECT_COLUMNS,
                rows=rows,
                row_count=len(rows),
                command_status=_counts("dry run", diffs),
            )
        targets: list[_Target] = planned.private["targets"]
        done: list[str] = []
        for t, res, d, live in zip(targets, resources, diffs, lives, strict=True):
            body = t.body
            version = _dict(_dict(live).get("metadata")).get("resourceVersion")
            if isinstance(version, str) and version:
                # Precondition: the apply lands only on the object version the dry run saw.
                meta = {**t.obj.body["metadata"], "resourceVersion": version}
                body = manifest_json(replace(t.obj, body={**t.obj.body, "metadata": meta}))
            try:
                await self.api.apply(res, t.namespace, t.obj.name, body, dry_run=False)
            except BackendError as exc:
                rest = len(targets) - len(done) - 1
                exc.message = (
                    f"{t.obj.source} {t.label}: {exc.message}. "
                    + (f"Already applied: {', '.join(done)}. " if done else "Nothing was applied. ")
                    + (f"{rest} later object(s) were not sent." if rest else "")
                ).strip()
                exc.details["applied"] = list(done)
                raise
            done.append(t.label)
            action = {"create": "created", "change": "configured", "unchanged": "unchanged"}[d.action]
            rows.append([d.label, action, _change_lines(d)])
        return TableResult(
            columns=_OBJECT_COLUMNS, rows=rows, row_count=len(rows), command_status=_counts("applied", diffs)
        )

    async def _delete(self, planned: PlannedCall) -> TableResult:
        p = planned.private
        res = await self.api.resource(p["api_version"], p["kind"])
        await self.api.delete(res, p["namespace"], p["name"], dry_run=True)
        await self.api.delete(res, p["namespace"], p["name"], dry_run=False)
        label = planned.plan.objects[0]
        return TableResult(
            columns=_OBJECT_COLUMNS,
            rows=[[label, "deleted", []]],
            row_count=1,
            command_status=f"deleted {label}",
        )

    async def _get(self, planned: PlannedCall) -> TableResult:
        p = planned.private
        res = await self.api.resource(p["api_version"], p["kind"])
        namespace = p["namespace"] if res.namespaced else None
        if p["name"]:
            found = await self.api.get(res, namespace, p["name"])
            items = [found] if found is not None else []
            if found is None:
                raise BackendRejected(
                    f"{p['kind']} {p['name']!r} was not found"
                    + (f" in namespace {namespace!r}" if namespace else ""),
                    details={"rule_id": "k8s.not_found"},
                )
            total, more = 1, False
        else:
            data = await self.api.list(res, namespace, label_selector=p["label_selector"], limit=p["limit"])
            items = [i for i in data.get("items") or [] if isinstance(i, dict)]
            more = bool((data.get("metadata") or {}).get("continue"))
            total = len(items)
        rows: list[list[JsonValue]] = []
        for item in items:
            item.setdefault("kind", p["kind"])
            item.setdefault("apiVersion", p["api_version"])
            shown = mask_object(_readable(item))
            meta = _dict(shown.get("metadata"))
            rows.append([p["kind"], meta.get("namespace"), meta.get("name"), shown])
        return TableResult(
            columns=_GET_COLUMNS,
            rows=rows,
            row_count=total,
            truncated=more,
            truncated_reason="max_rows" if more else None,
            command_status=f"{len(rows)} {p['kind']}(s)"
            + (" (more exist: narrow the selector)" if more else ""),
        )

    async def _events(self, planned: PlannedCall) -> TableResult:
        p = planned.private
        res = await self.api.resource("v1", "Event")
        selector = f"involvedObject.name={p['name']}" if p["name"] else None
        data = await self.api.list(res, p["namespace"], field_selector=selector, limit=p["limit"])
        items = [i for i in data.get("items") or [] if isinstance(i, dict)]
        if p["name"]:  # the emulator (and old servers) may ignore field selectors
            items = [i for i in items if (i.get("involvedObject") or {}).get("name") == p["name"]]

        def when(e: dict[str, Any]) -> str:
            return str(
                e.get("lastTimestamp")
                or e.get("eventTime")
                or (e.get("metadata") or {}).get("creationTimestamp")
                or ""
            )

        items.sort(key=when)
        rows: list[list[JsonValue]] = []
        for e in items:
            inv = _dict(e.get("involvedObject"))
            count = e.get("count")
            rows.append(
                [
                    when(e),
                    str(e.get("type") or ""),
                    str(e.get("reason") or ""),
                    f"{inv.get('kind', '')}/{inv.get('name', '')}",
                    count if isinstance(count, int) and not isinstance(count, bool) else 1,
                    mask_free_text(str(e.get("message") or "")[:2000]),
                ]
            )
        return TableResult(
            columns=_EVENT_COLUMNS, rows=rows, row_count=len(rows), command_status=f"{len(rows)} event(s)"
        )

    async def _rollout(self, planned: PlannedCall) -> TableResult:
        p = planned.private
        res = await self.api.resource("apps/v1", p["kind"])
        obj = await self.api.get(res, p["namespace"], p["name"])
        if obj is None:
            raise BackendRejected(
                f"{p['kind']} {p['name']!r} was not found in namespace {p['namespace']!r}",
                details={"rule_id": "k8s.not_found"},
            )
        done, message, facts = rollout_status(obj)
        rows: list[list[JsonValue]] = [
            [f"{p['kind']}/{p['namespace']}/{p['name']}", "complete" if done else "in progress", facts]
        ]
        return TableResult(
            columns=(
                ResultColumn("object", "text"),
                ResultColumn("status", "text"),
                ResultColumn("details", "jsonb"),
            ),
            rows=rows,
            row_count=1,
            command_status=message,
        )

    async def _logs(self, planned: PlannedCall) -> TableResult:
        p = planned.private
        text, truncated = await self.api.logs(
            p["namespace"],
            p["name"],
            container=p["container"],
            tail_lines=p["tail_lines"],
            since_seconds=p["since_seconds"],
            limit_bytes=p["limit_bytes"],
        )
        lines = text.splitlines()
        return TableResult(
            columns=(ResultColumn("line", "text"),),
            rows=[[mask_free_text(line)] for line in lines],
            row_count=len(lines),
            truncated=truncated,
            truncated_reason="max_bytes" if truncated else None,
            command_status=f"{len(lines)} log line(s)"
            + (f" (cut at {p['limit_bytes']} bytes)" if truncated else ""),
        )


#: Tools whose ``manifest`` argument is redacted before it is recorded or shown.
MANIFEST_TOOLS = ("kubectl_apply", "kubectl_diff")


def redact_manifest_arguments(arguments: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
    """The arguments with ``manifest`` replaced by its parsed objects, Secret values masked.

    A manifest that cannot be parsed cannot be masked faithfully, so only its size and digest are
    kept (the refusal names what was wrong with it)."""
    out = dict(arguments)
    manifest = out.get("manifest")
    if not isinstance(manifest, str):
        return out
    digest = "sha256:" + hashlib.sha256(manifest.encode("utf-8", "replace")).hexdigest()
    try:
        objects = parse_manifest(manifest, max_bytes=16_777_216)
    except InvalidInput:
        out["manifest"] = f"[manifest withheld: it could not be parsed; {len(manifest)} characters, {digest}]"
        return out
    out["manifest"] = [mask_object(o.body) for o in objects]
    out["manifest_digest"] = digest
    return out


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _change_lines(diff: ObjectDiff) -> list[JsonValue]:
    """A result row's changes: the rendered diff without its header line."""
    return [line.strip() for line in render_diff(diff)[1:]]


def _readable(item: dict[str, Any]) -> dict[str, Any]:
    """An object as a read returns it: without managedFields (noise, and not a credential)."""
    out = dict(item)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return out


def _counts(what: str, diffs: Sequence[ObjectDiff]) -> str:
    created = sum(d.action == "create" for d in diffs)
    changed = sum(d.action == "change" for d in diffs)
    same = sum(d.action == "unchanged" for d in diffs)
    return f"{what}: {created} created, {changed} configured, {same} unchanged"


def rollout_status(obj: Mapping[str, Any]) -> tuple[bool, str, dict[str, JsonValue]]:
    """Whether a Deployment/StatefulSet/DaemonSet rollout is complete, as ``kubectl rollout status`` says."""
    kind = str(obj.get("kind") or "Deployment")
    meta = _dict(obj.get("metadata"))
    spec = _dict(obj.get("spec"))
    status = _dict(obj.get("status"))

    def num(d: Mapping[str, Any], key: str) -> int:
        v = d.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else 0

    generation = num(meta, "generation")
    observed = num(status, "observedGeneration")
    facts: dict[str, JsonValue] = {"generation": generation, "observed_generation": observed}
    if generation and observed < generation:
        return False, f"waiting for the {kind} spec update to be observed", facts
    if kind == "DaemonSet":
        desired, updated, available = (
            num(status, "desiredNumberScheduled"),
            num(status, "updatedNumberScheduled"),
            num(status, "numberAvailable"),
        )
        facts.update({"desired": desired, "updated": updated, "available": available})
        if updated < desired:
            return False, f"{updated} of {desired} updated pods scheduled", facts
        if available < desired:
            return False, f"{available} of {desired} updated pods available", facts
        return True, f"daemon set rolled out ({desired} pods)", facts
    replicas = spec["replicas"] if isinstance(spec.get("replicas"), int) else 1
    updated, ready, available, total = (
        num(status, "updatedReplicas"),
        num(status, "readyReplicas"),
        num(status, "availableReplicas"),
        num(status, "replicas"),
    )
    facts.update(
        {"replicas": replicas, "updated": updated, "ready": ready, "available": available, "total": total}
    )
    if kind == "Deployment":
        for cond in status.get("conditions") or []:
            if (
                isinstance(cond, dict)
                and cond.get("type") == "Progressing"
                and cond.get("reason") == "ProgressDeadlineExceeded"
            ):
                return (
                    False,
                    f"deployment exceeded its progress deadline: {cond.get('message', '')}"[:500],
                    facts,
                )
        if updated < replicas:
            return False, f"{updated} of {replicas} new replicas updated", facts
        if total > updated:
            return False, f"{total - updated} old replica(s) pending termination", facts
        if available < updated:
            return False, f"{available} of {updated} updated replicas available", facts
        return True, f"deployment successfully rolled out ({replicas} replicas)", facts
    if ready < replicas or updated < replicas:
        return False, f"{ready} of {replicas} pods ready, {updated} updated", facts
    return True, f"statefulset rolled out ({replicas} pods)", facts


__all__ = [
    "DEFAULT_API_VERSIONS",
    "K8S_TOOLS",
    "MANIFEST_TOOLS",
    "KubernetesBackend",
    "redact_manifest_arguments",
    "rollout_status",
]
