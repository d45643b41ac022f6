"""Wire a configuration into a running pipeline: secrets, identity, policy, masking, audit, backends."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread
import psycopg.conninfo

from hoop_mcp.backends.postgres import PostgresBackend
from hoop_mcp.config import (
    ApprovalsConfig,
    GitConnection,
    IdentityConfig,
    KubernetesConnection,
    SecretRef,
    ServerConfig,
    load_config,
    resolve_relative,
)
from hoop_mcp.core.approvals import AgentSettings, ApprovalService
from hoop_mcp.core.backend import Backend
from hoop_mcp.core.errors import AuthenticationError, ConfigError
from hoop_mcp.core.identity import OidcAuthenticator, UnsafeStaticPrincipal
from hoop_mcp.core.masking import Masker
from hoop_mcp.core.models import Principal, Verdict
from hoop_mcp.core.pipeline import IdentityProvider, Pipeline
from hoop_mcp.core.policy import Policy, load_policy_files
from hoop_mcp.stores.sqlite import SqliteAuditLog

if TYPE_CHECKING:
    from hoop_mcp.stores.sqlite_approvals import SqliteApprovalStore

log = logging.getLogger(__name__)


class TokenIdentity:
    """The stdio caller's OIDC token, re-read and re-verified on every call (expiry is enforced)."""

    def __init__(
        self,
        *,
        authenticator: OidcAuthenticator,
        token: SecretRef,
        base_dir: Path,
        environ: Mapping[str, str],
    ) -> None:
        self._auth = authenticator
        self._token = token
        self._base_dir = base_dir
        self._environ = environ

    async def current_principal(self) -> Principal:
        try:
            token = self._token.resolve(environ=self._environ, base_dir=self._base_dir).get_secret_value()
        except ConfigError as exc:
            raise AuthenticationError(f"no identity token: {exc.message}") from None
        return await self._auth.authenticate_async(token)


class StaticIdentity:
    def __init__(self, principal: Principal) -> None:
        self._principal = principal

    async def current_principal(self) -> Principal:
        return self._principal


def build_identity(cfg: IdentityConfig, *, base_dir: Path, environ: Mapping[str, str]) -> IdentityProvider:
    if cfg.unsafe_static_principal is not None:
        static = UnsafeStaticPrincipal(
            subject=cfg.unsafe_static_principal.subject, groups=cfg.unsafe_static_principal.groups
        )
        return StaticIdentity(static.principal())
    if cfg.oidc is None or cfg.token is None:  # excluded by IdentityConfig's validator
        raise ConfigError("identity needs 'oidc' and 'token'")
    settings = cfg.oidc.settings()
    return TokenIdentity(
        authenticator=OidcAuthenticator(settings), token=cfg.token, base_dir=base_dir, environ=environ
    )


def secrets_in_conninfo(conninfo: str) -> list[str]:
    """Values to scrub from every output: the password and the whole connection string."""
    out = [conninfo]
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return out
    pw = params.get("password")
    if isinstance(pw, str) and pw:
        out.append(pw)
    return out


def _owner_only(db: Path) -> None:
    """The audit log holds masked arguments and identities: readable by its owner only."""
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        try:
            if path.exists() and path.stat().st_mode & 0o077:
                path.chmod(0o600)
        except OSError as exc:
            log.warning("cannot restrict permissions of %s: %s", path, exc.strerror)


@dataclass
class Runtime:
    config: ServerConfig
    config_path: Path
    policy: Policy
    pipeline: Pipeline
    audit: SqliteAuditLog
    backends: dict[str, Backend]
    approvals: Approvals | None = None

    async def aclose(self) -> None:
        for backend in self.backends.values():
            await backend.close()
        if self.approvals is not None:
            await self.approvals.store.close()
        await self.audit.close()


@dataclass
class Approvals:
    """The approval engine as one process sees it: service, store and the approvers' verifier."""

    service: ApprovalService
    store: SqliteApprovalStore
    #: Verifies approvers' own tokens (CLI, approver MCP clients); ``None`` without OIDC settings.
    approver_auth: OidcAuthenticator | None
    config: ApprovalsConfig

    async def approver(self, token: str) -> Principal:
        """The verified human behind ``token``. Raises AuthenticationError."""
        if self.approver_auth is None:
            raise AuthenticationError(
                "approvers cannot be authenticated: configure approvals.oidc (or identity.oidc)"
            )
        return await self.approver_auth.authenticate_async(token)


def policy_needs_review(policy: Policy) -> list[str]:
    return [rule.id for rule in policy.rules if rule.verdict is Verdict.REVIEW]


