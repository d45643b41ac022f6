"""The only place that knows the order: identity -> classify -> policy -> confirm -> execute -> mask -> record.

``prepare`` never raises and never executes: it computes who, what and the decision (a value).
``run`` writes the intent record (no record, no execution), enforces the decision, executes, masks
and writes the outcome record. Every call, allowed or not, leaves both records.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
from pydantic import JsonValue

from hoop_mcp.core.approval import ApprovalStage, NoConfirmationChannel
from hoop_mcp.core.approvals import (
    Admitted,
    Approval,
    ApprovalService,
    Pending,
    Refused,
    ReviewCall,
)
from hoop_mcp.core.audit import AuditLog, canonical_json
from hoop_mcp.core.backend import Backend, PlannedCall, TableResult
from hoop_mcp.core.errors import (
    AuditWriteError,
    AuthenticationError,
    BackendError,
    HoopError,
    InvalidInput,
    MaskingError,
)
from hoop_mcp.core.masking import Masker
from hoop_mcp.core.models import (
    ApprovalEvidence,
    AuditEvent,
    Confirmation,
    Decision,
    Outcome,
    OutcomeStatus,
    Plan,
    Principal,
    Verdict,
)
from hoop_mcp.core.policy import CallFacts, Policy, evaluate

log = logging.getLogger(__name__)


class IdentityProvider(Protocol):
    async def current_principal(self) -> Principal:
        """Who is calling now. Raises ``AuthenticationError``."""
        ...


@dataclass(frozen=True, slots=True)
class MaskedColumn:
    name: str
    type: str
    source: str | None
    masked: bool


@dataclass(frozen=True, slots=True)
class CallResult:
    """What the transport shows the agent. Everything in here is already masked."""

    call_id: str
    status: OutcomeStatus
    decision: Decision
    message: str
    plan: Plan | None = None
    columns: tuple[MaskedColumn, ...] = ()
    rows: list[list[JsonValue]] = field(default_factory=list)
    row_count: int = 0
    truncated: bool = False
    truncated_reason: str | None = None
    command_status: str = ""
    redactions: dict[str, int] = field(default_factory=dict)
    confirmation: Confirmation | None = None
    error_code: str | None = None
    #: For ``pending``: the approval the call waits for.
    approval: Approval | None = None
    #: For a call admitted by four-eyes approval or a grant: the evidence.
    approval_evidence: ApprovalEvidence | None = None


@dataclass(slots=True)
class Prepared:
    """A call with its identity, plan and decision computed; nothing executed or recorded yet."""

    call_id: str
    session_id: str
    tool: str
    connection: str | None
    arguments_masked: dict[str, JsonValue]
    arguments_digest: str
    started: float
    decision: Decision
    principal: Principal | None = None
    planned: PlannedCall | None = None
    plan_masked: Plan | None = None
    error: HoopError | None = None
    #: The exact arguments (kept only to bind and store a four-eyes approval; never recorded).
    raw_arguments: Mapping[str, JsonValue] = field(default_factory=dict, repr=False)


def digest(value: JsonValue) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()


class Pipeline:
    def __init__(
        self,
        *,
        identity: IdentityProvider,
        policy: Policy,
        masker: Masker,
        audit: AuditLog,
        backends: Mapping[str, Backend],
        scrub: Sequence[str] = (),
    ) -> None:
        self.identity = identity
        self.policy = policy
        self.masker = masker
        self.audit = audit
        self.backends = dict(backends)
        #: The four-eyes approval engine; ``None`` when approvals are not configured (then every
        #: ``review`` verdict is denied).
        self.approvals: ApprovalService | None = None
        #: Per tool: rewrites the arguments before they are masked and recorded (see _mask_arguments).
        self.redactors: dict[str, Callable[[Mapping[str, JsonValue]], Mapping[str, JsonValue]]] = {}
        # Exact secret values (database passwords, tokens) that must never leave, whatever masking
        # detectors think of them. Longest first so overlapping secrets are fully replaced.
        self._scrub = tuple(sorted({s for s in scrub if len(s) >= 4}, key=len, reverse=True))

    # -- text hygiene ------------------------------------------------------------------------------
    def scrub_text(self, text: str) -> str:
        for secret in self._scrub:
            if secret in text:
                text = text.replace(secret, "[REDACTED:SECRET]")
        return text

    def safe_text(self, text: str) -> str:
        """Scrub known secrets, then run every detector. Raises MaskingError."""
        masked, _ = self.masker.mask_text(self.scrub_text(text))
        return masked

    def _mask_arguments(self, arguments: Mapping[str, JsonValue], *, tool: str = "") -> dict[str, JsonValue]:
        """Arguments as an audit record may hold them: bounded, valid Unicode, secrets scrubbed,
        then every string (keys too) through the detectors.

        A tool whose arguments carry structured secrets (a Kubernetes manifest's Secret data) has a
        redactor that rewrites them first; a redactor that fails withholds the arguments."""
        redact = self.redactors.get(tool)
        if redact is not None:
            try:
                arguments = redact(arguments)
            except Exception:
                log.exception("argument redactor for %s failed; arguments withheld", tool)
                return {"withheld": "redaction failed; arguments not recorded"}
        try:
            masked, _ = self.masker.mask_json(_recordable(dict(arguments), self.scrub_text))
        except MaskingError:
            return {"withheld": "masking failed; arguments not recorded"}
        return masked if isinstance(masked, dict) else {}

    def _shown_plan(self, plan: Plan, display: str | None) -> Plan:
        """The plan as people see it: the backend's faithful rendering of the statement.

        Masking the raw statement text would be lossy in the agent's favour (a fake key header in a
        comment can blank the rest of the statement), so only the backend's rendering, with literal
        values masked, is ever shown or recorded.
        """
        statement = display if plan.statement is not None else None
        if plan.statement is not None and display is None:
            statement = UNRENDERABLE
        update: dict[str, object] = {"statement": statement, "summary": self.safe_text(plan.summary)}
        if plan.estimate:
            # Estimates may quote people and text (a push's commit authors and messages).
            estimate, _ = self.masker.mask_json(_recordable(dict(plan.estimate), self.scrub_text))
            update["estimate"] = estimate if isinstance(estimate, dict) else None
        return plan.model_copy(update=update)

    # -- prepare -----------------------------------------------------------------------------------
    async def prepare(
        self,
        *,
        tool: str,
        connection: str | None,
        arguments: Mapping[str, JsonValue],
        session_id: str,
        call_id: str | None = None,
    ) -> Prepared:
        prepared = Prepared(
            call_id=call_id or uuid.uuid4().hex,
            session_id=session_id,
            tool=_recordable_text(tool),
            connection=_recordable_text(connection) if connection is not None else None,
            arguments_masked=self._mask_arguments(arguments, tool=tool),
            arguments_digest=_safe_digest(arguments),
            started=time.perf_counter(),
            decision=Decision(verdict=Verdict.DENY, rule_id="pipeline.unprepared", reason="not evaluated"),
            raw_arguments=arguments,
        )
        try:
            await self._prepare(prepared, arguments)
        except HoopError as exc:
            prepared.error = exc
            prepared.decision = _error_decision(exc)
        except Exception as exc:
            log.exception("call %s: unexpected error while preparing", prepared.call_id)
            prepared.error = HoopError("internal error while preparing the call")
            prepared.decision = Decision(
                verdict=Verdict.DENY,
                rule_id="pipeline.internal_error",
                reason=f"internal error ({type(exc).__name__})",
            )
        return prepared

    async def _prepare(self, prepared: Prepared, arguments: Mapping[str, JsonValue]) -> None:
        prepared.principal = await self.identity.current_principal()
        if prepared.connection is None or prepared.connection not in self.backends:
            known = ", ".join(sorted(self.backends)) or "none"
            raise InvalidInput(
                f"unknown connection {prepared.connection!r}; configured connections: {known}",
                details={"rule_id": "input.unknown_connection"},
            )
        backend = self.backends[prepared.connection]
        planned = await backend.plan(tool=prepared.tool, arguments=arguments)
        prepared.planned = planned
        display = backend.render(planned, mask=self.safe_text, for_confirmation=False)
        prepared.plan_masked = self._shown_plan(planned.plan, display)
        if planned.refusal is not None:
            prepared.decision = planned.refusal
            return
        facts = CallFacts(
            tool=prepared.tool,
            connection=prepared.connection,
            principal=prepared.principal,
            plan=planned.plan,
        )
        prepared.decision = evaluate(self.policy, facts)
        if prepared.decision.verdict in (Verdict.CONFIRM, Verdict.REVIEW):
            # The estimate may complete the plan (a Kubernetes dry run yields the diff the user or
            # approver sees and an approval binds to), so it comes before the rendering.
            planned = await backend.estimate(planned)
            prepared.planned = planned
            # The user or approver sees (and the record keeps) the clearest faithful rendering there is.
            display = backend.render(planned, mask=self.safe_text, for_confirmation=True)
            if planned.plan.statement is not None and display is None:
                asked = "confirmed" if prepared.decision.verdict is Verdict.CONFIRM else "reviewed"
                prepared.decision = Decision(
                    verdict=Verdict.DENY,
                    rule_id=f"{prepared.decision.verdict.value}.unrenderable",
                    reason=f"this statement cannot be shown faithfully, so it cannot be {asked} "
                    f"(rule {prepared.decision.rule_id}); rewrite it",
                )
                return
            prepared.plan_masked = self._shown_plan(planned.plan, display)

    # -- run ---------------------------------------------------------------------------------------
    async def run(self, prepared: Prepared, *, approval: ApprovalStage | None = None) -> CallResult:
        """Record, enforce, execute, mask, record.

        Raises only ``AuditWriteError``: before execution when the intent record cannot be written
        (nothing ran), or after it when the outcome record cannot be written
        (``details["executed"]`` is True; the result is withheld).
        """
        confirmation: Confirmation | None = None
        evidence: ApprovalEvidence | None = None
        decision = prepared.decision
        if prepared.error is None and decision.verdict is Verdict.CONFIRM:
            stage = approval or NoConfirmationChannel()
            try:
                confirmation = await stage.decide(prepared)
            except Exception:
                log.exception("call %s: approval stage failed", prepared.call_id)
                confirmation = Confirmation(accepted=False, action="error")
        if prepared.error is None and decision.verdict is Verdict.REVIEW:
            admission = await self._admit(prepared)
            if isinstance(admission, Pending):
                return await self._finish_pending(prepared, admission)
            if isinstance(admission, Refused):
                prepared.decision = admission.decision
                await self._record(
                    prepared, "intent", confirmation=None, outcome=None, approval=admission.evidence
                )
                return await self._finish_refused(prepared, None, approval=admission.evidence)
            evidence = admission.evidence

        await self._record(prepared, "intent", confirmation=confirmation, outcome=None, approval=evidence)

        if prepared.error is not None or decision.verdict is Verdict.DENY:
            return await self._finish_refused(prepared, confirmation)
        if decision.verdict is Verdict.CONFIRM and (confirmation is None or not confirmation.accepted):
            return await self._finish_declined(prepared, confirmation)

        if prepared.planned is None or prepared.connection is None:  # unreachable: no error means planned
            return await self._finish_error(prepared, confirmation, HoopError("call was not planned"))
        backend = self.backends[prepared.connection]
        try:
            table = await backend.execute(prepared.planned)
        except BackendError as exc:
            return await self._finish_error(prepared, confirmation, exc)
        except Exception as exc:
            log.exception("call %s: backend failed", prepared.call_id)
            return await self._finish_error(
                prepared, confirmation, HoopError(f"internal error ({type(exc).__name__})")
            )
        try:
            result = self._mask_table(prepared, table)
        except Exception:
            log.exception("call %s: masking failed; result withheld", prepared.call_id)
            return await self._finish(
                prepared,
                confirmation,
                Outcome(
                    status=OutcomeStatus.WITHHELD,
                    error_code="masking.failed",
                    rule_id="masking.failed",
                    reason="masking failed; the result was withheld",
                ),
                message=f"The statement ran but its result was withheld because masking failed (call {prepared.call_id}).",
            )
        outcome = Outcome(
            status=OutcomeStatus.OK,
            rule_id=decision.rule_id,
            reason=decision.reason,
            row_count=table.row_count,
            truncated=table.truncated,
            redactions=result.redactions,
            result_digest=digest({"columns": [c.name for c in result.columns], "rows": result.rows}),  # type: ignore[dict-item]
        )
        try:
            await self._record(
                prepared, "outcome", confirmation=confirmation, outcome=outcome, approval=evidence
            )
        except AuditWriteError as exc:
            # The statement already ran: say so, and withhold its result (no record, no result).
            exc.details["executed"] = True
            raise
        return CallResult(
            call_id=prepared.call_id,
            status=OutcomeStatus.OK,
            decision=decision,
            message=_ok_message(table, result.redactions),
            plan=prepared.plan_masked,
            columns=result.columns,
            rows=result.rows,
            row_count=table.row_count,
            truncated=table.truncated,
            truncated_reason=table.truncated_reason,
            command_status=table.command_status,
            redactions=result.redactions,
            confirmation=confirmation,
            approval_evidence=evidence,
        )

    async def _admit(self, prepared: Prepared) -> Admitted | Pending | Refused:
        """Four-eyes: consume an approval or grant, or hold the call. Fails closed."""
        if self.approvals is None:
            return Refused(
                Decision(
                    verdict=Verdict.DENY,
                    rule_id="review.not_configured",
                    reason=f"rule {prepared.decision.rule_id} requires four-eyes approval, but approvals "
                    "are not configured on this server; an operator must configure them",
                )
            )
        if prepared.principal is None or prepared.planned is None or prepared.plan_masked is None:
            return Refused(
                Decision(verdict=Verdict.DENY, rule_id="review.unprepared", reason="call not planned")
            )
        call = ReviewCall(
            call_id=prepared.call_id,
            session_id=prepared.session_id,
            principal=prepared.principal,
            tool=prepared.tool,
            connection=prepared.connection,
            arguments=prepared.raw_arguments,
            arguments_masked=prepared.arguments_masked,
            arguments_digest=prepared.arguments_digest,
            plan=prepared.planned.plan,
            plan_masked=prepared.plan_masked,
            decision=prepared.decision,
        )
        try:
            return await self.approvals.admit(call)
        except Exception as exc:
            log.exception("call %s: the approval engine failed", prepared.call_id)
            return Refused(
                Decision(
                    verdict=Verdict.DENY,
                    rule_id="approval.failed",
                    reason=f"the approval engine failed ({type(exc).__name__}), so the call is denied "
                    "(fail closed)",
                )
            )

    async def _finish_pending(self, prepared: Prepared, pending: Pending) -> CallResult:
        approval = pending.approval
        evidence = (
            self.approvals.evidence(approval, event="requested", actor=prepared.principal)
            if self.approvals
            else None
        )
        await self._record(prepared, "intent", confirmation=None, outcome=None, approval=evidence)
        d = prepared.decision
        what = "is waiting for" if not pending.created else "now waits for"
        outcome = Outcome(
            status=OutcomeStatus.PENDING,
            rule_id=d.rule_id,
            reason=f"held for four-eyes approval {approval.approval_id}; nothing executed yet",
        )
        message = (
            f"Rule '{d.rule_id}' requires approval by another person; this call {what} approval "
            f"{approval.approval_id} (expires {approval.deadline:%Y-%m-%d %H:%M:%SZ}). Nothing was executed."
        )
        result = await self._finish(prepared, None, outcome, message=message, approval=evidence)
        if pending.created and self.approvals is not None:
            self.approvals.start_notify(approval)
        return CallResult(
            call_id=result.call_id,
            status=OutcomeStatus.PENDING,
            decision=d,
            message=result.message,
            plan=prepared.plan_masked,
            approval=approval,
            approval_evidence=evidence,
        )

    def _mask_table(self, prepared: Prepared, table: TableResult) -> _Masked:
        masked = self.masker.mask_rows(
            connection=prepared.connection or "",
            sources=[c.source for c in table.columns],
            rows=table.rows,
        )
        rows = [list(r) for r in masked.rows]
        if self._scrub:
            rows = [[self.scrub_text(c) if isinstance(c, str) else c for c in r] for r in rows]
        fully = set(masked.masked_columns)
        columns = tuple(
            MaskedColumn(name=self.safe_text(c.name), type=c.type, source=c.source, masked=i in fully)
            for i, c in enumerate(table.columns)
        )
        return _Masked(columns=columns, rows=rows, redactions=dict(masked.redactions))

    # -- endings -----------------------------------------------------------------------------------
    async def _finish_refused(
        self,
        prepared: Prepared,
        confirmation: Confirmation | None,
        *,
        approval: ApprovalEvidence | None = None,
    ) -> CallResult:
        exc = prepared.error
        d = prepared.decision
        if isinstance(exc, InvalidInput):
            status, code = OutcomeStatus.INVALID, exc.code
            message = f"Invalid input ({d.rule_id}): {_sentence(exc.public_message)} Nothing was executed."
        elif isinstance(exc, AuthenticationError):
            status, code = OutcomeStatus.DENIED, exc.code
            message = (
                f"Not authenticated ({d.rule_id}): {_sentence(exc.public_message)} Nothing was executed."
            )
        elif isinstance(exc, BackendError):
            status, code = OutcomeStatus.ERROR, exc.code
            message = f"{_sentence(exc.public_message)} (rule {d.rule_id})"
            if "nothing was executed" not in message.lower():
                message += " Nothing was executed."
        elif exc is not None:
            status, code = OutcomeStatus.ERROR, exc.code
            message = f"The call could not be prepared ({d.rule_id}); nothing was executed. Call id {prepared.call_id}."
        else:
            status, code = OutcomeStatus.DENIED, None
            message = f"Denied by rule '{d.rule_id}': {_sentence(d.reason)} Nothing was executed."
        outcome = Outcome(status=status, rule_id=d.rule_id, reason=d.reason, error_code=code)
        return await self._finish(prepared, confirmation, outcome, message=message, approval=approval)

    async def _finish_declined(self, prepared: Prepared, confirmation: Confirmation | None) -> CallResult:
        d = prepared.decision
        action = confirmation.action if confirmation else "unsupported"
        if action == "unsupported":
            message = (
                f"Rule '{d.rule_id}' requires the user to confirm this call, but this client cannot show a "
                "confirmation prompt (no form elicitation). Nothing was executed; ask the user to run it from "
                "a client that supports elicitation, or ask an operator to change the policy."
            )
        else:
            message = f"The user did not confirm ({action}) the call required by rule '{d.rule_id}'. Nothing was executed."
        outcome = Outcome(status=OutcomeStatus.DECLINED, rule_id=d.rule_id, reason=f"confirmation {action}")
        return await self._finish(prepared, confirmation, outcome, message=message)

    async def _finish_error(
        self, prepared: Prepared, confirmation: Confirmation | None, exc: HoopError
    ) -> CallResult:
        rule = str(exc.details.get("rule_id") or exc.code)
        if isinstance(exc, BackendError):
            message = exc.public_message
        else:
            message = f"Internal error; details are in the server log under call id {prepared.call_id}."
        outcome = Outcome(status=OutcomeStatus.ERROR, rule_id=rule, reason=message, error_code=exc.code)
        return await self._finish(prepared, confirmation, outcome, message=message)

    async def _finish(
        self,
        prepared: Prepared,
        confirmation: Confirmation | None,
        outcome: Outcome,
        *,
        message: str,
        approval: ApprovalEvidence | None = None,
    ) -> CallResult:
        try:
            message = self.safe_text(message)
            reason = self.safe_text(outcome.reason) if outcome.reason else None
        except MaskingError:
            message, reason = f"The call failed; details withheld (call {prepared.call_id}).", "withheld"
        outcome = outcome.model_copy(update={"reason": reason})
        await self._record(prepared, "outcome", confirmation=confirmation, outcome=outcome, approval=approval)
        return CallResult(
            call_id=prepared.call_id,
            status=outcome.status,
            decision=prepared.decision,
            message=message,
            plan=prepared.plan_masked,
            confirmation=confirmation,
            error_code=outcome.error_code,
            approval_evidence=approval,
        )

    async def _record(
        self,
        prepared: Prepared,
        kind: str,
        *,
        confirmation: Confirmation | None,
        outcome: Outcome | None,
        approval: ApprovalEvidence | None = None,
    ) -> None:
        decision = prepared.decision
        try:
            decision = decision.model_copy(update={"reason": self.safe_text(decision.reason)})
        except MaskingError:
            decision = decision.model_copy(update={"reason": "withheld"})
        event = AuditEvent(
            kind=kind,  # type: ignore[arg-type]
            call_id=prepared.call_id,
            session_id=prepared.session_id,
            principal=prepared.principal,
            tool=prepared.tool,
            connection=prepared.connection,
            arguments=prepared.arguments_masked,
            arguments_digest=prepared.arguments_digest,
            plan=prepared.plan_masked,
            decision=decision,
            confirmation=confirmation,
            approval=approval,
            outcome=outcome,
            duration_ms=round((time.perf_counter() - prepared.started) * 1000, 3) if outcome else None,
        )
        # A cancelled call still finishes its record; a failed write stops the call (fail closed).
        with anyio.CancelScope(shield=True):
            await self.audit.append(event)

    async def record_prompt(self, prepared: Prepared) -> None:
        """Record that a confirmation prompt was sent and the call now waits for the client.

        On the 2026-07-28 protocol the question travels in a result of its own, and the answer in a
        new request: without this record, a prompt the user never answers would leave no trace.
        """
        asked = Confirmation(accepted=False, action="asked")
        await self._record(prepared, "intent", confirmation=asked, outcome=None)
        outcome = Outcome(
            status=OutcomeStatus.ASKED,
            rule_id=prepared.decision.rule_id,
            reason="confirmation prompt sent; nothing executed yet",
        )
        await self._record(prepared, "outcome", confirmation=asked, outcome=outcome)

    async def record_call(
        self,
        *,
        tool: str,
        arguments: Mapping[str, JsonValue],
        session_id: str,
        principal: Principal | None,
        outcome: Outcome,
        approval: ApprovalEvidence | None = None,
    ) -> str:
        """Record a call that has no backend (the approval tools): intent and outcome."""
        prepared = Prepared(
            call_id=uuid.uuid4().hex,
            session_id=session_id,
            tool=_recordable_text(tool),
            connection=None,
            arguments_masked=self._mask_arguments(arguments),
            arguments_digest=_safe_digest(arguments),
            started=time.perf_counter(),
            decision=Decision(
                verdict=Verdict.ALLOW if outcome.status is OutcomeStatus.OK else Verdict.DENY,
                rule_id=outcome.rule_id or tool,
                reason=outcome.reason or "",
            ),
            principal=principal,
        )
        await self._record(prepared, "intent", confirmation=None, outcome=None, approval=approval)
        await self._record(prepared, "outcome", confirmation=None, outcome=outcome, approval=approval)
        return prepared.call_id

    async def record_rejected_request(
        self, *, tool: str, arguments: Mapping[str, JsonValue], session_id: str, reason: str
    ) -> str:
        """Record a call the transport refused before the pipeline saw it (e.g. wrong argument types)."""
        prepared = Prepared(
            call_id=uuid.uuid4().hex,
            session_id=session_id,
            tool=_recordable_text(tool),
            connection=_recordable_text(str(arguments.get("connection")))
            if isinstance(arguments.get("connection"), str)
            else None,
            arguments_masked=self._mask_arguments(arguments, tool=tool),
            arguments_digest=_safe_digest(arguments),
            started=time.perf_counter(),
            decision=Decision(verdict=Verdict.DENY, rule_id="input.invalid_arguments", reason=reason),
        )
        try:
            prepared.principal = await self.identity.current_principal()
        except AuthenticationError:
            prepared.principal = None
        await self._record(prepared, "intent", confirmation=None, outcome=None)
        await self._record(
            prepared,
            "outcome",
            confirmation=None,
            outcome=Outcome(status=OutcomeStatus.INVALID, rule_id="input.invalid_arguments", reason=reason),
        )
        return prepared.call_id


@dataclass(frozen=True, slots=True)
class _Masked:
    columns: tuple[MaskedColumn, ...]
    rows: list[list[JsonValue]]
    redactions: dict[str, int]


#: Shown instead of a statement the backend cannot render faithfully (never a lossy masked text).
UNRENDERABLE = "[statement not shown: it cannot be rendered faithfully; the arguments digest identifies it]"

#: Longest string argument kept in an audit record; longer ones keep a prefix (the digest covers all).
MAX_RECORDED_STRING = 16_384


def _recordable_text(text: str) -> str:
    """Text an audit record can hold: clipped, and valid Unicode.

    A lone surrogate (from a JSON ``"\\ud800"`` escape) reaches the backend as sent, which refuses
    it; the record gets an escaped copy, because a record that cannot be encoded would turn a plain
    invalid-input refusal into an audit failure.
    """
    if len(text) > MAX_RECORDED_STRING:
        text = (
            text[:MAX_RECORDED_STRING] + f"…[{len(text) - MAX_RECORDED_STRING} more characters not recorded]"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


#: Deepest argument nesting kept in an audit record (deeper parts are replaced by a marker).
MAX_RECORDED_DEPTH = 32


def _recordable(value: JsonValue, scrub: Callable[[str], str], depth: int = 0) -> JsonValue:
    if depth > MAX_RECORDED_DEPTH:
        return "[nested too deeply; not recorded]"
    if isinstance(value, str):
        return scrub(_recordable_text(value))
    if isinstance(value, list):
        return [_recordable(v, scrub, depth + 1) for v in value]
    if isinstance(value, dict):
        return {scrub(_recordable_text(str(k))): _recordable(v, scrub, depth + 1) for k, v in value.items()}
    return value


def _safe_digest(arguments: Mapping[str, JsonValue]) -> str:
    """Digest of the raw arguments; for ones that have no canonical form (too deep, not valid
    Unicode) a digest of their bounded recordable form, marked as such."""
    try:
        return digest(dict(arguments))
    except (TypeError, ValueError, RecursionError):
        bounded = _recordable(dict(arguments), lambda text: text)
        return "sha256-bounded:" + hashlib.sha256(canonical_json(bounded)).hexdigest()


def _error_decision(exc: HoopError) -> Decision:
    rule = str(exc.details.get("rule_id") or exc.code)
    return Decision(verdict=Verdict.DENY, rule_id=rule, reason=exc.message)


def _ok_message(table: TableResult, redactions: Mapping[str, int]) -> str:
    parts = [table.command_status or "OK", f"{len(table.rows)} row(s) returned"]
    if table.truncated:
        parts.append(
            f"TRUNCATED at the {table.truncated_reason} cap: add a WHERE clause, LIMIT or fewer columns to see the rest"
        )
    total = sum(redactions.values())
    if total:
        parts.append(f"{total} value(s) masked")
    return "; ".join(parts)


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."
