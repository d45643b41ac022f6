"""An in-memory :class:`~hoop_mcp.core.approvals.ApprovalStore` for unit tests of the core.

Same contract as the SQLite store (atomic ``update``, raw arguments dropped once terminal, grant
use counting); no persistence. Tests of the CLI and the server use the real store.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

import anyio
from pydantic import JsonValue

from hoop_mcp.core.approvals import (
    TERMINAL_STATES,
    Approval,
    ApprovalConflict,
    ApprovalNotFound,
    ApprovalState,
    ApprovalStoreUnavailable,
)


class FakeApprovalStore:
    def __init__(self) -> None:
        self.approvals: dict[str, Approval] = {}
        self.arguments: dict[str, dict[str, JsonValue]] = {}
        self.grant_use_log: dict[str, list[str]] = {}
        self.revoked: dict[str, tuple[str, str]] = {}
        #: Set to make every method raise ApprovalStoreUnavailable.
        self.broken = False
        self._lock = anyio.Lock()
        self._changed: dict[str, anyio.Event] = {}

    def _check(self) -> None:
        if self.broken:
            raise ApprovalStoreUnavailable("the fake store is broken on purpose")

    async def create(self, approval: Approval, *, arguments: Mapping[str, JsonValue]) -> None:
        self._check()
        async with self._lock:
            if approval.approval_id in self.approvals:
                raise ApprovalConflict(f"approval {approval.approval_id} exists")
            self.approvals[approval.approval_id] = approval
            self.arguments[approval.approval_id] = dict(arguments)

    async def get(self, approval_id: str) -> Approval | None:
        self._check()
        return self.approvals.get(approval_id)

    async def raw_arguments(self, approval_id: str) -> dict[str, JsonValue] | None:
        self._check()
        return self.arguments.get(approval_id)

    async def find_live(self, binding: str) -> list[Approval]:
        self._check()
        found = [
            a
            for a in self.approvals.values()
            if a.request.binding == binding and a.state not in TERMINAL_STATES
        ]
        return sorted(found, key=lambda a: a.request.created_at)

    async def list(
        self, *, states: Collection[ApprovalState] | None = None, limit: int = 100
    ) -> list[Approval]:
        self._check()
        found = [a for a in self.approvals.values() if states is None or a.state in states]
        return sorted(found, key=lambda a: a.request.created_at, reverse=True)[:limit]

    async def update(
        self, approval_id: str, change: Callable[[Approval], Approval]
    ) -> tuple[Approval, Approval]:
        self._check()
        async with self._lock:
            before = self.approvals.get(approval_id)
            if before is None:
                raise ApprovalNotFound(f"no approval {approval_id!r}")
            after = change(before)
            self.approvals[approval_id] = after
            if after.state in TERMINAL_STATES:
                self.arguments.pop(approval_id, None)
        event = self._changed.pop(approval_id, None)
        if event is not None:
            event.set()
        return before, after

    async def wait(self, approval_id: str, *, up_to_s: float) -> None:
        self._check()
        event = self._changed.setdefault(approval_id, anyio.Event())
        with anyio.move_on_after(up_to_s):
            await event.wait()

    async def use_grant(self, grant_id: str, *, max_uses: int, call_id: str) -> int:
        self._check()
        async with self._lock:
            if grant_id in self.revoked:
                raise ApprovalConflict(f"grant {grant_id} is revoked")
            uses = self.grant_use_log.setdefault(grant_id, [])
            if len(uses) >= max_uses:
                raise ApprovalConflict(f"grant {grant_id} is used up ({max_uses} use(s))")
            uses.append(call_id)
            return len(uses)

    async def revoke_grant(self, grant_id: str, *, by: str, reason: str) -> None:
        self._check()
        async with self._lock:
            self.revoked.setdefault(grant_id, (by, reason))

    async def grant_uses(self, grant_id: str) -> tuple[int, bool]:
        self._check()
        return len(self.grant_use_log.get(grant_id, [])), grant_id in self.revoked

    async def close(self) -> None:
        pass
