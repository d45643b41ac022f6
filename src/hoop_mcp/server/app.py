"""The thin MCP layer: tool schemas, confirmation through elicitation, and error -> result mapping.

Only this package imports ``mcp``. Every tool call goes through :class:`~hoop_mcp.core.pipeline.Pipeline`.
"""

import contextvars
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver import Context, Elicit, ElicitationResult, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import AcceptedElicitation
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from mcp_types import INVALID_PARAMS, InputRequiredResult
from pydantic import BaseModel, ConfigDict, Field, JsonValue, WithJsonSchema

from hoop_mcp.core.approval import AnsweredConfirmation, NoConfirmationChannel, confirmation_prompt
from hoop_mcp.core.approvals import Approval
from hoop_mcp.core.errors import AuditWriteError
from hoop_mcp.core.models import Confirmation, OutcomeStatus, Plan, Verdict
from hoop_mcp.core.pipeline import CallResult, Pipeline, Prepared
from hoop_mcp.core.policy import CallFacts, evaluate

log = logging.getLogger(__name__)

_AUDIT_DOWN = (
    "The audit log cannot be written, so this call cannot go on (fail closed); an operator must fix it."
)

#: How long a used answer is remembered: longer than the SDK keeps sealed request state valid (600 s).
_ANSWER_MEMORY_S = 900.0

_call_state: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "hoop_call_state", default=None
)
_call_problem: contextvars.ContextVar[str | None] = contextvars.ContextVar("hoop_call_problem", default=None)

INSTRUCTIONS = """\
hoop-mcp guards access to production systems. Every call is checked against policy, may need the
user's confirmation, is executed with the server's own credentials, has sensitive values masked,
and is recorded. Start with list_tables and describe_table to learn the schema, then query_db with
one SQL statement per call. A denied call names the rule that denied it: do not retry the same call;
change the statement or ask the user. Masked values look like [REDACTED:...] or ****1234.
"""


APPROVAL_INSTRUCTIONS = """\
Some calls need approval by another person (four-eyes). Such a call returns outcome
'pending_approval' with an approval id and nothing runs: tell the user, call approval_wait with
that id until the status is no longer 'pending', then approval_execute when it is 'approved'.
You cannot approve anything yourself; do not try to change the call to avoid review.
"""


def instructions(connections: Mapping[str, str]) -> str:
    """What the agent reads at initialize: how to use the tools and which connections exist."""
    if not connections:
        return INSTRUCTIONS
    lines = [INSTRUCTIONS, "Connections:"]
    lines += [f"- {name}: {desc}" if desc else f"- {name}" for name, desc in sorted(connections.items())]
    return "\n".join(lines)


class ConfirmForm(BaseModel):
    """The form the user answers (flat, as elicitation requires)."""

    model_config = ConfigDict(extra="forbid")
    confirm: bool = Field(description="Run this statement now?")
    comment: str = Field(default="", description="Optional note recorded in the audit log", max_length=500)


class ColumnInfo(BaseModel):
    name: str
    type: str = Field(description="PostgreSQL type name")
    source: str | None = Field(description="schema.table.column the value comes from, if not computed")
    masked: bool = Field(description="True when a column rule masked every value of this column")


class PendingApproval(BaseModel):
    """A call held for four-eyes approval: nothing has run. ``next_step`` says what to do."""

    approval_id: str
    status: Literal["pending", "approved", "denied", "expired", "executed", "refused"]
    tool: str
    connection: str | None
    rule_id: str = Field(description="The policy rule that asks for review")
    reviewing: str = Field(description="What the approvers review (the statement as the server parsed it)")
    approvers: str = Field(description="Who may approve, and how many approvals are needed")
    expires_at: str = Field(description="ISO 8601 time after which the request (or approval) lapses")
    approval_url: str | None = Field(description="Page where an approver decides, when configured")
    next_step: str


