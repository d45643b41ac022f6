"""Format-valid, freshly random fake secrets, made at test time (nothing secret-shaped is committed).

Checksummed formats get valid checksums, so the scanner's strictest paths are exercised; the values
are random and were never issued by anyone.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
import zlib
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

_ALNUM = string.ascii_letters + string.digits
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _rand(n: int, alphabet: str = _ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _b62(number: int) -> str:
    out = ""
    while number:
        number, rem = divmod(number, 62)
        out = _B62[rem] + out
    return out.rjust(6, "0")


def checksummed(prefix: str) -> str:
    body = _rand(30)
    return prefix + body + _b62(zlib.crc32(body.encode()))


def bad_checksum(prefix: str) -> str:
    token = checksummed(prefix)
    last = token[-1]
    return token[:-1] + ("A" if last != "A" else "B")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt() -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps({"sub": _rand(8), "iat": 1700000000}).encode())
    return f"{header}.{payload}.{_b64url(secrets.token_bytes(32))}"


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, fmt: PrivateFormat) -> str:
    return key.private_bytes(Encoding.PEM, fmt, NoEncryption()).decode()


def aws_secret() -> str:
    while True:
        value = _rand(40, _ALNUM + "/+")
        if any(c.islower() for c in value) and any(c.isupper() for c in value):
            return value


#: Placeholder name -> generator. Templates use ``{{name}}``.
GENERATORS: dict[str, Callable[[], str]] = {
    "github_classic": lambda: checksummed("ghp_"),
    "github_oauth": lambda: checksummed("gho_"),
    "github_app": lambda: checksummed("ghs_"),
    "github_bad_checksum_lowent": lambda: "ghp_" + "x" * 36,
    "github_fine_grained": lambda: "github_pat_" + _rand(22) + "_" + _rand(59),
    "gitlab": lambda: "glpat-" + _rand(20, _ALNUM + "_-"),
    "slack_bot": lambda: f"xoxb-{_rand(11, string.digits)}-{_rand(12, string.digits)}-{_rand(24)}",
    "slack_webhook": lambda: (
        f"https://hooks.slack.com/services/T{_rand(10, string.ascii_uppercase + string.digits)}/"
        f"B{_rand(10, string.ascii_uppercase + string.digits)}/{_rand(24)}"
    ),
    "stripe_live": lambda: "sk_live_" + _rand(32),
    "stripe_restricted": lambda: "rk_live_" + _rand(32),
    "stripe_test": lambda: "sk_test_" + _rand(32),
    "stripe_publishable": lambda: "pk_live_" + _rand(32),
    "google": lambda: "AIza" + _rand(35, _ALNUM + "_-"),
    "npm": lambda: checksummed("npm_"),
    "pypi": lambda: "pypi-AgEIcHlwaS5vcmc" + _rand(120, _ALNUM + "_-"),
    "aws_id": lambda: "AKIA" + _rand(16, string.ascii_uppercase + "234567"),
    "aws_secret": aws_secret,
    "rsa_private_key": lambda: _pem(
        rsa.generate_private_key(public_exponent=65537, key_size=2048), PrivateFormat.TraditionalOpenSSL
    ),
    "ec_private_key": lambda: _pem(ec.generate_private_key(ec.SECP256R1()), PrivateFormat.PKCS8),
    "openssh_private_key": lambda: (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
        .decode()
    ),
    "jwt": jwt,
    "password": lambda: _rand(6) + "-" + _rand(6) + "-" + _rand(4, string.digits),
    "high_entropy": lambda: _rand(20) + _rand(4, string.digits) + _rand(8),
    "hex40": lambda: secrets.token_hex(20),
    "uuid": lambda: "-".join(secrets.token_hex(n) for n in (4, 2, 2, 2, 6)),
}


def fill(template: str) -> tuple[str, dict[str, str]]:
    """``template`` with every ``{{name}}`` replaced; the same name gets the same value in one file.

    Returns the text and the values used (so tests can check no value leaks)."""
    values: dict[str, str] = {}
    out = template
    for name, make in GENERATORS.items():
        marker = "{{" + name + "}}"
        if marker in out:
            values[name] = make()
            out = out.replace(marker, values[name])
    if "{{" in out:
        raise ValueError(f"unknown placeholder in template: {out[out.index('{{') :][:40]}")
    return out, values
