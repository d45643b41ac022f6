"""Secret hygiene end to end: the database password and the caller's OIDC token appear in no tool
output, no error text, no log line, no audit record and no CLI output."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp import types as mt
from mcp.client.stdio import stdio_client

from tests.support.hoop import HoopSetup, hoop_server, write_config
from tests.support.oidc import OidcIssuer
from tests.support.pg import ShopDb

pytestmark = pytest.mark.anyio

HOOP_BIN = Path(sys.executable).parent / "hoop-mcp"


def _everything(result: mt.CallToolResult) -> str:
    text = " ".join(getattr(c, "text", "") for c in result.content)
    return text + json.dumps(result.structured_content or {})


async def _accept(context: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
    return mt.ElicitResult(action="accept", content={"confirm": True})


def _audit_bytes(setup: HoopSetup) -> bytes:
    """Every byte of the SQLite audit store (main file, WAL and shared memory)."""
    files = sorted(setup.workdir.glob("audit.db*"))
    assert files, "no audit store was written"
    return b"".join(f.read_bytes() for f in files)


def _secret_forms(secret: str) -> list[str]:
    return [secret, json.dumps(secret)[1:-1], secret.encode().hex()]


def _assert_absent(secret: str, *, where: str, text: str) -> None:
    for form in _secret_forms(secret):
        assert form not in text, f"secret found in {where}"


def _calls_that_could_leak(password: str) -> list[str]:
    return [
        "SELECT id, name, email, ssn, notes FROM customers ORDER BY id",
        "SELECT name, notes FROM customers WHERE id = 1",  # notes holds the password (see the test)
        f"SELECT CAST('{password}' AS integer)",  # PostgreSQL quotes the value back in its error
        f"SELEC '{password}'",  # a parse error quoting the text
        "SELECT 1/0",
        "DROP TABLE orders",
        "UPDATE orders SET status = 'shipped' WHERE id = 102",
        f"UPDATE customers SET notes = '{password}' WHERE id = 2",
    ]


async def test_the_database_password_leaks_nowhere_in_memory(
    shop: ShopDb, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = shop.app_password
    shop.admin_query("UPDATE customers SET notes = %s WHERE id = 1", (f"left here by mistake: {password}",))
    setup = write_config(tmp_path / "ok", shop)
    outputs: list[str] = []
    async with hoop_server(setup) as (hoop, _), Client(hoop.mcp, elicitation_callback=_accept) as client:
        with anyio.fail_after(60):
            for sql in _calls_that_could_leak(password):
                result = await client.call_tool("query_db", {"connection": "shop", "sql": sql})
                outputs.append(_everything(result))
            for tool, args in (("list_tables", {}), ("describe_table", {"table": "customers"})):
                result = await client.call_tool(tool, {"connection": "shop", **args})
                outputs.append(_everything(result))
    # The row holding the password came back, with the password scrubbed out.
    assert any("left here by mistake: [REDACTED:SECRET]" in o for o in outputs)
    assert any("invalid input syntax for type integer" in o for o in outputs)
    assert shop.admin_query("SELECT notes FROM customers WHERE id = 2") == [(password,)]

    # A connection that fails (wrong database name, the password still in the DSN).
    broken = write_config(
        tmp_path / "broken",
        shop,
        connection_extra="connect_timeout_s: 1\n",
        environ={"SHOP_DSN": shop.app_conninfo.replace(f"dbname={shop.dbname}", "dbname=no_such_db")},
    )
    async with hoop_server(broken) as (hoop, _), Client(hoop.mcp) as client:
        with anyio.fail_after(30):
            result = await client.call_tool("query_db", {"connection": "shop", "sql": "SELECT 1"})
    assert result.is_error
    outputs.append(_everything(result))

    logs = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "no_such_db" in logs  # the failing connection was logged (so the check below means something)
    for output in outputs:
        _assert_absent(password, where="tool output", text=output)
        _assert_absent(shop.app_conninfo, where="tool output", text=output)
    _assert_absent(password, where="logs", text=logs)
    for s in (setup, broken):
        assert password.encode() not in _audit_bytes(s)
        assert shop.app_conninfo.encode() not in _audit_bytes(s)


def _serve_params(setup: HoopSetup) -> StdioServerParameters:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(setup.workdir), **setup.environ}
    return StdioServerParameters(
        command=str(HOOP_BIN),
        args=["-v", "serve", "--config", str(setup.config_path)],
        env=env,
        cwd=setup.workdir,
    )


def _cli(setup: HoopSetup, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(setup.workdir)}
    return subprocess.run(
        [str(HOOP_BIN), *args, "--config", str(setup.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


async def test_the_password_and_the_token_leak_nowhere_over_stdio_nor_in_audit_cli_output(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    password = shop.app_password
    identity = (
        "identity:\n"
        f"  oidc: {{issuer: '{oidc_issuer.issuer}', audience: {oidc_issuer.audience}}}\n"
        "  token: {env: HOOP_TOKEN}\n"
    )
    token = oidc_issuer.mint(sub="alice", groups=["analysts"])
    setup = write_config(tmp_path, shop, identity=identity, environ={"HOOP_TOKEN": token})
    outputs: list[str] = []
    stderr_path = tmp_path / "stderr.log"
    with anyio.fail_after(90), stderr_path.open("w") as errlog:
        async with Client(
            stdio_client(_serve_params(setup), errlog=errlog), elicitation_callback=_accept
        ) as client:
            for sql in _calls_that_could_leak(password):
                result = await client.call_tool("query_db", {"connection": "shop", "sql": sql})
                outputs.append(_everything(result))
    stderr = stderr_path.read_text()
    assert "serving on stdio" in stderr  # the child's log really is in this file
    verify = _cli(setup, "audit", "verify")
    replay = _cli(setup, "replay")
    assert verify.returncode == 0, verify.stderr
    assert replay.returncode == 0, replay.stderr
    assert "alice" in replay.stdout

    signature = token.rsplit(".", 1)[1]
    for secret in (password, shop.app_conninfo, token, signature):
        for output in outputs:
            _assert_absent(secret, where="tool output", text=output)
        _assert_absent(secret, where="server stderr", text=stderr)
        _assert_absent(secret, where="audit verify", text=verify.stdout + verify.stderr)
        _assert_absent(secret, where="replay", text=replay.stdout + replay.stderr)
        assert secret.encode() not in _audit_bytes(setup)


async def test_a_rejected_token_is_not_echoed_into_output_logs_or_records(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    identity = (
        "identity:\n"
        f"  oidc: {{issuer: '{oidc_issuer.issuer}', audience: {oidc_issuer.audience}}}\n"
        "  token: {file: token.jwt}\n"
    )
    setup = write_config(tmp_path, shop, identity=identity)
    expired = oidc_issuer.mint(sub="alice", exp_in=-3600, iat_in=-7200)
    wrong_aud = oidc_issuer.mint(sub="alice", aud="elsewhere")
    outputs: list[str] = []
    async with hoop_server(setup) as (hoop, _), Client(hoop.mcp) as client:
        for token in (expired, wrong_aud):
            (setup.workdir / "token.jwt").write_text(token)
            with anyio.fail_after(30):
                result = await client.call_tool("query_db", {"connection": "shop", "sql": "SELECT 1"})
            assert result.is_error
            outputs.append(_everything(result))
    logs = caplog.text
    for token in (expired, wrong_aud):
        signature = token.rsplit(".", 1)[1]
        for secret in (token, signature):
            for output in outputs:
                _assert_absent(secret, where="tool output", text=output)
            _assert_absent(secret, where="logs", text=logs)
            assert secret.encode() not in _audit_bytes(setup)