class QueryResult(BaseModel):
    """Rows of one statement, masked. ``rows[i][j]`` belongs to ``columns[j]``.

    When ``outcome`` is ``pending_approval`` nothing ran: see ``pending_approval.next_step``.
    """

    call_id: str
    outcome: Literal["ok", "pending_approval"] = Field(
        default="ok", description="'pending_approval' when the call waits for another person's approval"
    )
    pending_approval: PendingApproval | None = None
    connection: str
    status: str = Field(description="The server's command tag, e.g. 'SELECT 5' or 'UPDATE 1'")
    effect: str = Field(description="What the statement does: read, write, ddl, ...")
    rule_id: str = Field(description="The policy rule that allowed the call")
    confirmed_by_user: bool = Field(description="True when the user confirmed the call through the client")
    columns: list[ColumnInfo]
    # Cells are JSON values of any type. The published schema says "an array of arrays" and stops
    # there: a per-cell schema makes clients that validate results (the Python SDK does, with
    # jsonschema) spend ~10 ms per 1,000 rows descending into cells that may hold anything anyway.
    rows: Annotated[
        list[list[Any]],
        WithJsonSchema(
            {
                "type": "array",
                "items": {"type": "array"},
                "description": "One array per row; cells are JSON values (masked), in column order",
            }
        ),
    ]
    row_count: int = Field(description="Rows produced or affected by the statement")
    truncated: bool = Field(description="True when rows were cut by the row or byte cap")
    truncated_reason: str | None = None
    redactions: dict[str, int] = Field(description="How many values were masked, by column and detector")
    message: str


class ApprovalStatus(BaseModel):
    """Where an approval stands. A wait that times out is not an error: wait again."""

    approval_id: str
    status: Literal["pending", "approved", "denied", "expired", "executed", "refused"]
    decided_by: list[str] = Field(description="Approvers (or the denier) so far")
    reason: str | None = Field(description="The deciding approver's reason, or why it ended")
    expires_at: str
    next_step: str


class ApprovalExecution(BaseModel):
    """The result of running an approved call (exactly what was approved)."""

    approval_id: str
    tool: str
    message: str
    query_db: QueryResult | None = Field(default=None, description="The result, for a query_db call")
    git_push: dict[str, Any] | None = Field(
        default=None, description="The result, for a git_push call (shaped like git_push's own result)"
    )
    kubernetes: dict[str, Any] | None = Field(
        default=None,
        description="The result, for a kubectl_apply or kubectl_delete call (shaped like kubectl_apply's result)",
    )


class PendingReview(BaseModel):
    approval_id: str
    requester: str
    tool: str
    connection: str | None
    rule_id: str
    summary: str
    expires_at: str
    approvals_needed: int
    approvals_so_far: int


class PendingReviews(BaseModel):
    approvals: list[PendingReview]
    message: str


class ReviewDecision(BaseModel):
    approval_id: str
    status: str
    message: str


class ReviewForm(BaseModel):
    """The approver's answer (flat, as elicitation requires)."""

    model_config = ConfigDict(extra="forbid")
    decision: Literal["approve", "deny"] = Field(description="Approve or deny this call")
    reason: str = Field(description="Why (recorded in the audit log with your identity)", max_length=1000)


class TableInfo(BaseModel):
    table: str
    kind: str
    estimated_rows: int | None
    comment: str | None
    masked_columns: list[str]


class TableList(BaseModel):
    connection: str
    tables: list[TableInfo]
    message: str


class ColumnDescription(BaseModel):
    column: str
    type: str
    nullable: bool
    default: str | None
    comment: str | None
    primary_key: bool
    masked: bool = Field(description="Values of this column are masked in results")
    masking_strategy: str | None


class TableDescription(BaseModel):
    connection: str
    table: str
    columns: list[ColumnDescription]
    message: str


class _NoQuestion:
    """Resolver result when there is nothing to ask (not a confirm verdict, or no elicitation)."""


