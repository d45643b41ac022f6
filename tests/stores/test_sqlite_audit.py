"""The SQLite audit log: durable, contiguous, verifiable, and failing closed."""

from __future__ import annotations

import hashlib
import inspect
import math
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hoop_mcp.core.audit import AuditLog, canonical_json, verify_records
from hoop_mcp.core.errors import AuditError, AuditWriteError
from hoop_mcp.core.models import AuditEvent, Principal
from hoop_mcp.stores.sqlite import SqliteAuditLog
from tests.core.test_audit import events

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ALICE = Principal(subject="u-1", issuer="https://idp", email="alice@example.com")


def event(call_id: str = "c1", *, session_id: str = "s1", kind: str = "intent", **kw: Any) -> AuditEvent:
    fields: dict[str, Any] = {"time": T0, "principal": ALICE, **kw}
    return AuditEvent(
        kind=kind,  # type: ignore[arg-type]
        call_id=call_id,
        session_id=session_id,
        tool="pg_query",
        arguments_digest="0" * 64,
        **fields,
    )


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[SqliteAuditLog]:
    store = await SqliteAuditLog.open(tmp_path / "audit.db")
    yield store
    await store.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_the_store_has_every_audit_log_method_with_the_same_signature() -> None:
    for name in ("append", "records", "verify", "sessions", "close"):
        ours = inspect.signature(getattr(SqliteAuditLog, name))
        theirs = inspect.signature(getattr(AuditLog, name))
        assert inspect.iscoroutinefunction(getattr(SqliteAuditLog, name))
        for param in theirs.parameters.values():
            assert ours.parameters[param.name].kind == param.kind


# ------------------------------------------------------------------------------------ round trip


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, min_size=1, max_size=5))
def test_records_read_back_equal_what_append_returned_and_verify(evs: list[AuditEvent]) -> None:
    async def scenario(path: Path) -> None:
        store = await SqliteAuditLog.open(path)
        try:
            written = [await store.append(ev) for ev in evs]
            read = await store.records()
            assert read == written
            assert [canonical_json(r) for r in read] == [canonical_json(r) for r in written]
            assert verify_records(read).ok
            assert (await store.verify()).ok
            assert (await store.verify(deep=True)).ok
        finally:
            await store.close()

    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(scenario, Path(tmp) / "audit.db")


@pytest.mark.anyio
async def test_two_hundred_concurrent_appends_form_one_contiguous_chain(log: SqliteAuditLog) -> None:
    results: list[Any] = []

    async def one(i: int) -> None:
        results.append(await log.append(event(f"call-{i}")))

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(one, i)
    assert sorted(r.seq for r in results) == list(range(1, 201))
    stored = await log.records()
    assert [r.seq for r in stored] == list(range(1, 201))
    assert {r.event.call_id for r in stored} == {f"call-{i}" for i in range(200)}
    assert {r.record_id: r for r in stored} == {r.record_id: r for r in results}
    report = await log.verify()
    assert (report.ok, report.count, report.head_hash) == (True, 200, stored[-1].hash)


@pytest.mark.anyio
async def test_reopening_the_file_continues_the_chain(tmp_path: Path) -> None:
    first = await SqliteAuditLog.open(tmp_path / "audit.db")
    before = [await first.append(event(f"a{i}")) for i in range(3)]
    await first.close()
    second = await SqliteAuditLog.open(tmp_path / "audit.db")
    after = [await second.append(event(f"b{i}")) for i in range(2)]
    assert [r.seq for r in after] == [4, 5]
    assert after[0].prev_hash == before[-1].hash
    assert (await second.verify()).ok
    await second.close()


@pytest.mark.anyio
async def test_two_writers_on_one_file_still_produce_one_chain(tmp_path: Path) -> None:
    one = await SqliteAuditLog.open(tmp_path / "audit.db")
    two = await SqliteAuditLog.open(tmp_path / "audit.db")
    for i in range(4):
        await (one if i % 2 else two).append(event(f"c{i}"))
    report = await one.verify()
    assert (report.ok, report.count) == (True, 4)
    await one.close()
    await two.close()


