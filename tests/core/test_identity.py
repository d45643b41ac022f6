"""OIDC authentication against a real issuer over HTTP (tests/support/oidc.py)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hoop_mcp.core.errors import AuthenticationError, ConfigError
from hoop_mcp.core.identity import OidcAuthenticator, OidcSettings, UnsafeStaticPrincipal, read_token
from hoop_mcp.core.models import Principal
from tests.support import oidc as oidc_support
from tests.support.oidc import (
    OidcIssuer,
    b64url,
    compact,
    hs256_with_secret,
    new_ec_key,
    new_rsa_key,
    public_pem,
    running_issuer,
)

#: The shared fixture (the lead may also register it for every test module from tests/conftest.py).
oidc_issuer = oidc_support.oidc_issuer


class FakeClock:
    """Wall time plus an offset the test moves forward (no sleeping)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def make_auth(
    issuer: OidcIssuer, *, clock: Callable[[], float] | None = None, **overrides: Any
) -> OidcAuthenticator:
    options: dict[str, Any] = {"issuer": issuer.issuer, "audience": issuer.audience, **overrides}
    return OidcAuthenticator(OidcSettings(**options), clock=clock)


def rejection(auth: OidcAuthenticator, token: str) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as info:
        auth.authenticate(token)
    return info.value


# -- settings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "issuer",
    ["http://idp.example.com", "ftp://idp.example.com", "idp.example.com", "https://u:p@idp.example"],
)
def test_settings_refuse_non_https_issuers_outside_loopback(issuer: str) -> None:
    with pytest.raises(ValidationError, match="issuer"):
        OidcSettings(issuer=issuer, audience="a")


@pytest.mark.parametrize(
    "issuer", ["https://idp.example.com", "http://127.0.0.1:8080", "http://localhost:9000/realms/x"]
)
def test_settings_accept_https_and_loopback_http_issuers(issuer: str) -> None:
    assert OidcSettings(issuer=issuer, audience="a").issuer == issuer


def test_settings_refuse_a_plain_http_jwks_url_outside_loopback() -> None:
    with pytest.raises(ValidationError, match="jwks_url"):
        OidcSettings(issuer="https://idp.example.com", audience="a", jwks_url="http://idp.example.com/jwks")


@pytest.mark.parametrize("alg", ["none", "None", "HS256", "HS384", "HS512", "hs256", "XX1"])
def test_settings_refuse_unsigned_symmetric_and_unknown_algorithms(alg: str) -> None:
    with pytest.raises(ValidationError, match="algorithm"):
        OidcSettings(issuer="https://idp.example.com", audience="a", algorithms=("RS256", alg))


@pytest.mark.parametrize("leeway", [-1, 301])
def test_settings_refuse_leeway_outside_zero_to_three_hundred_seconds(leeway: int) -> None:
    with pytest.raises(ValidationError):
        OidcSettings(issuer="https://idp.example.com", audience="a", leeway_seconds=leeway)


def test_settings_refuse_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        OidcSettings(issuer="https://idp.example.com", audience="a", verify=False)  # type: ignore[call-arg]


# -- valid tokens -------------------------------------------------------------------------------------


def test_valid_rs256_token_yields_principal_with_groups_name_and_email(oidc_issuer: OidcIssuer) -> None:
    auth = make_auth(oidc_issuer)
    token = oidc_issuer.mint(
        sub="alice", groups=["dba", "oncall"], extra={"name": "Alice A.", "email": "alice@example.com"}
    )
    assert auth.authenticate(token) == Principal(
        subject="alice",
        issuer=oidc_issuer.issuer,
        groups=("dba", "oncall"),
        name="Alice A.",
        email="alice@example.com",
    )
    assert oidc_issuer.discovery_fetches == 1
    assert oidc_issuer.jwks_fetches == 1