def _client_can_elicit(ctx: Context[Any, Any]) -> bool:
    caps = ctx.client_capabilities
    elicitation = caps.elicitation if caps is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


class HoopServer:
    """Builds the MCP server around one pipeline."""

    def __init__(
        self,
        *,
        pipeline: Pipeline,
        name: str = "hoop-mcp",
        session_id: str | None = None,
        connections: Mapping[str, str] | None = None,
    ) -> None:
        """``connections`` maps each connection name to its description, shown to the agent."""
        self.pipeline = pipeline
        self.session_id = session_id or uuid.uuid4().hex
        text = instructions(connections or {})
        if any(b.kind == "git" for b in pipeline.backends.values()):
            from hoop_mcp.server.git_tools import GIT_INSTRUCTIONS

            text += "\n" + GIT_INSTRUCTIONS
        if any(b.kind == "kubernetes" for b in pipeline.backends.values()):
            from hoop_mcp.server.k8s_tools import K8S_INSTRUCTIONS

            text += "\n" + K8S_INSTRUCTIONS
        if pipeline.approvals is not None:
            text += "\n" + APPROVAL_INSTRUCTIONS
        self.mcp = MCPServer(name, instructions=text)
        # Outermost, before the SDK unseals request state: it sees the sealed (random-nonce) token.
        self.mcp.middleware.insert(0, self._single_use_answers)
        self.mcp.middleware.append(self._record_unhandled)
        self.mcp.middleware.append(self._hide_approver_tools)
        self._answers_used: dict[str, float] = {}
        self._declared_arguments: dict[str, frozenset[str]] | None = None
        self._register()

    # -- middleware: an answer to a confirmation is used once -------------------------------------
    async def _single_use_answers(self, ctx: Any, call_next: Any) -> Any:
        """Refuse a replayed answer: on 2026-07-28 the client returns the user's answer with the
        sealed request state of the round that asked, which stays valid for minutes. Resending the
        same pair would run the confirmed write again, so each sealed token may carry one answer."""
        params = getattr(ctx, "params", None)
        token = (
            params.get("requestState")
            if getattr(ctx, "method", None) == "tools/call" and isinstance(params, Mapping)
            else None
        )
        if not isinstance(token, str):
            return await call_next(ctx)
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
        now = time.monotonic()
        self._answers_used = {k: t for k, t in self._answers_used.items() if now - t < _ANSWER_MEMORY_S}
        if key in self._answers_used:
            await self._record_rejected(ctx, "a confirmation answer was replayed; refused")
            raise MCPError(
                code=INVALID_PARAMS,
                message="This confirmation answer was already used; call the tool again to be asked again.",
            )
        self._answers_used[key] = now  # reserved before the call runs: concurrent replays lose too
        return await call_next(ctx)

    # -- middleware: approver tools are for approvers ---------------------------------------------
    async def _hide_approver_tools(self, ctx: Any, call_next: Any) -> Any:
        """Agent principals never see the approver-only tools (calling them is refused too)."""
        result = await call_next(ctx)
        if getattr(ctx, "method", None) != "tools/list" or self.pipeline.approvals is None:
            return result
        from hoop_mcp.server.approval_tools import APPROVER_TOOLS

        try:
            who = await self.pipeline.identity.current_principal()
            approver = self.pipeline.approvals.may_approve_anything(who)
        except Exception:  # noqa: BLE001 - unknown caller: hide (fail closed), the list still works
            approver = False
        if approver:
            return result
        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            return {**result, "tools": [t for t in result["tools"] if t.get("name") not in APPROVER_TOOLS]}
        tools = getattr(result, "tools", None)
        if isinstance(tools, list):
            return result.model_copy(update={"tools": [t for t in tools if t.name not in APPROVER_TOOLS]})
        return result

    # -- middleware: record what never reached a tool body ---------------------------------------
    async def _record_unhandled(self, ctx: Any, call_next: Any) -> Any:
        if getattr(ctx, "method", None) != "tools/call":
            return await call_next(ctx)
        state: dict[str, Any] = {"recorded": False}
        token = _call_state.set(state)
        # Checked here (the SDK ignores undeclared arguments), refused by the tool body (_prepare),
        # so the SDK shapes the error result and this middleware records it like any rejection.
        problem = _call_problem.set(await self._unknown_arguments(ctx))
        try:
            result = await call_next(ctx)
        except Exception as exc:
            if not state["recorded"]:
                await self._record_rejected(ctx, f"request rejected: {type(exc).__name__}")
            raise
        finally:
            _call_problem.reset(problem)
            _call_state.reset(token)
        if not state["recorded"] and _asks_for_input(result):
            asking = state.get("asking")
            if isinstance(asking, Prepared):
                try:
                    await self.pipeline.record_prompt(asking)
                except AuditWriteError:
                    log.exception("call %s: cannot record the confirmation prompt", asking.call_id)
                    return CallToolResult(content=[TextContent(type="text", text=_AUDIT_DOWN)], is_error=True)
        elif not state["recorded"]:
            text = _result_text(result)
            await self._record_rejected(ctx, text or "request rejected before the tool ran")
            result = self._mask_result(result)
        return result

    async def _unknown_arguments(self, ctx: Any) -> str | None:
        """Refuse arguments a tool does not declare: an agent sending ``dry_run: true`` must not
        believe it was honoured while the statement runs for real."""
        params = getattr(ctx, "params", None)
        if not isinstance(params, Mapping) or not isinstance(params.get("arguments"), Mapping):
            return None
        name = params.get("name")
        if self._declared_arguments is None:  # the tools are fixed once registered: list them once
            self._declared_arguments = {
                t.name: frozenset((t.input_schema or {}).get("properties", {}))
                for t in await self.mcp.list_tools()
            }
        known = self._declared_arguments.get(str(name))
        if known is None:
            return None
        extra = sorted(str(k) for k in params["arguments"] if k not in known)
        if not extra:
            return None
        return (
            f"Invalid arguments for {name}: unknown argument(s) {', '.join(repr(k) for k in extra)}; "
            f"this tool accepts only {', '.join(sorted(known))}. Nothing was executed."
        )

    async def _record_rejected(self, ctx: Any, reason: str) -> None:
        params = getattr(ctx, "params", None) or {}
        name = str(params.get("name", "?")) if isinstance(params, Mapping) else "?"
        args = params.get("arguments") if isinstance(params, Mapping) else None
        arguments: dict[str, JsonValue] = dict(args) if isinstance(args, Mapping) else {}
        try:
            await self.pipeline.record_rejected_request(
                tool=name,
                arguments=arguments,
                session_id=self.session_id,
                reason=self.pipeline.safe_text(reason)[:500],
            )
        except Exception:
            log.exception("could not record a rejected %s call", name)

    def _mask_result(self, result: Any) -> Any:
        try:
            if isinstance(result, dict):
                for item in result.get("content", []) or []:
                    if isinstance(item, dict) and isinstance(item.get("text"), str):
                        item["text"] = self.pipeline.safe_text(item["text"])
            elif hasattr(result, "content"):
                for item in result.content or []:
                    if isinstance(getattr(item, "text", None), str):
                        item.text = self.pipeline.safe_text(item.text)
        except Exception:
            log.exception("masking a rejected request's error text failed")
            withheld = [{"type": "text", "text": "Invalid request (details withheld)."}]
            if isinstance(result, dict):  # keep the SDK's envelope (resultType, _meta, ...)
                return {**result, "content": withheld, "isError": True}
            return {"content": withheld, "isError": True}
        return result

    # -- helpers ----------------------------------------------------------------------------------
    async def _prepare(self, tool: str, connection: str, arguments: dict[str, JsonValue]) -> Prepared:
        problem = _call_problem.get()
        if problem is not None:
            raise ToolError(self.pipeline.safe_text(problem))
        return await self.pipeline.prepare(
            tool=tool, connection=connection, arguments=arguments, session_id=self.session_id
        )

    async def _run(self, prepared: Prepared, confirmation: Confirmation | None) -> CallResult:
        state = _call_state.get()
        if state is not None:
            state["recorded"] = True
        approval = AnsweredConfirmation(confirmation) if confirmation is not None else NoConfirmationChannel()
        try:
            return await self.pipeline.run(prepared, approval=approval)
        except AuditWriteError as exc:
            if exc.details.get("executed"):
                log.exception("call %s: ran, but its outcome record cannot be written", prepared.call_id)
                raise ToolError(
                    f"The statement ran, but its outcome could not be recorded, so its result is withheld "
                    f"(call id {prepared.call_id}). Do not retry a write before checking its effect; an "
                    "operator must fix the audit store."
                ) from None
            log.exception("call %s: audit store cannot be written; nothing executed", prepared.call_id)
            raise ToolError(
                "The audit log cannot be written, so nothing was executed (fail closed). "
                f"Call id {prepared.call_id}; an operator must fix the audit store."
            ) from None

    def pending_model(self, approval: Approval) -> PendingApproval:
        from hoop_mcp.server.approval_tools import pending_model

        return pending_model(self, approval, PendingApproval)

    def query_result(self, result: CallResult, connection: str) -> QueryResult:
        """The structured result of a query_db call (ok or pending approval); raises otherwise."""
        if result.status is OutcomeStatus.PENDING and result.approval is not None:
            return QueryResult.model_construct(
                call_id=result.call_id,
                outcome="pending_approval",
                pending_approval=self.pending_model(result.approval),
                connection=connection,
                status="",
                effect=(result.plan or Plan(effect="unknown")).effect,
                rule_id=result.decision.rule_id,
                confirmed_by_user=False,
                columns=[],
                rows=[],
                row_count=0,
                truncated=False,
                truncated_reason=None,
                redactions={},
                message=result.message,
            )
        self._raise_unless_ok(result)
        plan = result.plan or Plan(effect="unknown")
        return QueryResult.model_construct(
            outcome="ok",
            pending_approval=None,
            call_id=result.call_id,
            connection=connection,
            status=result.command_status,
            effect=plan.effect,
            rule_id=result.decision.rule_id,
            confirmed_by_user=bool(result.confirmation and result.confirmation.accepted),
            columns=[
                ColumnInfo.model_construct(name=c.name, type=c.type, source=c.source, masked=c.masked)
                for c in result.columns
            ],
            rows=result.rows,
            row_count=result.row_count,
            truncated=result.truncated,
            truncated_reason=result.truncated_reason,
            redactions=result.redactions,
            message=result.message,
        )

    @staticmethod
    def _raise_unless_ok(result: CallResult) -> None:
        if result.status is not OutcomeStatus.OK:
            raise ToolError(result.message)

    async def _read(self, tool: str, connection: str, arguments: dict[str, JsonValue]) -> CallResult:
        """Prepare and run a call that asks nobody (a read), raising unless it ran."""
        prepared = await self._prepare(tool, connection, arguments)
        result = await self._run(prepared, None)
        self._raise_unless_ok(result)
        return result

    def add_tool(
        self,
        fn: Callable[..., Any],
        title: str,
        *,
        read_only: bool,
        open_world: bool,
        destructive: bool | None = None,
        idempotent: bool | None = None,
    ) -> None:
        """Register a tool; by default a read is idempotent and a write destructive."""
        self.mcp.add_tool(
            fn,
            title=title,
            annotations=ToolAnnotations(
                title=title,
                read_only_hint=read_only,
                destructive_hint=not read_only if destructive is None else destructive,
                idempotent_hint=read_only if idempotent is None else idempotent,
                open_world_hint=open_world,
            ),
        )

    def connection_of_kind(self, kind: str, connection: str | None) -> str:
        """The named connection, or the only connection of ``kind`` when none is named."""
        if connection is not None:
            return connection
        names = connections_of_kind(self, kind)
        if len(names) == 1:
            return names[0]
        raise ToolError(
            f"Name the {kind} connection: this server has "
            + (", ".join(names) or "none")
            + ". Nothing was executed."
        )

    # -- tools ------------------------------------------------------------------------------------
    def _register(self) -> None:
        server = self

        async def prepare_query(connection: str, sql: str) -> Prepared:
            return await server._prepare("query_db", connection, {"connection": connection, "sql": sql})

        async def ask_confirmation(
            prepared: Annotated[Prepared, Resolve(prepare_query)], ctx: Context[Any, Any]
        ) -> _NoQuestion | Elicit[ConfirmForm]:
            return confirmation_question(prepared, ctx)

        async def query_db(
            connection: Annotated[
                str, Field(description="Name of a configured connection, e.g. 'shop'", max_length=64)
            ],
            sql: Annotated[str, Field(description="Exactly one SQL statement (PostgreSQL dialect)")],
            prepared: Annotated[Prepared, Resolve(prepare_query)],
            answer: Annotated[ElicitationResult[ConfirmForm], Resolve(ask_confirmation)],
        ) -> QueryResult:
            """Run one SQL statement on a configured PostgreSQL connection, under policy.

            Reads run in a read-only transaction. Writes may need the user's confirmation. Sensitive
            values are masked. Results are capped (see `truncated`). Denials name the rule."""
            confirmation = _confirmation_from(prepared, answer)
            result = await server._run(prepared, confirmation)
            return server.query_result(result, connection)

        async def list_tables(
            connection: Annotated[str, Field(description="Name of a configured connection", max_length=64)],
        ) -> TableList:
            """List the tables and views of a connection that you may query, with their masked columns."""
            prepared = await server._prepare("list_tables", connection, {"connection": connection})
            result = await server._run(prepared, None)
            server._raise_unless_ok(result)
            masked = server.pipeline.masker.masked_columns(connection=connection)
            tables: list[TableInfo] = []
            for row in result.rows:
                name = str(row[0])
                if not server._may_read(prepared, connection, name):
                    continue
                tables.append(
                    TableInfo(
                        table=name,
                        kind=str(row[1]),
                        estimated_rows=row[2] if isinstance(row[2], int) else None,
                        comment=row[3] if isinstance(row[3], str) else None,
                        masked_columns=sorted(masked.get(name, frozenset())),
                    )
                )
            msg = f"{len(tables)} table(s) you may query on '{connection}'. Use describe_table for columns."
            return TableList(connection=connection, tables=tables, message=msg)

        async def describe_table(
            connection: Annotated[str, Field(description="Name of a configured connection", max_length=64)],
            table: Annotated[
                str,
                Field(description="Table or view, e.g. 'customers' or 'public.customers'", max_length=200),
            ],
        ) -> TableDescription:
            """Describe a table's columns (types, nullability, keys) and which columns are masked."""
            prepared = await server._prepare(
                "describe_table", connection, {"connection": connection, "table": table}
            )
            result = await server._run(prepared, None)
            server._raise_unless_ok(result)
            relation = prepared.plan_masked.relations_read[0] if prepared.plan_masked else table
            cols = []
            for row in result.rows:
                rule = server.pipeline.masker.column_rule(
                    connection=connection, column=f"{relation}.{row[0]}"
                )
                cols.append(
                    ColumnDescription(
                        column=str(row[0]),
                        type=str(row[1]),
                        nullable=bool(row[2]),
                        default=row[3] if isinstance(row[3], str) else None,
                        comment=row[4] if isinstance(row[4], str) else None,
                        primary_key=bool(row[5]),
                        masked=rule is not None,
                        masking_strategy=str(rule.strategy) if rule else None,
                    )
                )
            note = (
                " Masked columns may be selected directly but not used in WHERE/JOIN/ORDER BY or expressions."
            )
            msg = f"{relation}: {len(cols)} column(s)." + (note if any(c.masked for c in cols) else "")
            return TableDescription(connection=connection, table=relation, columns=cols, message=msg)

        self.add_tool(query_db, "Query a database (guarded)", read_only=False, open_world=False)
        from hoop_mcp.server.approval_tools import register_approval_tools

        register_approval_tools(self)
        from hoop_mcp.server.git_tools import register_git_tools

        register_git_tools(self)
        from hoop_mcp.server.k8s_tools import register_k8s_tools

        register_k8s_tools(self)
        self.add_tool(list_tables, "List tables", read_only=True, open_world=False)
        self.add_tool(describe_table, "Describe a table", read_only=True, open_world=False)

    def _may_read(self, prepared: Prepared, connection: str, table: str) -> bool:
        if prepared.principal is None:
            return False
        plan = Plan(effect="read", effects=("read",), command="SELECT", relations_read=(table,))
        facts = CallFacts(tool="query_db", connection=connection, principal=prepared.principal, plan=plan)
        return evaluate(self.pipeline.policy, facts).verdict is not Verdict.DENY


