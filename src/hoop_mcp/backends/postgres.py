"""PostgreSQL backend: classify with pglast, estimate with EXPLAIN, execute with defence in depth.

Defences, in order: the classifier refuses stacked statements and the policy decides on the parse
tree; then execution sends exactly one statement over the extended protocol (which refuses several
statements), inside ``BEGIN READ ONLY`` for reads, with ``statement_timeout``, ``lock_timeout`` and
``idle_in_transaction_session_timeout`` set locally, ``search_path`` pinned, an optional
least-privilege role for reads, row and byte caps, and ``DISCARD ALL`` before a pooled connection is
reused, so nothing of one call's session state survives into the next.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import math
import threading
import uuid
from collections.abc import Callable, Generator, Mapping
from typing import Any, TypeVar, cast

import anyio.to_thread
import psycopg
import psycopg.errors
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import JsonValue

from hoop_mcp.backends.sql_classify import (
    SqlClassification,
    classify_statement,
    parse_statement,
    render_for_people,
    render_tokens,
)
from hoop_mcp.backends.sql_masked_use import find_masked_column_uses
from hoop_mcp.config import PostgresConnection
from hoop_mcp.core.backend import PlannedCall, ResultColumn, TableResult
from hoop_mcp.core.errors import BackendRejected, BackendUnavailable, InvalidInput
from hoop_mcp.core.models import Decision, Plan, Verdict

log = logging.getLogger(__name__)

_READ_EFFECTS = frozenset({"read"})
_EXPLAINABLE = ("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE")
_STREAM_CHUNK = 256
_T = TypeVar("_T")


def _to_json(value: Any) -> JsonValue:
    """Convert a psycopg value to a JSON value, keeping its meaning (exact numerics as strings)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    conv = _CONVERTERS.get(type(value))
    if conv is not None:
        return conv(value)
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    return str(value)


def _float(value: float) -> JsonValue:
    return value if math.isfinite(value) else str(value)


_CONVERTERS: dict[type, Callable[[Any], JsonValue]] = {
    float: _float,
    decimal.Decimal: str,
    dt.datetime: lambda v: v.isoformat(),
    dt.date: lambda v: v.isoformat(),
    dt.time: lambda v: v.isoformat(),
    dt.timedelta: str,
    uuid.UUID: str,
}


def _cell_size(value: JsonValue) -> int:
    if isinstance(value, str):
        return len(value) + 2
    if value is None or isinstance(value, (bool, int, float)):
        return 8
    return len(str(value))


def plan_sql(
    text: str,
    *,
    schema: str,
    max_bytes: int,
    masked: Mapping[str, frozenset[str]],
    allow_masked_predicates: bool,
) -> PlannedCall:
    """What a statement would do, and whether masking refuses it. Pure: no database involved.

    The server and ``hoop-mcp policy explain`` both plan through here, so they cannot disagree.
    Raises ``InvalidInput`` for text that is not exactly one valid statement.
    """
    stmt = parse_statement(text, max_bytes=max_bytes)
    cls = classify_statement(stmt, text, default_schema=schema)
    plan = Plan(
        effect=str(cls.effect),
        effects=tuple(str(e) for e in cls.effects),
        command=cls.command,
        relations_read=cls.relations_read,
        relations_written=cls.relations_written,
        functions=cls.functions,
        flags=cls.flags,
        statement=text,
        summary=_summary(cls),
    )
    refusal = None
    if masked:
        uses = find_masked_column_uses(
            text, masked, allow_predicates=allow_masked_predicates, default_schema=schema, parsed=(stmt, cls)
        )
        if uses:
            first = uses[0]
            refusal = Decision(
                verdict=Verdict.DENY,
                rule_id=f"masking.{first.clause}",
                reason=first.message,
                matched=tuple(sorted({f"masking.{u.clause}" for u in uses})),
            )
    return PlannedCall(plan=plan, refusal=refusal, private={"op": "query", "classification": cls})


