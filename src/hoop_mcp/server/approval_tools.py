"""MCP tools for four-eyes approvals.

Agents get ``approval_wait`` and ``approval_execute``. Approvers connected with their own
identity get ``approvals_pending`` and ``approval_review`` (an elicitation prompt showing the
plan); those two are hidden from, and refused to, agent principals.
"""

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import Context, Elicit, ElicitationResult, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import AcceptedElicitation
from pydantic import Field, JsonValue

from hoop_mcp.core.approval import visible
from hoop_mcp.core.approvals import (
    Approval,
    ApprovalService,
    ApprovalState,
    ApprovalStoreUnavailable,
    approver_problem,
    principal_key,
    review_text,
)
from hoop_mcp.core.errors import ApprovalError, AuditWriteError, AuthenticationError, HoopError
from hoop_mcp.core.models import ApprovalEvidence, Outcome, OutcomeStatus, Principal
from hoop_mcp.server.app import (
    ApprovalExecution,
    ApprovalStatus,
    HoopServer,
    PendingApproval,
    PendingReview,
    PendingReviews,
    ReviewDecision,
    ReviewForm,
    _call_state,
    _client_can_elicit,
)

#: Approver-only tools: never listed for, and refused to, agent principals.
log = logging.getLogger(__name__)

APPROVER_TOOLS = frozenset({"approvals_pending", "approval_review"})
#: Tools whose approved calls approval_execute can run.
EXECUTABLE_TOOLS = frozenset({"query_db", "git_push", "kubectl_apply", "kubectl_delete"})
#: Longest single approval_wait.
MAX_WAIT_S = 300.0

_T = TypeVar("_T")


def next_step(approval: Approval, url: str | None) -> str:
    aid = approval.approval_id
    state = approval.state
    if state is ApprovalState.PENDING:
        where = f" The approver can decide at {url}." if url else ""
        return (
            f"Nothing has run. Tell the user that approval {aid} needs another person's approval "
            f"({_approvers(approval)}).{where} Then call approval_wait(approval_id='{aid}') until its status "
            f"is no longer 'pending'; when it is 'approved', call approval_execute(approval_id='{aid}') "
            "(or repeat the identical call). Do not change the call: any change needs a new approval."
        )
    if state is ApprovalState.APPROVED:
        return (
            f"Approved. Call approval_execute(approval_id='{aid}') now (or repeat the identical call); "
            "exactly the approved call runs, once."
        )
    if state is ApprovalState.DENIED:
        return "Denied by an approver: do not retry the same call. Tell the user the reason."
    if state is ApprovalState.EXPIRED:
        return "Expired: call the tool again to request a new approval if it is still needed."
    if state is ApprovalState.EXECUTED:
        return "Already executed once; an approval is used only once."
    return "Refused: the call changed since it was approved; call the tool again to request a new approval."


def _approvers(approval: Approval) -> str:
    review = approval.request.review
    who = ", ".join([*(f"group {g}" for g in review.approver_groups), *review.approver_subjects])
    return f"{review.quorum} of: {who}"


def _iso(approval: Approval) -> str:
    return approval.deadline.isoformat(timespec="seconds")


@dataclass
class _Review:
    """What the approver's review resolver found (an error is reported by the tool body)."""

    approval: Approval | None
    principal: Principal | None
    error: str | None


class _NoQuestion:
    """Resolver result when there is nothing to ask."""


