"""Push protection: find secrets in the lines a push adds. Pure: no git, no I/O.

Rules are modelled on gitleaks' default configuration and GitHub push protection (see
``docs/secret-scanning.md`` for each rule's source). Provider tokens whose format carries a
checksum are verified, so placeholders that merely look like tokens do not block; pairs (AWS key id
+ secret) block only together, as GitHub push protection does. Content-based allowances
("fake", "example" in test fixtures) only ever relax the *generic* rules: the agent writes the
content, so a checksum-valid token or a private key body is never excused by a comment.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import zlib
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from posixpath import basename


@dataclass(frozen=True, slots=True)
class Finding:
    rule_id: str
    description: str
    path: str
    #: 1-based line number in the new version of the file.
    line: int
    #: Masked: at most the provider's public prefix, then the length.
    preview: str


@dataclass(frozen=True, slots=True)
class RuleInfo:
    id: str
    description: str
    #: What the rule is modelled on.
    source: str


@dataclass(frozen=True, slots=True)
class ScanSettings:
    #: Glob patterns (operator-configured) of paths that are not scanned.
    allow_paths: tuple[str, ...] = ()
    #: Rule ids turned off.
    disabled_rules: tuple[str, ...] = ()


_GL = "https://github.com/gitleaks/gitleaks/blob/master/config/gitleaks.toml"
_GH = (
    "https://docs.github.com/en/code-security/secret-scanning/introduction/supported-secret-scanning-patterns"
)
RULES: tuple[RuleInfo, ...] = (
    RuleInfo(
        "github-token",
        "GitHub token (classic PAT, OAuth, app, refresh)",
        f"gitleaks github-pat/github-oauth/github-app-token; {_GH}; checksum per GitHub's token format",
    ),
    RuleInfo(
        "github-fine-grained-pat",
        "GitHub fine-grained personal access token",
        f"gitleaks github-fine-grained-pat; {_GH}",
    ),
    RuleInfo("gitlab-pat", "GitLab personal/project access token", f"gitleaks gitlab-pat; {_GH}"),
    RuleInfo("slack-token", "Slack bot/user/app token", f"gitleaks slack-bot-token/slack-user-token; {_GH}"),
    RuleInfo("slack-webhook", "Slack incoming webhook URL", f"gitleaks slack-webhook-url; {_GH}"),
    RuleInfo(
        "stripe-live-key",
        "Stripe live secret or restricted key",
        f"gitleaks stripe-access-token (live only); {_GH}",
    ),
    RuleInfo("google-api-key", "Google API key", f"gitleaks gcp-api-key; {_GH}"),
    RuleInfo("npm-token", "npm access token", f"gitleaks npm-access-token; {_GH}; checksum as GitHub's"),
    RuleInfo("pypi-token", "PyPI upload token", f"gitleaks pypi-upload-token; {_GH}"),
    RuleInfo(
        "aws-access-key-pair",
        "AWS access key id together with its secret access key",
        f"GitHub push protection aws_access_key_id + aws_secret_access_key pair; gitleaks aws-access-token; {_GH}",
    ),
    RuleInfo("private-key", "PEM or OpenSSH private key", f"gitleaks private-key; {_GH}"),
    RuleInfo("jwt", "JSON Web Token", f"gitleaks jwt ({_GL})"),
    RuleInfo(
        "url-credentials",
        "Password in a connection URL",
        "gitleaks generic URL credentials (curl-auth-user, *-connection-string); GitHub generic passwords",
    ),
    RuleInfo(
        "generic-secret",
        "High-entropy value assigned to a secret-like name",
        f"gitleaks generic-api-key (keyword + entropy > 3.5) ({_GL})",
    ),
    RuleInfo(
        "dotenv-file",
        "Values committed in a .env file",
        "GitHub push protection guidance; gitleaks allowlist discussion of .env",
    ),
)
_RULE_IDS = frozenset(r.id for r in RULES)
#: Rules that rely on entropy or names rather than a provider's format.
_ENTROPY_RULES = frozenset({"generic-secret", "url-credentials", "jwt"})
_DESCRIPTIONS = {r.id: r.description for r in RULES}

LOCK_FILES = frozenset(
    {
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "poetry.lock",
        "uv.lock",
        "Pipfile.lock",
        "Cargo.lock",
        "go.sum",
        "Gemfile.lock",
        "composer.lock",
        "packages.lock.json",
        "flake.lock",
        "bun.lockb",
    }
)
#: AWS's published documentation keys (and other published examples): never findings.
DOC_PLACEHOLDERS = frozenset(
    {
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    }
)
_TEST_DIRS = re.compile(
    r"(^|/)(tests?|spec|fixtures?|testdata|__fixtures__|__tests__|mocks?)/", re.IGNORECASE
)
_FAKE_MARK = re.compile(r"fake|dummy|example|sample|placeholder|not[-_ ]a[-_ ]real", re.IGNORECASE)
_PLACEHOLDER = re.compile(
    r"^(?:x+|X+|\*+|\.+|0+|-+|_+|#+|(?:abc)?12345.*|change[-_]?me.*|your[-_].*|my[-_].*|insert[-_].*|replace[-_].*"
    r"|redacted.*|<.*>|\{.*\}|\$\{?.*|%\(?.*|%s|example.*|test|password|passwd|pass|secret|token|none|null|nil|true|false)$",
    re.IGNORECASE,
)
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

_GITHUB = re.compile(r"(gh[pousr]_)([A-Za-z0-9]{36})(?![A-Za-z0-9])")
_GITHUB_FG = re.compile(r"(github_pat_)[A-Za-z0-9]{22}_[A-Za-z0-9]{59}(?![A-Za-z0-9])")
_GITLAB = re.compile(r"(glpat-)[A-Za-z0-9_\-]{20,}(?:\.[0-9a-z]{2}\.[0-9a-z]{7})?")
_SLACK = re.compile(r"(xox[baprs]-)[0-9A-Za-z\-]{10,250}")
_SLACK_HOOK = re.compile(
    r"(https://hooks\.slack\.com/)(?:services|workflows|triggers)/T[A-Z0-9]{6,}/[A-Z0-9/]{6,}/[A-Za-z0-9]{20,}"
)
_STRIPE = re.compile(r"([sr]k_live_)[0-9A-Za-z]{24,247}(?![0-9A-Za-z])")
_GOOGLE = re.compile(r"(AIza)[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])")
_NPM = re.compile(r"(npm_)([A-Za-z0-9]{36})(?![A-Za-z0-9])")
_PYPI = re.compile(r"(pypi-AgEIcHlwaS5vcmc)[A-Za-z0-9_\-]{50,}")
_AWS_ID = re.compile(r"\b((?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16})\b")
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])")
_PRIVATE_KEY = re.compile(r"-----BEGIN[ A-Z0-9]{0,30} PRIVATE KEY(?: BLOCK)?-----")
_KEY_BODY = re.compile(r"^(?:\\n|\s|\"|')*([A-Za-z0-9+/=]{40,})")
_JWT = re.compile(
    r"(?<![A-Za-z0-9_\-])(eyJ[A-Za-z0-9_\-]{8,4000})\.(eyJ[A-Za-z0-9_\-]{8,16000})\.([A-Za-z0-9_\-]{16,4000})"
)
_URL_CRED = re.compile(r"://([^\s:@/\"'<>]{1,100}):([^\s@/\"'<>]{1,200})@[A-Za-z0-9.\-\[\]]+")
#: Secret-like names (lower case, found with str.find), and what must follow one: the rest of the
#: name, an assignment, and a value.
_GENERIC_KEYWORDS = (
    "api_key",
    "api-key",
    "apikey",
    "secret",
    "token",
    "passwd",
    "password",
    "pwd",
    "credential",
    "auth_key",
    "auth-key",
    "private_key",
    "private-key",
    "access_key",
    "access-key",
)
_GENERIC_TAIL = re.compile(
    r"[A-Za-z0-9_.\-]{0,60}[\"']?\s{0,5}(?::=|=>|==|=|:)\s{0,5}[\"'`]?([A-Za-z0-9_\-+/=.~!@#$%^&*]{16,200})[\"'`]?"
)
#: Literal keywords gating each provider rule (a rule's regex runs only where one occurs).
_DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*\s*=\s*(.*)$")
_DOTENV_SAFE = (".example", ".sample", ".template", ".dist", ".defaults", ".schema")


def looks_binary(text: str) -> bool:
    """True for text that is really binary (NUL bytes or mostly replacement characters)."""
    return "\x00" in text or (len(text) > 32 and text.count("\ufffd") * 4 > len(text))


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def _b62(number: int, width: int = 6) -> str:
    out = ""
    while number:
        number, rem = divmod(number, 62)
        out = _B62[rem] + out
    return out.rjust(width, "0")


def checksum_ok(body: str) -> bool:
    """GitHub / npm token checksum: the last 6 characters are base62(CRC32(the first 30))."""
    return len(body) == 36 and _b62(zlib.crc32(body[:30].encode())) == body[30:]


def _preview(prefix: str, secret: str) -> str:
    return f"{prefix}…[REDACTED, {len(secret)} chars]"


def _placeholder(value: str) -> bool:
    stripped = value.strip("\"'`")
    return (
        stripped in DOC_PLACEHOLDERS
        or "EXAMPLE" in stripped
        or bool(_PLACEHOLDER.match(stripped))
        or len(set(stripped)) <= 3
    )


def _jwt_header_ok(part: str) -> bool:
    try:
        header = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and isinstance(header.get("alg"), str) and header["alg"].lower() != "none"


class SecretScanner:
    """Scans the added lines of one file at a time. Thread-safe (no mutable state)."""

    def __init__(self, settings: ScanSettings | None = None) -> None:
        self.settings = settings or ScanSettings()
        unknown = sorted(set(self.settings.disabled_rules) - _RULE_IDS)
        if unknown:
            raise ValueError(
                f"unknown rule id(s) {', '.join(unknown)}; known: {', '.join(sorted(_RULE_IDS))}"
            )
        self._off = frozenset(self.settings.disabled_rules)

    def path_allowed(self, path: str) -> bool:
        """True when the file is not scanned at all (the operator's allow_paths)."""
        return any(fnmatchcase(path, pattern) for pattern in self.settings.allow_paths)

    def scan_added(self, path: str, lines: Sequence[tuple[int, str]]) -> list[Finding]:
        if not lines or self.path_allowed(path):
            return []
        text = "\n".join(t for _, t in lines)
        starts: list[int] = []
        offset = 0
        for _, t in lines:
            starts.append(offset)
            offset += len(t) + 1
        fixture = bool(_TEST_DIRS.search(path))

        def line_at(pos: int) -> tuple[int, str]:
            index = bisect_right(starts, pos) - 1
            return lines[index]

        found: dict[tuple[str, int], Finding] = {}

        def add(rule: str, pos: int, preview: str, *, excusable: bool = False) -> None:
            if rule in self._off:
                return
            number, content = line_at(pos)
            if excusable and fixture and _FAKE_MARK.search(content):
                return
            found.setdefault((rule, number), Finding(rule, _DESCRIPTIONS[rule], path, number, preview))

        # Lock files (by name, which the agent chooses) are full of random-looking integrity hashes:
        # there only the specific rules run; the generic, entropy-based ones would be noise.
        lock = basename(path) in LOCK_FILES
        for rule, pos, preview, excusable in self._matches(text, path):
            if lock and rule in _ENTROPY_RULES:
                continue
            add(rule, pos, preview, excusable=excusable)
        # The generic rule yields to a specific one on the same line (as in gitleaks).
        specific = {line for (rule, line) in found if rule != "generic-secret"}
        return sorted(
            (f for (rule, line), f in found.items() if rule != "generic-secret" or line not in specific),
            key=lambda f: (f.line, f.rule_id),
        )

    def _matches(self, text: str, path: str) -> Iterator[tuple[str, int, str, bool]]:
        if any(k in text for k in ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")):
            for m in _GITHUB.finditer(text):
                if not _boundary(text, m.start()):
                    continue
                body = m.group(2)
                if checksum_ok(body):
                    yield "github-token", m.start(), _preview(m.group(1), m.group(0)), False
                elif entropy(body) > 4.0 and not _placeholder(body):
                    yield "github-token", m.start(), _preview(m.group(1), m.group(0)), True
        if "npm_" in text:
            for m in _NPM.finditer(text):
                if not _boundary(text, m.start()):
                    continue
                body = m.group(2)
                if checksum_ok(body):
                    yield "npm-token", m.start(), _preview(m.group(1), m.group(0)), False
                elif entropy(body) > 4.0 and not _placeholder(body):
                    yield "npm-token", m.start(), _preview(m.group(1), m.group(0)), True
        for rx, rule, keys in (
            (_GITHUB_FG, "github-fine-grained-pat", ("github_pat_",)),
            (_GITLAB, "gitlab-pat", ("glpat-",)),
            (_SLACK, "slack-token", ("xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-")),
            (_SLACK_HOOK, "slack-webhook", ("hooks.slack.com",)),
            (_STRIPE, "stripe-live-key", ("k_live_",)),
            (_GOOGLE, "google-api-key", ("AIza",)),
            (_PYPI, "pypi-token", ("pypi-AgEIcHlwaS5vcmc",)),
        ):
            if not any(k in text for k in keys):
                continue
            for m in rx.finditer(text):
                body = m.group(0)[len(m.group(1)) :]
                if not _boundary(text, m.start()) or entropy(body) < 3.0 or _placeholder(body):
                    continue
                yield rule, m.start(), _preview(m.group(1), m.group(0)), False
        yield from self._aws(text)
        yield from self._private_keys(text)
        if "eyJ" in text:
            for m in _JWT.finditer(text):
                if _boundary(text, m.start()) and _jwt_header_ok(m.group(1)):
                    yield "jwt", m.start(), _preview("eyJ", m.group(0)), True
        if "://" in text:
            for m in _URL_CRED.finditer(text):
                password = m.group(2)
                if _placeholder(password) or password == m.group(1) or entropy(password) < 2.0:
                    continue
                yield "url-credentials", m.start(2), _preview("", password), True
        yield from self._generic(text)
        name = basename(path)
        if (name == ".env" or name.startswith(".env.")) and not name.endswith(_DOTENV_SAFE):
            for match in re.finditer(r"(?m)^.*$", text):
                line = _DOTENV_LINE.match(match.group(0))
                if line is None:
                    continue
                value = line.group(1).strip().strip("\"'")
                if value and not value.startswith("${") and not _placeholder(value):
                    yield "dotenv-file", match.start(), _preview("", value), False
                    break

    def _generic(self, text: str) -> Iterator[tuple[str, int, str, bool]]:
        low = text.lower()
        seen: set[int] = set()
        for keyword in _GENERIC_KEYWORDS:
            start = low.find(keyword)
            while start != -1:
                m = _GENERIC_TAIL.match(text, start + len(keyword))
                if m is not None and m.start(1) not in seen and _generic_value(m.group(1)):
                    seen.add(m.start(1))
                    yield "generic-secret", m.start(1), _preview("", m.group(1)), True
                start = low.find(keyword, start + len(keyword))

    def _aws(self, text: str) -> Iterator[tuple[str, int, str, bool]]:
        if not any(p in text for p in ("AKIA", "ASIA", "ABIA", "ACCA")):
            return
        ids = [
            m
            for m in _AWS_ID.finditer(text)
            if m.group(1) not in DOC_PLACEHOLDERS and "EXAMPLE" not in m.group(1)
        ]
        if not ids:
            return
        secrets = [
            m
            for m in _AWS_SECRET.finditer(text)
            if not _placeholder(m.group(1))
            and entropy(m.group(1)) > 4.0
            and re.search(r"[a-z]", m.group(1))
            and re.search(r"[A-Z]", m.group(1))
            and re.search(r"[0-9/+]", m.group(1))
        ]
        for m in secrets:
            yield "aws-access-key-pair", m.start(), _preview(ids[0].group(1)[:4], m.group(1)), False

    def _private_keys(self, text: str) -> Iterator[tuple[str, int, str, bool]]:
        if "PRIVATE KEY" not in text:
            return
        for m in _PRIVATE_KEY.finditer(text):
            following = text[m.end() : m.end() + 400]
            body = _KEY_BODY.match(following)
            if body is None or entropy(body.group(1)) < 3.5 or _placeholder(body.group(1)):
                continue
            yield (
                "private-key",
                m.start(),
                _preview("-----BEGIN", text[m.start() : m.end() + len(body.group(0))]),
                False,
            )


def _boundary(text: str, pos: int) -> bool:
    """Nothing word-like directly before ``pos`` (the token starts there)."""
    return pos == 0 or not (text[pos - 1].isalnum() or text[pos - 1] == "_")


def _generic_value(value: str) -> bool:
    """A value that looks like a secret, not like code, a placeholder or a reference."""
    if _placeholder(value):
        return False
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+", value):
        return False  # settings.SECRET_KEY, os.environ
    if re.fullmatch(r"[A-Z0-9_]+", value) or re.fullmatch(r"[a-z_]+", value):
        return False  # a constant's or variable's name
    if not (re.search(r"[0-9]", value) and re.search(r"[A-Za-z]", value)):
        return False
    if re.fullmatch(
        r"[0-9a-f]{32,}|[0-9A-F]{32,}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", value
    ):
        return False  # git object ids, digests, UUIDs (hex-only secrets are missed: documented)
    if value.startswith(("sk_test_", "rk_test_", "pk_test_", "pk_live_")):
        return False  # Stripe test-mode and publishable keys
    return entropy(value) >= 3.5
