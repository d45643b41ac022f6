"""A real MCP client (in memory) on a real hoop-mcp server, and the small helpers tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp import Client
from mcp import types as mt

from hoop_mcp.runtime import Runtime
from tests.support.hoop import HoopSetup, hoop_server


def tool_text(result: mt.CallToolResult) -> str:
    """Every text block of a tool result, joined."""
    return " ".join(getattr(c, "text", "") for c in result.content)


def tool_data(result: mt.CallToolResult) -> dict[str, Any]:
    """The structured result of a call that must have succeeded."""
    assert not result.is_error, tool_text(result)
    assert result.structured_content is not None
    return result.structured_content


@asynccontextmanager
async def connected(setup: HoopSetup, **kwargs: Any) -> AsyncIterator[tuple[Client, Runtime]]:
    """A client (``kwargs``: e.g. ``elicitation_callback``) on a server built from ``setup``."""
    async with hoop_server(setup) as (hoop, runtime), Client(hoop.mcp, **kwargs) as client:
        yield client, runtime


def confirming(prompts: list[str], *, comment: str = "ok") -> Any:
    """An elicitation callback that confirms every prompt and keeps its text."""

    async def cb(context: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
        prompts.append(params.message)
        return mt.ElicitResult(action="accept", content={"confirm": True, "comment": comment})

    return cb


async def declining(context: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
    """An elicitation callback that declines."""
    return mt.ElicitResult(action="decline")


def reviewer(decision: str, reason: str, prompts: list[str]) -> Any:
    """An approver's elicitation callback answering the review form."""

    async def cb(context: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
        prompts.append(params.message)
        return mt.ElicitResult(action="accept", content={"decision": decision, "reason": reason})

    return cb
