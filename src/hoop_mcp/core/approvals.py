"""Four-eyes approvals: a call whose verdict is ``review`` waits until a different, authenticated
human approves it through a channel the agent cannot answer (CLI, web page, an approver's MCP
client), or until a signed grant pre-authorizes it (headless CI).

This module holds the values and the state machine (pure functions), the store protocol, and
:class:`ApprovalService`, which every channel uses. It knows nothing of MCP, HTTP or SQLite.

States::

    pending --(quorum of distinct eligible humans approve)--> approved --(used once)--> executed
       |  \\--(any eligible human denies: final)--> denied         |
       |                                                          +--(plan changed)--> refused
       +--(ttl passes)--> expired            approved --(use_by passes)--> expired
       +--(the call changed or the rule no longer asks for review)--> refused

Binding: an approval belongs to one requester (issuer + subject), one tool and connection, the
digest of the exact arguments, and the digest of the server-computed plan. Executing recomputes the
plan and refuses if it changed (or if the row estimate grew past the rule's tolerance).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Literal, Protocol

import anyio
import anyio.abc
from pydantic import Field, JsonValue

from hoop_mcp.core.audit import AuditLog, canonical_json
from hoop_mcp.core.errors import ApprovalError, AuditWriteError
from hoop_mcp.core.models import (
    ApprovalEvidence,
    AuditEvent,
    Decision,
    FrozenModel,
    Plan,
    Principal,
    ReviewSettings,
    Verdict,
    utcnow,
)

log = logging.getLogger(__name__)

#: Default tolerance for clocks of different hosts deciding on the same approval.
DEFAULT_CLOCK_SKEW_S = 30
#: Longest approval reason kept.
MAX_REASON = 1000
#: Rows always tolerated on top of the estimate's growth fraction.
ESTIMATE_SLACK_ROWS = 10
#: Live approval requests one requester may have at once (approvers must not be flooded).
MAX_LIVE_PER_REQUESTER = 20
#: Most approvals read when listing or sweeping.
SCAN_LIMIT = 1000
#: How often a running service ends approvals whose deadline passed (and drops their raw arguments).
SWEEP_INTERVAL_S = 60.0


class ApprovalState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    EXECUTED = "executed"
    #: Approved, but the plan had changed when it was used (or policy no longer asks for it).
    REFUSED = "refused"


TERMINAL_STATES = frozenset(
    {ApprovalState.DENIED, ApprovalState.EXPIRED, ApprovalState.EXECUTED, ApprovalState.REFUSED}
)
LIVE_STATES = frozenset({ApprovalState.PENDING, ApprovalState.APPROVED})

Channel = Literal["cli", "web", "mcp", "grant", "api"]


class ApprovalNotFound(ApprovalError):
    code = "approval.not_found"


class ApprovalConflict(ApprovalError):
    """The transition is not possible in the approval's current state (already decided, expired, ...)."""

    code = "approval.conflict"


class ApproverNotAllowed(ApprovalError):
    """This principal may not decide on this approval (the requester, an agent, not an approver)."""

    code = "approval.not_allowed"


class ApprovalStoreUnavailable(ApprovalError):
    """The approval store cannot be read or written: every call needing review is denied."""

    code = "approval.store_unavailable"


class AgentSettings(FrozenModel):
    """Which principals are agents. Agents (and unsafe static principals) can never approve."""

    subjects: tuple[str, ...] = Field(default=(), description="Glob patterns of agent subjects.")
    groups: tuple[str, ...] = Field(default=(), description="Glob patterns of agent groups.")

    def is_agent(self, principal: Principal) -> bool:
        if principal.unsafe_static:
            return True
        if any(fnmatchcase(principal.subject, p) for p in self.subjects):
            return True
        return any(fnmatchcase(g, p) for g in principal.groups for p in self.groups)


class Vote(FrozenModel):
    approver: Principal
    approve: bool
    reason: str | None = None
    channel: Channel
    at: datetime