class PostgresBackend:
    """One configured PostgreSQL connection."""

    kind = "postgres"

    def __init__(
        self,
        *,
        name: str,
        settings: PostgresConnection,
        conninfo: str,
        masked_columns: Mapping[str, frozenset[str]] | None = None,
        allow_masked_predicates: bool = False,
    ) -> None:
        self.name = name
        self.settings = settings
        self._masked = dict(masked_columns or {})
        self._allow_predicates = allow_masked_predicates
        self._conninfo = conninfo
        self._pool = self._new_pool()
        self._opened = False

    def _new_pool(self) -> ConnectionPool:
        s = self.settings
        return ConnectionPool(
            self._conninfo,
            min_size=0,
            max_size=s.pool_size,
            open=False,
            timeout=s.connect_timeout_s,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, int(s.connect_timeout_s)),
                # DISCARD ALL drops server-side prepared statements between calls: never auto-prepare.
                "prepare_threshold": None,
            },
            configure=self._configure,
            reset=self._reset,
            name=f"hoop-{self.name}",
        )

    def _replace_pool(self) -> None:
        """After the database was unreachable, start over with a fresh pool.

        psycopg_pool backs off exponentially between failed connection attempts, which would keep
        calls failing for about as long as the outage lasted; a new pool tries again at once.
        """
        old, self._pool, self._opened = self._pool, self._new_pool(), False
        # Closing waits for the old pool's workers: do it off the caller's path.
        threading.Thread(
            target=old.close, kwargs={"timeout": 2.0}, name=f"close-{old.name}", daemon=True
        ).start()

    # -- pool --------------------------------------------------------------------------------------
    def _session_setup(self) -> sql.Composed:
        return sql.SQL("SET application_name = 'hoop-mcp'; SET search_path = {}").format(
            sql.Identifier(self.settings.schema_name)
        )

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(self._session_setup())

    def _reset(self, conn: psycopg.Connection[Any]) -> None:
        # Everything a call may have changed in the session (settings, role, prepared statements,
        # temp tables, advisory locks, LISTEN) is discarded before the connection is reused.
        # (DISCARD ALL cannot share a multi-statement batch: that runs as one transaction block.)
        conn.execute("DISCARD ALL")
        self._configure(conn)

    def _ensure_open(self) -> None:
        if not self._opened:
            self._pool.open(wait=False)
            self._opened = True

    async def close(self) -> None:
        if self._opened:
            await anyio.to_thread.run_sync(self._pool.close)
            self._opened = False

    # -- planning ----------------------------------------------------------------------------------
    async def plan(self, *, tool: str, arguments: Mapping[str, JsonValue]) -> PlannedCall:
        if tool == "query_db":
            return self._plan_query(arguments)
        if tool == "list_tables":
            return PlannedCall(
                plan=Plan(effect="read", effects=("read",), command="LIST TABLES", summary="list tables"),
                private={"op": "list_tables"},
            )
        if tool == "describe_table":
            table = _qualify_table(arguments.get("table"), self.settings.schema_name)
            return PlannedCall(
                plan=Plan(
                    effect="read",
                    effects=("read",),
                    command="DESCRIBE",
                    relations_read=(table,),
                    summary=f"describe {table}",
                ),
                private={"op": "describe_table", "table": table},
            )
        raise InvalidInput(f"the postgres backend has no tool {tool!r}")

    def _plan_query(self, arguments: Mapping[str, JsonValue]) -> PlannedCall:
        text = arguments.get("sql")
        if not isinstance(text, str):
            raise InvalidInput("'sql' must be a string", details={"rule_id": "sql.invalid_type"})
        return plan_sql(
            text,
            schema=self.settings.schema_name,
            max_bytes=self.settings.max_sql_bytes,
            masked=self._masked,
            allow_masked_predicates=self._allow_predicates,
        )

    def render(
        self, planned: PlannedCall, *, mask: Callable[[str], str], for_confirmation: bool
    ) -> str | None:
        """The statement as people see it, with only literal values masked.

        For records: PostgreSQL's tokens, comments dropped (cheap). For a confirmation prompt:
        pglast's re-rendering of the parse tree, which also makes precedence explicit; ``None`` when
        pglast cannot draw it faithfully. ``None`` too for an operation without a statement.
        """
        statement = planned.plan.statement
        if planned.private.get("op") != "query" or statement is None:
            return None
        if not for_confirmation:
            return render_tokens(statement, mask)
        stmt = parse_statement(statement, max_bytes=self.settings.max_sql_bytes)
        return render_for_people(stmt, mask)

    async def estimate(self, planned: PlannedCall) -> PlannedCall:
        cls = planned.private.get("classification")
        if not isinstance(cls, SqlClassification) or cls.effect not in ("read", "write"):
            return planned
        if not cls.command.upper().startswith(_EXPLAINABLE) or "explain_analyze" in cls.flags:
            return planned
        estimate = await self._run(lambda: self._explain(planned.plan.statement or ""))
        plan = planned.plan.model_copy(update={"estimate": estimate})
        return PlannedCall(plan=plan, refusal=planned.refusal, private=planned.private)

    def _explain(self, statement: str) -> dict[str, JsonValue]:
        # Plain EXPLAIN never executes (it is allowed in a read-only transaction), but it checks
        # privileges, so a write is explained as the application role, not the read role.
        with self._txn(read_only=True, read_role=False) as conn:
            row = conn.cursor().execute(("EXPLAIN (FORMAT JSON) " + statement).encode(), binary=True)
            doc = row.fetchone()
            conn.execute("ROLLBACK")
        top = doc[0][0]["Plan"] if doc else {}
        node = top
        if node.get("Node Type") == "ModifyTable" and node.get("Plans"):
            node = node["Plans"][0]
        return {
            "rows": int(node.get("Plan Rows", 0)),
            "total_cost": float(top.get("Total Cost", 0.0)),
            "node": str(top.get("Node Type", "")),
        }

    # -- execution ---------------------------------------------------------------------------------
    async def execute(self, planned: PlannedCall) -> TableResult:
        op = planned.private.get("op")
        if op == "query":
            return await self._run(lambda: self._execute_query(planned))
        if op == "list_tables":
            return await self._run(self._list_tables)
        if op == "describe_table":
            return await self._run(lambda: self._describe(str(planned.private["table"])))
        raise InvalidInput("unknown operation")

    async def _run(self, fn: Callable[[], _T]) -> _T:
        self._ensure_open()
        try:
            return await anyio.to_thread.run_sync(fn)
        except PoolTimeout:
            self._replace_pool()
            raise BackendUnavailable(
                f"connection {self.name!r}: the database cannot be reached right now",
                hint="nothing was executed; retry later or ask an operator to check the database",
            ) from None
        except psycopg.errors.QueryCanceled:
            raise BackendRejected(
                f"the statement was cancelled after {self.settings.statement_timeout_ms} ms (statement_timeout)",
                hint="narrow the query (WHERE, LIMIT) or ask for a higher timeout",
                details={"sqlstate": "57014"},
            ) from None
        except psycopg.errors.LockNotAvailable:
            raise BackendRejected(
                f"a lock was not granted within {self.settings.lock_timeout_ms} ms (lock_timeout)",
                details={"sqlstate": "55P03"},
            ) from None
        except psycopg.OperationalError as exc:
            self._replace_pool()
            raise BackendUnavailable(
                f"connection {self.name!r} failed: {_first_line(exc)}",
                hint="if this was a write, its outcome is unknown: check before retrying",
            ) from None
        except psycopg.Error as exc:
            diag = exc.diag
            message = diag.message_primary or _first_line(exc)
            parts = [f"PostgreSQL rejected the statement: {message}"]
            # DETAIL is never passed on: it quotes whole rows ("Failing row contains (...)") and key
            # values, including masked columns that the detectors cannot recognise (names, salaries).
            if diag.message_hint:
                parts.append(f"hint: {diag.message_hint}")
            raise BackendRejected("; ".join(parts), details={"sqlstate": exc.sqlstate or ""}) from None

    def _txn(self, *, read_only: bool, read_role: bool = True, extra: sql.Composable | None = None) -> _Txn:
        return _Txn(self, read_only=read_only, read_role=read_role, extra=extra)

    def _execute_query(self, planned: PlannedCall) -> TableResult:
        cls = planned.private["classification"]
        if not isinstance(cls, SqlClassification):
            raise InvalidInput("the call was not classified")
        read_only = cls.effect in _READ_EFFECTS
        statement = (planned.plan.statement or "").encode("utf-8")
        s = self.settings
        precheck = self._derived_query(cls.relations_read) if self._masked else None
        txn = self._txn(read_only=read_only, extra=precheck)
        with txn as conn:
            if txn.extra_rows:
                self._check_derived(conn, txn.extra_rows)
            cur = conn.cursor()
            returns_rows = "returning" in cls.flags or cls.command.upper().startswith(
                ("SELECT", "VALUES", "TABLE", "SHOW", "EXPLAIN", "WITH")
            )
            rows: list[list[JsonValue]] = []
            total = 0
            size = 0
            truncated_reason: str | None = None
            described: list[tuple[str, str, int, int]] = []
            if returns_rows:
                stream = cast("Generator[Any, None, None]", cur.stream(statement, size=_STREAM_CHUNK))
                try:
                    for raw in stream:
                        if not described:
                            described = self._describe_result(cur)
                        total += 1
                        if truncated_reason is not None:
                            continue
                        row = [_to_json(v) for v in raw]
                        row_size = sum(_cell_size(c) for c in row)
                        if total > s.max_rows:
                            truncated_reason = "max_rows"
                        elif size + row_size > s.max_bytes:
                            truncated_reason = "max_bytes"
                        else:
                            rows.append(row)
                            size += row_size
                            continue
                        if read_only:
                            break  # closing the stream cancels the rest of the query
                except psycopg.ProgrammingError as exc:
                    if "didn't produce a result" not in str(exc):
                        raise
                finally:
                    stream.close()
                if not described and cur.description:
                    described = self._describe_result(cur)
                # psycopg's stream does not keep the command tag: rebuild it like PostgreSQL's.
                verb = cls.command.split()[0].upper() if cls.command else "SELECT"
                status = cur.statusmessage or (f"INSERT 0 {total}" if verb == "INSERT" else f"{verb} {total}")
            else:
                cur.execute(statement, binary=True)
                total = max(cur.rowcount, 0)
                status = cur.statusmessage or ""
            columns = self._end_and_resolve(conn, "ROLLBACK" if read_only else "COMMIT", described)
        if truncated_reason is not None and read_only:
            status = f"{cls.command} (stopped after {len(rows)} rows)"
        return TableResult(
            columns=columns,
            rows=rows,
            row_count=total if not (truncated_reason and read_only) else len(rows) + 1,
            truncated=truncated_reason is not None,
            truncated_reason=truncated_reason,
            command_status=status,
        )

    @staticmethod
    def _describe_result(cur: psycopg.Cursor[Any]) -> list[tuple[str, str, int, int]]:
        """Name, type and origin (table OID, attribute number) of each result column; no I/O."""
        desc = cur.description or []
        res = cur.pgresult
        out = []
        for i, d in enumerate(desc):
            info = cur.adapters.types.get(d.type_code)
            oid, att = (res.ftable(i), res.ftablecol(i)) if res is not None else (0, 0)
            out.append((d.name, info.name if info else str(d.type_code), int(oid), int(att)))
        return out

    @staticmethod
    def _end_and_resolve(
        conn: psycopg.Connection[Any], end: str, described: list[tuple[str, str, int, int]]
    ) -> tuple[ResultColumn, ...]:
        """End the transaction and map each column's origin to ``schema.table.column``.

        The origin (table OID + attribute number) comes from the protocol, so aliases, ``*`` and
        subqueries cannot change it. Both steps share one round trip.
        """
        oids = sorted({o for _, _, o, _ in described if o})
        lookup: dict[tuple[int, int], str] = {}
        if not oids:
            conn.execute(end)
        else:
            # Shaped to plan fast (catalog joins cost ~1 ms of planning; prepared plans are not
            # kept because every connection is DISCARDed between calls).
            batch = sql.SQL(
                "{end}; SELECT a.attrelid::int8, a.attnum::int4,"
                " (SELECT nspname FROM pg_catalog.pg_namespace WHERE oid = c.relnamespace), c.relname, a.attname"
                " FROM pg_catalog.pg_class c, pg_catalog.pg_attribute a"
                " WHERE c.oid = ANY(ARRAY[{oids}]::oid[]) AND a.attrelid = c.oid AND a.attnum > 0"
            ).format(end=sql.SQL(end), oids=sql.SQL(", ").join(sql.Literal(o) for o in oids))
            rows = _last_rows(conn.execute(batch))
            lookup = {(int(r[0]), int(r[1])): f"{r[2]}.{r[3]}.{r[4]}" for r in rows}
        return tuple(
            ResultColumn(name=name, type=tname, source=lookup.get((o, a)) if o else None)
            for name, tname, o, a in described
        )

    @staticmethod
    def _derived_query(relations: tuple[str, ...]) -> sql.Composable | None:
        """Which of ``relations`` are views, and which descend (partitions, inheritance) from what.

        Column metadata names the relation a value was read from: a view or a partition of a masked
        table would otherwise carry masked values under a name no column rule matches.
        """
        if not relations:
            return None
        return sql.SQL(
            "WITH RECURSIVE rels AS (SELECT to_regclass(x) AS oid FROM unnest(ARRAY[{rels}]::text[]) AS x),"
            " anc(child, parent) AS ("
            "  SELECT i.inhrelid, i.inhparent FROM pg_catalog.pg_inherits i JOIN rels r ON i.inhrelid = r.oid"
            "  UNION SELECT a.child, i.inhparent FROM anc a"
            "  JOIN pg_catalog.pg_inherits i ON i.inhrelid = a.parent)"
            " SELECT 'view', c.oid::int8, NULL::text, NULL::text FROM pg_catalog.pg_class c"
            "  JOIN rels r ON c.oid = r.oid WHERE c.relkind IN ('v', 'm')"
            " UNION ALL SELECT 'child', a.child::int8,"
            "  (SELECT nspname FROM pg_catalog.pg_namespace WHERE oid = cc.relnamespace) || '.' || cc.relname,"
            "  (SELECT nspname FROM pg_catalog.pg_namespace WHERE oid = pc.relnamespace) || '.' || pc.relname"
            "  FROM anc a JOIN pg_catalog.pg_class cc ON cc.oid = a.child"
            "  JOIN pg_catalog.pg_class pc ON pc.oid = a.parent"
        ).format(rels=sql.SQL(", ").join(sql.Literal(r) for r in relations))

    def _check_derived(self, conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
        for kind, _, child, ancestor in rows:
            if kind == "child" and ancestor in self._masked:
                raise BackendRejected(
                    f"{child} is a partition or child table of {ancestor}, which has masked columns; "
                    f"query {ancestor} instead",
                    details={"rule_id": "masking.inherited"},
                )
        views = [int(r[1]) for r in rows if r[0] == "view"]
        if views:
            self._check_views(conn, views)

    def _check_views(self, conn: psycopg.Connection[Any], views: list[int]) -> None:
        """Refuse reads of views that expose masked columns."""
        masked = [(rel, col) for rel, cols in self._masked.items() for col in cols]
        rows = conn.execute(
            "SELECT DISTINCT vc.oid::regclass::text, dep_n.nspname || '.' || dep_c.relname || '.' || a.attname"
            " FROM pg_catalog.pg_class vc"
            " JOIN pg_catalog.pg_rewrite r ON r.ev_class = vc.oid"
            " JOIN pg_catalog.pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass"
            " JOIN pg_catalog.pg_class dep_c ON dep_c.oid = d.refobjid"
            " JOIN pg_catalog.pg_namespace dep_n ON dep_n.oid = dep_c.relnamespace"
            " JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
            " WHERE vc.oid = ANY(%s::oid[])",
            (views,),
        ).fetchall()
        wanted = {f"{rel}.{col}" for rel, col in masked}
        for view, column in rows:
            if column in wanted:
                raise BackendRejected(
                    f"{view} is a view over the masked column {column}; query the base table instead",
                    details={"rule_id": "masking.view"},
                )

    def _list_tables(self) -> TableResult:
        with self._txn(read_only=True) as conn:
            rows = conn.execute(
                "SELECT n.nspname, c.relname,"
                " CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'"
                " WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' END,"
                " c.reltuples::int8, obj_description(c.oid, 'pg_class')"
                " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind IN ('r','p','v','m','f')"
                " AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_%%'"
                " ORDER BY 1, 2"
            ).fetchall()
            conn.execute("ROLLBACK")
        data: list[list[JsonValue]] = [
            [f"{r[0]}.{r[1]}", r[2], max(int(r[3]), 0) if r[3] is not None else None, r[4]] for r in rows
        ]
        cols = (
            ResultColumn("table", "text"),
            ResultColumn("kind", "text"),
            ResultColumn("estimated_rows", "int8"),
            ResultColumn("comment", "text"),
        )
        return TableResult(columns=cols, rows=data, row_count=len(data), command_status=f"LIST {len(data)}")

    def _describe(self, table: str) -> TableResult:
        with self._txn(read_only=True) as conn:
            rows = conn.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,"
                " pg_get_expr(d.adbin, d.adrelid), col_description(a.attrelid, a.attnum),"
                " EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = a.attrelid"
                "   AND i.indisprimary AND a.attnum = ANY(i.indkey))"
                " FROM pg_catalog.pg_attribute a"
                " LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
                " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"
                " ORDER BY a.attnum",
                (table,),
            ).fetchall()
            conn.execute("ROLLBACK")
        if not rows:
            raise BackendRejected(
                f"no table or view named {table}",
                hint="call list_tables to see what exists",
                details={"rule_id": "describe.not_found"},
            )
        data: list[list[JsonValue]] = [[r[0], r[1], bool(r[2]), r[3], r[4], bool(r[5])] for r in rows]
        cols = (
            ResultColumn("column", "text"),
            ResultColumn("type", "text"),
            ResultColumn("nullable", "bool"),
            ResultColumn("default", "text"),
            ResultColumn("comment", "text"),
            ResultColumn("primary_key", "bool"),
        )
        return TableResult(columns=cols, rows=data, row_count=len(data), command_status=f"DESCRIBE {table}")