def test_valid_es256_token_yields_principal(oidc_issuer: OidcIssuer) -> None:
    principal = make_auth(oidc_issuer).authenticate(oidc_issuer.mint(alg="ES256", sub="bot", groups=["ci"]))
    assert (principal.subject, principal.groups, principal.unsafe_static) == ("bot", ("ci",), False)


def test_keys_are_cached_between_tokens(oidc_issuer: OidcIssuer) -> None:
    auth = make_auth(oidc_issuer)
    for sub in ("a", "b", "c"):
        assert auth.authenticate(oidc_issuer.mint(sub=sub)).subject == sub
    assert oidc_issuer.jwks_fetches == 1


def test_explicit_jwks_url_skips_discovery(oidc_issuer: OidcIssuer) -> None:
    auth = make_auth(oidc_issuer, jwks_url=oidc_issuer.jwks_url)
    assert auth.authenticate(oidc_issuer.mint()).subject == "alice"
    assert oidc_issuer.discovery_fetches == 0


@pytest.mark.anyio
async def test_authenticate_async_verifies_in_a_worker_thread(oidc_issuer: OidcIssuer) -> None:
    principal = await make_auth(oidc_issuer).authenticate_async(oidc_issuer.mint(sub="async-alice"))
    assert principal.subject == "async-alice"


def test_audience_list_containing_ours_is_accepted(oidc_issuer: OidcIssuer) -> None:
    token = oidc_issuer.mint(aud=["other-api", oidc_issuer.audience])
    assert make_auth(oidc_issuer).authenticate(token).subject == "alice"


def test_name_falls_back_to_preferred_username(oidc_issuer: OidcIssuer) -> None:
    token = oidc_issuer.mint(extra={"preferred_username": "alice.a"})
    assert make_auth(oidc_issuer).authenticate(token).name == "alice.a"


# -- time ---------------------------------------------------------------------------------------------


def test_expired_token_is_rejected_naming_the_expiry_time(oidc_issuer: OidcIssuer) -> None:
    error = rejection(make_auth(oidc_issuer), oidc_issuer.mint(exp_in=-120))
    assert error.message.startswith("token expired at 20")


def test_token_expired_within_the_leeway_is_accepted(oidc_issuer: OidcIssuer) -> None:
    assert make_auth(oidc_issuer).authenticate(oidc_issuer.mint(exp_in=-10)).subject == "alice"


def test_zero_leeway_rejects_a_just_expired_token(oidc_issuer: OidcIssuer) -> None:
    error = rejection(make_auth(oidc_issuer, leeway_seconds=0), oidc_issuer.mint(exp_in=-2))
    assert "expired" in error.message


def test_token_not_yet_valid_is_rejected(oidc_issuer: OidcIssuer) -> None:
    error = rejection(make_auth(oidc_issuer), oidc_issuer.mint(nbf_in=120))
    assert error.message.startswith("token not valid before 20")


def test_token_issued_in_the_future_is_rejected(oidc_issuer: OidcIssuer) -> None:
    error = rejection(make_auth(oidc_issuer), oidc_issuer.mint(iat_in=600, exp_in=900))
    assert "issued in the future" in error.message


def test_injected_clock_decides_expiry(oidc_issuer: OidcIssuer) -> None:
    clock = FakeClock()
    auth = make_auth(oidc_issuer, clock=clock)
    token = oidc_issuer.mint(exp_in=300)
    assert auth.authenticate(token).subject == "alice"
    clock.offset = 400
    assert "expired" in rejection(auth, token).message


@pytest.mark.parametrize("exp", ["soon", True, None, [1]])
def test_non_numeric_time_claims_are_rejected(oidc_issuer: OidcIssuer, exp: Any) -> None:
    token = oidc_issuer.mint(extra={"exp": exp})
    error = rejection(make_auth(oidc_issuer), token)
    assert "exp" in error.message


# -- audience, issuer, claims -------------------------------------------------------------------------


