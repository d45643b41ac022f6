"""Embedded audit log on the standard library's sqlite3.

Durability: WAL journal with ``synchronous=FULL``, so a commit is on disk (the WAL is fsynced)
before ``append`` returns. Throughput comes from *group commit*: appends that arrive while a
transaction is being written are queued and written together in the next transaction, one fsync
for the whole group; every caller still returns only after the commit that holds its record.

Concurrency: one writer connection, used by one thread at a time (``anyio.to_thread`` with a
capacity-1 limiter); every read opens its own short-lived connection, so reads never block on,
or interleave with, the writer's transaction. The chain is extended from the head read *inside*
the write transaction (``BEGIN IMMEDIATE``), so several processes sharing one file still produce
one contiguous chain, and a head that no longer matches the last record (a truncated or edited
tail) stops all appends instead of being papered over.

Schema (``schema_version`` 1):

* ``audit_records``: ``seq`` (primary key), ``record_id``, ``hash``, ``body`` (the exact canonical
  JSON bytes the hash covers, see :func:`hoop_mcp.core.audit.record_body`) and indexed copies of
  ``call_id``, ``session_id``, ``time``, ``kind`` and the principal's label for queries.
* ``audit_head``: one row, the seq and hash of the last record, updated in the same transaction.
* ``audit_meta``: ``schema_version``.

Anyone who can write the file can rewrite records and head consistently; signed checkpoints
(planned) are the answer to that, not this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from os import PathLike
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from hoop_mcp.core.audit import (
    GENESIS_HASH,
    AuditRecord,
    SessionSummary,
    VerifyReport,
    canonical_json,
    record_body,
    verify_records,
    verify_stored,
)
from hoop_mcp.core.errors import AuditError, AuditWriteError
from hoop_mcp.core.models import AuditEvent

__all__ = ["SCHEMA_VERSION", "SqliteAuditLog"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS audit_records (
    seq        INTEGER PRIMARY KEY,
    record_id  TEXT NOT NULL UNIQUE,
    hash       TEXT NOT NULL,
    body       BLOB NOT NULL,
    call_id    TEXT NOT NULL,
    session_id TEXT NOT NULL,
    time       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    principal  TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS audit_records_session ON audit_records (session_id, seq);
CREATE INDEX IF NOT EXISTS audit_records_call ON audit_records (call_id, seq);
CREATE TABLE IF NOT EXISTS audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
) STRICT;
"""

#: Creates the schema; formatted from module constants only (no input).
_INIT = f"""
BEGIN IMMEDIATE;
{_SCHEMA}
INSERT OR IGNORE INTO audit_meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');
INSERT OR IGNORE INTO audit_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}');
COMMIT;
"""  # noqa: S608

#: Rows whose indexed columns disagree with the hashed body (someone edited a column).
_COLUMN_MISMATCH = """
SELECT min(seq) FROM (SELECT seq, record_id, call_id, session_id, time, kind, CAST(body AS TEXT) AS doc
                      FROM audit_records)
WHERE CASE WHEN json_valid(doc) THEN
    json_extract(doc, '$.seq') IS NOT seq
    OR json_extract(doc, '$.record_id') IS NOT record_id
    OR json_extract(doc, '$.event.call_id') IS NOT call_id
    OR json_extract(doc, '$.event.session_id') IS NOT session_id
    OR json_extract(doc, '$.event.time') IS NOT time
    OR json_extract(doc, '$.event.kind') IS NOT kind
ELSE 1 END
"""

