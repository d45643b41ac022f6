"""Grants: signed, expiring pre-authorizations for headless CI.

A grant is one human approver's approval given in advance: "subjects matching ``ci-deploy-*`` may
run ``query_db`` on ``shop`` with effect ``write`` on ``public.orders`` at most 3 times in the next
hour". ``hoop-mcp grants issue`` signs it with the Ed25519 private key ``approvals.grant_signing_key``
(held by the approvers); the server verifies the tokens listed in ``approvals.grants`` with the
public keys ``approvals.grant_verify_keys`` and, for a call whose verdict is ``review``, admits it
when a grant covers it instead of holding it for review.

Signatures are asymmetric on purpose: the server (a CI job, an agent with a shell next to it) holds
only public keys, so whatever can read its configuration can verify grants but never mint one.
Only :func:`sign_grant` signs, and it takes the private key; every verifying function and
:class:`GrantSet` take public keys and refuse a private key, so no verifying code path can sign.

Token format (ASCII, one line)::

    hoopgrant2.<base64url(canonical JSON payload)>.<base64url(Ed25519(private key, "hoopgrant2." + payload_b64))>

base64url without padding; both segments must be the canonical encoding of their bytes, so any
change to any character of a token is refused. The payload is :class:`Grant` plus ``kid`` (the
:func:`key_id` of the public key that verifies it) as canonical JSON (sorted keys, no whitespace,
UTC times), readable by whoever holds the token: it holds no secret. The verifier reads ``kid``
to pick the key (an unknown ``kid`` is refused) and only then checks the signature; nothing else
in the payload is interpreted before the signature is verified. ``hoopgrant1`` (HMAC) tokens are
refused: re-issue them.

A grant covers a call when every one of these holds:

* a ``grantees`` pattern matches the caller's subject;
* ``tool`` and ``connection`` are equal to the call's;
* ``effects`` (when given) contains the plan's effect (the most consequential one, as in policy);
* ``relations`` (when given): every relation the plan touches matches one of the patterns, and it
  touches at least one (a grant restricted to relations never covers a call touching none);
* ``plan_digest`` (when given) equals :func:`~hoop_mcp.core.approvals.plan_digest` of the plan;
* ``namespace`` / ``branch`` (for later backends): the SQL plan has no such notion, so a grant that
  sets either never covers a SQL call (fail closed; stored for the backends that will have them);
* now is within ``not_before`` .. ``expires_at`` (with the configured clock skew).

A covering grant is *usable* only when its issuer could approve the call by the deciding rule right
now (the same eligibility as :func:`~hoop_mcp.core.approvals.approver_problem`: not an agent, not
the requester, in the rule's approver groups/subjects, judged on the groups the issuer had when the
grant was issued) and the rule's quorum is 1: a grant carries one human's approval. Each use is
counted in the approval store (``use_grant``), which refuses uses beyond ``max_uses`` and uses of
a revoked grant.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from fnmatch import fnmatchcase

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field, ValidationError, field_validator, model_validator

from hoop_mcp.core.approvals import (
    AgentSettings,
    Approval,
    ApprovalConflict,
    ApprovalRequest,
    ApprovalStore,
    ReviewCall,
    approver_problem,
    plan_digest,
)
from hoop_mcp.core.audit import canonical_json
from hoop_mcp.core.errors import ApprovalError, ConfigError
from hoop_mcp.core.models import ApprovalEvidence, FrozenModel, Principal, utcnow
from hoop_mcp.core.policy import EffectName

log = logging.getLogger(__name__)

PREFIX = "hoopgrant2"
#: The HMAC token format of earlier versions: refused (anyone holding the server's key could mint).
LEGACY_PREFIX = "hoopgrant1"
#: Longest token accepted (characters); real grants are well under 2 KiB.
MAX_TOKEN_CHARS = 8 * 1024
#: Longest a grant may be valid (issue time to expiry).
MAX_GRANT_TTL = timedelta(days=7)
#: Most verify keys one server trusts at once (rotation, one key per approver team).
MAX_VERIFY_KEYS = 32
MAX_USES = 1000
_SIGNATURE_BYTES = 64
_RAW_KEY_BYTES = 32
_KID = re.compile(r"^[0-9a-f]{16}$")
_GRANT_ID = re.compile(r"^grt_[A-Za-z0-9_-]{8,64}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_MAX_PATTERNS = 64
_MAX_PATTERN_CHARS = 256
_MAX_REASON = 1000


class GrantError(ApprovalError):
    """A grant token is malformed, forged or altered, expired or not yet valid."""

    code = "grant.invalid"


def new_grant_id() -> str:
    return "grt_" + secrets.token_urlsafe(12)


def _patterns(value: tuple[str, ...], *, what: str) -> tuple[str, ...]:
    if len(value) > _MAX_PATTERNS:
        raise ValueError(f"at most {_MAX_PATTERNS} {what} patterns")
    for pattern in value:
        if not pattern or len(pattern) > _MAX_PATTERN_CHARS:
            raise ValueError(f"{what} patterns must be 1..{_MAX_PATTERN_CHARS} characters")
        if not pattern.isprintable():
            raise ValueError(f"{what} patterns must not contain control characters")
    return value


class Grant(FrozenModel):
    """One human approver's pre-authorization (the signed payload of a grant token)."""

    grant_id: str
    #: The human approver who issued it (as their verified token named them at issue time).
    issuer: Principal
    #: Glob patterns of caller subjects allowed to use it (case-sensitive ``fnmatch``).
    grantees: tuple[str, ...] = Field(min_length=1)
    tool: str = Field(min_length=1, max_length=200)
    connection: str = Field(min_length=1, max_length=200)
    #: The plan's effect (its most consequential one) must be one of these.
    effects: tuple[EffectName, ...] | None = Field(default=None, min_length=1)
    #: Every relation the plan touches must match one of these patterns.
    relations: tuple[str, ...] | None = Field(default=None, min_length=1)
    #: Exactly this plan (``core.approvals.plan_digest``).
    plan_digest: str | None = None
    #: For later backends (Kubernetes namespaces, Git branches); SQL calls never match them.
    namespace: str | None = Field(default=None, min_length=1, max_length=_MAX_PATTERN_CHARS)
    branch: str | None = Field(default=None, min_length=1, max_length=_MAX_PATTERN_CHARS)
    max_uses: int = Field(default=1, ge=1, le=MAX_USES)
    issued_at: datetime
    not_before: datetime
    expires_at: datetime
    reason: str = Field(min_length=1, max_length=_MAX_REASON)

    @field_validator("grant_id")
    @classmethod
    def _grant_id(cls, value: str) -> str:
        if not _GRANT_ID.match(value):
            raise ValueError("grant_id must look like grt_ followed by 8-64 URL-safe characters")
        return value

    @field_validator("grantees")
    @classmethod
    def _grantees(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _patterns(value, what="grantee")

    @field_validator("relations")
    @classmethod
    def _relations(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else _patterns(value, what="relation")

    @field_validator("plan_digest")
    @classmethod
    def _plan_digest(cls, value: str | None) -> str | None:
        if value is not None and not _DIGEST.match(value):
            raise ValueError("plan_digest must be 'sha256:' followed by 64 lower-case hex digits")
        return value

    @field_validator("issued_at", "not_before", "expires_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.utcoffset() is None:
            raise ValueError("times must carry a time zone")
        return value

    @model_validator(mode="after")
    def _window(self) -> Grant:
        if self.expires_at <= self.not_before:
            raise ValueError("expires_at must be after not_before")
        if self.not_before < self.issued_at:
            raise ValueError("not_before must not be before issued_at")
        if self.expires_at - self.issued_at > MAX_GRANT_TTL:
            raise ValueError(f"a grant may be valid for at most {MAX_GRANT_TTL.days} days")
        return self

    def payload(self) -> bytes:
        """The canonical JSON the token carries."""
        return canonical_json(self.model_dump(mode="python"))

    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.payload()).hexdigest()


# ------------------------------------------------------------------------------------- base64url


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str, *, what: str) -> bytes:
    """Strict base64url: only the alphabet, no padding, and the canonical encoding of its bytes."""
    if not text or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise GrantError(f"malformed grant: the {what} is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise GrantError(f"malformed grant: the {what} is not valid base64url") from None
    if _b64encode(data) != text:
        raise GrantError(f"malformed grant: the {what} is not canonical base64url")
    return data


# ------------------------------------------------------------------------------------------ keys

_KEYGEN_HINT = "make a key pair with 'hoop-mcp grants keygen'"


def key_id(public_key: Ed25519PublicKey) -> str:
    """The ``kid`` of a verify key: the first 16 hex digits of SHA-256 of its raw 32 bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(public_key: Ed25519PublicKey) -> str:
    """The one-line form of a verify key for ``approvals.grant_verify_keys`` (raw, base64url)."""
    return _b64encode(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def private_key_pem(private_key: Ed25519PrivateKey) -> str:
    """``private_key`` as unencrypted PKCS8 PEM (what ``hoop-mcp grants keygen`` writes)."""
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def _raw_key_bytes(text: str, *, what: str) -> bytes:
    """32 bytes from base64 or base64url (padding optional); ``ValueError`` naming ``what`` otherwise."""
    if not re.fullmatch(r"[A-Za-z0-9+/_-]+={0,2}", text):
        raise ValueError(f"{what} must be PEM or 32 bytes in base64url; it is neither")
    body = text.rstrip("=").replace("+", "-").replace("/", "_")
    try:
        data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} must be PEM or 32 bytes in base64url; it is not valid base64url") from None
    if _b64encode(data) != body:
        raise ValueError(f"{what} is not canonical base64url")
    if len(data) != _RAW_KEY_BYTES:
        raise ValueError(f"{what} must be {_RAW_KEY_BYTES} bytes in base64url, got {len(data)} bytes")
    return data


def _pem_label(text: str) -> str | None:
    m = re.match(r"-----BEGIN ([A-Z0-9 ]+)-----", text)
    return m.group(1) if m else ("" if text.startswith("-----") else None)


def load_verify_key(text: str) -> Ed25519PublicKey:
    """A verify key from its text: PEM (``-----BEGIN PUBLIC KEY-----``) or raw 32 bytes in base64url.

    Raises ``ValueError`` with a message fit for a configuration error (never the key itself).
    """
    text = text.strip()
    if not text:
        raise ValueError("a verify key must not be empty")
    label = _pem_label(text)
    if label is not None:
        if "PRIVATE" in label:
            raise ValueError(
                "this is a PRIVATE key; grant_verify_keys takes public keys only (the private key is "
                "grant_signing_key and stays with the approvers): remove it from this configuration, and "
                "since it was exposed here, make a new key pair with 'hoop-mcp grants keygen'"
            )
        if label != "PUBLIC KEY":
            raise ValueError(
                f"expected a PEM '-----BEGIN PUBLIC KEY-----' block, got {label or 'an unlabelled block'!r}"
            )
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
            raise ValueError("not a valid PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(
                f"this is a {type(key).__name__.lstrip('_')} key; grants use Ed25519 ({_KEYGEN_HINT})"
            )
        return key
    return Ed25519PublicKey.from_public_bytes(_raw_key_bytes(text, what="a verify key"))


def load_signing_key(text: str) -> Ed25519PrivateKey:
    """The signing key from its text: PKCS8 PEM (``-----BEGIN PRIVATE KEY-----``) or raw 32 bytes in
    base64/base64url. Raises ``ValueError`` with a message fit for a configuration error."""
    text = text.strip()
    if not text:
        raise ValueError("the signing key must not be empty")
    label = _pem_label(text)
    if label is not None:
        if label == "PUBLIC KEY":
            raise ValueError(
                "this is a public key; grant_signing_key needs the private key (the public key goes "
                "in grant_verify_keys)"
            )
        if label == "ENCRYPTED PRIVATE KEY":
            raise ValueError("encrypted private keys are not supported; give the unencrypted PKCS8 PEM")
        if label != "PRIVATE KEY":
            raise ValueError(f"expected a PEM '-----BEGIN PRIVATE KEY-----' (PKCS8) block, got {label!r}")
        try:
            key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        except (ValueError, TypeError, UnicodeEncodeError, UnsupportedAlgorithm):
            raise ValueError("not a valid PKCS8 PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(
                f"this is a {type(key).__name__.lstrip('_')} key; grants use Ed25519 ({_KEYGEN_HINT})"
            )
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw_key_bytes(text, what="the signing key"))


#: What the verifying API accepts: public keys only (one, or several for rotation).
VerifyKeys = Ed25519PublicKey | Iterable[Ed25519PublicKey]


def verify_keyring(verify_keys: VerifyKeys) -> dict[str, Ed25519PublicKey]:
    """The verify keys by ``kid``. Refuses anything that is not an Ed25519 public key: in particular a
    private key, which must never reach a server (it could mint grants)."""
    keys: list[object]
    if isinstance(verify_keys, Iterable) and not isinstance(verify_keys, str | bytes | bytearray):
        keys = list(verify_keys)
    else:
        keys = [verify_keys]  # one key, or something that is no key at all (refused below)
    ring: dict[str, Ed25519PublicKey] = {}
    for key in keys:
        if isinstance(key, Ed25519PrivateKey):
            raise TypeError(
                "grants are verified with public keys only; a private (signing) key never belongs to "
                "the verifying side"
            )
        if not isinstance(key, Ed25519PublicKey):
            raise TypeError(f"a grant verify key must be an Ed25519 public key, not {type(key).__name__}")
        ring.setdefault(key_id(key), key)
    if not ring:
        raise ConfigError(
            "no grant verify key: grants cannot be verified",
            hint=f"list the approvers' public keys in approvals.grant_verify_keys ({_KEYGEN_HINT})",
        )
    if len(ring) > MAX_VERIFY_KEYS:
        raise ConfigError(f"too many grant verify keys ({len(ring)}; at most {MAX_VERIFY_KEYS})")
    return ring


# ---------------------------------------------------------------------------------------- tokens


def _signed_bytes(payload_b64: str) -> bytes:
    return f"{PREFIX}.{payload_b64}".encode("ascii")


def sign_grant(grant: Grant, signing_key: Ed25519PrivateKey) -> str:
    """The token for ``grant``, signed with ``signing_key`` (see the module docstring for the format)."""
    if not isinstance(signing_key, Ed25519PrivateKey):
        raise TypeError("grants are signed with an Ed25519 private key (approvals.grant_signing_key)")
    kid = key_id(signing_key.public_key())
    payload_b64 = _b64encode(canonical_json({**grant.model_dump(mode="python"), "kid": kid}))
    signature = signing_key.sign(_signed_bytes(payload_b64))
    token = f"{PREFIX}.{payload_b64}.{_b64encode(signature)}"
    if len(token) > MAX_TOKEN_CHARS:
        raise GrantError(f"the grant is too large ({len(token)} characters; at most {MAX_TOKEN_CHARS})")
    return token


def decode_grant_with_kid(token: str, verify_keys: VerifyKeys) -> tuple[Grant, str]:
    """:func:`decode_grant`, and the ``kid`` of the key that verified it."""
    ring = verify_keyring(verify_keys)
    if not isinstance(token, str):
        raise GrantError("malformed grant: not text")
    if len(token) > MAX_TOKEN_CHARS:
        raise GrantError(f"malformed grant: too large ({len(token)} characters; at most {MAX_TOKEN_CHARS})")
    parts = token.split(".")
    if parts[0] == LEGACY_PREFIX:
        raise GrantError(
            "this is an HMAC grant (hoopgrant1): HMAC grants are no longer accepted",
            hint="re-issue it with 'hoop-mcp grants issue' (grants are now signed with an Ed25519 key)",
        )
    if len(parts) != 3 or parts[0] != PREFIX:
        raise GrantError(
            f"malformed grant: expected {PREFIX}.<payload>.<signature> "
            f"({len(parts)} dot-separated part(s), prefix {'ok' if parts[0] == PREFIX else 'wrong'})"
        )
    _, payload_b64, signature_b64 = parts
    payload = _b64decode(payload_b64, what="payload")
    signature = _b64decode(signature_b64, what="signature")
    # Only the key id is read before the signature is checked.
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise GrantError("invalid grant payload: not JSON (altered, or not a grant)") from None
    kid = data.get("kid") if isinstance(data, dict) else None
    if not isinstance(kid, str) or not _KID.match(kid):
        raise GrantError("invalid grant payload: no valid key id (kid)")
    key = ring.get(kid)
    if key is None:
        raise GrantError(
            f"the grant is signed by a key this server does not trust (kid {kid})",
            hint="add the approvers' public key to approvals.grant_verify_keys, or issue a new grant with "
            "a trusted key",
        )
    try:
        if len(signature) != _SIGNATURE_BYTES:
            raise InvalidSignature
        key.verify(signature, _signed_bytes(payload_b64))
    except InvalidSignature:
        raise GrantError(
            "the grant's signature does not match: it was forged, altered, or signed with another key",
            hint="issue a new grant with 'hoop-mcp grants issue'",
        ) from None
    fields = {k: v for k, v in data.items() if k != "kid"}
    try:
        return Grant.model_validate(fields), kid
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '<top level>'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise GrantError(f"invalid grant payload: {problems}") from None


def decode_grant(token: str, verify_keys: VerifyKeys) -> Grant:
    """Check shape, key id and signature and parse the payload; validity times are NOT checked (see
    verify_grant). ``verify_keys`` are public keys only.

    Messages never contain the token or the keys.
    """
    return decode_grant_with_kid(token, verify_keys)[0]


def validity_problem(grant: Grant, *, now: datetime, skew: timedelta) -> str | None:
    """Why ``grant`` is not valid at ``now`` (``None`` when it is)."""
    if now > grant.expires_at + skew:
        return f"grant {grant.grant_id} expired at {grant.expires_at:%Y-%m-%d %H:%M:%SZ}"
    if now < grant.not_before - skew:
        return f"grant {grant.grant_id} is not valid before {grant.not_before:%Y-%m-%d %H:%M:%SZ}"
    return None


class GrantExpired(GrantError):
    code = "grant.expired"


class GrantNotYetValid(GrantError):
    code = "grant.not_yet_valid"


def verify_grant(
    token: str, verify_keys: VerifyKeys, *, now: datetime, skew: timedelta = timedelta(0)
) -> Grant:
    """The grant ``token`` carries, if it is authentic (signed by the private key of one of
    ``verify_keys``) and valid at ``now`` (± ``skew``).

    Raises :class:`GrantError` (:class:`GrantExpired` / :class:`GrantNotYetValid` for the times).
    """
    grant = decode_grant(token, verify_keys)
    problem = validity_problem(grant, now=now, skew=skew)
    if problem is not None:
        if now > grant.expires_at + skew:
            raise GrantExpired(problem, details={"grant_id": grant.grant_id})
        raise GrantNotYetValid(problem, details={"grant_id": grant.grant_id})
    return grant


# -------------------------------------------------------------------------------------- matching


def coverage_problem(grant: Grant, call: ReviewCall) -> str | None:
    """Why ``grant`` does not cover ``call`` (``None`` when it does). Times are checked elsewhere."""
    subject = call.principal.subject
    if not any(fnmatchcase(subject, p) for p in grant.grantees):
        return f"caller {subject!r} matches none of the grantees"
    if call.tool != grant.tool:
        return f"tool {call.tool!r} is not {grant.tool!r}"
    if call.connection != grant.connection:
        return f"connection {call.connection!r} is not {grant.connection!r}"
    plan = call.plan
    if grant.effects is not None and plan.effect not in grant.effects:
        return f"effect {plan.effect!r} is not one of {list(grant.effects)}"
    if grant.relations is not None:
        relations = plan.relations
        if not relations:
            return "the call touches no relation, and the grant is restricted to relations"
        outside = [r for r in relations if not any(fnmatchcase(r, p) for p in grant.relations)]
        if outside:
            return f"relation(s) {outside} match none of {list(grant.relations)}"
    if grant.plan_digest is not None and plan_digest(plan) != grant.plan_digest:
        return "the plan differs from the one the grant names (plan digest)"
    if grant.namespace is not None:
        return "the grant names a namespace, and this call's plan has none"
    if grant.branch is not None:
        return "the grant names a branch, and this call's plan has none"
    return None


def usability_problem(grant: Grant, call: ReviewCall, *, agents: AgentSettings) -> str | None:
    """Why ``grant``'s issuer cannot stand in for an approver of ``call`` (``None`` when they can)."""
    review = call.decision.review
    if review is None:
        return "the deciding rule has no review settings"
    if review.quorum != 1:
        return (
            f"rule {call.decision.rule_id!r} needs {review.quorum} distinct approvers; a grant carries "
            "one human's approval, so it can only admit calls whose rule has quorum 1"
        )
    # The exact eligibility rule approvers are held to, applied to the issuer.
    request = ApprovalRequest(
        approval_id=grant.grant_id,
        call_id=call.call_id,
        session_id=call.session_id,
        requester=call.principal,
        tool=call.tool,
        connection=call.connection,
        arguments={},
        arguments_digest=call.arguments_digest,
        plan=call.plan_masked,
        plan_digest=plan_digest(call.plan),
        rule_id=call.decision.rule_id,
        rule_reason=call.decision.reason,
        review=review,
        binding="grant",
        created_at=grant.issued_at,
        expires_at=grant.expires_at,
    )
    problem = approver_problem(grant.issuer, Approval(request=request), agents=agents)
    if problem is not None:
        return f"its issuer {grant.issuer.label} may not approve this call: {problem}"
    return None


class GrantSet:
    """The grants a server accepts (``approvals.grants``); implements ``GrantChecker``.

    Tokens are verified once here, with ``verify_keys`` (public keys only: a server can verify grants
    but never mint one): a malformed, forged or altered token, or one signed by a key not listed, is
    a configuration error naming its position (never its content); an expired one is logged and
    dropped.
    """

    def __init__(
        self,
        verify_keys: VerifyKeys,
        tokens: Sequence[str],
        *,
        agents: AgentSettings,
        clock_skew_seconds: float = 30,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        ring = verify_keyring(verify_keys)
        #: The key ids this set trusts (public keys only: nothing here can sign).
        self.kids: tuple[str, ...] = tuple(ring)
        keys = tuple(ring.values())
        self.agents = agents
        self.skew = timedelta(seconds=clock_skew_seconds)
        self.clock = clock
        now = clock()
        grants: list[Grant] = []
        seen: set[str] = set()
        for position, token in enumerate(tokens, start=1):
            try:
                grant = verify_grant(token, keys, now=now, skew=self.skew)
            except GrantExpired as exc:
                log.warning("approvals.grants: grant #%d of %d is dropped: %s", position, len(tokens), exc)
                continue
            except GrantNotYetValid as exc:
                grant = decode_grant(token, keys)
                log.info("approvals.grants: grant #%d of %d: %s", position, len(tokens), exc.message)
            except GrantError as exc:
                raise ConfigError(
                    f"approvals.grants: grant #{position} of {len(tokens)} is refused: {exc.message}",
                    hint="remove it, or issue a new one with 'hoop-mcp grants issue' signed by a key "
                    "listed in approvals.grant_verify_keys",
                ) from None
            if grant.grant_id in seen:
                log.warning("approvals.grants: grant #%d repeats grant %s", position, grant.grant_id)
                continue
            seen.add(grant.grant_id)
            grants.append(grant)
        self.grants: tuple[Grant, ...] = tuple(grants)

    async def admit(self, call: ReviewCall, store: ApprovalStore) -> ApprovalEvidence | None:
        """Count one use of the first grant that covers ``call`` and is usable; its evidence.

        ``None`` sends the call to normal review. Store failures propagate (the service fails closed).
        """
        now = self.clock()
        for grant in self.grants:
            uncovered = coverage_problem(grant, call)
            if uncovered is not None:
                log.debug("call %s: grant %s does not cover it: %s", call.call_id, grant.grant_id, uncovered)
                continue
            when = validity_problem(grant, now=now, skew=self.skew)
            if when is not None:
                log.info("call %s: %s", call.call_id, when)
                continue
            problem = usability_problem(grant, call, agents=self.agents)
            if problem is not None:
                log.warning(
                    "call %s: grant %s covers it but is not usable: %s", call.call_id, grant.grant_id, problem
                )
                continue
            try:
                use = await store.use_grant(grant.grant_id, max_uses=grant.max_uses, call_id=call.call_id)
            except ApprovalConflict as exc:
                log.warning("call %s: grant %s cannot be used: %s", call.call_id, grant.grant_id, exc.message)
                continue
            log.info(
                "call %s: admitted by grant %s (use %d of %d, issued by %s)",
                call.call_id,
                grant.grant_id,
                use,
                grant.max_uses,
                grant.issuer.label,
            )
            return ApprovalEvidence(
                approval_id=grant.grant_id,
                event="grant_used",
                state="executed",
                requester=call.principal,
                actor=grant.issuer,
                approvers=(grant.issuer,),
                quorum=1,
                reason=grant.reason,
                channel="grant",
                rule_id=call.decision.rule_id,
                plan_digest=plan_digest(call.plan),
                expires_at=grant.expires_at,
                grant_id=grant.grant_id,
                grant_use=use,
            )
        return None