class ApprovalRequest(FrozenModel):
    """The immutable part: what is being reviewed. Holds masked arguments and the masked plan only."""

    approval_id: str
    #: The call that asked (its intent/outcome records carry the same id).
    call_id: str
    session_id: str
    requester: Principal
    tool: str
    connection: str | None
    arguments: dict[str, JsonValue]
    arguments_digest: str
    #: The plan as people see it (statement rendered, literals masked).
    plan: Plan
    #: Digest of the server-computed plan (raw, estimate excluded) the approval is bound to.
    plan_digest: str
    #: Backend row estimate at request time (compared again at execution).
    estimate_rows: float | None = None
    rule_id: str
    rule_reason: str
    #: Digest of the deciding rule when requested (see ``Decision.rule_digest``).
    rule_digest: str | None = None
    review: ReviewSettings
    binding: str
    created_at: datetime
    expires_at: datetime


class Approval(FrozenModel):
    request: ApprovalRequest
    state: ApprovalState = ApprovalState.PENDING
    votes: tuple[Vote, ...] = ()
    decided_at: datetime | None = None
    #: An approved call must be used before this time.
    use_by: datetime | None = None
    executed_call_id: str | None = None
    #: Why it ended as refused / expired.
    final_reason: str | None = None
    #: Bumped on every transition (stores use it for compare-and-set).
    version: int = 0

    @property
    def approval_id(self) -> str:
        return self.request.approval_id

    @property
    def approvers(self) -> tuple[Principal, ...]:
        return tuple(v.approver for v in self.votes if v.approve)

    @property
    def deadline(self) -> datetime:
        """When the current state runs out (request expiry while pending; use_by once approved)."""
        if self.state is ApprovalState.APPROVED and self.use_by is not None:
            return self.use_by
        return self.request.expires_at


def principal_key(principal: Principal) -> str:
    """One human, whatever groups they are in: issuer + subject."""
    return f"{principal.issuer}|{principal.subject}"


def same_person(a: Principal, b: Principal) -> bool:
    """Conservatively, whether two principals may be one human: the same issuer and subject, or the
    same subject or e-mail address under different issuers (agents and approvers may be verified by
    different issuers, and a person must not approve their own call by switching issuer)."""
    if principal_key(a) == principal_key(b) or a.subject == b.subject:
        return True
    return a.email is not None and b.email is not None and a.email.casefold() == b.email.casefold()


def binding_of(*, requester: Principal, tool: str, connection: str | None, arguments_digest: str) -> str:
    data = {
        "requester": principal_key(requester),
        "tool": tool,
        "connection": connection,
        "arguments": arguments_digest,
    }
    return "sha256:" + _sha256(canonical_json(data))


def plan_digest(plan: Plan) -> str:
    """What an approval is bound to: everything the plan says except the (moving) estimate."""
    data = plan.model_dump(mode="json", exclude={"estimate", "summary"})
    return "sha256:" + _sha256(canonical_json(data))


def estimate_rows(plan: Plan) -> float | None:
    rows = (plan.estimate or {}).get("rows")
    return float(rows) if isinstance(rows, int | float) and not isinstance(rows, bool) else None


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def new_approval_id() -> str:
    return "apr_" + secrets.token_urlsafe(12)


# ------------------------------------------------------------------------------------- state machine


def approver_problem(principal: Principal, approval: Approval, *, agents: AgentSettings) -> str | None:
    """Why ``principal`` may not decide on ``approval`` (``None`` when they may)."""
    request = approval.request
    if same_person(principal, request.requester):
        return "the requester can never approve their own call"
    if agents.is_agent(principal):
        return "agent principals can never approve"
    review = request.review
    if any(fnmatchcase(principal.subject, p) for p in review.approver_subjects):
        return None
    if any(fnmatchcase(g, p) for g in principal.groups for p in review.approver_groups):
        return None
    wanted = ", ".join([*review.approver_groups, *review.approver_subjects])
    return f"you are not an approver for rule {request.rule_id!r} (approvers: {wanted})"


def expire_if_due(approval: Approval, *, now: datetime, skew: timedelta) -> Approval:
    """The approval as of ``now``: a live one past its deadline (plus the clock skew bound) expires."""
    if approval.state in LIVE_STATES and now > approval.deadline + skew:
        what = (
            "nobody decided in time" if approval.state is ApprovalState.PENDING else "it was not used in time"
        )
        return approval.model_copy(
            update={
                "state": ApprovalState.EXPIRED,
                "final_reason": f"expired: {what}",
                "version": approval.version + 1,
            }
        )
    return approval


