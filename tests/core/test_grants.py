"""Grants: the signed token format, keys and rotation, every kind of tampering, matching, issuer
eligibility, use counting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import json
import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from hoop_mcp.core import grants as grants_module
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
    decode_grant_with_kid,
    key_id,
    load_signing_key,
    load_verify_key,
    new_grant_id,
    private_key_pem,
    public_key_text,
    sign_grant,
    verify_grant,
)
from hoop_mcp.core.models import Decision, Plan, Principal, ReviewSettings, Verdict
from hoop_mcp.stores.sqlite import SqliteAuditLog
from tests.support.fake_approval_store import FakeApprovalStore

#: The approvers' signing key, and the public key a server verifies with.
SIGNING_KEY = Ed25519PrivateKey.generate()
KEY = SIGNING_KEY.public_key()
#: Someone else's key pair (an attacker's, or another deployment's).
OTHER_SIGNING_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = OTHER_SIGNING_KEY.public_key()
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


def grant_set(
    *grants: Grant, now: datetime = T0, key: Ed25519PrivateKey = SIGNING_KEY
) -> tuple[GrantSet, Clock]:
    clock = Clock(now)
    tokens = [sign_grant(g, key) for g in grants]
    return (
        GrantSet(
            verify_keys=[key.public_key()], tokens=tokens, agents=AGENTS, clock_skew_seconds=30, clock=clock
        ),
        clock,
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def kid_of(key: Ed25519PublicKey) -> str:
    """The documented key id, computed independently: sha256 of the raw public key, 16 hex digits."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def signed(payload: bytes, key: Ed25519PrivateKey = SIGNING_KEY) -> str:
    """A token made independently from the documented format (not through sign_grant)."""
    body = b64(payload)
    signature = key.sign(f"hoopgrant2.{body}".encode())
    return f"hoopgrant2.{body}.{b64(signature)}"


def with_kid(grant: Grant, key: Ed25519PrivateKey = SIGNING_KEY, **extra: Any) -> bytes:
    """The canonical payload of ``grant`` as the format documents it (``kid`` added), plus ``extra``."""
    data = {**json.loads(grant.payload()), "kid": kid_of(key.public_key()), **extra}
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


TOKEN = sign_grant(make_grant(max_uses=3), SIGNING_KEY)


# ------------------------------------------------------------------------------------ the format


def test_a_signed_grant_verifies_to_the_same_grant() -> None:
    grant = make_grant(effects=("write",), relations=("public.*",), max_uses=5)
    token = sign_grant(grant, SIGNING_KEY)
    assert verify_grant(token, KEY, now=T0 + timedelta(minutes=5), skew=SKEW) == grant
    assert verify_grant(token, [KEY], now=T0 + timedelta(minutes=5), skew=SKEW) == grant
    assert decode_grant_with_kid(token, [OTHER_KEY, KEY]) == (grant, key_id(KEY))


def test_the_token_is_prefix_payload_with_kid_and_ed25519_over_prefix_and_payload_as_documented() -> None:
    grant = make_grant()
    token = sign_grant(grant, SIGNING_KEY)
    prefix, body, sig = token.split(".")
    assert prefix == "hoopgrant2"
    assert "=" not in token
    # The signature is Ed25519 by the signing key over "hoopgrant2." + the payload segment.
    KEY.verify(unb64(sig), f"hoopgrant2.{body}".encode())
    assert len(unb64(sig)) == 64
    payload = json.loads(unb64(body))
    assert payload["grant_id"] == grant.grant_id
    assert payload["issuer"]["subject"] == "alice"
    assert payload["kid"] == kid_of(KEY) == key_id(KEY)
    assert len(payload["kid"]) == 16
    # Canonical JSON: sorted keys, no whitespace.
    raw = unb64(body)
    assert raw == json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert raw == with_kid(grant)
    assert signed(raw) == token  # Ed25519 is deterministic


