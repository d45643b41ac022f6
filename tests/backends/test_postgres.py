"""Defence in depth in the PostgreSQL backend, proven on a real database.

These tests hand the backend plans directly (a seam we own) to show what the database layer
enforces even if the classifier or the policy were wrong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest

from hoop_mcp.backends.postgres import PostgresBackend
from hoop_mcp.config import PostgresConnection
from hoop_mcp.core.backend import PlannedCall
from hoop_mcp.core.errors import BackendRejected
from tests.support.pg import ShopDb

pytestmark = pytest.mark.anyio


def _settings(**extra: object) -> PostgresConnection:
    return PostgresConnection.model_validate({"kind": "postgres", "dsn": {"env": "UNUSED"}, **extra})


@pytest.fixture
async def backend(shop: ShopDb) -> AsyncIterator[PostgresBackend]:
    b = PostgresBackend(
        name="shop",
        settings=_settings(max_rows=3, max_bytes=2048),
        conninfo=shop.app_conninfo,
        masked_columns={"public.customers": frozenset({"ssn"})},
    )
    try:
        yield b
    finally:
        await b.close()


async def _run(backend: PostgresBackend, sql: str) -> list[list[object]]:
    planned = await backend.plan(tool="query_db", arguments={"sql": sql})
    return list(map(list, (await backend.execute(planned)).rows))


def _forged(planned: PlannedCall, statement: str) -> PlannedCall:
    """A plan whose statement differs from what was classified (a classifier bug, simulated)."""
    plan = planned.plan.model_copy(update={"statement": statement})
    return PlannedCall(plan=plan, refusal=planned.refusal, private=planned.private)


async def test_a_write_smuggled_into_a_read_plan_is_refused_by_the_read_only_transaction(
    backend: PostgresBackend, shop: ShopDb
) -> None:
    planned = await backend.plan(tool="query_db", arguments={"sql": "SELECT 1"})
    with pytest.raises(BackendRejected, match="read-only transaction"):
        await backend.execute(_forged(planned, "UPDATE orders SET status = 'x' WHERE id = 101"))
    assert shop.admin_query("SELECT status FROM orders WHERE id = 101") == [("shipped",)]


async def test_stacked_statements_are_refused_by_the_extended_protocol_even_past_the_parser(
    backend: PostgresBackend, shop: ShopDb
) -> None:
    planned = await backend.plan(tool="query_db", arguments={"sql": "SELECT 1"})
    with pytest.raises(BackendRejected, match="multiple commands"):
        await backend.execute(_forged(planned, "SELECT 1; DELETE FROM orders WHERE id = 101"))
    assert shop.admin_query("SELECT count(*) FROM orders") == [(6,)]


async def test_a_leading_commit_cannot_escape_the_read_only_transaction(
    backend: PostgresBackend, shop: ShopDb
) -> None:
    planned = await backend.plan(tool="query_db", arguments={"sql": "SELECT 1"})
    with pytest.raises(BackendRejected):
        await backend.execute(_forged(planned, "COMMIT; DELETE FROM orders WHERE id = 101"))
    assert shop.admin_query("SELECT count(*) FROM orders") == [(6,)]


async def test_session_state_set_by_one_call_does_not_survive_into_the_next(
    backend: PostgresBackend, shop: ShopDb
) -> None:
    write = await backend.plan(
        tool="query_db", arguments={"sql": "UPDATE orders SET status = status WHERE id = 1"}
    )
    for statement in (
        "SET application_name = 'evil'",
        "SET default_transaction_read_only = off",
        "PREPARE sneaky AS SELECT 1",
        "CREATE TEMP TABLE leftover (x int)",
        "SELECT pg_advisory_lock(4242)",
        "LISTEN channel_x",
    ):
        await backend.execute(_forged(write, statement))
    rows = await _run(
        backend,
        "SELECT current_setting('application_name'), current_setting('default_transaction_read_only')",
    )
    assert rows == [["hoop-mcp", "off"]] or rows == [["hoop-mcp", "on"]]
    read = await backend.plan(tool="query_db", arguments={"sql": "SELECT 1"})
    with pytest.raises(BackendRejected, match="does not exist"):
        await backend.execute(_forged(read, "EXECUTE sneaky"))
    with pytest.raises(BackendRejected, match="does not exist"):
        await backend.execute(_forged(read, "SELECT * FROM leftover"))
    held = shop.admin_query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242")
    assert held == [(0,)]
    listening = shop.admin_query(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%%' AND state = 'idle'"
    )
    assert listening in ([(0,)], [(1,)])  # pg_stat_activity shows the last query text only
    assert await _run(backend, "SELECT pg_listening_channels()") == []


async def test_reads_run_as_the_least_privilege_read_role_when_one_is_configured(shop: ShopDb) -> None:
    shop.admin_query(
        "DO $$ BEGIN CREATE ROLE hoop_reader_t NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    shop.admin_query("GRANT SELECT ON orders TO hoop_reader_t")
    shop.admin_query("GRANT hoop_reader_t TO hoop_app")
    b = PostgresBackend(
        name="shop", settings=_settings(read_role="hoop_reader_t"), conninfo=shop.app_conninfo
    )
    try:
        assert await _run(b, "SELECT current_user") == [["hoop_reader_t"]]
        assert await _run(b, "SELECT count(*) FROM orders") == [[6]]
        with pytest.raises(BackendRejected, match="permission denied"):
            await _run(b, "SELECT count(*) FROM customers")
    finally:
        await b.close()


async def test_row_and_byte_caps_cut_results_and_say_so(backend: PostgresBackend) -> None:
    planned = await backend.plan(tool="query_db", arguments={"sql": "SELECT id FROM orders ORDER BY id"})
    result = await backend.execute(planned)
    assert [r[0] for r in result.rows] == [101, 102, 103]
    assert result.truncated
    assert result.truncated_reason == "max_rows"
    planned = await backend.plan(tool="query_db", arguments={"sql": "SELECT repeat('x', 1500) FROM orders"})
    result = await backend.execute(planned)
    assert len(result.rows) == 1
    assert result.truncated
    assert result.truncated_reason == "max_bytes"


async def test_a_huge_read_is_stopped_at_the_cap_without_reading_everything(shop: ShopDb) -> None:
    b = PostgresBackend(
        name="shop", settings=_settings(max_rows=10, statement_timeout_ms=20_000), conninfo=shop.app_conninfo
    )
    try:
        planned = await b.plan(
            tool="query_db", arguments={"sql": "SELECT g FROM generate_series(1, 50000000) g"}
        )
        result = await b.execute(planned)
        assert len(result.rows) == 10
        assert result.truncated
        # The connection is healthy afterwards.
        assert await _run(b, "SELECT 1") == [[1]]
    finally:
        await b.close()


async def test_column_origins_survive_aliases_and_star(backend: PostgresBackend) -> None:
    planned = await backend.plan(
        tool="query_db",
        arguments={
            "sql": "SELECT c.ssn AS x, o.* FROM customers c JOIN orders o ON o.customer_id = c.id LIMIT 1"
        },
    )
    result = await backend.execute(planned)
    sources = [c.source for c in result.columns]
    assert sources[0] == "public.customers.ssn"
    assert sources[1:] == [
        f"public.orders.{n}" for n in ("id", "customer_id", "status", "total_cents", "placed_at")
    ]


async def test_a_view_over_a_masked_column_is_refused(backend: PostgresBackend, shop: ShopDb) -> None:
    shop.admin_query("CREATE VIEW people AS SELECT id, ssn AS tax_id FROM customers")
    shop.admin_query("GRANT SELECT ON people TO hoop_app")
    with pytest.raises(BackendRejected, match=r"view over the masked column public\.customers\.ssn"):
        await _run(backend, "SELECT * FROM people")
    shop.admin_query("CREATE VIEW order_view AS SELECT id, status FROM orders")
    shop.admin_query("GRANT SELECT ON order_view TO hoop_app")
    assert len(await _run(backend, "SELECT * FROM order_view")) == 3


async def test_a_statement_timeout_is_reported_as_such(shop: ShopDb) -> None:
    b = PostgresBackend(name="shop", settings=_settings(statement_timeout_ms=200), conninfo=shop.app_conninfo)
    try:
        with pytest.raises(BackendRejected, match="statement_timeout"):
            await _run(b, "SELECT count(*) FROM generate_series(1, 500000000)")
        assert await _run(b, "SELECT 1") == [[1]]
    finally:
        await b.close()


def test_the_app_role_cannot_log_in_without_its_password(shop: ShopDb) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(shop.app_conninfo.replace(shop.app_password, "guess")).close()


async def test_pooled_connections_are_reset_and_reused_not_replaced(backend: PostgresBackend) -> None:
    pids = {(await _run(backend, "SELECT pg_backend_pid()"))[0][0] for _ in range(8)}
    stats = backend._pool.get_stats()
    assert stats.get("returns_bad", 0) == 0  # the reset (DISCARD ALL) worked every time
    assert len(pids) < 8, (stats, pids)  # connections were reused, not replaced per call


async def test_partitions_and_child_tables_of_a_masked_table_are_refused(shop: ShopDb) -> None:
    shop.admin_query(
        "CREATE TABLE patients (id int, diagnosis text) PARTITION BY RANGE (id);"
        " CREATE TABLE patients_low PARTITION OF patients FOR VALUES FROM (0) TO (100);"
        " CREATE TABLE patients_sub (id int, diagnosis text) PARTITION BY RANGE (id);"
        " ALTER TABLE patients ATTACH PARTITION patients_sub FOR VALUES FROM (100) TO (200);"
        " CREATE TABLE patients_deep PARTITION OF patients_sub FOR VALUES FROM (100) TO (200);"
        " INSERT INTO patients VALUES (1, 'secret diagnosis'), (150, 'other diagnosis');"
        " CREATE TABLE base_notes (id int, body text); CREATE TABLE more_notes () INHERITS (base_notes);"
        " GRANT SELECT ON patients, patients_low, patients_sub, patients_deep, base_notes, more_notes TO hoop_app"
    )
    b = PostgresBackend(
        name="shop",
        settings=_settings(),
        conninfo=shop.app_conninfo,
        masked_columns={
            "public.patients": frozenset({"diagnosis"}),
            "public.base_notes": frozenset({"body"}),
        },
    )
    try:
        for child, parent in (
            ("patients_low", "public.patients"),
            ("patients_deep", "public.patients"),
            ("more_notes", "public.base_notes"),
        ):
            with pytest.raises(BackendRejected, match=f"partition or child table of {parent}"):
                await _run(b, f"SELECT id FROM {child}")
        # The parent itself is fine: its rows carry the parent's name, so the column rule applies.
        planned = await b.plan(
            tool="query_db", arguments={"sql": "SELECT id, diagnosis FROM patients ORDER BY id"}
        )
        result = await b.execute(planned)
        assert result.columns[1].source == "public.patients.diagnosis"
    finally:
        await b.close()


async def test_results_carry_the_command_tag(backend: PostgresBackend) -> None:
    planned = await backend.plan(tool="query_db", arguments={"sql": "SELECT id FROM orders WHERE id < 103"})
    assert (await backend.execute(planned)).command_status == "SELECT 2"
    planned = await backend.plan(
        tool="query_db", arguments={"sql": "UPDATE orders SET status = status WHERE id = 101 RETURNING id"}
    )
    assert (await backend.execute(planned)).command_status == "UPDATE 1"
    planned = await backend.plan(
        tool="query_db", arguments={"sql": "UPDATE orders SET status = status WHERE id = 101"}
    )
    assert (await backend.execute(planned)).command_status == "UPDATE 1"