def apply_vote(
    approval: Approval, vote: Vote, *, agents: AgentSettings, now: datetime, skew: timedelta
) -> Approval:
    """Record one decision. Deny is final; approve counts distinct humans towards the quorum."""
    current = expire_if_due(approval, now=now, skew=skew)
    if current.state is not ApprovalState.PENDING:
        raise ApprovalConflict(
            f"approval {approval.approval_id} is {current.state.value}; it can no longer be decided",
            details={"state": current.state.value},
        )
    problem = approver_problem(vote.approver, current, agents=agents)
    if problem is not None:
        raise ApproverNotAllowed(problem, details={"approval_id": approval.approval_id})
    reason = (vote.reason or "").strip() or None
    if reason is not None and len(reason) > MAX_REASON:
        raise ApprovalError(f"the reason is longer than {MAX_REASON} characters")
    if reason is None and (current.request.review.require_reason or not vote.approve):
        raise ApprovalError("a reason is required for this decision (--reason / the reason field)")
    if any(same_person(v.approver, vote.approver) for v in current.votes):
        raise ApprovalConflict("you already decided on this approval; the quorum needs other people")
    vote = vote.model_copy(update={"reason": reason})
    votes = (*current.votes, vote)
    update: dict[str, object] = {"votes": votes, "version": current.version + 1}
    if not vote.approve:
        update.update(state=ApprovalState.DENIED, decided_at=now, final_reason=f"denied: {reason}")
    elif len({principal_key(v.approver) for v in votes if v.approve}) >= current.request.review.quorum:
        ttl = timedelta(seconds=current.request.review.ttl_seconds)
        update.update(state=ApprovalState.APPROVED, decided_at=now, use_by=now + ttl)
    return current.model_copy(update=update)


def consume(approval: Approval, *, call_id: str, now: datetime, skew: timedelta) -> Approval:
    """Use an approved approval once (approved -> executed)."""
    current = expire_if_due(approval, now=now, skew=skew)
    if current.state is not ApprovalState.APPROVED:
        raise ApprovalConflict(
            f"approval {approval.approval_id} is {current.state.value}, not approved; it cannot be used",
            details={"state": current.state.value},
        )
    return current.model_copy(
        update={"state": ApprovalState.EXECUTED, "executed_call_id": call_id, "version": current.version + 1}
    )


def refuse(approval: Approval, *, reason: str) -> Approval:
    if approval.state not in LIVE_STATES:
        raise ApprovalConflict(f"approval {approval.approval_id} is already {approval.state.value}")
    return approval.model_copy(
        update={"state": ApprovalState.REFUSED, "final_reason": reason, "version": approval.version + 1}
    )


def plan_change(
    approval: Approval, *, plan: Plan, rule_id: str, rule_digest: str | None = None
) -> str | None:
    """Why the recomputed plan no longer matches what was approved (``None`` when it does)."""
    request = approval.request
    if rule_id != request.rule_id:
        return f"policy changed: the call is now decided by rule {rule_id!r}, not {request.rule_id!r}"
    if rule_digest != request.rule_digest:
        return f"policy changed: rule {rule_id!r} was edited since the approval was requested"
    if plan_digest(plan) != request.plan_digest:
        return "the plan changed since it was approved (the server's reading of the call differs)"
    before, after = request.estimate_rows, estimate_rows(plan)
    if before is not None and after is not None:
        limit = before * (1 + request.review.estimate_tolerance) + ESTIMATE_SLACK_ROWS
        if after > limit:
            return (
                f"the row estimate grew from about {before:.0f} to {after:.0f} since it was approved "
                f"(tolerance {request.review.estimate_tolerance:.0%} + {ESTIMATE_SLACK_ROWS} rows)"
            )
    return None


# --------------------------------------------------------------------------------------------- store