def test_wrong_audience_is_rejected_naming_the_expected_one(oidc_issuer: OidcIssuer) -> None:
    error = rejection(make_auth(oidc_issuer), oidc_issuer.mint(aud="some-other-api"))
    assert error.message.startswith(f"audience mismatch: expected {oidc_issuer.audience!r}")


def test_wrong_issuer_is_rejected_even_when_signed_by_a_trusted_key(oidc_issuer: OidcIssuer) -> None:
    error = rejection(make_auth(oidc_issuer), oidc_issuer.mint(iss="https://evil.example.com"))
    assert error.message.startswith(f"issuer mismatch: expected {oidc_issuer.issuer!r}")


def test_missing_sub_is_rejected(oidc_issuer: OidcIssuer) -> None:
    error = rejection(make_auth(oidc_issuer), oidc_issuer.mint(sub=None))
    assert error.message == "missing required claim 'sub'"


def test_empty_sub_is_rejected_even_when_not_required(oidc_issuer: OidcIssuer) -> None:
    auth = make_auth(oidc_issuer, required_claims=("exp",))
    error = rejection(auth, oidc_issuer.mint(sub=""))
    assert error.message.startswith("missing subject")


def test_missing_exp_is_rejected_by_default(oidc_issuer: OidcIssuer) -> None:
    error = rejection(make_auth(oidc_issuer), oidc_issuer.mint(exp_in=None))
    assert error.message == "missing required claim 'exp'"


def test_subject_claim_is_configurable(oidc_issuer: OidcIssuer) -> None:
    auth = make_auth(oidc_issuer, subject_claim="oid")
    assert auth.authenticate(oidc_issuer.mint(extra={"oid": "object-42"})).subject == "object-42"


# -- groups -------------------------------------------------------------------------------------------


def test_groups_claim_can_be_a_nested_path(oidc_issuer: OidcIssuer) -> None:
    auth = make_auth(oidc_issuer, groups_claim="realm_access.roles")
    token = oidc_issuer.mint(groups=["ignored"], extra={"realm_access": {"roles": ["admin", "dba"]}})
    assert auth.authenticate(token).groups == ("admin", "dba")


def test_groups_claim_name_containing_dots_is_read_as_one_claim_first(oidc_issuer: OidcIssuer) -> None:
    claim = "https://example.com/groups"
    auth = make_auth(oidc_issuer, groups_claim=claim)
    assert auth.authenticate(oidc_issuer.mint(extra={claim: ["ns-group"]})).groups == ("ns-group",)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("dba oncall", ("dba", "oncall")), ("dba, oncall,,dba", ("dba", "oncall")), ("", ()), ([], ())],
)
def test_groups_claim_accepts_space_or_comma_separated_strings(
    oidc_issuer: OidcIssuer, raw: Any, expected: tuple[str, ...]
) -> None:
    assert make_auth(oidc_issuer).authenticate(oidc_issuer.mint(groups=raw)).groups == expected


def test_missing_groups_claim_means_no_groups(oidc_issuer: OidcIssuer) -> None:
    assert make_auth(oidc_issuer).authenticate(oidc_issuer.mint(groups=None)).groups == ()