class _Txn:
    """Check out a pooled connection and open a transaction with every per-call guard set."""

    def __init__(
        self, backend: PostgresBackend, *, read_only: bool, read_role: bool, extra: sql.Composable | None
    ) -> None:
        self._backend = backend
        self._read_only = read_only
        self._read_role = read_role
        self._extra = extra
        #: Rows of ``extra``, a query of ours sent in the same round trip as the guards.
        self.extra_rows: list[tuple[Any, ...]] = []
        self._cm: Any = None

    def __enter__(self) -> psycopg.Connection[Any]:
        s = self._backend.settings
        guards = sql.SQL(
            "BEGIN {mode}; SET LOCAL statement_timeout = {st}; SET LOCAL lock_timeout = {lt};"
            " SET LOCAL idle_in_transaction_session_timeout = {it}; SET LOCAL search_path = {sp}"
        ).format(
            mode=sql.SQL("READ ONLY" if self._read_only else "READ WRITE"),
            st=sql.Literal(s.statement_timeout_ms),
            lt=sql.Literal(s.lock_timeout_ms),
            it=sql.Literal(s.idle_in_transaction_timeout_ms),
            sp=sql.Identifier(s.schema_name),
        )
        if self._read_only and self._read_role and s.read_role:
            guards = sql.SQL("{}; SET LOCAL ROLE {}").format(guards, sql.Identifier(s.read_role))
        if self._extra is not None:
            guards = sql.SQL("{}; {}").format(guards, self._extra)
        # The guards are the first thing sent on a pooled connection, so they double as its health
        # check: a connection that died while idle (the database restarted) fails here, before
        # anything of the call has run, and the call moves to a fresh connection once.
        for attempt in (1, 2):
            self._cm = self._backend._pool.connection()
            conn: psycopg.Connection[Any] = self._cm.__enter__()
            try:
                cur = conn.execute(guards)
                if self._extra is not None:
                    self.extra_rows = _last_rows(cur)
                return conn
            except psycopg.OperationalError:
                dead = conn.broken or conn.closed
                self._cm.__exit__(None, None, None)
                if attempt == 2 or not dead:
                    raise
            except BaseException:
                self._cm.__exit__(None, None, None)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        # On return, the pool rolls back any transaction still open and runs ``_reset``.
        self._cm.__exit__(et, ev, tb)


