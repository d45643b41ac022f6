"""Four-eyes approvals end to end: an agent MCP client and an approver MCP client (each with its own
OIDC token from a real issuer), a real PostgreSQL, the real approval store and audit log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from hoop_mcp.core.approvals import ApprovalState
from hoop_mcp.core.errors import ConfigError
from hoop_mcp.runtime import Runtime, open_runtime
from tests.support.hoop import HoopSetup, write_config
from tests.support.mcp_client import connected as _client
from tests.support.mcp_client import reviewer
from tests.support.mcp_client import tool_data as _data
from tests.support.mcp_client import tool_text as _text
from tests.support.oidc import OidcIssuer
from tests.support.pg import ShopDb

pytestmark = pytest.mark.anyio

POLICY = """\
version: 1
rules:
  - id: reads
    description: Reads are allowed
    verdict: allow
    when: {effects: [read]}
  - id: writes-need-a-dba
    description: Writes on the shop need a DBA's approval
    verdict: review
    review: {approver_groups: [dba], ttl_seconds: 600}
    when: {effects: [write]}
"""

APPROVALS = """\
approvals:
  agents: {groups: [agents]}
  page_url: https://approvals.example.test
"""

DELETE = "DELETE FROM orders WHERE id = 104"


def _identity(issuer: OidcIssuer) -> str:
    return (
        "identity:\n"
        f"  oidc: {{issuer: '{issuer.issuer}', audience: {issuer.audience}}}\n"
        "  token: {env: HOOP_TOKEN}\n"
    )


def _setup(tmp_path: Path, shop: ShopDb, issuer: OidcIssuer, *, policy: str = POLICY) -> HoopSetup:
    return write_config(tmp_path, shop, identity=_identity(issuer), policy=policy, extra=APPROVALS)


def _as(setup: HoopSetup, token: str) -> HoopSetup:
    return HoopSetup(
        config_path=setup.config_path, environ={**setup.environ, "HOOP_TOKEN": token}, workdir=setup.workdir
    )


def _order_exists(shop: ShopDb, order_id: int = 104) -> bool:
    return bool(shop.admin_query("SELECT 1 FROM orders WHERE id = %s", (order_id,)))


async def _records(runtime: Runtime) -> list[Any]:
    return [r.event for r in await runtime.audit.records()]


async def test_a_call_needing_review_returns_pending_at_once_and_nothing_runs(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    setup = _as(_setup(tmp_path, shop, oidc_issuer), oidc_issuer.mint(sub="agent-7", groups=["agents"]))
    async with _client(setup) as (agent, runtime):
        with anyio.fail_after(30):
            result = await agent.call_tool("query_db", {"connection": "shop", "sql": DELETE})
        events = await _records(runtime)
    data = _data(result)
    pending = data["pending_approval"]
    assert data["outcome"] == "pending_approval"
    assert data["rows"] == []
    assert pending["status"] == "pending"
    assert pending["rule_id"] == "writes-need-a-dba"
    assert pending["approval_url"] == f"https://approvals.example.test/approvals/{pending['approval_id']}"
    assert "DELETE FROM orders" in pending["reviewing"]
    assert "approval_wait" in pending["next_step"]
    assert "approval_execute" in pending["next_step"]
    assert _order_exists(shop)
    steps = [e.approval.event for e in events if e.kind == "approval" and e.approval]
    assert steps == ["requested"]
    outcome = next(e for e in events if e.kind == "outcome" and e.tool == "query_db")
    assert outcome.outcome is not None
    assert outcome.outcome.status.value == "pending"


async def test_an_approver_reviews_in_their_own_mcp_client_and_the_agent_runs_exactly_that_call_once(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    base = _setup(tmp_path, shop, oidc_issuer)
    agent_setup = _as(base, oidc_issuer.mint(sub="agent-7", groups=["agents"]))
    approver_setup = _as(base, oidc_issuer.mint(sub="alice", groups=["dba"]))
    prompts: list[str] = []
    async with (
        _client(agent_setup) as (agent, runtime),
        _client(approver_setup, elicitation_callback=reviewer("approve", "ticket OPS-12", prompts)) as (
            alice,
            _,
        ),
    ):
        with anyio.fail_after(60):
            pending = _data(await agent.call_tool("query_db", {"connection": "shop", "sql": DELETE}))
            approval_id = pending["pending_approval"]["approval_id"]

            listed = _data(await alice.call_tool("approvals_pending", {}))
            assert [a["approval_id"] for a in listed["approvals"]] == [approval_id]
            decided = _data(await alice.call_tool("approval_review", {"approval_id": approval_id}))
            assert decided["status"] == "approved"

            waited = _data(
                await agent.call_tool("approval_wait", {"approval_id": approval_id, "timeout_seconds": 5})
            )
            assert waited["status"] == "approved"
            assert waited["decided_by"] == ["alice"]
            assert _order_exists(shop)  # approved is not executed

            executed = _data(await agent.call_tool("approval_execute", {"approval_id": approval_id}))
            assert executed["query_db"]["status"] == "DELETE 1"
            assert not _order_exists(shop)

            again = await agent.call_tool("approval_execute", {"approval_id": approval_id})
            assert again.is_error
            assert "executed" in _text(again)
        events = await _records(runtime)
    executes = [e for e in events if e.tool == "approval_execute" and e.kind == "outcome"]
    assert [e.outcome.status.value for e in executes if e.outcome] == ["ok", "denied"]  # each call once
    # The approver saw the requester, the statement as parsed, the rule and the estimate.
    assert "agent-7" in prompts[0]
    assert "DELETE FROM orders WHERE id = 104" in prompts[0]
    assert "writes-need-a-dba" in prompts[0]
    assert "Estimate" in prompts[0]
    steps = [(e.approval.event, e.approval.channel) for e in events if e.kind == "approval" and e.approval]
    assert steps == [("requested", None), ("approved", "mcp")]
    approved = next(
        e for e in events if e.kind == "approval" and e.approval and e.approval.event == "approved"
    )
    assert approved.principal is not None
    assert approved.principal.subject == "alice"
    assert approved.approval is not None
    assert approved.approval.reason == "ticket OPS-12"
    ran = [e for e in events if e.tool == "query_db" and e.kind == "intent" and e.approval is not None]
    assert [e.approval.event for e in ran if e.approval] == ["requested", "executed"]
    executed_evidence = ran[-1].approval
    assert executed_evidence is not None
    assert [p.subject for p in executed_evidence.approvers] == ["alice"]
    assert executed_evidence.approval_id == approval_id


async def test_agent_principals_never_see_the_approver_tools_and_cannot_call_them(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    base = _setup(tmp_path, shop, oidc_issuer)
    # An agent whose token also carries the approver group is still an agent.
    agent_setup = _as(base, oidc_issuer.mint(sub="agent-7", groups=["agents", "dba"]))
    approver_setup = _as(base, oidc_issuer.mint(sub="alice", groups=["dba"]))
    async with _client(agent_setup) as (agent, runtime), _client(approver_setup) as (alice, _):
        with anyio.fail_after(30):
            agent_tools = {t.name for t in (await agent.list_tools()).tools}
            alice_tools = {t.name for t in (await alice.list_tools()).tools}
            pending = _data(await agent.call_tool("query_db", {"connection": "shop", "sql": DELETE}))
            refused = await agent.call_tool(
                "approval_review", {"approval_id": pending["pending_approval"]["approval_id"]}
            )
            listed = await agent.call_tool("approvals_pending", {})
        events = await _records(runtime)
    # Both attempts are on record, under the agent's identity; the review attempt as vote_refused.
    attempts = [
        e for e in events if e.tool in ("approval_review", "approvals_pending") and e.kind == "outcome"
    ]
    assert [(e.tool, e.principal.subject if e.principal else None) for e in attempts] == [
        ("approval_review", "agent-7"),
        ("approvals_pending", "agent-7"),
    ]
    assert all(e.outcome and e.outcome.status.value == "denied" for e in attempts)
    refusals = [
        e for e in events if e.kind == "approval" and e.approval and e.approval.event == "vote_refused"
    ]
    assert len(refusals) == 1
    assert refusals[0].principal is not None
    assert refusals[0].principal.subject == "agent-7"
    assert listed.is_error
    assert {"approval_wait", "approval_execute"} <= agent_tools
    assert not {"approvals_pending", "approval_review"} & agent_tools
    assert {"approvals_pending", "approval_review"} <= alice_tools
    assert refused.is_error
    assert "Agent principals cannot review" in _text(refused)
    assert _order_exists(shop)


async def test_the_requester_cannot_approve_their_own_call_even_as_an_approver(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    """A human DBA running an agent under their own identity still needs a second person."""
    setup = _as(_setup(tmp_path, shop, oidc_issuer), oidc_issuer.mint(sub="bob", groups=["dba"]))
    prompts: list[str] = []
    async with _client(setup, elicitation_callback=reviewer("approve", "looks fine", prompts)) as (
        bob,
        runtime,
    ):
        with anyio.fail_after(30):
            pending = _data(await bob.call_tool("query_db", {"connection": "shop", "sql": DELETE}))
            approval_id = pending["pending_approval"]["approval_id"]
            refused = await bob.call_tool("approval_review", {"approval_id": approval_id})
            listed = _data(await bob.call_tool("approvals_pending", {}))
        assert runtime.approvals is not None
        approval = await runtime.approvals.service.get(approval_id)
    assert refused.is_error
    assert "requester can never approve" in _text(refused)
    assert prompts == []  # not even asked
    assert listed["approvals"] == []
    assert approval.state is ApprovalState.PENDING
    assert _order_exists(shop)


async def test_claiming_approval_in_the_arguments_is_refused_and_recorded(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    setup = _as(_setup(tmp_path, shop, oidc_issuer), oidc_issuer.mint(sub="agent-7", groups=["agents"]))
    async with _client(setup) as (agent, runtime):
        with anyio.fail_after(30):
            result = await agent.call_tool(
                "query_db", {"connection": "shop", "sql": DELETE, "approved": True, "approval_id": "apr_x"}
            )
        events = await _records(runtime)
    assert result.is_error
    assert "unknown argument(s) 'approval_id', 'approved'" in _text(result)
    assert _order_exists(shop)
    assert not [e for e in events if e.kind == "approval"]
    assert any(e.outcome and e.outcome.rule_id == "input.invalid_arguments" for e in events)


async def test_repeating_the_identical_call_after_approval_runs_it_once_then_asks_again(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    setup = _as(_setup(tmp_path, shop, oidc_issuer), oidc_issuer.mint(sub="agent-7", groups=["agents"]))
    alice = oidc_issuer.mint(sub="alice", groups=["dba"])
    sql = "UPDATE orders SET status = 'cancelled' WHERE id = 102"
    async with _client(setup) as (agent, runtime):
        assert runtime.approvals is not None
        with anyio.fail_after(60):
            first = _data(await agent.call_tool("query_db", {"connection": "shop", "sql": sql}))
            same = _data(await agent.call_tool("query_db", {"connection": "shop", "sql": sql}))
            approval_id = first["pending_approval"]["approval_id"]
            assert same["pending_approval"]["approval_id"] == approval_id  # not a second request
            await runtime.approvals.service.decide(
                approval_id,
                approver=await runtime.approvals.approver(alice),
                approve=True,
                reason="customer asked",
                channel="api",
            )
            ran = _data(await agent.call_tool("query_db", {"connection": "shop", "sql": sql}))
            third = _data(await agent.call_tool("query_db", {"connection": "shop", "sql": sql}))
    assert ran["outcome"] == "ok"
    assert ran["status"] == "UPDATE 1"
    assert third["outcome"] == "pending_approval"
    assert third["pending_approval"]["approval_id"] != approval_id


async def test_a_denied_call_stays_denied_and_cannot_be_executed(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    base = _setup(tmp_path, shop, oidc_issuer)
    agent_setup = _as(base, oidc_issuer.mint(sub="agent-7", groups=["agents"]))
    alice_setup = _as(base, oidc_issuer.mint(sub="alice", groups=["dba"]))
    prompts: list[str] = []
    async with (
        _client(agent_setup) as (agent, _),
        _client(alice_setup, elicitation_callback=reviewer("deny", "not during the sale", prompts)) as (
            alice,
            _,
        ),
    ):
        with anyio.fail_after(60):
            pending = _data(await agent.call_tool("query_db", {"connection": "shop", "sql": DELETE}))
            approval_id = pending["pending_approval"]["approval_id"]
            _data(await alice.call_tool("approval_review", {"approval_id": approval_id}))
            waited = _data(
                await agent.call_tool("approval_wait", {"approval_id": approval_id, "timeout_seconds": 5})
            )
            executed = await agent.call_tool("approval_execute", {"approval_id": approval_id})
            again = await alice.call_tool("approval_review", {"approval_id": approval_id})
    assert waited["status"] == "denied"
    assert waited["reason"] == "not during the sale"
    assert executed.is_error
    assert "denied" in _text(executed)
    assert again.is_error
    assert "denied" in _text(again)
    assert _order_exists(shop)


async def test_approval_wait_returns_pending_on_timeout_and_wakes_when_decided(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    setup = _as(_setup(tmp_path, shop, oidc_issuer), oidc_issuer.mint(sub="agent-7", groups=["agents"]))
    alice = oidc_issuer.mint(sub="alice", groups=["dba"])
    async with _client(setup) as (agent, runtime):
        assert runtime.approvals is not None
        approvals = runtime.approvals
        with anyio.fail_after(60):
            pending = _data(await agent.call_tool("query_db", {"connection": "shop", "sql": DELETE}))
            approval_id = pending["pending_approval"]["approval_id"]
            timed_out = _data(
                await agent.call_tool("approval_wait", {"approval_id": approval_id, "timeout_seconds": 1})
            )
            results: list[dict[str, Any]] = []

            async def wait() -> None:
                results.append(
                    _data(
                        await agent.call_tool(
                            "approval_wait", {"approval_id": approval_id, "timeout_seconds": 120}
                        )
                    )
                )

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.wait_all_tasks_blocked()
                await approvals.service.decide(
                    approval_id,
                    approver=await approvals.approver(alice),
                    approve=True,
                    reason="ok",
                    channel="api",
                )
        # The 120 s wait ended with the decision (the fail_after above bounds the whole test to 60 s).
    assert timed_out["status"] == "pending"
    assert results[0]["status"] == "approved"


async def test_a_plan_that_changed_after_approval_is_refused_and_nothing_runs(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    setup = _as(_setup(tmp_path, shop, oidc_issuer), oidc_issuer.mint(sub="agent-7", groups=["agents"]))
    alice = oidc_issuer.mint(sub="alice", groups=["dba"])
    sql = "UPDATE orders SET status = 'archived' WHERE status = 'shipped'"
    async with _client(setup) as (agent, runtime):
        assert runtime.approvals is not None
        with anyio.fail_after(60):
            pending = _data(await agent.call_tool("query_db", {"connection": "shop", "sql": sql}))
            approval_id = pending["pending_approval"]["approval_id"]
            await runtime.approvals.service.decide(
                approval_id,
                approver=await runtime.approvals.approver(alice),
                approve=True,
                reason="ok",
                channel="api",
            )
            # The table grows far past the approved estimate before the agent runs the call.
            shop.admin_query(
                "INSERT INTO orders (id, customer_id, status, total_cents) "
                "SELECT g, 1, 'shipped', 100 FROM generate_series(10000, 60000) g"
            )
            shop.admin_query("ANALYZE orders")
            refused = await agent.call_tool("approval_execute", {"approval_id": approval_id})
            approval = await runtime.approvals.service.get(approval_id)
    assert refused.is_error
    assert "approval.plan_changed" in _text(refused)
    assert "row estimate grew" in _text(refused)
    assert approval.state is ApprovalState.REFUSED
    assert shop.admin_query("SELECT count(*) FROM orders WHERE status = 'archived'") == [(0,)]


async def test_someone_else_cannot_wait_on_or_execute_an_approval(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    base = _setup(tmp_path, shop, oidc_issuer)
    agent_setup = _as(base, oidc_issuer.mint(sub="agent-7", groups=["agents"]))
    other_setup = _as(base, oidc_issuer.mint(sub="agent-9", groups=["agents"]))
    async with _client(agent_setup) as (agent, _), _client(other_setup) as (other, _):
        with anyio.fail_after(30):
            pending = _data(await agent.call_tool("query_db", {"connection": "shop", "sql": DELETE}))
            approval_id = pending["pending_approval"]["approval_id"]
            waited = await other.call_tool(
                "approval_wait", {"approval_id": approval_id, "timeout_seconds": 1}
            )
            executed = await other.call_tool("approval_execute", {"approval_id": approval_id})
            unknown = await agent.call_tool(
                "approval_wait", {"approval_id": "apr_doesnotexist", "timeout_seconds": 1}
            )
    assert waited.is_error
    assert "another requester" in _text(waited)
    assert executed.is_error
    assert "another requester" in _text(executed)
    assert unknown.is_error
    assert "no approval" in _text(unknown)


async def test_a_pending_approval_survives_a_server_restart(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    setup = _as(_setup(tmp_path, shop, oidc_issuer), oidc_issuer.mint(sub="agent-7", groups=["agents"]))
    alice = oidc_issuer.mint(sub="alice", groups=["dba"])
    with anyio.fail_after(60):
        async with _client(setup) as (agent, _):
            pending = _data(await agent.call_tool("query_db", {"connection": "shop", "sql": DELETE}))
        approval_id = pending["pending_approval"]["approval_id"]
        # The server is gone; an approver decides from another process's view of the same store.
        runtime = await open_runtime(setup.config_path, environ=setup.environ)
        try:
            assert runtime.approvals is not None
            await runtime.approvals.service.decide(
                approval_id,
                approver=await runtime.approvals.approver(alice),
                approve=True,
                reason="ok",
                channel="api",
            )
        finally:
            await runtime.aclose()
        async with _client(setup) as (agent, runtime):
            executed = _data(await agent.call_tool("approval_execute", {"approval_id": approval_id}))
            verify = await runtime.audit.verify()
    assert executed["query_db"]["status"] == "DELETE 1"
    assert not _order_exists(shop)
    assert verify.ok


async def test_an_unreachable_approval_store_denies_the_call(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    setup = _as(_setup(tmp_path, shop, oidc_issuer), oidc_issuer.mint(sub="agent-7", groups=["agents"]))
    async with _client(setup) as (agent, runtime):
        assert runtime.approvals is not None
        await runtime.approvals.store.close()
        with anyio.fail_after(30):
            result = await agent.call_tool("query_db", {"connection": "shop", "sql": DELETE})
        events = await _records(runtime)
    assert result.is_error
    assert "approval.store_unavailable" in _text(result)
    assert _order_exists(shop)
    outcome = [e for e in events if e.kind == "outcome" and e.tool == "query_db"][-1]
    assert outcome.outcome is not None
    assert outcome.outcome.rule_id == "approval.store_unavailable"


async def test_a_review_policy_without_an_approvals_section_is_a_config_error(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    setup = write_config(tmp_path, shop, identity=_identity(oidc_issuer), policy=POLICY)
    with pytest.raises(ConfigError, match=r"writes-need-a-dba.*no .approvals. section"):
        await open_runtime(setup.config_path, environ={**setup.environ, "HOOP_TOKEN": "x"})


async def test_concurrent_agents_get_separate_approvals_and_each_runs_once(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    base = _setup(tmp_path, shop, oidc_issuer)
    alice = oidc_issuer.mint(sub="alice", groups=["dba"])
    carol = oidc_issuer.mint(sub="carol", groups=["dba"])
    ids = (101, 102, 103, 104)
    setups = [_as(base, oidc_issuer.mint(sub=f"agent-{i}", groups=["agents"])) for i in ids]
    results: dict[int, dict[str, Any]] = {}
    async with _client(setups[0]) as (_, runtime):
        assert runtime.approvals is not None
        approvals = runtime.approvals
        pending: dict[int, str] = {}
        all_pending = anyio.Event()

        async def request(order_id: int, setup: HoopSetup) -> None:
            async with _client(setup) as (agent, _):
                sql = f"UPDATE orders SET status = 'held' WHERE id = {order_id}"
                data = _data(await agent.call_tool("query_db", {"connection": "shop", "sql": sql}))
                pending[order_id] = data["pending_approval"]["approval_id"]
                if len(pending) == len(ids):
                    all_pending.set()
                waited = _data(
                    await agent.call_tool(
                        "approval_wait", {"approval_id": pending[order_id], "timeout_seconds": 60}
                    )
                )
                assert waited["status"] == "approved"
                results[order_id] = _data(
                    await agent.call_tool("approval_execute", {"approval_id": pending[order_id]})
                )

        async def approve_all() -> None:
            await all_pending.wait()
            async with anyio.create_task_group() as tg:
                for index, approval_id in enumerate(pending.values()):
                    token = alice if index % 2 else carol
                    tg.start_soon(_decide, approvals, approval_id, token)

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for order_id, setup in zip(ids, setups, strict=True):
                    tg.start_soon(request, order_id, setup)
                tg.start_soon(approve_all)
    assert len(set(pending.values())) == len(ids)
    assert {k: v["query_db"]["status"] for k, v in results.items()} == dict.fromkeys(ids, "UPDATE 1")
    assert shop.admin_query("SELECT count(*) FROM orders WHERE status = 'held'") == [(len(ids),)]


async def _decide(approvals: Any, approval_id: str, token: str) -> None:
    await approvals.service.decide(
        approval_id, approver=await approvals.approver(token), approve=True, reason="batch ok", channel="api"
    )


async def test_the_pending_result_validates_against_the_published_output_schema(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    """The v2 client validates structured results: a pending result must fit QueryResult's schema."""
    setup = _as(_setup(tmp_path, shop, oidc_issuer), oidc_issuer.mint(sub="agent-7", groups=["agents"]))
    async with _client(setup) as (agent, _):
        with anyio.fail_after(30):
            tools = {t.name: t for t in (await agent.list_tools()).tools}
            result = await agent.call_tool("query_db", {"connection": "shop", "sql": DELETE})
    schema = tools["query_db"].output_schema
    assert schema is not None
    assert "pending_approval" in schema["properties"]
    assert json.loads(_text(result))["outcome"] == "pending_approval"