@pytest.mark.parametrize("raw", [{"admin": True}, ["dba", 7], 42, [["nested"]]])
def test_wrong_typed_groups_claim_means_no_groups_and_is_logged(
    oidc_issuer: OidcIssuer, raw: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hoop_mcp.core.identity"):
        principal = make_auth(oidc_issuer).authenticate(oidc_issuer.mint(groups=raw))
    assert principal.groups == ()
    assert "groups claim 'groups' has unsupported type" in caplog.text


# -- signatures and algorithms ------------------------------------------------------------------------


def test_foreign_key_under_a_known_kid_is_rejected(oidc_issuer: OidcIssuer) -> None:
    token = oidc_issuer.mint(kid="rsa-1", signing_key=new_rsa_key())
    assert rejection(make_auth(oidc_issuer), token).message.startswith("invalid signature (kid='rsa-1'")


def test_foreign_ec_key_under_a_known_kid_is_rejected(oidc_issuer: OidcIssuer) -> None:
    token = oidc_issuer.mint(kid="ec-1", alg="ES256", signing_key=new_ec_key())
    assert rejection(make_auth(oidc_issuer), token).message.startswith("invalid signature")


def test_tampered_payload_is_rejected(oidc_issuer: OidcIssuer) -> None:
    header, _, signature = oidc_issuer.mint(sub="alice").split(".")
    forged = b64url(json.dumps(oidc_issuer.claims(sub="root")).encode())
    assert rejection(make_auth(oidc_issuer), f"{header}.{forged}.{signature}").message.startswith(
        "invalid signature"
    )


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_unsigned_alg_none_token_is_rejected(oidc_issuer: OidcIssuer, alg: str) -> None:
    token = compact({"alg": alg, "kid": "rsa-1"}, oidc_issuer.claims(), lambda _: b"")
    token_with_sig = compact({"alg": alg, "kid": "rsa-1"}, oidc_issuer.claims(), lambda _: b"x")
    auth = make_auth(oidc_issuer)
    assert rejection(auth, token).message.startswith("malformed token")  # empty signature segment
    assert rejection(auth, token_with_sig).message.startswith("algorithm not allowed")
    assert oidc_issuer.jwks_fetches == 0


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
def test_hs256_signed_with_the_public_key_pem_is_rejected(oidc_issuer: OidcIssuer, kid: str) -> None:
    pem = public_pem(oidc_issuer.key(kid).private)
    token = compact({"alg": "HS256", "typ": "JWT", "kid": kid}, oidc_issuer.claims(), hs256_with_secret(pem))
    assert rejection(make_auth(oidc_issuer), token).message.startswith("algorithm not allowed: 'HS256'")


def test_header_alg_must_match_the_key_type(oidc_issuer: OidcIssuer) -> None:
    # An EC signature presented under the RSA key's kid.
    token = oidc_issuer.mint(kid="rsa-1", alg="ES256", signing_key=new_ec_key())
    assert "does not fit algorithm ES256" in rejection(make_auth(oidc_issuer), token).message


def test_header_alg_must_match_the_algorithm_the_jwks_pins_for_the_key(oidc_issuer: OidcIssuer) -> None:
    # The RSA key is published with alg RS256; a PS256 signature by the same key is still refused.
    token = oidc_issuer.mint(kid="rsa-1", alg="PS256")
    assert "does not fit algorithm PS256" in rejection(make_auth(oidc_issuer), token).message


def test_algorithm_outside_the_allow_list_is_rejected(oidc_issuer: OidcIssuer) -> None:
    auth = make_auth(oidc_issuer, algorithms=("RS256",))
    assert rejection(auth, oidc_issuer.mint(alg="ES256")).message.startswith("algorithm not allowed: 'ES256'")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ({"crit": ["exp"], "exp": 1}, "unsupported token: critical header extensions are not accepted"),
        ({"b64": True, "crit": ["b64"]}, "unsupported token: critical header extensions are not accepted"),
        ({"b64": False, "crit": ["b64"]}, "malformed token: the header is not valid base64url JSON"),
    ],
)
def test_critical_header_extensions_are_rejected(
    oidc_issuer: OidcIssuer, header: dict[str, Any], expected: str
) -> None:
    token = compact({"alg": "RS256", "kid": "rsa-1", **header}, oidc_issuer.claims(), lambda _: b"sig")
    assert rejection(make_auth(oidc_issuer), token).message == expected
    assert oidc_issuer.jwks_fetches == 0


