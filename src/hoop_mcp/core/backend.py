"""What the pipeline needs from a backend (PostgreSQL now; Kubernetes and Git later)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import JsonValue

from hoop_mcp.core.models import Decision, Plan


@dataclass(frozen=True, slots=True)
class ResultColumn:
    name: str
    #: Database type name, e.g. ``text`` or ``int4``.
    type: str
    #: ``schema.table.column`` the protocol says the column comes from; ``None`` when computed.
    source: str | None = None


@dataclass(frozen=True, slots=True)
class TableResult:
    """Rows as JSON values. Hot path: a plain dataclass, not a validated model."""

    columns: tuple[ResultColumn, ...]
    rows: list[list[JsonValue]]
    #: Rows the statement produced or affected (may exceed ``len(rows)`` when truncated).
    row_count: int
    truncated: bool = False
    #: Why rows were cut: ``max_rows`` or ``max_bytes``.
    truncated_reason: str | None = None
    #: The server's command tag, e.g. ``SELECT 5`` or ``UPDATE 1``.
    command_status: str = ""


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """A backend's reading of one call: the plan policy sees, plus backend-private state."""

    plan: Plan
    #: A refusal the backend itself makes before policy (e.g. a masked column used as an oracle).
    refusal: Decision | None = None
    private: Mapping[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """One configured connection. Sync libraries run in threads inside these methods."""

    name: str
    kind: str

    async def plan(self, *, tool: str, arguments: Mapping[str, JsonValue]) -> PlannedCall:
        """Parse and classify. Raises ``InvalidInput`` for bad input. Never executes anything."""
        ...

    def render(
        self, planned: PlannedCall, *, mask: Callable[[str], str], for_confirmation: bool
    ) -> str | None:
        """What people are shown of the call (records; with ``for_confirmation``, the prompt):
        faithful, with only values masked.

        ``None`` when the call has nothing to render (the arguments are shown instead) or the
        backend cannot render it faithfully.
        """
        ...

    async def estimate(self, planned: PlannedCall) -> PlannedCall:
        """Add a backend estimate (EXPLAIN, dry run) for confirmation and approval prompts."""
        ...

    async def execute(self, planned: PlannedCall) -> TableResult:
        """Run exactly what was planned. Raises ``BackendError`` subclasses or returns rows."""
        ...

    async def close(self) -> None: ...
