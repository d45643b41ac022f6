"""Every statement of the SQL corpus, sent through the real server to a real PostgreSQL.

The classifier tests (tests/backends/test_sql_classify.py) prove what the parser *says* about each
statement. This module proves what the *gateway does* with it: the whole corpus
(tests/corpus/sql_corpus.yaml) goes through an in-memory MCP client to a server configured with the
``writes-need-confirmation`` preset and the shop masking rules, while the user declines every
confirmation. So nothing but allowed reads may execute, and around every call the database is
fingerprinted from outside (as the superuser) to prove that a refused statement had no effect.

One database and one server serve the whole corpus: the module fixture sends every entry once and
records what it observed; each test below then checks one property over all entries and names every
entry that breaks it.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
import yaml
from mcp import Client
from mcp import types as mt
from psycopg import sql as pgsql

from hoop_mcp.backends.sql_classify import normalize_sql
from hoop_mcp.demo_data import SENSITIVE_VALUES
from hoop_mcp.embedded_pg import EmbeddedPostgres
from tests.support.hoop import hoop_server, write_config
from tests.support.mcp_client import tool_text as _text
from tests.support.pg import APP_ROLE, ShopDb, iter_shop

pytestmark = pytest.mark.anyio

CORPUS_PATH = Path(__file__).resolve().parents[1] / "corpus" / "sql_corpus.yaml"
CORPUS: list[dict[str, Any]] = yaml.safe_load(CORPUS_PATH.read_text(encoding="utf-8"))

#: Flags the preset's ``allow-reads`` rule tolerates on a read (its ``flags_only`` list).
ALLOWED_READ_FLAGS = frozenset({"explain_analyze"})

#: Reads the preset allows but the masking rules refuse, because a masked column of
#: public.customers would escape its mask (used in an expression, or renamed inside a CTE).
#: SQL -> the rule that must be named.
EXPECTED_MASKING_REFUSALS: dict[str, str] = {
    "SELECT coalesce(phone, 'n/a'), nullif(name, '') FROM customers": "masking.expression",
    "SELECT lower(email), upper(name), length(name) FROM customers": "masking.expression",
    "SELECT split_part(email, '@', 2) AS domain, count(*) FROM customers GROUP BY domain": "masking.expression",
    "WITH customers AS (SELECT * FROM customers) SELECT * FROM customers": "masking.whole_row",
}

#: How a refusal names its reason: a policy or masking rule, an input rule, or the declined prompt.
REFUSAL_MARKERS = ("rule '", "Invalid input (", "did not confirm")

#: Server paths some corpus statements try to write (COPY ... TO, lo_export, a shell ``touch``).
_WRITTEN_PATH = re.compile(r"/tmp/[\w.\-]+")

#: Channels some corpus statements try to NOTIFY; the observer listens on them.
_NOTIFY_CHANNEL = re.compile(r"(?i)\bnotify\s+(\w+)|pg_notify\('(\w+)'")


def expects_success(entry: dict[str, Any]) -> bool:
    """The preset's ``allow-reads`` rule: a read whose flags are all on its allow-list."""
    return (
        "invalid" not in entry
        and entry["effect"] == "read"
        and set(entry["flags"]) <= ALLOWED_READ_FLAGS
        and entry["sql"] not in EXPECTED_MASKING_REFUSALS
    )


def label(index: int, entry: dict[str, Any]) -> str:
    return f"#{index:03d} [{entry['family']}] {entry['sql']!r}"


# --------------------------------------------------------------------------------------------------
# The observer: one superuser connection held for the whole run