def test_token_without_kid_is_verified_with_the_only_fitting_key(oidc_issuer: OidcIssuer) -> None:
    token = jwt.encode(oidc_issuer.claims(), oidc_issuer.key("rsa-1").private, algorithm="RS256")
    assert make_auth(oidc_issuer).authenticate(token).subject == "alice"


def test_token_without_kid_is_rejected_when_several_keys_fit(oidc_issuer: OidcIssuer) -> None:
    oidc_issuer.rotate_key()  # now two RSA keys are published
    token = jwt.encode(oidc_issuer.claims(), oidc_issuer.key("rsa-1").private, algorithm="RS256")
    assert "no kid" in rejection(make_auth(oidc_issuer), token).message


# -- key rotation and the refetch cooldown ------------------------------------------------------------


def test_rotated_in_key_is_fetched_once_and_accepted(oidc_issuer: OidcIssuer) -> None:
    auth = make_auth(oidc_issuer)
    assert auth.authenticate(oidc_issuer.mint()).subject == "alice"
    assert oidc_issuer.jwks_fetches == 1
    new_kid = oidc_issuer.rotate_key()
    assert auth.authenticate(oidc_issuer.mint(kid=new_kid, sub="bob")).subject == "bob"
    assert oidc_issuer.jwks_fetches == 2


def test_second_unknown_kid_within_the_cooldown_is_rejected_without_a_fetch(oidc_issuer: OidcIssuer) -> None:
    auth = make_auth(oidc_issuer, jwks_refetch_cooldown_seconds=60)
    auth.authenticate(oidc_issuer.mint(kid=oidc_issuer.rotate_key()))
    assert oidc_issuer.jwks_fetches == 1  # first use: the rotated key was already published
    auth.authenticate(oidc_issuer.mint(kid=oidc_issuer.rotate_key()))
    assert oidc_issuer.jwks_fetches == 2  # unknown kid: one refetch
    third = oidc_issuer.rotate_key()
    error = rejection(auth, oidc_issuer.mint(kid=third))
    assert error.message == f"unknown signing key (kid={third!r})"
    assert oidc_issuer.jwks_fetches == 2


def test_unknown_kid_refetches_again_once_the_cooldown_has_passed(oidc_issuer: OidcIssuer) -> None:
    clock = FakeClock()
    auth = make_auth(oidc_issuer, clock=clock, jwks_refetch_cooldown_seconds=60)
    auth.authenticate(oidc_issuer.mint())
    auth.authenticate(oidc_issuer.mint(kid=oidc_issuer.rotate_key()))
    later = oidc_issuer.mint(kid=oidc_issuer.rotate_key(), exp_in=3600)
    rejection(auth, later)
    assert oidc_issuer.jwks_fetches == 2
    clock.offset = 61
    assert auth.authenticate(later).subject == "alice"
    assert oidc_issuer.jwks_fetches == 3


def test_garbage_kids_cause_at_most_one_refetch_per_cooldown(oidc_issuer: OidcIssuer) -> None:
    auth = make_auth(oidc_issuer)
    for n in range(20):
        rejection(auth, oidc_issuer.mint(kid=f"made-up-{n}", signing_key=new_ec_key(), alg="ES256"))
    assert oidc_issuer.jwks_fetches == 2  # the first load, then one refetch


def test_withdrawn_key_stops_being_trusted_after_the_cache_max_age(oidc_issuer: OidcIssuer) -> None:
    clock = FakeClock()
    auth = make_auth(oidc_issuer, clock=clock, jwks_max_age_seconds=600)
    old_token = oidc_issuer.mint(exp_in=7200)
    assert auth.authenticate(old_token).subject == "alice"
    oidc_issuer.rotate_key(keep_old=False)
    assert auth.authenticate(old_token).subject == "alice"  # still cached
    clock.offset = 601
    assert rejection(auth, old_token).message == "unknown signing key (kid='rsa-1')"


