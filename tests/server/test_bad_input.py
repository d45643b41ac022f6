"""Bad input and bad weather, end to end: every call gets a clear error, executes nothing, is recorded,
and the server keeps serving. Real MCP client (in memory) against a real PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp import types as mt
from pydantic import JsonValue

from hoop_mcp.core.audit import AuditRecord
from hoop_mcp.core.masking import MaskedRows, Masker
from hoop_mcp.demo_data import SENSITIVE_VALUES
from hoop_mcp.runtime import Runtime
from hoop_mcp.server.app import HoopServer
from tests.support.hoop import ALLOW_ALL, hoop_server, write_config
from tests.support.mcp_client import tool_text as _text
from tests.support.pg import ShopDb

pytestmark = pytest.mark.anyio

HONEST_READ = "SELECT count(*) AS n FROM orders"


@asynccontextmanager
async def served(
    tmp_path: Path,
    shop: ShopDb,
    *,
    policy: str | None = None,
    connection_extra: str = "",
    statement_timeout_ms: int | None = None,
) -> AsyncIterator[tuple[Client, HoopServer, Runtime]]:
    setup = write_config(tmp_path, shop, policy=policy, connection_extra=connection_extra)
    if statement_timeout_ms is not None:
        text = setup.config_path.read_text()
        assert "statement_timeout_ms: 2000" in text
        setup.config_path.write_text(
            text.replace("statement_timeout_ms: 2000", f"statement_timeout_ms: {statement_timeout_ms}")
        )
    async with hoop_server(setup) as (hoop, runtime), Client(hoop.mcp) as client:
        yield client, hoop, runtime


async def _head(runtime: Runtime) -> int:
    records = await runtime.audit.records()
    return records[-1].seq if records else 0


async def _one_call(runtime: Runtime, since: int) -> tuple[AuditRecord, AuditRecord]:
    """The intent and outcome records of the single call made after ``since``."""
    records = await runtime.audit.records(since_seq=since)
    assert [r.event.kind for r in records] == ["intent", "outcome"], records
    intent, outcome = records
    assert intent.event.call_id == outcome.event.call_id
    assert outcome.event.outcome is not None
    return intent, outcome


async def _call(client: Client, arguments: dict[str, Any], tool: str = "query_db") -> mt.CallToolResult:
    with anyio.fail_after(30):
        return await client.call_tool(tool, arguments)


async def _assert_still_serving(client: Client) -> None:
    result = await _call(client, {"connection": "shop", "sql": HONEST_READ})
    assert not result.is_error, _text(result)
    assert result.structured_content is not None
    assert result.structured_content["rows"] == [[6]]


BAD_SQL = [
    pytest.param("SELEC * FROM orders", "sql.parse_error", "could not parse", id="invalid-sql"),
    pytest.param("", "sql.empty", "empty", id="empty"),
    pytest.param("  \n\t  ", "sql.empty", "empty", id="whitespace-only"),
    pytest.param("-- nothing here\n/* nor here */ ;", "sql.empty", "no statement", id="comment-only"),
    pytest.param(
        "SELECT " + "1 + " * 400 + "1", "sql.too_large", "the limit is 1000 bytes", id="over-size-cap"
    ),
    pytest.param("SELECT 1\x00; DROP TABLE orders", "sql.nul_byte", "NUL byte", id="nul-byte"),
    pytest.param("SELECT 'a\ud800b'", "sql.invalid_text", "not valid Unicode", id="lone-surrogate"),
    pytest.param("SELECT 1; DROP TABLE orders", "sql.stacked", "", id="stacked-select-drop"),
    pytest.param("COMMIT; DROP TABLE orders", "sql.stacked", "", id="stacked-commit-drop"),
]


@pytest.mark.parametrize(("sql", "rule_id", "fragment"), BAD_SQL)
async def test_bad_sql_gets_a_clear_error_runs_nothing_is_recorded_and_the_server_keeps_serving(
    shop: ShopDb, tmp_path: Path, sql: str, rule_id: str, fragment: str
) -> None:
    before = shop.snapshot()
    async with served(tmp_path, shop, connection_extra="max_sql_bytes: 1000\n") as (client, _, runtime):
        head = await _head(runtime)
        result = await _call(client, {"connection": "shop", "sql": sql})
        assert result.is_error
        text = _text(result)
        assert f"Invalid input ({rule_id})" in text
        assert fragment in text
        assert "Nothing was executed" in text
        intent, outcome = await _one_call(runtime, head)
        assert intent.event.decision is not None
        assert intent.event.decision.rule_id == rule_id
        assert outcome.event.outcome is not None
        assert outcome.event.outcome.status == "invalid"
        assert outcome.event.outcome.rule_id == rule_id
        await _assert_still_serving(client)
    assert shop.snapshot() == before


async def test_an_unknown_connection_is_refused_naming_the_configured_ones(
    shop: ShopDb, tmp_path: Path
) -> None:
    before = shop.snapshot()
    async with served(tmp_path, shop) as (client, _, runtime):
        head = await _head(runtime)
        result = await _call(client, {"connection": "warehouse", "sql": "DELETE FROM orders WHERE id = 101"})
        assert result.is_error
        assert "unknown connection 'warehouse'" in _text(result)
        assert "configured connections: shop" in _text(result)
        _, outcome = await _one_call(runtime, head)
        assert outcome.event.outcome is not None
        assert outcome.event.outcome.status == "invalid"
        assert outcome.event.outcome.rule_id == "input.unknown_connection"
        await _assert_still_serving(client)
    assert shop.snapshot() == before


BAD_ARGUMENTS = [
    pytest.param({"connection": "shop", "sql": 42}, id="sql-is-a-number"),
    pytest.param({"connection": "shop", "sql": ["DELETE FROM orders WHERE id = 101"]}, id="sql-is-a-list"),
    pytest.param({"connection": "shop"}, id="missing-sql"),
    pytest.param({"sql": "DELETE FROM orders WHERE id = 101"}, id="missing-connection"),
    pytest.param({"connection": 7, "sql": "DELETE FROM orders WHERE id = 101"}, id="connection-is-a-number"),
    pytest.param(
        {"connection": "shop", "sql": "DELETE FROM orders WHERE id = 101", "confirmed": True},
        id="extra-argument",
    ),
    pytest.param(
        {"connection": "shop", "sql": "DELETE FROM orders WHERE id = 101", "prepared": {"x": 1}},
        id="extra-argument-named-like-a-resolved-parameter",
    ),
]


@pytest.mark.parametrize("arguments", BAD_ARGUMENTS)
async def test_wrong_argument_types_are_refused_and_recorded_by_the_middleware(
    shop: ShopDb, tmp_path: Path, arguments: dict[str, Any]
) -> None:
    before = shop.snapshot()
    async with served(tmp_path, shop, policy=ALLOW_ALL) as (client, _, runtime):
        head = await _head(runtime)
        result = await _call(client, arguments)
        assert result.is_error, _text(result)
        assert _text(result)
        intent, outcome = await _one_call(runtime, head)
        assert intent.event.tool == "query_db"
        assert outcome.event.outcome is not None
        assert outcome.event.outcome.status == "invalid"
        assert outcome.event.outcome.rule_id in {"input.invalid_arguments", "sql.invalid_type"}
        await _assert_still_serving(client)
    assert shop.snapshot() == before


async def test_a_result_over_the_row_cap_is_truncated_and_says_so(shop: ShopDb, tmp_path: Path) -> None:
    async with served(tmp_path, shop, connection_extra="max_rows: 3\n") as (client, _, runtime):
        head = await _head(runtime)
        result = await _call(
            client, {"connection": "shop", "sql": "SELECT g FROM generate_series(1, 50) AS g"}
        )
        assert not result.is_error, _text(result)
        data = result.structured_content
        assert data is not None
        assert data["rows"] == [[1], [2], [3]]
        assert data["truncated"] is True
        assert data["truncated_reason"] == "max_rows"
        assert data["row_count"] > 3
        assert "TRUNCATED at the max_rows cap" in data["message"]
        _, outcome = await _one_call(runtime, head)
        assert outcome.event.outcome is not None
        assert outcome.event.outcome.status == "ok"
        assert outcome.event.outcome.truncated is True


async def test_a_result_over_the_byte_cap_is_truncated_and_says_so(shop: ShopDb, tmp_path: Path) -> None:
    async with served(tmp_path, shop, connection_extra="max_bytes: 2048\n") as (client, _, runtime):
        head = await _head(runtime)
        result = await _call(
            client,
            {"connection": "shop", "sql": "SELECT repeat('x', 500) AS filler FROM generate_series(1, 20)"},
        )
        assert not result.is_error, _text(result)
        data = result.structured_content
        assert data is not None
        assert 1 <= len(data["rows"]) < 20
        assert sum(len(r[0]) for r in data["rows"]) <= 2048
        assert data["truncated"] is True
        assert data["truncated_reason"] == "max_bytes"
        assert data["row_count"] > len(data["rows"])
        _, outcome = await _one_call(runtime, head)
        assert outcome.event.outcome is not None
        assert outcome.event.outcome.truncated is True


async def test_a_query_past_the_statement_timeout_is_cancelled_and_recorded(
    shop: ShopDb, tmp_path: Path
) -> None:
    sql = "SELECT count(*) FROM generate_series(1, 200000000)"
    async with served(tmp_path, shop, statement_timeout_ms=200) as (client, _, runtime):
        head = await _head(runtime)
        with anyio.fail_after(20):
            result = await _call(client, {"connection": "shop", "sql": sql})
        assert result.is_error
        assert "cancelled after 200 ms (statement_timeout)" in _text(result)
        intent, outcome = await _one_call(runtime, head)
        assert intent.event.decision is not None
        assert intent.event.decision.rule_id == "allow-reads"
        assert outcome.event.outcome is not None
        assert outcome.event.outcome.status == "error"
        assert outcome.event.outcome.error_code == "backend.rejected"
        await _assert_still_serving(client)


async def test_a_database_restart_between_calls_does_not_break_the_session(
    shop: ShopDb, tmp_path: Path
) -> None:
    async with served(tmp_path, shop) as (client, _, _runtime):
        await _assert_still_serving(client)
        try:
            shop.cluster.restart()
        finally:
            if not shop.cluster.running:
                shop.cluster.start()
        await _assert_still_serving(client)


async def _serving_again(client: Client) -> None:
    """Bounded wait for the pool to reconnect after an outage (each failed try is a refused call)."""
    with anyio.fail_after(60):
        while True:
            result = await _call(client, {"connection": "shop", "sql": HONEST_READ})
            if not result.is_error:
                assert result.structured_content is not None
                assert result.structured_content["rows"] == [[6]]
                return
            assert "cannot be reached" in _text(result), _text(result)


async def test_a_database_that_is_down_gives_a_clear_error_naming_no_secret(
    shop: ShopDb, tmp_path: Path
) -> None:
    async with served(tmp_path, shop, connection_extra="connect_timeout_s: 1\n") as (client, _, runtime):
        await _assert_still_serving(client)
        head = await _head(runtime)
        try:
            shop.cluster.stop()
            result = await _call(
                client, {"connection": "shop", "sql": "UPDATE orders SET status = 'x' WHERE id = 102"}
            )
            read = await _call(client, {"connection": "shop", "sql": HONEST_READ})
        finally:
            shop.cluster.start()
        # A write to be confirmed is estimated (EXPLAIN) while preparing: refused there, nothing ran.
        assert result.is_error
        assert "cannot be reached" in _text(result)
        assert "(rule backend.unavailable)" in _text(result)
        assert _text(result).lower().count("nothing was executed") == 1
        assert read.is_error
        text = _text(read)
        assert "connection 'shop': the database cannot be reached right now" in text
        assert "nothing was executed" in text
        for secret in (shop.app_password, shop.app_conninfo, "password", "hoop_app", str(shop.cluster.port)):
            assert secret not in text
        records = await runtime.audit.records(since_seq=head)
        outcome = records[-1].event.outcome
        assert records[-1].event.kind == "outcome"
        assert outcome is not None
        assert outcome.status == "error"
        assert outcome.error_code == "backend.unavailable"
        assert shop.app_password not in "".join(r.model_dump_json() for r in records)
        await _serving_again(client)
    assert shop.admin_query("SELECT status FROM orders WHERE id = 102") == [("pending",)]


async def test_the_first_call_after_a_database_outage_works(shop: ShopDb, tmp_path: Path) -> None:
    async with served(tmp_path, shop, connection_extra="connect_timeout_s: 1\n") as (client, _, _runtime):
        await _assert_still_serving(client)
        try:
            shop.cluster.stop()
            # About 4 s of outage: the pool's reconnect attempts are then at 0, 1, 3 and 7 s.
            for _ in range(4):
                down = await _call(client, {"connection": "shop", "sql": HONEST_READ})
                assert down.is_error
        finally:
            shop.cluster.start()
        try:
            await _assert_still_serving(client)
        finally:
            await _serving_again(client)


async def test_an_unwritable_audit_store_stops_the_call_before_anything_executes(
    shop: ShopDb, tmp_path: Path
) -> None:
    async with served(tmp_path, shop, policy=ALLOW_ALL) as (client, _, runtime):
        await _assert_still_serving(client)
        await runtime.audit.close()
        result = await _call(
            client, {"connection": "shop", "sql": "UPDATE orders SET status = 'x' WHERE id = 102"}
        )
        assert result.is_error
        text = _text(result)
        assert "audit log cannot be written" in text
        assert "nothing was executed (fail closed)" in text
        # Reads are refused too: no record, no execution.
        read = await _call(client, {"connection": "shop", "sql": HONEST_READ})
        assert read.is_error
        assert "audit log cannot be written" in _text(read)
    assert shop.admin_query("SELECT status FROM orders WHERE id = 102") == [("pending",)]


async def test_an_audit_store_locked_by_another_writer_fails_closed_then_recovers(
    shop: ShopDb, tmp_path: Path
) -> None:
    import sqlite3

    async with served(tmp_path, shop, policy=ALLOW_ALL) as (client, _, runtime):
        await _assert_still_serving(client)
        locker = sqlite3.connect(runtime.audit.path, isolation_level=None, timeout=0)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            with anyio.fail_after(30):
                result = await _call(
                    client, {"connection": "shop", "sql": "UPDATE orders SET status = 'x' WHERE id = 102"}
                )
            assert result.is_error
            assert "nothing was executed (fail closed)" in _text(result)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert shop.admin_query("SELECT status FROM orders WHERE id = 102") == [("pending",)]
        await _assert_still_serving(client)
        assert (await runtime.audit.verify()).ok


class _FailingMasker(Masker):
    """A masker whose row masking breaks (the seam the pipeline must fail closed on)."""

    def mask_rows(
        self, *, connection: str, sources: Sequence[str | None], rows: Sequence[Sequence[JsonValue]]
    ) -> MaskedRows:
        raise RuntimeError("detector crashed")


async def test_a_masking_failure_withholds_the_result(shop: ShopDb, tmp_path: Path) -> None:
    async with served(tmp_path, shop) as (client, hoop, runtime):
        hoop.pipeline.masker = _FailingMasker(runtime.policy.masking, hash_key=b"k" * 32)
        head = await _head(runtime)
        result = await _call(client, {"connection": "shop", "sql": "SELECT name, ssn, email FROM customers"})
        assert result.is_error
        text = _text(result) + json.dumps(result.structured_content or {})
        assert "withheld because masking failed" in text
        assert "Ada Quill" not in text
        for value in SENSITIVE_VALUES:
            assert value not in text
        _, outcome = await _one_call(runtime, head)
        assert outcome.event.outcome is not None
        assert outcome.event.outcome.status == "withheld"
        assert outcome.event.outcome.rule_id == "masking.failed"
        assert outcome.event.outcome.result_digest is None
