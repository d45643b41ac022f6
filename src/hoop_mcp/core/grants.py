"""Grants: signed, expiring pre-authorizations for headless CI.

A grant is one human approver's approval given in advance: "subjects matching ``ci-deploy-*`` may
run ``query_db`` on ``shop`` with effect ``write`` on ``public.orders`` at most 3 times in the next
hour". ``hoop-mcp grants issue`` signs it with ``approvals.grant_key``; the server accepts the tokens
listed in ``approvals.grants`` and, for a call whose verdict is ``review``, admits it when a grant
covers it instead of holding it for review.

Token format (ASCII, one line)::

    hoopgrant1.<base64url(canonical JSON payload)>.<base64url(HMAC-SHA256(key, "hoopgrant1." + payload_b64))>

base64url without padding; both segments must be the canonical encoding of their bytes, so any
change to any character of a token is refused. The payload is :class:`Grant` as canonical JSON
(sorted keys, no whitespace, UTC times), readable by whoever holds the token: it holds no secret.

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
import hmac
import json
import logging
import re
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from fnmatch import fnmatchcase

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

PREFIX = "hoopgrant1"
#: Longest token accepted (characters); real grants are well under 2 KiB.
MAX_TOKEN_CHARS = 8 * 1024
#: Longest a grant may be valid (issue time to expiry).
MAX_GRANT_TTL = timedelta(days=7)
#: Shortest grant key accepted (bytes): HMAC-SHA256 wants at least its output size.
MIN_KEY_BYTES = 32
MAX_USES = 1000
_MAC_BYTES = 32
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


# ---------------------------------------------------------------------------------------- tokens


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


def _mac(key: bytes, payload_b64: str) -> bytes:
    return hmac.new(key, f"{PREFIX}.{payload_b64}".encode("ascii"), hashlib.sha256).digest()


def _check_key(key: bytes) -> None:
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"the grant key is too short ({len(key)} bytes; at least {MIN_KEY_BYTES})",
            hint="make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )


def sign_grant(grant: Grant, key: bytes) -> str:
    """The token for ``grant`` (see the module docstring for the format)."""
    _check_key(key)
    payload_b64 = _b64encode(grant.payload())
    token = f"{PREFIX}.{payload_b64}.{_b64encode(_mac(key, payload_b64))}"
    if len(token) > MAX_TOKEN_CHARS:
        raise GrantError(f"the grant is too large ({len(token)} characters; at most {MAX_TOKEN_CHARS})")
    return token


def decode_grant(token: str, key: bytes) -> Grant:
    """Check shape and MAC and parse the payload; validity times are NOT checked (see verify_grant).

    Messages never contain the token or the key.
    """
    _check_key(key)
    if not isinstance(token, str):
        raise GrantError("malformed grant: not text")
    if len(token) > MAX_TOKEN_CHARS:
        raise GrantError(f"malformed grant: too large ({len(token)} characters; at most {MAX_TOKEN_CHARS})")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise GrantError(
            f"malformed grant: expected {PREFIX}.<payload>.<signature> "
            f"({len(parts)} dot-separated part(s), prefix {'ok' if parts[0] == PREFIX else 'wrong'})"
        )
    _, payload_b64, mac_b64 = parts
    payload = _b64decode(payload_b64, what="payload")
    mac = _b64decode(mac_b64, what="signature")
    if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, _mac(key, payload_b64)):
        raise GrantError(
            "the grant's signature does not match: it was forged, altered, or signed with another key",
            hint="issue a new grant with 'hoop-mcp grants issue'",
        )
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise GrantError("invalid grant payload: not JSON") from None
    try:
        return Grant.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '<top level>'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise GrantError(f"invalid grant payload: {problems}") from None


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


def verify_grant(token: str, key: bytes, *, now: datetime, skew: timedelta = timedelta(0)) -> Grant:
    """The grant ``token`` carries, if it is authentic and valid at ``now`` (± ``skew``).

    Raises :class:`GrantError` (:class:`GrantExpired` / :class:`GrantNotYetValid` for the times).
    """
    grant = decode_grant(token, key)
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

    Tokens are verified once here: a malformed, forged or altered token is a configuration error
    naming its position (never its content); an expired one is logged and dropped.
    """

    def __init__(
        self,
        key: bytes,
        tokens: Sequence[str],
        *,
        agents: AgentSettings,
        clock_skew_seconds: float = 30,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        _check_key(key)
        self.agents = agents
        self.skew = timedelta(seconds=clock_skew_seconds)
        self.clock = clock
        now = clock()
        grants: list[Grant] = []
        seen: set[str] = set()
        for position, token in enumerate(tokens, start=1):
            try:
                grant = verify_grant(token, key, now=now, skew=self.skew)
            except GrantExpired as exc:
                log.warning("approvals.grants: grant #%d of %d is dropped: %s", position, len(tokens), exc)
                continue
            except GrantNotYetValid as exc:
                grant = decode_grant(token, key)
                log.info("approvals.grants: grant #%d of %d: %s", position, len(tokens), exc.message)
            except GrantError as exc:
                raise ConfigError(
                    f"approvals.grants: grant #{position} of {len(tokens)} is refused: {exc.message}",
                    hint="remove it, or issue a new one with 'hoop-mcp grants issue' and this server's "
                    "grant_key",
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