# -- malformed tokens ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "not a jwt at all",
        "a.b",
        "a.b.c.d",
        "....",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig\x00",
        "\x00\x00\x00",
        " eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
        "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
        "bm90IGpzb24.e30.c2ln",  # header is base64 but not JSON
        "W10.e30.c2ln",  # header is a JSON list
        "é.é.é",
    ],
)
def test_malformed_tokens_are_rejected_without_contacting_the_issuer(
    oidc_issuer: OidcIssuer, token: str
) -> None:
    error = rejection(make_auth(oidc_issuer), token)
    assert error.message.startswith(("malformed token", "algorithm not allowed"))
    assert oidc_issuer.jwks_fetches == 0


@pytest.mark.parametrize("suffix", ["\n", " ", "\x00", "."])
def test_valid_token_with_trailing_junk_is_rejected(oidc_issuer: OidcIssuer, suffix: str) -> None:
    error = rejection(make_auth(oidc_issuer), oidc_issuer.mint() + suffix)
    assert error.message.startswith("malformed token")


def test_huge_token_is_rejected_by_size_before_parsing(oidc_issuer: OidcIssuer) -> None:
    token = oidc_issuer.mint(extra={"padding": "x" * 20000})
    error = rejection(make_auth(oidc_issuer), token)
    assert error.message.startswith("malformed token: too large")
    assert oidc_issuer.jwks_fetches == 0


def test_payload_that_is_not_an_object_is_rejected(oidc_issuer: OidcIssuer) -> None:
    token = jwt.api_jws.encode(
        b"[1,2]", oidc_issuer.key("rsa-1").private, algorithm="RS256", headers={"kid": "rsa-1"}
    )
    assert (
        rejection(make_auth(oidc_issuer), token).message
        == "malformed token: the payload is not a JSON object"
    )


def test_non_string_token_is_rejected() -> None:
    auth = OidcAuthenticator(OidcSettings(issuer="https://idp.example.com", audience="a"))
    with pytest.raises(AuthenticationError, match="expected a string"):
        auth.authenticate(b"abc")  # type: ignore[arg-type]


# -- issuer failures ----------------------------------------------------------------------------------


def test_issuer_down_raises_authentication_error(oidc_issuer: OidcIssuer) -> None:
    token = oidc_issuer.mint()
    oidc_issuer.stop()
    error = rejection(make_auth(oidc_issuer), token)
    assert error.message.startswith(f"issuer unreachable: discovery document {oidc_issuer.issuer}")


def test_issuer_going_down_after_startup_fails_closed_once_keys_are_stale(oidc_issuer: OidcIssuer) -> None:
    clock = FakeClock()
    auth = make_auth(oidc_issuer, clock=clock, jwks_max_age_seconds=600)
    token = oidc_issuer.mint(exp_in=7200)
    auth.authenticate(token)
    oidc_issuer.stop()
    clock.offset = 601
    assert rejection(auth, token).message.startswith("issuer unreachable: JWKS")


def test_hanging_issuer_times_out_as_authentication_error(oidc_issuer: OidcIssuer) -> None:
    oidc_issuer.hang()
    started = time.monotonic()
    error = rejection(make_auth(oidc_issuer, http_timeout_seconds=0.3), oidc_issuer.mint())
    assert error.message.startswith("issuer unreachable")
    assert time.monotonic() - started < 5
    oidc_issuer.release()


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/jwks.json", b"not json", "is not valid JSON"),
        ("/jwks.json", b"[]", "is not a JSON object"),
        ("/jwks.json", b'{"keys": "nope"}', "has no 'keys' list"),
        ("/jwks.json", b" " * (1024 * 1024 + 1), "is larger than"),
        ("/.well-known/openid-configuration", b"{", "is not valid JSON"),
        ("/.well-known/openid-configuration", b'{"issuer": "x"}', "names issuer 'x'"),
    ],
)
def test_broken_issuer_documents_raise_authentication_error(
    oidc_issuer: OidcIssuer, path: str, body: bytes, expected: str
) -> None:
    oidc_issuer.override_body[path] = body
    error = rejection(make_auth(oidc_issuer), oidc_issuer.mint())
    assert expected in error.message


