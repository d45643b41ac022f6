"""Value types shared by every stage of the pipeline. All frozen, all strict."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator


class FrozenModel(BaseModel):
    """Base for every value type: immutable and strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Principal(FrozenModel):
    """Who is calling: an authenticated human or agent identity."""

    subject: str
    issuer: str
    groups: tuple[str, ...] = ()
    name: str | None = None
    email: str | None = None
    #: True for a statically configured local principal (no token was verified).
    unsafe_static: bool = False

    @property
    def label(self) -> str:
        base = self.email or self.subject
        if self.name and self.name != base:
            base = f"{self.name} <{base}>"
        return f"{base} (UNSAFE static principal)" if self.unsafe_static else base


class Verdict(StrEnum):
    ALLOW = "allow"
    #: The user running the client confirms (form elicitation): not four-eyes approval.
    CONFIRM = "confirm"
    #: A different, authenticated human approves through a channel the agent cannot answer.
    REVIEW = "review"
    DENY = "deny"


#: Precedence: a larger number wins when several rules match.
VERDICT_PRECEDENCE: dict[Verdict, int] = {
    Verdict.ALLOW: 0,
    Verdict.CONFIRM: 1,
    Verdict.REVIEW: 2,
    Verdict.DENY: 3,
}


class Plan(FrozenModel):
    """What a call would do, computed by the server (never taken from the agent).

    Backend-neutral: SQL fills relations and functions; later backends fill the same slots with
    namespaces/objects or refs. Policy decides on this, confirmation shows it, audit records it.
    """

    #: The most consequential effect class anywhere in the call (e.g. ``read``, ``write``, ``ddl``).
    effect: str
    #: Every effect class found.
    effects: tuple[str, ...] = ()
    #: Human-readable command, e.g. ``SELECT`` or ``UPDATE``.
    command: str = ""
    relations_read: tuple[str, ...] = ()
    relations_written: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    #: Git refs the call writes on the remote (full names, e.g. ``refs/heads/main``).
    refs: tuple[str, ...] = ()
    #: Kubernetes objects the call reads or writes, as ``Kind/namespace/name`` (``Kind/name`` when
    #: cluster-scoped), with the namespaces and kinds involved.
    objects: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    #: Risk markers policy can match on (e.g. ``unbounded_write``, ``server_files``).
    flags: tuple[str, ...] = ()
    #: The statement as it will be executed.
    statement: str | None = None
    #: Backend estimate (e.g. EXPLAIN rows and cost); ``None`` when not computed.
    estimate: dict[str, JsonValue] | None = None
    summary: str = ""

    @property
    def relations(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.relations_read) | set(self.relations_written)))


class ReviewSettings(FrozenModel):
    """Who may approve a call held for review, how many of them, and for how long (a policy rule's
    ``review`` block)."""

    approver_groups: tuple[str, ...] = Field(
        default=(),
        description="Glob patterns: an approver must have a group matching one of them (or match "
        "approver_subjects).",
    )
    approver_subjects: tuple[str, ...] = Field(
        default=(), description="Glob patterns of approver subjects (in addition to approver_groups)."
    )
    quorum: int = Field(default=1, ge=1, le=10, description="Distinct humans who must approve.")
    ttl_seconds: int = Field(
        default=3600,
        ge=60,
        le=7 * 24 * 3600,
        description="How long the request may wait for approval, and how long an approval may wait "
        "to be used.",
    )
    require_reason: bool = Field(default=True, description="Approvers must give a reason.")
    estimate_tolerance: float = Field(
        default=0.5,
        ge=0,
        le=100,
        description="At execution the plan is recomputed; the call is refused when the backend's "
        "row estimate grew by more than this fraction (0.5 = 50%) plus 10 rows.",
    )

    @model_validator(mode="after")
    def _someone_can_approve(self) -> ReviewSettings:
        if not self.approver_groups and not self.approver_subjects:
            raise ValueError("give approver_groups or approver_subjects: otherwise nobody can approve")
        return self


class Decision(FrozenModel):
    """Policy's answer, always naming the deciding rule."""

    verdict: Verdict
    rule_id: str
    reason: str
    #: Every rule that matched, in file order (for ``policy explain`` and the audit record).
    matched: tuple[str, ...] = ()
    #: For ``review``: who may approve (copied from the deciding rule).
    review: ReviewSettings | None = None
    #: Digest of the deciding rule as written (verdict, conditions, review settings): an approval
    #: is void when the rule that would decide the call changed since it was requested.
    rule_digest: str | None = None


class Confirmation(FrozenModel):
    """User confirmation through the client (form elicitation). Not four-eyes approval."""

    method: Literal["elicitation"] = "elicitation"
    accepted: bool
    #: ``accept`` / ``decline`` / ``cancel`` / ``unsupported``.
    action: str
    comment: str | None = None
    at: datetime = Field(default_factory=utcnow)


class OutcomeStatus(StrEnum):
    OK = "ok"
    DENIED = "denied"
    DECLINED = "declined"
    INVALID = "invalid"
    ERROR = "error"
    WITHHELD = "withheld"
    #: A confirmation prompt was sent to the client (2026-07-28 protocol); its answer, if any,
    #: comes back as a new call with its own records.
    ASKED = "asked"
    #: The call waits for four-eyes approval; nothing executed yet.
    PENDING = "pending"


class Outcome(FrozenModel):
    """How a call ended. Denials and declines are values, with the rule that decided."""

    status: OutcomeStatus
    rule_id: str | None = None
    reason: str | None = None
    error_code: str | None = None
    row_count: int | None = None
    truncated: bool = False
    redactions: dict[str, int] = Field(default_factory=dict)
    result_digest: str | None = None


class ApprovalEvidence(FrozenModel):
    """One step of a four-eyes approval, as the audit log keeps it: who, what, under which rule."""

    approval_id: str
    #: ``requested``, ``notified``, ``notify_failed``, ``voted``, ``vote_refused``, ``approved``,
    #: ``denied``, ``expired``, ``executed``, ``refused`` (plan changed) or ``grant_used``.
    event: str
    #: The approval's state after this step.
    state: str
    requester: Principal | None = None
    #: Who acted (the approver deciding, the requester executing); ``None`` for the server itself.
    actor: Principal | None = None
    #: Everyone who has approved so far (distinct humans).
    approvers: tuple[Principal, ...] = ()
    quorum: int | None = None
    reason: str | None = None
    #: ``cli``, ``web``, ``mcp``, ``grant``.
    channel: str | None = None
    rule_id: str | None = None
    plan_digest: str | None = None
    expires_at: datetime | None = None
    #: For grants: the grant's id and its use number.
    grant_id: str | None = None
    grant_use: int | None = None


class AuditEvent(FrozenModel):
    """One thing that happened, before it is chained. Never holds raw arguments or results."""

    kind: Literal["intent", "outcome", "approval"]
    call_id: str
    session_id: str
    time: datetime = Field(default_factory=utcnow)
    principal: Principal | None = None
    tool: str
    connection: str | None = None
    #: Masked arguments; the raw ones are only present as ``arguments_digest``.
    arguments: dict[str, JsonValue] = Field(default_factory=dict)
    arguments_digest: str
    plan: Plan | None = None
    decision: Decision | None = None
    confirmation: Confirmation | None = None
    #: Four-eyes approval evidence: a step of the approval (kind ``approval``), or on an executed
    #: call's records, the approval or grant that admitted it.
    approval: ApprovalEvidence | None = None
    outcome: Outcome | None = None
    duration_ms: float | None = None
