"""Who is calling: OpenID Connect bearer tokens verified against the issuer's JWKS.

Every tool call is made by a :class:`~hoop_mcp.core.models.Principal`. In production that principal
comes from an OIDC ID/access token (a JWT) that :class:`OidcAuthenticator` verifies: signature against
the issuer's published keys (JWKS), issuer, audience, validity window, algorithm allow-list, and the
subject/groups claims. Anything wrong raises :class:`~hoop_mcp.core.errors.AuthenticationError` with a
safe reason (never the token).

:class:`UnsafeStaticPrincipal` is the local-development escape hatch: a configured identity with no
token at all. It is marked ``unsafe_static`` in every principal (and so in every audit record) and
logs a warning whenever it is built or used.

See ``docs/identity.md``.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import anyio.to_thread
import jwt
from jwt.api_jws import PyJWS
from jwt.exceptions import PyJWTError
from pydantic import Field, field_validator

from hoop_mcp.core.errors import AuthenticationError, ConfigError
from hoop_mcp.core.models import FrozenModel, Principal

logger = logging.getLogger(__name__)

#: Asymmetric JWS algorithms we can verify with a JWKS, and the key each one needs (kty, crv).
_ALGORITHM_KEYS: Final[dict[str, tuple[str, str | None]]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
}
#: Algorithms that must never be accepted: symmetric ones (the "secret" would be a public key) and none.
_FORBIDDEN_ALGORITHM_RE: Final = re.compile(r"^(none|HS\d*)$", re.IGNORECASE)
#: JWS compact serialization: three base64url segments (the signature may not be empty for us).
_COMPACT_JWS_RE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
#: Upper bound for a discovery document or JWKS body.
_MAX_DOCUMENT_BYTES: Final = 1024 * 1024
_GROUP_SPLIT_RE: Final = re.compile(r"[\s,]+")


def _check_issuer_url(url: str, *, what: str) -> str:
    """https, or http only on loopback (for tests and local issuers); no credentials, query or fragment."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "https":
        pass
    elif parsed.scheme == "http":
        if (parsed.hostname or "") not in _LOOPBACK_HOSTS:
            raise ValueError(
                f"{what} must use https (plain http is only allowed on 127.0.0.1/localhost/::1), got {url!r}"
            )
    else:
        raise ValueError(f"{what} must be an https URL, got {url!r}")
    if not parsed.hostname:
        raise ValueError(f"{what} has no host: {url!r}")
    if parsed.username is not None or parsed.password is not None:
        raise ValueError(f"{what} must not contain credentials")
    if parsed.fragment:
        raise ValueError(f"{what} must not contain a fragment: {url!r}")
    return url


