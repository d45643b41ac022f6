"""Approvals in SQLite, in the same file as the audit log (own tables, own connections).

Durability and locking follow :mod:`hoop_mcp.stores.sqlite`: WAL journal, ``synchronous=FULL``,
one writer connection used by one thread at a time (``anyio.to_thread`` with a capacity-1
limiter), every write one ``BEGIN IMMEDIATE`` transaction. ``BEGIN IMMEDIATE`` takes the file's
write lock before anything is read, so deciders in different connections *and* different
processes (the server, the CLI, the approval page) are serialized: :meth:`update` reads the
approval, applies the change and writes it back under that lock, and the second decider sees the
first one's result. Reads use a second, read-only connection (WAL readers never wait for the
writer).

Schema (``approval_meta.schema_version`` 1, STRICT tables):

* ``approvals``: ``approval_id`` (primary key), ``binding`` and ``state`` (indexed),
  ``created_at``, ``version``, ``body`` (the :class:`~hoop_mcp.core.approvals.Approval` as
  canonical JSON: the masked request, votes, state) and ``raw_arguments`` (the call's exact
  arguments as canonical JSON; set to NULL in the transaction that makes the approval terminal).
* ``grant_uses``: one row per counted use of a grant: ``grant_id``, ``use`` (1-based),
  ``call_id``, ``time``.
* ``grant_revocations``: ``grant_id`` (primary key), ``by``, ``reason``, ``time``.

Every failure to use the file (``sqlite3.Error``, ``OSError``, a closed store, an unreadable row)
is raised as :class:`~hoop_mcp.core.approvals.ApprovalStoreUnavailable`, naming the file, so
callers fail closed. Wake-ups after a committed change go through
:class:`~hoop_mcp.stores.wakeup.WakeHub` (Unix datagram sockets, no polling).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime
from functools import partial
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
from pydantic import JsonValue, ValidationError

from hoop_mcp.core.approvals import (
    LIVE_STATES,
    TERMINAL_STATES,
    Approval,
    ApprovalConflict,
    ApprovalNotFound,
    ApprovalState,
    ApprovalStoreUnavailable,
)
from hoop_mcp.core.audit import canonical_json
from hoop_mcp.core.errors import ApprovalError
from hoop_mcp.core.models import utcnow
from hoop_mcp.stores.wakeup import WakeHub

if TYPE_CHECKING:
    from hoop_mcp.core.approvals import ApprovalStore

__all__ = ["SCHEMA_VERSION", "SqliteApprovalStore"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS approval_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS approvals (
    approval_id   TEXT PRIMARY KEY,
    binding       TEXT NOT NULL,
    state         TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    version       INTEGER NOT NULL,
    body          BLOB NOT NULL,
    raw_arguments BLOB
) STRICT;
CREATE INDEX IF NOT EXISTS approvals_binding ON approvals (binding, created_at);
CREATE INDEX IF NOT EXISTS approvals_state ON approvals (state, created_at);
-- At most one live approval per binding: concurrent identical calls share one request.
CREATE UNIQUE INDEX IF NOT EXISTS approvals_one_live_per_binding ON approvals (binding)
    WHERE state IN ('pending', 'approved');
CREATE TABLE IF NOT EXISTS grant_uses (
    grant_id TEXT NOT NULL,
    use      INTEGER NOT NULL,
    call_id  TEXT NOT NULL,
    time     TEXT NOT NULL,
    PRIMARY KEY (grant_id, use)
) STRICT;
CREATE TABLE IF NOT EXISTS grant_revocations (
    grant_id TEXT PRIMARY KEY,
    by       TEXT NOT NULL,
    reason   TEXT NOT NULL,
    time     TEXT NOT NULL
) STRICT;
"""

#: Creates the schema; formatted from module constants only (no input).
_INIT = f"""
BEGIN IMMEDIATE;
{_SCHEMA}
INSERT OR IGNORE INTO approval_meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');
COMMIT;
"""  # noqa: S608

_LIVE = tuple(sorted(s.value for s in LIVE_STATES))
_HINT = "every call that needs review is denied until it is fixed (disk space, permissions, locks)"

#: Per task: the version of each approval this task last read (see :meth:`SqliteApprovalStore.wait`).
_SEEN: ContextVar[dict[tuple[str, str], int] | None] = ContextVar("hoop_mcp_approvals_seen", default=None)
_MAX_SEEN = 256

