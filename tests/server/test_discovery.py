"""Schema discovery (list_tables, describe_table) end to end: only what policy lets the caller read,
masked columns flagged, bad names refused clearly. Real MCP client (in memory), real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp import types as mt

from hoop_mcp.runtime import Runtime
from tests.support.hoop import SHOP_MASKING, hoop_server, write_config
from tests.support.mcp_client import tool_text as _text
from tests.support.pg import ShopDb

pytestmark = pytest.mark.anyio

ORDERS_AND_PRODUCTS = """\
version: 1
rules:
  - id: read-orders-and-products
    description: reads of orders and products only
    verdict: allow
    when:
      effects: [read]
      relations: [public.orders, public.products]
      flags_only: [explain_analyze]
"""

MASKING_WITH_SKU = SHOP_MASKING + "    - {column: public.products.sku, strategy: partial, keep_last: 2}\n"


@asynccontextmanager
async def client_for(
    tmp_path: Path, shop: ShopDb, *, policy: str | None = None
) -> AsyncIterator[tuple[Client, Runtime]]:
    setup = write_config(tmp_path, shop, policy=policy, masking=MASKING_WITH_SKU)
    async with hoop_server(setup) as (hoop, runtime), Client(hoop.mcp) as client:
        yield client, runtime


async def _call(client: Client, tool: str, **arguments: Any) -> mt.CallToolResult:
    with anyio.fail_after(30):
        return await client.call_tool(tool, {"connection": "shop", **arguments})


async def test_list_tables_shows_only_tables_the_policy_lets_the_caller_read(
    shop: ShopDb, tmp_path: Path
) -> None:
    async with client_for(tmp_path, shop, policy=ORDERS_AND_PRODUCTS) as (client, _):
        result = await _call(client, "list_tables")
    assert not result.is_error, _text(result)
    data = result.structured_content
    assert data is not None
    tables = {t["table"]: t for t in data["tables"]}
    assert set(tables) == {"public.orders", "public.products"}
    assert tables["public.products"]["masked_columns"] == ["sku"]
    assert tables["public.orders"]["masked_columns"] == []
    assert tables["public.orders"]["kind"] == "table"
    assert "2 table(s) you may query" in data["message"]


async def test_list_tables_flags_every_masked_column(shop: ShopDb, tmp_path: Path) -> None:
    async with client_for(tmp_path, shop) as (client, _):
        result = await _call(client, "list_tables")
    assert not result.is_error, _text(result)
    assert result.structured_content is not None
    tables = {t["table"]: t for t in result.structured_content["tables"]}
    assert {"public.customers", "public.orders", "public.products"} <= set(tables)
    assert tables["public.customers"]["masked_columns"] == [
        "api_key",
        "card_number",
        "email",
        "notes",
        "phone",
        "ssn",
    ]


async def test_describe_table_marks_masked_columns_with_their_strategy(shop: ShopDb, tmp_path: Path) -> None:
    async with client_for(tmp_path, shop) as (client, runtime):
        result = await _call(client, "describe_table", table="customers")
        records = await runtime.audit.records()
    assert not result.is_error, _text(result)
    data = result.structured_content
    assert data is not None
    assert data["table"] == "public.customers"
    columns = {c["column"]: c for c in data["columns"]}
    assert list(columns) == [
        "id",
        "name",
        "email",
        "phone",
        "ssn",
        "card_number",
        "api_key",
        "notes",
        "created_at",
    ]
    assert {name: c["masking_strategy"] for name, c in columns.items() if c["masked"]} == {
        "email": "hash",
        "phone": "partial",
        "ssn": "redact",
        "card_number": "partial",
        "api_key": "redact",
        "notes": "detect",
    }
    assert columns["id"]["primary_key"] is True
    assert columns["id"]["masked"] is False
    assert columns["name"]["nullable"] is False
    assert columns["notes"]["nullable"] is True
    assert "Masked columns may be selected directly" in data["message"]
    assert [r.event.kind for r in records] == ["intent", "outcome"]
    assert records[0].event.plan is not None
    assert records[0].event.plan.relations_read == ("public.customers",)


@pytest.mark.parametrize(
    "table",
    [
        pytest.param("customers; drop table orders", id="semicolon"),
        pytest.param("-x", id="leading-dash"),
        pytest.param("cust\x00omers", id="nul"),
        pytest.param("a.b.c", id="three-parts"),
        pytest.param("", id="empty"),
        pytest.param("customers--", id="comment"),
        pytest.param('"customers"', id="quoted"),
    ],
)
async def test_describe_table_rejects_bad_table_names_clearly(
    shop: ShopDb, tmp_path: Path, table: str
) -> None:
    before = shop.snapshot()
    async with client_for(tmp_path, shop) as (client, runtime):
        result = await _call(client, "describe_table", table=table)
        records = await runtime.audit.records()
        follow_up = await _call(client, "describe_table", table="orders")
    assert result.is_error
    text = _text(result)
    assert "Invalid input" in text
    assert "table name" in text
    assert "Nothing was executed" in text
    assert [r.event.kind for r in records] == ["intent", "outcome"]
    outcome = records[1].event.outcome
    assert outcome is not None
    assert outcome.status == "invalid"
    assert not follow_up.is_error, _text(follow_up)
    assert shop.snapshot() == before


async def test_describe_table_refuses_a_table_the_policy_denies_without_revealing_whether_it_exists(
    shop: ShopDb, tmp_path: Path
) -> None:
    async with client_for(tmp_path, shop, policy=ORDERS_AND_PRODUCTS) as (client, runtime):
        existing = await _call(client, "describe_table", table="customers")
        missing = await _call(client, "describe_table", table="no_such_table")
        allowed = await _call(client, "describe_table", table="public.products")
        records = await runtime.audit.records()
    assert existing.is_error
    assert missing.is_error
    assert "Denied by rule 'default-deny'" in _text(existing)
    assert _text(missing) == _text(existing).replace("customers", "no_such_table")
    assert existing.structured_content is None
    for column in ("card_number", "ssn", "api_key", "email"):
        assert column not in _text(existing)
    assert not allowed.is_error, _text(allowed)
    assert allowed.structured_content is not None
    sku = next(c for c in allowed.structured_content["columns"] if c["column"] == "sku")
    assert sku["masked"] is True
    assert sku["masking_strategy"] == "partial"
    denied = [r.event.outcome for r in records if r.event.kind == "outcome"][:2]
    assert [(o.status, o.rule_id) for o in denied if o] == [("denied", "default-deny")] * 2


async def test_describe_table_of_an_unknown_table_says_so(shop: ShopDb, tmp_path: Path) -> None:
    async with client_for(tmp_path, shop) as (client, runtime):
        result = await _call(client, "describe_table", table="no_such_table")
        records = await runtime.audit.records()
    assert result.is_error
    text = _text(result)
    assert "no table or view named public.no_such_table" in text
    assert "list_tables" in text
    outcome = records[-1].event.outcome
    assert outcome is not None
    assert outcome.status == "error"
    assert outcome.rule_id == "describe.not_found"
