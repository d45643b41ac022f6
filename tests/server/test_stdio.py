"""``hoop-mcp serve`` as a real subprocess over stdio, with identity from a real OIDC issuer's tokens."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp import types as mt
from mcp.client.stdio import stdio_client

from hoop_mcp.core.audit import AuditRecord
from hoop_mcp.stores.sqlite import SqliteAuditLog
from tests.support.hoop import HoopSetup, write_config
from tests.support.mcp_client import confirming
from tests.support.mcp_client import tool_text as _text
from tests.support.oidc import OidcIssuer, new_rsa_key
from tests.support.pg import ShopDb

pytestmark = pytest.mark.anyio

HOOP_BIN = Path(sys.executable).parent / "hoop-mcp"
UPDATE = "UPDATE orders SET status = 'shipped' WHERE id = 102"

ANALYSTS_ONLY = """\
version: 1
rules:
  - id: analysts-read
    description: members of analysts may read
    verdict: allow
    when: {groups: [analysts], effects: [read], flags_only: [explain_analyze]}
"""


def oidc_setup(tmp_path: Path, shop: ShopDb, issuer: OidcIssuer, *, policy: str | None = None) -> HoopSetup:
    identity = (
        "identity:\n"
        f"  oidc: {{issuer: '{issuer.issuer}', audience: {issuer.audience}}}\n"
        "  token: {file: token.jwt}\n"
    )
    return write_config(tmp_path, shop, identity=identity, policy=policy)


def server_params(setup: HoopSetup) -> StdioServerParameters:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(setup.workdir), **setup.environ}
    return StdioServerParameters(
        command=str(HOOP_BIN), args=["serve", "--config", str(setup.config_path)], env=env, cwd=setup.workdir
    )


@asynccontextmanager
async def stdio_session(setup: HoopSetup, **client_kwargs: Any) -> AsyncIterator[Client]:
    with (setup.workdir / "server-stderr.log").open("a") as errlog:
        async with Client(stdio_client(server_params(setup), errlog=errlog), **client_kwargs) as client:
            yield client


async def audit_records(setup: HoopSetup) -> list[AuditRecord]:
    audit = await SqliteAuditLog.open(setup.workdir / "audit.db", create=False)
    try:
        return await audit.records()
    finally:
        await audit.close()


async def call(client: Client, sql: str) -> mt.CallToolResult:
    with anyio.fail_after(30):
        return await client.call_tool("query_db", {"connection": "shop", "sql": sql})


def accept(prompts: list[str]) -> Any:
    return confirming(prompts, comment="over stdio")


async def test_a_valid_token_reads_and_the_record_names_its_subject_and_groups(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    setup = oidc_setup(tmp_path, shop, oidc_issuer)
    (setup.workdir / "token.jwt").write_text(oidc_issuer.mint(sub="alice", groups=["analysts", "oncall"]))
    with anyio.fail_after(60):
        async with stdio_session(setup) as client:
            result = await call(client, "SELECT id, status FROM orders WHERE id = 102")
    assert not result.is_error, _text(result)
    assert result.structured_content is not None
    assert result.structured_content["rows"] == [[102, "pending"]]
    records = await audit_records(setup)
    assert [r.event.kind for r in records] == ["intent", "outcome"]
    for record in records:
        principal = record.event.principal
        assert principal is not None
        assert principal.subject == "alice"
        assert principal.groups == ("analysts", "oncall")
        assert principal.issuer == oidc_issuer.issuer
        assert principal.unsafe_static is False
    assert records[1].event.outcome is not None
    assert records[1].event.outcome.status == "ok"


def _bad_tokens() -> list[Any]:
    return [
        pytest.param(lambda i: i.mint(exp_in=-3600, iat_in=-7200), "expired", id="expired"),
        pytest.param(lambda i: i.mint(aud="some-other-service"), "audience", id="wrong-audience"),
        pytest.param(lambda i: i.mint(kid="rsa-1", signing_key=new_rsa_key()), "signature", id="foreign-key"),
        pytest.param(lambda i: "not-a-jwt", "", id="garbage"),
    ]


@pytest.mark.parametrize(("make_token", "why"), _bad_tokens())
async def test_a_bad_token_is_refused_before_anything_runs_and_the_refusal_is_recorded(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer, make_token: Any, why: str
) -> None:
    setup = oidc_setup(tmp_path, shop, oidc_issuer)
    token = make_token(oidc_issuer)
    (setup.workdir / "token.jwt").write_text(token)
    prompts: list[str] = []
    with anyio.fail_after(60):
        async with stdio_session(setup, elicitation_callback=accept(prompts)) as client:
            result = await call(client, UPDATE)
    assert result.is_error
    text = _text(result)
    assert "Not authenticated" in text
    assert "Nothing was executed" in text
    assert why.lower() in text.lower()
    assert token not in text
    assert prompts == []
    assert shop.admin_query("SELECT status FROM orders WHERE id = 102") == [("pending",)]
    records = await audit_records(setup)
    assert [r.event.kind for r in records] == ["intent", "outcome"]
    assert all(r.event.principal is None for r in records)
    outcome = records[1].event.outcome
    assert outcome is not None
    assert outcome.status == "denied"
    assert outcome.error_code == "auth.failed"


async def test_the_token_file_is_read_again_on_every_call(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    setup = oidc_setup(tmp_path, shop, oidc_issuer)
    token_file = setup.workdir / "token.jwt"
    token_file.write_text(oidc_issuer.mint(sub="alice"))
    with anyio.fail_after(60):
        async with stdio_session(setup) as client:
            first = await call(client, "SELECT 1 AS one")
            token_file.write_text(oidc_issuer.mint(sub="alice", exp_in=-3600, iat_in=-7200))
            second = await call(client, "SELECT 1 AS one")
            token_file.write_text(oidc_issuer.mint(sub="bob", groups=["analysts"]))
            third = await call(client, "SELECT 1 AS one")
    assert not first.is_error, _text(first)
    assert second.is_error
    assert "Not authenticated" in _text(second)
    assert not third.is_error, _text(third)
    outcomes = [r.event for r in await audit_records(setup) if r.event.kind == "outcome"]
    assert [e.principal.subject if e.principal else None for e in outcomes] == ["alice", None, "bob"]
    assert [e.outcome.status if e.outcome else None for e in outcomes] == ["ok", "denied", "ok"]


async def test_an_update_confirmed_through_elicitation_runs_over_stdio(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    setup = oidc_setup(tmp_path, shop, oidc_issuer)
    (setup.workdir / "token.jwt").write_text(oidc_issuer.mint(sub="alice"))
    prompts: list[str] = []
    with anyio.fail_after(60):
        async with stdio_session(setup, elicitation_callback=accept(prompts)) as client:
            result = await call(client, UPDATE)
    assert not result.is_error, _text(result)
    assert result.structured_content is not None
    assert result.structured_content["confirmed_by_user"] is True
    assert result.structured_content["row_count"] == 1
    assert len(prompts) >= 1
    assert UPDATE in prompts[-1]
    assert shop.admin_query("SELECT status FROM orders WHERE id = 102") == [("shipped",)]
    outcome = [r.event for r in await audit_records(setup)][-1]
    assert outcome.confirmation is not None
    assert outcome.confirmation.accepted
    assert outcome.confirmation.comment == "over stdio"
    assert outcome.principal is not None
    assert outcome.principal.subject == "alice"


async def test_a_group_scoped_policy_denies_a_token_without_the_group(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    setup = oidc_setup(tmp_path, shop, oidc_issuer, policy=ANALYSTS_ONLY)
    token_file = setup.workdir / "token.jwt"
    token_file.write_text(oidc_issuer.mint(sub="dev", groups=["developers"]))
    with anyio.fail_after(60):
        async with stdio_session(setup) as client:
            denied = await call(client, "SELECT id FROM orders WHERE id = 102")
            token_file.write_text(oidc_issuer.mint(sub="ana", groups=["analysts"]))
            allowed = await call(client, "SELECT id FROM orders WHERE id = 102")
    assert denied.is_error
    assert "Denied by rule 'default-deny'" in _text(denied)
    assert not allowed.is_error, _text(allowed)
    assert allowed.structured_content is not None
    assert allowed.structured_content["rule_id"] == "analysts-read"
    outcomes = [r.event for r in await audit_records(setup) if r.event.kind == "outcome"]
    assert [
        (e.principal.subject if e.principal else None, e.outcome.rule_id if e.outcome else None)
        for e in outcomes
    ] == [("dev", "default-deny"), ("ana", "analysts-read")]