_R = TypeVar("_R")


def _time_text(value: datetime) -> str:
    return canonical_json(value).decode("utf-8")[1:-1]


class SqliteApprovalStore:
    """:class:`~hoop_mcp.core.approvals.ApprovalStore` in a SQLite file. Create with :meth:`open`."""

    def __init__(
        self, path: Path, writer: sqlite3.Connection, reader: sqlite3.Connection, hub: WakeHub
    ) -> None:
        self._path = path
        self._key = hub.key
        self._writer = writer
        self._reader = reader
        self._hub = hub
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._write_limiter = anyio.CapacityLimiter(1)
        self._read_limiter = anyio.CapacityLimiter(1)
        self._closed = False
        #: Reads made so far (every query through the read connection); for benchmarks and tests.
        self.reads = 0

    @property
    def path(self) -> Path:
        return self._path

    @property
    def wake_hub(self) -> WakeHub:
        return self._hub

    # ------------------------------------------------------------------------------------ open

    @classmethod
    async def open(cls, path: str | PathLike[str], *, busy_timeout: float = 5.0) -> SqliteApprovalStore:
        """Open (creating the file and tables when missing) the approval store at ``path``.

        The directory must exist. ``busy_timeout`` is how long a write waits for another
        connection's lock. Raises :class:`ApprovalStoreUnavailable` when the file cannot be
        opened or initialised (missing or read-only directory, not a database, newer schema).
        """
        return await anyio.to_thread.run_sync(partial(cls._open_sync, Path(path), busy_timeout=busy_timeout))

    @classmethod
    def _open_sync(cls, path: Path, *, busy_timeout: float) -> SqliteApprovalStore:
        writer: sqlite3.Connection | None = None
        reader: sqlite3.Connection | None = None
        try:
            _create_owner_only(path)
            writer = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
            )
            writer.execute("PRAGMA synchronous=FULL")
            # Raw call arguments are deleted when an approval ends: overwrite them on disk too.
            writer.execute("PRAGMA secure_delete=ON")
            mode = writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ApprovalStoreUnavailable(
                    f"approval store {path} could not switch to WAL mode (got {mode})",
                    hint=_HINT,
                    details={"path": str(path)},
                )
            try:
                writer.executescript(_INIT)
            except BaseException:
                if writer.in_transaction:
                    writer.execute("ROLLBACK")
                raise
            row = writer.execute("SELECT value FROM approval_meta WHERE key = 'schema_version'").fetchone()
            version = None if row is None else row[0]
            if version != str(SCHEMA_VERSION):
                raise ApprovalStoreUnavailable(
                    f"approval store {path} has schema version {version}; "
                    f"this hoop-mcp supports {SCHEMA_VERSION}",
                    hint="upgrade hoop-mcp",
                    details={"path": str(path)},
                )
            reader = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
            )
            reader.execute("PRAGMA query_only=1")
            _restrict(path)
            hub = WakeHub.for_database(path)
        except BaseException as exc:
            for conn in (reader, writer):
                if conn is not None:
                    conn.close()
            if isinstance(exc, sqlite3.Error | OSError):
                raise _unavailable(path, "cannot open the approval store", exc) from exc
            raise
        return cls(path, writer, reader, hub)

    # ---------------------------------------------------------------------------------- plumbing

    def _closed_error(self) -> ApprovalStoreUnavailable:
        return ApprovalStoreUnavailable(
            f"approval store {self._path} is closed", hint=_HINT, details={"path": str(self._path)}
        )

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    @contextlib.contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        """Turn SQLite and OS errors into :class:`ApprovalStoreUnavailable` naming the file."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise _unavailable(self._path, what, exc) from exc

    async def _read(self, what: str, fn: Callable[[sqlite3.Connection], _R]) -> _R:
        self._check_open()
        return await anyio.to_thread.run_sync(self._read_sync, what, fn, limiter=self._read_limiter)

    def _read_sync(self, what: str, fn: Callable[[sqlite3.Connection], _R]) -> _R:
        with self._read_lock:
            if self._closed:
                raise self._closed_error()
            self.reads += 1
            with self._mapped(f"cannot read {what}"):
                return fn(self._reader)

    async def _write(self, fn: Callable[[sqlite3.Connection], _R]) -> _R:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction; not cancellable once started."""
        self._check_open()
        with anyio.CancelScope(shield=True):
            result = await anyio.to_thread.run_sync(self._write_sync, fn, limiter=self._write_limiter)
        return result

    def _write_sync(self, fn: Callable[[sqlite3.Connection], _R]) -> _R:
        with self._write_lock:
            if self._closed:
                raise self._closed_error()
            conn = self._writer
            with self._mapped("cannot start a write transaction"):
                conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)  # maps its own SQL errors; anything else passes through unchanged
                if conn.in_transaction:  # fn may have committed already (to wake waiters after it)
                    with self._mapped("cannot commit"):
                        conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # the original error is the one to report
                        conn.execute("ROLLBACK")
                raise
            return result

    def _parse(self, approval_id: object, body: object) -> Approval:
        try:
            if not isinstance(body, bytes):
                raise TypeError(f"body is {type(body).__name__}, not bytes")
            return Approval.model_validate_json(body)
        except (ValidationError, ValueError, TypeError) as exc:
            raise ApprovalStoreUnavailable(
                f"approval {approval_id} in {self._path} is unreadable: {exc}",
                hint=_HINT,
                details={"path": str(self._path), "approval_id": str(approval_id)},
            ) from exc

    def _saw(self, approvals: Collection[Approval]) -> None:
        """Remember, for this task, the versions it has read (for :meth:`wait`)."""
        if not approvals:
            return
        seen = dict(_SEEN.get() or {})
        for approval in approvals:
            key = (self._key, approval.approval_id)
            seen.pop(key, None)
            seen[key] = approval.version
        while len(seen) > _MAX_SEEN:
            del seen[next(iter(seen))]
        _SEEN.set(seen)

    # ----------------------------------------------------------------------------------- writes

    async def create(self, approval: Approval, *, arguments: Mapping[str, JsonValue]) -> None:
        """Store a new approval with the raw call arguments (kept only while it is live)."""
        try:
            body = canonical_json(approval)
            raw = None if approval.state in TERMINAL_STATES else canonical_json(dict(arguments))
            created = _time_text(approval.request.created_at)
        except (ValueError, TypeError) as exc:
            raise ApprovalError(f"approval {approval.approval_id} cannot be stored: {exc}") from exc
        row = (
            approval.approval_id,
            approval.request.binding,
            approval.state.value,
            created,
            approval.version,
            body,
            raw,
        )

        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO approvals (approval_id, binding, state, created_at, version, body,"
                    " raw_arguments) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.IntegrityError as exc:
                if "binding" in str(exc):
                    raise ApprovalConflict(
                        "a live approval for this exact call already exists",
                        details={"binding_taken": True},
                    ) from exc
                raise ApprovalConflict(f"approval {approval.approval_id} already exists") from exc
            except (sqlite3.Error, OSError) as exc:
                raise _unavailable(self._path, "cannot store the approval", exc) from exc

        await self._write(insert)
        self._saw([approval])

    async def update(
        self, approval_id: str, change: Callable[[Approval], Approval]
    ) -> tuple[Approval, Approval]:
        """Atomically apply ``change`` to the stored approval; returns (before, after).

        ``change`` runs inside the ``BEGIN IMMEDIATE`` transaction (so concurrent deciders, in
        any process, are serialized). If it raises, the transaction is rolled back and the
        exception propagates unchanged. A change that returns the approval unchanged writes
        nothing; any other change must raise the version. Raw arguments are deleted when
        ``after`` is terminal. Waiters are woken after the commit.
        """
        with anyio.CancelScope(shield=True):
            before, after, written = await self._write(partial(self._update_txn, approval_id, change))
            if written:
                self._hub.wake_local(approval_id)
        self._saw([after])
        return before, after

    def _update_txn(
        self, approval_id: str, change: Callable[[Approval], Approval], conn: sqlite3.Connection
    ) -> tuple[Approval, Approval, bool]:
        with self._mapped(f"cannot read approval {approval_id}"):
            row = conn.execute("SELECT body FROM approvals WHERE approval_id = ?", (approval_id,)).fetchone()
        if row is None:
            raise ApprovalNotFound(f"no approval {approval_id!r}", details={"approval_id": approval_id})
        before = self._parse(approval_id, row[0])
        after = change(before)
        if after == before:
            return before, after, False
        if after.request != before.request:
            raise ApprovalError(f"a change to approval {approval_id} may not alter its request")
        if after.version <= before.version:
            raise ApprovalError(
                f"a change to approval {approval_id} must raise its version "
                f"(it went from {before.version} to {after.version})"
            )
        try:
            body = canonical_json(after)
        except (ValueError, TypeError) as exc:
            raise ApprovalError(f"approval {approval_id} cannot be stored: {exc}") from exc
        terminal = after.state in TERMINAL_STATES
        with self._mapped(f"cannot write approval {approval_id}"):
            conn.execute(
                "UPDATE approvals SET state = ?, version = ?, body = ?,"
                " raw_arguments = CASE WHEN ? THEN NULL ELSE raw_arguments END WHERE approval_id = ?",
                (after.state.value, after.version, body, terminal, approval_id),
            )
            conn.execute("COMMIT")  # before waking anyone; _write_sync then has nothing to commit
        self._hub.notify(approval_id)
        return before, after, True

    async def use_grant(self, grant_id: str, *, max_uses: int, call_id: str) -> int:
        """Count one use of a grant atomically; returns the use number (1-based).

        Raises :class:`ApprovalConflict` when the grant is used up or revoked.
        """
        now = _time_text(utcnow())

        def use(conn: sqlite3.Connection) -> int:
            with self._mapped(f"cannot count a use of grant {grant_id}"):
                revoked = conn.execute(
                    "SELECT by, reason FROM grant_revocations WHERE grant_id = ?", (grant_id,)
                ).fetchone()
                used = int(
                    conn.execute(
                        "SELECT count(*) FROM grant_uses WHERE grant_id = ?", (grant_id,)
                    ).fetchone()[0]
                )
            if revoked is not None:
                raise ApprovalConflict(
                    f"grant {grant_id} was revoked by {revoked[0]}: {revoked[1]}",
                    details={"grant_id": grant_id},
                )
            if used >= max_uses:
                raise ApprovalConflict(
                    f"grant {grant_id} is used up ({used} of {max_uses} use(s))",
                    details={"grant_id": grant_id, "uses": used, "max_uses": max_uses},
                )
            with self._mapped(f"cannot count a use of grant {grant_id}"):
                conn.execute(
                    "INSERT INTO grant_uses (grant_id, use, call_id, time) VALUES (?, ?, ?, ?)",
                    (grant_id, used + 1, call_id, now),
                )
            return used + 1

        return await self._write(use)

    async def revoke_grant(self, grant_id: str, *, by: str, reason: str) -> None:
        """Revoke a grant for good (a second revocation keeps the first one's record)."""
        now = _time_text(utcnow())

        def revoke(conn: sqlite3.Connection) -> None:
            with self._mapped(f"cannot revoke grant {grant_id}"):
                conn.execute(
                    "INSERT INTO grant_revocations (grant_id, by, reason, time) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (grant_id) DO NOTHING",
                    (grant_id, by, reason, now),
                )

        await self._write(revoke)

    # ------------------------------------------------------------------------------------ reads

    async def get(self, approval_id: str) -> Approval | None:
        row = await self._read(
            f"approval {approval_id}", partial(_fetch_one, sql=_GET, params=(approval_id,))
        )
        if row is None:
            return None
        approval = self._parse(approval_id, row[0])
        self._saw([approval])
        return approval

    async def raw_arguments(self, approval_id: str) -> dict[str, JsonValue] | None:
        """The exact arguments of a live approval's call (``None`` once it ended, or unknown)."""
        row = await self._read(
            f"the arguments of approval {approval_id}",
            partial(
                _fetch_one,
                sql="SELECT state, raw_arguments FROM approvals WHERE approval_id = ?",
                params=(approval_id,),
            ),
        )
        if row is None or row[1] is None or row[0] not in _LIVE:
            return None
        try:
            value = json.loads(row[1])
        except (ValueError, TypeError) as exc:
            raise self._unreadable_arguments(approval_id, exc) from exc
        if not isinstance(value, dict):
            raise self._unreadable_arguments(approval_id, TypeError("not an object"))
        return value

    def _unreadable_arguments(self, approval_id: str, exc: Exception) -> ApprovalStoreUnavailable:
        return ApprovalStoreUnavailable(
            f"the arguments of approval {approval_id} in {self._path} are unreadable: {exc}",
            hint=_HINT,
            details={"path": str(self._path), "approval_id": approval_id},
        )

    async def find_live(self, binding: str) -> builtins.list[Approval]:
        """Pending or approved approvals with this binding, oldest first."""
        sql = (
            "SELECT approval_id, body FROM approvals WHERE binding = ? AND state IN (?, ?)"
            " ORDER BY created_at, rowid"
        )
        rows = await self._read("live approvals", partial(_fetch_all, sql=sql, params=(binding, *_LIVE)))
        found = [self._parse(approval_id, body) for approval_id, body in rows]
        self._saw(found)
        return found

    async def grant_uses(self, grant_id: str) -> tuple[int, bool]:
        """(uses so far, revoked)."""
        sql = (
            "SELECT (SELECT count(*) FROM grant_uses WHERE grant_id = ?),"
            " EXISTS (SELECT 1 FROM grant_revocations WHERE grant_id = ?)"
        )
        row = await self._read(f"grant {grant_id}", partial(_fetch_one, sql=sql, params=(grant_id, grant_id)))
        assert row is not None  # noqa: S101 - an aggregate query always returns a row
        return int(row[0]), bool(row[1])

    async def list(
        self, *, states: Collection[ApprovalState] | None = None, limit: int = 100
    ) -> builtins.list[Approval]:
        """Newest first."""
        params: builtins.list[object] = []
        sql = "SELECT approval_id, body FROM approvals"
        if states is not None:
            wanted = sorted({ApprovalState(s).value for s in states})
            if not wanted:
                return []
            sql += f" WHERE state IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        params.append(max(limit, 0))
        rows = await self._read("approvals", partial(_fetch_all, sql=sql, params=tuple(params)))
        found = [self._parse(approval_id, body) for approval_id, body in rows]
        self._saw(found)
        return found

    # ------------------------------------------------------------------------------------- wait

    async def wait(self, approval_id: str, *, up_to_s: float) -> None:
        """Return when this approval may have changed, or after ``up_to_s`` seconds (not an error).

        Woken by a datagram from the deciding process (or directly, in this process) right
        after its commit. A change committed between this task's last read of the approval and
        the start of this wait is noticed too: the version this task last read is compared with
        the stored one once the wake-up socket is listening (one small read per wait).
        """
        self._check_open()
        baseline = (_SEEN.get() or {}).get((self._key, approval_id))

        async def changed() -> bool:
            nonlocal baseline
            row = await self._read(
                f"the version of approval {approval_id}",
                partial(
                    _fetch_one,
                    sql="SELECT version FROM approvals WHERE approval_id = ?",
                    params=(approval_id,),
                ),
            )
            if row is None:
                return True  # unknown: nothing to wait for
            current = int(row[0])
            if baseline is None:
                baseline = current
                return False
            return current != baseline

        await self._hub.wait(approval_id, up_to_s=up_to_s, changed=changed)
        self._check_open()

    # ------------------------------------------------------------------------------------ close

    async def close(self) -> None:
        """Close both connections; later calls raise :class:`ApprovalStoreUnavailable`."""
        if self._closed:
            return
        self._closed = True
        self._hub.close()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close_writer, limiter=self._write_limiter)
            await anyio.to_thread.run_sync(self._close_reader, limiter=self._read_limiter)

    def _close_writer(self) -> None:
        with self._write_lock:
            self._writer.close()

    def _close_reader(self) -> None:
        with self._read_lock:
            self._reader.close()


_GET = "SELECT body FROM approvals WHERE approval_id = ?"


def _fetch_one(conn: sqlite3.Connection, *, sql: str, params: tuple[object, ...]) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = conn.execute(sql, params).fetchone()
    return row


def _fetch_all(conn: sqlite3.Connection, *, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
    return list(conn.execute(sql, params))


def _create_owner_only(path: Path) -> None:
    """Create the database file readable by its owner only (SQLite gives -wal/-shm the same mode)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _restrict(path: Path) -> None:
    """Owner-only permissions for the database and its -wal/-shm files (as the audit log's)."""
    for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if stat.S_IMODE(each.stat().st_mode) & 0o077:
                each.chmod(0o600)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot restrict permissions of %s: %s", each, exc.strerror or exc)


def _unavailable(path: Path, what: str, exc: BaseException) -> ApprovalStoreUnavailable:
    reason = str(exc) or type(exc).__name__
    return ApprovalStoreUnavailable(
        f"approval store {path}: {what}: {reason}",
        hint=_HINT,
        details={"path": str(path), "cause": type(exc).__name__},
    )


def _conforms(store: SqliteApprovalStore) -> ApprovalStore:
    """Checked by mypy: the store implements the protocol."""
    return store
