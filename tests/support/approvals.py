"""Approval test helpers: pending approvals made through the real ApprovalService and store.

``review_call(...)`` builds a call held for review as the pipeline hands it over; ``open_store(path)``
opens the real SQLite approval store; :class:`BreakableStore` wraps a store and fails every call with
``ApprovalStoreUnavailable`` while ``broken`` is set; :class:`ManualClock` is a service clock tests move.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from hoop_mcp.core.approvals import (
    ApprovalStore,
    ApprovalStoreUnavailable,
    ReviewCall,
)
from hoop_mcp.core.models import Decision, Plan, Principal, ReviewSettings, Verdict, utcnow
from hoop_mcp.stores.sqlite_approvals import SqliteApprovalStore


class BreakableStore:
    """Delegates to ``inner``; while ``broken`` is set every call raises ApprovalStoreUnavailable."""

    def __init__(self, inner: ApprovalStore) -> None:
        self.inner = inner
        self.broken = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.broken and name != "close":
                raise ApprovalStoreUnavailable("the approval store is unavailable (test)")
            return await attribute(*args, **kwargs)

        return call


async def open_store(path: Path) -> ApprovalStore:
    """The real SQLite approval store at ``path`` (beside the audit log, as ``open_approvals`` puts it)."""
    return await SqliteApprovalStore.open(path)


class ManualClock:
    """A service clock tests move by hand."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def review_call(
    requester: Principal,
    *,
    statement: str = "UPDATE shop.orders SET status = 'cancelled' WHERE id = $1",
    rule_id: str = "writes-need-review",
    rule_reason: str = "writes to production need a second person",
    approver_groups: Sequence[str] = ("dba",),
    quorum: int = 1,
    ttl_seconds: int = 3600,
    tool: str = "query_db",
    connection: str = "shop",
) -> ReviewCall:
    """A call held for review as the pipeline would hand it over (a fresh call each time)."""
    arguments: dict[str, JsonValue] = {"sql": statement, "nonce": uuid.uuid4().hex}
    plan = Plan(
        effect="write",
        effects=("write",),
        command="UPDATE",
        relations_written=("shop.orders",),
        statement=statement,
        estimate={"rows": 1, "total_cost": 8.3},
    )
    review = ReviewSettings(approver_groups=tuple(approver_groups), quorum=quorum, ttl_seconds=ttl_seconds)
    return ReviewCall(
        call_id=uuid.uuid4().hex,
        session_id="session-" + uuid.uuid4().hex[:8],
        principal=requester,
        tool=tool,
        connection=connection,
        arguments=arguments,
        arguments_masked=arguments,
        arguments_digest="sha256:" + hashlib.sha256(repr(sorted(arguments.items())).encode()).hexdigest(),
        plan=plan,
        plan_masked=plan,
        decision=Decision(verdict=Verdict.REVIEW, rule_id=rule_id, reason=rule_reason, review=review),
    )