@dataclass(frozen=True)
class PinnedShop(ShopDb):
    """:meth:`ShopDb.snapshot` over one held superuser connection instead of one per query.

    The fingerprint is the same; holding the connection makes ~600 snapshots take seconds, and the
    connection doubles as a canary (a statement that terminated other backends would kill it) and
    as a listener for notifications.
    """

    conn: psycopg.Connection[Any]

    def admin_query(self, query: str, params: tuple[object, ...] | None = None) -> list[tuple[object, ...]]:
        cur = self.conn.execute(query.encode(), params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []

    def side_effects(self) -> dict[str, object]:
        """What a statement can leave behind outside the tables: locks, sessions, server state."""
        return {
            "app_sessions_holding_locks": self.admin_query(
                "SELECT a.pid, a.state, l.locktype, l.mode FROM pg_stat_activity a"
                " JOIN pg_locks l ON l.pid = a.pid WHERE a.usename = %s ORDER BY 1, 3, 4",
                (APP_ROLE,),
            ),
            "app_sessions_in_transaction": self.admin_query(
                "SELECT pid, state FROM pg_stat_activity WHERE usename = %s AND state LIKE 'idle in%%'",
                (APP_ROLE,),
            ),
            "advisory_locks": self.admin_query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
            "prepared_transactions": self.admin_query("SELECT gid FROM pg_prepared_xacts ORDER BY 1"),
            "replication_slots": self.admin_query("SELECT slot_name FROM pg_replication_slots ORDER BY 1"),
            "large_objects": self.admin_query("SELECT oid FROM pg_largeobject_metadata ORDER BY 1"),
        }


def file_state(paths: list[Path]) -> dict[str, tuple[int, int] | None]:
    """Existence, size and mtime of each path (None when absent)."""
    state: dict[str, tuple[int, int] | None] = {}
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            state[str(path)] = None
        else:
            state[str(path)] = (st.st_size, st.st_mtime_ns)
    return state


def server_files(cluster: EmbeddedPostgres) -> dict[str, object]:
    """The data directory's top level (a relative COPY TO lands there) and ALTER SYSTEM's file."""
    datadir = cluster.datadir
    return {
        "datadir": sorted(p.name for p in datadir.iterdir()),
        "postgresql.auto.conf": (datadir / "postgresql.auto.conf").read_text(),
    }


# --------------------------------------------------------------------------------------------------
# The run


@dataclass
class Observation:
    index: int
    entry: dict[str, Any]
    is_error: bool
    text: str
    everything: str
    changes: dict[str, tuple[object, object]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return label(self.index, self.entry)


@dataclass
class CorpusRun:
    observations: list[Observation]
    prompts: list[str]
    notifications: list[str]
    canary_alive: bool
    still_serving: bool
    audit_ok: bool
    audit_problem: str | None
    #: call_id -> (kind, sql) of its records, in order
    audit_calls: dict[str, list[tuple[str, str | None]]]
    elapsed_s: float


def _diff(before: dict[str, object], after: dict[str, object]) -> dict[str, tuple[object, object]]:
    return {key: (before[key], after.get(key)) for key in before if before[key] != after.get(key)}


@pytest.fixture(scope="module")
def corpus_shop(pg_cluster: EmbeddedPostgres, app_password: str) -> Iterator[ShopDb]:
    """One seeded shop database for the whole corpus."""
    yield from iter_shop(pg_cluster, app_password)


@pytest.fixture(scope="module")
async def corpus_run(
    corpus_shop: ShopDb, pg_cluster: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> CorpusRun:
    setup = write_config(tmp_path_factory.mktemp("bypass-corpus"), corpus_shop)
    prompts: list[str] = []

    async def decline_everything(context: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
        prompts.append(params.message)
        return mt.ElicitResult(action="decline")

    written_paths = sorted({Path(p) for e in CORPUS for p in _WRITTEN_PATH.findall(e["sql"])})
    channels = sorted({c for e in CORPUS for m in _NOTIFY_CHANNEL.findall(e["sql"]) for c in m if c})
    observations: list[Observation] = []
    with psycopg.connect(corpus_shop.admin_conninfo, autocommit=True) as admin:
        shop = PinnedShop(
            cluster=corpus_shop.cluster,
            dbname=corpus_shop.dbname,
            app_password=corpus_shop.app_password,
            conn=admin,
        )
        notifications: list[str] = []
        admin.add_notify_handler(lambda n: notifications.append(f"{n.channel}: {n.payload}"))
        for channel in channels:
            admin.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
        backend_pid = admin.info.backend_pid

        def fingerprint() -> dict[str, object]:
            return {
                **shop.snapshot(),
                **shop.side_effects(),
                **server_files(pg_cluster),
                "written_files": file_state(written_paths),
            }

        started = anyio.current_time()
        async with (
            hoop_server(setup) as (hoop, runtime),
            Client(hoop.mcp, elicitation_callback=decline_everything) as client,
        ):
            for index, entry in enumerate(CORPUS):
                before = fingerprint()
                with anyio.fail_after(30):
                    result = await client.call_tool("query_db", {"connection": "shop", "sql": entry["sql"]})
                after = fingerprint()
                text = _text(result)
                observations.append(
                    Observation(
                        index=index,
                        entry=entry,
                        is_error=bool(result.is_error),
                        text=text,
                        everything=text + json.dumps(result.structured_content or {}),
                        changes=_diff(before, after),
                    )
                )
            final = await client.call_tool(
                "query_db", {"connection": "shop", "sql": "SELECT count(*) FROM orders"}
            )
            still_serving = not final.is_error and (final.structured_content or {}).get("rows") == [[6]]
            report = await runtime.audit.verify()
            audit_calls: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
            for record in await runtime.audit.records():
                sql = record.event.arguments.get("sql")
                audit_calls[record.event.call_id].append(
                    (record.event.kind, sql if isinstance(sql, str) else None)
                )
        elapsed = anyio.current_time() - started
        canary_alive = admin.execute("SELECT pg_backend_pid()").fetchone() == (backend_pid,)

    return CorpusRun(
        observations=observations,
        prompts=prompts,
        notifications=notifications,
        canary_alive=canary_alive,
        still_serving=still_serving,
        audit_ok=report.ok,
        audit_problem=report.problem,
        audit_calls=dict(audit_calls),
        elapsed_s=elapsed,
    )


def _report(problems: list[str]) -> str:
    return f"{len(problems)} corpus entr{'y' if len(problems) == 1 else 'ies'}:\n" + "\n".join(problems)


# --------------------------------------------------------------------------------------------------
# The corpus itself


def test_the_corpus_has_at_least_150_statements_including_honest_reads_and_invalid_input() -> None:
    assert len(CORPUS) >= 150
    assert sum(1 for e in CORPUS if expects_success(e)) >= 40
    assert sum(1 for e in CORPUS if "invalid" in e) >= 10
    assert set(EXPECTED_MASKING_REFUSALS) <= {e["sql"] for e in CORPUS}, "stale expected refusal"


# --------------------------------------------------------------------------------------------------
# Outcomes


async def test_every_honest_read_runs_and_returns_a_result(corpus_run: CorpusRun) -> None:
    problems = []
    db_rejected = []
    for obs in corpus_run.observations:
        if not expects_success(obs.entry) or not obs.is_error:
            continue
        if "PostgreSQL rejected" in obs.text:
            db_rejected.append(obs.name)
        else:
            problems.append(f"{obs.name}: refused: {obs.text[:300]}")
    allowed = sum(1 for o in corpus_run.observations if expects_success(o.entry))
    print(
        f"\nbypass corpus: {len(corpus_run.observations)} calls in {corpus_run.elapsed_s:.1f} s;"
        f" {allowed} allowed reads, of which {len(db_rejected)} rejected by PostgreSQL itself"
        + "".join(f"\n  {name}" for name in db_rejected)
    )
    assert not problems, _report(problems)


async def test_reads_that_would_carry_a_masked_column_out_of_its_mask_are_refused_by_a_masking_rule(
    corpus_run: CorpusRun,
) -> None:
    problems = []
    for obs in corpus_run.observations:
        rule = EXPECTED_MASKING_REFUSALS.get(obs.entry["sql"])
        if rule is not None and not (obs.is_error and f"Denied by rule '{rule}'" in obs.text):
            problems.append(f"{obs.name}: expected a refusal by {rule!r}, got: {obs.text[:300]}")
    assert not problems, _report(problems)


async def test_every_invalid_entry_is_refused_as_invalid_input_naming_its_rule(corpus_run: CorpusRun) -> None:
    problems = [
        f"{obs.name}: expected 'Invalid input ({obs.entry['invalid']})', got: {obs.text[:300]}"
        for obs in corpus_run.observations
        if "invalid" in obs.entry
        and not (obs.is_error and f"Invalid input ({obs.entry['invalid']})" in obs.text)
    ]
    assert not problems, _report(problems)


async def test_every_other_statement_is_refused_with_a_reason_that_names_a_rule(
    corpus_run: CorpusRun,
) -> None:
    problems = []
    for obs in corpus_run.observations:
        if expects_success(obs.entry):
            continue
        if not obs.is_error:
            problems.append(f"{obs.name}: was NOT refused: {obs.text[:300]}")
        elif not any(marker in obs.text for marker in REFUSAL_MARKERS):
            problems.append(f"{obs.name}: refusal names no rule: {obs.text[:300]}")
        elif "Nothing was executed" not in obs.text:
            problems.append(f"{obs.name}: refusal does not say nothing ran: {obs.text[:300]}")
    assert not problems, _report(problems)


async def test_only_writes_ask_for_confirmation_and_each_declined_prompt_refuses_its_call(
    corpus_run: CorpusRun,
) -> None:
    declined = [o for o in corpus_run.observations if "did not confirm" in o.text]
    not_writes = [o.name for o in declined if o.entry.get("effect") != "write"]
    assert not not_writes, _report(not_writes)
    assert len(corpus_run.prompts) == len(declined) > 0
    # The prompt shows the statement as PostgreSQL parsed it (pglast's rendering, comments dropped).
    writes_in_prompts = [
        o.name
        for o, p in zip(declined, corpus_run.prompts, strict=True)
        if normalize_sql(o.entry["sql"]) not in p
    ]
    assert not writes_in_prompts, _report(writes_in_prompts)


# --------------------------------------------------------------------------------------------------
# No effect


async def test_no_statement_changes_data_schema_roles_sequences_locks_large_objects_or_files(
    corpus_run: CorpusRun,
) -> None:
    problems = [
        f"{obs.name}: changed {key}: {before!r} -> {after!r}"
        for obs in corpus_run.observations
        for key, (before, after) in obs.changes.items()
    ]
    assert not problems, _report(problems)


async def test_no_statement_notifies_listeners_or_terminates_other_sessions(corpus_run: CorpusRun) -> None:
    assert corpus_run.notifications == []
    assert corpus_run.canary_alive
    assert corpus_run.still_serving


async def test_no_result_contains_a_seeded_sensitive_value(corpus_run: CorpusRun) -> None:
    problems = [
        f"{obs.name}: contains {value!r}"
        for obs in corpus_run.observations
        for value in SENSITIVE_VALUES
        if value in obs.everything
    ]
    assert not problems, _report(problems)


# --------------------------------------------------------------------------------------------------
# Audit


async def test_the_audit_log_of_the_whole_corpus_verifies_and_records_every_statement(
    corpus_run: CorpusRun,
) -> None:
    assert corpus_run.audit_ok, corpus_run.audit_problem
    audited = Counter(
        sql for records in corpus_run.audit_calls.values() for kind, sql in records if kind == "outcome"
    )
    missing = [label(i, e) for i, e in enumerate(CORPUS) if audited[e["sql"]] < 1]
    assert not missing, _report(missing)


async def test_every_call_leaves_exactly_one_intent_and_one_outcome_record(corpus_run: CorpusRun) -> None:
    calls = corpus_run.audit_calls
    malformed = [
        f"{cid}: {records}"
        for cid, records in calls.items()
        if [k for k, _ in records] != ["intent", "outcome"]
    ]
    assert not malformed, "\n".join(malformed)
    # The corpus, the final "still serving" read, and one record pair per confirmation prompt sent
    # (2026-07-28: the question goes out in a round of its own; the answer comes back as a new call).
    expected = len(CORPUS) + 1 + len(corpus_run.prompts)
    assert len(calls) == expected
    assert sum(len(r) for r in calls.values()) == 2 * expected
