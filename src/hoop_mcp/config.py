"""The server configuration file (``version: 1``): strict, typed, secrets by reference.

Only the CLI reads files and the environment; the rest of the program receives these objects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field, SecretStr, ValidationError, field_validator, model_validator

from hoop_mcp.core.errors import ConfigError
from hoop_mcp.core.models import FrozenModel
from hoop_mcp.core.yamlfile import load_yaml_text, read_text_file

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from hoop_mcp.core.identity import OidcSettings

_CONN_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class SecretRef(FrozenModel):
    """A secret given by reference: ``{env: NAME}`` or ``{file: PATH}``. Never a literal value."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self

    def describe(self) -> str:
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"

    def resolve(self, *, environ: Mapping[str, str], base_dir: Path) -> SecretStr:
        if self.env is not None:
            value = environ.get(self.env)
            if value is None or not value.strip():
                raise ConfigError(
                    f"secret reference env:{self.env} is not set",
                    hint=f"export {self.env}=... before starting hoop-mcp",
                )
            return SecretStr(value.strip())
        if self.file is None:  # excluded by the validator
            raise ConfigError("secret reference has neither 'env' nor 'file'")
        path = self.file if self.file.is_absolute() else base_dir / self.file
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"secret reference file:{path} cannot be read: {exc.strerror}") from None
        if len(data) > 65536:
            raise ConfigError(f"secret file {path} is larger than 64 KiB")
        try:
            text = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ConfigError(f"secret file {path} is not UTF-8") from None
        if not text:
            raise ConfigError(f"secret file {path} is empty")
        return SecretStr(text)


class PostgresConnection(FrozenModel):
    kind: Literal["postgres"]
    description: str = ""
    #: libpq connection string or URI, by reference (it usually holds the password).
    dsn: SecretRef
    #: Optional least-privilege role for reads (``SET LOCAL ROLE`` inside the read-only transaction).
    read_role: str | None = None
    #: Schema that unqualified names resolve to (``search_path`` is pinned to it).
    schema_name: str = Field(default="public", alias="schema")
    statement_timeout_ms: int = Field(default=5_000, ge=100, le=600_000)
    lock_timeout_ms: int = Field(default=2_000, ge=10, le=600_000)
    idle_in_transaction_timeout_ms: int = Field(default=10_000, ge=100, le=3_600_000)
    max_rows: int = Field(default=1_000, ge=1, le=1_000_000)
    max_bytes: int = Field(default=1_000_000, ge=1_024, le=256_000_000)
    max_sql_bytes: int = Field(default=100_000, ge=64, le=10_000_000)
    pool_size: int = Field(default=4, ge=1, le=64)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)

    @field_validator("read_role", "schema_name")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z_][a-z0-9_$]{0,62}", value):
            raise ValueError("must be a lower-case PostgreSQL identifier")
        return value


_GIT_HTTPS_URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%/+-]*)?")
_GIT_SSH_URL = re.compile(
    r"ssh://[A-Za-z0-9._-]+@[A-Za-z0-9.-]+(:[0-9]{1,5})?/[A-Za-z0-9._~/+-]*"
    r"|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[A-Za-z0-9._~][A-Za-z0-9._~/+-]*"
)


class SecretScanSettings(FrozenModel):
    """Push protection: every outgoing commit is scanned; a finding blocks the push."""

    #: Glob patterns of paths never scanned (e.g. ``docs/examples/*``). In-repository ignore files
    #: and inline markers are not honoured: the agent writes those.
    allow_paths: tuple[str, ...] = ()
    #: Findings to let through, as ``<commit>:<path>:<rule>:<line>`` (the fingerprint a blocked push
    #: prints, as in gitleaks' ``.gitleaksignore``).
    allow_findings: tuple[str, ...] = ()
    #: Rule ids to turn off entirely (see docs/secret-scanning.md).
    disabled_rules: tuple[str, ...] = ()