def connections_of_kind(server: HoopServer, kind: str) -> list[str]:
    return sorted(name for name, b in server.pipeline.backends.items() if b.kind == kind)


def tool_arguments(**values: JsonValue) -> dict[str, JsonValue]:
    """A tool's arguments as the pipeline records them: unset (None) and false options left out."""
    return {k: v for k, v in values.items() if v is not None and v is not False}


def confirmation_question(prepared: Prepared, ctx: Context[Any, Any]) -> _NoQuestion | Elicit[ConfirmForm]:
    """The question a guarded tool's confirmation resolver asks (nothing unless the verdict is
    ``confirm`` and the client can show a form)."""
    if prepared.error is not None or prepared.decision.verdict is not Verdict.CONFIRM:
        return _NoQuestion()
    if not _client_can_elicit(ctx):
        return _NoQuestion()
    state = _call_state.get()
    if state is not None:
        state["asking"] = prepared  # recorded if this round ends by asking (2026-07-28)
    return Elicit(confirmation_prompt(prepared), ConfirmForm)


def _confirmation_from(prepared: Prepared, answer: Any) -> Confirmation | None:
    if prepared.error is not None or prepared.decision.verdict is not Verdict.CONFIRM:
        return None
    if isinstance(answer, AcceptedElicitation):
        data = answer.data
        if isinstance(data, _NoQuestion):
            return Confirmation(accepted=False, action="unsupported")
        if isinstance(data, ConfirmForm):
            return Confirmation(
                accepted=bool(data.confirm),
                action="accept" if data.confirm else "accept-no",
                comment=data.comment or None,
            )
        return Confirmation(accepted=False, action="invalid")
    action = str(getattr(answer, "action", "cancel"))
    return Confirmation(accepted=False, action=action)


def _asks_for_input(result: Any) -> bool:
    """A 2026-07-28 round that asks the client a question (elicitation) before the tool body runs.

    Not a rejected call: the same call comes back with the answer and is recorded then.
    """
    if isinstance(result, InputRequiredResult):
        return True
    return isinstance(result, dict) and (
        "inputRequests" in result or result.get("resultType") == "input_required"
    )


def _result_text(result: Any) -> str:
    content = result.get("content") if isinstance(result, dict) else getattr(result, "content", None)
    texts = []
    for item in content or []:
        text = item.get("text") if isinstance(item, dict) else getattr(item, "text", None)
        if isinstance(text, str):
            texts.append(text)
    return " ".join(texts)
