"""Approval wake-up benchmark: how soon a waiting agent learns of a decision made in another process.

Run: ``python tools/bench/bench_approvals.py [--iterations N] [--idle SECONDS] [--dir PATH]``

* A child process plays the approver (the CLI or the approval page's server): it opens the same
  SQLite file and approves through ``SqliteApprovalStore.update`` (one ``BEGIN IMMEDIATE``
  transaction, fsynced), 100-300 ms after the waiter started waiting.
* This process plays the agent: ``ApprovalService.wait`` until the approval leaves ``pending``.
* Latency is wall-clock time from the approver's ``update`` call (so it includes the commit) to the
  waiter returning with the approved approval; also shown from the end of the commit.
  Target: median <= 100 ms.
* Store reads: every query the waiter's store made while waiting. A wait costs a fixed three (read,
  one version check once the wake-up socket listens, read after waking), whatever its length;
  an idle wait with no decision shows the rate over time (polling every 250 ms would be >= 4/s).
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from functools import partial
from pathlib import Path

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from hoop_mcp.core.approvals import (
    AgentSettings,
    Approval,
    ApprovalRequest,
    ApprovalService,
    ApprovalState,
    Vote,
    apply_vote,
    plan_digest,
)
from hoop_mcp.core.models import Plan, Principal, ReviewSettings, utcnow
from hoop_mcp.stores.sqlite import SqliteAuditLog
from hoop_mcp.stores.sqlite_approvals import SqliteApprovalStore

REQUESTER = Principal(subject="agent-ci", issuer="https://idp.example.com", groups=("dev",))
APPROVER = Principal(subject="bob", issuer="https://idp.example.com", groups=("dba",))
AGENTS = AgentSettings(subjects=("agent-*",))
PLAN = Plan(
    effect="write",
    effects=("write",),
    command="UPDATE",
    relations_written=("shop.orders",),
    statement="UPDATE shop.orders SET status = $1 WHERE id = $2",
    estimate={"rows": 1, "total_cost": 8.3},
)
REVIEW = ReviewSettings(approver_groups=("dba",), ttl_seconds=3600)
SKEW = timedelta(seconds=30)


def make_approval(i: int) -> Approval:
    now = utcnow()
    request = ApprovalRequest(
        approval_id=f"apr_bench_{i:05d}_{os.getpid()}",
        call_id=f"call-{i}",
        session_id="bench",
        requester=REQUESTER,
        tool="query_db",
        connection="shop",
        arguments={"sql": "UPDATE shop.orders SET status = ? WHERE id = ?"},
        arguments_digest=f"sha256:{i:064x}",
        plan=PLAN,
        plan_digest=plan_digest(PLAN),
        estimate_rows=1,
        rule_id="writes-need-review",
        rule_reason="writes to production need a second person",
        review=REVIEW,
        binding=f"binding-{i}",
        created_at=now,
        expires_at=now + timedelta(seconds=REVIEW.ttl_seconds),
    )
    return Approval(request=request)


# ------------------------------------------------------------------------------------ approver


async def approver(db: str) -> None:
    """Child process: for each ``<approval id> <delay>`` line, wait, approve, print the times."""
    store = await SqliteApprovalStore.open(db)
    try:
        while line := await anyio.to_thread.run_sync(sys.stdin.readline):
            approval_id, delay = line.split()
            await anyio.sleep(float(delay))
            submitted = time.time()
            now = utcnow()
            vote = Vote(approver=APPROVER, approve=True, reason="bench", channel="cli", at=now)
            await store.update(approval_id, partial(apply_vote, vote=vote, agents=AGENTS, now=now, skew=SKEW))
            print(f"{submitted} {time.time()}", flush=True)
    finally:
        await store.close()


# --------------------------------------------------------------------------------------- agent


def percentile(samples: list[float], q: int) -> float:
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


async def decide_elsewhere(proc: Process, approval_id: str) -> None:
    """Ask the approver process to approve in 100-300 ms (the waiter is waiting by then)."""
    assert proc.stdin is not None
    delay = random.uniform(0.1, 0.3)
    await proc.stdin.send(f"{approval_id} {delay:.3f}\n".encode())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of waiting with no decision")
    parser.add_argument("--dir", type=Path, default=None, help="directory for the database (default: temp)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        await approver(args.child)
        return

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        db = Path(tmp) / "approvals.db"
        audit = await SqliteAuditLog.open(db)
        store = await SqliteApprovalStore.open(db)
        service = ApprovalService(store=store, audit=audit, agents=AGENTS)
        hub = store.wake_hub
        mode = (
            "polling (no usable socket directory)"
            if hub.polling
            else f"unix datagram sockets in {hub.listen_dir}"
        )
        print(
            f"approval wake-ups: {args.iterations} decisions made in another process "
            f"(cpus: {os.cpu_count()}, SQLite {sqlite3.sqlite_version})"
        )
        print(f"wake-up mode: {mode}")
        proc = await anyio.open_process([sys.executable, __file__, "--child", str(db)])
        assert proc.stdout is not None
        lines = BufferedByteReceiveStream(proc.stdout)
        from_decision: list[float] = []
        from_commit: list[float] = []
        reads = 0
        waited = 0.0
        try:
            for i in range(args.iterations):
                approval = make_approval(i)
                await store.create(
                    approval, arguments={"sql": "UPDATE shop.orders SET status = 'x' WHERE id = 1"}
                )
                await decide_elsewhere(proc, approval.approval_id)
                before = store.reads
                start = time.perf_counter()
                with anyio.fail_after(30):
                    result = await service.wait(approval.approval_id, up_to_s=20)
                woke = time.time()
                waited += time.perf_counter() - start
                reads += store.reads - before
                if result.state is not ApprovalState.APPROVED:
                    raise SystemExit(f"iteration {i}: the waiter returned {result.state.value}, not approved")
                with anyio.fail_after(30):
                    submitted, committed = map(float, (await lines.receive_until(b"\n", 200)).split())
                from_decision.append((woke - submitted) * 1000)
                from_commit.append((woke - committed) * 1000)
            idle = make_approval(args.iterations)
            await store.create(idle, arguments={})
            before = store.reads
            start = time.perf_counter()
            await service.wait(idle.approval_id, up_to_s=args.idle)
            idle_s = time.perf_counter() - start
            idle_reads = store.reads - before
        finally:
            assert proc.stdin is not None
            await proc.stdin.aclose()
            with anyio.fail_after(30):
                await proc.wait()
            await store.close()
            await audit.close()

    def line(label: str, samples: list[float]) -> str:
        return (
            f"{label}: median {statistics.median(samples):6.1f} ms   p95 {percentile(samples, 95):6.1f} ms   "
            f"max {max(samples):6.1f} ms"
        )

    print(line("decision -> waiter awake", from_decision) + "   (target: median <= 100 ms)")
    print(line("commit   -> waiter awake", from_commit))
    n = args.iterations
    print(
        f"store reads by the waiter: {reads / n:.1f} per wait, {reads} in {waited:.1f} s of waiting "
        f"= {reads / waited:.1f}/s (fixed per wait: read, version check, read after waking)"
    )
    print(
        f"idle wait with no decision: {idle_reads} store reads in {idle_s:.1f} s = {idle_reads / idle_s:.1f}/s "
        "(polling every 250 ms would be >= 4/s)"
    )


if __name__ == "__main__":
    anyio.run(main)