def _safe(value: object, *, limit: int = 80) -> str:
    """repr() of an attacker-controlled value, truncated (safe for one log line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _iso(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{timestamp!r} (unix seconds)"


class OidcSettings(FrozenModel):
    """How to verify tokens from one OpenID Connect issuer."""

    #: Exact ``iss`` value. https, except ``http://127.0.0.1``/``localhost``/``[::1]`` (local issuers, tests).
    issuer: str
    #: Required ``aud`` value (the token's ``aud`` string, or one entry of its ``aud`` list).
    audience: str = Field(min_length=1)
    #: JWKS location; ``None`` discovers it from ``{issuer}/.well-known/openid-configuration``.
    jwks_url: str | None = None
    #: Accepted JWS algorithms. Asymmetric only: ``none`` and ``HS*`` are rejected at load time.
    algorithms: tuple[str, ...] = ("RS256", "ES256", "PS256")
    #: Claim holding the groups; a dotted path (``realm_access.roles``) walks nested objects.
    groups_claim: str = Field(default="groups", min_length=1)
    subject_claim: str = Field(default="sub", min_length=1)
    #: Clock skew tolerated for ``exp``, ``nbf`` and ``iat``.
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    #: A token with an unknown ``kid`` refetches the JWKS at most once per this many seconds, so that
    #: garbage tokens cannot make the server hammer the issuer (see docs/identity.md).
    jwks_refetch_cooldown_seconds: float = Field(default=60.0, ge=0.0, le=86400.0)
    #: Keys are refetched (on the next call) once the cached JWKS is this old, so keys the issuer
    #: withdrew stop being trusted. A failed refresh fails closed.
    jwks_max_age_seconds: float = Field(default=3600.0, gt=0.0, le=7 * 86400.0)
    #: Claims that must be present.
    required_claims: tuple[str, ...] = ("exp", "iat", "sub")
    http_timeout_seconds: float = Field(default=5.0, gt=0.0, le=120.0)
    max_token_bytes: int = Field(default=16384, ge=256, le=1024 * 1024)

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        return _check_issuer_url(value, what="issuer")

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_issuer_url(value, what="jwks_url")

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one algorithm is required")
        for alg in value:
            if _FORBIDDEN_ALGORITHM_RE.match(alg):
                raise ValueError(
                    f"algorithm {alg!r} is never accepted: 'none' is unsigned and symmetric (HS*) "
                    "algorithms cannot be verified with a public JWKS"
                )
            if alg not in _ALGORITHM_KEYS:
                raise ValueError(f"unsupported algorithm {alg!r}; choose from {sorted(_ALGORITHM_KEYS)}")
        return value

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


def _lookup_claim(claims: Mapping[str, Any], path: str) -> Any:
    """The claim named ``path``; if there is none, walk ``a.b.c`` through nested objects."""
    if path in claims:
        return claims[path]
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


class _JwksCache:
    """The issuer's signing keys, fetched over HTTP(S) and refreshed deliberately.

    Fetches happen (1) on first use, (2) once the cache is older than ``jwks_max_age_seconds``, and
    (3) when a token names an unknown ``kid`` -- at most once per ``jwks_refetch_cooldown_seconds``.
    All fetches are serialised by one lock; concurrent callers wait for the fetch in flight.
    """

    def __init__(self, settings: OidcSettings, monotonic: Callable[[], float]) -> None:
        self._settings = settings
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._jwks_url: str | None = settings.jwks_url
        self._keys: list[dict[str, Any]] | None = None
        self._fetched_at: float | None = None
        self._last_unknown_kid_refetch: float | None = None

    def _fetch_json(self, url: str, *, what: str) -> dict[str, Any]:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 (scheme checked)
        try:
            with _OPENER.open(request, timeout=self._settings.http_timeout_seconds) as response:
                body = response.read(_MAX_DOCUMENT_BYTES + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise AuthenticationError(
                f"issuer unreachable: {what} {url} answered HTTP {exc.code}",
                hint="check the issuer URL and that the issuer is up",
            ) from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # URLError, timeouts, refused connections, refused redirects, broken HTTP responses
            reason = getattr(exc, "reason", None) or exc
            raise AuthenticationError(
                f"issuer unreachable: {what} {url}: {type(exc).__name__}: {reason}",
                hint="check the issuer URL, network access and that the issuer is up",
            ) from None
        if len(body) > _MAX_DOCUMENT_BYTES:
            raise AuthenticationError(
                f"issuer unusable: {what} {url} is larger than {_MAX_DOCUMENT_BYTES} bytes"
            )
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise AuthenticationError(f"issuer unusable: {what} {url} is not valid JSON") from None
        if not isinstance(document, dict):
            raise AuthenticationError(f"issuer unusable: {what} {url} is not a JSON object")
        return document

    def _discover(self) -> str:
        settings = self._settings
        document = self._fetch_json(settings.discovery_url, what="discovery document")
        if document.get("issuer") != settings.issuer:
            raise AuthenticationError(
                f"issuer unusable: discovery document names issuer {_safe(document.get('issuer'))}, "
                f"expected {settings.issuer!r}",
                hint="the configured issuer must match the issuer's own 'issuer' value exactly",
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise AuthenticationError(
                f"issuer unusable: discovery document {settings.discovery_url} has no jwks_uri"
            )
        try:
            return _check_issuer_url(jwks_uri, what="jwks_uri")
        except ValueError as exc:
            raise AuthenticationError(f"issuer unusable: {exc}") from None

    def _refresh(self) -> None:
        """Fetch the JWKS (caller holds the lock). On failure the old keys are kept but stay stale."""
        if self._jwks_url is None:
            self._jwks_url = self._discover()
        document = self._fetch_json(self._jwks_url, what="JWKS")
        raw_keys = document.get("keys")
        if not isinstance(raw_keys, list):
            raise AuthenticationError(f"issuer unusable: JWKS {self._jwks_url} has no 'keys' list")
        self._keys = [key for key in raw_keys if isinstance(key, dict)]
        self._fetched_at = self._monotonic()
        logger.info("fetched JWKS from %s: %d key(s)", self._jwks_url, len(self._keys))

    def _matching(self, kid: str | None) -> list[dict[str, Any]]:
        keys = self._keys or []
        if kid is None:
            return keys
        return [key for key in keys if key.get("kid") == kid]

    def keys_for(self, kid: str | None) -> list[dict[str, Any]]:
        """JWKs that may have signed a token with this ``kid`` (all keys when the token has none)."""
        settings = self._settings
        with self._lock:
            now = self._monotonic()
            stale = self._fetched_at is None or now - self._fetched_at >= settings.jwks_max_age_seconds
            if self._keys is None or stale:
                self._refresh()
            found = self._matching(kid)
            if found or kid is None:
                return found
            cooling = (
                self._last_unknown_kid_refetch is not None
                and now - self._last_unknown_kid_refetch < settings.jwks_refetch_cooldown_seconds
            )
            if cooling:
                logger.info("unknown kid %s: JWKS refetch suppressed (cooldown)", _safe(kid, limit=64))
                return []
            self._last_unknown_kid_refetch = now
            self._refresh()
            return self._matching(kid)


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to URLs that would be accepted as issuer URLs (no https -> http)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        try:
            _check_issuer_url(newurl, what="redirect target")
        except ValueError as exc:
            raise urllib.error.URLError(f"refused redirect: {exc}") from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER: Final = urllib.request.build_opener(_SafeRedirects)
_JWS: Final = PyJWS()


class OidcAuthenticator:
    """Verifies OIDC bearer tokens and turns them into principals. Thread-safe."""

    def __init__(self, settings: OidcSettings, *, clock: Callable[[], float] | None = None) -> None:
        """``clock`` returns unix seconds; when given it also drives the JWKS cooldown (for tests)."""
        self.settings = settings
        self._clock: Callable[[], float] = clock or time.time
        self._jwks = _JwksCache(settings, clock or time.monotonic)

    async def authenticate_async(self, token: str) -> Principal:
        return await anyio.to_thread.run_sync(self.authenticate, token)

    def authenticate(self, token: str) -> Principal:
        """Verify ``token``; return who it names. Raises only :class:`AuthenticationError`."""
        try:
            return self._authenticate(token)
        except AuthenticationError:
            raise
        except Exception as exc:  # fail closed with the one documented error type
            logger.exception("unexpected error while verifying a token")
            raise AuthenticationError(f"token could not be verified ({type(exc).__name__})") from None

    # -- steps ------------------------------------------------------------------------------------------

    def _authenticate(self, token: str) -> Principal:
        header = self._parse_header(token)
        alg: str = header["alg"]
        kid: str | None = header.get("kid")
        claims = self._verify_signature(token, alg, kid)
        self._check_claims(claims)
        return self._principal(claims)

    def _parse_header(self, token: object) -> dict[str, Any]:
        settings = self.settings
        if not isinstance(token, str):
            raise AuthenticationError(f"malformed token: expected a string, got {type(token).__name__}")
        if not token:
            raise AuthenticationError("malformed token: empty")
        if len(token) > settings.max_token_bytes:  # a str is at least as many bytes as characters
            raise AuthenticationError(
                f"malformed token: too large ({len(token)} characters, max {settings.max_token_bytes} bytes)"
            )
        if not _COMPACT_JWS_RE.fullmatch(token):
            raise AuthenticationError(
                "malformed token: not a JWS compact serialization (three base64url segments separated by '.')"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise AuthenticationError("malformed token: the header is not valid base64url JSON") from None
        except PyJWTError:  # e.g. an unsupported critical extension
            raise AuthenticationError(
                "unsupported token: critical header extensions are not accepted"
            ) from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in settings.algorithms:
            raise AuthenticationError(
                f"algorithm not allowed: {_safe(alg, limit=24)} (allowed: {', '.join(settings.algorithms)})"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationError("malformed token: 'kid' header must be a string")
        if "crit" in header or "b64" in header:
            raise AuthenticationError("unsupported token: critical header extensions are not accepted")
        return header

    def _verify_signature(self, token: str, alg: str, kid: str | None) -> dict[str, Any]:
        kty, crv = _ALGORITHM_KEYS[alg]
        candidates = self._jwks.keys_for(kid)
        shown_kid = _safe(kid, limit=64)
        if not candidates:
            raise AuthenticationError(
                f"unknown signing key (kid={shown_kid})"
                if kid is not None
                else "unknown signing key (the token has no kid and the JWKS has no keys)",
                hint="the issuer does not publish this key; tokens from another issuer or a withdrawn key",
            )
        usable = [
            key
            for key in candidates
            if key.get("kty") == kty
            and (crv is None or key.get("crv") == crv)
            and key.get("alg", alg) == alg
            and key.get("use", "sig") == "sig"
        ]
        if not usable:
            raise AuthenticationError(
                f"signing key kid={shown_kid} does not fit algorithm {alg} (needs a {kty}"
                f"{' ' + crv if crv else ''} key allowed for {alg})"
            )
        if kid is None and len(usable) > 1:
            raise AuthenticationError(
                "unknown signing key: the token has no kid and the issuer publishes several keys"
            )
        key = usable[0]
        try:
            verifying_key = jwt.PyJWK(key, algorithm=alg)
        except PyJWTError as exc:
            raise AuthenticationError(
                f"issuer unusable: JWKS key kid={shown_kid} is invalid ({_safe(str(exc), limit=120)})"
            ) from None
        try:
            decoded = _JWS.decode_complete(token, key=verifying_key, algorithms=[alg])
        except jwt.InvalidSignatureError:
            raise AuthenticationError(f"invalid signature (kid={shown_kid}, alg={alg})") from None
        except PyJWTError as exc:
            raise AuthenticationError(f"token rejected: {type(exc).__name__}") from None
        try:
            claims = json.loads(decoded["payload"])
        except (ValueError, RecursionError):
            raise AuthenticationError("malformed token: the payload is not JSON") from None
        if not isinstance(claims, dict):
            raise AuthenticationError("malformed token: the payload is not a JSON object")
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        settings = self.settings
        for name in settings.required_claims:
            if _lookup_claim(claims, name) is None:
                raise AuthenticationError(f"missing required claim {name!r}")

        issuer = claims.get("iss")
        if issuer != settings.issuer:
            raise AuthenticationError(f"issuer mismatch: expected {settings.issuer!r}, got {_safe(issuer)}")

        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or settings.audience not in audiences:
            raise AuthenticationError(
                f"audience mismatch: expected {settings.audience!r}, got {_safe(audience)}"
            )

        now = self._clock()
        leeway = settings.leeway_seconds
        exp = self._numeric(claims, "exp")
        if exp is not None and now > exp + leeway:
            raise AuthenticationError(f"token expired at {_iso(exp)}")
        nbf = self._numeric(claims, "nbf")
        if nbf is not None and now + leeway < nbf:
            raise AuthenticationError(f"token not valid before {_iso(nbf)}")
        iat = self._numeric(claims, "iat")
        if iat is not None and now + leeway < iat:
            raise AuthenticationError(f"token issued in the future (iat {_iso(iat)})")

    @staticmethod
    def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
        value = claims.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise AuthenticationError(f"malformed token: claim {name!r} must be a number of seconds")
        return float(value)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        settings = self.settings
        subject = _lookup_claim(claims, settings.subject_claim)
        if not isinstance(subject, str) or not subject.strip():
            raise AuthenticationError(
                f"missing subject: claim {settings.subject_claim!r} must be a non-empty string"
            )
        name = claims.get("name")
        if not isinstance(name, str) or not name:
            name = claims.get("preferred_username")
        email = claims.get("email")
        return Principal(
            subject=subject,
            issuer=settings.issuer,
            groups=self._groups(claims),
            name=name if isinstance(name, str) and name else None,
            email=email if isinstance(email, str) and email else None,
        )

    def _groups(self, claims: dict[str, Any]) -> tuple[str, ...]:
        claim = self.settings.groups_claim
        raw = _lookup_claim(claims, claim)
        if raw is None:
            return ()
        if isinstance(raw, str):
            items = [part for part in _GROUP_SPLIT_RE.split(raw) if part]
        elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            items = [item for item in raw if item]
        else:
            logger.warning(
                "groups claim %r has unsupported type %s (expected a list of strings or a string): "
                "treating the caller as having no groups",
                claim,
                type(raw).__name__,
            )
            return ()
        return tuple(dict.fromkeys(items))


def read_token(
    *,
    env: str | None,
    file: Path | None,
    environ: Mapping[str, str],
    max_bytes: int = 16384,
) -> str:
    """The bearer token from an environment variable or a file (exactly one), whitespace stripped.

    Errors name the source and size, never the content.
    """
    if (env is None) == (file is None):
        raise ConfigError("configure exactly one token source: an environment variable or a file")
    if env is not None:
        source = f"environment variable {env}"
        if env not in environ:
            raise AuthenticationError(f"no token: {source} is not set")
        raw = environ[env].encode("utf-8", "surrogatepass")
    elif file is not None:
        source = f"token file {file}"
        try:
            with file.open("rb") as handle:
                raw = handle.read(max_bytes * 2 + 1)
        except OSError as exc:
            raise AuthenticationError(
                f"no token: cannot read {source} ({exc.strerror or type(exc).__name__})"
            ) from None
    if len(raw.strip()) > max_bytes:
        raise AuthenticationError(f"token too large: {source} holds more than {max_bytes} bytes")
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise AuthenticationError(f"malformed token: {source} contains non-ASCII bytes") from None
    if not token:
        raise AuthenticationError(f"no token: {source} is empty")
    return token


class UnsafeStaticPrincipal(FrozenModel):
    """A fixed identity with NO verification, for local development only.

    Every principal it produces carries ``unsafe_static=True`` and the issuer ``unsafe-static``, so
    audit records show that nobody was authenticated.
    """

    subject: str = Field(min_length=1)
    groups: tuple[str, ...] = ()

    def model_post_init(self, context: Any, /) -> None:
        self._warn("configured")

    def _warn(self, event: str) -> None:
        logger.warning(
            "UNSAFE static principal %s: subject=%r groups=%r -- no token is verified; anyone who can "
            "start this server acts as this identity. Never use this outside local development.",
            event,
            self.subject,
            list(self.groups),
        )

    def principal(self) -> Principal:
        self._warn("in use")
        return Principal(subject=self.subject, issuer="unsafe-static", groups=self.groups, unsafe_static=True)