class ApprovalStore(Protocol):
    """Where approvals live. SQLite beside the audit log now; PostgreSQL for many replicas later.

    Every method raises :class:`ApprovalStoreUnavailable` when the store cannot be used.
    """

    async def create(self, approval: Approval, *, arguments: Mapping[str, JsonValue]) -> None:
        """Store a new approval with the raw call arguments (kept only while it is live)."""
        ...

    async def get(self, approval_id: str) -> Approval | None: ...

    async def raw_arguments(self, approval_id: str) -> dict[str, JsonValue] | None:
        """The exact arguments of a live approval's call (``None`` once it ended)."""
        ...

    async def find_live(self, binding: str) -> list[Approval]:
        """Pending or approved approvals with this binding, oldest first."""
        ...

    async def list(
        self, *, states: Collection[ApprovalState] | None = None, limit: int = 100
    ) -> list[Approval]:
        """Newest first."""
        ...

    async def update(
        self, approval_id: str, change: Callable[[Approval], Approval]
    ) -> tuple[Approval, Approval]:
        """Atomically apply ``change`` to the stored approval; returns (before, after).

        ``change`` runs inside the store's write transaction, so concurrent deciders are serialized:
        the second one sees the first one's result. If ``change`` raises, nothing is written and the
        exception propagates. Raw arguments are deleted when ``after`` is terminal. Waiters are
        woken after the commit. Raises :class:`ApprovalNotFound`.
        """
        ...

    async def wait(self, approval_id: str, *, up_to_s: float) -> None:
        """Return when this approval may have changed, or after ``up_to_s`` seconds (not an error)."""
        ...

    async def use_grant(self, grant_id: str, *, max_uses: int, call_id: str) -> int:
        """Count one use of a grant atomically; returns the use number (1-based).

        Raises :class:`ApprovalConflict` when the grant is used up or revoked.
        """
        ...

    async def revoke_grant(self, grant_id: str, *, by: str, reason: str) -> None: ...

    async def grant_uses(self, grant_id: str) -> tuple[int, bool]:
        """(uses so far, revoked)."""
        ...

    async def close(self) -> None: ...


# ------------------------------------------------------------------------------------------- service


class Notifier(Protocol):
    """Tells approvers about a new pending approval (webhooks). Never raises; returns failures."""

    async def notify(self, approval: Approval, *, url: str | None) -> list[str]:
        """Deliver; return one description per failed destination (after retries)."""
        ...


@dataclass(frozen=True, slots=True)
class Admitted:
    """The call may run: an approval was consumed, or a grant use counted."""

    evidence: ApprovalEvidence


@dataclass(frozen=True, slots=True)
class Pending:
    approval: Approval
    created: bool


@dataclass(frozen=True, slots=True)
class Refused:
    decision: Decision
    evidence: ApprovalEvidence | None = None


Admission = Admitted | Pending | Refused


@dataclass(frozen=True, slots=True)
class ReviewCall:
    """What the pipeline hands the approval engine for one call whose verdict is ``review``."""

    call_id: str
    session_id: str
    principal: Principal
    tool: str
    connection: str | None
    arguments: Mapping[str, JsonValue]
    arguments_masked: dict[str, JsonValue]
    arguments_digest: str
    plan: Plan
    plan_masked: Plan
    decision: Decision


class GrantChecker(Protocol):
    """Signed, expiring pre-authorizations for headless CI (see ``core/grants.py``)."""

    async def admit(self, call: ReviewCall, store: ApprovalStore) -> ApprovalEvidence | None:
        """Evidence of the grant use that admits ``call``, or ``None`` when no grant covers it."""
        ...