class GitConnection(FrozenModel):
    """A Git remote the server pushes to with its own credential (see docs/git.md)."""

    kind: Literal["git"]
    description: str = ""
    #: ``https://host/org/repo.git`` or ``ssh://git@host/org/repo.git`` (``git@host:org/repo.git``).
    #: Never with credentials in it.
    remote_url: str
    #: HTTPS: the token (or password), by reference. Sent by git only to this host.
    token: SecretRef | None = None
    #: HTTPS: the user name sent with the token (GitHub accepts any; GitLab wants ``oauth2``).
    username: str = Field(default="x-access-token", min_length=1, max_length=100)
    #: SSH: the private key (a deploy key), by reference.
    ssh_key: SecretRef | None = None
    #: SSH: a known_hosts file for the remote host (host keys are always checked).
    known_hosts: Path | None = None
    #: Directories the agents' working copies must live in (after resolving symlinks).
    workspace_roots: tuple[Path, ...] = Field(min_length=1)
    #: Largest push (bytes of new objects, uncompressed) and most commits in one push.
    max_push_bytes: int = Field(default=100_000_000, ge=1_000, le=2_000_000_000)
    max_commits: int = Field(default=1_000, ge=1, le=100_000)
    #: Time limit of each git network operation.
    timeout_s: float = Field(default=120.0, gt=0, le=3_600)
    scan: SecretScanSettings = SecretScanSettings()
    #: Where the server keeps its own staging clone of the remote (default: next to the audit log).
    state_dir: Path | None = None

    @field_validator("remote_url")
    @classmethod
    def _remote_url(cls, value: str) -> str:
        if "@" in value.split("://", 1)[-1].split("/", 1)[0] and value.startswith(("http://", "https://")):
            raise ValueError("remote_url must not contain credentials; give them in 'token' (by reference)")
        if not (_GIT_HTTPS_URL.fullmatch(value) or _GIT_SSH_URL.fullmatch(value)):
            raise ValueError(
                f"remote_url must be an https://, http://, ssh:// or user@host:path URL without "
                f"credentials, query or fragment, got {value!r}"
            )
        return value

    @field_validator("workspace_roots")
    @classmethod
    def _absolute_roots(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        for root in value:
            if not root.is_absolute():
                raise ValueError(f"workspace root {str(root)!r} must be an absolute path")
        return value

    @property
    def uses_ssh(self) -> bool:
        return not self.remote_url.startswith(("http://", "https://"))

    @model_validator(mode="after")
    def _credential(self) -> GitConnection:
        if self.uses_ssh:
            if self.ssh_key is None or self.known_hosts is None:
                raise ValueError("an SSH remote needs 'ssh_key' (by reference) and 'known_hosts'")
            if self.token is not None:
                raise ValueError("'token' is for HTTPS remotes; an SSH remote uses 'ssh_key'")
        else:
            if self.token is None:
                raise ValueError("an HTTPS remote needs 'token' (by reference: {env: ...} or {file: ...})")
            if self.ssh_key is not None:
                raise ValueError("'ssh_key' is for SSH remotes; an HTTPS remote uses 'token'")
        return self


_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_K8S_FIELD_MANAGER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class KubernetesConnection(FrozenModel):
    """A Kubernetes API server the server applies manifests to with its own credential
    (see docs/kubernetes.md). The agent never sees the credential."""

    kind: Literal["kubernetes"]
    description: str = ""
    #: The API server, e.g. ``https://10.0.0.1:6443``. Plain ``http://`` only on loopback (tests).
    server: str
    #: Bearer token (a service account token), by reference.
    token: SecretRef
    #: CA bundle (PEM) for the server's certificate; default: the system trust store.
    ca_file: Path | None = None
    #: Field manager of every server-side apply (``kubectl`` uses ``kubectl``).
    field_manager: str = "hoop-mcp"
    #: Namespace for namespaced objects that name none (and no ``namespace`` argument).
    default_namespace: str = "default"
    #: Glob patterns of namespaces the agent may touch (reads and writes).
    namespaces: tuple[str, ...] = Field(default=("*",), min_length=1)
    #: Glob patterns of namespaces it may never touch (wins over ``namespaces``).
    denied_namespaces: tuple[str, ...] = ("kube-system", "kube-public", "kube-node-lease")
    #: Cluster-scoped kinds the agent may apply (``Namespace``, ``ClusterRole``...). Empty: none.
    cluster_scoped_kinds: tuple[str, ...] = ()
    #: Pod Security Standards level enforced on every pod template (``restricted`` findings are
    #: also reported, as flag ``pod_security_restricted``, under ``baseline``).
    pod_security: Literal["baseline", "restricted"] = "baseline"
    #: Kubernetes version of the offline OpenAPI schemas manifests are validated against.
    kubernetes_version: str = Field(default="1.30", pattern=r"^1\.[0-9]{1,2}$")
    max_manifest_bytes: int = Field(default=1_048_576, ge=1_024, le=16_777_216)
    max_objects: int = Field(default=100, ge=1, le=1_000)
    #: Time limit of each request to the API server.
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    #: Largest pod log an agent may read at once, and most objects a list returns.
    max_log_bytes: int = Field(default=256_000, ge=1_024, le=16_000_000)
    max_list_items: int = Field(default=500, ge=1, le=10_000)

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        value = value.rstrip("/")
        if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?", value):
            raise ValueError(
                f"server must be an https:// URL without credentials, query or fragment, got {value!r}"
            )
        if value.startswith("http://"):
            host = value[len("http://") :].split("/", 1)[0].rsplit(":", 1)[0]
            if host not in ("127.0.0.1", "localhost", "[::1]"):
                raise ValueError("plain http:// is only accepted on loopback (a test emulator); use https://")
        return value

    @field_validator("field_manager")
    @classmethod
    def _manager(cls, value: str) -> str:
        if not _K8S_FIELD_MANAGER.fullmatch(value):
            raise ValueError("field_manager must be 1-128 characters of letters, digits and ._:-")
        return value

    @field_validator("default_namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _K8S_NAME.fullmatch(value):
            raise ValueError(f"default_namespace {value!r} is not a valid namespace name")
        return value


Connection = Annotated[PostgresConnection | GitConnection | KubernetesConnection, Field(discriminator="kind")]
_CONNECTION_KINDS = ("postgres", "git", "kubernetes")


class OidcIdentity(FrozenModel):
    issuer: str
    audience: str = Field(min_length=1)
    jwks_url: str | None = None
    algorithms: tuple[str, ...] = ("RS256", "ES256", "PS256")
    groups_claim: str = "groups"
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwks_refetch_cooldown_seconds: float = Field(default=60.0, ge=0, le=86_400)

    @model_validator(mode="after")
    def _valid_for_the_verifier(self) -> OidcIdentity:
        # Validate with the verifier's own rules now, so a bad setting is a config error at startup.
        self.settings()
        return self

    def settings(self) -> OidcSettings:
        from hoop_mcp.core.identity import OidcSettings

        try:
            return OidcSettings(
                issuer=self.issuer,
                audience=self.audience,
                jwks_url=self.jwks_url,
                algorithms=self.algorithms,
                groups_claim=self.groups_claim,
                leeway_seconds=self.leeway_seconds,
                jwks_refetch_cooldown_seconds=self.jwks_refetch_cooldown_seconds,
            )
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(problems) from None


class StaticPrincipal(FrozenModel):
    subject: str
    groups: tuple[str, ...] = ()


class IdentityConfig(FrozenModel):
    """Who the stdio caller is: an OIDC token (verified on every call), or an unsafe static principal."""

    oidc: OidcIdentity | None = None
    #: Where the caller's token comes from (an env var or a file re-read on every call).
    token: SecretRef | None = None
    #: No token is verified: every call runs as this principal, marked UNSAFE in every record.
    unsafe_static_principal: StaticPrincipal | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> IdentityConfig:
        if self.unsafe_static_principal is not None:
            if self.oidc is not None or self.token is not None:
                raise ValueError("use either 'oidc' + 'token' or 'unsafe_static_principal', not both")
        elif self.oidc is None or self.token is None:
            raise ValueError(
                "configure 'oidc' and 'token' (or, for local trials only, 'unsafe_static_principal')"
            )
        return self


class AuditConfig(FrozenModel):
    #: SQLite file (relative paths are relative to the config file).
    sqlite_path: Path = Path("audit.db")


class MaskingKeys(FrozenModel):
    #: Key for the ``hash`` strategy. Without it a random key is made per process (tokens then
    #: differ between runs).
    hash_key: SecretRef | None = None


def _http_url(value: str, *, what: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s#]*)?", value):
        raise ValueError(f"{what} must be an http(s) URL without credentials, got {value!r}")
    return value


class WebhookConfig(FrozenModel):
    """A destination told about each new pending approval (retried; failures recorded)."""

    url: str
    #: ``json`` (generic, the approval as JSON) or ``slack`` (an incoming-webhook message).
    format: Literal["json", "slack"] = "json"
    #: Signs the body: header ``X-Hoop-Signature: sha256=<hex HMAC of the body>``.
    secret: SecretRef | None = None
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    attempts: int = Field(default=3, ge=1, le=10)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value, what="webhook url")


class ApprovalWebConfig(FrozenModel):
    """The approval page (``hoop-mcp approvals web``): approvers log in with OIDC (code + PKCE)."""

    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8765, ge=0, le=65535)
    #: Where approvers reach the page (links in results and notifications); default from listen.
    public_url: str | None = None
    #: The OIDC client registered for the page at the issuer (``approvals.oidc`` / ``identity.oidc``).
    client_id: str = Field(min_length=1)
    #: For confidential clients; PKCE is always used.
    client_secret: SecretRef | None = None
    #: Signs session cookies; random per process when absent (sessions end on restart).
    session_key: SecretRef | None = None
    session_ttl_seconds: int = Field(default=8 * 3600, ge=300, le=7 * 24 * 3600)

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value.rstrip("/"), what="public_url")

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.listen_host}:{self.listen_port}"