def test_deeply_nested_jwks_raises_authentication_error(oidc_issuer: OidcIssuer) -> None:
    oidc_issuer.override_body["/jwks.json"] = b"[" * 50_000 + b"]" * 50_000
    assert "not valid JSON" in rejection(make_auth(oidc_issuer), oidc_issuer.mint()).message


def test_jwks_http_error_raises_authentication_error(oidc_issuer: OidcIssuer) -> None:
    auth = make_auth(oidc_issuer, jwks_url=oidc_issuer.issuer + "/missing.json")
    assert rejection(auth, oidc_issuer.mint()).message.endswith("answered HTTP 404")


def test_discovery_pointing_jwks_at_plain_http_elsewhere_is_refused(oidc_issuer: OidcIssuer) -> None:
    document = {"issuer": oidc_issuer.issuer, "jwks_uri": "http://keys.example.com/jwks.json"}
    oidc_issuer.override_body["/.well-known/openid-configuration"] = json.dumps(document).encode()
    assert "jwks_uri must use https" in rejection(make_auth(oidc_issuer), oidc_issuer.mint()).message


# -- secrecy ------------------------------------------------------------------------------------------


def test_token_never_appears_in_errors_or_logs(
    oidc_issuer: OidcIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    auth = make_auth(oidc_issuer, algorithms=("RS256",))
    tokens = [
        oidc_issuer.mint(exp_in=-600),
        oidc_issuer.mint(aud="x"),
        oidc_issuer.mint(iss="https://x.example"),
        oidc_issuer.mint(kid="rsa-1", signing_key=new_rsa_key()),
        oidc_issuer.mint(kid="unknown", signing_key=new_rsa_key()),
        oidc_issuer.mint(alg="ES256"),
        oidc_issuer.mint(groups={"bad": 1}, sub=None),
        oidc_issuer.mint(extra={"padding": "y" * 20000}),
    ]
    with caplog.at_level(logging.DEBUG):
        errors = [rejection(auth, token) for token in tokens]
    for token, error in zip(tokens, errors, strict=True):
        signature = token.rsplit(".", 1)[1]
        for text in (str(error), error.public_message, error.diagnostics(), repr(error), caplog.text):
            assert token not in text
            assert signature not in text


# -- arbitrary input ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_issuer() -> Iterator[OidcIssuer]:
    with running_issuer() as issuer:
        yield issuer


_segment = st.binary(max_size=64).map(b64url)
_header = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["RS256", "ES256", "PS256", "HS256", "none", "EdDSA", ""]) | st.integers(),
        "kid": st.sampled_from(["rsa-1", "ec-1"]) | st.text(max_size=20) | st.integers(),
        "crit": st.lists(st.text(max_size=5)),
        "b64": st.booleans(),
    },
).map(lambda header: b64url(json.dumps(header).encode()))


@settings(max_examples=300, deadline=None)
@given(token=st.text(max_size=300) | st.builds(lambda h, p, s: f"{h}.{p}.{s}", _header, _segment, _segment))
def test_arbitrary_strings_only_ever_raise_authentication_error(
    shared_issuer: OidcIssuer, token: str
) -> None:
    auth = make_auth(shared_issuer)
    with pytest.raises(AuthenticationError):
        auth.authenticate(token)


_json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_claims = st.dictionaries(
    st.sampled_from(["iss", "aud", "sub", "exp", "nbf", "iat", "groups", "name", "email"]),
    _json_value | st.integers(min_value=0, max_value=2**34),
)