async def open_approvals(
    config: ServerConfig,
    config_path: Path,
    *,
    environ: Mapping[str, str],
    audit: SqliteAuditLog,
    text: Callable[[str], str] = lambda t: t,
) -> Approvals | None:
    """Build the approval engine from ``config.approvals`` (``None`` when it is not configured).

    The store lives in the same SQLite file as the audit log. ``text`` masks free text (reasons,
    webhook bodies) the way the pipeline does.
    """
    cfg = config.approvals
    if cfg is None:
        return None
    from hoop_mcp.core.grants import GrantSet
    from hoop_mcp.server.notify import WebhookNotifier
    from hoop_mcp.stores.sqlite_approvals import SqliteApprovalStore

    base = config_path.parent
    agents = AgentSettings(subjects=cfg.agents.subjects, groups=cfg.agents.groups)
    grants = None
    if cfg.grants is not None:
        # Public keys only: the server verifies grants and never reads approvals.grant_signing_key.
        if not cfg.grant_verify_keys:
            raise ConfigError(
                "approvals.grants is set but approvals.grant_verify_keys is empty: grants cannot be verified"
            )
        tokens = cfg.grants.resolve(environ=environ, base_dir=base).get_secret_value().split()
        grants = GrantSet(
            verify_keys=cfg.verify_keys(),
            tokens=tokens,
            agents=agents,
            clock_skew_seconds=cfg.clock_skew_seconds,
        )
    hooks = [
        (
            hook,
            hook.secret.resolve(environ=environ, base_dir=base).get_secret_value().encode()
            if hook.secret
            else None,
        )
        for hook in cfg.webhooks
    ]
    notifier = WebhookNotifier(hooks, text=text) if hooks else None
    store = await SqliteApprovalStore.open(
        resolve_relative(config.audit.sqlite_path, config_path=config_path)
    )
    service = ApprovalService(
        store=store,
        audit=audit,
        agents=agents,
        page_url=cfg.link_base,
        notifier=notifier,
        grants=grants,
        clock_skew_seconds=cfg.clock_skew_seconds,
        record_text=text,
    )
    oidc = config.approver_oidc()
    auth = OidcAuthenticator(oidc.settings()) if oidc is not None else None
    return Approvals(service=service, store=store, approver_auth=auth, config=cfg)


def git_secrets(username: str, token: str) -> list[str]:
    """Every form of an HTTPS credential that must never leave: the token, and the Basic
    authorization value git sends (base64 of ``user:token``), and base64 of the token alone."""
    import base64

    forms = [token]
    for raw in (f"{username}:{token}", token):
        encoded = base64.b64encode(raw.encode()).decode()
        forms += [encoded, encoded.rstrip("=")]
    return forms


def open_git_backend(
    name: str, conn: GitConnection, *, base_dir: Path, environ: Mapping[str, str], default_state: Path
) -> tuple[Backend, list[str]]:
    """A git connection's backend and the secret values to scrub from every output."""
    from hoop_mcp.backends.git_cli import Credential, GitRunner
    from hoop_mcp.backends.gitrepo import GitBackend
    from hoop_mcp.core.secret_scan import ScanSettings, SecretScanner

    state = conn.state_dir if conn.state_dir is not None else default_state / name
    state = state if state.is_absolute() else base_dir / state
    private = state / "private"
    private.mkdir(parents=True, exist_ok=True, mode=0o700)
    state.chmod(0o700)
    scrub: list[str] = []
    if conn.uses_ssh:
        if conn.ssh_key is None or conn.known_hosts is None:  # excluded by GitConnection's validator
            raise ConfigError(f"connections.{name}: an SSH remote needs ssh_key and known_hosts")
        key = conn.ssh_key.resolve(environ=environ, base_dir=base_dir).get_secret_value()
        key_file = private / "ssh_key"
        key_file.touch(mode=0o600, exist_ok=True)
        key_file.chmod(0o600)
        key_file.write_text(key.strip() + "\n")
        known = conn.known_hosts if conn.known_hosts.is_absolute() else base_dir / conn.known_hosts
        if not known.is_file():
            raise ConfigError(f"connections.{name}.known_hosts: {known} is not a readable file")
        credential = Credential(ssh_key_file=key_file, known_hosts=known)
        scrub.append(key.strip())
        scheme = "ssh"
    else:
        if conn.token is None:  # excluded by GitConnection's validator
            raise ConfigError(f"connections.{name}: an HTTPS remote needs a token")
        token = conn.token.resolve(environ=environ, base_dir=base_dir).get_secret_value()
        credential = Credential(username=conn.username, password=token)
        scrub += git_secrets(conn.username, token)
        scheme = conn.remote_url.split("://", 1)[0]
    try:
        scanner = SecretScanner(
            ScanSettings(allow_paths=conn.scan.allow_paths, disabled_rules=conn.scan.disabled_rules)
        )
    except ValueError as exc:
        raise ConfigError(f"connections.{name}.scan: {exc}") from None
    runner = GitRunner(
        private_dir=private, remote_scheme=scheme, credential=credential, timeout_s=conn.timeout_s
    )
    backend = GitBackend(
        name=name, settings=conn, staging=state / "staging.git", runner=runner, scanner=scanner
    )
    return backend, scrub