def _flip_payload_char(token: str) -> str:
    prefix, body, sig = token.split(".")
    i = len(body) // 2
    body = body[:i] + ("B" if body[i] != "B" else "C") + body[i + 1 :]
    return f"{prefix}.{body}.{sig}"


def _changed_with_old_signature(token: str, **changes: Any) -> str:
    prefix, body, sig = token.split(".")
    payload = {**json.loads(unb64(body)), **changes}
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return f"{prefix}.{b64(raw)}.{sig}"


def _reencoded_with_old_signature(token: str) -> str:
    return _changed_with_old_signature(token, max_uses=1000)


def _grantees_widened_with_old_signature(token: str) -> str:
    return _changed_with_old_signature(token, grantees=["*"])


def _signature_bit_flipped(token: str) -> str:
    prefix, body, sig = token.split(".")
    raw = bytearray(unb64(sig))
    raw[10] ^= 0x01
    return f"{prefix}.{body}.{b64(bytes(raw))}"


TAMPERS: dict[str, tuple[Callable[[str], str], str]] = {
    "flipped payload character": (_flip_payload_char, "signature does not match|not JSON"),
    "re-encoded payload with the old signature": (_reencoded_with_old_signature, "signature does not match"),
    "grantees widened with the old signature": (
        _grantees_widened_with_old_signature,
        "signature does not match",
    ),
    "kid swapped for another trusted-looking kid": (
        lambda t: _changed_with_old_signature(t, kid=kid_of(OTHER_KEY)),
        "does not trust",
    ),
    "kid removed": (lambda t: signed(make_grant().payload()), "no valid key id"),
    "kid not hex": (lambda t: signed(with_kid(make_grant(), kid="KEY-1")), "no valid key id"),
    "signature bit flipped": (_signature_bit_flipped, "signature does not match"),
    "signature cut short": (lambda t: t[:-4], "signature does not match|not canonical"),
    "signature segment dropped": (
        lambda t: t.rsplit(".", 1)[0],
        "expected hoopgrant2.<payload>.<signature>",
    ),
    "extra segment": (lambda t: t + ".AAAA", "expected hoopgrant2.<payload>.<signature>"),
    "wrong prefix": (lambda t: "hoopgrant3" + t[len("hoopgrant2") :], "prefix wrong"),
    "padding added": (lambda t: t + "=", "not base64url"),
    "not base64": (lambda t: "hoopgrant2.!!!!." + t.split(".")[2], "payload is not base64url"),
    "empty payload": (lambda t: "hoopgrant2.." + t.split(".")[2], "payload is not base64url"),
    "oversized": (lambda t: "hoopgrant2." + "A" * MAX_TOKEN_CHARS + "." + t.split(".")[2], "too large"),
    "whitespace inside": (lambda t: t[:20] + " " + t[20:], "not base64url"),
    "signed with another key": (
        lambda t: sign_grant(make_grant(), OTHER_SIGNING_KEY),
        "signed by a key this server does not trust",
    ),
    "another key's signature under this key's kid": (
        lambda t: signed(with_kid(make_grant()), OTHER_SIGNING_KEY),
        "signature does not match",
    ),
    "a signature from another token": (
        lambda t: t.rsplit(".", 1)[0] + "." + sign_grant(make_grant(), SIGNING_KEY).split(".")[2],
        "signature does not match",
    ),
    "signed payload that is not JSON": (lambda t: signed(b"\xff not json"), "not JSON"),
    "signed payload that is a JSON list": (lambda t: signed(b"[1,2]"), "no valid key id"),
    "signed payload missing fields": (
        lambda t: signed(json.dumps({"grant_id": "grt_abcdefghij", "kid": kid_of(KEY)}).encode()),
        "invalid grant payload",
    ),
    "signed payload with an unknown key": (
        lambda t: signed(with_kid(make_grant(), admin=True)),
        "invalid grant payload: admin",
    ),
    "signed payload valid for a year": (
        lambda t: signed(with_kid(make_grant(), expires_at=(T0 + timedelta(days=365)).isoformat())),
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
    for secret_part in (public_key_text(KEY), *TOKEN.split(".")[1:], *bad.split(".")[1:]):
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


def test_the_last_character_of_the_signature_cannot_be_swapped_for_an_equivalent_encoding() -> None:
    # A 64-byte signature is 86 base64 characters whose last one carries 4 unused bits: a lenient
    # decoder would accept 16 different last characters for the same signature.
    prefix, body, sig = TOKEN.split(".")
    assert len(sig) == 86
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    base = alphabet.index(sig[-1]) & ~0b1111
    for ch in alphabet[base : base + 16]:
        if ch != sig[-1]:
            with pytest.raises(GrantError, match="not canonical"):
                verify_grant(f"{prefix}.{body}.{sig[:-1]}{ch}", KEY, now=T0, skew=SKEW)


def test_a_grant_is_refused_once_expired_beyond_the_clock_skew_and_accepted_within_it() -> None:
    grant = make_grant()
    token = sign_grant(grant, SIGNING_KEY)
    assert verify_grant(token, KEY, now=grant.expires_at + SKEW - timedelta(seconds=1), skew=SKEW) == grant
    with pytest.raises(GrantExpired, match=rf"grant {grant.grant_id} expired at"):
        verify_grant(token, KEY, now=grant.expires_at + SKEW + timedelta(seconds=1), skew=SKEW)


def test_a_grant_is_refused_before_it_is_valid_beyond_the_clock_skew_and_accepted_within_it() -> None:
    grant = make_grant(not_before=T0 + timedelta(minutes=10))
    token = sign_grant(grant, SIGNING_KEY)
    early = grant.not_before - SKEW - timedelta(seconds=1)
    with pytest.raises(GrantNotYetValid, match="is not valid before"):
        verify_grant(token, KEY, now=early, skew=SKEW)
    assert verify_grant(token, KEY, now=grant.not_before - SKEW + timedelta(seconds=1), skew=SKEW) == grant


def test_decode_checks_the_signature_but_not_the_times() -> None:
    grant = make_grant()
    assert decode_grant(sign_grant(grant, SIGNING_KEY), KEY) == grant
    with pytest.raises(GrantError, match="does not trust"):
        decode_grant(sign_grant(grant, OTHER_SIGNING_KEY), KEY)


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


# ------------------------------------------------------------------------------ keys and minting


def cast_any(value: object) -> Any:
    """Lets a test pass what the types forbid, to see it refused at run time."""
    return value


def test_the_verifying_side_takes_public_keys_only_and_has_no_way_to_sign() -> None:
    # What a server holds is a public key: it verifies, and cannot produce a signature.
    assert isinstance(KEY, Ed25519PublicKey)
    assert not hasattr(KEY, "sign")
    # Every verifying entry point refuses a private key (or an HMAC-style shared secret)...
    for bad in (SIGNING_KEY, b"k" * 32, "shared-secret", public_key_text(KEY)):
        with pytest.raises(TypeError, match="public key"):
            verify_grant(TOKEN, cast_any(bad), now=T0)
        with pytest.raises(TypeError, match="public key"):
            decode_grant(TOKEN, [cast_any(bad)])
        with pytest.raises(TypeError, match="public key"):
            GrantSet(verify_keys=[cast_any(bad)], tokens=[], agents=AGENTS)
    with pytest.raises(TypeError, match="private"):
        GrantSet(verify_keys=[KEY, cast_any(SIGNING_KEY)], tokens=[TOKEN], agents=AGENTS)
    # ...and signing takes a private key, so a public key cannot be used to mint.
    with pytest.raises(TypeError, match="private key"):
        sign_grant(make_grant(), cast_any(KEY))
    # The constructor's signature names verify keys and nothing that could sign.
    params = inspect.signature(GrantSet).parameters
    assert "verify_keys" in params
    assert not {"key", "signing_key", "private_key", "grant_key"} & set(params)


def test_a_grant_an_attacker_signs_with_their_own_key_is_refused_even_naming_a_real_approver() -> None:
    # Whoever reads the server's configuration learns only public keys; the best they can do is sign
    # with a private key of their own, naming a real approver as issuer and themselves as grantee.
    attacker = Ed25519PrivateKey.generate()
    forged = make_grant(issuer=ALICE, grantees=("*",), max_uses=1000, reason="approved, honest")
    # Under the attacker's own kid: the server does not trust it.
    with pytest.raises(GrantError, match="signed by a key this server does not trust"):
        verify_grant(sign_grant(forged, attacker), KEY, now=T0)
    # Claiming the approvers' kid: the signature does not verify with the approvers' public key.
    with pytest.raises(GrantError, match="signature does not match"):
        verify_grant(signed(with_kid(forged), attacker), KEY, now=T0)
    # Nor can they pass the server's public key off as a signing key: 32 raw public bytes are not the
    # private key, so what they sign is under another kid.
    impostor = Ed25519PrivateKey.from_private_bytes(raw_public(KEY))
    with pytest.raises(GrantError, match="does not trust"):
        verify_grant(sign_grant(forged, impostor), KEY, now=T0)
    with pytest.raises(ConfigError, match="grant #1 of 1 is refused"):
        GrantSet(verify_keys=[KEY], tokens=[sign_grant(forged, attacker)], agents=AGENTS, clock=Clock(T0))


def test_key_rotation_accepts_grants_from_every_listed_key_and_refuses_a_removed_one() -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    by_old, by_new = make_grant(), make_grant()
    old_token, new_token = sign_grant(by_old, old), sign_grant(by_new, new)
    both = [old.public_key(), new.public_key()]
    assert verify_grant(old_token, both, now=T0) == by_old
    assert verify_grant(new_token, both, now=T0) == by_new
    assert decode_grant_with_kid(old_token, both)[1] == key_id(old.public_key())
    assert decode_grant_with_kid(new_token, both)[1] == key_id(new.public_key())
    rotated = GrantSet(verify_keys=both, tokens=[old_token, new_token], agents=AGENTS, clock=Clock(T0))
    assert [g.grant_id for g in rotated.grants] == [by_old.grant_id, by_new.grant_id]
    assert set(rotated.kids) == {key_id(k) for k in both}
    # The old key is removed from the list: its grants are refused, the new key's still verify.
    assert verify_grant(new_token, [new.public_key()], now=T0) == by_new
    with pytest.raises(GrantError, match=rf"does not trust \(kid {key_id(old.public_key())}\)"):
        verify_grant(old_token, [new.public_key()], now=T0)
    with pytest.raises(ConfigError, match=r"grant #1 of 2 is refused: .*does not trust"):
        GrantSet(
            verify_keys=[new.public_key()], tokens=[old_token, new_token], agents=AGENTS, clock=Clock(T0)
        )


def test_the_same_verify_key_listed_twice_counts_once_and_no_key_is_an_error() -> None:
    assert GrantSet(verify_keys=[KEY, KEY], tokens=[TOKEN], agents=AGENTS, clock=Clock(T0)).kids == (
        key_id(KEY),
    )
    with pytest.raises(ConfigError, match="no grant verify key"):
        GrantSet(verify_keys=[], tokens=[TOKEN], agents=AGENTS)


def test_an_hmac_grant_of_the_previous_format_is_refused_with_the_reissue_message() -> None:
    secret = secrets.token_urlsafe(32).encode()
    body = b64(make_grant().payload())
    mac = hmac.new(secret, f"hoopgrant1.{body}".encode(), hashlib.sha256).digest()
    legacy = f"hoopgrant1.{body}.{b64(mac)}"
    with pytest.raises(GrantError, match="HMAC grants are no longer accepted") as info:
        verify_grant(legacy, KEY, now=T0)
    assert "re-issue" in info.value.diagnostics()
    assert body[:16] not in info.value.diagnostics()
    with pytest.raises(ConfigError, match=r"grant #1 of 1 is refused: .*HMAC grants are no longer accepted"):
        GrantSet(verify_keys=[KEY], tokens=[legacy], agents=AGENTS, clock=Clock(T0))


def test_keys_load_from_pem_or_raw_base64url_and_round_trip() -> None:
    pem_private = private_key_pem(SIGNING_KEY)
    assert pem_private.startswith("-----BEGIN PRIVATE KEY-----")
    loaded = load_signing_key(pem_private)
    assert key_id(loaded.public_key()) == key_id(KEY)
    raw_private = SIGNING_KEY.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    for text in (b64(raw_private), base64.b64encode(raw_private).decode(), "  " + b64(raw_private) + "\n"):
        assert key_id(load_signing_key(text).public_key()) == key_id(KEY)
    pem_public = KEY.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    for text in (pem_public, public_key_text(KEY), base64.b64encode(raw_public(KEY)).decode()):
        assert key_id(load_verify_key(text)) == key_id(KEY)
    token = sign_grant(make_grant(), load_signing_key(pem_private))
    assert verify_grant(token, load_verify_key(public_key_text(KEY)), now=T0).issuer == ALICE


def _ec_pem(private: bool) -> str:
    key = generate_private_key(SECP256R1())
    if private:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (private_key_pem(SIGNING_KEY), "this is a PRIVATE key; grant_verify_keys takes public keys only"),
        ("", "must not be empty"),
        ("not a key!", "PEM or 32 bytes in base64url"),
        (b64(b"\x01" * 31), "32 bytes in base64url, got 31 bytes"),
        (b64(b"\x01" * 64), "32 bytes in base64url, got 64 bytes"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a valid PEM public key"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "expected a PEM"),
        (_ec_pem(private=False), "grants use Ed25519"),
    ],
    ids=["private key", "empty", "garbage", "31 bytes", "64 bytes", "bad pem", "certificate", "ec key"],
)
def test_a_bad_verify_key_is_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        load_verify_key(text)
    for line in text.splitlines():  # the key itself is never echoed
        if len(line) >= 16 and not line.startswith("-----"):
            assert line not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            KEY.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode(),
            "this is a public key; grant_signing_key needs the private key",
        ),
        ("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", "encrypted"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a valid PKCS8 PEM"),
        (_ec_pem(private=True), "grants use Ed25519"),
        (b64(b"secret"), "32 bytes in base64url, got 6 bytes"),
        ("secret", "not canonical base64url"),
        ("", "must not be empty"),
    ],
    ids=["public key", "encrypted", "bad pem", "ec key", "short", "not canonical", "empty"],
)
def test_a_bad_signing_key_is_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_signing_key(text)


def test_the_module_has_no_shared_secret_code_path_left() -> None:
    source = inspect.getsource(grants_module)
    assert "import hmac" not in source
    assert "HMAC-SHA256(" not in source


# ----------------------------------------------------------------------------------- grant sets


def test_a_forged_grant_in_the_configuration_is_an_error_naming_its_position_not_its_content() -> None:
    good = sign_grant(make_grant(), SIGNING_KEY)
    forged = _grantees_widened_with_old_signature(good)
    with pytest.raises(
        ConfigError, match=r"grant #2 of 3 is refused: the grant's signature does not match"
    ) as info:
        GrantSet(verify_keys=[KEY], tokens=[good, forged, good], agents=AGENTS, clock=Clock(T0))
    text = info.value.diagnostics()
    assert forged.split(".")[1][:12] not in text
    assert public_key_text(KEY) not in text
    assert "grant_verify_keys" in text


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