class ApprovalService:
    """The approval engine every channel uses: request, decide, wait, admit (consume)."""

    def __init__(
        self,
        *,
        store: ApprovalStore,
        audit: AuditLog,
        agents: AgentSettings,
        page_url: str | None = None,
        notifier: Notifier | None = None,
        grants: GrantChecker | None = None,
        clock: Callable[[], datetime] = utcnow,
        clock_skew_seconds: float = DEFAULT_CLOCK_SKEW_S,
        record_text: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.store = store
        self.audit = audit
        self.agents = agents
        self.page_url = page_url.rstrip("/") if page_url else None
        self.notifier = notifier
        self.grants = grants
        self.clock = clock
        self.skew = timedelta(seconds=clock_skew_seconds)
        #: Masks free text (reasons) before it is recorded or shown.
        self.record_text = record_text
        self._task_group: anyio.abc.TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ApprovalService]:
        """Run background work while the server runs: notifications, and a sweep that ends expired
        approvals every minute. Waits for notifications under way on exit."""
        sweeper = anyio.CancelScope()

        async def sweep() -> None:
            with sweeper:
                await self._sweep_forever()

        async with anyio.create_task_group() as tg:
            self._task_group = tg
            tg.start_soon(sweep)
            try:
                yield self
            finally:
                self._task_group = None
                sweeper.cancel()  # notifications under way still finish

    def start_notify(self, approval: Approval) -> None:
        """Notify approvers about a new pending approval without delaying the agent's answer.

        Outside :meth:`running` (no background task group) nothing is sent; the approval is still
        listed by every channel.
        """
        if self.notifier is None:
            return
        if self._task_group is None:
            log.warning("approval %s: notifications are not running; none sent", approval.approval_id)
            return
        self._task_group.start_soon(self.notify_new, approval)

    def url_for(self, approval_id: str) -> str | None:
        return f"{self.page_url}/approvals/{approval_id}" if self.page_url else None

    # -- requester side ---------------------------------------------------------------------------
    async def admit(self, call: ReviewCall) -> Admission:
        """Decide whether a ``review`` call may run now. Fails closed: store trouble -> Refused."""
        try:
            return await self._admit(call)
        except ApprovalStoreUnavailable as exc:
            log.error("call %s: approval store unavailable: %s", call.call_id, exc.message)
            return Refused(
                Decision(
                    verdict=Verdict.DENY,
                    rule_id="approval.store_unavailable",
                    reason="the approval store cannot be reached, so a call that needs review is denied "
                    "(fail closed); an operator must fix it",
                )
            )

    async def _admit(self, call: ReviewCall, *, _retry: bool = False) -> Admission:
        review = call.decision.review
        if review is None:  # a review verdict always carries its settings; fail closed regardless
            return Refused(_deny("approval.misconfigured", "the deciding rule has no review settings"))
        if self.grants is not None:
            evidence = await self.grants.admit(call, self.store)
            if evidence is not None:
                return Admitted(evidence)
        binding = binding_of(
            requester=call.principal,
            tool=call.tool,
            connection=call.connection,
            arguments_digest=call.arguments_digest,
        )
        now = self.clock()
        pending: Approval | None = None
        for found in await self.store.find_live(binding):
            current = await self._settle(found)
            if current.state is ApprovalState.APPROVED:
                try:
                    return await self._use(current, call)
                except ApprovalConflict:
                    # Another identical call used (or voided) it first: look again, and ask anew.
                    log.info("call %s: approval %s was used concurrently", call.call_id, current.approval_id)
                    continue
            if current.state is ApprovalState.PENDING and pending is None:
                pending = current
        if pending is not None:
            return Pending(pending, created=False)
        live = [
            a
            for a in await self.store.list(states=LIVE_STATES, limit=SCAN_LIMIT)
            if principal_key(a.request.requester) == principal_key(call.principal)
        ]
        if len(live) >= MAX_LIVE_PER_REQUESTER:
            return Refused(
                _deny(
                    "approval.too_many_pending",
                    f"you already have {len(live)} calls waiting for approval (at most "
                    f"{MAX_LIVE_PER_REQUESTER}); wait for decisions before asking for more",
                )
            )
        request = ApprovalRequest(
            approval_id=new_approval_id(),
            call_id=call.call_id,
            session_id=call.session_id,
            requester=call.principal,
            tool=call.tool,
            connection=call.connection,
            arguments=call.arguments_masked,
            arguments_digest=call.arguments_digest,
            plan=call.plan_masked,
            plan_digest=plan_digest(call.plan),
            estimate_rows=estimate_rows(call.plan),
            rule_id=call.decision.rule_id,
            rule_reason=call.decision.reason,
            rule_digest=call.decision.rule_digest,
            review=review,
            binding=binding,
            created_at=now,
            expires_at=now + timedelta(seconds=review.ttl_seconds),
        )
        approval = Approval(request=request)
        try:
            await self.store.create(approval, arguments=call.arguments)
        except ApprovalConflict as exc:
            if not exc.details.get("binding_taken") or _retry:
                raise
            # An identical call created its request a moment ago: share it.
            return await self._admit(call, _retry=True)
        await self._record(approval, event="requested", actor=call.principal)
        return Pending(approval, created=True)

    async def notify_new(self, approval: Approval) -> None:
        """Send notifications for a new pending approval; failures are recorded, never raised."""
        if self.notifier is None:
            return
        try:
            failures = await self.notifier.notify(approval, url=self.url_for(approval.approval_id))
        except Exception:
            log.exception("approval %s: notifier failed", approval.approval_id)
            failures = ["notifier crashed (see the server log)"]
        event: Literal["notified", "notify_failed"] = "notify_failed" if failures else "notified"
        try:
            await self._record(approval, event=event, actor=None, reason="; ".join(failures) or None)
        except Exception:
            log.exception("approval %s: cannot record the notification", approval.approval_id)

    async def _use(self, approval: Approval, call: ReviewCall) -> Admission:
        problem = plan_change(
            approval, plan=call.plan, rule_id=call.decision.rule_id, rule_digest=call.decision.rule_digest
        )
        now = self.clock()
        if problem is not None:
            _, after = await self.store.update(approval.approval_id, lambda a: refuse(a, reason=problem))
            evidence = await self._record(after, event="refused", actor=call.principal, reason=problem)
            return Refused(
                _deny(
                    "approval.plan_changed",
                    f"{problem}; approval {approval.approval_id} is void, so nothing was executed. "
                    "Call the tool again to request a new approval",
                ),
                evidence,
            )
        _, after = await self.store.update(
            approval.approval_id, lambda a: consume(a, call_id=call.call_id, now=now, skew=self.skew)
        )
        evidence = self.evidence(after, event="executed", actor=call.principal)
        return Admitted(evidence)

    async def _settle(self, approval: Approval) -> Approval:
        """Write a lazily observed expiry (with its audit record); return the current approval."""
        now = self.clock()
        if expire_if_due(approval, now=now, skew=self.skew).state is approval.state:
            return approval
        before, after = await self.store.update(
            approval.approval_id, lambda a: expire_if_due(a, now=now, skew=self.skew)
        )
        if before.state is not after.state:
            await self._record(after, event="expired", actor=None, reason=after.final_reason)
        return after

    async def get(self, approval_id: str) -> Approval:
        approval = await self.store.get(approval_id)
        if approval is None:
            raise ApprovalNotFound(f"no approval {approval_id!r}")
        return await self._settle(approval)

    async def wait(
        self,
        approval_id: str,
        *,
        up_to_s: float,
        progress: Callable[[Approval, float], Awaitable[None]] | None = None,
    ) -> Approval:
        """Wait until the approval leaves ``pending`` (or ``up_to_s`` passes); returns it as it is."""
        approval = await self.get(approval_id)
        deadline = anyio.current_time() + max(0.0, up_to_s)
        while approval.state is ApprovalState.PENDING:
            left = deadline - anyio.current_time()
            if left <= 0:
                break
            until_expiry = (approval.deadline + self.skew - self.clock()).total_seconds()
            await self.store.wait(approval_id, up_to_s=max(0.05, min(left, until_expiry + 0.05, 15.0)))
            approval = await self.get(approval_id)
            if progress is not None:
                await progress(approval, max(0.0, deadline - anyio.current_time()))
        return approval

    # -- approver side ----------------------------------------------------------------------------
    async def decide(
        self,
        approval_id: str,
        *,
        approver: Principal,
        approve: bool,
        reason: str | None,
        channel: Channel,
    ) -> Approval:
        """Record one approver's decision. Raises ApprovalError subclasses with clear messages."""
        now = self.clock()
        reason = self.record_text(reason) if reason else reason
        vote = Vote(approver=approver, approve=approve, reason=reason, channel=channel, at=now)
        existing = await self.store.get(approval_id)
        if existing is None:
            raise ApprovalNotFound(f"no approval {approval_id!r}")
        # Checked before the write so a refused attempt is recorded without touching the approval.
        try:
            apply_vote(existing, vote, agents=self.agents, now=now, skew=self.skew)
        except ApprovalError as exc:
            await self._record_refused_vote(existing, vote, exc)
            raise
        try:
            _, after = await self.store.update(
                approval_id, lambda a: apply_vote(a, vote, agents=self.agents, now=now, skew=self.skew)
            )
        except ApprovalError as exc:  # lost a race: the state changed in between
            if not isinstance(exc, ApprovalStoreUnavailable):
                await self._record_refused_vote(existing, vote, exc)
            raise
        if after.state is ApprovalState.APPROVED:
            event: _Event = "approved"
        elif after.state is ApprovalState.DENIED:
            event = "denied"
        else:
            event = "voted"
        try:
            await self._record(after, event=event, actor=approver, reason=vote.reason, channel=channel)
        except AuditWriteError:
            # No record, no approval: void it so an unrecorded decision can never admit a call.
            log.error("approval %s: the decision could not be recorded; voiding it", approval_id)
            with anyio.CancelScope(shield=True):
                try:
                    await self.store.update(
                        approval_id,
                        lambda a: (
                            refuse(a, reason="a decision could not be recorded in the audit log")
                            if a.state in LIVE_STATES
                            else a
                        ),
                    )
                except ApprovalError:
                    log.exception("approval %s: could not void it either", approval_id)
            raise
        return after

    async def record_refused_attempt(
        self, approval: Approval, who: Principal, problem: str, *, channel: Channel
    ) -> None:
        """Record that someone tried to decide and was refused before any vote was formed."""
        try:
            await self._record(approval, event="vote_refused", actor=who, reason=problem, channel=channel)
        except Exception:
            log.exception("approval %s: cannot record a refused attempt", approval.approval_id)

    async def _record_refused_vote(self, approval: Approval, vote: Vote, exc: ApprovalError) -> None:
        try:
            await self._record(
                approval,
                event="vote_refused",
                actor=vote.approver,
                reason=f"{'approve' if vote.approve else 'deny'} refused: {exc.message}",
                channel=vote.channel,
            )
        except Exception:
            log.exception("approval %s: cannot record a refused decision", approval.approval_id)

    async def pending_for(self, approver: Principal, *, limit: int = 100) -> list[Approval]:
        """Pending approvals ``approver`` may decide on (newest first, at most ``limit``)."""
        out = []
        for approval in await self.store.list(states=[ApprovalState.PENDING], limit=SCAN_LIMIT):
            current = await self._settle(approval)
            if current.state is ApprovalState.PENDING and (
                approver_problem(approver, current, agents=self.agents) is None
            ):
                out.append(current)
                if len(out) >= limit:
                    break
        return out

    async def sweep(self) -> int:
        """End every live approval whose deadline passed (recording it and dropping its raw
        arguments); returns how many ended. Runs at startup and then every minute."""
        ended = 0
        for approval in await self.store.list(states=LIVE_STATES, limit=SCAN_LIMIT):
            if (await self._settle(approval)).state is ApprovalState.EXPIRED:
                ended += 1
        return ended

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("sweeping expired approvals failed; will retry")
            await anyio.sleep(SWEEP_INTERVAL_S)

    def may_approve_anything(self, principal: Principal) -> bool:
        """True unless this principal can never approve (an agent or an unsafe static principal)."""
        return not self.agents.is_agent(principal)

    # -- evidence ---------------------------------------------------------------------------------
    def evidence(
        self,
        approval: Approval,
        *,
        event: _Event,
        actor: Principal | None,
        reason: str | None = None,
        channel: Channel | None = None,
    ) -> ApprovalEvidence:
        return ApprovalEvidence(
            approval_id=approval.approval_id,
            event=event,
            state=approval.state.value,
            requester=approval.request.requester,
            actor=actor,
            approvers=approval.approvers,
            quorum=approval.request.review.quorum,
            reason=reason,
            channel=channel,
            rule_id=approval.request.rule_id,
            plan_digest=approval.request.plan_digest,
            expires_at=approval.deadline,
        )

    async def _record(
        self,
        approval: Approval,
        *,
        event: _Event,
        actor: Principal | None,
        reason: str | None = None,
        channel: Channel | None = None,
    ) -> ApprovalEvidence:
        evidence = self.evidence(approval, event=event, actor=actor, reason=reason, channel=channel)
        request = approval.request
        record = AuditEvent(
            kind="approval",
            call_id=request.call_id,
            session_id=request.session_id,
            principal=actor,
            tool=request.tool,
            connection=request.connection,
            arguments=request.arguments,
            arguments_digest=request.arguments_digest,
            plan=request.plan if event == "requested" else None,
            approval=evidence,
        )
        with anyio.CancelScope(shield=True):
            await self.audit.append(record)
        return evidence


