"""Human-readable session replay from audit records (``hoop-mcp replay``).

Records hold masked arguments only, so nothing here unmasks anything. Every value that came from
an agent (statements, arguments, reasons) is made terminal-safe: control characters, including
ANSI escape sequences an agent could plant to rewrite the operator's screen, are shown escaped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from hoop_mcp.core.audit import AuditRecord, VerifyReport
from hoop_mcp.core.models import AuditEvent, Verdict

__all__ = ["render_timeline", "render_verify"]

_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"
_DIM = "\x1b[2m"
_RED = "\x1b[31m"
_GREEN = "\x1b[32m"
_YELLOW = "\x1b[33m"
_CYAN = "\x1b[36m"

_VERDICT_COLOR = {
    Verdict.ALLOW: _GREEN,
    Verdict.CONFIRM: _YELLOW,
    Verdict.REVIEW: _YELLOW,
    Verdict.DENY: _RED,
}
_STATUS_COLOR = {
    "ok": _GREEN,
    "denied": _RED,
    "declined": _YELLOW,
    "invalid": _RED,
    "error": _RED,
    "pending": _YELLOW,
}

#: Longest rendering of an argument object when there is no statement.
_MAX_ARGUMENTS = 2000


def _safe(text: str) -> str:
    """Escape control characters (keeps tabs and newlines; the caller indents newlines)."""
    out = []
    for char in text:
        code = ord(char)
        if char in "\n\t" or not (code < 0x20 or 0x7F <= code < 0xA0 or char in "\u2028\u2029"):
            out.append(char)
        else:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


class _Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if self.color and code else text


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _block(label: str, text: str) -> str:
    lines = _safe(text).splitlines() or [""]
    pad = " " * (6 + len(label) + 2)
    return f"      {label}: {lines[0]}" + "".join(f"\n{pad}{line}" for line in lines[1:])


def _statement(event: AuditEvent) -> str | None:
    if event.plan is not None and event.plan.statement:
        return event.plan.statement
    if not event.arguments:
        return None
    text = json.dumps(event.arguments, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= _MAX_ARGUMENTS else text[:_MAX_ARGUMENTS] + " …(truncated)"


def _approval_line(event: AuditEvent, style: _Style) -> str:
    """One step of a four-eyes approval (or the approval / grant that admitted a call)."""
    ev = event.approval
    assert ev is not None  # noqa: S101 - only called for events with approval evidence
    parts = [f"{style(_safe(ev.event), _BOLD)} {_safe(ev.approval_id)} ({_safe(ev.state)})"]
    if ev.actor is not None:
        parts.append(f"by {_safe(ev.actor.label)}")
    if ev.channel:
        parts.append(f"via {_safe(ev.channel)}")
    if ev.approvers and ev.event in ("approved", "executed", "grant_used"):
        parts.append("approvers " + ", ".join(_safe(p.label) for p in ev.approvers))
    if ev.grant_id:
        parts.append(f"grant {_safe(ev.grant_id)} use {ev.grant_use}")
    line = f"      {style(_time(event.time), _DIM)} approval: " + " ".join(parts)
    if ev.reason:
        line += f" — {_safe(ev.reason)}"
    return line


def _call_lines(
    intent: AuditEvent | None,
    outcome: AuditEvent | None,
    style: _Style,
    approvals: Sequence[AuditEvent] = (),
) -> list[str]:
    first = intent or outcome or (approvals[0] if approvals else None)
    assert first is not None  # noqa: S101 - a call has at least one record
    who = first.principal.label if first.principal is not None else "(unknown principal)"
    where = f" @ {first.connection}" if first.connection else ""
    lines = [
        f"{style(_time(first.time), _DIM)}  {_safe(who)}  {style(_safe(first.tool + where), _BOLD)}"
        f"  {style('call ' + _safe(first.call_id), _DIM)}"
    ]
    source = intent if intent is not None else outcome
    assert source is not None  # noqa: S101
    statement = _statement(source)
    if statement is not None:
        lines.append(_block("statement", statement))
    plan = source.plan
    if plan is not None:
        parts = [f"effect {plan.effect}"]
        if plan.relations:
            parts.append("relations " + ", ".join(plan.relations))
        if plan.flags:
            parts.append("flags " + ", ".join(plan.flags))
        lines.append(_block("plan", "; ".join(parts)))
    decision = (intent.decision if intent is not None else None) or (
        outcome.decision if outcome is not None else None
    )
    if decision is not None:
        verdict = style(decision.verdict.value, _VERDICT_COLOR.get(decision.verdict, ""))
        lines.append(
            f"      decision: {verdict} by rule {_safe(decision.rule_id)} — {_safe(decision.reason)}"
        )
    confirmation = (outcome.confirmation if outcome is not None else None) or (
        intent.confirmation if intent is not None else None
    )
    if confirmation is not None:
        answer = "accepted" if confirmation.accepted else "declined"
        text = f"{style(answer, _GREEN if confirmation.accepted else _YELLOW)} ({_safe(confirmation.action)})"
        if confirmation.comment:
            text += f": {_safe(confirmation.comment)}"
        lines.append(f"      confirm:  {text}")
    admitted = intent.approval if intent is not None else None
    if admitted is not None and admitted.event in ("executed", "grant_used") and intent is not None:
        lines.append(_approval_line(intent, style))
    if intent is not None or outcome is not None:
        lines.append(_outcome_line(outcome, style))
    lines.extend(_approval_line(event, style) for event in approvals)
    return lines


def _outcome_line(event: AuditEvent | None, style: _Style) -> str:
    if event is None or event.outcome is None:
        return "      outcome:  " + style(
            "(no outcome recorded: still running, or the server stopped)", _YELLOW
        )
    result = event.outcome
    parts = [style(result.status.value, _STATUS_COLOR.get(result.status.value, _YELLOW))]
    if result.row_count is not None:
        parts.append(f"{result.row_count} row{'' if result.row_count == 1 else 's'}")
    if result.truncated:
        parts.append("truncated")
    redacted = {name: count for name, count in result.redactions.items() if count}
    if redacted:
        parts.append("redacted " + ", ".join(f"{_safe(k)}={v}" for k, v in sorted(redacted.items())))
    if event.duration_ms is not None:
        parts.append(f"{event.duration_ms:.1f} ms")
    if result.rule_id and (result.status.value != "ok"):
        parts.append(f"rule {_safe(result.rule_id)}")
    if result.error_code:
        parts.append(f"error {_safe(result.error_code)}")
    line = "      outcome:  " + ", ".join(parts)
    if result.reason:
        line += f" — {_safe(result.reason)}"
    return line


def render_timeline(records: Sequence[AuditRecord], *, color: bool = False) -> str:
    """A readable timeline: one entry per tool call, intent and outcome paired by ``call_id``.

    Records are shown in seq order of each call's first record; a header is printed whenever the
    session changes. ``color`` adds ANSI colours (verdicts, statuses).
    """
    style = _Style(color)
    ordered = sorted(records, key=lambda record: record.seq)
    calls: dict[tuple[str, str], list[AuditEvent | None]] = {}
    steps: dict[tuple[str, str], list[AuditEvent]] = {}
    for record in ordered:
        key = (record.event.session_id, record.event.call_id)
        slot = calls.setdefault(key, [None, None])
        if record.event.kind == "approval":
            if record.event.approval is not None:
                steps.setdefault(key, []).append(record.event)
            continue
        index = 0 if record.event.kind == "intent" else 1
        if slot[index] is None:
            slot[index] = record.event
    if not calls:
        return "(no audit records)"
    out: list[str] = []
    session: str | None = None
    for (session_id, call), (intent, outcome) in calls.items():
        if session_id != session:
            if out:
                out.append("")
            session = session_id
            count = sum(1 for key in calls if key[0] == session_id)
            header = f"session {_safe(session_id)} ({count} call{'' if count == 1 else 's'})"
            out.append(style(header, _CYAN + _BOLD))
        out.extend(_call_lines(intent, outcome, style, steps.get((session_id, call), ())))
    return "\n".join(out)


def render_verify(report: VerifyReport) -> str:
    """One or two lines for ``hoop-mcp audit verify``."""
    if report.ok:
        noun = "record" if report.count == 1 else "records"
        return f"OK: {report.count} {noun} verified; head {report.head_hash}"
    verified = f"{report.count} record{'' if report.count == 1 else 's'} verified before it"
    return (
        f"FAILED at record {report.first_bad_seq}: {report.problem}\n"
        f"{verified}; last good hash {report.head_hash}"
    )