@pytest.mark.anyio
async def test_the_file_uses_wal_and_a_schema_version(log: SqliteAuditLog) -> None:
    await log.append(event())
    conn = raw(log.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM audit_meta WHERE key = 'schema_version'").fetchone()[0] == "1"
    assert conn.execute("SELECT seq FROM audit_head").fetchone()[0] == 1
    conn.close()


# ---------------------------------------------------------------------------------------- queries


@pytest.mark.anyio
async def test_records_filter_by_session_call_since_and_limit(log: SqliteAuditLog) -> None:
    await log.append(event("c1", session_id="s1"))
    await log.append(event("c2", session_id="s2"))
    await log.append(event("c1", session_id="s1", kind="outcome"))
    await log.append(event("c3", session_id="s1"))
    assert [r.seq for r in await log.records(session_id="s1")] == [1, 3, 4]
    assert [r.seq for r in await log.records(call_id="c1")] == [1, 3]
    assert [r.seq for r in await log.records(since_seq=2)] == [3, 4]
    assert [r.seq for r in await log.records(session_id="s1", since_seq=1, limit=1)] == [3]
    assert await log.records(session_id="nope") == []


@pytest.mark.anyio
async def test_sessions_summarise_time_principal_and_calls(log: SqliteAuditLog) -> None:
    await log.append(event("c1", session_id="s1", principal=None))
    await log.append(event("c1", session_id="s1", kind="outcome", time=T0 + timedelta(seconds=5)))
    await log.append(event("c2", session_id="s1", time=T0 + timedelta(seconds=9)))
    await log.append(event("c9", session_id="s2", principal=None))
    summaries = await log.sessions()
    assert [s.session_id for s in summaries] == ["s1", "s2"]
    s1, s2 = summaries
    assert (s1.first_time, s1.last_time) == (T0, T0 + timedelta(seconds=9))
    assert (s1.principal, s1.call_count, s1.record_count) == ("alice@example.com", 2, 3)
    assert (s2.principal, s2.call_count, s2.record_count) == (None, 1, 1)


# ---------------------------------------------------------------------------------------- tamper


async def _filled(log: SqliteAuditLog, n: int = 5) -> None:
    for i in range(n):
        await log.append(event(f"c{i}"))


@pytest.mark.anyio
async def test_tail_truncation_is_found_through_the_head_table(log: SqliteAuditLog) -> None:
    await _filled(log)
    raw(log.path).execute("DELETE FROM audit_records WHERE seq >= 4")
    report = await log.verify()
    assert (report.ok, report.first_bad_seq, report.count) == (False, 4, 3)
    assert report.problem == "records 4-5 are missing at the tail (the head says the log ends at 5)"


@pytest.mark.anyio
async def test_appending_to_a_truncated_log_is_refused_instead_of_hiding_the_truncation(
    log: SqliteAuditLog,
) -> None:
    await _filled(log)
    raw(log.path).execute("DELETE FROM audit_records WHERE seq = 5")
    with pytest.raises(AuditWriteError, match=r"head \(seq 5\) does not match its last record \(seq 4\)"):
        await log.append(event("after"))
    assert (await log.verify()).first_bad_seq == 5


@pytest.mark.anyio
async def test_an_edited_body_is_found_at_its_seq(log: SqliteAuditLog) -> None:
    await _filled(log)
    raw(log.path).execute(
        "UPDATE audit_records SET body = CAST(replace(body, X'6333', X'6334') AS BLOB) WHERE seq = 4"
    )
    report = await log.verify()
    assert (report.first_bad_seq, report.problem) == (4, "record 4 was edited (hash mismatch)")


@pytest.mark.anyio
async def test_an_edited_hash_column_is_found_at_its_seq(log: SqliteAuditLog) -> None:
    await _filled(log)
    raw(log.path).execute(
        "UPDATE audit_records SET hash = replace(hash, substr(hash, 1, 1), 'x') WHERE seq = 2"
    )
    assert (await log.verify()).first_bad_seq == 2


@pytest.mark.anyio
async def test_a_deleted_middle_record_is_found_as_a_gap(log: SqliteAuditLog) -> None:
    await _filled(log)
    raw(log.path).execute("DELETE FROM audit_records WHERE seq = 3")
    report = await log.verify()
    assert (report.first_bad_seq, report.problem) == (3, "record 3 is missing (gap after 2, next is 4)")


@pytest.mark.anyio
async def test_an_edited_index_column_is_found_even_though_the_chain_holds(log: SqliteAuditLog) -> None:
    await _filled(log)
    raw(log.path).execute("UPDATE audit_records SET session_id = 'elsewhere' WHERE seq = 2")
    report = await log.verify()
    assert (report.first_bad_seq, report.problem) == (
        2,
        "record 2 was edited (indexed columns do not match the record)",
    )


@pytest.mark.anyio
async def test_deep_verification_names_an_unreadable_record(log: SqliteAuditLog) -> None:
    await _filled(log, 3)
    conn = raw(log.path)
    body = conn.execute("SELECT body FROM audit_records WHERE seq = 3").fetchone()[0]
    broken = body.replace(b'"kind":"intent"', b'"kind":"bogus"')

    conn.execute(
        "UPDATE audit_records SET body = ?, hash = ?, kind = 'bogus' WHERE seq = 3",
        (broken, hashlib.sha256(broken).hexdigest()),
    )
    conn.execute("UPDATE audit_head SET hash = ? WHERE id = 1", (hashlib.sha256(broken).hexdigest(),))
    assert (await log.verify()).ok  # a consistent rewrite of the tail passes (documented gap)
    report = await log.verify(deep=True)
    assert (report.first_bad_seq, report.problem) == (3, "record 3 is unreadable (not a valid audit record)")
    with pytest.raises(AuditError, match=r"audit record 3 .* is unreadable"):
        await log.records()


# ---------------------------------------------------------------------------------------- failure


@pytest.mark.anyio
async def test_a_missing_directory_is_an_audit_write_error(tmp_path: Path) -> None:
    with pytest.raises(AuditWriteError, match="cannot open the audit log") as info:
        await SqliteAuditLog.open(tmp_path / "missing" / "audit.db")
    assert str(tmp_path / "missing" / "audit.db") in info.value.message


@pytest.mark.anyio
async def test_a_path_under_a_regular_file_is_an_audit_write_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(AuditWriteError):
        await SqliteAuditLog.open(tmp_path / "file" / "audit.db")


@pytest.mark.anyio
async def test_a_file_that_is_not_a_database_is_an_audit_write_error(tmp_path: Path) -> None:
    (tmp_path / "audit.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(AuditWriteError, match="not a database"):
        await SqliteAuditLog.open(tmp_path / "audit.db")


@pytest.mark.anyio
async def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    (await SqliteAuditLog.open(tmp_path / "audit.db")).__class__  # noqa: B018 - creates the file
    raw(tmp_path / "audit.db").execute("UPDATE audit_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(AuditWriteError, match="schema version 99"):
        await SqliteAuditLog.open(tmp_path / "audit.db")


@pytest.mark.anyio
async def test_opening_without_create_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AuditWriteError, match="does not exist"):
        await SqliteAuditLog.open(tmp_path / "audit.db", create=False)
    assert not (tmp_path / "audit.db").exists()


@pytest.mark.anyio
async def test_a_locked_database_is_an_audit_write_error_and_nothing_is_half_written(tmp_path: Path) -> None:
    store = await SqliteAuditLog.open(tmp_path / "audit.db", busy_timeout=0.05)
    await store.append(event("before"))
    blocker = raw(tmp_path / "audit.db")
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(AuditWriteError, match="database is locked") as info:
        await store.append(event("blocked"))
    assert str(tmp_path / "audit.db") in info.value.message
    blocker.execute("ROLLBACK")
    after = await store.append(event("after"))
    assert after.seq == 2
    assert (await store.verify()).ok
    await store.close()


@pytest.mark.anyio
async def test_a_database_refusing_writes_is_an_audit_write_error(log: SqliteAuditLog) -> None:
    await log.append(event("before"))
    log._conn.execute("PRAGMA query_only=1")  # the writer connection can no longer write
    with pytest.raises(AuditWriteError, match="readonly database"):
        await log.append(event("refused"))


@pytest.mark.anyio
async def test_a_failing_insert_is_an_audit_write_error(log: SqliteAuditLog) -> None:
    raw(log.path).execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON audit_records BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    with pytest.raises(AuditWriteError, match="disk on fire"):
        await log.append(event())
    assert (await log.verify()).count == 0


@pytest.mark.anyio
async def test_appending_after_close_is_an_audit_write_error(tmp_path: Path) -> None:
    store = await SqliteAuditLog.open(tmp_path / "audit.db")
    await store.close()
    with pytest.raises(AuditWriteError, match="closed"):
        await store.append(event())


@pytest.mark.anyio
async def test_an_event_without_canonical_form_fails_alone_without_leaking_arguments(
    log: SqliteAuditLog,
) -> None:
    bad = event("bad", arguments={"password": "hunter2-secret", "x": math.nan})
    outcomes: dict[str, Any] = {}

    async def one(name: str, ev: AuditEvent) -> None:
        try:
            outcomes[name] = await log.append(ev)
        except AuditWriteError as exc:
            outcomes[name] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "good1", event("good1"))
        tg.start_soon(one, "bad", bad)
        tg.start_soon(one, "good2", event("good2"))
    assert isinstance(outcomes["bad"], AuditWriteError)
    assert "hunter2" not in outcomes["bad"].diagnostics()
    assert sorted(outcomes[k].seq for k in ("good1", "good2")) == [1, 2]
    assert (await log.verify()).ok
