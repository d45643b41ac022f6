"""A local OIDC issuer for ``hoop-mcp demo``: discovery and JWKS over HTTP on 127.0.0.1.

The demo uses it so that the agent's identity is verified like in production (a signed JWT checked
against the issuer's published keys on every call), without an identity provider to install. The
signing key is made at start and never written to disk; tokens die with it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

DEMO_AUDIENCE = "hoop-mcp-demo"


class DemoIssuer:
    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = uuid.uuid4().hex[:12]
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        jwk.update(kid=self._kid, use="sig", alg="RS256")
        self._jwks = json.dumps({"keys": [jwk]}).encode()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._discovery = json.dumps({"issuer": self.url, "jwks_uri": f"{self.url}/jwks.json"}).encode()
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-issuer", daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = {
                    "/.well-known/openid-configuration": issuer._discovery,
                    "/jwks.json": issuer._jwks,
                }.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body or b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def start(self) -> DemoIssuer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def mint(self, *, subject: str, groups: list[str], name: str, ttl_seconds: int = 12 * 3600) -> str:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": DEMO_AUDIENCE,
            "sub": subject,
            "name": name,
            "groups": groups,
            "iat": now,
            "nbf": now,
            "exp": now + ttl_seconds,
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self._kid})