_Event = Literal[
    "requested",
    "notified",
    "notify_failed",
    "voted",
    "vote_refused",
    "approved",
    "denied",
    "expired",
    "executed",
    "refused",
    "grant_used",
]


def _deny(rule_id: str, reason: str) -> Decision:
    return Decision(verdict=Verdict.DENY, rule_id=rule_id, reason=reason)


# ------------------------------------------------------------------------------------------- display


def review_lines(approval: Approval) -> list[tuple[str, str]]:
    """What an approver sees, as (label, value) pairs; every channel renders these."""
    request = approval.request
    plan = request.plan
    rows: list[tuple[str, str]] = [
        ("Approval", request.approval_id),
        ("State", approval.state.value),
        ("Requested by", request.requester.label),
        ("Requester groups", ", ".join(request.requester.groups) or "(none)"),
        ("Tool", request.tool),
        ("Connection", request.connection or "(none)"),
        ("Rule", f"{request.rule_id}: {request.rule_reason}"),
        ("Effect", f"{plan.effect} ({plan.command})" if plan.command else plan.effect),
    ]
    if plan.refs:
        rows.append(("Writes refs", ", ".join(plan.refs)))
    if plan.objects:
        rows.append(("Objects", ", ".join(plan.objects)))
    if plan.relations_written:
        rows.append(("Writes", ", ".join(plan.relations_written)))
    if plan.relations_read:
        rows.append(("Reads", ", ".join(plan.relations_read)))
    if plan.flags:
        rows.append(("Flags", ", ".join(plan.flags)))
    if plan.refs or plan.objects:
        pass  # a push's plan (range, commits, files) or a dry-run diff is its statement
    elif plan.estimate and "rows" in plan.estimate:
        rows.append(
            (
                "Estimate",
                f"about {plan.estimate.get('rows')} row(s), cost {plan.estimate.get('total_cost')}",
            )
        )
    else:
        rows.append(("Estimate", "not available"))
    if plan.summary:
        rows.append(("Plan", plan.summary))
    rows.append(("Statement", plan.statement or "(none)"))
    rows.append(("Arguments digest", request.arguments_digest))
    rows.append(("Plan digest", request.plan_digest))
    rows.append(("Requested at", request.created_at.isoformat(timespec="seconds")))
    rows.append(("Expires at", approval.deadline.isoformat(timespec="seconds")))
    review = request.review
    who = ", ".join([*(f"group {g}" for g in review.approver_groups), *review.approver_subjects])
    rows.append(("Approvers", f"{who}; {review.quorum} distinct approval(s) needed"))
    for vote in approval.votes:
        verb = "approved" if vote.approve else "denied"
        rows.append(
            (
                "Decision",
                f"{verb} by {vote.approver.label} via {vote.channel}: {vote.reason or '(no reason)'}",
            )
        )
    if approval.final_reason:
        rows.append(("Ended", approval.final_reason))
    return rows


def review_text(approval: Approval) -> str:
    """Plain text for the CLI and the approver's elicitation prompt (control characters escaped)."""
    from hoop_mcp.core.approval import visible

    out = []
    for label, value in review_lines(approval):
        if label == "Statement":
            out.append("Statement (as the server parsed it; values masked):")
            out.extend("    " + visible(line) for line in value.splitlines() or [""])
        else:
            out.append(f"{label}: {visible(value)}")
    return "\n".join(out)


def summarize(approvals: Sequence[Approval]) -> list[str]:
    """One line per approval for listings."""
    from hoop_mcp.core.approval import visible

    lines = []
    for a in approvals:
        plan = a.request.plan
        what = " ".join((plan.statement or plan.summary or a.request.tool).split())
        if len(what) > 80:
            what = what[:77] + "..."
        lines.append(
            f"{a.approval_id}  {a.state.value:<8}  {a.request.requester.label}  {a.request.tool}"
            f"@{a.request.connection or '-'}  {visible(what)}  (expires {a.deadline:%Y-%m-%d %H:%M:%SZ})"
        )
    return lines
