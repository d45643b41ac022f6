"""``hoop-mcp demo``: a real PostgreSQL, a real server over stdio, a scripted agent, narrated.

Nothing external is needed: PostgreSQL comes from the ``pgserver`` wheel. Everything the demo
writes (database, secrets, config, policy, audit log) lives in one work directory.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import textwrap
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import psycopg
from psycopg import sql

from hoop_mcp.core.errors import HoopError
from hoop_mcp.demo_data import seed_shop
from hoop_mcp.demo_issuer import DEMO_AUDIENCE, DemoIssuer
from hoop_mcp.embedded_pg import EmbeddedPostgres

AGENT = "demo-agent@example.com"
APPROVER = "dana@example.com"

#: Added next to the preset: changes to customer records need a DBA (four-eyes), not just the user.
REVIEW_POLICY = """\
version: 1
rules:
  - id: customer-changes-need-a-dba
    description: Changes to customer records need a DBA's approval (four-eyes)
    verdict: review
    review: {approver_groups: [dba], ttl_seconds: 900}
    when:
      effects: [write]
      relations_any: [public.customers]
"""
APP_ROLE = "hoop_app"
READ_ROLE = "hoop_reader"
DB = "shop"

MASKING_YAML = """\
# Masking for the demo's shop database. Column rules follow the protocol's column metadata,
# so aliases and SELECT * cannot dodge them; detectors run on every other text value.
version: 1
rules: []
masking:
  columns:
    - {column: public.customers.ssn, strategy: redact}
    - {column: public.customers.card_number, strategy: partial, keep_last: 4}
    - {column: public.customers.email, strategy: hash}
    - {column: public.customers.phone, strategy: partial, keep_last: 2}
    - {column: public.customers.api_key, strategy: redact}
    # Free text: values pass through the detectors, and the column may not be transformed
    # (reverse(notes) would reshape an embedded card number past every detector).
    - {column: public.customers.notes, strategy: detect}
