"""The SQLite approval store: atomic, serialized across connections and processes, failing closed,
and waking waiters in other processes without polling."""

from __future__ import annotations

import inspect
import logging
import os
import socket
import sqlite3
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from hoop_mcp.core.approvals import (
    Approval,
    ApprovalConflict,
    ApprovalNotFound,
    ApprovalState,
    ApprovalStore,
    ApprovalStoreUnavailable,
    apply_vote,
    consume,
)
from hoop_mcp.core.errors import ApprovalError
from hoop_mcp.core.models import Principal
from hoop_mcp.stores import wakeup
from hoop_mcp.stores.sqlite import SqliteAuditLog
from hoop_mcp.stores.sqlite_approvals import SqliteApprovalStore
from tests.core.test_approvals import AGENTS, ALICE, ARGUMENTS, BOB, CAROL, SKEW, T0, vote
from tests.core.test_approvals import make_approval as _make_approval


def make_approval(**options: Any) -> Approval:
    """An approval with a binding of its own (the store keeps one live approval per binding)."""
    options.setdefault("binding", "binding-" + str(options.get("approval_id", "apr_test")))
    return _make_approval(**options)


pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteApprovalStore]:
    opened = await SqliteApprovalStore.open(tmp_path / "hoop.db")
    yield opened
    await opened.close()


def approve_by(who: Principal = BOB, *, reason: str = "checked") -> Callable[[Approval], Approval]:
    v = vote(who, reason=reason)
    return lambda a: apply_vote(a, v, agents=AGENTS, now=T0, skew=SKEW)


def deny_by(who: Principal = CAROL) -> Callable[[Approval], Approval]:
    v = vote(who, approve=False, reason="no")
    return lambda a: apply_vote(a, v, agents=AGENTS, now=T0, skew=SKEW)


def raw_column(path: Path, approval_id: str) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT raw_arguments FROM approvals WHERE approval_id = ?", (approval_id,)
        ).fetchone()[0]
    finally:
        conn.close()


# -------------------------------------------------------------------------------- the protocol


async def test_the_store_has_every_approval_store_method_with_the_same_signature() -> None:
    names = [n for n in dir(ApprovalStore) if not n.startswith("_")]
    assert set(names) >= {"create", "update", "wait", "use_grant", "close"}
    for name in names:
        ours = inspect.signature(getattr(SqliteApprovalStore, name))
        theirs = inspect.signature(getattr(ApprovalStore, name))
        assert inspect.iscoroutinefunction(getattr(SqliteApprovalStore, name)), name
        assert list(ours.parameters) == list(theirs.parameters), name
        for param in theirs.parameters.values():
            assert ours.parameters[param.name].kind == param.kind, (name, param.name)
            assert ours.parameters[param.name].default == param.default, (name, param.name)


# ----------------------------------------------------------------------------------- read back


async def test_a_created_approval_reads_back_equal_with_its_raw_arguments(store: SqliteApprovalStore) -> None:
    approval = make_approval(approval_id="apr_1")
    await store.create(approval, arguments=ARGUMENTS)
    assert await store.get("apr_1") == approval
    assert await store.raw_arguments("apr_1") == ARGUMENTS
    assert await store.get("apr_unknown") is None
    assert await store.raw_arguments("apr_unknown") is None


async def test_creating_the_same_approval_twice_is_a_conflict(store: SqliteApprovalStore) -> None:
    await store.create(make_approval(approval_id="apr_1"), arguments={})
    with pytest.raises(ApprovalConflict, match="already exists"):
        await store.create(make_approval(approval_id="apr_1"), arguments={})


async def test_find_live_returns_the_live_approval_of_a_binding_and_not_ended_ones(
    store: SqliteApprovalStore,
) -> None:
    await store.create(make_approval(approval_id="apr_0", binding="b1"), arguments={})
    await store.update("apr_0", deny_by())  # denied: not live, and the binding is free again
    await store.create(
        make_approval(approval_id="apr_1", binding="b1", created=T0 + timedelta(seconds=5)), arguments={}
    )
    await store.create(make_approval(approval_id="apr_other", binding="b2"), arguments={})
    await store.update("apr_1", approve_by())  # approved: still live
    live = await store.find_live("b1")
    assert [(a.approval_id, a.state) for a in live] == [("apr_1", ApprovalState.APPROVED)]
    assert await store.find_live("b3") == []


