"""The approval stage: what happens to a call whose verdict is ``confirm``.

Today the only stage is user confirmation through the client (form elicitation): it proves that
whoever runs the client said yes, not that a second person approved. Four-eyes approvals will be
another implementation of :class:`ApprovalStage`.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Protocol

from hoop_mcp.core.models import Confirmation

if TYPE_CHECKING:
    from hoop_mcp.core.pipeline import Prepared


class ApprovalStage(Protocol):
    async def decide(self, prepared: Prepared) -> Confirmation:
        """Return the confirmation for a prepared call. Must fail closed (``accepted=False``)."""
        ...


class AnsweredConfirmation:
    """A confirmation the transport already obtained (the MCP layer asks before the tool body runs)."""

    def __init__(self, confirmation: Confirmation) -> None:
        self._confirmation = confirmation

    async def decide(self, prepared: Prepared) -> Confirmation:
        return self._confirmation


class NoConfirmationChannel:
    """Used when the client cannot be asked: every ``confirm`` verdict is refused."""

    async def decide(self, prepared: Prepared) -> Confirmation:
        return Confirmation(accepted=False, action="unsupported")


def visible(text: str) -> str:
    """``text`` with every character that could hide or fake content shown as an escape.

    Line breaks (a statement could forge a "Writes:" line), other control characters, bidi
    overrides and zero-width characters (which reorder or hide text on screen) become ``\\u{XXXX}``.
    """
    if text.isascii() and text.isprintable():
        return text
    return "".join(
        ch if ch == " " or unicodedata.category(ch) not in _HIDING_CATEGORIES else f"\\u{{{ord(ch):04X}}}"
        for ch in text
    )


_HIDING_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp", "Zs"})


def confirmation_prompt(prepared: Prepared) -> str:
    """The exact text shown to the user. A pure function of the (masked) plan: no times, no ids."""
    plan = prepared.plan_masked
    decision = prepared.decision
    if plan is None:
        return f"hoop-mcp: confirm this {prepared.tool} call (rule {decision.rule_id}): no plan available."
    lines = [
        f"hoop-mcp: confirm this {prepared.tool} call on connection '{prepared.connection}'.",
        f"Rule: {decision.rule_id} - {decision.reason}",
        f"Effect: {plan.effect} ({plan.command})",
    ]
    if plan.refs:
        lines.append("Writes refs: " + ", ".join(plan.refs))
    if plan.objects:
        more = f" and {len(plan.objects) - 20} more" if len(plan.objects) > 20 else ""
        lines.append("Objects: " + ", ".join(plan.objects[:20]) + more)
    if plan.relations_written:
        lines.append("Writes: " + ", ".join(plan.relations_written))
    if plan.relations_read:
        lines.append("Reads: " + ", ".join(plan.relations_read))
    est = plan.estimate or {}
    if "rows" in est:
        lines.append(f"Estimate (EXPLAIN): about {est.get('rows')} row(s), cost {est.get('total_cost')}")
    elif not plan.refs and not plan.objects:
        lines.append("Estimate: not available")
    if plan.flags:
        lines.append("Flags: " + ", ".join(plan.flags))
    if plan.objects:
        # One line per plan line, indented: no line of it can pass for one of the headers above.
        lines.append("Plan (the server's dry run; Secret values masked):")
        lines.extend("  " + line for line in (plan.statement or "").split("\n"))
    else:
        if plan.refs:
            lines.append("Push plan (computed by the server; values masked):")
        else:
            lines.append("Statement (as PostgreSQL parsed it; comments dropped, values masked):")
        lines.append(plan.statement or "")
    lines.append("Principal: " + (prepared.principal.label if prepared.principal else "unknown"))
    return "\n".join(visible(line) for line in lines)