def _last_rows(cur: psycopg.Cursor[Any]) -> list[tuple[Any, ...]]:
    """Rows of the last result of a multi-statement (simple protocol) batch of our own."""
    rows: list[tuple[Any, ...]] = []
    while True:
        if cur.description is not None:
            rows = cur.fetchall()
        if not cur.nextset():
            return rows


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _summary(cls: SqlClassification) -> str:
    parts = [f"{cls.command} ({cls.effect})"]
    if cls.relations_written:
        parts.append("writes " + ", ".join(cls.relations_written))
    if cls.relations_read:
        parts.append("reads " + ", ".join(cls.relations_read))
    if cls.flags:
        parts.append("flags " + ", ".join(cls.flags))
    return "; ".join(parts)


def _qualify_table(value: object, schema: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 200 or "\x00" in value:
        raise InvalidInput("'table' must be a table name such as 'customers' or 'public.customers'")
    parts = value.strip().split(".")
    ok = all(p and p.replace("_", "a").replace("$", "a").isalnum() for p in parts)
    if not ok or len(parts) > 2:
        raise InvalidInput(f"{value!r} is not a valid table name (use schema.table or table)")
    parts = [p.lower() for p in parts]
    return ".".join(parts) if len(parts) == 2 else f"{schema}.{parts[0]}"