async def test_a_second_live_approval_for_the_same_binding_is_refused(store: SqliteApprovalStore) -> None:
    await store.create(make_approval(approval_id="apr_1", binding="b1"), arguments={})
    with pytest.raises(ApprovalConflict, match="live approval for this exact call") as info:
        await store.create(make_approval(approval_id="apr_2", binding="b1"), arguments={})
    assert info.value.details.get("binding_taken") is True
    assert await store.get("apr_2") is None


async def test_list_returns_approvals_newest_first_filtered_by_state_and_limited(
    store: SqliteApprovalStore,
) -> None:
    for i in range(5):
        await store.create(
            make_approval(approval_id=f"apr_{i}", created=T0 + timedelta(seconds=i)), arguments={}
        )
    await store.update("apr_1", deny_by())
    await store.update("apr_3", approve_by())
    assert [a.approval_id for a in await store.list()] == ["apr_4", "apr_3", "apr_2", "apr_1", "apr_0"]
    assert [a.approval_id for a in await store.list(limit=2)] == ["apr_4", "apr_3"]
    pending = await store.list(states=[ApprovalState.PENDING])
    assert [a.approval_id for a in pending] == ["apr_4", "apr_2", "apr_0"]
    decided = await store.list(states={ApprovalState.APPROVED, ApprovalState.DENIED})
    assert [a.approval_id for a in decided] == ["apr_3", "apr_1"]
    assert await store.list(states=[]) == []


# -------------------------------------------------------------------------------------- update


async def test_update_writes_the_change_and_returns_before_and_after(store: SqliteApprovalStore) -> None:
    approval = make_approval(approval_id="apr_1")
    await store.create(approval, arguments=ARGUMENTS)
    before, after = await store.update("apr_1", approve_by())
    assert before == approval
    assert (after.state, after.version, after.approvers) == (ApprovalState.APPROVED, 1, (BOB,))
    assert await store.get("apr_1") == after
    assert await store.raw_arguments("apr_1") == ARGUMENTS  # approved is still live


async def test_updating_an_unknown_approval_is_not_found(store: SqliteApprovalStore) -> None:
    with pytest.raises(ApprovalNotFound):
        await store.update("apr_nope", approve_by())


