"""MCP tools for Kubernetes: ``kubectl_apply`` and ``kubectl_delete`` (guarded writes), and the reads
``kubectl_diff``, ``kubectl_get``, ``kubectl_events``, ``kubectl_rollout_status``, ``kubectl_logs``.

The agent sends a manifest; the server parses and checks it, dry-runs it on the cluster, and policy,
confirmation and approval decide on what the server computed. The cluster credential stays here.
"""

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, Elicit, ElicitationResult, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field, StrictBool

from hoop_mcp.core.models import OutcomeStatus, Plan
from hoop_mcp.core.pipeline import CallResult, Prepared
from hoop_mcp.server.app import (
    ConfirmForm,
    HoopServer,
    PendingApproval,
    _confirmation_from,
    _NoQuestion,
    confirmation_question,
    connections_of_kind,
    tool_arguments,
)

K8S_INSTRUCTIONS = """\
Kubernetes: send manifests to kubectl_diff first to see what would change (the server's own dry run,
with Secret values masked), then kubectl_apply. The server validates every object offline, enforces
Pod Security Standards, refuses RBAC escalation and protected namespaces, and applies with its own
credential; never put a kubeconfig or token in a call. Reads: kubectl_get, kubectl_events,
kubectl_rollout_status, kubectl_logs (bounded). Deletions and Secret writes need confirmation or approval.
"""


class KubeFinding(BaseModel):
    """A policy check's finding on one object (values never quoted)."""

    check: str
    category: str
    object: str
    path: str
    message: str


class KubeObjectChange(BaseModel):
    object: str = Field(description="Kind/namespace/name")
    action: str = Field(description="created, configured, unchanged, deleted, or 'would ...' in a dry run")
    changes: list[str] = Field(description="The changed fields, old -> new (Secret values masked)")


class KubeApplyResult(BaseModel):
    """An apply, a dry run or a deletion (or, when ``outcome`` is ``pending_approval``, one waiting)."""

    call_id: str
    outcome: Literal["ok", "pending_approval"] = "ok"
    pending_approval: PendingApproval | None = None
    connection: str
    rule_id: str = Field(description="The policy rule that allowed (or holds) the call")
    confirmed_by_user: bool
    dry_run: bool
    objects: list[KubeObjectChange]
    findings: list[KubeFinding] = Field(description="What the policy checks found (not all block)")
    plan: str | None = Field(description="What was shown for confirmation or approval (masked)")
    message: str


class KubeObjects(BaseModel):
    connection: str
    objects: list[dict[str, Any]] = Field(description="The objects, Secret values and managedFields removed")
    truncated: bool
    message: str


class KubeEvent(BaseModel):
    last_seen: str
    type: str
    reason: str
    object: str
    count: int
    message: str


class KubeEvents(BaseModel):
    connection: str
    events: list[KubeEvent] = Field(description="Oldest first")
    message: str


class KubeRollout(BaseModel):
    connection: str
    object: str
    complete: bool
    details: dict[str, Any]
    message: str


class KubeLogs(BaseModel):
    connection: str
    pod: str
    lines: list[str]
    truncated: bool
    message: str


def _findings(plan: Plan | None) -> list[KubeFinding]:
    out: list[KubeFinding] = []
    found = (plan.estimate or {}).get("findings") if plan is not None else None
    for f in found if isinstance(found, list) else []:
        if isinstance(f, dict):
            out.append(
                KubeFinding(
                    check=str(f.get("check")),
                    category=str(f.get("category")),
                    object=str(f.get("object")),
                    path=str(f.get("path")),
                    message=str(f.get("message")),
                )
            )
    return out


def apply_result(
    server: HoopServer, result: CallResult, connection: str, *, dry_run: bool
) -> KubeApplyResult:
    """The structured result of kubectl_apply / kubectl_diff / kubectl_delete; raises unless ok or pending."""
    findings = _findings(result.plan)
    shown = result.plan.statement if result.plan is not None else None
    if result.status is OutcomeStatus.PENDING and result.approval is not None:
        return KubeApplyResult(
            call_id=result.call_id,
            outcome="pending_approval",
            pending_approval=server.pending_model(result.approval),
            connection=connection,
            rule_id=result.decision.rule_id,
            confirmed_by_user=False,
            dry_run=dry_run,
            objects=[],
            findings=findings,
            plan=shown,
            message=result.message,
        )
    if result.status is not OutcomeStatus.OK:
        raise ToolError(result.message)
    objects = [
        KubeObjectChange(
            object=str(row[0]),
            action=str(row[1]),
            changes=[str(c) for c in row[2]] if isinstance(row[2], list) else [],
        )
        for row in result.rows
    ]
    return KubeApplyResult(
        call_id=result.call_id,
        connection=connection,
        rule_id=result.decision.rule_id,
        confirmed_by_user=bool(result.confirmation and result.confirmation.accepted),
        dry_run=dry_run,
        objects=objects,
        findings=findings,
        plan=shown,
        message=result.command_status or result.message,
    )


