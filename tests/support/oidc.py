"""A real OIDC issuer for tests: discovery + JWKS over HTTP on 127.0.0.1, keys made at test time.

Use the ``oidc_issuer`` fixture (register it from ``tests/conftest.py``, or import it into a test
module), or ``with running_issuer() as issuer:`` where a fixture does not fit (e.g. Hypothesis).

    token = issuer.mint(sub="alice", groups=["dba"])
    kid = issuer.rotate_key()               # publish a new RSA key and sign with it from now on
    issuer.jwks_fetches                     # how many times /jwks.json was served
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
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
        #: While clear, requests hang (until released or stopped) to test client timeouts.
        self._serving = threading.Event()
        self._serving.set()
        self._stopped = threading.Event()

        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if not issuer._serving.is_set():
                    issuer._serving.wait(timeout=30)
                    if issuer._stopped.is_set():
                        self.close_connection = True
                        return
                body = issuer._body(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.jwks_url = f"{self.issuer}/jwks.json"
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
                    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                }
                return json.dumps(document).encode()
            if path == "/jwks.json":
                return json.dumps({"keys": [key.jwk() for key in self._keys]}).encode()
        return None

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
