"""``hoop-mcp``: serve | demo | audit verify | replay | policy check | policy explain | approvals | grants.

Exit codes: 0 ok, 1 a HoopError (the message says what to fix), 2 usage.
On ``serve``, stdout is the MCP wire: everything human goes to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from hoop_mcp import __version__
from hoop_mcp.core.errors import HoopError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from hoop_mcp.config import ServerConfig
    from hoop_mcp.core.models import Principal
    from hoop_mcp.runtime import Approvals
    from hoop_mcp.stores.sqlite import SqliteAuditLog

log = logging.getLogger("hoop_mcp")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("mcp", "httpx", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hoop-mcp",
        description="An MCP server that guards what AI agents do to production systems.",
    )
    p.add_argument("--version", action="version", version=f"hoop-mcp {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (to stderr)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "serve", help="serve MCP over stdio", description="Serve the guarded tools over stdio."
    )
    s.add_argument("--config", type=Path, required=True, help="configuration file (version: 1)")

    d = sub.add_parser(
        "demo",
        help="run the end-to-end demo on an embedded PostgreSQL",
        description="Start an embedded PostgreSQL with a sample shop database, write a config and policy, "
        "and drive a scripted agent session through a real MCP client over stdio.",
    )
    d.add_argument(
        "--workdir", type=Path, default=None, help="where to put the database, config and audit log"
    )
    d.add_argument(
        "--serve",
        action="store_true",
        help="keep the database up and print how to connect Claude Code, Claude Desktop, VS Code and CI",
    )

    a = sub.add_parser("audit", help="audit log commands", description="Audit log commands.")
    asub = a.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    v = asub.add_parser(
        "verify", help="verify the hash chain", description="Verify the audit log's hash chain."
    )
    _audit_source(v)
    v.add_argument("--deep", action="store_true", help="also parse and re-encode every record (slower)")

    r = sub.add_parser("replay", help="print a session's timeline", description="Print a readable timeline.")
    _audit_source(r)
    r.add_argument("--session", help="session id (default: the most recent session)")
    r.add_argument("--list", action="store_true", help="list sessions instead")

    pol = sub.add_parser("policy", help="policy commands", description="Check and explain policy files.")
    psub = pol.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")
    c = psub.add_parser("check", help="validate policy files", description="Validate policy files.")
    c.add_argument("files", type=Path, nargs="+")
    e = psub.add_parser(
        "explain",
        help="explain what would happen to a call",
        description="Classify a statement and show which rules match it and which one decides. Nothing is executed.",
    )
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, help="server configuration (its policy files are used)")
    src.add_argument("--policy", type=Path, action="append", help="policy file (repeatable)")
    e.add_argument("--principal", required=True, help="subject of the caller")
    e.add_argument("--group", action="append", default=[], help="a group of the caller (repeatable)")
    e.add_argument("--connection", required=True)
    e.add_argument("--tool", default="query_db")
    e.add_argument("--sql", required=True, help="the statement to explain")
    e.add_argument(
        "--schema",
        default="public",
        help="schema unqualified names resolve to (with --policy; --config uses the connection's)",
    )
    _approvals_parser(sub)
    _grants_parser(sub)
    return p


_TOKEN_HELP = "file holding YOUR OWN OIDC token (default: env HOOP_APPROVER_TOKEN); never the agent's token"  # noqa: S105 - help text


def _approver_options(p: argparse.ArgumentParser) -> None:
    # No abbreviations: "--token VALUE" must be a usage error, not "--token-file VALUE".
    p.allow_abbrev = False
    p.add_argument("--config", type=Path, required=True, help="server configuration (version: 1)")
    p.add_argument("--token-file", type=Path, default=None, metavar="PATH", help=_TOKEN_HELP)


def _approvals_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ap = sub.add_parser(
        "approvals",
        help="four-eyes approvals: list, show, approve, deny, web page",
        description="Decide on calls held for four-eyes approval. You authenticate with your own OIDC "
        "token (--token-file PATH or env HOOP_APPROVER_TOKEN); you can never approve your own call, and "
        "agent principals can never approve.",
    )
    asub = ap.add_subparsers(dest="approvals_command", required=True, metavar="SUBCOMMAND")
    ls = asub.add_parser(
        "list",
        help="list pending approvals you may decide",
        description="List pending approvals you may decide (with --all: recent approvals in any state).",
    )
    _approver_options(ls)
    ls.add_argument("--all", action="store_true", help="recent approvals in any state")
    ls.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    sh = asub.add_parser("show", help="show one approval in full", description="Show one approval in full.")
    sh.add_argument("approval_id", metavar="ID")
    _approver_options(sh)
    for verb in ("approve", "deny"):
        v = asub.add_parser(
            verb, help=f"{verb} a pending approval", description=f"{verb.capitalize()} a pending approval."
        )
        v.add_argument("approval_id", metavar="ID")
        _approver_options(v)
        v.add_argument("--reason", default=None, help="why (recorded in the audit log)")
    w = asub.add_parser(
        "web",
        help="serve the approval web page",
        description="Serve the approval page (approvers log in with OIDC); see approvals.web.",
    )
    w.add_argument("--config", type=Path, required=True, help="server configuration (version: 1)")


def _grants_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gp = sub.add_parser(
        "grants",
        help="signed, expiring pre-authorizations for headless CI",
        description="Issue, revoke and inspect grants: one approver's approval given in advance for "
        "calls matching the grant, signed with the approvers' Ed25519 key (see docs/approvals.md).",
    )
    gsub = gp.add_subparsers(dest="grants_command", required=True, metavar="SUBCOMMAND")
    i = gsub.add_parser(
        "issue",
        help="issue a grant (prints only the token on stdout)",
        description="Sign a grant with approvals.grant_signing_key (the approvers' private key). Only "
        "the token goes to stdout, so GRANT=$(hoop-mcp grants issue ...) works; the summary goes to stderr.",
    )
    _approver_options(i)
    i.add_argument(
        "--to",
        action="append",
        required=True,
        metavar="SUBJECT_PATTERN",
        help="glob pattern of the subjects that may use it (repeatable)",
    )
    i.add_argument("--tool", required=True, help="tool name, e.g. query_db")
    i.add_argument("--connection", required=True, help="connection name")
    i.add_argument("--effect", action="append", default=None, help="allowed effect (repeatable)")
    i.add_argument(
        "--relation",
        action="append",
        default=None,
        metavar="PATTERN",
        help="every relation the call touches must match one of these (repeatable)",
    )
    i.add_argument("--plan-digest", default=None, help="exactly this plan (sha256:...)")
    i.add_argument("--uses", type=int, default=1, help="how many calls it admits (default 1, at most 1000)")
    i.add_argument("--ttl", default="1h", help="how long it is valid: 30m, 1h, 2d, 3600 (default 1h, max 7d)")
    i.add_argument("--reason", default=None, help="why (recorded, and carried in the grant)")
    r = gsub.add_parser(
        "revoke", help="revoke a grant", description="Revoke a grant: it admits no further call."
    )
    r.add_argument("grant_id", metavar="GRANT_ID")
    _approver_options(r)
    r.add_argument("--reason", default=None, help="why (recorded in the audit log)")
    n = gsub.add_parser(
        "inspect",
        help="verify a grant read from stdin and print its payload",
        description="Read a grant token from stdin, verify it with approvals.grant_verify_keys and print "
        "its payload. Exit 0 when it is valid now, 1 otherwise.",
    )
    n.add_argument("--config", type=Path, required=True, help="server configuration (version: 1)")
    k = gsub.add_parser(
        "keygen",
        help="make a new grant signing key pair",
        description="Make an Ed25519 key pair for grants. The private key (PKCS8 PEM) goes to stdout, "
        "or to --out PATH (created with mode 0600, never overwritten); the public key line for "
        "approvals.grant_verify_keys goes to stderr. Keep the private key with the approvers "
        "(approvals.grant_signing_key); give servers only the public key.",
    )
    k.add_argument(
        "--out", type=Path, default=None, help="write the private key to this new file (mode 0600)"
    )


def _audit_source(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", type=Path, help="server configuration (its audit store is used)")
    g.add_argument("--db", type=Path, help="SQLite audit database file")


def _audit_path(args: argparse.Namespace) -> Path:
    if args.db is not None:
        if not args.db.exists():
            raise HoopError(f"audit database {args.db} does not exist")
        return Path(args.db)
    from hoop_mcp.config import load_config, resolve_relative

    cfg = load_config(args.config)
    path = resolve_relative(cfg.audit.sqlite_path, config_path=args.config.resolve())
    if not path.exists():
        raise HoopError(f"audit database {path} does not exist (has the server run yet?)")
    return path


async def _serve(config: Path) -> None:
    from hoop_mcp.runtime import open_runtime
    from hoop_mcp.server.app import HoopServer

    runtime = await open_runtime(config, environ=os.environ)
    try:
        server = HoopServer(
            pipeline=runtime.pipeline,
            name=runtime.config.name,
            connections={n: c.description for n, c in runtime.config.connections.items()},
        )
        log.info(
            "hoop-mcp %s serving on stdio: session %s, connections %s, %d policy rule(s)",
            __version__,
            server.session_id,
            ", ".join(runtime.backends),
            len(runtime.policy.rules),
        )
        if runtime.approvals is None:
            await server.mcp.run_stdio_async()
        else:
            async with runtime.approvals.service.running():  # notifications run in the background
                await server.mcp.run_stdio_async()
    finally:
        await runtime.aclose()


async def _verify(path: Path, deep: bool) -> int:
    from hoop_mcp.core.replay import render_verify
    from hoop_mcp.stores.sqlite import SqliteAuditLog

    audit = await SqliteAuditLog.open(path, create=False)
    try:
        report = await audit.verify(deep=deep)
    finally:
        await audit.close()
    print(render_verify(report))
    return 0 if report.ok else 1


async def _replay(path: Path, session: str | None, list_only: bool) -> int:
    from hoop_mcp.core.replay import render_timeline
    from hoop_mcp.stores.sqlite import SqliteAuditLog

    audit = await SqliteAuditLog.open(path, create=False)
    try:
        sessions = await audit.sessions()
        if list_only:
            for s in sessions:
                print(
                    f"{s.session_id}  {s.first_time:%Y-%m-%d %H:%M:%S}  {s.call_count} call(s)  {s.principal}"
                )
            return 0
        if not sessions:
            print("the audit log is empty")
            return 0
        sid = session or sessions[-1].session_id
        records = await audit.records(session_id=sid)
        if not records:
            raise HoopError(f"no records for session {sid}", hint="use 'hoop-mcp replay --list'")
        print(render_timeline(records, color=sys.stdout.isatty()))
        return 0
    finally:
        await audit.close()


def _policy_check(files: Sequence[Path]) -> int:
    from hoop_mcp.core.policy import load_policy_files

    policy = load_policy_files(list(files))
    cols = len(policy.masking.columns)
    print(f"OK: {len(files)} file(s), {len(policy.rules)} rule(s), {cols} masked column rule(s)")
    return 0


def _policy_explain(args: argparse.Namespace) -> int:
    from hoop_mcp.backends.postgres import plan_sql
    from hoop_mcp.core.masking import Masker
    from hoop_mcp.core.models import Principal
    from hoop_mcp.core.policy import CallFacts, explain, load_policy_files, render_explanation

    if args.config is not None:
        from hoop_mcp.config import load_config
        from hoop_mcp.runtime import load_policy_for

        cfg = load_config(args.config)
        policy = load_policy_for(cfg, args.config.resolve())
        conn = cfg.connections.get(args.connection)
        if conn is None:
            raise HoopError(
                f"no connection {args.connection!r} in {args.config}; it has: {', '.join(cfg.connections)}"
            )
        if conn.kind != "postgres":
            raise HoopError(
                f"connection {args.connection!r} is a {conn.kind} connection; 'policy explain' reads SQL "
                "for postgres connections"
            )
        schema, max_bytes = conn.schema_name, conn.max_sql_bytes
    else:
        policy = load_policy_files(list(args.policy))
        schema, max_bytes = args.schema, 100_000
    masking = policy.masking
    masked = Masker(masking, hash_key=b"explain").masked_columns(connection=args.connection)
    planned = plan_sql(
        args.sql,
        schema=schema,
        max_bytes=max_bytes,
        masked=masked,
        allow_masked_predicates=masking.unsafe_allow_masked_column_predicates,
    )
    plan = planned.plan
    print(f"statement: {plan.command}, effect {plan.effect}")
    for label, items in (
        ("reads", plan.relations_read),
        ("writes", plan.relations_written),
        ("functions", plan.functions),
        ("flags", plan.flags),
    ):
        if items:
            print(f"{label + ':':<11}{', '.join(items)}")
    if planned.refusal is not None:
        print(f"DENY by {planned.refusal.rule_id}: {planned.refusal.reason}")
        return 0
    principal = Principal(subject=args.principal, issuer="policy-explain", groups=tuple(args.group))
    facts = CallFacts(tool=args.tool, connection=args.connection, principal=principal, plan=plan)
    decision, traces = explain(policy, facts)
    print(render_explanation(decision, traces))
    return 0


# ----------------------------------------------------------------------------- approvals and grants

#: Where an approver's own token comes from when --token-file is not given.
APPROVER_TOKEN_ENV = "HOOP_APPROVER_TOKEN"  # noqa: S105 - the variable's name
_MAX_TOKEN_FILE = 64 * 1024


def _approver_token(token_file: Path | None) -> str:
    """The approver's own OIDC token: --token-file, else env HOOP_APPROVER_TOKEN. Never an argument."""
    from hoop_mcp.core.errors import AuthenticationError

    if token_file is not None:
        if re.fullmatch(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", str(token_file)):
            raise AuthenticationError(
                "--token-file got what looks like a token, not a file path",
                hint="write the token to a file readable only by you and pass its path; a token is never "
                "a command-line value (other users can read command lines)",
            )
        try:
            data = token_file.read_bytes()[: _MAX_TOKEN_FILE + 1]
        except OSError as exc:
            raise AuthenticationError(f"cannot read the token file {token_file}: {exc.strerror}") from None
        if len(data) > _MAX_TOKEN_FILE:
            raise AuthenticationError(f"the token file {token_file} is larger than 64 KiB")
        try:
            token = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise AuthenticationError(f"the token file {token_file} is not UTF-8") from None
        if not token:
            raise AuthenticationError(f"the token file {token_file} is empty")
        return token
    token = os.environ.get(APPROVER_TOKEN_ENV, "").strip()
    if not token:
        raise AuthenticationError(
            "no approver token: pass --token-file PATH or set HOOP_APPROVER_TOKEN to YOUR OWN OIDC token",
            hint="approvers authenticate as themselves; the agent's token is never accepted",
        )
    return token


def _cli_text(cfg: ServerConfig, config_path: Path) -> Callable[[str], str]:
    """Masks free text (reasons) with the server's policy, as the server would."""
    import secrets

    from hoop_mcp.core.errors import ConfigError
    from hoop_mcp.core.masking import Masker
    from hoop_mcp.runtime import load_policy_for

    policy = load_policy_for(cfg, config_path)
    key: bytes | None = None
    if cfg.masking.hash_key is not None:
        try:
            secret = cfg.masking.hash_key.resolve(environ=os.environ, base_dir=config_path.parent)
            key = secret.get_secret_value().encode()
        except ConfigError:
            log.debug("masking.hash_key is not available here; hash tokens in reasons are random")
    masker = Masker(policy.masking, hash_key=key or secrets.token_bytes(32))
    return lambda text: masker.mask_text(text)[0]


@dataclass
class _ApproverSide:
    config: ServerConfig
    config_path: Path
    audit: SqliteAuditLog
    approvals: Approvals
    text: Callable[[str], str]

    async def principal(self, token_file: Path | None) -> Principal:
        """The verified human behind the approver's own token (refuses the agent's configured token)."""
        import hmac

        from hoop_mcp.core.errors import AuthenticationError, ConfigError

        token = _approver_token(token_file)
        agent_ref = self.config.identity.token
        if agent_ref is not None:
            try:
                agent_token = agent_ref.resolve(environ=os.environ, base_dir=self.config_path.parent)
            except ConfigError:
                agent_token = None
            if agent_token is not None and hmac.compare_digest(
                agent_token.get_secret_value().encode(), token.encode()
            ):
                raise AuthenticationError(
                    "this is the agent's token (identity.token): approvers must use their own",
                )
        return await self.approvals.approver(token)

    def refuse_agent(self, principal: Principal, *, what: str) -> None:
        from hoop_mcp.core.approvals import ApproverNotAllowed

        if self.approvals.service.agents.is_agent(principal):
            raise ApproverNotAllowed(f"{principal.label} is an agent principal; agents can never {what}")


@asynccontextmanager
async def _approver_side(config: Path, *, need_db: bool) -> AsyncIterator[_ApproverSide]:
    """The approval engine as an approver's CLI sees it: no webhooks and no CI grants (their secrets
    belong to the server), the same store and audit log as the server."""
    from hoop_mcp.config import load_config, resolve_relative
    from hoop_mcp.core.errors import ConfigError
    from hoop_mcp.runtime import _owner_only, open_approvals
    from hoop_mcp.stores.sqlite import SqliteAuditLog

    def prepare() -> tuple[ServerConfig, Path, Path, Callable[[str], str]]:
        config_path = config.resolve()
        cfg = load_config(config_path)
        if cfg.approvals is None:
            raise ConfigError(
                f"{config_path}: approvals are not configured (no 'approvals' section)",
                hint="see docs/approvals.md",
            )
        audit_path = resolve_relative(cfg.audit.sqlite_path, config_path=config_path)
        if need_db and not audit_path.exists():
            raise HoopError(f"audit database {audit_path} does not exist (has the server run yet?)")
        return cfg, config_path, audit_path, _cli_text(cfg, config_path)

    cfg, config_path, audit_path, text = await anyio.to_thread.run_sync(prepare)
    if cfg.approvals is None:  # checked in prepare(); for the type checker
        raise ConfigError("approvals are not configured")
    approver_cfg = cfg.model_copy(
        update={"approvals": cfg.approvals.model_copy(update={"webhooks": (), "grants": None})}
    )
    audit = await SqliteAuditLog.open(audit_path)
    try:
        await anyio.to_thread.run_sync(_owner_only, audit_path)
        approvals = await open_approvals(
            approver_cfg, config_path, environ=os.environ, audit=audit, text=text
        )
        if approvals is None:  # excluded above
            raise ConfigError("approvals are not configured")
        try:
            yield _ApproverSide(
                config=cfg, config_path=config_path, audit=audit, approvals=approvals, text=text
            )
        finally:
            await approvals.store.close()
    finally:
        await audit.close()


async def _approvals(args: argparse.Namespace) -> int:
    from hoop_mcp.core.approvals import LIVE_STATES, ApprovalState, review_text, summarize

    async with _approver_side(args.config, need_db=True) as side:
        principal = await side.principal(args.token_file)
        service = side.approvals.service
        command = args.approvals_command
        if command == "list":
            side.refuse_agent(principal, what="approve")
            limit = max(1, min(args.limit, 1000))
            if args.all:
                found = []
                for approval in await side.approvals.store.list(limit=limit):
                    live = approval.state in LIVE_STATES
                    found.append(await service.get(approval.approval_id) if live else approval)
                empty = "no approvals"
            else:
                found = await service.pending_for(principal, limit=limit)
                empty = f"no pending approvals that {principal.label} may decide"
            for line in summarize(found):
                print(line)
            if not found:
                print(empty)
            return 0
        if command == "show":
            side.refuse_agent(principal, what="approve")
            print(review_text(await service.get(args.approval_id)))
            return 0
        approve = command == "approve"
        after = await service.decide(
            args.approval_id, approver=principal, approve=approve, reason=args.reason, channel="cli"
        )
        if after.state is ApprovalState.APPROVED:
            print(
                f"approved: {after.approval_id} may now run once, until "
                f"{after.deadline:%Y-%m-%d %H:%M:%SZ} (approved by {principal.label})"
            )
        elif after.state is ApprovalState.DENIED:
            print(f"denied: {after.approval_id} (by {principal.label}); it will not run")
        else:
            print(
                f"recorded: your approval of {after.approval_id}; {len(after.approvers)} of "
                f"{after.request.review.quorum} distinct approval(s) so far, waiting for more"
            )
        return 0


_TTL = re.compile(r"^\s*(\d{1,7})\s*([smhd]?)\s*$")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> timedelta:
    """``30m``, ``1h``, ``2d``, ``3600`` (seconds): at least 1 minute, at most 7 days."""
    m = _TTL.match(text)
    if m is None:
        raise HoopError(f"--ttl {text!r} is not a duration", hint="use e.g. 30m, 1h, 2d or seconds (3600)")
    ttl = timedelta(seconds=int(m.group(1)) * _TTL_UNITS[m.group(2)])
    if ttl < timedelta(minutes=1):
        raise HoopError("--ttl must be at least 1 minute")
    if ttl > timedelta(days=7):
        raise HoopError("--ttl must be at most 7 days (7d)")
    return ttl


def _required_reason(reason: str | None, text: Callable[[str], str]) -> str:
    value = (reason or "").strip()
    if not value:
        raise HoopError("a reason is required (--reason TEXT); it is recorded in the audit log")
    return text(value)


def _grant_signing_key(side: _ApproverSide) -> Ed25519PrivateKey:
    """The approvers' private key (approvals.grant_signing_key); servers never read it."""
    from cryptography.hazmat.primitives import serialization

    from hoop_mcp.core.errors import ConfigError
    from hoop_mcp.core.grants import load_signing_key

    approvals_cfg = side.config.approvals
    if approvals_cfg is None or approvals_cfg.grant_signing_key is None:
        raise ConfigError(
            f"{side.config_path}: approvals.grant_signing_key is not configured, so grants cannot be "
            "signed here",
            hint="grants are issued on the approvers' side: point approvals.grant_signing_key at the "
            "private key, e.g. {env: HOOP_GRANT_SIGNING_KEY} filled from your vault, or {file: ...}; "
            "make a key pair with 'hoop-mcp grants keygen'",
        )
    ref = approvals_cfg.grant_signing_key
    where = f"approvals.grant_signing_key ({ref.describe()})"
    try:
        secret = ref.resolve(environ=os.environ, base_dir=side.config_path.parent)
    except ConfigError as exc:
        raise ConfigError(
            f"{where}: {exc.message}; grants cannot be signed here",
            hint="the signing key is only available on the approvers' side (for example from your "
            "vault); servers and CI jobs verify grants with approvals.grant_verify_keys and cannot sign",
        ) from None
    try:
        key = load_signing_key(secret.get_secret_value())
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    # Raw 32-byte keys look alike: catch a public key pasted where the private key belongs.
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    for index, public in enumerate(approvals_cfg.verify_keys()):
        if public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == seed:
            raise ConfigError(
                f"{where}: this is the public key of approvals.grant_verify_keys[{index}], not a private "
                "key; grant_signing_key needs the private key"
            )
    return key


async def _record_grant_event(
    side: _ApproverSide,
    *,
    event: str,
    actor: Principal,
    grant_id: str,
    tool: str,
    connection: str | None,
    arguments: dict[str, object],
    reason: str,
    grant_digest: str,
    expires_at: object = None,
) -> None:
    from hoop_mcp.core.models import ApprovalEvidence, AuditEvent

    evidence = ApprovalEvidence.model_validate(
        {
            "approval_id": grant_id,
            "event": event,
            "state": "issued" if event == "grant_issued" else "revoked",
            "actor": actor,
            "approvers": (actor,) if event == "grant_issued" else (),
            "quorum": 1 if event == "grant_issued" else None,
            "reason": reason,
            "channel": "cli",
            "expires_at": expires_at,
            "grant_id": grant_id,
        }
    )
    record = AuditEvent.model_validate(
        {
            "kind": "approval",
            "call_id": grant_id,
            "session_id": "cli",
            "principal": actor,
            "tool": tool,
            "connection": connection,
            "arguments": arguments,
            "arguments_digest": grant_digest,
            "approval": evidence,
        }
    )
    await side.audit.append(record)


async def _grants_issue(args: argparse.Namespace) -> int:
    from hoop_mcp.core.grants import MAX_USES, Grant, key_id, new_grant_id, sign_grant
    from hoop_mcp.core.models import utcnow

    ttl = parse_ttl(args.ttl)
    if not 1 <= args.uses <= MAX_USES:
        raise HoopError(f"--uses must be between 1 and {MAX_USES}")
    async with _approver_side(args.config, need_db=False) as side:
        key = _grant_signing_key(side)
        kid = key_id(key.public_key())
        trusted = side.config.approvals.verify_keys() if side.config.approvals else ()
        if args.connection not in side.config.connections:
            raise HoopError(
                f"no connection {args.connection!r} in {side.config_path}; it has: "
                f"{', '.join(side.config.connections)}"
            )
        reason = _required_reason(args.reason, side.text)
        issuer = await side.principal(args.token_file)
        side.refuse_agent(issuer, what="approve or issue grants")
        now = utcnow().replace(microsecond=0)
        try:
            grant = Grant.model_validate(
                {
                    "grant_id": new_grant_id(),
                    "issuer": issuer,
                    "grantees": tuple(args.to),
                    "tool": args.tool,
                    "connection": args.connection,
                    "effects": tuple(args.effect) if args.effect else None,
                    "relations": tuple(args.relation) if args.relation else None,
                    "plan_digest": args.plan_digest,
                    "max_uses": args.uses,
                    "issued_at": now,
                    "not_before": now,
                    "expires_at": now + ttl,
                    "reason": reason,
                }
            )
        except ValueError as exc:
            raise HoopError(f"the grant is invalid: {_validation_text(exc)}") from None
        token = sign_grant(grant, key)
        details: dict[str, object] = grant.model_dump(
            mode="json", include={"grantees", "effects", "relations", "plan_digest", "max_uses", "not_before"}
        )
        await _record_grant_event(
            side,
            event="grant_issued",
            actor=issuer,
            grant_id=grant.grant_id,
            tool=grant.tool,
            connection=grant.connection,
            arguments=details,
            reason=reason,
            grant_digest=grant.digest(),
            expires_at=grant.expires_at,
        )
    lines = [
        f"issued grant {grant.grant_id} by {issuer.label}, signed with key {kid}",
        f"  for subjects: {', '.join(grant.grantees)}",
        f"  tool {grant.tool} on connection {grant.connection}",
    ]
    if grant.effects:
        lines.append(f"  effects: {', '.join(grant.effects)}")
    if grant.relations:
        lines.append(f"  relations: {', '.join(grant.relations)}")
    if grant.plan_digest:
        lines.append(f"  plan: {grant.plan_digest}")
    lines.append(f"  uses: {grant.max_uses}; valid until {grant.expires_at:%Y-%m-%d %H:%M:%SZ}")
    lines.append("  the server accepts it once it is listed in approvals.grants")
    if trusted and kid not in {key_id(k) for k in trusted}:
        lines.append(
            f"  note: key {kid} is not in approvals.grant_verify_keys of this configuration; a server "
            "configured like it refuses this grant until the public key is added"
        )
    from fnmatch import fnmatchcase

    if any(fnmatchcase(issuer.subject, p) for p in grant.grantees):
        lines.append("  note: you match its grantees, but it never admits your own calls (no self-approval)")
    print("\n".join(lines), file=sys.stderr)
    print(token)
    return 0


_GRANT_ID_RE = re.compile(r"^grt_[A-Za-z0-9_-]{8,64}$")


async def _grants_revoke(args: argparse.Namespace) -> int:
    from hoop_mcp.core.approvals import principal_key

    if not _GRANT_ID_RE.match(args.grant_id):
        raise HoopError(f"{args.grant_id!r} is not a grant id (grt_...)")
    async with _approver_side(args.config, need_db=False) as side:
        reason = _required_reason(args.reason, side.text)
        revoker = await side.principal(args.token_file)
        side.refuse_agent(revoker, what="approve or revoke grants")
        await side.approvals.store.revoke_grant(args.grant_id, by=principal_key(revoker), reason=reason)
        await _record_grant_event(
            side,
            event="grant_revoked",
            actor=revoker,
            grant_id=args.grant_id,
            tool="grants revoke",
            connection=None,
            arguments={"grant_id": args.grant_id},
            reason=reason,
            grant_digest="revoke:" + args.grant_id,
        )
    print(f"revoked grant {args.grant_id}: it admits no further call")
    return 0


def _grants_inspect(config: Path) -> int:
    import json

    from hoop_mcp.config import load_config, resolve_relative
    from hoop_mcp.core.errors import ConfigError
    from hoop_mcp.core.grants import MAX_TOKEN_CHARS, GrantError, decode_grant_with_kid, validity_problem
    from hoop_mcp.core.models import utcnow

    config_path = config.resolve()
    cfg = load_config(config_path)
    if cfg.approvals is None or not cfg.approvals.grant_verify_keys:
        raise ConfigError(
            f"{config_path}: approvals.grant_verify_keys is empty, so grants cannot be verified",
            hint="list the approvers' public key(s) there (printed by 'hoop-mcp grants keygen')",
        )
    verify_keys = cfg.approvals.verify_keys()
    raw = sys.stdin.read(MAX_TOKEN_CHARS * 2 + 1).strip()
    if not raw:
        raise GrantError("no grant token on stdin")
    grant, kid = decode_grant_with_kid(raw, verify_keys)
    print(json.dumps(grant.model_dump(mode="json"), indent=2, ensure_ascii=False))
    skew = timedelta(seconds=cfg.approvals.clock_skew_seconds)
    problem = validity_problem(grant, now=utcnow(), skew=skew)
    audit_path = resolve_relative(cfg.audit.sqlite_path, config_path=config_path)
    if audit_path.exists():
        uses, revoked = anyio.run(_grant_uses, audit_path, grant.grant_id)
        print(f"uses so far: {uses} of {grant.max_uses}{'; REVOKED' if revoked else ''}", file=sys.stderr)
        if revoked:
            problem = problem or f"grant {grant.grant_id} is revoked"
        elif uses >= grant.max_uses:
            problem = problem or f"grant {grant.grant_id} is used up"
    if problem is not None:
        print(f"signature ok (key {kid}), but NOT usable: {problem}", file=sys.stderr)
        return 1
    print(f"signature ok (key {kid}); valid until {grant.expires_at:%Y-%m-%d %H:%M:%SZ}", file=sys.stderr)
    return 0


def _grants_keygen(out: Path | None) -> int:
    """A new Ed25519 key pair: the private key to stdout or a new 0600 file, the public key to stderr."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from hoop_mcp.core.grants import key_id, private_key_pem, public_key_text

    key = Ed25519PrivateKey.generate()
    pem = private_key_pem(key)
    kid = key_id(key.public_key())
    if out is None:
        sys.stdout.write(pem)
        sys.stdout.flush()
        where = "printed on stdout"
    else:
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise HoopError(f"{out} already exists; keygen never overwrites a key") from None
        except OSError as exc:
            raise HoopError(f"cannot create {out}: {exc.strerror}") from None
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, pem.encode("ascii"))
        finally:
            os.close(fd)
        where = f"written to {out} (mode 0600)"
    print(
        f"new grant signing key {kid}: {where}.\n"
        "Keep it with the approvers only (approvals.grant_signing_key, e.g. from a vault read by\n"
        "'hoop-mcp grants issue'); never give it to a server or a CI job. Add its public key to\n"
        "approvals.grant_verify_keys of every server that should accept its grants:\n"
        f'  - "{public_key_text(key.public_key())}"  # kid {kid}',
        file=sys.stderr,
    )
    return 0


async def _grant_uses(path: Path, grant_id: str) -> tuple[int, bool]:
    from hoop_mcp.stores.sqlite_approvals import SqliteApprovalStore

    store = await SqliteApprovalStore.open(path)
    try:
        return await store.grant_uses(grant_id)
    finally:
        await store.close()


def _validation_text(exc: ValueError) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '<top level>'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
    return str(exc)


async def _grants(args: argparse.Namespace) -> int:
    if args.grants_command == "issue":
        return await _grants_issue(args)
    return await _grants_revoke(args)


def _approvals_web(config: Path) -> int:
    from hoop_mcp.server.web import run_web

    anyio.run(partial(run_web, config, environ=os.environ))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        if args.command == "serve":
            anyio.run(_serve, args.config)
            return 0
        if args.command == "demo":
            from hoop_mcp.demo import run_demo

            return run_demo(workdir=args.workdir, serve=args.serve)
        if args.command == "audit":
            return anyio.run(_verify, _audit_path(args), args.deep)
        if args.command == "replay":
            return anyio.run(_replay, _audit_path(args), args.session, args.list)
        if args.command == "policy":
            if args.policy_command == "check":
                return _policy_check(args.files)
            return _policy_explain(args)
        if args.command == "approvals":
            if args.approvals_command == "web":
                return _approvals_web(args.config)
            return anyio.run(_approvals, args)
        if args.command == "grants":
            if args.grants_command == "inspect":
                return _grants_inspect(args.config)
            if args.grants_command == "keygen":
                return _grants_keygen(args.out)
            return anyio.run(_grants, args)
    except HoopError as exc:
        print(f"hoop-mcp: {exc.diagnostics()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    parser.error("unknown command")
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