_Manifest = Annotated[
    str,
    Field(
        description="Kubernetes objects as YAML (several documents separated by ---) or JSON; "
        "a List kind is expanded",
        max_length=16_777_216,
    ),
]
_Namespace = Annotated[
    str | None,
    Field(
        description="Namespace for objects that name none (must agree with any metadata.namespace)",
        max_length=63,
    ),
]
_Conn = Annotated[
    str | None,
    Field(description="Kubernetes connection name (default: the only kubernetes connection)", max_length=64),
]
_Kind = Annotated[str, Field(description="Kind, e.g. Deployment, Pod, ConfigMap", max_length=100)]
_ApiVersion = Annotated[
    str | None,
    Field(description="apiVersion, e.g. apps/v1 (default: the usual one for built-in kinds)", max_length=100),
]


def register_k8s_tools(server: HoopServer) -> None:
    """Add the Kubernetes tools when the server has at least one kubernetes connection."""

    async def prepare_apply(
        manifest: str, namespace: str | None, connection: str | None, dry_run: bool
    ) -> Prepared:
        name = server.connection_of_kind("kubernetes", connection)
        args = tool_arguments(connection=name, manifest=manifest, namespace=namespace, dry_run=dry_run)
        return await server._prepare("kubectl_apply", name, args)

    async def ask_apply(
        prepared: Annotated[Prepared, Resolve(prepare_apply)], ctx: Context[Any, Any]
    ) -> _NoQuestion | Elicit[ConfirmForm]:
        return confirmation_question(prepared, ctx)

    async def kubectl_apply(
        manifest: _Manifest,
        prepared: Annotated[Prepared, Resolve(prepare_apply)],
        answer: Annotated[ElicitationResult[ConfirmForm], Resolve(ask_apply)],
        namespace: _Namespace = None,
        connection: _Conn = None,
        dry_run: Annotated[
            StrictBool,
            Field(description="Only the server-side dry run: show what would change, apply nothing"),
        ] = False,
    ) -> KubeApplyResult:
        """Apply Kubernetes manifests (server-side apply) under policy.

        The server validates every object, checks Pod Security Standards, RBAC escalation, namespaces
        and Secrets, runs a server-side dry run first, and applies with its own credential. Denials
        name the rule; confirmations and approvals show the dry-run diff."""
        confirmation = _confirmation_from(prepared, answer)
        result = await server._run(prepared, confirmation)
        return apply_result(server, result, prepared.connection or "", dry_run=dry_run)

    async def kubectl_diff(
        manifest: _Manifest, namespace: _Namespace = None, connection: _Conn = None
    ) -> KubeApplyResult:
        """Show what kubectl_apply would change (the server's own dry run), and what the checks find.
        Applies nothing."""
        name = server.connection_of_kind("kubernetes", connection)
        prepared = await server._prepare(
            "kubectl_diff", name, tool_arguments(connection=name, manifest=manifest, namespace=namespace)
        )
        result = await server._run(prepared, None)
        return apply_result(server, result, name, dry_run=True)

    async def prepare_delete(
        kind: str, name: str, namespace: str | None, api_version: str | None, connection: str | None
    ) -> Prepared:
        conn = server.connection_of_kind("kubernetes", connection)
        args = tool_arguments(
            connection=conn, kind=kind, name=name, namespace=namespace, api_version=api_version
        )
        return await server._prepare("kubectl_delete", conn, args)

    async def ask_delete(
        prepared: Annotated[Prepared, Resolve(prepare_delete)], ctx: Context[Any, Any]
    ) -> _NoQuestion | Elicit[ConfirmForm]:
        return confirmation_question(prepared, ctx)

    async def kubectl_delete(
        kind: _Kind,
        name: Annotated[str, Field(description="Object name", max_length=253)],
        prepared: Annotated[Prepared, Resolve(prepare_delete)],
        answer: Annotated[ElicitationResult[ConfirmForm], Resolve(ask_delete)],
        namespace: _Namespace = None,
        api_version: _ApiVersion = None,
        connection: _Conn = None,
    ) -> KubeApplyResult:
        """Delete one object. Destructive: denied unless a policy rule allows it, and then it always
        needs the user's confirmation or another person's approval."""
        confirmation = _confirmation_from(prepared, answer)
        result = await server._run(prepared, confirmation)
        return apply_result(server, result, prepared.connection or "", dry_run=False)

    async def kubectl_get(
        kind: _Kind,
        name: Annotated[
            str | None, Field(description="One object by name (default: list)", max_length=253)
        ] = None,
        namespace: _Namespace = None,
        label_selector: Annotated[
            str | None, Field(description="e.g. 'app=web,tier!=cache'", max_length=1000)
        ] = None,
        api_version: _ApiVersion = None,
        limit: Annotated[int | None, Field(description="Most objects to list", ge=1, le=10_000)] = None,
        connection: _Conn = None,
    ) -> KubeObjects:
        """Get one object or list objects of a kind (Secret values and managedFields are removed)."""
        conn = server.connection_of_kind("kubernetes", connection)
        args = tool_arguments(
            connection=conn,
            kind=kind,
            name=name,
            namespace=namespace,
            label_selector=label_selector,
            api_version=api_version,
            limit=limit,
        )
        result = await server._read("kubectl_get", conn, args)
        objects = [row[3] for row in result.rows if isinstance(row[3], dict)]
        return KubeObjects(
            connection=conn, objects=objects, truncated=result.truncated, message=result.command_status
        )

    async def kubectl_events(
        namespace: _Namespace = None,
        object_name: Annotated[
            str | None, Field(description="Only events about this object", max_length=253)
        ] = None,
        limit: Annotated[int | None, Field(ge=1, le=10_000)] = None,
        connection: _Conn = None,
    ) -> KubeEvents:
        """Recent events in a namespace (optionally about one object), oldest first."""
        conn = server.connection_of_kind("kubernetes", connection)
        args = tool_arguments(connection=conn, namespace=namespace, object_name=object_name, limit=limit)
        result = await server._read("kubectl_events", conn, args)
        events = [
            KubeEvent(
                last_seen=str(r[0]),
                type=str(r[1]),
                reason=str(r[2]),
                object=str(r[3]),
                count=r[4] if isinstance(r[4], int) else 1,
                message=str(r[5]),
            )
            for r in result.rows
        ]
        return KubeEvents(connection=conn, events=events, message=result.command_status)

    async def kubectl_rollout_status(
        name: Annotated[str, Field(description="Deployment, StatefulSet or DaemonSet name", max_length=253)],
        kind: Annotated[
            Literal["Deployment", "StatefulSet", "DaemonSet"], Field(description="The workload kind")
        ] = "Deployment",
        namespace: _Namespace = None,
        connection: _Conn = None,
    ) -> KubeRollout:
        """Whether a rollout is complete (one look, like 'kubectl rollout status --watch=false')."""
        conn = server.connection_of_kind("kubernetes", connection)
        args = tool_arguments(connection=conn, name=name, kind=kind, namespace=namespace)
        result = await server._read("kubectl_rollout_status", conn, args)
        row = result.rows[0]
        return KubeRollout(
            connection=conn,
            object=str(row[0]),
            complete=row[1] == "complete",
            details=row[2] if isinstance(row[2], dict) else {},
            message=result.command_status,
        )

    async def kubectl_logs(
        pod: Annotated[str, Field(description="Pod name", max_length=253)],
        namespace: _Namespace = None,
        container: Annotated[
            str | None, Field(description="Container (default: the only one)", max_length=63)
        ] = None,
        tail_lines: Annotated[
            int | None, Field(description="Only the last N lines", ge=1, le=100_000)
        ] = None,
        since_seconds: Annotated[int | None, Field(ge=1, le=30 * 86_400)] = None,
        max_bytes: Annotated[
            int | None, Field(description="At most this many bytes (capped by the connection)", ge=1)
        ] = None,
        connection: _Conn = None,
    ) -> KubeLogs:
        """A pod's log, bounded (secrets in it are masked)."""
        conn = server.connection_of_kind("kubernetes", connection)
        args = tool_arguments(
            connection=conn,
            pod=pod,
            namespace=namespace,
            container=container,
            tail_lines=tail_lines,
            since_seconds=since_seconds,
            max_bytes=max_bytes,
        )
        result = await server._read("kubectl_logs", conn, args)
        return KubeLogs(
            connection=conn,
            pod=pod,
            lines=[str(r[0]) for r in result.rows],
            truncated=result.truncated,
            message=result.command_status,
        )

    if not connections_of_kind(server, "kubernetes"):
        return
    server.add_tool(
        kubectl_apply,
        "Apply Kubernetes manifests (guarded)",
        read_only=False,
        open_world=True,
        idempotent=True,
    )
    server.add_tool(kubectl_delete, "Delete a Kubernetes object (guarded)", read_only=False, open_world=True)
    server.add_tool(kubectl_diff, "What an apply would change", read_only=True, open_world=True)
    server.add_tool(kubectl_get, "Get or list Kubernetes objects", read_only=True, open_world=True)
    server.add_tool(kubectl_events, "Kubernetes events", read_only=True, open_world=True)
    server.add_tool(kubectl_rollout_status, "Rollout status", read_only=True, open_world=True)
    server.add_tool(kubectl_logs, "Pod logs", read_only=True, open_world=True)
