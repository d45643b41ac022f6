"""Value types shared by every stage of the pipeline. All frozen, all strict."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue


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
    CONFIRM = "confirm"
    DENY = "deny"


#: Precedence: a larger number wins when several rules match.
VERDICT_PRECEDENCE: dict[Verdict, int] = {Verdict.ALLOW: 0, Verdict.CONFIRM: 1, Verdict.DENY: 2}


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


class Decision(FrozenModel):
    """Policy's answer, always naming the deciding rule."""

    verdict: Verdict
    rule_id: str
    reason: str
    #: Every rule that matched, in file order (for ``policy explain`` and the audit record).
    matched: tuple[str, ...] = ()


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


class AuditEvent(FrozenModel):
    """One thing that happened, before it is chained. Never holds raw arguments or results."""

    kind: Literal["intent", "outcome"]
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
    outcome: Outcome | None = None
    duration_ms: float | None = None
