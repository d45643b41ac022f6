"""The approval page (``hoop-mcp approvals web``): approvers log in with OIDC and decide in a browser.

A small server-rendered Starlette app. It works without JavaScript and shows only what
:func:`~hoop_mcp.core.approvals.review_lines` gives (never raw arguments, tokens or secrets); every
decision goes through :meth:`ApprovalService.decide` with ``channel="web"``, which enforces the
four-eyes rules and writes the audit record.

Login: OpenID Connect authorization code flow with PKCE (S256) against the issuer's discovery
document. ``state``, ``nonce``, the code verifier and where to go next are kept in a signed,
short-lived, HttpOnly, ``SameSite=Lax`` cookie (Lax, so the redirect back from the issuer carries it).
The callback checks ``state``, exchanges the code at the token endpoint (``client_secret_post`` when a
secret is configured), verifies the id_token with :class:`OidcAuthenticator` (audience = the page's
client id) and its ``nonce``, then sets the session cookie. The callback answers with a page that
continues to the target itself (a same-site navigation), because a ``SameSite=Strict`` cookie is not
sent on the redirect chain of a navigation that started at the issuer's site.

Session: a cookie holding the principal and an expiry, signed with HMAC-SHA256 under a key derived
from ``session_key``; HttpOnly, ``SameSite=Strict``, ``Secure`` (and ``__Host-`` prefixed) when the
base URL is https. Logging out forgets the session id in this process until it would have expired.

Forms: every form carries a fresh nonce and a token ``HMAC(session id, approval id, nonce)``. A POST
must carry a valid token for the caller's session, must not come from another origin (Origin, else
Referer, when present) and its nonce is accepted once (used nonces are remembered in process memory
until the session expires). Bodies over :data:`MAX_BODY_BYTES` are refused.

``Referrer-Policy`` is ``same-origin`` rather than ``no-referrer``: under ``no-referrer`` browsers
send ``Origin: null`` on the page's own form posts (Fetch standard), which would make the Origin check
useless. ``same-origin`` still never sends a referrer to another site.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import http.client
import json
import logging
import re
import secrets
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
import jwt
import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hoop_mcp.config import ApprovalWebConfig, ServerConfig, load_config, resolve_relative
from hoop_mcp.core.approval import visible
from hoop_mcp.core.approvals import (
    MAX_REASON,
    Approval,
    ApprovalConflict,
    ApprovalNotFound,
    ApprovalService,
    ApprovalState,
    ApprovalStoreUnavailable,
    ApproverNotAllowed,
    approver_problem,
    principal_key,
    review_lines,
)
from hoop_mcp.core.errors import ApprovalError, AuthenticationError, ConfigError, HoopError
from hoop_mcp.core.identity import OidcAuthenticator, OidcSettings
from hoop_mcp.core.models import Principal

log = logging.getLogger(__name__)

#: Largest request body accepted (a decision form is well under 2 KiB).
MAX_BODY_BYTES: Final = 16 * 1024
#: How long a login may take between ``/login`` and ``/callback``.
LOGIN_TTL_SECONDS: Final = 600
#: How long the issuer's discovery document is trusted before it is fetched again.
DISCOVERY_MAX_AGE_SECONDS: Final = 3600.0
#: Used form nonces kept at most (each one lives until its session would expire).
MAX_REMEMBERED_NONCES: Final = 200_000
#: Largest session cookie value (browsers keep about 4 KiB per cookie).
MAX_COOKIE_CHARS: Final = 3800
_HTTP_TIMEOUT_SECONDS: Final = 10.0
_MAX_DOCUMENT_BYTES: Final = 1024 * 1024
_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})
_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
_NONCE_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: A local path to continue to after login: starts with one "/", plain URL characters only.
_NEXT_RE: Final = re.compile(r"/(?![/\\])[A-Za-z0-9._~/?=&%-]{0,500}")
_DEFAULT_NEXT: Final = "/approvals"

_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:64rem;padding:0 1rem;"
    "color:#1b1b1b;line-height:1.4}"
    "header{display:flex;justify-content:space-between;align-items:center;border-bottom:1px solid #ccc;"
    "padding-bottom:.5rem;margin-bottom:1rem}"
    "header form{display:inline}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{text-align:left;vertical-align:top;padding:.3rem .5rem;border-bottom:1px solid #eee}"
    "th{white-space:nowrap;width:12rem}"
    "pre{background:#f6f6f6;border:1px solid #ddd;padding:.75rem;white-space:pre-wrap;"
    "overflow-wrap:anywhere}"
    "td{overflow-wrap:anywhere}"
    ".notice{border:1px solid #c99;background:#fdf2f2;padding:.75rem;margin:1rem 0}"
    ".ok{border:1px solid #9c9;background:#f2fdf2;padding:.75rem;margin:1rem 0}"
    "textarea{width:100%;box-sizing:border-box}"
    "button{margin:.5rem .5rem 0 0;padding:.4rem 1.2rem}"
)
_STYLE_HASH: Final = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def _same(text: str) -> str:
    return text


# ----------------------------------------------------------------------------------------- signing


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(key: bytes, purpose: str) -> bytes:
    """One key per purpose, so a value signed for one use is never valid for another."""
    return hmac.new(key, b"hoop-mcp approval page: " + purpose.encode(), hashlib.sha256).digest()


def _seal(key: bytes, payload: Mapping[str, object]) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return body + "." + _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())


def _unseal(key: bytes, value: str | None, *, now: float) -> dict[str, Any] | None:
    """The payload of a value :func:`_seal` made with ``key``, if intact and not expired."""
    if not value or len(value) > 8192:
        return None
    body, sep, mac = value.partition(".")
    if not sep:
        return None
    expected = _b64(hmac.new(key, body.encode("utf-8", "replace"), hashlib.sha256).digest())
    if not hmac.compare_digest(mac.encode("utf-8", "replace"), expected.encode()):
        return None
    try:
        payload = json.loads(_unb64(body))
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    exp = payload.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or exp <= now:
        return None
    return payload


# --------------------------------------------------------------------------------------------- urls


def _origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` in the form browsers send in ``Origin`` (default ports dropped)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


def _endpoint_url(value: object, *, what: str) -> str:
    """An issuer endpoint: https, or http on loopback only; no credentials or fragment."""
    if not isinstance(value, str):
        raise AuthenticationError(f"the issuer's discovery document has no {what}")
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        raise AuthenticationError(f"the issuer's {what} is not a URL") from None
    loopback_http = parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK
    if not (parts.scheme == "https" or loopback_http) or not parts.hostname:
        raise AuthenticationError(f"the issuer's {what} must be an https URL, got {value[:200]!r}")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise AuthenticationError(f"the issuer's {what} must not carry credentials or a fragment")
    return value


def local_path(value: str | None) -> str:
    """``value`` if it is a path on this site, else the approvals list (no open redirects)."""
    if value is not None and _NEXT_RE.fullmatch(value):
        return value
    return _DEFAULT_NEXT


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        raise urllib.error.URLError("the issuer answered with a redirect, which is not followed")


_OPENER: Final = urllib.request.build_opener(_NoRedirects)


class LoginFailed(Exception):
    """A login could not be completed; ``message`` is safe to show; ``status`` is the page's HTTP status."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _http_json(request: urllib.request.Request, *, what: str) -> tuple[int, dict[str, Any]]:
    """(status, JSON object) of one request; raises :class:`LoginFailed` when unreachable/unusable."""
    try:
        with _OPENER.open(request, timeout=_HTTP_TIMEOUT_SECONDS) as response:
            status, body = response.status, response.read(_MAX_DOCUMENT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(_MAX_DOCUMENT_BYTES + 1)
        exc.close()
    except (OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise LoginFailed(f"the identity provider cannot be reached ({what}: {reason})", status=502) from None
    if len(body) > _MAX_DOCUMENT_BYTES:
        raise LoginFailed(f"the identity provider's {what} answer is too large", status=502)
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise LoginFailed(f"the identity provider's {what} answer (HTTP {status}) is not JSON", status=502)
    return status, document


# ------------------------------------------------------------------------------------------ the app


@dataclass(frozen=True)
class Session:
    """A logged-in approver: who, which session (CSRF tokens are bound to it), until when."""

    session_id: str
    principal: Principal
    expires_at: float


@dataclass(frozen=True)
class _Endpoints:
    authorization: str
    token: str
    fetched_at: float


class _BodyLimit:
    """Refuses a request whose declared body is larger than the limit before the app sees it."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                    response = _plain(413, "request body too large")
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class _SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response (pages, redirects, errors, 404s)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._headers = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in self._headers}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*kept, *self._headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _plain(status: int, text: str) -> Response:
    return PlainTextResponse(text, status_code=status)


class _TooLarge(Exception):
    pass


class _BadForm(Exception):
    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


async def _read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body, at most :data:`MAX_BODY_BYTES`, each field once."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise _BadForm("this endpoint only accepts HTML form posts", status=415)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise _TooLarge
    except ClientDisconnect:
        raise _BadForm("the request body was not received completely") from None
    try:
        text = bytes(body).decode("utf-8")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except ValueError:
        raise _BadForm("the form is malformed") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise _BadForm(f"the form field {name!r} appears twice")
        fields[name] = value
    return fields


class ApprovalPage:
    """State and handlers of one approval page (reachable as ``app.state.page``)."""

    def __init__(
        self,
        *,
        service: ApprovalService,
        oidc: OidcSettings,
        web: ApprovalWebConfig,
        client_secret: str | None,
        session_key: bytes,
        text: Callable[[str], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(session_key) < 16:
            raise ConfigError("the approval page's session key must be at least 16 bytes long")
        self.service = service
        self.web = web
        self.issuer = oidc.issuer
        self.client_id = web.client_id
        self.client_secret = client_secret
        self.text = text
        self.clock = clock
        self.base_url = web.base_url.rstrip("/")
        self.redirect_uri = self.base_url + "/callback"
        origin = _origin_of(self.base_url)
        if origin is None:
            raise ConfigError(f"approvals.web: cannot tell the page's origin from {self.base_url!r}")
        self.origin = origin
        self.secure = self.base_url.startswith("https://")
        prefix = "__Host-" if self.secure else ""
        self.session_cookie = prefix + "hoop_approvals_session"
        self.login_cookie = prefix + "hoop_approvals_login"
        self._session_key = _derive(session_key, "session cookie")
        self._login_key = _derive(session_key, "login state cookie")
        self._form_key = _derive(session_key, "form token")
        # The id_token is for this page: its audience is the page's client id, and it must carry
        # the nonce this page sent.
        settings = OidcSettings.model_validate(
            {
                **oidc.model_dump(),
                "audience": web.client_id,
                "required_claims": tuple(dict.fromkeys((*oidc.required_claims, "nonce"))),
            }
        )
        self.authenticator = OidcAuthenticator(settings)
        self._endpoints: _Endpoints | None = None
        self._endpoints_lock = anyio.Lock()
        #: Form nonce -> when its session expires (a nonce is accepted once).
        self._used_nonces: dict[str, float] = {}
        #: Logged-out session id -> when it would have expired.
        self._revoked: dict[str, float] = {}
        self._next_prune = 0.0

    # -- sessions -----------------------------------------------------------------------------------

    def new_session(self, principal: Principal) -> tuple[Session, str]:
        """A session for ``principal`` and its cookie value."""
        expires = int(self.clock()) + self.web.session_ttl_seconds
        session = Session(secrets.token_urlsafe(18), principal, float(expires))
        value = _seal(
            self._session_key,
            {"v": 1, "sid": session.session_id, "p": principal.model_dump(mode="json"), "exp": expires},
        )
        return session, value

    def session_from_cookie(self, value: str | None) -> Session | None:
        payload = _unseal(self._session_key, value, now=self.clock())
        if payload is None or payload.get("v") != 1:
            return None
        sid = payload.get("sid")
        if not isinstance(sid, str) or sid in self._revoked:
            return None
        try:
            principal = Principal.model_validate(payload.get("p"))
        except ValidationError:
            return None
        return Session(sid, principal, float(payload["exp"]))

    def session(self, request: Request) -> Session | None:
        return self.session_from_cookie(request.cookies.get(self.session_cookie))

    def _prune(self) -> None:
        now = self.clock()
        if now < self._next_prune:
            return
        self._next_prune = now + 60
        for table in (self._used_nonces, self._revoked):
            for key in [k for k, until in table.items() if until <= now]:
                del table[key]

    # -- forms ---------------------------------------------------------------------------------------

    def form_token(self, session: Session, *, target: str, nonce: str) -> str:
        """The CSRF token of a form for ``target`` (an approval id, or ``"logout"``) in ``session``."""
        message = "\0".join(("v1", session.session_id, target, nonce)).encode()
        return _b64(hmac.new(self._form_key, message, hashlib.sha256).digest())

    def form_fields(self, session: Session, *, target: str) -> dict[str, str]:
        """Hidden fields of a fresh form (what the page embeds)."""
        nonce = secrets.token_urlsafe(18)
        return {"nonce": nonce, "csrf": self.form_token(session, target=target, nonce=nonce)}

    def _form_ok(self, session: Session, *, target: str, fields: Mapping[str, str]) -> bool:
        nonce, token = fields.get("nonce", ""), fields.get("csrf", "")
        if not _NONCE_RE.fullmatch(nonce) or not token.isascii():
            return False
        expected = self.form_token(session, target=target, nonce=nonce)
        return hmac.compare_digest(token.encode(), expected.encode())

    def _use_nonce(self, nonce: str, session: Session) -> bool:
        """Mark ``nonce`` used; ``False`` if it already was (a replayed form). No await inside."""
        self._prune()
        if nonce in self._used_nonces:
            return False
        if len(self._used_nonces) >= MAX_REMEMBERED_NONCES:
            raise _BadForm("too many forms are in flight; try again later", status=503)
        self._used_nonces[nonce] = session.expires_at
        return True

    def _foreign_origin(self, request: Request) -> str | None:
        """Why this POST looks cross-site (``None`` when its Origin/Referer is ours or absent)."""
        origin = request.headers.get("origin")
        if origin is not None:
            if _origin_of(origin) != self.origin:
                return f"the form was sent from another site ({origin[:100]})"
            return None
        referer = request.headers.get("referer")
        if referer is not None and _origin_of(referer) != self.origin:
            return "the form was sent from another site"
        return None

    # -- rendering -----------------------------------------------------------------------------------

    def _page(
        self, title: str, body: str, *, session: Session | None, status: int = 200, extra_head: str = ""
    ) -> HTMLResponse:
        if session is not None:
            fields = self.form_fields(session, target="logout")
            who = (
                f"<span>Logged in as <strong>{_e(session.principal.label)}</strong></span>"
                "<form method='post' action='/logout'>"
                f"<input type='hidden' name='nonce' value='{_e(fields['nonce'])}'>"
                f"<input type='hidden' name='csrf' value='{_e(fields['csrf'])}'>"
                "<button type='submit' id='logout'>Log out</button></form>"
            )
        else:
            who = "<span>Not logged in</span>"
        document = (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"{extra_head}<title>{_e(title)} - hoop-mcp approvals</title><style>{_STYLE}</style></head>"
            f"<body><header><a href='/approvals'>hoop-mcp approvals</a>{who}</header>"
            f"<main><h1>{_e(title)}</h1>{body}</main></body></html>"
        )
        return HTMLResponse(document, status_code=status)

    def _message(
        self,
        status: int,
        title: str,
        message: str,
        *,
        session: Session | None,
        link: tuple[str, str] | None = None,
    ) -> HTMLResponse:
        body = f"<p class='notice' id='message'>{_e(message)}</p>"
        if link is not None:
            body += f"<p><a id='next' href='{_e(link[0])}'>{_e(link[1])}</a></p>"
        return self._page(title, body, session=session, status=status)

    def _login_redirect(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        query = urllib.parse.urlencode({"next": local_path(target)})
        return RedirectResponse(f"/login?{query}", status_code=303)

    # -- routes --------------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/approvals", status_code=303)

    async def healthz(self, request: Request) -> Response:
        return _plain(200, "ok")

    def _human(self, request: Request) -> Session | Response:
        session = self.session(request)
        if session is None:
            return self._login_redirect(request)
        if not self.service.may_approve_anything(session.principal):
            return self._message(403, "Not allowed", "Agent principals can never approve.", session=None)
        return session

    async def list_approvals(self, request: Request) -> Response:
        session = self._human(request)
        if isinstance(session, Response):
            return session
        try:
            pending = await self.service.pending_for(session.principal)
        except ApprovalStoreUnavailable:
            return self._unavailable(session)
        if not pending:
            body = "<p id='empty'>Nothing is waiting for your decision.</p>"
        else:
            rows = []
            for approval in pending:
                row = dict(review_lines(approval))
                href = "/approvals/" + urllib.parse.quote(approval.approval_id, safe="")
                statement = " ".join(row.get("Statement", "").split())
                if len(statement) > 120:
                    statement = statement[:117] + "..."
                rows.append(
                    "<tr>"
                    f"<td><a class='approval' href='{_e(href)}'>{_e(row.get('Approval', ''))}</a></td>"
                    f"<td>{_e(row.get('Requested by', ''))}</td>"
                    f"<td>{_e(row.get('Tool', ''))} @ {_e(row.get('Connection', ''))}</td>"
                    f"<td>{_e(row.get('Rule', ''))}</td>"
                    f"<td><code>{_e(statement)}</code></td>"
                    f"<td>{_e(row.get('Expires at', ''))}</td>"
                    "</tr>"
                )
            body = (
                "<table id='pending'><thead><tr><th>Approval</th><th>Requested by</th><th>Tool</th>"
                "<th>Rule</th><th>Statement</th><th>Expires at</th></tr></thead><tbody>"
                + "".join(rows)
                + "</tbody></table>"
            )
        return self._page("Waiting for your decision", body, session=session)

    def _unavailable(self, session: Session | None) -> HTMLResponse:
        return self._message(
            503,
            "Approval store unavailable",
            "The approval store cannot be reached right now, so nothing can be shown or decided. "
            "Nothing was changed. Try again later or tell an operator.",
            session=session,
        )

    def _view_problem(self, principal: Principal, approval: Approval) -> str | None:
        """Why ``principal`` may not even look at ``approval`` (``None`` when they may)."""
        key = principal_key(principal)
        if key == principal_key(approval.request.requester):
            return None
        if any(principal_key(v.approver) == key for v in approval.votes):
            return None
        return approver_problem(principal, approval, agents=self.service.agents)

    async def show_approval(self, request: Request) -> Response:
        session = self._human(request)
        if isinstance(session, Response):
            return session
        approval_id = request.path_params["approval_id"]
        not_found = self._message(
            404, "Not found", "There is no such approval.", session=session, link=("/approvals", "Back")
        )
        if not _ID_RE.fullmatch(approval_id):
            return not_found
        try:
            approval = await self.service.get(approval_id)
        except ApprovalNotFound:
            return not_found
        except ApprovalStoreUnavailable:
            return self._unavailable(session)
        problem = self._view_problem(session.principal, approval)
        if problem is not None:
            return self._message(
                403,
                "Not allowed",
                f"You may not see this approval: {problem}.",
                session=session,
                link=("/approvals", "Back"),
            )
        return self._page(f"Approval {approval_id}", self._approval_body(approval, session), session=session)

    def _approval_body(self, approval: Approval, session: Session) -> str:
        parts: list[str] = []
        key = principal_key(session.principal)
        for vote in approval.votes:
            if principal_key(vote.approver) == key:
                verb = "approved" if vote.approve else "denied"
                parts.append(f"<p class='ok' id='your-decision'>You {verb} this call.</p>")
        rows = []
        for label, value in review_lines(approval):
            if label == "Statement":
                # Statements come from agents: every line escaped, hidden characters made visible.
                shown = "\n".join(_e(line) for line in value.split("\n"))
                rows.append(f"<tr><th>{_e(label)}</th><td><pre id='statement'>{shown}</pre></td></tr>")
            else:
                field_id = "field-" + re.sub(r"[^a-z]+", "-", label.lower())
                rows.append(f"<tr><th>{_e(label)}</th><td class='{field_id}'>{_e(value)}</td></tr>")
        parts.append(f"<table id='review'>{''.join(rows)}</table>")
        if approval.state is not ApprovalState.PENDING:
            parts.append(
                f"<p class='notice' id='decided'>This approval is {_e(approval.state.value)}; "
                "it can no longer be decided.</p>"
            )
            return "".join(parts)
        problem = approver_problem(session.principal, approval, agents=self.service.agents)
        if problem is not None:
            parts.append(
                f"<p class='notice' id='cannot-decide'>You cannot decide on this call: {_e(problem)}.</p>"
            )
            return "".join(parts)
        fields = self.form_fields(session, target=approval.approval_id)
        action = "/approvals/" + urllib.parse.quote(approval.approval_id, safe="") + "/decision"
        parts.append(
            f"<form method='post' action='{_e(action)}' id='decision'>"
            f"<input type='hidden' name='nonce' value='{_e(fields['nonce'])}'>"
            f"<input type='hidden' name='csrf' value='{_e(fields['csrf'])}'>"
            "<p><label for='reason'>Reason (required; recorded in the audit log)</label><br>"
            f"<textarea id='reason' name='reason' rows='3' required maxlength='{MAX_REASON}'></textarea></p>"
            "<button type='submit' id='approve' name='action' value='approve'>Approve</button>"
            "<button type='submit' id='deny' name='action' value='deny'>Deny</button>"
            "</form>"
        )
        return "".join(parts)

    async def decide(self, request: Request) -> Response:
        approval_id = request.path_params["approval_id"]
        if not _ID_RE.fullmatch(approval_id):
            return self._message(404, "Not found", "There is no such approval.", session=None)
        back = ("/approvals/" + urllib.parse.quote(approval_id, safe=""), "Back to the approval")
        foreign = self._foreign_origin(request)
        if foreign is not None:
            return self._message(
                403, "Refused", f"Refused: {foreign}. Nothing was changed.", session=None, link=back
            )
        session = self.session(request)
        if session is None:
            return self._message(
                401,
                "Not logged in",
                "You are not logged in (or your session ended). Nothing was changed.",
                session=None,
                link=("/login?" + urllib.parse.urlencode({"next": back[0]}), "Log in"),
            )
        if not self.service.may_approve_anything(session.principal):
            return self._message(403, "Not allowed", "Agent principals can never approve.", session=None)
        try:
            fields = await _read_form(request)
        except _TooLarge:
            return self._message(
                413, "Too large", "The form is too large. Nothing was changed.", session=session
            )
        except _BadForm as exc:
            return self._message(
                exc.status, "Bad form", f"{exc.message}. Nothing was changed.", session=session
            )
        if not self._form_ok(session, target=approval_id, fields=fields):
            return self._message(
                403,
                "Refused",
                "This form is not valid for your session (it was forged, or made for an earlier login "
                "or another approval). Nothing was changed. Open the approval again to decide.",
                session=session,
                link=back,
            )
        action = fields.get("action")
        if action not in ("approve", "deny"):
            return self._message(
                400, "Bad form", "Choose Approve or Deny. Nothing was changed.", session=session, link=back
            )
        reason = fields.get("reason", "").strip()
        if not reason:
            return self._message(
                400,
                "Reason missing",
                "A reason is required for every decision. Nothing was changed.",
                session=session,
                link=back,
            )
        try:
            fresh = self._use_nonce(fields["nonce"], session)
        except _BadForm as exc:
            return self._message(exc.status, "Busy", exc.message, session=session, link=back)
        if not fresh:
            return self._message(
                409,
                "Form already used",
                "This form was already submitted once; a form can be used only once, so this "
                "submission was refused and nothing was changed. Open the approval again to see its state.",
                session=session,
                link=back,
            )
        try:
            await self.service.decide(
                approval_id,
                approver=session.principal,
                approve=action == "approve",
                reason=self.text(reason),
                channel="web",
            )
        except ApprovalNotFound:
            return self._message(404, "Not found", "There is no such approval.", session=session)
        except ApproverNotAllowed as exc:
            return self._refused(
                403, "Not allowed", f"You may not decide on this call: {exc.message}.", session, back
            )
        except ApprovalConflict as exc:
            return self._refused(409, "Cannot be decided", f"{exc.message}.", session, back)
        except ApprovalStoreUnavailable:
            return self._unavailable(session)
        except ApprovalError as exc:
            return self._refused(400, "Not recorded", f"{exc.message}.", session, back)
        except HoopError as exc:
            log.error("approval %s: a web decision failed: %s", approval_id, exc.diagnostics())
            return self._refused(
                503,
                "Not recorded",
                "The decision could not be recorded (see the server log). Try again later.",
                session,
                back,
            )
        return RedirectResponse(back[0], status_code=303)

    def _refused(
        self, status: int, title: str, message: str, session: Session, link: tuple[str, str]
    ) -> HTMLResponse:
        return self._message(status, title, f"{message} Nothing was changed.", session=session, link=link)

    async def logout(self, request: Request) -> Response:
        foreign = self._foreign_origin(request)
        if foreign is not None:
            return self._message(403, "Refused", f"Refused: {foreign}.", session=None)
        session = self.session(request)
        if session is not None:
            try:
                fields = await _read_form(request)
            except _TooLarge:
                return self._message(413, "Too large", "The form is too large.", session=session)
            except _BadForm as exc:
                return self._message(exc.status, "Bad form", f"{exc.message}.", session=session)
            if not self._form_ok(session, target="logout", fields=fields):
                return self._message(
                    403, "Refused", "This logout form is not valid for your session.", session=session
                )
            self._prune()
            self._revoked[session.session_id] = session.expires_at
        response = self._message(
            200, "Logged out", "You are logged out.", session=None, link=("/login", "Log in again")
        )
        self._clear(response, self.session_cookie)
        return response

    # -- login ---------------------------------------------------------------------------------------

    async def _issuer_endpoints(self) -> _Endpoints:
        async with self._endpoints_lock:
            now = time.monotonic()
            cached = self._endpoints
            if cached is not None and now - cached.fetched_at < DISCOVERY_MAX_AGE_SECONDS:
                return cached
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 (OidcSettings checked the issuer URL)
            status, document = await anyio.to_thread.run_sync(
                lambda: _http_json(request, what="discovery document")
            )
            if status != 200:
                raise LoginFailed(
                    f"the identity provider's discovery document answered HTTP {status}", status=502
                )
            if document.get("issuer") != self.issuer:
                raise LoginFailed(
                    "the identity provider's discovery document names another issuer", status=502
                )
            try:
                found = _Endpoints(
                    authorization=_endpoint_url(
                        document.get("authorization_endpoint"), what="authorization_endpoint"
                    ),
                    token=_endpoint_url(document.get("token_endpoint"), what="token_endpoint"),
                    fetched_at=now,
                )
            except AuthenticationError as exc:
                raise LoginFailed(exc.message, status=502) from None
            self._endpoints = found
            return found

    async def login(self, request: Request) -> Response:
        target = local_path(request.query_params.get("next"))
        try:
            endpoints = await self._issuer_endpoints()
        except LoginFailed as exc:
            return self._message(exc.status, "Login unavailable", exc.message, session=None)
        state = secrets.token_urlsafe(24)
        nonce = secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        challenge = _b64(hashlib.sha256(verifier.encode("ascii")).digest())
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "openid profile email",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        separator = "&" if "?" in endpoints.authorization else "?"
        response = RedirectResponse(
            endpoints.authorization + separator + urllib.parse.urlencode(params), status_code=303
        )
        cookie = _seal(
            self._login_key,
            {
                "state": state,
                "nonce": nonce,
                "verifier": verifier,
                "next": target,
                "exp": int(self.clock()) + LOGIN_TTL_SECONDS,
            },
        )
        response.set_cookie(
            self.login_cookie,
            cookie,
            max_age=LOGIN_TTL_SECONDS,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )
        return response

    async def callback(self, request: Request) -> Response:
        try:
            principal, target = await self._finish_login(request)
        except LoginFailed as exc:
            response: Response = self._message(
                exc.status,
                "Login failed",
                f"Login failed: {exc.message}",
                session=None,
                link=("/login", "Try again"),
            )
        else:
            if not self.service.may_approve_anything(principal):
                response = self._message(
                    403,
                    "Not allowed",
                    f"{principal.label} is an agent principal. Agent principals can never approve, so "
                    "they cannot use the approval page.",
                    session=None,
                )
            else:
                session, value = self.new_session(principal)
                if len(value) > MAX_COOKIE_CHARS:
                    response = self._message(
                        400,
                        "Login failed",
                        "Your identity (groups) is too large to keep in a session cookie.",
                        session=None,
                    )
                else:
                    # A page that continues by itself: a navigation started here is same-site, so the
                    # SameSite=Strict session cookie is sent (it is not on the issuer's redirect chain).
                    response = self._page(
                        "Logged in",
                        f"<p>Logged in as {_e(principal.label)}. "
                        f"<a id='continue' href='{_e(target)}'>Continue</a></p>",
                        session=session,
                        extra_head=f"<meta http-equiv='refresh' content='0; url={_e(target)}'>",
                    )
                    response.set_cookie(
                        self.session_cookie,
                        value,
                        max_age=self.web.session_ttl_seconds,
                        path="/",
                        secure=self.secure,
                        httponly=True,
                        samesite="strict",
                    )
        self._clear(response, self.login_cookie)
        return response

    async def _finish_login(self, request: Request) -> tuple[Principal, str]:
        params = request.query_params
        saved = _unseal(self._login_key, request.cookies.get(self.login_cookie), now=self.clock())
        if saved is None:
            raise LoginFailed("this login was not started here or took too long; start again")
        state, nonce, verifier = saved.get("state"), saved.get("nonce"), saved.get("verifier")
        if not (isinstance(state, str) and isinstance(nonce, str) and isinstance(verifier, str)):
            raise LoginFailed("the login state is unreadable; start again")
        if not hmac.compare_digest(params.get("state", "").encode(), state.encode()):
            raise LoginFailed("the answer from the identity provider does not belong to this login")
        iss = params.get("iss")
        if iss is not None and iss != self.issuer:
            raise LoginFailed("the answer came from another identity provider")
        error = params.get("error")
        if error is not None:
            description = params.get("error_description") or ""
            raise LoginFailed(
                f"the identity provider refused: {self.text(error[:100])} {self.text(description[:300])}".strip(),
                status=403,
            )
        code = params.get("code")
        if not code:
            raise LoginFailed("the identity provider sent no authorization code")
        endpoints = await self._issuer_endpoints()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "client_id": self.client_id,
            "code_verifier": verifier,
        }
        if self.client_secret is not None:
            form["client_secret"] = self.client_secret
        token_request = urllib.request.Request(  # noqa: S310 (scheme checked in _endpoint_url)
            endpoints.token,
            data=urllib.parse.urlencode(form).encode(),
            headers={"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
            method="POST",
        )
        status, answer = await anyio.to_thread.run_sync(lambda: _http_json(token_request, what="token"))
        if status != 200:
            error = answer.get("error")
            shown = error[:100] if isinstance(error, str) else f"HTTP {status}"
            raise LoginFailed(f"the identity provider refused the code exchange ({shown})", status=502)
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise LoginFailed("the identity provider sent no id_token", status=502)
        try:
            principal = await self.authenticator.authenticate_async(id_token)
        except AuthenticationError as exc:
            raise LoginFailed(f"the id_token was refused: {exc.message}", status=403) from None
        # The signature and claims were verified just above; read the claims the verifier does not check.
        claims = jwt.decode(id_token, options={"verify_signature": False})
        if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise LoginFailed("the id_token was issued for another login (nonce mismatch)", status=403)
        audience = claims.get("aud")
        azp = claims.get("azp")
        several = isinstance(audience, list) and len(audience) > 1
        if (several or azp is not None) and azp != self.client_id:
            raise LoginFailed("the id_token was issued to another client (azp)", status=403)
        return principal, local_path(saved.get("next") if isinstance(saved.get("next"), str) else None)

    def _clear(self, response: Response, name: str) -> None:
        response.delete_cookie(
            name,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="strict" if name == self.session_cookie else "lax",
        )


def _e(value: str) -> str:
    """Text for HTML: hidden/control characters shown as escapes, then HTML-escaped (quotes too)."""
    return html.escape(visible(value), quote=True)


def build_approval_app(
    *,
    service: ApprovalService,
    oidc: OidcSettings,
    web: ApprovalWebConfig,
    client_secret: str | None,
    session_key: bytes,
    text: Callable[[str], str] = _same,
) -> Starlette:
    """The approval page as an ASGI app.

    ``oidc`` names the issuer approvers log in at (its ``audience`` is replaced by ``web.client_id``
    for the id_token). ``text`` masks free text typed on the page (reasons) before it is recorded.
    ``app.state.page`` is the :class:`ApprovalPage` (for tools and tests).
    """
    page = ApprovalPage(
        service=service,
        oidc=oidc,
        web=web,
        client_secret=client_secret,
        session_key=session_key,
        text=text,
    )
    routes = [
        Route("/", page.home, methods=["GET"]),
        Route("/healthz", page.healthz, methods=["GET"]),
        Route("/approvals", page.list_approvals, methods=["GET"]),
        Route("/approvals/{approval_id}", page.show_approval, methods=["GET"]),
        Route("/approvals/{approval_id}/decision", page.decide, methods=["POST"]),
        Route("/login", page.login, methods=["GET"]),
        Route("/callback", page.callback, methods=["GET"]),
        Route("/logout", page.logout, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_SecurityHeaders), Middleware(_BodyLimit, limit=MAX_BODY_BYTES)],
    )
    app.state.page = page
    return app


# -------------------------------------------------------------------------------------------- serve


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (raises ConfigError with the reason when it cannot)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ConfigError(f"approvals.web: cannot resolve listen_host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"approvals.web: cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


async def serve_app(app: ASGIApp, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until cancelled; then stop accepting and finish open requests."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            with anyio.CancelScope(shield=True):
                await server.serve(sockets=[sock])
            tg.cancel_scope.cancel()

        tg.start_soon(run)
        try:
            await anyio.sleep_forever()
        finally:
            server.should_exit = True


def _masker_text(config: ServerConfig, config_path: Path, environ: Mapping[str, str]) -> Callable[[str], str]:
    """The policy's text masking (detectors), as the MCP server applies it to reasons."""
    from hoop_mcp.core.masking import Masker
    from hoop_mcp.runtime import load_policy_for

    policy = load_policy_for(config, config_path)
    if config.masking.hash_key is not None:
        key = config.masking.hash_key.resolve(environ=environ, base_dir=config_path.parent)
        hash_key = key.get_secret_value().encode()
    else:
        hash_key = secrets.token_bytes(32)
    masker = Masker(policy.masking, hash_key=hash_key)
    return lambda text: masker.mask_text(text)[0]


async def run_web(config_path: Path, *, environ: Mapping[str, str]) -> None:
    """Serve the approval page of ``config_path`` until cancelled (``hoop-mcp approvals web``)."""
    from hoop_mcp.runtime import open_approvals
    from hoop_mcp.stores.sqlite import SqliteAuditLog

    config_path = await anyio.to_thread.run_sync(config_path.resolve)
    config = load_config(config_path)
    approvals_cfg = config.approvals
    if approvals_cfg is None or approvals_cfg.web is None:
        raise ConfigError(
            f"{config_path} has no approvals.web section",
            hint="add approvals: {web: {client_id: ...}}; see docs/approvals.md",
        )
    web = approvals_cfg.web
    oidc = config.approver_oidc()
    if oidc is None:
        raise ConfigError(
            "the approval page needs an OIDC issuer for approvers: configure approvals.oidc or identity.oidc"
        )
    base = config_path.parent
    client_secret = (
        web.client_secret.resolve(environ=environ, base_dir=base).get_secret_value()
        if web.client_secret is not None
        else None
    )
    if web.session_key is not None:
        session_key = web.session_key.resolve(environ=environ, base_dir=base).get_secret_value().encode()
    else:
        session_key = secrets.token_bytes(32)
        log.warning("approvals.web.session_key is not configured: sessions end when this process stops")
    text = _masker_text(config, config_path, environ)
    audit = await SqliteAuditLog.open(resolve_relative(config.audit.sqlite_path, config_path=config_path))
    try:
        approvals = await open_approvals(config, config_path, environ=environ, audit=audit, text=text)
        if approvals is None:  # excluded above
            raise ConfigError("approvals are not configured")
        try:
            app = build_approval_app(
                service=approvals.service,
                oidc=oidc.settings(),
                web=web,
                client_secret=client_secret,
                session_key=session_key,
                text=text,
            )
            sock = listen_socket(web.listen_host, web.listen_port)
            try:
                host, port = sock.getsockname()[:2]
                print(
                    f"hoop-mcp approval page: {web.base_url}/approvals (listening on {host}:{port}; "
                    f"OIDC redirect URI {web.base_url}/callback)",
                    file=sys.stderr,
                    flush=True,
                )
                await serve_app(app, sock)
            finally:
                sock.close()
        finally:
            await approvals.store.close()
    finally:
        await audit.close()


__all__ = [
    "MAX_BODY_BYTES",
    "SECURITY_HEADERS",
    "ApprovalPage",
    "LoginFailed",
    "Session",
    "build_approval_app",
    "listen_socket",
    "local_path",
    "run_web",
    "serve_app",
]