def open_kubernetes_backend(
    name: str, conn: KubernetesConnection, *, base_dir: Path, environ: Mapping[str, str]
) -> tuple[Backend, list[str]]:
    """A kubernetes connection's backend and the secret values to scrub from every output."""
    from hoop_mcp.backends.k8s_api import KubeApi
    from hoop_mcp.backends.k8s_validate import available_versions
    from hoop_mcp.backends.kubernetes import KubernetesBackend

    token = conn.token.resolve(environ=environ, base_dir=base_dir).get_secret_value()
    ca_file = None
    if conn.ca_file is not None:
        ca_file = conn.ca_file if conn.ca_file.is_absolute() else base_dir / conn.ca_file
        if not ca_file.is_file():
            raise ConfigError(f"connections.{name}.ca_file: {ca_file} is not a readable file")
    versions = available_versions()
    if not any(v == conn.kubernetes_version or v.startswith(conn.kubernetes_version + ".") for v in versions):
        raise ConfigError(
            f"connections.{name}.kubernetes_version: no offline schemas for {conn.kubernetes_version}; "
            f"available: {', '.join(versions)}"
        )
    api = KubeApi(
        connection=name,
        server=conn.server,
        token=token,
        ca_file=ca_file,
        timeout_s=conn.timeout_s,
        field_manager=conn.field_manager,
    )
    scrub = [token, f"Bearer {token}"]
    return KubernetesBackend(name=name, settings=conn, api=api, credential_secrets=scrub), scrub


def load_policy_for(config: ServerConfig, config_path: Path) -> Policy:
    return load_policy_files([resolve_relative(p, config_path=config_path) for p in config.policy_files])


async def open_runtime(config_path: Path, *, environ: Mapping[str, str]) -> Runtime:
    config_path = await anyio.to_thread.run_sync(config_path.resolve)
    config = load_config(config_path)
    base = config_path.parent
    policy = load_policy_for(config, config_path)
    if config.masking.hash_key is not None:
        hash_key = config.masking.hash_key.resolve(environ=environ, base_dir=base).get_secret_value().encode()
    else:
        hash_key = secrets.token_bytes(32)
        log.warning("masking.hash_key is not configured: hash tokens are random per process")
    masker = Masker(policy.masking, hash_key=hash_key)
    identity = build_identity(config.identity, base_dir=base, environ=environ)
    scrub: list[str] = []
    backends: dict[str, Backend] = {}
    audit_path = resolve_relative(config.audit.sqlite_path, config_path=config_path)
    for name, conn in config.connections.items():
        if isinstance(conn, GitConnection):
            backend, secrets_of_git = await anyio.to_thread.run_sync(
                lambda name=name, conn=conn: open_git_backend(  # type: ignore[misc]
                    name, conn, base_dir=base, environ=environ, default_state=audit_path.parent / "git-state"
                )
            )
            backends[name] = backend
            scrub += secrets_of_git
            continue
        if isinstance(conn, KubernetesConnection):
            backend, secrets_of_k8s = open_kubernetes_backend(name, conn, base_dir=base, environ=environ)
            backends[name] = backend
            scrub += secrets_of_k8s
            continue
        conninfo = conn.dsn.resolve(environ=environ, base_dir=base).get_secret_value()
        scrub += secrets_in_conninfo(conninfo)
        backends[name] = PostgresBackend(
            name=name,
            settings=conn,
            conninfo=conninfo,
            masked_columns=masker.masked_columns(connection=name),
            allow_masked_predicates=policy.masking.unsafe_allow_masked_column_predicates,
        )
    if policy.masking.unsafe_allow_masked_column_predicates:
        log.warning(
            "UNSAFE: masking.unsafe_allow_masked_column_predicates is on: masked columns may be used in "
            "WHERE/JOIN/ORDER BY, which lets a caller infer masked values by comparison"
        )
    audit = await SqliteAuditLog.open(audit_path)
    await anyio.to_thread.run_sync(_owner_only, audit_path)
    pipeline = Pipeline(
        identity=identity, policy=policy, masker=masker, audit=audit, backends=backends, scrub=scrub
    )
    from hoop_mcp.backends.kubernetes import MANIFEST_TOOLS, redact_manifest_arguments

    for tool in MANIFEST_TOOLS:  # whether or not a cluster is configured: a manifest is never recorded raw
        pipeline.redactors[tool] = redact_manifest_arguments
    review_rules = policy_needs_review(policy)
    if review_rules and config.approvals is None:
        await audit.close()
        raise ConfigError(
            f"policy rule(s) {', '.join(review_rules)} hold calls for review, but {config_path} has no "
            "'approvals' section",
            hint="add approvals: {agents: {subjects: [...]}} and an approval channel; see docs/approvals.md",
        )
    try:
        approvals = await open_approvals(
            config, config_path, environ=environ, audit=audit, text=pipeline.safe_text
        )
    except BaseException:
        await audit.close()
        raise
    pipeline.approvals = approvals.service if approvals is not None else None
    return Runtime(
        config=config,
        config_path=config_path,
        policy=policy,
        pipeline=pipeline,
        audit=audit,
        backends=backends,
        approvals=approvals,
    )
