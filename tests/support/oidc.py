"""A real OIDC issuer for tests: discovery + JWKS over HTTP on 127.0.0.1, keys made at test time.

Use the ``oidc_issuer`` fixture (register it from ``tests/conftest.py``, or import it into a test
module), or ``with running_issuer() as issuer:`` where a fixture does not fit (e.g. Hypothesis).

    token = issuer.mint(sub="alice", groups=["dba"])
    kid = issuer.rotate_key()               # publish a new RSA key and sign with it from now on
    issuer.jwks_fetches                     # how many times /jwks.json was served

It also runs the authorization code flow with PKCE (S256) for browser logins, advertised in the
discovery document as ``authorization_endpoint`` (``/authorize``) and ``token_endpoint`` (``/token``):

    issuer.add_user("bob", groups=["dba"], name="Bob", email="bob@example.com")
    issuer.register_client("approvals", redirect_uris=["http://localhost:8765/callback"], secret=None)

``/authorize`` shows a tiny HTML form (no JavaScript): type a registered subject into the ``login``
field and submit; it redirects to the client's ``redirect_uri`` with ``code``, ``state`` and ``iss``.
``/token`` accepts each code once, within ``code_ttl_seconds``, for the same client and
``redirect_uri`` and the matching PKCE ``code_verifier``; client secrets are accepted as
``client_secret_post`` or ``client_secret_basic``. It returns an RS256 ``id_token`` (aud = client id,
``azp``, ``nonce``, ``sub``, ``groups``, ``name``, ``email``) and an ``access_token``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import secrets
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

DEFAULT_AUDIENCE = "hoop-mcp-tests"
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compact(header: Mapping[str, Any], claims: Mapping[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """Assemble a JWS by hand (for tokens pyjwt refuses to make: ``alg: none``, HS256 with a PEM)."""
    signing_input = (
        b64url(json.dumps(dict(header)).encode()) + "." + b64url(json.dumps(dict(claims)).encode())
    )
    return signing_input + "." + b64url(sign(signing_input.encode("ascii")))


def hs256_with_secret(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class IssuerUser:
    """Someone who can log in at ``/authorize`` (by typing their subject)."""

    sub: str
    groups: tuple[str, ...] = ()
    name: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class IssuerClient:
    """A relying party registered for the authorization code flow."""

    client_id: str
    redirect_uris: tuple[str, ...]
    #: ``None``: a public client (PKCE only); otherwise the token endpoint requires this secret.
    secret: str | None = None


@dataclass(frozen=True)
class _CodeGrant:
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    scope: str
    sub: str
    expires_at: float


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    location: str | None = None


#: RFC 7636: a code verifier is 43-128 characters of [A-Za-z0-9-._~]; an S256 challenge is 43.
_VERIFIER_RE = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_CHALLENGE_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_MAX_FORM_BYTES = 64 * 1024


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of ``verifier``."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def _json_reply(status: int, document: Mapping[str, Any]) -> Reply:
    return Reply(status, json.dumps(dict(document)).encode())


def _html_reply(status: int, title: str, body_html: str) -> Reply:
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>{body_html}</body></html>"
    )
    return Reply(status, page.encode(), content_type="text/html; charset=utf-8")


def _form_fields(raw: str) -> dict[str, str] | None:
    """``application/x-www-form-urlencoded`` (or a query) as a dict; ``None`` if a field repeats."""
    try:
        pairs = urllib.parse.parse_qsl(raw, keep_blank_values=True, strict_parsing=False, max_num_fields=50)
    except ValueError:
        return None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            return None
        fields[name] = value
    return fields


def _with_query(url: str, params: Mapping[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: PrivateKey

    def jwk(self) -> dict[str, Any]:
        if isinstance(self.private, rsa.RSAPrivateKey):
            data: dict[str, Any] = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            data = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "alg": self.alg, "use": "sig"}


class OidcIssuer:
    """A running issuer. Thread-safe counters; ``stop()`` is idempotent."""

    def __init__(self, *, audience: str = DEFAULT_AUDIENCE) -> None:
        self.audience = audience
        self._lock = threading.Lock()
        self._keys: list[SigningKey] = [
            SigningKey("rsa-1", "RS256", new_rsa_key()),
            SigningKey("ec-1", "ES256", new_ec_key()),
        ]
        self._current: dict[str, SigningKey] = {"RSA": self._keys[0], "EC": self._keys[1]}
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        #: Replace a response body (e.g. ``b"not json"``) keyed by path.
        self.override_body: dict[str, bytes] = {}
        #: Replace the discovery document's ``issuer`` value.
        self.discovery_issuer: str | None = None
        #: Authorization code flow: who can log in, which clients exist, codes not yet redeemed.
        self.users: dict[str, IssuerUser] = {}
        self.clients: dict[str, IssuerClient] = {}
        self._codes: dict[str, _CodeGrant] = {}
        self.code_ttl_seconds = 60.0
        #: Claims merged last into every id_token ``/token`` issues (to test relying parties' checks).
        self.id_token_extra: dict[str, Any] = {}
        #: Every form ``/token`` received, in order (secrets included: tests only).
        self.token_requests: list[dict[str, str]] = []
        #: While clear, requests hang (until released or stopped) to test client timeouts.
        self._serving = threading.Event()
        self._serving.set()
        self._stopped = threading.Event()

        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def _wait_until_serving(self) -> bool:
                if not issuer._serving.is_set():
                    issuer._serving.wait(timeout=30)
                    if issuer._stopped.is_set():
                        self.close_connection = True
                        return False
                return True

            def _send(self, reply: Reply) -> None:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.send_header("Cache-Control", "no-store")
                if reply.location is not None:
                    self.send_header("Location", reply.location)
                self.end_headers()
                self.wfile.write(reply.body)

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if not self._wait_until_serving():
                    return
                if path == "/authorize" and path not in issuer.override_body:
                    self._send(issuer._authorize_page(query))
                    return
                body = issuer._body(path)
                if body is None:
                    self.send_error(404)
                    return
                self._send(Reply(200, body))

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                if not self._wait_until_serving():
                    return
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    self.send_error(411)
                    return
                if not 0 <= length <= _MAX_FORM_BYTES:
                    self.send_error(413)
                    return
                raw = self.rfile.read(length).decode("utf-8", "replace")
                if path == "/authorize":
                    self._send(issuer._authorize_login(raw))
                elif path == "/token":
                    self._send(issuer._token(raw, self.headers.get("Authorization")))
                else:
                    self.send_error(404)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.jwks_url = f"{self.issuer}/jwks.json"
        self.authorization_endpoint = f"{self.issuer}/authorize"
        self.token_endpoint = f"{self.issuer}/token"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="oidc-issuer", daemon=True
        )
        self._thread.start()

    # -- server side --------------------------------------------------------------------------------

    def _body(self, path: str) -> bytes | None:
        with self._lock:
            if path == "/.well-known/openid-configuration":
                self.discovery_fetches += 1
            elif path == "/jwks.json":
                self.jwks_fetches += 1
            if path in self.override_body:
                return self.override_body[path]
            if path == "/.well-known/openid-configuration":
                document = {
                    "issuer": self.discovery_issuer or self.issuer,
                    "jwks_uri": self.jwks_url,
                    "authorization_endpoint": self.authorization_endpoint,
                    "token_endpoint": self.token_endpoint,
                    "response_types_supported": ["code"],
                    "grant_types_supported": ["authorization_code"],
                    "code_challenge_methods_supported": ["S256"],
                    "token_endpoint_auth_methods_supported": [
                        "none",
                        "client_secret_post",
                        "client_secret_basic",
                    ],
                    "scopes_supported": ["openid", "profile", "email"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                    "authorization_response_iss_parameter_supported": True,
                }
                return json.dumps(document).encode()
            if path == "/jwks.json":
                return json.dumps({"keys": [key.jwk() for key in self._keys]}).encode()
        return None

    # -- authorization code flow ---------------------------------------------------------------------

    def add_user(
        self,
        sub: str,
        *,
        groups: Sequence[str] = (),
        name: str | None = None,
        email: str | None = None,
    ) -> IssuerUser:
        user = IssuerUser(sub=sub, groups=tuple(groups), name=name, email=email)
        with self._lock:
            self.users[sub] = user
        return user

    def register_client(
        self, client_id: str, *, redirect_uris: Sequence[str], secret: str | None = None
    ) -> IssuerClient:
        client = IssuerClient(client_id=client_id, redirect_uris=tuple(redirect_uris), secret=secret)
        with self._lock:
            self.clients[client_id] = client
        return client

    def _check_authorization_request(
        self, fields: Mapping[str, str]
    ) -> tuple[Reply | None, IssuerClient | None]:
        """(a reply refusing the request, or ``None``; the client when the request is acceptable)."""
        with self._lock:
            client = self.clients.get(fields.get("client_id", ""))
        if client is None:
            return _html_reply(400, "Unknown client", "<p>client_id is not registered.</p>"), None
        redirect_uri = fields.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            # Never redirect to an unregistered URI: show the error here instead.
            return _html_reply(400, "Bad redirect_uri", "<p>redirect_uri is not registered.</p>"), None

        def refuse(error: str, description: str) -> tuple[Reply, None]:
            params = {"error": error, "error_description": description, "iss": self.issuer}
            if "state" in fields:
                params["state"] = fields["state"]
            return Reply(303, b"", location=_with_query(redirect_uri, params)), None

        if fields.get("response_type") != "code":
            return refuse("unsupported_response_type", "only response_type=code is supported")
        if fields.get("code_challenge_method") != "S256":
            return refuse("invalid_request", "PKCE with code_challenge_method=S256 is required")
        if not _CHALLENGE_RE.fullmatch(fields.get("code_challenge", "")):
            return refuse("invalid_request", "code_challenge must be an S256 challenge")
        if "openid" not in fields.get("scope", "").split():
            return refuse("invalid_scope", "the openid scope is required")
        return None, client

    def _authorize_page(self, query: str) -> Reply:
        fields = _form_fields(query)
        if fields is None:
            return _html_reply(400, "Bad request", "<p>a parameter is repeated or malformed.</p>")
        refusal, _ = self._check_authorization_request(fields)
        if refusal is not None:
            return refusal
        return self._login_form(fields, problem=None)

    def _login_form(self, fields: Mapping[str, str], *, problem: str | None) -> Reply:
        keep = ("client_id", "redirect_uri", "response_type", "scope", "state", "nonce")
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(fields[name], quote=True)}">'
            for name in (*keep, "code_challenge", "code_challenge_method")
            if name in fields
        )
        error = f'<p id="error">{html.escape(problem)}</p>' if problem else ""
        body = (
            f"{error}<form method='post' action='/authorize'>{hidden}"
            "<label for='login'>Subject</label> <input id='login' name='login' autocomplete='off'>"
            "<button id='submit' type='submit'>Log in</button></form>"
        )
        return _html_reply(401 if problem else 200, "Test issuer login", body)

    def _authorize_login(self, raw: str) -> Reply:
        fields = _form_fields(raw)
        if fields is None:
            return _html_reply(400, "Bad request", "<p>a field is repeated or malformed.</p>")
        refusal, client = self._check_authorization_request(fields)
        if refusal is not None or client is None:
            return refusal or _html_reply(400, "Bad request", "")
        with self._lock:
            user = self.users.get(fields.get("login", ""))
        if user is None:
            return self._login_form(fields, problem="unknown user")
        code = secrets.token_urlsafe(24)
        grant = _CodeGrant(
            client_id=client.client_id,
            redirect_uri=fields["redirect_uri"],
            code_challenge=fields["code_challenge"],
            nonce=fields.get("nonce") or None,
            scope=fields.get("scope", ""),
            sub=user.sub,
            expires_at=time.monotonic() + self.code_ttl_seconds,
        )
        with self._lock:
            self._codes[code] = grant
        params = {"code": code, "iss": self.issuer}
        if "state" in fields:
            params["state"] = fields["state"]
        return Reply(303, b"", location=_with_query(grant.redirect_uri, params))

    def _client_credentials(
        self, fields: Mapping[str, str], authorization: str | None
    ) -> tuple[str, str | None] | None:
        if authorization is not None:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "basic":
                return None
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except ValueError:
                return None
            client_id, sep, secret = decoded.partition(":")
            if not sep:
                return None
            return urllib.parse.unquote(client_id), urllib.parse.unquote(secret)
        return fields.get("client_id", ""), fields.get("client_secret")

    def _token(self, raw: str, authorization: str | None) -> Reply:
        fields = _form_fields(raw)
        if fields is None:
            return _json_reply(400, {"error": "invalid_request"})
        with self._lock:
            self.token_requests.append(dict(fields))
        if fields.get("grant_type") != "authorization_code":
            return _json_reply(400, {"error": "unsupported_grant_type"})
        credentials = self._client_credentials(fields, authorization)
        if credentials is None:
            return _json_reply(401, {"error": "invalid_client"})
        client_id, secret = credentials
        with self._lock:
            client = self.clients.get(client_id)
            # Single use: a code is gone once presented, whatever happens next.
            grant = self._codes.pop(fields.get("code", ""), None)
        if client is None:
            return _json_reply(401, {"error": "invalid_client"})
        if client.secret is not None and not (
            secret is not None and hmac.compare_digest(secret.encode(), client.secret.encode())
        ):
            return _json_reply(401, {"error": "invalid_client", "error_description": "bad client secret"})

        def invalid(description: str) -> Reply:
            return _json_reply(400, {"error": "invalid_grant", "error_description": description})

        if grant is None:
            return invalid("unknown or already used code")
        if time.monotonic() > grant.expires_at:
            return invalid("the code expired")
        if grant.client_id != client.client_id:
            return invalid("the code was issued to another client")
        if fields.get("redirect_uri") != grant.redirect_uri:
            return invalid("redirect_uri differs from the authorization request")
        verifier = fields.get("code_verifier", "")
        if not _VERIFIER_RE.fullmatch(verifier) or not hmac.compare_digest(
            s256(verifier), grant.code_challenge
        ):
            return invalid("PKCE verification failed")
        with self._lock:
            user = self.users[grant.sub]
            tamper = dict(self.id_token_extra)
        claims: dict[str, Any] = {"azp": client.client_id}
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce
        if user.name is not None:
            claims["name"] = user.name
        if user.email is not None:
            claims["email"] = user.email
        id_token = self.mint(
            sub=user.sub, groups=user.groups, aud=client.client_id, extra={**claims, **tamper}
        )
        access_token = self.mint(
            sub=user.sub, groups=user.groups, extra={"client_id": client.client_id, "scope": grant.scope}
        )
        return _json_reply(
            200,
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
                "scope": grant.scope,
            },
        )

    def hang(self) -> None:
        """Accept connections but never answer (until :meth:`release` or :meth:`stop`)."""
        self._serving.clear()

    def release(self) -> None:
        self._serving.set()

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._serving.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # -- keys and tokens ----------------------------------------------------------------------------

    def key(self, kid: str) -> SigningKey:
        with self._lock:
            for key in self._keys:
                if key.kid == kid:
                    return key
        raise KeyError(kid)

    def rotate_key(self, *, kty: str = "RSA", keep_old: bool = True) -> str:
        """Publish a fresh key of ``kty`` (``RSA`` or ``EC``) and sign with it from now on; its kid."""
        kid = f"{kty.lower()}-{uuid.uuid4().hex[:8]}"
        new = (
            SigningKey(kid, "RS256", new_rsa_key())
            if kty == "RSA"
            else SigningKey(kid, "ES256", new_ec_key())
        )
        with self._lock:
            old = self._current[kty]
            if not keep_old:
                self._keys.remove(old)
            self._keys.append(new)
            self._current[kty] = new
        return kid

    def claims(
        self,
        *,
        sub: str | None = "alice",
        groups: Any = ("developers",),
        aud: Any = None,
        iss: str | None = None,
        exp_in: float | None = 300,
        nbf_in: float | None = None,
        iat_in: float | None = 0,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The claims :meth:`mint` signs; a ``None`` argument leaves that claim out."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": iss if iss is not None else self.issuer,
            "aud": aud if aud is not None else self.audience,
        }
        if sub is not None:
            claims["sub"] = sub
        if groups is not None:
            claims["groups"] = list(groups) if isinstance(groups, tuple) else groups
        if exp_in is not None:
            claims["exp"] = now + exp_in
        if nbf_in is not None:
            claims["nbf"] = now + nbf_in
        if iat_in is not None:
            claims["iat"] = now + iat_in
        claims.update(extra or {})
        return claims

    def mint(
        self,
        *,
        sub: str | None = "alice",
        groups: Any = ("developers",),
        aud: Any = None,
        iss: str | None = None,
        exp_in: float | None = 300,
        nbf_in: float | None = None,
        iat_in: float | None = 0,
        kid: str | None = None,
        alg: str = "RS256",
        extra: Mapping[str, Any] | None = None,
        signing_key: PrivateKey | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed JWT. ``alg`` picks the current key of that family unless ``kid`` names one;
        ``signing_key`` signs with any other key (e.g. a foreign key under a known kid)."""
        if kid is None:
            with self._lock:
                key = self._current["EC" if alg.startswith("ES") else "RSA"]
        else:
            try:
                key = self.key(kid)
            except KeyError:
                if signing_key is None:
                    raise
                key = SigningKey(kid, alg, signing_key)
        claims = self.claims(
            sub=sub, groups=groups, aud=aud, iss=iss, exp_in=exp_in, nbf_in=nbf_in, iat_in=iat_in, extra=extra
        )
        private = signing_key if signing_key is not None else key.private
        return jwt.encode(claims, private, algorithm=alg, headers={"kid": key.kid, **(headers or {})})


@contextmanager
def running_issuer(*, audience: str = DEFAULT_AUDIENCE) -> Iterator[OidcIssuer]:
    issuer = OidcIssuer(audience=audience)
    try:
        yield issuer
    finally:
        issuer.stop()


@pytest.fixture
def oidc_issuer() -> Iterator[OidcIssuer]:
    """A fresh issuer per test (new keys, zeroed counters), stopped afterwards."""
    with running_issuer() as issuer:
        yield issuer
