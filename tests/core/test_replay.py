"""Session replay rendering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from hoop_mcp.core.audit import AuditRecord, VerifyReport, chain
from hoop_mcp.core.models import (
    AuditEvent,
    Confirmation,
    Decision,
    Outcome,
    OutcomeStatus,
    Plan,
    Principal,
    Verdict,
)
from hoop_mcp.core.replay import render_timeline, render_verify

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ALICE = Principal(subject="u-1", issuer="https://idp", email="alice@example.com")
PLAN = Plan(
    effect="write", command="UPDATE", relations_written=("public.users",), statement="UPDATE users SET x = 1"
)


def ev(call_id: str, kind: Literal["intent", "outcome"], *, seconds: int = 0, **kw: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "principal": ALICE,
        "connection": "shop",
        "time": T0 + timedelta(seconds=seconds),
        **kw,
    }
    return AuditEvent(
        kind=kind, call_id=call_id, session_id="sess-1", tool="pg_query", arguments_digest="0" * 64, **fields
    )


def records(*events: AuditEvent) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    for event in events:
        out.append(chain(out[-1] if out else None, event))
    return out


def confirmed_write() -> list[AuditRecord]:
    decision = Decision(
        verdict=Verdict.CONFIRM, rule_id="writes-need-confirmation", reason="writes are confirmed"
    )
    return records(
        ev("call-1", "intent", plan=PLAN, decision=decision),
        ev(
            "call-1",
            "outcome",
            seconds=2,
            decision=decision,
            confirmation=Confirmation(accepted=True, action="accept", at=T0),
            outcome=Outcome(
                status=OutcomeStatus.OK, row_count=3, truncated=True, redactions={"email": 2, "ssn": 0}
            ),
            duration_ms=12.34,
        ),
    )


def test_a_call_shows_time_principal_tool_connection_statement_decision_confirmation_and_outcome() -> None:
    text = render_timeline(confirmed_write())
    assert "2024-05-01 12:00:00.000Z  alice@example.com  pg_query @ shop  call call-1" in text
    assert "statement: UPDATE users SET x = 1" in text
    assert "plan: effect write; relations public.users" in text
    assert "decision: confirm by rule writes-need-confirmation — writes are confirmed" in text
    assert "confirm:  accepted (accept)" in text
    assert "outcome:  ok, 3 rows, truncated, redacted email=2, 12.3 ms" in text


def test_intent_and_outcome_are_paired_by_call_id_when_calls_interleave() -> None:
    deny = Decision(verdict=Verdict.DENY, rule_id="no-ddl", reason="DDL is not allowed")
    text = render_timeline(
        records(
            ev("a", "intent", arguments={"sql": "DROP TABLE users"}, decision=deny),
            ev("b", "intent", seconds=1, arguments={"sql": "SELECT 1"}),
            ev("b", "outcome", seconds=2, outcome=Outcome(status=OutcomeStatus.OK, row_count=1)),
            ev(
                "a",
                "outcome",
                seconds=3,
                outcome=Outcome(status=OutcomeStatus.DENIED, rule_id="no-ddl", reason="DDL is not allowed"),
            ),
        )
    )
    assert text.count("pg_query @ shop") == 2
    call_a = text.index("call a")
    call_b = text.index("call b")
    assert call_a < text.index("DROP TABLE") < text.index("outcome:  denied, rule no-ddl") < call_b
    assert call_b < text.index('{"sql": "SELECT 1"}') < text.index("outcome:  ok, 1 row")


def test_a_call_without_an_outcome_says_so() -> None:
    text = render_timeline(records(ev("lost", "intent")))
    assert "outcome:  (no outcome recorded: still running, or the server stopped)" in text


def test_a_declined_confirmation_is_shown_as_declined() -> None:
    text = render_timeline(
        records(
            ev(
                "c",
                "outcome",
                confirmation=Confirmation(accepted=False, action="decline", comment="not now", at=T0),
                outcome=Outcome(status=OutcomeStatus.DECLINED),
            )
        )
    )
    assert "confirm:  declined (decline): not now" in text
    assert "outcome:  declined" in text


def test_terminal_escape_sequences_from_the_agent_are_shown_escaped() -> None:
    plan = PLAN.model_copy(update={"statement": "SELECT 1 \x1b[2J\x1b]0;pwned\x07"})
    text = render_timeline(records(ev("c", "intent", plan=plan)))
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "SELECT 1 \\x1b[2J\\x1b]0;pwned\\x07" in text


def test_multi_line_statements_are_indented_under_their_label() -> None:
    plan = PLAN.model_copy(update={"statement": "UPDATE users\nSET x = 1"})
    text = render_timeline(records(ev("c", "intent", plan=plan)))
    assert "statement: UPDATE users\n                 SET x = 1" in text


def test_color_is_only_added_when_asked() -> None:
    assert "\x1b[" not in render_timeline(confirmed_write())
    colored = render_timeline(confirmed_write(), color=True)
    assert "\x1b[33mconfirm\x1b[0m" in colored
    assert "\x1b[32mok\x1b[0m" in colored


def test_records_are_shown_in_seq_order_whatever_order_they_arrive_in() -> None:
    recs = confirmed_write()
    assert render_timeline(list(reversed(recs))) == render_timeline(recs)


def test_an_empty_timeline_says_so() -> None:
    assert render_timeline([]) == "(no audit records)"


def test_render_verify_reports_success_with_count_and_head() -> None:
    assert (
        render_verify(VerifyReport(ok=True, count=3, head_hash="ab" * 32))
        == f"OK: 3 records verified; head {'ab' * 32}"
    )


def test_render_verify_names_the_first_bad_record_and_the_problem() -> None:
    report = VerifyReport(
        ok=False,
        count=16,
        first_bad_seq=17,
        problem="record 17 was edited (hash mismatch)",
        head_hash="cd" * 32,
    )
    assert render_verify(report) == (
        "FAILED at record 17: record 17 was edited (hash mismatch)\n"
        f"16 records verified before it; last good hash {'cd' * 32}"
    )
