"""Four-eyes approvals: the pure state machine, and ApprovalService over the real SQLite stores."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import JsonValue

from hoop_mcp.core.approvals import (
    ESTIMATE_SLACK_ROWS,
    LIVE_STATES,
    TERMINAL_STATES,
    Admitted,
    AgentSettings,
    Approval,
    ApprovalConflict,
    ApprovalRequest,
    ApprovalService,
    ApprovalState,
    ApproverNotAllowed,
    Pending,
    Refused,
    ReviewCall,
    Vote,
    apply_vote,
    approver_problem,
    binding_of,
    consume,
    estimate_rows,
    expire_if_due,
    plan_change,
    plan_digest,
    principal_key,
    refuse,
)
from hoop_mcp.core.audit import canonical_json
from hoop_mcp.core.errors import ApprovalError, AuditWriteError
from hoop_mcp.core.models import Decision, Plan, Principal, ReviewSettings, Verdict
from hoop_mcp.stores.sqlite import SqliteAuditLog
from hoop_mcp.stores.sqlite_approvals import SqliteApprovalStore

IDP = "https://idp.example.com"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SKEW = timedelta(seconds=30)
AGENTS = AgentSettings(subjects=("agent-*",), groups=("bots",))

ALICE = Principal(subject="alice", issuer=IDP, groups=("dev",), email="alice@example.com")
BOB = Principal(subject="bob", issuer=IDP, groups=("dba",), email="bob@example.com")
CAROL = Principal(subject="carol", issuer=IDP, groups=("dba", "sre"), email="carol@example.com")
DAVE = Principal(subject="dave", issuer=IDP, groups=("sre",))
REVIEW = ReviewSettings(approver_groups=("dba", "sre"), ttl_seconds=600)

ARGUMENTS: dict[str, JsonValue] = {"sql": "UPDATE shop.orders SET status = 'void' WHERE id = 42"}
MASKED: dict[str, JsonValue] = {"sql": "UPDATE shop.orders SET status = ? WHERE id = ?"}
DIGEST = "sha256:" + hashlib.sha256(canonical_json(ARGUMENTS)).hexdigest()


def make_plan(
    statement: str = "UPDATE shop.orders SET status = $1 WHERE id = $2", rows: float | None = 100
) -> Plan:
    return Plan(
        effect="write",
        effects=("write",),
        command="UPDATE",
        relations_written=("shop.orders",),
        statement=statement,
        estimate=None if rows is None else {"rows": rows, "total_cost": 8.3},
    )


PLAN = make_plan()


def make_approval(
    *,
    review: ReviewSettings = REVIEW,
    requester: Principal = ALICE,
    plan: Plan = PLAN,
    approval_id: str = "apr_test",
    created: datetime = T0,
    binding: str | None = None,
    arguments_digest: str = DIGEST,
) -> Approval:
    request = ApprovalRequest(
        approval_id=approval_id,
        call_id="call-" + approval_id,
        session_id="session-1",
        requester=requester,
        tool="pg_execute",
        connection="shop",
        arguments=MASKED,
        arguments_digest=arguments_digest,
        plan=plan,
        plan_digest=plan_digest(plan),
        estimate_rows=estimate_rows(plan),
        rule_id="writes-need-review",
        rule_reason="writes to production need a second person",
        review=review,
        binding=binding
        or binding_of(
            requester=requester, tool="pg_execute", connection="shop", arguments_digest=arguments_digest
        ),
        created_at=created,
        expires_at=created + timedelta(seconds=review.ttl_seconds),
    )
    return Approval(request=request)


def vote(
    who: Principal, *, approve: bool = True, reason: str | None = "checked the plan", at: datetime = T0
) -> Vote:
    return Vote(approver=who, approve=approve, reason=reason, channel="cli", at=at)


def decide(
    approval: Approval,
    who: Principal,
    *,
    approve: bool = True,
    reason: str | None = "checked the plan",
    now: datetime = T0,
) -> Approval:
    return apply_vote(
        approval, vote(who, approve=approve, reason=reason, at=now), agents=AGENTS, now=now, skew=SKEW
    )


# ------------------------------------------------------------------------------------ strategies

subjects = st.sampled_from(["alice", "bob", "carol", "dave", "erin"])
issuers = st.sampled_from([IDP, "https://other-idp.example.com"])
human_groups = st.lists(st.sampled_from(["dba", "sre", "dev"]), unique=True, max_size=3).map(tuple)
approver_groups = st.lists(st.sampled_from(["dba", "sre"]), unique=True, min_size=1, max_size=2).map(tuple)
labels = st.none() | st.sampled_from(["Someone", "Another Name"])

humans = st.builds(Principal, subject=subjects, issuer=issuers, groups=human_groups, name=labels)
#: Humans who are approvers for REVIEW (a group in it), never ALICE's key.
approvers = st.builds(
    Principal,
    subject=st.sampled_from(["bob", "carol", "dave", "erin"]),
    issuer=issuers,
    groups=approver_groups,
    name=labels,
)
agents = st.one_of(
    st.builds(
        Principal,
        subject=st.text(alphabet="abcxyz-0123", max_size=8).map(lambda s: "agent-" + s),
        issuer=issuers,
        groups=approver_groups,
    ),
    st.builds(
        Principal,
        subject=st.sampled_from(["bob", "carol", "ci"]),
        issuer=issuers,
        groups=approver_groups.map(lambda g: (*g, "bots")),
    ),
    st.builds(
        Principal,
        subject=st.sampled_from(["bob", "carol", "local"]),
        issuer=issuers,
        groups=approver_groups,
        unsafe_static=st.just(True),
    ),
)
reasons = st.sampled_from([None, "", "   ", "looks right", "ticket OPS-1"])


# ------------------------------------------------------------------------------ who may approve


@settings(max_examples=200, deadline=None)
@given(
    groups=st.lists(st.sampled_from(["dba", "sre", "dev"]), unique=True, max_size=3).map(tuple),
    name=labels,
    email=st.none() | st.just("other@example.com"),
    approve=st.booleans(),
    reason=reasons,
    listed_by_subject=st.booleans(),
)
def test_the_requester_can_never_approve_their_own_call(
    groups: tuple[str, ...],
    name: str | None,
    email: str | None,
    approve: bool,
    reason: str | None,
    listed_by_subject: bool,
) -> None:
    review = ReviewSettings(
        approver_groups=("dba", "sre"), approver_subjects=("alice",) if listed_by_subject else ()
    )
    requester = Principal(subject="alice", issuer=IDP, groups=("dba", "sre"))
    approval = make_approval(review=review, requester=requester)
    same_person = Principal(subject="alice", issuer=IDP, groups=groups, name=name, email=email)
    assert approver_problem(same_person, approval, agents=AGENTS) == (
        "the requester can never approve their own call"
    )
    with pytest.raises(ApproverNotAllowed):
        decide(approval, same_person, approve=approve, reason=reason)


@settings(max_examples=200, deadline=None)
@given(agent=agents, approve=st.booleans())
def test_agent_principals_can_never_approve(agent: Principal, approve: bool) -> None:
    review = ReviewSettings(approver_groups=("dba", "sre"), approver_subjects=("*",))
    approval = make_approval(review=review)
    assert approver_problem(agent, approval, agents=AGENTS) == "agent principals can never approve"
    with pytest.raises(ApproverNotAllowed):
        decide(approval, agent, approve=approve)


def test_someone_outside_the_approver_groups_and_subjects_may_not_decide() -> None:
    outsider = Principal(subject="erin", issuer=IDP, groups=("dev",))
    problem = approver_problem(outsider, make_approval(), agents=AGENTS)
    assert problem is not None
    assert "not an approver" in problem
    with pytest.raises(ApproverNotAllowed):
        decide(make_approval(), outsider)
    listed = ReviewSettings(approver_subjects=("erin",))
    assert approver_problem(outsider, make_approval(review=listed), agents=AGENTS) is None


# ------------------------------------------------------------------------------------- quorum


@settings(max_examples=200, deadline=None)
@given(quorum=st.integers(1, 4), voters=st.lists(approvers, min_size=1, max_size=8))
def test_the_quorum_counts_distinct_humans(quorum: int, voters: list[Principal]) -> None:
    approval = make_approval(review=ReviewSettings(approver_groups=("dba", "sre"), quorum=quorum))
    counted: list[Principal] = []
    for who in voters:
        # Conservatively one person: same issuer+subject, or the same subject / e-mail elsewhere.
        seen = any(
            p.subject == who.subject or (p.email and who.email and p.email.casefold() == who.email.casefold())
            for p in counted
        )
        if approval.state is not ApprovalState.PENDING or seen:
            with pytest.raises(ApprovalConflict):
                decide(approval, who)
            continue
        approval = decide(approval, who)
        counted.append(who)
        assert len({principal_key(p) for p in approval.approvers}) == len(counted)
        expected = ApprovalState.APPROVED if len(counted) >= quorum else ApprovalState.PENDING
        assert approval.state is expected
    assert len(approval.votes) == len(counted)


def test_the_same_person_voting_twice_counts_once_and_the_second_vote_is_refused() -> None:
    approval = make_approval(review=ReviewSettings(approver_groups=("dba",), quorum=2))
    approval = decide(approval, BOB)
    bob_again = Principal(subject="bob", issuer=IDP, groups=("dba", "sre"), name="Robert", email="r@x.org")
    with pytest.raises(ApprovalConflict, match="already decided"):
        decide(approval, bob_again)
    assert approval.state is ApprovalState.PENDING
    assert len(approval.votes) == 1
    # The same subject at another issuer may be the same human: refused too (fail closed).
    other_bob = Principal(subject="bob", issuer="https://other-idp.example.com", groups=("dba",))
    with pytest.raises(ApprovalConflict, match="already decided"):
        decide(approval, other_bob)
    # So is another subject with the same e-mail address.
    bob_by_mail = Principal(
        subject="u-991", issuer="https://other-idp.example.com", groups=("dba",), email="R@X.org"
    )
    first = decide(make_approval(review=ReviewSettings(approver_groups=("dba",), quorum=2)), bob_again)
    with pytest.raises(ApprovalConflict, match="already decided"):
        decide(first, bob_by_mail)


def test_one_person_in_two_approver_groups_counts_once() -> None:
    approval = make_approval(review=ReviewSettings(approver_groups=("dba", "sre"), quorum=2))
    approval = decide(approval, CAROL)  # in dba and sre
    assert approval.state is ApprovalState.PENDING
    with pytest.raises(ApprovalConflict):
        decide(approval, CAROL)
    approval = decide(approval, DAVE)
    assert approval.state is ApprovalState.APPROVED
    assert approval.approvers == (CAROL, DAVE)
    assert approval.use_by == T0 + timedelta(seconds=3600)


# -------------------------------------------------------------------------------- deny, reasons


def test_a_deny_is_final_even_before_the_quorum() -> None:
    approval = make_approval(review=ReviewSettings(approver_groups=("dba", "sre"), quorum=2))
    approval = decide(approval, BOB)
    approval = decide(approval, CAROL, approve=False, reason="wrong customer")
    assert approval.state is ApprovalState.DENIED
    assert approval.final_reason == "denied: wrong customer"
    for who in (DAVE, BOB):
        with pytest.raises(ApprovalConflict, match="denied"):
            decide(approval, who)
    with pytest.raises(ApprovalConflict):
        consume(approval, call_id="c2", now=T0, skew=SKEW)


def test_a_reason_is_required_when_the_policy_says_so() -> None:
    approval = make_approval(review=ReviewSettings(approver_groups=("dba",), require_reason=True))
    for missing in (None, "", "   \n"):
        with pytest.raises(ApprovalError, match="reason is required") as info:
            decide(approval, BOB, reason=missing)
        assert type(info.value) is ApprovalError
    approved = decide(approval, BOB, reason="  verified with the customer  ")
    assert approved.votes[0].reason == "verified with the customer"


def test_approving_without_a_reason_is_fine_when_the_policy_does_not_ask_for_one() -> None:
    approval = make_approval(review=ReviewSettings(approver_groups=("dba",), require_reason=False))
    approved = decide(approval, BOB, reason=None)
    assert approved.state is ApprovalState.APPROVED
    assert approved.votes[0].reason is None


def test_a_deny_always_needs_a_reason() -> None:
    approval = make_approval(review=ReviewSettings(approver_groups=("dba",), require_reason=False))
    with pytest.raises(ApprovalError, match="reason is required"):
        decide(approval, BOB, approve=False, reason=" ")
    assert decide(approval, BOB, approve=False, reason="no").state is ApprovalState.DENIED


def test_an_overlong_reason_is_refused() -> None:
    with pytest.raises(ApprovalError, match="longer than"):
        decide(make_approval(), BOB, reason="x" * 1001)


# ---------------------------------------------------------------------- consume, refuse, expiry


def test_an_approval_is_consumed_once_only() -> None:
    approved = decide(make_approval(), BOB)
    executed = consume(approved, call_id="call-9", now=T0, skew=SKEW)
    assert executed.state is ApprovalState.EXECUTED
    assert executed.executed_call_id == "call-9"
    assert executed.version == approved.version + 1
    with pytest.raises(ApprovalConflict, match="executed"):
        consume(executed, call_id="call-10", now=T0, skew=SKEW)


def test_a_pending_approval_cannot_be_consumed() -> None:
    with pytest.raises(ApprovalConflict, match="pending"):
        consume(make_approval(), call_id="c", now=T0, skew=SKEW)


def test_a_pending_approval_expires_after_its_ttl_plus_the_clock_skew() -> None:
    approval = make_approval()
    edge = approval.request.expires_at + SKEW
    assert expire_if_due(approval, now=edge, skew=SKEW) is approval
    expired = expire_if_due(approval, now=edge + timedelta(microseconds=1), skew=SKEW)
    assert expired.state is ApprovalState.EXPIRED
    assert expired.version == approval.version + 1
    assert expired.final_reason == "expired: nobody decided in time"
    with pytest.raises(ApprovalConflict, match="expired"):
        decide(approval, BOB, now=edge + timedelta(seconds=1))
    assert decide(approval, BOB, now=edge).state is ApprovalState.APPROVED


def test_an_unused_approval_expires_after_use_by_plus_the_clock_skew() -> None:
    decided_at = T0 + timedelta(seconds=100)
    approved = decide(make_approval(), BOB, now=decided_at)
    assert approved.use_by == decided_at + timedelta(seconds=REVIEW.ttl_seconds)
    assert approved.deadline == approved.use_by
    edge = approved.deadline + SKEW
    assert consume(approved, call_id="c", now=edge, skew=SKEW).state is ApprovalState.EXECUTED
    late = edge + timedelta(microseconds=1)
    with pytest.raises(ApprovalConflict, match="expired"):
        consume(approved, call_id="c", now=late, skew=SKEW)
    expired = expire_if_due(approved, now=late, skew=SKEW)
    assert expired.final_reason == "expired: it was not used in time"


def test_refusing_ends_a_live_approval_and_nothing_else() -> None:
    approved = decide(make_approval(), BOB)
    refused = refuse(approved, reason="the plan changed")
    assert (refused.state, refused.final_reason) == (ApprovalState.REFUSED, "the plan changed")
    assert refused.version == approved.version + 1
    with pytest.raises(ApprovalConflict):
        refuse(refused, reason="again")


# ------------------------------------------------------------------ every transition, at random

ALLOWED = {
    (ApprovalState.PENDING, ApprovalState.PENDING),  # a vote short of the quorum
    (ApprovalState.PENDING, ApprovalState.APPROVED),
    (ApprovalState.PENDING, ApprovalState.DENIED),
    (ApprovalState.PENDING, ApprovalState.EXPIRED),
    (ApprovalState.PENDING, ApprovalState.REFUSED),
    (ApprovalState.APPROVED, ApprovalState.EXECUTED),
    (ApprovalState.APPROVED, ApprovalState.EXPIRED),
    (ApprovalState.APPROVED, ApprovalState.REFUSED),
}

operations = st.one_of(
    st.tuples(st.just("vote"), humans | agents | approvers, st.booleans(), reasons),
    st.tuples(st.just("consume")),
    st.tuples(st.just("refuse")),
    st.tuples(st.just("expire")),
)


def _step(approval: Approval, op: tuple[Any, ...], now: datetime) -> Approval:
    match op[0]:
        case "vote":
            return apply_vote(
                approval,
                Vote(approver=op[1], approve=op[2], reason=op[3], channel="web", at=now),
                agents=AGENTS,
                now=now,
                skew=SKEW,
            )
        case "consume":
            return consume(approval, call_id="call-x", now=now, skew=SKEW)
        case "refuse":
            return refuse(approval, reason="plan changed")
        case _:
            return expire_if_due(approval, now=now, skew=SKEW)


@settings(max_examples=300, deadline=None)
@given(
    quorum=st.integers(1, 3),
    require_reason=st.booleans(),
    steps=st.lists(st.tuples(operations, st.integers(0, 700)), max_size=14),
)
def test_transitions_follow_the_state_machine_and_terminal_states_absorb_everything(
    quorum: int, require_reason: bool, steps: list[tuple[tuple[Any, ...], int]]
) -> None:
    review = ReviewSettings(
        approver_groups=("dba", "sre"), quorum=quorum, ttl_seconds=600, require_reason=require_reason
    )
    current = make_approval(review=review)
    now = T0
    executed = 0
    for op, advance in steps:
        now += timedelta(seconds=advance)
        try:
            after = _step(current, op, now)
        except ApprovalError:
            continue
        if current.state in TERMINAL_STATES:
            assert after == current, f"{op[0]} changed a {current.state.value} approval"
        if after != current:
            assert after.version == current.version + 1
            assert (current.state, after.state) in ALLOWED
            assert after.request == current.request
        if after.state is ApprovalState.EXECUTED and current.state is not ApprovalState.EXECUTED:
            executed += 1
        for v in after.votes:
            assert approver_problem(v.approver, after, agents=AGENTS) is None
            assert principal_key(v.approver) != principal_key(ALICE)
        assert len({principal_key(v.approver) for v in after.votes}) == len(after.votes)
        if after.state is ApprovalState.APPROVED:
            assert len(after.approvers) >= quorum
        if after.state is ApprovalState.DENIED:
            assert not after.votes[-1].approve
        current = after
    assert executed <= 1


# --------------------------------------------------------------------------------- plan changes


def test_the_same_plan_under_the_same_rule_is_no_change() -> None:
    approval = make_approval()
    assert plan_change(approval, plan=make_plan(), rule_id="writes-need-review") is None
    # The estimate and the summary are not part of the binding.
    moved = make_plan(rows=120).model_copy(update={"summary": "a new summary"})
    assert plan_change(approval, plan=moved, rule_id="writes-need-review") is None


def test_a_changed_plan_digest_is_a_plan_change() -> None:
    other = make_plan(statement="UPDATE shop.orders SET status = $1")
    problem = plan_change(make_approval(), plan=other, rule_id="writes-need-review")
    assert problem is not None
    assert "plan changed" in problem


def test_a_different_deciding_rule_is_a_plan_change() -> None:
    problem = plan_change(make_approval(), plan=make_plan(), rule_id="ddl-needs-two")
    assert problem is not None
    assert "policy changed" in problem


@settings(max_examples=300, deadline=None)
@given(
    before=st.floats(min_value=0, max_value=1e7),
    after=st.floats(min_value=0, max_value=1e8),
    tolerance=st.floats(min_value=0, max_value=5),
)
def test_an_estimate_growing_beyond_the_tolerance_is_a_plan_change(
    before: float, after: float, tolerance: float
) -> None:
    review = ReviewSettings(approver_groups=("dba",), estimate_tolerance=tolerance)
    approval = make_approval(review=review, plan=make_plan(rows=before))
    problem = plan_change(approval, plan=make_plan(rows=after), rule_id="writes-need-review")
    grew = after > before * (1 + tolerance) + ESTIMATE_SLACK_ROWS
    assert (problem is not None) == grew
    if grew:
        assert problem is not None
        assert "row estimate grew" in problem


def test_an_estimate_that_is_missing_on_either_side_is_no_change() -> None:
    for before, after in ((None, 1e9), (10, None)):
        approval = make_approval(plan=make_plan(rows=before))
        assert plan_change(approval, plan=make_plan(rows=after), rule_id="writes-need-review") is None


# --------------------------------------------------------------------- the service, real stores


@dataclass
class Engine:
    service: ApprovalService
    store: SqliteApprovalStore
    audit: SqliteAuditLog
    path: Path


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    path = tmp_path / "hoop.db"
    audit = await SqliteAuditLog.open(path)
    store = await SqliteApprovalStore.open(path)
    service = ApprovalService(store=store, audit=audit, agents=AGENTS)
    yield Engine(service, store, audit, path)
    await store.close()
    await audit.close()


def review_call(
    *, call_id: str = "call-1", plan: Plan = PLAN, rule_id: str = "writes-need-review", who: Principal = ALICE
) -> ReviewCall:
    return ReviewCall(
        call_id=call_id,
        session_id="session-1",
        principal=who,
        tool="pg_execute",
        connection="shop",
        arguments=ARGUMENTS,
        arguments_masked=MASKED,
        arguments_digest=DIGEST,
        plan=plan,
        plan_masked=plan,
        decision=Decision(
            verdict=Verdict.REVIEW,
            rule_id=rule_id,
            reason="writes to production need a second person",
            review=REVIEW,
        ),
    )


async def approval_events(audit: SqliteAuditLog) -> list[tuple[str, str, str | None]]:
    """(event, state, actor subject) of every approval record, in order."""
    out = []
    for record in await audit.records():
        if record.event.kind == "approval":
            evidence = record.event.approval
            assert evidence is not None
            actor = evidence.actor.subject if evidence.actor is not None else None
            out.append((evidence.event, evidence.state, actor))
    return out


@pytest.mark.anyio
async def test_admitting_a_call_creates_a_pending_approval_and_an_audit_record(engine: Engine) -> None:
    admission = await engine.service.admit(review_call())
    assert isinstance(admission, Pending)
    assert admission.created
    approval = admission.approval
    assert approval.state is ApprovalState.PENDING
    assert approval.request.requester == ALICE
    assert approval.request.arguments == MASKED
    assert await engine.store.get(approval.approval_id) == approval
    assert await engine.store.raw_arguments(approval.approval_id) == ARGUMENTS
    assert await approval_events(engine.audit) == [("requested", "pending", "alice")]
    (record,) = [r for r in await engine.audit.records() if r.event.kind == "approval"]
    assert record.event.call_id == "call-1"
    assert record.event.plan == PLAN
    assert record.event.arguments == MASKED
    assert (await engine.audit.verify()).ok


@pytest.mark.anyio
async def test_admitting_the_same_call_again_returns_the_same_pending_approval(engine: Engine) -> None:
    first = await engine.service.admit(review_call(call_id="call-1"))
    second = await engine.service.admit(review_call(call_id="call-2"))
    assert isinstance(first, Pending)
    assert isinstance(second, Pending)
    assert not second.created
    assert second.approval == first.approval
    assert len(await engine.store.list()) == 1
    assert await approval_events(engine.audit) == [("requested", "pending", "alice")]


@pytest.mark.anyio
async def test_an_eligible_approver_approves_and_the_decision_is_audited(engine: Engine) -> None:
    pending = await engine.service.admit(review_call())
    assert isinstance(pending, Pending)
    after = await engine.service.decide(
        pending.approval.approval_id, approver=BOB, approve=True, reason="checked", channel="web"
    )
    assert after.state is ApprovalState.APPROVED
    assert after.approvers == (BOB,)
    assert await engine.store.get(after.approval_id) == after
    assert await approval_events(engine.audit) == [
        ("requested", "pending", "alice"),
        ("approved", "approved", "bob"),
    ]
    records = [r for r in await engine.audit.records() if r.event.kind == "approval"]
    evidence = records[-1].event.approval
    assert evidence is not None
    assert (evidence.channel, evidence.reason, evidence.approvers) == ("web", "checked", (BOB,))


@pytest.mark.anyio
async def test_the_requester_deciding_is_refused_and_the_attempt_is_audited(engine: Engine) -> None:
    pending = await engine.service.admit(review_call())
    assert isinstance(pending, Pending)
    with pytest.raises(ApproverNotAllowed):
        await engine.service.decide(
            pending.approval.approval_id, approver=ALICE, approve=True, reason="mine", channel="cli"
        )
    assert (await engine.service.get(pending.approval.approval_id)).state is ApprovalState.PENDING
    events = await approval_events(engine.audit)
    assert events[-1] == ("vote_refused", "pending", "alice")


@pytest.mark.anyio
async def test_an_approval_is_used_once_and_the_next_call_asks_again(engine: Engine) -> None:
    pending = await engine.service.admit(review_call(call_id="call-1"))
    assert isinstance(pending, Pending)
    approval_id = pending.approval.approval_id
    await engine.service.decide(approval_id, approver=BOB, approve=True, reason="ok", channel="cli")

    admitted = await engine.service.admit(review_call(call_id="call-2"))
    assert isinstance(admitted, Admitted)
    assert (admitted.evidence.approval_id, admitted.evidence.event) == (approval_id, "executed")
    used = await engine.store.get(approval_id)
    assert used is not None
    assert (used.state, used.executed_call_id) == (ApprovalState.EXECUTED, "call-2")
    assert await engine.store.raw_arguments(approval_id) is None

    again = await engine.service.admit(review_call(call_id="call-3"))
    assert isinstance(again, Pending)
    assert again.created
    assert again.approval.approval_id != approval_id


@pytest.mark.anyio
async def test_identical_calls_racing_for_one_approval_run_once_and_the_rest_ask_again(
    engine: Engine,
) -> None:
    pending = await engine.service.admit(review_call(call_id="call-0"))
    assert isinstance(pending, Pending)
    approval_id = pending.approval.approval_id
    await engine.service.decide(approval_id, approver=BOB, approve=True, reason="ok", channel="cli")
    # Two engines on the same file race like two server processes.
    other_store = await SqliteApprovalStore.open(engine.path)
    other = ApprovalService(store=other_store, audit=engine.audit, agents=AGENTS)
    results: list[object] = []

    async def admit(service: ApprovalService, call_id: str) -> None:
        results.append(await service.admit(review_call(call_id=call_id)))

    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for index in range(6):
                    tg.start_soon(admit, engine.service if index % 2 else other, f"race-{index}")
    finally:
        await other_store.close()
    admitted = [r for r in results if isinstance(r, Admitted)]
    assert len(admitted) == 1
    assert admitted[0].evidence.approval_id == approval_id
    assert all(isinstance(r, Pending) for r in results if r not in admitted)
    assert not [r for r in results if isinstance(r, Refused)]


@pytest.mark.anyio
async def test_a_changed_plan_voids_the_approval_and_refuses_the_call(engine: Engine) -> None:
    pending = await engine.service.admit(review_call())
    assert isinstance(pending, Pending)
    approval_id = pending.approval.approval_id
    await engine.service.decide(approval_id, approver=BOB, approve=True, reason="ok", channel="cli")

    changed = make_plan(statement="UPDATE shop.orders SET status = $1")  # the WHERE clause is gone
    admission = await engine.service.admit(review_call(call_id="call-2", plan=changed))
    assert isinstance(admission, Refused)
    assert admission.decision.verdict is Verdict.DENY
    assert admission.decision.rule_id == "approval.plan_changed"
    assert admission.evidence is not None
    assert admission.evidence.event == "refused"
    void = await engine.store.get(approval_id)
    assert void is not None
    assert void.state is ApprovalState.REFUSED
    assert await engine.store.raw_arguments(approval_id) is None
    assert (await approval_events(engine.audit))[-1] == ("refused", "refused", "alice")


@pytest.mark.anyio
async def test_an_unavailable_store_refuses_the_call(engine: Engine) -> None:
    await engine.store.close()
    admission = await engine.service.admit(review_call())
    assert isinstance(admission, Refused)
    assert admission.decision.verdict is Verdict.DENY
    assert admission.decision.rule_id == "approval.store_unavailable"
    assert await approval_events(engine.audit) == []


@pytest.mark.anyio
async def test_a_waiting_requester_sees_the_decision_as_soon_as_it_is_made(engine: Engine) -> None:
    pending = await engine.service.admit(review_call())
    assert isinstance(pending, Pending)
    approval_id = pending.approval.approval_id
    seen: list[Approval] = []

    async def wait() -> None:
        seen.append(await engine.service.wait(approval_id, up_to_s=120))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await engine.service.decide(approval_id, approver=BOB, approve=True, reason="ok", channel="cli")
    assert [a.state for a in seen] == [ApprovalState.APPROVED]


@pytest.mark.anyio
async def test_waiting_on_an_approval_nobody_decides_returns_it_still_pending(engine: Engine) -> None:
    pending = await engine.service.admit(review_call())
    assert isinstance(pending, Pending)
    with anyio.fail_after(5):
        start = anyio.current_time()
        approval = await engine.service.wait(pending.approval.approval_id, up_to_s=0.3)
    assert approval.state in LIVE_STATES
    assert anyio.current_time() - start >= 0.29


@pytest.mark.anyio
async def test_a_decision_that_cannot_be_audited_voids_the_approval(engine: Engine) -> None:
    pending = await engine.service.admit(review_call())
    assert isinstance(pending, Pending)
    approval_id = pending.approval.approval_id
    await engine.audit.close()  # the audit log can no longer be written
    with pytest.raises(AuditWriteError):
        await engine.service.decide(approval_id, approver=BOB, approve=True, reason="ok", channel="cli")
    after = await engine.store.get(approval_id)
    assert after is not None
    assert after.state is ApprovalState.REFUSED
    assert after.final_reason == "a decision could not be recorded in the audit log"
    assert after not in await engine.store.find_live(after.request.binding)  # nothing can use it


@pytest.mark.anyio
async def test_an_edited_rule_voids_approvals_given_under_the_old_one(engine: Engine) -> None:
    import dataclasses

    def under(call: ReviewCall, digest: str) -> ReviewCall:
        return dataclasses.replace(call, decision=call.decision.model_copy(update={"rule_digest": digest}))

    pending = await engine.service.admit(under(review_call(call_id="call-1"), "sha256:quorum-1"))
    assert isinstance(pending, Pending)
    await engine.service.decide(
        pending.approval.approval_id, approver=BOB, approve=True, reason="ok", channel="cli"
    )
    # The operator tightened the rule (say, quorum 2) before the agent ran the call.
    refused = await engine.service.admit(under(review_call(call_id="call-2"), "sha256:quorum-2"))
    assert isinstance(refused, Refused)
    assert refused.decision.rule_id == "approval.plan_changed"
    assert "was edited since the approval was requested" in refused.decision.reason


@pytest.mark.anyio
async def test_concurrent_identical_calls_share_one_pending_request(engine: Engine) -> None:
    other_store = await SqliteApprovalStore.open(engine.path)
    other = ApprovalService(store=other_store, audit=engine.audit, agents=AGENTS)
    results: list[object] = []

    async def admit(service: ApprovalService, call_id: str) -> None:
        results.append(await service.admit(review_call(call_id=call_id)))

    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for index in range(8):
                    tg.start_soon(admit, engine.service if index % 2 else other, f"same-{index}")
    finally:
        await other_store.close()
    assert all(isinstance(r, Pending) for r in results)
    assert len({r.approval.approval_id for r in results if isinstance(r, Pending)}) == 1
    assert sum(1 for r in results if isinstance(r, Pending) and r.created) == 1
    assert len(await engine.store.list()) == 1


@pytest.mark.anyio
async def test_a_requester_cannot_flood_approvers_with_requests(engine: Engine) -> None:
    import dataclasses

    from hoop_mcp.core.approvals import MAX_LIVE_PER_REQUESTER

    for index in range(MAX_LIVE_PER_REQUESTER):
        call = dataclasses.replace(review_call(call_id=f"c{index}"), arguments_digest=f"sha256:{index:064x}")
        assert isinstance(await engine.service.admit(call), Pending)
    one_more = dataclasses.replace(review_call(call_id="c-extra"), arguments_digest="sha256:" + "f" * 64)
    refused = await engine.service.admit(one_more)
    assert isinstance(refused, Refused)
    assert refused.decision.rule_id == "approval.too_many_pending"
    # Someone else is not affected.
    assert isinstance(await engine.service.admit(review_call(call_id="carol-1", who=CAROL)), Pending)


@pytest.mark.anyio
async def test_the_sweep_ends_forgotten_requests_and_drops_their_raw_arguments(engine: Engine) -> None:
    now = [T0]
    service = ApprovalService(store=engine.store, audit=engine.audit, agents=AGENTS, clock=lambda: now[0])
    pending = await service.admit(review_call())
    assert isinstance(pending, Pending)
    approval_id = pending.approval.approval_id
    assert await engine.store.raw_arguments(approval_id) == ARGUMENTS
    assert await service.sweep() == 0  # not due yet
    now[0] = T0 + timedelta(seconds=REVIEW.ttl_seconds) + SKEW + timedelta(seconds=1)
    assert await service.sweep() == 1
    assert await engine.store.raw_arguments(approval_id) is None
    assert (await engine.store.get(approval_id) or pending.approval).state is ApprovalState.EXPIRED
    assert (await approval_events(engine.audit))[-1] == ("expired", "expired", None)
