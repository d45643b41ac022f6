"""The pipeline records hostile arguments instead of failing on them (fakes only at seams we own)."""

from __future__ import annotations

import pytest

from hoop_mcp.core.masking import Masker
from hoop_mcp.core.masking_config import MaskingPolicy
from hoop_mcp.core.models import AuditEvent, Principal
from hoop_mcp.core.pipeline import MAX_RECORDED_DEPTH, Pipeline
from hoop_mcp.core.policy import Policy

pytestmark = pytest.mark.anyio


class _Identity:
    async def current_principal(self) -> Principal:
        return Principal(subject="agent", issuer="test")


class _Log:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def append(self, event: AuditEvent) -> None:
        self.events.append(event)


def _pipeline(log: _Log) -> Pipeline:
    return Pipeline(
        identity=_Identity(),
        policy=Policy(version=1, rules=()),
        masker=Masker(MaskingPolicy(), hash_key=b"test-key"),
        audit=log,  # type: ignore[arg-type]
        backends={},
        scrub=["s3cr3t-password"],
    )


async def test_deeply_nested_arguments_are_recorded_not_a_crash() -> None:
    log = _Log()
    nested: dict[str, object] = {"leaf": "ada@example.com"}
    for _ in range(5000):
        nested = {"n": nested}
    await _pipeline(log).record_rejected_request(
        tool="query_db",
        arguments={"sql": nested},
        session_id="s",
        reason="wrong type",  # type: ignore[dict-item]
    )
    assert [e.kind for e in log.events] == ["intent", "outcome"]
    assert "nested too deeply" in str(log.events[0].arguments)
    assert log.events[0].arguments_digest.startswith("sha256-bounded:")
    depth, value = 0, log.events[0].arguments["sql"]
    while isinstance(value, dict):
        depth, value = depth + 1, value["n"]
    assert depth == MAX_RECORDED_DEPTH


async def test_recorded_arguments_are_scrubbed_and_masked_keys_included() -> None:
    log = _Log()
    await _pipeline(log).record_rejected_request(
        tool="query_db",
        arguments={"sql": "pw s3cr3t-password", "ada@example.com": ["x\ud800y"]},
        session_id="s",
        reason="extra argument",
    )
    recorded = str(log.events[0].arguments)
    assert "s3cr3t-password" not in recorded
    assert "ada@example.com" not in recorded
    assert "[REDACTED:EMAIL]" in recorded
    assert "\\ud800" in recorded
