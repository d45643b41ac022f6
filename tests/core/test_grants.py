"""Grants: the signed token format, every kind of tampering, matching, issuer eligibility, use counting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hoop_mcp.core.approvals import (
    Admitted,
    AgentSettings,
    ApprovalService,
    Pending,
    ReviewCall,
    plan_digest,
)
from hoop_mcp.core.errors import ConfigError
from hoop_mcp.core.grants import (
    MAX_TOKEN_CHARS,
    Grant,
    GrantError,
    GrantExpired,
    GrantNotYetValid,
    GrantSet,
    decode_grant,
    new_grant_id,
    sign_grant,
    verify_grant,
)
from hoop_mcp.core.models import Decision, Plan, Principal, ReviewSettings, Verdict
from hoop_mcp.stores.sqlite import SqliteAuditLog
from tests.support.fake_approval_store import FakeApprovalStore

KEY = secrets.token_urlsafe(32).encode()
OTHER_KEY = secrets.token_urlsafe(32).encode()
T0 = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)
SKEW = timedelta(seconds=30)
IDP = "https://idp.example.com"

ALICE = Principal(subject="alice", issuer=IDP, groups=("dba",), email="alice@example.com")
BOB = Principal(subject="bob", issuer=IDP, groups=("developers",))
CI = Principal(subject="ci-deploy-1", issuer=IDP, groups=("ci",))
AGENTS = AgentSettings(subjects=("ci-*", "agent-*"), groups=("bots",))

WRITE_ORDERS = Plan(
    effect="write",
    effects=("read", "write"),
    command="UPDATE",
    relations_written=("public.orders",),
    statement="UPDATE orders SET status = $1 WHERE id = $2",
    summary="UPDATE (write); writes public.orders",
)


def make_grant(**overrides: Any) -> Grant:
    data: dict[str, Any] = {
        "grant_id": new_grant_id(),
        "issuer": ALICE,
        "grantees": ("ci-deploy-*",),
        "tool": "query_db",
        "connection": "shop",
        "max_uses": 1,
        "issued_at": T0,
        "not_before": T0,
        "expires_at": T0 + timedelta(hours=1),
        "reason": "release 42 backfill",
    }
    data.update(overrides)
    return Grant.model_validate(data)


def make_call(
    *,
    principal: Principal = CI,
    tool: str = "query_db",
    connection: str | None = "shop",
    plan: Plan = WRITE_ORDERS,
    review: ReviewSettings | None = None,
) -> ReviewCall:
    review = review or ReviewSettings(approver_groups=("dba",))
    return ReviewCall(
        call_id="call_" + secrets.token_hex(6),
        session_id="session-1",
        principal=principal,
        tool=tool,
        connection=connection,
        arguments={"sql": plan.statement},
        arguments_masked={"sql": plan.statement},
        arguments_digest="sha256:" + "0" * 64,
        plan=plan,
        plan_masked=plan,
        decision=Decision(
            verdict=Verdict.REVIEW, rule_id="writes-need-review", reason="writes need a DBA", review=review
        ),
    )


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def grant_set(*grants: Grant, now: datetime = T0, key: bytes = KEY) -> tuple[GrantSet, Clock]:
    clock = Clock(now)
    tokens = [sign_grant(g, key) for g in grants]
    return GrantSet(key, tokens, agents=AGENTS, clock_skew_seconds=30, clock=clock), clock


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signed(payload: bytes, key: bytes = KEY) -> str:
    """A token made independently from the documented format (not through sign_grant)."""
    body = b64(payload)
    mac = hmac.new(key, f"hoopgrant1.{body}".encode(), hashlib.sha256).digest()
    return f"hoopgrant1.{body}.{b64(mac)}"


TOKEN = sign_grant(make_grant(max_uses=3), KEY)


# ------------------------------------------------------------------------------------ the format


def test_a_signed_grant_verifies_to_the_same_grant() -> None:
    grant = make_grant(effects=("write",), relations=("public.*",), max_uses=5)
    token = sign_grant(grant, KEY)
    assert verify_grant(token, KEY, now=T0 + timedelta(minutes=5), skew=SKEW) == grant


def test_the_token_is_prefix_payload_and_hmac_over_prefix_and_payload_as_documented() -> None:
    grant = make_grant()
    token = sign_grant(grant, KEY)
    prefix, body, mac = token.split(".")
    assert prefix == "hoopgrant1"
    assert "=" not in token
    expected = hmac.new(KEY, f"hoopgrant1.{body}".encode(), hashlib.sha256).digest()
    assert mac == b64(expected)
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert payload["grant_id"] == grant.grant_id
    assert payload["issuer"]["subject"] == "alice"
    # Canonical JSON: sorted keys, no whitespace.
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    assert raw == json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert signed(raw) == token


def _flip_payload_char(token: str) -> str:
    prefix, body, mac = token.split(".")
    i = len(body) // 2
    body = body[:i] + ("B" if body[i] != "B" else "C") + body[i + 1 :]
    return f"{prefix}.{body}.{mac}"


def _reencoded_with_old_mac(token: str) -> str:
    prefix, body, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["max_uses"] = 1000
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return f"{prefix}.{b64(raw)}.{mac}"


def _grantees_widened_with_old_mac(token: str) -> str:
    prefix, body, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["grantees"] = ["*"]
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return f"{prefix}.{b64(raw)}.{mac}"


TAMPERS: dict[str, tuple[Callable[[str], str], str]] = {
    "flipped payload character": (_flip_payload_char, "signature does not match"),
    "re-encoded payload with the old MAC": (_reencoded_with_old_mac, "signature does not match"),
    "grantees widened with the old MAC": (_grantees_widened_with_old_mac, "signature does not match"),
    "MAC cut short": (lambda t: t[:-4], "signature does not match|not canonical"),
    "MAC segment dropped": (lambda t: t.rsplit(".", 1)[0], "expected hoopgrant1.<payload>.<signature>"),
    "extra segment": (lambda t: t + ".AAAA", "expected hoopgrant1.<payload>.<signature>"),
    "wrong prefix": (lambda t: "hoopgrant2" + t[len("hoopgrant1") :], "prefix wrong"),
    "padding added": (lambda t: t + "=", "not base64url"),
    "not base64": (lambda t: "hoopgrant1.!!!!." + t.split(".")[2], "payload is not base64url"),
    "empty payload": (lambda t: "hoopgrant1.." + t.split(".")[2], "payload is not base64url"),
    "oversized": (lambda t: "hoopgrant1." + "A" * MAX_TOKEN_CHARS + "." + t.split(".")[2], "too large"),
    "whitespace inside": (lambda t: t[:20] + " " + t[20:], "not base64url"),
    "signed with another key": (lambda t: sign_grant(make_grant(), OTHER_KEY), "signature does not match"),
    "a MAC from another token": (
        lambda t: t.rsplit(".", 1)[0] + "." + sign_grant(make_grant(), KEY).split(".")[2],
        "signature does not match",
    ),
    "signed payload that is not JSON": (lambda t: signed(b"\xff not json"), "not JSON"),
    "signed payload missing fields": (
        lambda t: signed(b'{"grant_id":"grt_abcdefghij"}'),
        "invalid grant payload",
    ),
    "signed payload with an unknown key": (
        lambda t: signed(
            json.dumps({**json.loads(make_grant().payload()), "admin": True}, sort_keys=True).encode()
        ),
        "invalid grant payload: admin",
    ),
    "signed payload valid for a year": (
        lambda t: signed(
            json.dumps(
                {
                    **json.loads(make_grant().payload()),
                    "expires_at": (T0 + timedelta(days=365)).isoformat(),
                }
            ).encode()
        ),
        "at most 7 days",
    ),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS), ids=str)
def test_every_tampered_or_malformed_token_is_refused_with_a_clear_message(tamper: str) -> None:
    change, expected = TAMPERS[tamper]
    bad = change(TOKEN)
    assert bad != TOKEN
    with pytest.raises(GrantError, match=expected) as info:
        verify_grant(bad, KEY, now=T0, skew=SKEW)
    text = info.value.diagnostics()
    for secret_part in (KEY.decode(), *TOKEN.split(".")[1:], *bad.split(".")[1:]):
        if len(secret_part) >= 8:
            assert secret_part not in text


@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_any_single_byte_change_to_a_token_is_refused(data: st.DataObject) -> None:
    raw = bytearray(TOKEN.encode("ascii"))
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1), label="index")
    value = data.draw(st.integers(min_value=0, max_value=255).filter(lambda v: v != raw[index]), label="byte")
    raw[index] = value
    with pytest.raises(GrantError):
        verify_grant(raw.decode("latin-1"), KEY, now=T0, skew=SKEW)


def test_the_last_character_of_the_mac_cannot_be_swapped_for_an_equivalent_encoding() -> None:
    # A 32-byte MAC is 43 base64 characters whose last one carries 2 unused bits: a lenient
    # decoder would accept 4 different last characters for the same MAC.
    prefix, body, mac = TOKEN.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    base = alphabet.index(mac[-1]) & ~0b11
    for ch in alphabet[base : base + 4]:
        if ch != mac[-1]:
            with pytest.raises(GrantError, match="not canonical"):
                verify_grant(f"{prefix}.{body}.{mac[:-1]}{ch}", KEY, now=T0, skew=SKEW)


def test_a_grant_is_refused_once_expired_beyond_the_clock_skew_and_accepted_within_it() -> None:
    grant = make_grant()
    token = sign_grant(grant, KEY)
    assert verify_grant(token, KEY, now=grant.expires_at + SKEW - timedelta(seconds=1), skew=SKEW) == grant
    with pytest.raises(GrantExpired, match=rf"grant {grant.grant_id} expired at"):
        verify_grant(token, KEY, now=grant.expires_at + SKEW + timedelta(seconds=1), skew=SKEW)


def test_a_grant_is_refused_before_it_is_valid_beyond_the_clock_skew_and_accepted_within_it() -> None:
    grant = make_grant(not_before=T0 + timedelta(minutes=10))
    token = sign_grant(grant, KEY)
    early = grant.not_before - SKEW - timedelta(seconds=1)
    with pytest.raises(GrantNotYetValid, match="is not valid before"):
        verify_grant(token, KEY, now=early, skew=SKEW)
    assert verify_grant(token, KEY, now=grant.not_before - SKEW + timedelta(seconds=1), skew=SKEW) == grant


def test_decode_checks_the_signature_but_not_the_times() -> None:
    grant = make_grant()
    assert decode_grant(sign_grant(grant, KEY), KEY) == grant
    with pytest.raises(GrantError, match="signature does not match"):
        decode_grant(sign_grant(grant, OTHER_KEY), KEY)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_uses": 0}, "max_uses"),
        ({"max_uses": 1001}, "max_uses"),
        ({"expires_at": T0 + timedelta(days=8)}, "at most 7 days"),
        ({"expires_at": T0}, "after not_before"),
        ({"grantees": ()}, "grantees"),
        ({"grantees": ("",)}, "grantee patterns"),
        ({"effects": ("rewrite",)}, "effects"),
        ({"plan_digest": "md5:abc"}, "plan_digest"),
        ({"grant_id": "x"}, "grant_id"),
        ({"issued_at": datetime(2031, 5, 4, 12, 0)}, "time zone"),
    ],
)
def test_grants_that_could_never_be_valid_cannot_be_made(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_grant(**change)


def test_a_short_key_is_refused_for_signing_verifying_and_grant_sets() -> None:
    short = b"k" * 31
    with pytest.raises(ConfigError, match="too short"):
        sign_grant(make_grant(), short)
    with pytest.raises(ConfigError, match="too short"):
        verify_grant(TOKEN, short, now=T0)
    with pytest.raises(ConfigError, match="too short"):
        GrantSet(short, [], agents=AGENTS)


# ----------------------------------------------------------------------------------- grant sets


def test_a_forged_grant_in_the_configuration_is_an_error_naming_its_position_not_its_content() -> None:
    good = sign_grant(make_grant(), KEY)
    forged = _grantees_widened_with_old_mac(good)
    with pytest.raises(
        ConfigError, match=r"grant #2 of 3 is refused: the grant's signature does not match"
    ) as info:
        GrantSet(KEY, [good, forged, good], agents=AGENTS, clock=Clock(T0))
    text = info.value.diagnostics()
    assert forged.split(".")[1][:12] not in text
    assert KEY.decode() not in text


def test_an_expired_grant_in_the_configuration_is_logged_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = make_grant(
        issued_at=T0 - timedelta(days=2), not_before=T0 - timedelta(days=2), expires_at=T0 - timedelta(days=1)
    )
    fresh = make_grant()
    caplog.set_level(logging.WARNING, logger="hoop_mcp.core.grants")
    grants, _ = grant_set(old, fresh)
    assert [g.grant_id for g in grants.grants] == [fresh.grant_id]
    assert f"grant #1 of 2 is dropped: grant {old.grant_id} expired" in caplog.text


@pytest.mark.anyio
async def test_a_covering_grant_admits_the_call_and_returns_its_evidence() -> None:
    grant = make_grant(effects=("write",), relations=("public.orders",), max_uses=2)
    grants, _ = grant_set(grant)
    store = FakeApprovalStore()
    call = make_call()
    evidence = await grants.admit(call, store)
    assert evidence is not None
    assert evidence.event == "grant_used"
    assert evidence.grant_id == grant.grant_id
    assert evidence.grant_use == 1
    assert evidence.actor == ALICE
    assert evidence.requester == CI
    assert evidence.approvers == (ALICE,)
    assert evidence.channel == "grant"
    assert evidence.state == "executed"
    assert evidence.rule_id == "writes-need-review"
    assert evidence.plan_digest == plan_digest(call.plan)
    assert store.grant_use_log == {grant.grant_id: [call.call_id]}


NOT_COVERED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "another subject": ({}, {"principal": BOB}),
    "another tool": ({}, {"tool": "describe_table"}),
    "another connection": ({}, {"connection": "billing"}),
    "no connection": ({}, {"connection": None}),
    "an effect the grant does not allow": ({"effects": ("read",)}, {}),
    "a relation outside the patterns": ({"relations": ("public.customers",)}, {}),
    "one of several relations outside the patterns": (
        {"relations": ("public.orders",)},
        {"plan": WRITE_ORDERS.model_copy(update={"relations_read": ("public.customers",)})},
    ),
    "no relation at all, under a relation restriction": (
        {"relations": ("public.*",)},
        {"plan": WRITE_ORDERS.model_copy(update={"relations_written": ()})},
    ),
    "another plan than the one digested": (
        {
            "plan_digest": plan_digest(
                WRITE_ORDERS.model_copy(update={"statement": "UPDATE orders SET x = 1"})
            )
        },
        {},
    ),
    "a namespace, which SQL plans do not have": ({"namespace": "prod"}, {}),
    "a branch, which SQL plans do not have": ({"branch": "main"}, {}),
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", sorted(NOT_COVERED), ids=str)
async def test_a_grant_does_not_cover_a_call_that_differs_from_it(case: str) -> None:
    grant_change, call_change = NOT_COVERED[case]
    grants, _ = grant_set(make_grant(**grant_change))
    store = FakeApprovalStore()
    assert await grants.admit(make_call(**call_change), store) is None
    assert store.grant_use_log == {}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("grant_change", "call_change"),
    [
        (
            {"relations": ("public.*",)},
            {"plan": WRITE_ORDERS.model_copy(update={"relations_read": ("public.customers",)})},
        ),
        ({"plan_digest": plan_digest(WRITE_ORDERS)}, {}),
        (
            {"plan_digest": plan_digest(WRITE_ORDERS)},
            {"plan": WRITE_ORDERS.model_copy(update={"estimate": {"rows": 9}})},
        ),
        ({"effects": ("ddl", "write")}, {}),
        ({"grantees": ("ci-deploy-?", "bob")}, {"principal": BOB}),
    ],
    ids=["all relations match", "same plan", "same plan, other estimate", "effect listed", "second pattern"],
)
async def test_a_grant_covers_calls_that_match_every_condition(
    grant_change: dict[str, Any], call_change: dict[str, Any]
) -> None:
    grants, _ = grant_set(make_grant(**grant_change))
    assert await grants.admit(make_call(**call_change), FakeApprovalStore()) is not None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("issuer", "review", "why"),
    [
        (
            Principal(subject="agent-7", issuer=IDP, groups=("dba",)),
            None,
            "agent principals can never approve",
        ),
        (
            Principal(subject="carol", issuer=IDP, groups=("dba", "bots")),
            None,
            "agent principals can never approve",
        ),
        (
            Principal(subject="alice", issuer="unsafe-static", groups=("dba",), unsafe_static=True),
            None,
            "agent principals can never approve",
        ),
        (CI.model_copy(update={"groups": ("dba",)}), None, "the requester can never approve"),
        (BOB, None, "not an approver for rule 'writes-need-review'"),
        (ALICE, ReviewSettings(approver_groups=("dba",), quorum=2), "a grant carries one human's approval"),
        (ALICE, ReviewSettings(approver_subjects=("dave",)), "not an approver"),
    ],
    ids=[
        "agent subject",
        "agent group",
        "unsafe static",
        "issuer is the requester",
        "not in groups",
        "quorum 2",
        "not in subjects",
    ],
)
async def test_a_covering_grant_is_not_usable_unless_its_issuer_could_approve_the_call_alone(
    issuer: Principal, review: ReviewSettings | None, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hoop_mcp.core.grants")
    grantees = ("ci-deploy-*",)
    grants, _ = grant_set(make_grant(issuer=issuer, grantees=grantees))
    store = FakeApprovalStore()
    assert await grants.admit(make_call(review=review), store) is None
    assert store.grant_use_log == {}
    assert why in caplog.text


@pytest.mark.anyio
async def test_an_issuer_in_the_approver_subjects_may_grant() -> None:
    issuer = Principal(subject="dave", issuer=IDP)
    grants, _ = grant_set(make_grant(issuer=issuer))
    assert await grants.admit(
        make_call(review=ReviewSettings(approver_subjects=("da*",))), FakeApprovalStore()
    )


@pytest.mark.anyio
async def test_uses_are_counted_and_a_used_up_grant_admits_nothing_more() -> None:
    grant = make_grant(max_uses=2)
    grants, _ = grant_set(grant)
    store = FakeApprovalStore()
    first = await grants.admit(make_call(), store)
    second = await grants.admit(make_call(), store)
    assert first is not None
    assert second is not None
    assert (first.grant_use, second.grant_use) == (1, 2)
    assert await grants.admit(make_call(), store) is None
    assert await store.grant_uses(grant.grant_id) == (2, False)


@pytest.mark.anyio
async def test_a_revoked_grant_admits_nothing() -> None:
    grant = make_grant(max_uses=5)
    grants, _ = grant_set(grant)
    store = FakeApprovalStore()
    await store.revoke_grant(grant.grant_id, by="alice", reason="leaked")
    assert await grants.admit(make_call(), store) is None


@pytest.mark.anyio
async def test_the_next_covering_grant_is_used_when_the_first_is_used_up() -> None:
    first, second = make_grant(), make_grant()
    grants, _ = grant_set(first, second)
    store = FakeApprovalStore()
    used = [await grants.admit(make_call(), store) for _ in range(3)]
    assert [e.grant_id if e else None for e in used] == [first.grant_id, second.grant_id, None]


@pytest.mark.anyio
async def test_a_grant_admits_only_inside_its_validity_window() -> None:
    grant = make_grant(not_before=T0 + timedelta(minutes=30), max_uses=5)
    grants, clock = grant_set(grant)
    assert [g.grant_id for g in grants.grants] == [grant.grant_id]  # not yet valid is kept
    store = FakeApprovalStore()
    assert await grants.admit(make_call(), store) is None
    clock.now = grant.not_before
    assert await grants.admit(make_call(), store) is not None
    clock.now = grant.expires_at + SKEW + timedelta(seconds=1)
    assert await grants.admit(make_call(), store) is None
    assert await store.grant_uses(grant.grant_id) == (1, False)


@pytest.mark.anyio
async def test_the_approval_service_admits_a_granted_call_without_holding_it(tmp_path: Path) -> None:
    grants, _ = grant_set(make_grant())
    store = FakeApprovalStore()
    audit = await SqliteAuditLog.open(tmp_path / "audit.db")
    try:
        service = ApprovalService(store=store, audit=audit, agents=AGENTS, grants=grants, clock=lambda: T0)
        admitted = await service.admit(make_call())
        assert isinstance(admitted, Admitted)
        assert admitted.evidence.event == "grant_used"
        assert store.approvals == {}
        held = await service.admit(make_call())  # the grant had one use
        assert isinstance(held, Pending)
    finally:
        await audit.close()
