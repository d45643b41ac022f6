"""``hoop-mcp``: serve | demo | audit verify | replay | policy check | policy explain.

Exit codes: 0 ok, 1 a HoopError (the message says what to fix), 2 usage.
On ``serve``, stdout is the MCP wire: everything human goes to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from hoop_mcp import __version__
from hoop_mcp.core.errors import HoopError

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
    return p


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
    except HoopError as exc:
        print(f"hoop-mcp: {exc.diagnostics()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    parser.error("unknown command")
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