class AgentPatterns(FrozenModel):
    #: Glob patterns of subjects that are agents (never approvers).
    subjects: tuple[str, ...] = ()
    #: Glob patterns of groups whose members are agents (never approvers).
    groups: tuple[str, ...] = ()


def _verify_key(value: str) -> str:
    """A grant verify key (public, inline): checked now, so a bad one fails at config load."""
    from hoop_mcp.core.grants import load_verify_key

    load_verify_key(value)  # ValueError -> a config error naming approvals.grant_verify_keys[i]
    return value.strip()


#: A grant verify key: PEM ``-----BEGIN PUBLIC KEY-----`` or raw 32 bytes in base64url.
VerifyKeyText = Annotated[str, AfterValidator(_verify_key)]

_GRANT_KEY_GONE = (
    "'grant_key' is no longer supported: grants are signed with Ed25519 keys, so servers can verify "
    "grants but never mint them. Make a key pair with 'hoop-mcp grants keygen'; on servers, list the "
    "public key in 'grant_verify_keys: [\"<public key>\"]'; on the approvers' side only, point "
    "'grant_signing_key: {file: ...}' (or {env: ...}) at the private key. Grants signed with the old "
    "HMAC key (hoopgrant1) are no longer accepted: re-issue them with 'hoop-mcp grants issue'"
)


