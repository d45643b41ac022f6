"""Audit log benchmark: durable appends/s and verification records/s.

Run: ``python tools/bench/bench_audit.py [--appends N] [--verify N] [--dir PATH]``

* Durable appends use the real store (WAL, ``synchronous=FULL``: every commit fsyncs the WAL).
  "sequential" is one task awaiting each append (one transaction + fsync per record);
  "concurrent" is many tasks appending at once, which the store group-commits. Every append
  returns only after the commit that holds its record. Targets: >= 2,000 appends/s.
* Verification: the store's ``verify()`` (hashes stored canonical bytes) and
  ``verify_records`` over parsed models (re-encodes each event). Target: >= 100,000 records/s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio

from hoop_mcp.core.audit import verify_records
from hoop_mcp.core.models import AuditEvent, Decision, Outcome, OutcomeStatus, Plan, Principal, Verdict
from hoop_mcp.stores.sqlite import SqliteAuditLog

PRINCIPAL = Principal(
    subject="u-1", issuer="https://idp.example.com", email="alice@example.com", groups=("dev",)
)
PLAN = Plan(
    effect="read",
    effects=("read",),
    command="SELECT",
    relations_read=("public.users",),
    statement="SELECT id, email FROM users WHERE id = $1",
    estimate={"rows": 1, "cost": 8.3},
)


def make_event(i: int) -> AuditEvent:
    """A realistic outcome record (~1 KB of canonical JSON)."""
    return AuditEvent(
        kind="outcome",
        call_id=f"call-{i:08d}",
        session_id=f"session-{i // 50:06d}",
        time=datetime.now(UTC),
        principal=PRINCIPAL,
        tool="pg_query",
        connection="shop",
        arguments={"sql": "SELECT id, email FROM users WHERE id = 42", "limit": 100},
        arguments_digest="9f" * 32,
        plan=PLAN,
        decision=Decision(
            verdict=Verdict.ALLOW, rule_id="reads-ok", reason="reads are allowed", matched=("reads-ok",)
        ),
        outcome=Outcome(status=OutcomeStatus.OK, row_count=1, redactions={"email": 1}),
        duration_ms=3.2,
    )


async def bench_sequential(path: Path, n: int) -> float:
    log = await SqliteAuditLog.open(path)
    events = [make_event(i) for i in range(n)]
    start = time.perf_counter()
    for event in events:
        await log.append(event)
    elapsed = time.perf_counter() - start
    await log.close()
    return n / elapsed


async def bench_concurrent(path: Path, n: int, tasks: int) -> float:
    log = await SqliteAuditLog.open(path)
    events = [make_event(i) for i in range(n)]
    per_task = n // tasks

    async def worker(offset: int) -> None:
        for event in events[offset : offset + per_task]:
            await log.append(event)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for t in range(tasks):
            tg.start_soon(worker, t * per_task)
    elapsed = time.perf_counter() - start
    await log.close()
    return per_task * tasks / elapsed


async def bench_verify(path: Path, n: int) -> tuple[float, float, float]:
    log = await SqliteAuditLog.open(path)
    batch = [make_event(i) for i in range(1000)]
    done = 0
    while done < n:  # fill quickly with many concurrent appends (group commit)
        async with anyio.create_task_group() as tg:
            for event in batch[: min(1000, n - done)]:
                tg.start_soon(log.append, event)
        done += min(1000, n - done)
    stored = 0.0
    for _ in range(3):  # best of three: the machine may be shared
        start = time.perf_counter()
        report = await log.verify()
        stored = max(stored, n / (time.perf_counter() - start))
    assert report.ok, report
    assert report.count == n, report
    records = await log.records()
    start = time.perf_counter()
    model_report = verify_records(records)
    models = n / (time.perf_counter() - start)
    assert model_report.ok, model_report
    start = time.perf_counter()
    deep_report = await log.verify(deep=True)
    deep = n / (time.perf_counter() - start)
    assert deep_report.ok, deep_report
    await log.close()
    return stored, models, deep


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=3000)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--verify", type=int, default=100_000)
    parser.add_argument(
        "--dir", type=Path, default=None, help="directory for the database (default: a temp dir)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        print(f"database directory: {root} (cpus: {os.cpu_count()})")
        seq = await bench_sequential(root / "seq.db", args.appends)
        print(f"durable appends, sequential (1 task, 1 fsync per record): {seq:10,.0f} /s")
        con = await bench_concurrent(root / "con.db", args.appends * 4, args.tasks)
        print(f"durable appends, {args.tasks} concurrent tasks (group commit):  {con:10,.0f} /s")
        stored, models, deep = await bench_verify(root / "verify.db", args.verify)
        print(f"verify, store (stored canonical bytes + head + columns):  {stored:10,.0f} records/s")
        print(f"verify_records over in-memory models (re-encode each):    {models:10,.0f} records/s")
        print(f"verify, store deep (parse every record + re-encode):      {deep:10,.0f} records/s")


if __name__ == "__main__":
    anyio.run(main)