_INSERT = (
    "INSERT INTO audit_records (seq, record_id, hash, body, call_id, session_id, time, kind, principal)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

#: Most records written in one transaction.
_MAX_BATCH = 1024


@dataclass(eq=False)
class _Pending:
    event: AuditEvent
    #: Set when the record is written (or failed), or when this append is promoted to writer.
    wake: anyio.Event = field(default_factory=anyio.Event)
    record: AuditRecord | None = None
    error: AuditWriteError | None = None

    @property
    def finished(self) -> bool:
        return self.record is not None or self.error is not None


class _TailMismatch(Exception):
    pass


class _ParsedRows:
    """Stored rows parsed into records for deep verification; remembers how far it got."""

    def __init__(self, rows: Iterator[tuple[bytes, str]]) -> None:
        self._rows = rows
        #: 1-based position of the first row that does not parse (iteration stops there).
        self.unreadable_at: int | None = None

    def __iter__(self) -> Iterator[AuditRecord]:
        for position, (body, digest) in enumerate(self._rows, start=1):
            try:
                record = _record_from_row(digest, body)
            except ValueError:
                self.unreadable_at = position
                return
            yield record

    def override(self, report: VerifyReport) -> VerifyReport:
        """Name the unreadable row when it is where the chain first fails."""
        at = self.unreadable_at
        if at is None or (report.first_bad_seq is not None and report.first_bad_seq < at):
            return report
        return VerifyReport(
            ok=False,
            count=at - 1,
            first_bad_seq=at,
            problem=f"record {at} is unreadable (not a valid audit record)",
            head_hash=report.head_hash,
        )


_R = TypeVar("_R")


def _time_text(value: datetime) -> str:
    text = canonical_json(value)
    return text.decode("utf-8")[1:-1]


class SqliteAuditLog:
    """:class:`~hoop_mcp.core.audit.AuditLog` in one SQLite file. Create with :meth:`open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection, *, busy_timeout: float) -> None:
        self._path = path
        self._conn = conn
        self._busy_timeout = busy_timeout
        self._conn_lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(1)
        self._queue: deque[_Pending] = deque()
        self._writing = False
        self._closed = False

    @property
    def path(self) -> Path:
        return self._path

    # ------------------------------------------------------------------------------------ open

    @classmethod
    async def open(
        cls, path: str | PathLike[str], *, busy_timeout: float = 5.0, create: bool = True
    ) -> SqliteAuditLog:
        """Open (and with ``create``, create) the log at ``path``; the directory must exist.

        ``busy_timeout`` is how long a write waits for a lock held by another connection before
        failing with :class:`AuditWriteError`. Raises :class:`AuditWriteError` when the file cannot
        be opened or initialised (missing or read-only directory, not a database, newer schema).
        """
        return await anyio.to_thread.run_sync(
            partial(cls._open_sync, Path(path), busy_timeout=busy_timeout, create=create)
        )

    @classmethod
    def _open_sync(cls, path: Path, *, busy_timeout: float, create: bool) -> SqliteAuditLog:
        if not create and not path.is_file():
            raise AuditWriteError(f"audit log {path} does not exist", details={"path": str(path)})
        conn: sqlite3.Connection | None = None
        try:
            conn = cls._connect(path, busy_timeout)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise AuditWriteError(
                    f"audit log {path} could not switch to WAL mode (got {mode})", details={"path": str(path)}
                )
            try:
                conn.executescript(_INIT)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            version = conn.execute("SELECT value FROM audit_meta WHERE key = 'schema_version'").fetchone()[0]
        except AuditWriteError:
            if conn is not None:
                conn.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            raise _write_error(path, "cannot open the audit log", exc) from exc
        if version != str(SCHEMA_VERSION):
            conn.close()
            raise AuditWriteError(
                f"audit log {path} has schema version {version}; this hoop-mcp supports {SCHEMA_VERSION}",
                hint="upgrade hoop-mcp",
                details={"path": str(path)},
            )
        return cls(path, conn, busy_timeout=busy_timeout)

    @staticmethod
    def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    # ---------------------------------------------------------------------------------- append

    async def append(self, event: AuditEvent) -> AuditRecord:
        """Append ``event``; returns once its record is committed durably.

        Not cancellable once started: a started append always finishes (bounded by the busy
        timeout), so the caller never has to guess whether its record exists.
        """
        item = _Pending(event)
        with anyio.CancelScope(shield=True):
            if self._closed:
                raise AuditWriteError(f"audit log {self._path} is closed", details={"path": str(self._path)})
            self._queue.append(item)
            if self._writing:
                await item.wake.wait()  # written by another writer, or promoted to writer
            if not item.finished:
                await self._write_some()
        if item.error is not None:
            raise item.error
        assert item.record is not None  # noqa: S101 - _write_some finishes every item it takes
        return item.record

    async def _write_some(self) -> None:
        """Write one batch (which starts with this task's own item), then hand over."""
        self._writing = True
        batch = [self._queue.popleft() for _ in range(min(len(self._queue), _MAX_BATCH))]
        try:
            results = await anyio.to_thread.run_sync(
                self._write_batch, [p.event for p in batch], limiter=self._limiter
            )
        except BaseException as exc:  # noqa: BLE001 - a bug must not leave appends hanging
            error = _write_error(self._path, "audit write failed unexpectedly", exc)
            results = [error] * len(batch)
        for pending, result in zip(batch, results, strict=True):
            if isinstance(result, AuditRecord):
                pending.record = result
            else:
                pending.error = result
            pending.wake.set()
        if self._queue:
            self._queue[0].wake.set()  # promote the next waiter; _writing stays True
        else:
            self._writing = False

    def _write_batch(self, events: Sequence[AuditEvent]) -> list[AuditRecord | AuditWriteError]:
        """One transaction for a group of events; each event succeeds or fails on its own merit."""
        results: list[AuditRecord | AuditWriteError] = []
        encoded: list[bytes | None] = []
        for event in events:
            try:
                encoded.append(canonical_json(event))
            except (ValueError, TypeError) as exc:
                encoded.append(None)
                results.append(
                    AuditWriteError(
                        f"audit event for call {event.call_id} has no canonical form: {exc}",
                        details={"path": str(self._path)},
                    )
                )
            else:
                results.append(AuditWriteError("not written"))  # replaced below on success
        with self._conn_lock:
            if self._closed:
                error = AuditWriteError(
                    f"audit log {self._path} is closed", details={"path": str(self._path)}
                )
                return [r if e is None else error for r, e in zip(results, encoded, strict=True)]
            try:
                written = self._insert(events, encoded)
            except _TailMismatch as exc:
                error = AuditWriteError(
                    f"audit log {self._path} refuses to append: {exc}",
                    hint="run `hoop-mcp audit verify`; the log may have been truncated or edited",
                    details={"path": str(self._path)},
                )
                return [r if e is None else error for r, e in zip(results, encoded, strict=True)]
            except (sqlite3.Error, OSError) as exc:
                error = _write_error(self._path, "cannot write the audit record", exc)
                return [r if e is None else error for r, e in zip(results, encoded, strict=True)]
        for index, record in written.items():
            results[index] = record
        return results

    def _insert(
        self, events: Sequence[AuditEvent], encoded: Sequence[bytes | None]
    ) -> dict[int, AuditRecord]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            last = conn.execute("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
            if head is None:
                raise _TailMismatch("the audit head is missing")
            if tuple(head) != (tuple(last) if last is not None else (0, GENESIS_HASH)):
                last_seq = 0 if last is None else last[0]
                raise _TailMismatch(
                    f"its head (seq {head[0]}) does not match its last record (seq {last_seq})"
                )
            seq, prev_hash = int(head[0]), str(head[1])
            rows = []
            written: dict[int, AuditRecord] = {}
            for index, (event, event_json) in enumerate(zip(events, encoded, strict=True)):
                if event_json is None:
                    continue
                seq += 1
                record_id = uuid.uuid4().hex
                body = record_body(seq=seq, record_id=record_id, prev_hash=prev_hash, event_json=event_json)
                digest = hashlib.sha256(body).hexdigest()
                written[index] = AuditRecord(
                    seq=seq, record_id=record_id, prev_hash=prev_hash, hash=digest, event=event
                )
                principal = event.principal.label if event.principal is not None else None
                rows.append(
                    (
                        seq,
                        record_id,
                        digest,
                        body,
                        event.call_id,
                        event.session_id,
                        _time_text(event.time),
                        event.kind,
                        principal,
                    )
                )
                prev_hash = digest
            if rows:
                conn.executemany(_INSERT, rows)
                conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, prev_hash))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the original error is the one to report
                    conn.execute("ROLLBACK")
            raise
        return written

    # ----------------------------------------------------------------------------------- reads

    def _read_conn(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout
        )
        conn.execute("PRAGMA query_only=1")
        return conn

    def _read(self, what: str, fn: Callable[[sqlite3.Connection], _R]) -> _R:
        try:
            conn = self._read_conn()
            try:
                return fn(conn)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise AuditError(
                f"cannot read {what} from audit log {self._path}: {exc}", details={"path": str(self._path)}
            ) from exc

    async def records(
        self,
        *,
        session_id: str | None = None,
        call_id: str | None = None,
        since_seq: int | None = None,
        limit: int | None = None,
    ) -> list[AuditRecord]:
        """Records in seq order; ``since_seq`` is exclusive (only records with a larger seq)."""
        clauses: list[str] = []
        params: list[object] = []
        if session_id is not None:
            clauses.append("session_id = ?")
            params.append(session_id)
        if call_id is not None:
            clauses.append("call_id = ?")
            params.append(call_id)
        if since_seq is not None:
            clauses.append("seq > ?")
            params.append(since_seq)
        sql = "SELECT seq, hash, body FROM audit_records"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(limit, 0))
        return await anyio.to_thread.run_sync(self._records_sync, sql, tuple(params))

    def _records_sync(self, sql: str, params: tuple[object, ...]) -> list[AuditRecord]:
        rows = self._read("records", partial(_fetch_all, sql=sql, params=params))
        return [self._parse(seq, digest, body) for seq, digest, body in rows]

    def _parse(self, seq: object, digest: object, body: object) -> AuditRecord:
        try:
            assert isinstance(digest, str)  # noqa: S101 - STRICT table
            assert isinstance(body, bytes)  # noqa: S101
            return _record_from_row(digest, body)
        except ValueError as exc:
            raise AuditError(
                f"audit record {seq} in {self._path} is unreadable",
                hint="run `hoop-mcp audit verify`",
                details={"path": str(self._path)},
            ) from exc

    async def verify(self, *, deep: bool = False) -> VerifyReport:
        """Verify the whole log: hash chain, head (tail truncation) and indexed columns.

        The default checks the stored bytes (fast). ``deep`` also parses every record into the
        model and verifies that (slower; proves every record is readable). The column check runs
        on its own connection in a second thread (SQLite releases the GIL while it works), so it
        overlaps with hashing; the log is append-only, so the two snapshots agree on every row
        both see.
        """
        columns: list[int | None] = []

        async def check_columns() -> None:
            columns.append(
                await anyio.to_thread.run_sync(self._read, "the index columns", _first_column_mismatch)
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(check_columns)
            report = await anyio.to_thread.run_sync(
                partial(self._read, "the chain", partial(_verify_chain, deep=deep))
            )
        bad_column = columns[0]
        if bad_column is not None and (report.first_bad_seq is None or bad_column < report.first_bad_seq):
            return VerifyReport(
                ok=False,
                count=min(report.count, bad_column - 1),
                first_bad_seq=bad_column,
                problem=f"record {bad_column} was edited (indexed columns do not match the record)",
                head_hash=report.head_hash,
            )
        return report

    async def sessions(self) -> list[SessionSummary]:
        """Every session in the log, oldest first."""
        return await anyio.to_thread.run_sync(self._sessions_sync)

    def _sessions_sync(self) -> list[SessionSummary]:
        sql = """
            SELECT session_id, min(time), max(time), count(DISTINCT call_id), count(*),
                (SELECT principal FROM audit_records p
                  WHERE p.session_id = r.session_id AND p.principal IS NOT NULL ORDER BY p.seq LIMIT 1)
            FROM audit_records r GROUP BY session_id ORDER BY min(seq)
        """
        rows = self._read("sessions", partial(_fetch_all, sql=sql, params=()))
        return [
            SessionSummary.model_validate(
                {
                    "session_id": session_id,
                    "first_time": first,
                    "last_time": last,
                    "principal": principal,
                    "call_count": calls,
                    "record_count": count,
                }
            )
            for session_id, first, last, calls, count, principal in rows
        ]

    async def close(self) -> None:
        """Close the writer connection; later appends fail with :class:`AuditWriteError`."""
        self._closed = True
        await anyio.to_thread.run_sync(self._close_sync, limiter=self._limiter)

    def _close_sync(self) -> None:
        with self._conn_lock:
            self._conn.close()


def _first_column_mismatch(conn: sqlite3.Connection) -> int | None:
    value = conn.execute(_COLUMN_MISMATCH).fetchone()[0]
    return None if value is None else int(value)


def _verify_chain(conn: sqlite3.Connection, *, deep: bool) -> VerifyReport:
    conn.execute("BEGIN")  # one snapshot for head and records
    try:
        head_row = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        if head_row is None:
            return VerifyReport(ok=False, count=0, first_bad_seq=1, problem="the audit head is missing")
        head = (int(head_row[0]), str(head_row[1]))
        rows = _iter_cursor(conn.execute("SELECT body, hash FROM audit_records ORDER BY seq"))
        if deep:
            parsed = _ParsedRows(rows)
            return parsed.override(verify_records(parsed, expected_head=head))
        return verify_stored(rows, expected_head=head)
    finally:
        conn.execute("COMMIT")


def _fetch_all(conn: sqlite3.Connection, *, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
    return list(conn.execute(sql, params))


def _iter_cursor(cursor: sqlite3.Cursor) -> Iterator[tuple[bytes, str]]:
    while rows := cursor.fetchmany(4096):
        yield from rows


def _record_from_row(digest: str, body: bytes) -> AuditRecord:
    """Parse a stored row; raises ``ValueError`` (pydantic's ValidationError) when unreadable."""
    return AuditRecord.model_validate_json(b'{"hash":%b,%b' % (canonical_json(digest), body[1:]))


def _write_error(path: Path, what: str, exc: BaseException) -> AuditWriteError:
    reason = str(exc) or type(exc).__name__
    return AuditWriteError(
        f"{what} at {path}: {reason}",
        hint="nothing was executed; fix the audit store (disk space, permissions, locks) and retry",
        details={"path": str(path), "cause": type(exc).__name__},
    )