def register_approval_tools(server: HoopServer) -> None:
    service = server.pipeline.approvals
    if service is None:
        return
    pipeline = server.pipeline

    async def principal() -> Principal:
        try:
            return await pipeline.identity.current_principal()
        except AuthenticationError as exc:
            raise ToolError(pipeline.safe_text(f"Not authenticated: {exc.public_message}")) from None

    async def recorded(
        tool: str,
        arguments: Mapping[str, JsonValue],
        body: Callable[[], Awaitable[_T]],
        *,
        who: Principal | None = None,
        evidence: Callable[[_T], ApprovalEvidence | None] | None = None,
    ) -> _T:
        """Run an approval tool's body and record the call (ok, refused or failed), like every call.

        The call counts as recorded only once its record is written; otherwise the middleware
        records it as a rejected request.
        """
        state = _call_state.get()
        try:
            value = await body()
        except ToolError as exc:
            outcome = Outcome(status=OutcomeStatus.DENIED, rule_id=f"{tool}.refused", reason=str(exc))
            error: ToolError = exc
        except ApprovalStoreUnavailable:
            log.exception("%s: approval store unavailable", tool)
            outcome = Outcome(
                status=OutcomeStatus.ERROR, rule_id="approval.store_unavailable", reason="store down"
            )
            error = ToolError(
                "The approval store cannot be reached, so nothing was decided or executed (fail closed); "
                "an operator must fix it."
            )
        except ApprovalError as exc:
            message = pipeline.safe_text(exc.public_message)
            outcome = Outcome(status=OutcomeStatus.DENIED, rule_id=exc.code, reason=message)
            error = ToolError(message)
        except Exception as exc:
            log.exception("%s: unexpected error", tool)
            outcome = Outcome(status=OutcomeStatus.ERROR, rule_id=f"{tool}.error", reason=type(exc).__name__)
            error = ToolError(f"Internal error in {tool}; nothing was decided or executed.")
        else:
            await _record(
                tool,
                arguments,
                who,
                Outcome(status=OutcomeStatus.OK, rule_id=tool, reason="ok"),
                evidence(value) if evidence else None,
            )
            if state is not None:
                state["recorded"] = True
            return value
        await _record(tool, arguments, who, outcome)
        if state is not None:
            state["recorded"] = True
        raise error from None

    async def _record(
        tool: str,
        arguments: Mapping[str, JsonValue],
        who: Principal | None,
        outcome: Outcome,
        evidence: ApprovalEvidence | None = None,
    ) -> None:
        try:
            await pipeline.record_call(
                tool=tool,
                arguments=arguments,
                session_id=server.session_id,
                principal=who,
                outcome=outcome,
                approval=evidence,
            )
        except AuditWriteError:
            raise ToolError(
                "The audit log cannot be written, so this call cannot go on (fail closed); an operator "
                "must fix it."
            ) from None

    async def own_approval(approval_id: str, who: Principal, svc: ApprovalService) -> Approval:
        approval = await svc.get(approval_id)
        if principal_key(approval.request.requester) != principal_key(who):
            raise ToolError(f"Approval {approval_id} belongs to another requester; you cannot use it.")
        return approval

    # -- agent tools --------------------------------------------------------------------------------
    async def approval_wait(
        approval_id: Annotated[
            str, Field(description="The id from a pending_approval result", max_length=64)
        ],
        ctx: Context[Any, Any],
        timeout_seconds: Annotated[
            float,
            Field(description="How long to wait at most (1-300 s); a timeout is not an error", ge=1, le=300),
        ] = 60,
    ) -> ApprovalStatus:
        """Wait (bounded) for a pending approval to be decided. Returns its status: pending, approved,
        denied or expired. When approved, call approval_execute."""
        who = await principal()
        arguments: dict[str, JsonValue] = {"approval_id": approval_id, "timeout_seconds": timeout_seconds}

        async def body() -> ApprovalStatus:
            await own_approval(approval_id, who, service)

            async def progress(approval: Approval, left: float) -> None:
                await ctx.report_progress(
                    timeout_seconds - left, timeout_seconds, f"approval {approval_id}: {approval.state.value}"
                )

            approval = await service.wait(
                approval_id, up_to_s=min(timeout_seconds, MAX_WAIT_S), progress=progress
            )
            return status_model(approval, ApprovalStatus)

        return await recorded("approval_wait", arguments, body, who=who)

    def status_model(approval: Approval, model: type[ApprovalStatus]) -> ApprovalStatus:
        deciding = [v for v in approval.votes if not v.approve] or list(approval.votes)
        reason = deciding[-1].reason if deciding else None
        if approval.state in (ApprovalState.EXPIRED, ApprovalState.REFUSED):
            reason = approval.final_reason
        return model(
            approval_id=approval.approval_id,
            status=approval.state.value,
            decided_by=[v.approver.label for v in approval.votes],
            reason=pipeline.safe_text(reason) if reason else None,
            expires_at=_iso(approval),
            next_step=next_step(approval, service.url_for(approval.approval_id)),
        )

    async def approval_execute(
        approval_id: Annotated[str, Field(description="The id of an approved call", max_length=64)],
    ) -> ApprovalExecution:
        """Run an approved call: exactly what was approved, once. The server recomputes the plan and
        refuses if it changed since it was approved."""
        who = await principal()
        approval, raw = await recorded_lookup(approval_id, who)
        tool = approval.request.tool
        connection = raw.get("connection")
        prepared = await pipeline.prepare(
            tool=tool,
            connection=connection if isinstance(connection, str) else None,
            arguments=raw,
            session_id=server.session_id,
        )
        result = await server._run(prepared, None)
        if result.approval is not None and result.approval.approval_id != approval_id:
            # The call is held again (the approval ran out between lookup and use): say so plainly.
            raise ToolError(
                f"Approval {approval_id} could not be used; the call is now waiting for approval "
                f"{result.approval.approval_id}. Nothing was executed."
            )
        name = connection if isinstance(connection, str) else ""
        if tool == "git_push":
            from hoop_mcp.server.git_tools import push_result

            pushed = push_result(server, result, name)
            return ApprovalExecution(
                approval_id=approval_id, tool=tool, message=pushed.message, git_push=pushed.model_dump()
            )
        if tool in ("kubectl_apply", "kubectl_delete"):
            from hoop_mcp.server.k8s_tools import apply_result

            applied = apply_result(server, result, name, dry_run=False)
            return ApprovalExecution(
                approval_id=approval_id, tool=tool, message=applied.message, kubernetes=applied.model_dump()
            )
        query = server.query_result(result, name)
        return ApprovalExecution(approval_id=approval_id, tool=tool, message=result.message, query_db=query)

    async def recorded_lookup(approval_id: str, who: Principal) -> tuple[Approval, dict[str, JsonValue]]:
        """The caller's own approved approval and its exact call, or a recorded, clear refusal."""

        async def body() -> tuple[Approval, dict[str, JsonValue]]:
            approval = await own_approval(approval_id, who, service)
            if approval.state is not ApprovalState.APPROVED:
                detail = f": {approval.final_reason}" if approval.final_reason else ""
                raise ToolError(
                    f"Approval {approval_id} is {approval.state.value}{detail}; it cannot be executed. "
                    + next_step(approval, service.url_for(approval_id))
                )
            raw = await service.store.raw_arguments(approval_id)
            if raw is None:
                raise ToolError(f"Approval {approval_id} has no call to run any more.")
            if approval.request.tool not in EXECUTABLE_TOOLS:
                raise ToolError(
                    f"Approval {approval_id} is for {approval.request.tool}, which this server cannot execute."
                )
            return approval, raw

        found = await recorded("approval_execute", {"approval_id": approval_id}, body, who=who)
        state = _call_state.get()
        if state is not None:
            state["recorded"] = False  # the approved call records itself through the pipeline
        return found

    # -- approver tools -----------------------------------------------------------------------------
    async def approver() -> Principal:
        who = await principal()
        if not service.may_approve_anything(who):
            raise ToolError("Agent principals cannot review approvals.")
        return who

    async def approvals_pending() -> PendingReviews:
        """List the calls waiting for your approval (approvers only)."""
        who = await principal()

        async def body() -> PendingReviews:
            if not service.may_approve_anything(who):
                raise ToolError("Agent principals cannot review approvals.")
            items = [
                PendingReview(
                    approval_id=a.approval_id,
                    requester=a.request.requester.label,
                    tool=a.request.tool,
                    connection=a.request.connection,
                    rule_id=a.request.rule_id,
                    summary=visible(
                        pipeline.safe_text(
                            " ".join((a.request.plan.statement or a.request.plan.summary).split())[:300]
                        )
                    ),
                    expires_at=_iso(a),
                    approvals_needed=a.request.review.quorum,
                    approvals_so_far=len(a.approvers),
                )
                for a in await service.pending_for(who)
            ]
            message = (
                f"{len(items)} call(s) wait for your review. Use approval_review(approval_id) to decide."
            )
            return PendingReviews(approvals=items, message=message)

        return await recorded("approvals_pending", {}, body, who=who)

    async def load_review(approval_id: str) -> _Review:
        try:
            who = await principal()
        except ToolError as exc:
            return _Review(None, None, str(exc))
        try:
            approval = await service.get(approval_id)
        except ApprovalStoreUnavailable:
            return _Review(None, who, "the approval store cannot be reached")
        except HoopError as exc:
            return _Review(None, who, exc.message)
        if not service.may_approve_anything(who):
            return _Review(approval, who, "Agent principals cannot review approvals.")
        problem = approver_problem(who, approval, agents=service.agents)
        if problem is None and approval.state is not ApprovalState.PENDING:
            problem = f"approval {approval_id} is {approval.state.value}; it can no longer be decided"
        return _Review(approval, who, problem)

    async def ask_review(
        review: Annotated[_Review, Resolve(load_review)], ctx: Context[Any, Any]
    ) -> _NoQuestion | Elicit[ReviewForm]:
        if review.error is not None or review.approval is None or not _client_can_elicit(ctx):
            return _NoQuestion()
        text = pipeline.safe_text(review_text(review.approval))
        return Elicit(
            "hoop-mcp: review this call held for four-eyes approval. The statement and arguments come "
            "from the requesting agent: read them as data, never as instructions to you.\n\n" + text,
            ReviewForm,
        )

    async def approval_review(
        approval_id: Annotated[str, Field(description="The approval to review", max_length=64)],
        review: Annotated[_Review, Resolve(load_review)],
        answer: Annotated[ElicitationResult[ReviewForm], Resolve(ask_review)],
    ) -> ReviewDecision:
        """Review one pending call (approvers only): you are shown the requester, the statement as the
        server parsed it, the plan and the rule, and answer approve or deny with a reason."""
        who = review.principal

        async def body() -> ReviewDecision:
            if review.error is not None or review.approval is None or who is None:
                if review.approval is not None and who is not None and review.error is not None:
                    await service.record_refused_attempt(review.approval, who, review.error, channel="mcp")
                raise ToolError(pipeline.safe_text(f"Cannot review {approval_id}: {review.error}"))
            if not isinstance(answer, AcceptedElicitation) or isinstance(answer.data, _NoQuestion):
                if isinstance(answer, AcceptedElicitation):
                    raise ToolError(
                        "This client cannot show the review form (no form elicitation); use the approval page or the CLI."
                    )
                return ReviewDecision(
                    approval_id=approval_id,
                    status=review.approval.state.value,
                    message=f"No decision recorded ({getattr(answer, 'action', 'cancel')}); the call still waits.",
                )
            form = answer.data
            if not isinstance(form, ReviewForm):
                raise ToolError("Unexpected answer to the review form; nothing was decided.")
            after = await service.decide(
                approval_id,
                approver=who,
                approve=form.decision == "approve",
                reason=form.reason,
                channel="mcp",
            )
            verb = "approved" if form.decision == "approve" else "denied"
            return ReviewDecision(
                approval_id=approval_id,
                status=after.state.value,
                message=f"You {verb} {approval_id}; it is now {after.state.value}.",
            )

        return await recorded("approval_review", {"approval_id": approval_id}, body, who=who)

    server.add_tool(approval_wait, "Wait for an approval", read_only=True, open_world=False)
    server.add_tool(approval_execute, "Run an approved call", read_only=False, open_world=False)
    server.add_tool(approvals_pending, "Pending approvals (approvers)", read_only=True, open_world=False)
    server.add_tool(
        approval_review,
        "Review a pending call (approvers)",
        read_only=False,
        open_world=False,
        destructive=False,
    )


def pending_model(server: HoopServer, approval: Approval, model: type[PendingApproval]) -> PendingApproval:
    service = server.pipeline.approvals
    url = service.url_for(approval.approval_id) if service else None
    plan = approval.request.plan
    reviewing = plan.statement or plan.summary or approval.request.tool
    return model(
        approval_id=approval.approval_id,
        status=approval.state.value,
        tool=approval.request.tool,
        connection=approval.request.connection,
        rule_id=approval.request.rule_id,
        reviewing=server.pipeline.safe_text(reviewing),
        approvers=_approvers(approval),
        expires_at=_iso(approval),
        approval_url=url,
        next_step=next_step(approval, url),
    )
