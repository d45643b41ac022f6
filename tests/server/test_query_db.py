"""query_db end to end through a real MCP client (in memory) against a real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp import types as mt
from mcp.shared.exceptions import MCPError

from hoop_mcp.demo_data import CUSTOMERS, SENSITIVE_VALUES
from hoop_mcp.server.app import HoopServer
from tests.support.hoop import SHOP_MASKING, hoop_server, write_config
from tests.support.mcp_client import confirming as accept
from tests.support.mcp_client import declining as decline_cb
from tests.support.mcp_client import tool_text as _text
from tests.support.pg import ShopDb

pytestmark = pytest.mark.anyio


def _everything(result: mt.CallToolResult) -> str:
    return _text(result) + json.dumps(result.structured_content or {})


async def test_an_allowed_read_returns_rows_with_pii_masked(shop: ShopDb, tmp_path: Path) -> None:
    setup = write_config(tmp_path, shop)
    async with hoop_server(setup) as (hoop, _), Client(hoop.mcp) as client:
        with anyio.fail_after(30):
            result = await client.call_tool(
                "query_db",
                {
                    "connection": "shop",
                    "sql": "SELECT id, name, email, ssn AS s, card_number, notes FROM customers ORDER BY id",
                },
            )
    assert not result.is_error, _text(result)
    data = result.structured_content
    assert data is not None
    assert [c["name"] for c in data["columns"]] == ["id", "name", "email", "s", "card_number", "notes"]
    assert data["columns"][3]["source"] == "public.customers.ssn"
    assert data["columns"][3]["masked"] is True
    assert [r[0] for r in data["rows"]] == [c[0] for c in CUSTOMERS]
    assert data["rows"][0][1] == "Ada Quill"
    assert data["rows"][0][4].endswith("1111")
    assert "4111" not in data["rows"][0][4][:4]
    everything = _everything(result)
    for value in SENSITIVE_VALUES:
        assert value not in everything
    assert data["redactions"]


async def test_drop_table_is_denied_by_a_named_rule_and_the_table_survives(
    shop: ShopDb, tmp_path: Path
) -> None:
    setup = write_config(tmp_path, shop)
    async with hoop_server(setup) as (hoop, _), Client(hoop.mcp) as client:
        result = await client.call_tool("query_db", {"connection": "shop", "sql": "DROP TABLE orders"})
    assert result.is_error
    assert "Denied by rule" in _text(result)
    assert shop.admin_query("SELECT count(*) FROM orders") == [(6,)]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_update_runs_only_after_the_user_confirms_it(
    shop: ShopDb, tmp_path: Path, mode: str
) -> None:
    setup = write_config(tmp_path, shop)
    prompts: list[str] = []
    sql = "UPDATE orders SET status = 'shipped' WHERE id = 102"
    async with (
        hoop_server(setup) as (hoop, _),
        Client(hoop.mcp, elicitation_callback=accept(prompts), mode=mode) as client,
    ):
        with anyio.fail_after(30):
            result = await client.call_tool("query_db", {"connection": "shop", "sql": sql})
    assert not result.is_error, _text(result)
    assert result.structured_content is not None
    assert result.structured_content["confirmed_by_user"] is True
    assert shop.admin_query("SELECT status FROM orders WHERE id = 102") == [("shipped",)]
    assert prompts
    for expected in (sql, "public.orders", "Estimate (EXPLAIN): about 1 row(s)", "Rule: confirm-"):
        assert expected in prompts[-1]


async def test_a_declined_update_changes_nothing(shop: ShopDb, tmp_path: Path) -> None:
    setup = write_config(tmp_path, shop)
    async with hoop_server(setup) as (hoop, _), Client(hoop.mcp, elicitation_callback=decline_cb) as client:
        result = await client.call_tool(
            "query_db", {"connection": "shop", "sql": "UPDATE orders SET status = 'x' WHERE id = 102"}
        )
    assert result.is_error
    assert "did not confirm" in _text(result)
    assert shop.admin_query("SELECT status FROM orders WHERE id = 102") == [("pending",)]


async def test_a_client_without_elicitation_gets_a_refusal_naming_the_rule(
    shop: ShopDb, tmp_path: Path
) -> None:
    setup = write_config(tmp_path, shop)
    async with hoop_server(setup) as (hoop, _), Client(hoop.mcp) as client:
        result = await client.call_tool(
            "query_db", {"connection": "shop", "sql": "UPDATE orders SET status = 'x' WHERE id = 102"}
        )
    assert result.is_error
    assert "cannot show a confirmation prompt" in _text(result)
    assert shop.admin_query("SELECT status FROM orders WHERE id = 102") == [("pending",)]


async def test_the_agent_learns_the_connections_and_their_descriptions_at_initialize(
    shop: ShopDb, tmp_path: Path
) -> None:
    setup = write_config(tmp_path, shop, connection_extra="description: Orders and customers (test)\n")
    async with hoop_server(setup) as (_, runtime):
        hoop = HoopServer(
            pipeline=runtime.pipeline,
            connections={n: c.description for n, c in runtime.config.connections.items()},
        )
        async with Client(hoop.mcp) as client:
            text = client.instructions or ""
    assert "- shop: Orders and customers (test)" in text
    assert "list_tables" in text


async def test_database_error_text_is_masked_before_the_agent_sees_it(shop: ShopDb, tmp_path: Path) -> None:
    # Without a rule on notes, a cast over it runs and PostgreSQL quotes the value in its error.
    masking = "\n".join(line for line in SHOP_MASKING.splitlines() if "customers.notes" not in line)
    setup = write_config(tmp_path, shop, masking=masking)
    async with hoop_server(setup) as (hoop, runtime), Client(hoop.mcp) as client:
        # PostgreSQL quotes the offending value in the error: the notes hold an email and a card.
        result = await client.call_tool(
            "query_db", {"connection": "shop", "sql": "SELECT notes::int FROM customers WHERE id = 1"}
        )
        records = await runtime.audit.records()
    assert result.is_error
    text = _text(result)
    assert "invalid input syntax for type integer" in text
    assert "[REDACTED:EMAIL]" in text
    assert "ada.quill@example.com" not in text
    assert "4111 1111 1111 1111" not in text
    recorded = "".join(r.model_dump_json() for r in records)
    assert "ada.quill@example.com" not in recorded
    assert "[REDACTED:EMAIL]" in recorded


async def test_the_confirmation_prompt_shows_the_whole_statement_even_when_text_looks_like_a_secret(
    shop: ShopDb, tmp_path: Path
) -> None:
    # A fake key header in a comment used to blank the rest of the statement in the prompt (the
    # detector masked "to the end of the text"), hiding "OR id = 104" from the user.
    setup = write_config(tmp_path, shop)
    prompts: list[str] = []
    sql = (
        "UPDATE orders SET status = 'shipped' WHERE id = 102 /* -----BEGIN PRIVATE KEY----- */ "
        "AND customer_id = 1 OR id = 104"
    )
    async with (
        hoop_server(setup) as (hoop, runtime),
        Client(hoop.mcp, elicitation_callback=accept(prompts)) as c,
    ):
        await c.call_tool("query_db", {"connection": "shop", "sql": sql})
        records = await runtime.audit.records()
    shown = prompts[-1]
    assert "OR id = 104" in shown
    assert "(id = 102 AND customer_id = 1) OR id = 104" in shown  # precedence made explicit
    assert "BEGIN PRIVATE KEY" not in shown  # comments are not shown at all
    assert "REDACTED" not in shown
    plans = [r.event.plan for r in records if r.event.plan is not None]
    assert plans
    assert all("OR id = 104" in (p.statement or "") for p in plans)


async def test_secrets_in_literals_are_masked_in_the_prompt_and_invisible_characters_are_escaped(
    shop: ShopDb, tmp_path: Path
) -> None:
    setup = write_config(tmp_path, shop)
    prompts: list[str] = []
    sql = "UPDATE orders SET status = 'card 4111 1111 1111 1111\u202e' WHERE id = 102"
    async with hoop_server(setup) as (hoop, _), Client(hoop.mcp, elicitation_callback=accept(prompts)) as c:
        await c.call_tool("query_db", {"connection": "shop", "sql": sql})
    shown = prompts[-1]
    assert "4111 1111 1111 1111" not in shown
    assert "[REDACTED:CARD]" in shown
    assert "\u202e" not in shown
    assert "\\u{202E}" in shown


async def test_a_failing_write_does_not_quote_the_row_it_failed_on(shop: ShopDb, tmp_path: Path) -> None:
    # PostgreSQL's DETAIL says "Failing row contains (1, Ada Quill, ...)": masked columns the
    # detectors cannot recognise (a name under a redact rule) would escape through it.
    masking = SHOP_MASKING + "    - {column: public.customers.name, strategy: redact}\n"
    setup = write_config(tmp_path, shop, masking=masking)
    async with hoop_server(setup) as (hoop, runtime), Client(hoop.mcp, elicitation_callback=accept([])) as c:
        result = await c.call_tool(
            "query_db", {"connection": "shop", "sql": "UPDATE customers SET email = NULL WHERE id = 1"}
        )
        records = await runtime.audit.records()
    assert result.is_error
    assert "null value in column" in _text(result)
    assert "Ada Quill" not in _text(result)
    assert "Ada Quill" not in "".join(r.model_dump_json() for r in records)


async def test_an_accepted_answer_cannot_be_replayed_to_run_the_write_again(
    shop: ShopDb, tmp_path: Path
) -> None:
    setup = write_config(tmp_path, shop)
    args = {"connection": "shop", "sql": "UPDATE orders SET total_cents = total_cents + 1000 WHERE id = 102"}
    async with (
        hoop_server(setup) as (hoop, runtime),
        Client(hoop.mcp, elicitation_callback=accept([])) as client,
    ):
        session = client.session
        first = await session.call_tool("query_db", args, allow_input_required=True)
        assert isinstance(first, mt.InputRequiredResult)
        assert first.input_requests
        key = next(iter(first.input_requests))
        answer = {key: mt.ElicitResult(action="accept", content={"confirm": True, "comment": ""})}
        done = await session.call_tool(
            "query_db",
            args,
            input_responses=answer,
            request_state=first.request_state,
            allow_input_required=True,
        )
        assert isinstance(done, mt.CallToolResult)
        assert not done.is_error
        with pytest.raises(MCPError, match="already used"):
            await session.call_tool(
                "query_db",
                args,
                input_responses=answer,
                request_state=first.request_state,
                allow_input_required=True,
            )
        records = await runtime.audit.records()
    assert shop.admin_query("SELECT total_cents FROM orders WHERE id = 102") == [(5500,)]
    assert any("replayed" in (r.event.decision.reason if r.event.decision else "") for r in records)


async def test_a_prompt_the_user_never_answers_is_recorded_on_the_2026_protocol(
    shop: ShopDb, tmp_path: Path
) -> None:
    setup = write_config(tmp_path, shop)
    args = {"connection": "shop", "sql": "UPDATE orders SET status = 'x' WHERE id = 102"}
    async with (
        hoop_server(setup) as (hoop, runtime),
        Client(hoop.mcp, elicitation_callback=accept([])) as client,
    ):
        first = await client.session.call_tool("query_db", args, allow_input_required=True)
        assert isinstance(first, mt.InputRequiredResult)
        records = await runtime.audit.records()
    assert [r.event.kind for r in records] == ["intent", "outcome"]
    outcome = records[1].event.outcome
    assert outcome is not None
    assert outcome.status == "asked"
    assert records[0].event.confirmation is not None
    assert records[0].event.confirmation.action == "asked"
    plan = records[0].event.plan
    assert plan is not None
    assert plan.statement is not None
    assert "WHERE id = 102" in plan.statement
    assert shop.admin_query("SELECT status FROM orders WHERE id = 102") == [("pending",)]