@settings(max_examples=150, deadline=None)
@given(claims=_claims, keep=st.sets(st.sampled_from(["iss", "aud", "sub", "exp", "iat"])))
def test_arbitrary_signed_claims_either_authenticate_or_raise_authentication_error(
    shared_issuer: OidcIssuer, claims: dict[str, Any], keep: set[str]
) -> None:
    valid = shared_issuer.claims(sub="alice")
    merged = {**claims, **{name: valid[name] for name in keep}}
    token = jwt.api_jws.encode(
        json.dumps(merged).encode(),
        shared_issuer.key("rsa-1").private,
        algorithm="RS256",
        headers={"kid": "rsa-1"},
    )
    try:
        principal = make_auth(shared_issuer).authenticate(token)
    except AuthenticationError:
        return
    # Whatever got through satisfied every check.
    assert merged["iss"] == shared_issuer.issuer
    assert isinstance(merged["sub"], str)
    assert principal.subject == merged["sub"]
    assert all(isinstance(group, str) for group in principal.groups)


# -- read_token ---------------------------------------------------------------------------------------


def test_read_token_from_env_strips_whitespace() -> None:
    assert read_token(env="HOOP_TOKEN", file=None, environ={"HOOP_TOKEN": "  a.b.c\n"}) == "a.b.c"


def test_read_token_from_file_strips_the_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("a.b.c\n")
    assert read_token(env=None, file=path, environ={}) == "a.b.c"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "no token: environment variable HOOP_TOKEN is not set"),
        ({"HOOP_TOKEN": " \n\t"}, "no token: environment variable HOOP_TOKEN is empty"),
        (
            {"HOOP_TOKEN": "s3cret-" + "x" * 20000},
            "token too large: environment variable HOOP_TOKEN holds more",
        ),
        ({"HOOP_TOKEN": "s3cret-é"}, "malformed token: environment variable HOOP_TOKEN contains non-ASCII"),
        (
            {"HOOP_TOKEN": "s3cret-\udcff"},
            "malformed token: environment variable HOOP_TOKEN contains non-ASCII",
        ),
    ],
)
def test_read_token_from_env_errors_clearly_without_echoing(environ: dict[str, str], message: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        read_token(env="HOOP_TOKEN", file=None, environ=environ)
    assert info.value.message.startswith(message)
    assert "s3cret" not in info.value.diagnostics()


def test_read_token_from_a_missing_file_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(AuthenticationError, match=r"cannot read token file .*nope"):
        read_token(env=None, file=tmp_path / "nope", environ={})


def test_read_token_from_an_oversized_file_errors_without_echoing(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("s3cret" * 10000)
    with pytest.raises(AuthenticationError, match="token too large") as info:
        read_token(env=None, file=path, environ={})
    assert "s3cret" not in info.value.diagnostics()


def test_read_token_from_an_empty_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("\n")
    with pytest.raises(AuthenticationError, match="is empty"):
        read_token(env=None, file=path, environ={})


@pytest.mark.parametrize("both", [True, False])
def test_read_token_needs_exactly_one_source(tmp_path: Path, both: bool) -> None:
    with pytest.raises(ConfigError, match="exactly one token source"):
        read_token(env="X" if both else None, file=tmp_path / "t" if both else None, environ={"X": "a"})


# -- the unsafe static principal ----------------------------------------------------------------------


def test_unsafe_static_principal_is_marked_and_warns_on_construction_and_use(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="hoop_mcp.core.identity"):
        static = UnsafeStaticPrincipal(subject="dev", groups=("dba",))
        assert len(caplog.records) == 1
        principal = static.principal()
    assert principal == Principal(subject="dev", issuer="unsafe-static", groups=("dba",), unsafe_static=True)
    assert principal.label == "dev (UNSAFE static principal)"
    assert len(caplog.records) == 2
    assert all(
        r.levelno == logging.WARNING and "UNSAFE static principal" in r.message for r in caplog.records
    )


def test_unsafe_static_principal_requires_a_subject() -> None:
    with pytest.raises(ValidationError):
        UnsafeStaticPrincipal(subject="")