"""


def _say(text: str = "") -> None:
    print(text, flush=True)


def _secret_file(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


def prepare_workdir(workdir: Path, issuer: DemoIssuer) -> tuple[EmbeddedPostgres, Path]:
    """Start the embedded database (seeding it the first time), mint the agent's token, and write
    config + policy."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    secret_dir = workdir / "secrets"
    secret_dir.mkdir(mode=0o700, exist_ok=True)
    super_pw = _secret_file(secret_dir / "postgres-superuser")
    app_pw = _secret_file(secret_dir / "hoop-app-password")
    port_file = workdir / "pg.port"
    port = int(port_file.read_text()) if port_file.exists() else None
    pg = EmbeddedPostgres(workdir / "pgdata", port=port, superuser_password=super_pw)
    pg.start()
    port_file.write_text(str(pg.port))
    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(APP_ROLE), sql.Literal(app_pw)
                )
            )
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(READ_ROLE)))
            conn.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(READ_ROLE), sql.Identifier(APP_ROLE))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
            with psycopg.connect(pg.conninfo(dbname=DB), autocommit=True) as shop:
                seed_shop(shop, app_role=APP_ROLE, read_role=READ_ROLE)
    dsn_file = secret_dir / "shop-dsn"
    dsn_file.write_text(pg.conninfo(dbname=DB, user=APP_ROLE, password=app_pw))
    dsn_file.chmod(0o600)
    preset = resources.files("hoop_mcp").joinpath("policies/writes-need-confirmation.yaml").read_text()
    (workdir / "policy.yaml").write_text(preset)
    (workdir / "review.yaml").write_text(REVIEW_POLICY)
    (workdir / "masking.yaml").write_text(MASKING_YAML)
    token_file = secret_dir / "agent-token"
    token_file.write_text(issuer.mint(subject=AGENT, groups=["engineers"], name="Demo coding agent"))
    token_file.chmod(0o600)
    approver_file = secret_dir / "approver-token"
    approver_file.write_text(issuer.mint(subject=APPROVER, groups=["dba"], name="Dana (DBA)"))
    approver_file.chmod(0o600)
    hash_key = secret_dir / "masking-hash-key"
    _secret_file(hash_key)
    config = workdir / "hoop-mcp.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            # Written by `hoop-mcp demo`. Secrets are references to files in ./secrets (mode 0600).
            version: 1
            name: hoop-mcp-demo
            identity:
              # The demo's own OIDC issuer (127.0.0.1, alive while `hoop-mcp demo` runs). The agent's
              # token is re-read and verified against the issuer's keys on every call.
              oidc:
                issuer: {issuer.url}
                audience: {DEMO_AUDIENCE}
              token: {{file: secrets/agent-token}}
            policy_files: [policy.yaml, review.yaml, masking.yaml]
            audit:
              sqlite_path: audit.db
            approvals:
              # The agent can never approve; Dana (group dba) approves with her own token.
              agents: {{subjects: ["{AGENT}"]}}
            masking:
              hash_key: {{file: secrets/masking-hash-key}}
            connections:
              shop:
                kind: postgres
                description: Demo shop database (customers, orders, products)
                dsn: {{file: secrets/shop-dsn}}
                read_role: {READ_ROLE}
                statement_timeout_ms: 5000
                max_rows: 200
                max_bytes: 1000000
            """
        )
    )
    return pg, config


def _server_command(config: Path) -> list[str]:
    exe = shutil.which("hoop-mcp")
    if exe:
        return [exe, "serve", "--config", str(config)]
    return [sys.executable, "-m", "hoop_mcp.cli", "serve", "--config", str(config)]


def _print_result(result: Any) -> None:
    data = result.structured_content
    if result.is_error or not isinstance(data, dict):
        text = " ".join(getattr(c, "text", "") for c in result.content)
        _say(textwrap.indent(textwrap.fill(text, 100), "    ✗ "))
        return
    if data.get("outcome") == "pending_approval":
        pending = data["pending_approval"]
        _say(f"    ⏸ held for approval {pending['approval_id']} ({pending['approvers']}); nothing ran")
        return
    if "status" in data and "decided_by" in data:
        who = ", ".join(data["decided_by"]) or "nobody yet"
        _say(f"    ✓ approval {data['approval_id']}: {data['status']} (by {who}: {data['reason']})")
        return
    if "query_db" in data and isinstance(data["query_db"], dict):
        data = data["query_db"]
    if "rows" in data:
        cols = [c["name"] for c in data["columns"]]
        if cols:
            _say("    " + " | ".join(cols))
        for row in data["rows"][:5]:
            _say("    " + " | ".join("NULL" if v is None else str(v) for v in row))
        _say(f"    ✓ {data['message']}  (rule: {data['rule_id']})")
    elif "tables" in data:
        for t in data["tables"]:
            masked = f"  masked: {', '.join(t['masked_columns'])}" if t["masked_columns"] else ""
            _say(f"    {t['table']} ({t['kind']}, ~{t['estimated_rows']} rows){masked}")
    elif "columns" in data:
        for c in data["columns"]:
            flag = f"  [masked: {c['masking_strategy']}]" if c["masked"] else ""
            _say(f"    {c['column']}: {c['type']}{flag}")


async def _agent_session(config: Path) -> None:
    from mcp import Client, StdioServerParameters
    from mcp import types as mt

    async def confirm(context: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
        _say("    ┌─ confirmation prompt shown to the user " + "─" * 40)
        for line in getattr(params, "message", "").splitlines():
            _say(f"    │ {line}")
        _say("    └─ the user answers: confirm = yes")
        return mt.ElicitResult(
            action="accept", content={"confirm": True, "comment": "demo: approved by the user"}
        )

    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(Path.home())),
        "PYTHONUNBUFFERED": "1",
    }
    params = StdioServerParameters(
        command=_server_command(config)[0], args=_server_command(config)[1:], env=env
    )
    steps: list[tuple[str, str, dict[str, Any]]] = [
        (
            "1. The agent discovers the schema (only what it may query; masked columns flagged)",
            "list_tables",
            {"connection": "shop"},
        ),
        ("", "describe_table", {"connection": "shop", "table": "customers"}),
        (
            "2. An allowed read: PII is masked by column rules and by detectors in free text",
            "query_db",
            {
                "connection": "shop",
                "sql": "SELECT id, name, email, ssn, card_number AS card, notes FROM customers ORDER BY id LIMIT 3",
            },
        ),
        (
            "3. A comparison oracle on a masked column is refused",
            "query_db",
            {"connection": "shop", "sql": "SELECT id FROM customers WHERE ssn LIKE '9%'"},
        ),
        (
            "4. DROP TABLE is denied, naming the rule",
            "query_db",
            {"connection": "shop", "sql": "DROP TABLE orders"},
        ),
        (
            "5. An UPDATE with a real WHERE needs the user's confirmation (elicitation), then runs",
            "query_db",
            {"connection": "shop", "sql": "UPDATE orders SET status = 'shipped' WHERE id = 102"},
        ),
        (
            "6. An UPDATE without WHERE is denied outright",
            "query_db",
            {"connection": "shop", "sql": "UPDATE orders SET status = 'lost'"},
        ),
    ]
    async with Client(params, elicitation_callback=confirm) as client:
        tools = await client.list_tools()
        _say(f"Connected over stdio. Tools: {', '.join(t.name for t in tools.tools)}")
        for title, tool, args in steps:
            if title:
                _say()
                _say(title)
            shown = args.get("sql") or args.get("table") or args.get("connection")
            _say(f"  → {tool}({json.dumps(shown)})")
            with anyio.fail_after(60):
                result = await client.call_tool(tool, args)
            _print_result(result)
        await _four_eyes(client, config, env)


async def _four_eyes(client: Any, config: Path, env: dict[str, str]) -> None:
    """Step 7: a held call, approved by another person through the CLI, then executed once."""
    sql = "UPDATE customers SET name = 'Bram Otter-Quill' WHERE id = 2"
    _say()
    _say("7. Changing a customer record needs a second person (policy verdict 'review')")
    _say(f"  → query_db({json.dumps(sql)})")
    with anyio.fail_after(60):
        result = await client.call_tool("query_db", {"connection": "shop", "sql": sql})
    _print_result(result)
    approval_id = (result.structured_content or {}).get("pending_approval", {}).get("approval_id")
    if not approval_id:
        raise HoopError("the demo expected the change to be held for approval")
    _say(f"  Dana ({APPROVER}, group dba) approves from her own terminal, with her own token:")
    _say(f"  $ hoop-mcp approvals approve {approval_id} --reason 'customer asked, ticket CS-481'")
    approver_env = {**env, "HOOP_APPROVER_TOKEN": (config.parent / "secrets" / "approver-token").read_text()}
    command = [*_server_command(config)[:-3], "approvals", "approve", approval_id]
    command += ["--reason", "customer asked, ticket CS-481", "--config", str(config)]
    with anyio.fail_after(60):
        done = await anyio.run_process(command, env=approver_env, check=False)
    for line in done.stdout.decode(errors="replace").splitlines():
        _say(f"    {line}")
    if done.returncode != 0:
        raise HoopError("approving failed: " + done.stderr.decode(errors="replace")[-500:])
    _say(f"  → approval_wait({json.dumps(approval_id)})")
    with anyio.fail_after(60):
        waited = await client.call_tool("approval_wait", {"approval_id": approval_id, "timeout_seconds": 30})
    _print_result(waited)
    _say(f"  → approval_execute({json.dumps(approval_id)}): exactly the approved statement, once")
    with anyio.fail_after(60):
        executed = await client.call_tool("approval_execute", {"approval_id": approval_id})
    _print_result(executed)


def run_demo(*, workdir: Path | None, serve: bool) -> int:
    workdir = (workdir or Path.cwd() / "hoop-mcp-demo").resolve()
    _say(f"hoop-mcp demo — work directory {workdir}")
    _say("Starting an embedded PostgreSQL 16 (from the pgserver wheel) with a sample shop database,")
    issuer = DemoIssuer().start()
    _say(f"and a local OIDC issuer at {issuer.url} that signs the agent's identity token ({AGENT}) …")
    pg, config = prepare_workdir(workdir, issuer)
    try:
        _say(f"Config: {config}")
        if serve:
            return _serve_instructions(config)
        anyio.run(_agent_session, config)
        _say()
        _say("8. hoop-mcp audit verify")
        from hoop_mcp.cli import main as cli_main

        rc = cli_main(["audit", "verify", "--config", str(config)])
        if rc != 0:
            raise HoopError("the audit log did not verify")
        _say()
        _say("9. hoop-mcp replay (the session just recorded)")
        cli_main(["replay", "--config", str(config)])
        _say()
        _say(f"Done. Everything is in {workdir}. Try: hoop-mcp demo --serve --workdir {workdir}")
        return 0
    finally:
        pg.stop()
        issuer.stop()


def _serve_instructions(config: Path) -> int:
    cmd = _server_command(config)
    quoted = " ".join(cmd)
    _say()
    _say("The database is up. Connect an agent with one of these (the server holds the credentials):")
    _say()
    _say("Claude Code:")
    _say(f"  claude mcp add hoop-shop -- {quoted}")
    _say()
    _say("Claude Desktop (claude_desktop_config.json):")
    desktop = {"mcpServers": {"hoop-shop": {"command": cmd[0], "args": cmd[1:]}}}
    _say(textwrap.indent(json.dumps(desktop, indent=2), "  "))
    _say()
    _say("VS Code (.vscode/mcp.json):")
    vscode = {"servers": {"hoop-shop": {"type": "stdio", "command": cmd[0], "args": cmd[1:]}}}
    _say(textwrap.indent(json.dumps(vscode, indent=2), "  "))
    _say()
    _say("CI job (any MCP client over stdio; see examples/ci-workflow.yaml):")
    _say(f"  {quoted}")
    _say()
    _say("The agent's token (secrets/agent-token) is valid for 12 hours and is signed by the demo's")
    _say("issuer, which runs inside this process: keep it running while agents are connected.")
    _say("Press Ctrl+C to stop the database and the issuer.")
    try:
        import time

        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        _say("stopping")
    return 0