class ApprovalsConfig(FrozenModel):
    """Four-eyes approvals (see docs/approvals.md). Required when a policy rule says ``review``."""

    #: Which principals are agents: they can never approve. Unsafe static principals never can.
    agents: AgentPatterns
    #: How approvers' own tokens are verified (CLI, approver MCP clients, the page's login).
    #: Default: ``identity.oidc``.
    oidc: OidcIdentity | None = None
    #: Base URL shown to agents and in notifications (default: ``web.public_url``).
    page_url: str | None = None
    web: ApprovalWebConfig | None = None
    webhooks: tuple[WebhookConfig, ...] = ()
    #: The Ed25519 PRIVATE key that signs grants (PKCS8 PEM, or raw 32 bytes in base64/base64url).
    #: Read only by ``hoop-mcp grants issue`` on the approvers' side; servers never read it.
    grant_signing_key: SecretRef | None = None
    #: Public keys that verify grants (inline: they are not secrets), PEM or raw base64url. Several
    #: allow key rotation and one key per approver team. Required when ``grants`` is set.
    grant_verify_keys: tuple[VerifyKeyText, ...] = Field(default=(), max_length=32)
    #: Grants this server accepts (one or more grant tokens, whitespace-separated), e.g. from CI.
    grants: SecretRef | None = None
    #: Tolerated difference between the clocks of hosts deciding on the same approval.
    clock_skew_seconds: int = Field(default=30, ge=0, le=300)

    @model_validator(mode="before")
    @classmethod
    def _no_grant_key(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "grant_key" in data:
            raise ValueError(_GRANT_KEY_GONE)
        return data

    @model_validator(mode="after")
    def _grants_need_verify_keys(self) -> ApprovalsConfig:
        if self.grants is not None and not self.grant_verify_keys:
            raise ValueError(
                "'grants' is set but 'grant_verify_keys' is empty: grants cannot be verified; list the "
                "approvers' public key(s) there (printed by 'hoop-mcp grants keygen')"
            )
        return self

    def verify_keys(self) -> tuple[Ed25519PublicKey, ...]:
        """``grant_verify_keys`` as key objects (validated at load)."""
        from hoop_mcp.core.grants import load_verify_key

        return tuple(load_verify_key(text) for text in self.grant_verify_keys)

    @field_validator("page_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value.rstrip("/"), what="page_url")

    @property
    def link_base(self) -> str | None:
        return self.page_url or (self.web.base_url if self.web else None)


class ServerConfig(FrozenModel):
    version: Literal[1]
    name: str = "hoop-mcp"
    identity: IdentityConfig
    policy_files: tuple[Path, ...] = Field(min_length=1)
    audit: AuditConfig = AuditConfig()
    masking: MaskingKeys = MaskingKeys()
    approvals: ApprovalsConfig | None = None
    connections: dict[str, Connection] = Field(min_length=1)

    def approver_oidc(self) -> OidcIdentity | None:
        """How approvers' tokens are verified: ``approvals.oidc``, else ``identity.oidc``."""
        if self.approvals is not None and self.approvals.oidc is not None:
            return self.approvals.oidc
        return self.identity.oidc

    @field_validator("connections")
    @classmethod
    def _names(cls, value: dict[str, Connection]) -> dict[str, Connection]:
        for name in value:
            if not _CONN_NAME.match(name):
                raise ValueError(f"connection name {name!r} must match {_CONN_NAME.pattern}")
        return value


_SECRET_KEYS = (
    "dsn",
    "ssh_key",
    "token",
    "hash_key",
    "secret",
    "client_secret",
    "session_key",
    "grant_signing_key",
    "grants",
)


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<top level>"


def format_validation_error(exc: ValidationError, *, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(err["loc"])
        if len(loc) > 2 and loc[0] == "connections" and loc[2] in _CONNECTION_KINDS:
            loc = loc[:2] + loc[3:]  # drop the discriminator tag pydantic inserts
        msg = err["msg"]
        if err["type"] == "model_type" and loc and loc[-1] in _SECRET_KEYS:
            msg += " (secrets are references: {env: VAR_NAME} or {file: path/to/file}, never literal values)"
        lines.append(f"  {_key_path(loc)}: {msg}")
    return "\n".join(lines)


def load_config(path: Path) -> ServerConfig:
    data = load_yaml_text(read_text_file(path, what="configuration"), source=str(path), what="configuration")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with 'version: 1'")
    try:
        return ServerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=str(path))) from None


def resolve_relative(path: Path, *, config_path: Path) -> Path:
    return path if path.is_absolute() else (config_path.parent / path)