async def test_a_change_that_raises_writes_nothing_and_its_exception_propagates_unchanged(
    store: SqliteApprovalStore,
) -> None:
    await store.create(make_approval(approval_id="apr_1"), arguments=ARGUMENTS)
    error = ApprovalConflict("not now", details={"x": 1})

    def change(approval: Approval) -> Approval:
        raise error

    with pytest.raises(ApprovalConflict) as info:
        await store.update("apr_1", change)
    assert info.value is error
    with pytest.raises(ZeroDivisionError):
        await store.update("apr_1", lambda a: a.model_copy(update={"version": 1 // 0}))
    assert await store.get("apr_1") == make_approval(approval_id="apr_1")
    # The writer is usable afterwards (the transaction was rolled back).
    _, after = await store.update("apr_1", approve_by())
    assert after.version == 1


async def test_a_change_that_returns_the_approval_unchanged_writes_nothing(
    store: SqliteApprovalStore, tmp_path: Path
) -> None:
    approval = make_approval(approval_id="apr_1")
    await store.create(approval, arguments=ARGUMENTS)
    mtime = os.stat(tmp_path / "hoop.db-wal").st_mtime_ns
    before, after = await store.update("apr_1", lambda a: a.model_copy())
    assert before == after == approval
    assert os.stat(tmp_path / "hoop.db-wal").st_mtime_ns == mtime


async def test_a_change_that_does_not_raise_the_version_is_refused(store: SqliteApprovalStore) -> None:
    await store.create(make_approval(approval_id="apr_1"), arguments={})
    with pytest.raises(ApprovalError, match="must raise its version"):
        await store.update("apr_1", lambda a: a.model_copy(update={"state": ApprovalState.APPROVED}))
    with pytest.raises(ApprovalError, match="may not alter its request"):
        await store.update(
            "apr_1",
            lambda a: a.model_copy(
                update={"request": make_approval(approval_id="apr_1", requester=BOB).request, "version": 1}
            ),
        )
    assert (await store.get("apr_1")) == make_approval(approval_id="apr_1")


async def outcome(
    results: dict[str, tuple[Approval, Approval] | ApprovalError],
    name: str,
    update: Awaitable[tuple[Approval, Approval]],
) -> None:
    try:
        results[name] = await update
    except ApprovalError as exc:
        results[name] = exc


async def test_concurrent_approve_and_deny_through_two_connections_have_exactly_one_winner(
    tmp_path: Path,
) -> None:
    one = await SqliteApprovalStore.open(tmp_path / "hoop.db")
    two = await SqliteApprovalStore.open(tmp_path / "hoop.db")
    try:
        for round_ in range(20):
            approval_id = f"apr_{round_}"
            await one.create(make_approval(approval_id=approval_id), arguments=ARGUMENTS)
            results: dict[str, tuple[Approval, Approval] | ApprovalError] = {}

            async with anyio.create_task_group() as tg:
                tg.start_soon(outcome, results, "approve", one.update(approval_id, approve_by()))
                tg.start_soon(outcome, results, "deny", two.update(approval_id, deny_by()))
            winners = {k: v for k, v in results.items() if isinstance(v, tuple)}
            losers = {k: v for k, v in results.items() if isinstance(v, ApprovalError)}
            assert len(winners) == 1, results
            ((_, loss),) = losers.items()
            assert isinstance(loss, ApprovalConflict), loss
            ((winner_name, (before, after)),) = winners.items()
            assert before.state is ApprovalState.PENDING
            expected = ApprovalState.APPROVED if winner_name == "approve" else ApprovalState.DENIED
            assert after.state is expected
            # The loser saw the winner's result, not the pending approval.
            assert after.state.value in loss.message
            stored = await two.get(approval_id)
            assert stored == after
            assert len(stored.votes) == 1
    finally:
        await one.close()
        await two.close()


async def test_raw_arguments_are_gone_once_the_approval_is_terminal(
    store: SqliteApprovalStore, tmp_path: Path
) -> None:
    for approval_id in ("apr_denied", "apr_executed"):
        await store.create(make_approval(approval_id=approval_id), arguments=ARGUMENTS)
    await store.update("apr_denied", deny_by())
    assert await store.raw_arguments("apr_denied") is None
    assert raw_column(tmp_path / "hoop.db", "apr_denied") is None

    await store.update("apr_executed", approve_by())
    assert raw_column(tmp_path / "hoop.db", "apr_executed") is not None
    await store.update("apr_executed", lambda a: consume(a, call_id="c2", now=T0, skew=SKEW))
    assert await store.raw_arguments("apr_executed") is None
    assert raw_column(tmp_path / "hoop.db", "apr_executed") is None
    executed = await store.get("apr_executed")
    assert executed is not None
    assert executed.state is ApprovalState.EXECUTED


async def test_approvals_survive_closing_and_reopening_the_store(tmp_path: Path) -> None:
    first = await SqliteApprovalStore.open(tmp_path / "hoop.db")
    await first.create(make_approval(approval_id="apr_1"), arguments=ARGUMENTS)
    _, approved = await first.update("apr_1", approve_by())
    await first.use_grant("g1", max_uses=5, call_id="c1")
    await first.close()
    second = await SqliteApprovalStore.open(tmp_path / "hoop.db")
    try:
        assert await second.get("apr_1") == approved
        assert await second.raw_arguments("apr_1") == ARGUMENTS
        assert await second.grant_uses("g1") == (1, False)
    finally:
        await second.close()


async def test_the_store_shares_one_file_with_the_audit_log(tmp_path: Path) -> None:
    path = tmp_path / "hoop.db"
    audit = await SqliteAuditLog.open(path)
    store = await SqliteApprovalStore.open(path)
    try:
        await store.create(make_approval(approval_id="apr_1"), arguments=ARGUMENTS)
        assert (await audit.verify()).ok
        assert await store.get("apr_1") is not None
    finally:
        await store.close()
        await audit.close()
    tables = {
        r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    assert {"audit_records", "approvals", "grant_uses", "grant_revocations", "approval_meta"} <= tables


async def test_the_database_and_its_wake_up_directory_are_owner_only(
    store: SqliteApprovalStore, tmp_path: Path
) -> None:
    await store.create(make_approval(approval_id="apr_1"), arguments=ARGUMENTS)
    for name in ("hoop.db", "hoop.db-wal", "hoop.db-shm"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
    listen = store.wake_hub.listen_dir
    assert listen == tmp_path / "hoop.db.wake"
    assert stat.S_IMODE(os.stat(listen).st_mode) == 0o700


async def test_an_existing_database_readable_by_others_is_restricted_on_open(tmp_path: Path) -> None:
    path = tmp_path / "hoop.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    path.chmod(0o644)
    opened = await SqliteApprovalStore.open(path)
    await opened.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# --------------------------------------------------------------------------------- unavailable


async def test_a_directory_where_the_database_should_be_makes_the_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "hoop.db").mkdir()
    with pytest.raises(ApprovalStoreUnavailable) as info:
        await SqliteApprovalStore.open(tmp_path / "hoop.db")
    assert str(tmp_path / "hoop.db") in info.value.message
    assert not isinstance(info.value.__cause__, ApprovalStoreUnavailable)


async def test_a_file_that_is_not_a_database_makes_the_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "hoop.db").write_bytes(b"this is not a database, just text " * 100)
    with pytest.raises(ApprovalStoreUnavailable, match=r"hoop\.db"):
        await SqliteApprovalStore.open(tmp_path / "hoop.db")


async def test_a_missing_directory_makes_the_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ApprovalStoreUnavailable, match="cannot open"):
        await SqliteApprovalStore.open(tmp_path / "missing" / "hoop.db")


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    opened = await SqliteApprovalStore.open(tmp_path / "hoop.db")
    await opened.close()
    conn = sqlite3.connect(tmp_path / "hoop.db", isolation_level=None)
    conn.execute("UPDATE approval_meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(ApprovalStoreUnavailable, match="schema version 99") as info:
        await SqliteApprovalStore.open(tmp_path / "hoop.db")
    assert info.value.hint == "upgrade hoop-mcp"


async def test_a_closed_store_is_unavailable_for_every_method(tmp_path: Path) -> None:
    closed = await SqliteApprovalStore.open(tmp_path / "hoop.db")
    await closed.create(make_approval(approval_id="apr_1"), arguments={})
    await closed.close()
    await closed.close()  # idempotent
    calls = [
        closed.create(make_approval(approval_id="apr_2"), arguments={}),
        closed.get("apr_1"),
        closed.raw_arguments("apr_1"),
        closed.find_live("b"),
        closed.list(),
        closed.update("apr_1", approve_by()),
        closed.wait("apr_1", up_to_s=5),
        closed.use_grant("g", max_uses=1, call_id="c"),
        closed.revoke_grant("g", by="x", reason="y"),
        closed.grant_uses("g"),
    ]
    for call in calls:
        with pytest.raises(ApprovalStoreUnavailable, match="is closed"):
            await call


async def test_a_locked_database_makes_a_write_unavailable_not_a_raw_sqlite_error(tmp_path: Path) -> None:
    opened = await SqliteApprovalStore.open(tmp_path / "hoop.db", busy_timeout=0.05)
    await opened.create(make_approval(approval_id="apr_1"), arguments={})
    blocker = sqlite3.connect(tmp_path / "hoop.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(ApprovalStoreUnavailable, match="locked") as info:
            await opened.update("apr_1", approve_by())
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    _, after = await opened.update("apr_1", approve_by())
    assert after.state is ApprovalState.APPROVED
    await opened.close()


async def test_an_unreadable_row_makes_the_store_unavailable(
    store: SqliteApprovalStore, tmp_path: Path
) -> None:
    await store.create(make_approval(approval_id="apr_1"), arguments={})
    conn = sqlite3.connect(tmp_path / "hoop.db", isolation_level=None)
    conn.execute("UPDATE approvals SET body = CAST('{\"nope\": 1}' AS BLOB)")
    conn.close()
    with pytest.raises(ApprovalStoreUnavailable, match=r"apr_1 .* is unreadable"):
        await store.get("apr_1")


# -------------------------------------------------------------------------------------- grants


async def test_grant_uses_are_exact_under_concurrency(tmp_path: Path) -> None:
    stores = [await SqliteApprovalStore.open(tmp_path / "hoop.db") for _ in range(4)]
    uses: list[int] = []
    refused: list[ApprovalConflict] = []

    async def use(s: SqliteApprovalStore, i: int) -> None:
        try:
            uses.append(await s.use_grant("grant-1", max_uses=3, call_id=f"call-{i}"))
        except ApprovalConflict as exc:
            refused.append(exc)

    try:
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(use, stores[i % 4], i)
        assert sorted(uses) == [1, 2, 3]
        assert len(refused) == 17
        assert all("used up" in e.message for e in refused)
        assert await stores[0].grant_uses("grant-1") == (3, False)
        assert await stores[0].grant_uses("grant-2") == (0, False)
    finally:
        for s in stores:
            await s.close()


async def test_a_revoked_grant_is_refused(store: SqliteApprovalStore) -> None:
    assert await store.use_grant("grant-1", max_uses=10, call_id="c1") == 1
    await store.revoke_grant("grant-1", by="carol@example.com", reason="token leaked")
    await store.revoke_grant("grant-1", by="dave@example.com", reason="again")
    with pytest.raises(
        ApprovalConflict, match=r"grant grant-1 was revoked by carol@example.com: token leaked"
    ):
        await store.use_grant("grant-1", max_uses=10, call_id="c2")
    assert await store.grant_uses("grant-1") == (1, True)


# -------------------------------------------------------------------------------------- waking

CHILD = """
import sys, time
from datetime import timedelta
import anyio
from hoop_mcp.core.approvals import AgentSettings, Vote, apply_vote
from hoop_mcp.core.models import Principal, utcnow
from hoop_mcp.stores.sqlite_approvals import SqliteApprovalStore

async def main(path, approval_id):
    store = await SqliteApprovalStore.open(path)
    bob = Principal(subject="bob", issuer="https://idp.example.com", groups=("dba",))
    now = utcnow()
    vote = Vote(approver=bob, approve=True, reason="approved from another process", channel="cli", at=now)
    await store.update(
        approval_id, lambda a: apply_vote(a, vote, agents=AgentSettings(), now=now, skew=timedelta(days=3650))
    )
    print(time.time(), flush=True)
    await store.close()

anyio.run(main, sys.argv[1], sys.argv[2])
"""


async def decide_in_child(path: Path, approval_id: str) -> float:
    """Approve in a child process; returns the wall-clock time right after its commit."""
    proc = await anyio.run_process([sys.executable, "-c", CHILD, str(path), approval_id], check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return float(proc.stdout.decode().split()[-1])


async def wait_and_decide_elsewhere(store: SqliteApprovalStore, path: Path) -> tuple[float, float]:
    """A waiter here, a decision in a child process: (child commit time, wake-up time)."""
    await store.create(make_approval(approval_id="apr_1"), arguments=ARGUMENTS)
    woke: list[float] = []
    decided: list[float] = []

    async def waiter() -> None:
        assert (await store.get("apr_1") or make_approval()).state is ApprovalState.PENDING
        await store.wait("apr_1", up_to_s=600)
        woke.append(time.time())

    async def decider() -> None:
        decided.append(await decide_in_child(path, "apr_1"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(decider)
    approved = await store.get("apr_1")
    assert approved is not None
    assert approved.state is ApprovalState.APPROVED
    return decided[0], woke[0]


async def test_a_waiter_is_woken_by_a_decision_made_in_another_process(
    store: SqliteApprovalStore, tmp_path: Path
) -> None:
    assert not store.wake_hub.polling
    with anyio.fail_after(60):
        decided, woke = await wait_and_decide_elsewhere(store, tmp_path / "hoop.db")
    assert woke - decided < 1.0  # a socket wake-up: polling would take up to a second more


async def test_a_waiter_with_nothing_happening_returns_after_up_to_s(store: SqliteApprovalStore) -> None:
    await store.create(make_approval(approval_id="apr_1"), arguments={})
    await store.get("apr_1")
    reads = store.reads
    with anyio.fail_after(5):
        start = anyio.current_time()
        await store.wait("apr_1", up_to_s=0.5)
        elapsed = anyio.current_time() - start
    assert 0.49 <= elapsed < 2
    assert store.reads - reads == 1  # one version check once listening; no polling


async def test_a_waiter_in_the_same_process_is_woken_by_the_update_of_its_approval_only(
    store: SqliteApprovalStore,
) -> None:
    await store.create(make_approval(approval_id="apr_1"), arguments={})
    await store.create(make_approval(approval_id="apr_2"), arguments={})
    woken: list[tuple[str, ApprovalState]] = []
    first_woken = anyio.Event()

    async def waiter(approval_id: str) -> None:
        await store.get(approval_id)
        await store.wait(approval_id, up_to_s=600)
        after = await store.get(approval_id)
        assert after is not None
        woken.append((approval_id, after.state))
        first_woken.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, "apr_1")
            tg.start_soon(waiter, "apr_2")
            await anyio.wait_all_tasks_blocked()
            await store.update("apr_1", approve_by())
            await first_woken.wait()
            await store.update("apr_2", deny_by())
    # The second waiter slept through the first decision: it woke to its own.
    assert woken == [("apr_1", ApprovalState.APPROVED), ("apr_2", ApprovalState.DENIED)]


async def test_a_decision_committed_just_before_the_wait_starts_is_not_missed(tmp_path: Path) -> None:
    waiting = await SqliteApprovalStore.open(tmp_path / "hoop.db")
    deciding = await SqliteApprovalStore.open(tmp_path / "hoop.db")
    try:
        await waiting.create(make_approval(approval_id="apr_1"), arguments={})
        seen = await waiting.get("apr_1")
        assert seen is not None
        async with anyio.create_task_group() as tg:  # another task: it does not share what we read
            tg.start_soon(deciding.update, "apr_1", approve_by())  # nobody is listening yet
        with anyio.fail_after(5):
            await waiting.wait("apr_1", up_to_s=600)
    finally:
        await waiting.close()
        await deciding.close()


async def test_another_store_on_the_same_file_wakes_the_waiter_through_its_socket(tmp_path: Path) -> None:
    waiting = await SqliteApprovalStore.open(tmp_path / "hoop.db")
    deciding = await SqliteApprovalStore.open(tmp_path / "hoop.db")
    try:
        await waiting.create(make_approval(approval_id="apr_1"), arguments={})
        await waiting.get("apr_1")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: waiting.wait("apr_1", up_to_s=600))
                await anyio.wait_all_tasks_blocked()
                await deciding.update("apr_1", approve_by())
    finally:
        await waiting.close()
        await deciding.close()


async def test_closing_the_store_releases_its_waiters(tmp_path: Path) -> None:
    opened = await SqliteApprovalStore.open(tmp_path / "hoop.db")
    await opened.create(make_approval(approval_id="apr_1"), arguments={})
    await opened.get("apr_1")
    errors: list[Exception] = []

    async def waiter() -> None:
        try:
            await opened.wait("apr_1", up_to_s=600)
        except ApprovalStoreUnavailable as exc:
            errors.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            await opened.close()
    assert len(errors) == 1


async def test_a_long_database_path_listens_in_a_short_private_directory(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 4)
    deep.mkdir(parents=True)
    path = deep / "hoop.db"
    waiting = await SqliteApprovalStore.open(path)
    deciding = await SqliteApprovalStore.open(path)
    listen = waiting.wake_hub.listen_dir
    try:
        assert listen is not None
        assert listen != path.with_name("hoop.db.wake")
        assert len(os.fsencode(listen)) < 80
        assert stat.S_IMODE(os.stat(listen).st_mode) == 0o700
        assert os.stat(listen).st_uid == os.getuid()
        await waiting.create(make_approval(approval_id="apr_1"), arguments={})
        await waiting.get("apr_1")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: waiting.wait("apr_1", up_to_s=600))
                await anyio.wait_all_tasks_blocked()
                await deciding.update("apr_1", approve_by())
    finally:
        await waiting.close()
        await deciding.close()
    assert listen is not None
    assert not listen.exists()  # removed on close: nothing accumulates under /tmp


async def test_a_socket_directory_removed_by_another_store_closing_is_made_again(tmp_path: Path) -> None:
    waiting = await SqliteApprovalStore.open(tmp_path / "hoop.db")
    deciding = await SqliteApprovalStore.open(tmp_path / "hoop.db")
    other = await SqliteApprovalStore.open(tmp_path / "hoop.db")
    await other.close()  # nobody was waiting: it removes the shared directory
    listen = waiting.wake_hub.listen_dir
    assert listen is not None
    assert not listen.exists()
    try:
        await waiting.create(make_approval(approval_id="apr_1"), arguments={})
        await waiting.get("apr_1")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: waiting.wait("apr_1", up_to_s=600))
                await anyio.wait_all_tasks_blocked()
                await deciding.update("apr_1", approve_by())
        assert listen.is_dir()
    finally:
        await waiting.close()
        await deciding.close()


async def test_stale_socket_files_are_removed_when_waiters_are_woken(store: SqliteApprovalStore) -> None:
    listen = store.wake_hub.listen_dir
    assert listen is not None
    stale = listen / "w-0123456789abcdef.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(stale))
    sock.close()  # the process died without removing it
    unrelated = listen / "notes.txt"
    unrelated.write_text("not a socket of ours")
    await store.create(make_approval(approval_id="apr_1"), arguments={})
    await store.update("apr_1", approve_by())
    assert not stale.exists()
    assert unrelated.exists()


async def test_without_a_usable_socket_directory_waiters_poll_once_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(wakeup, "MAX_SOCKET_PATH", 10)  # no directory is short enough
    with caplog.at_level(logging.WARNING, logger="hoop_mcp.stores.wakeup"):
        polling = await SqliteApprovalStore.open(tmp_path / "hoop.db")
        again = await SqliteApprovalStore.open(tmp_path / "hoop.db")
        await again.close()
    try:
        assert polling.wake_hub.polling
        warnings = [r for r in caplog.records if "poll every 1 s" in r.getMessage()]
        assert len(warnings) == 1  # logged once
        reads = polling.reads
        with anyio.fail_after(60):
            start = anyio.current_time()
            await wait_and_decide_elsewhere(polling, tmp_path / "hoop.db")
            elapsed = anyio.current_time() - start
        # One baseline read, then one read per second at most (plus the reads of the test itself).
        assert polling.reads - reads <= 3 + elapsed / wakeup.POLL_INTERVAL_S
    finally:
        await polling.close()


async def test_a_bad_store_in_waiting_is_reported_as_unavailable_not_as_a_timeout(
    store: SqliteApprovalStore, tmp_path: Path
) -> None:
    await store.create(make_approval(approval_id="apr_1"), arguments={})
    await store.get("apr_1")
    conn = sqlite3.connect(tmp_path / "hoop.db", isolation_level=None)
    conn.execute("DROP TABLE approvals")
    conn.close()
    with anyio.fail_after(5), pytest.raises(ApprovalStoreUnavailable, match=r"hoop\.db"):
        await store.wait("apr_1", up_to_s=600)


async def test_the_requester_never_appears_as_an_approver_in_stored_approvals(
    store: SqliteApprovalStore,
) -> None:
    await store.create(make_approval(approval_id="apr_1"), arguments={})
    with pytest.raises(ApprovalError):
        await store.update("apr_1", approve_by(ALICE))
    stored = await store.get("apr_1")
    assert stored is not None
    assert stored.votes == ()
