"""Four-eyes approvals across processes, with two identities and every moving part real.

The agent is an MCP client of a hoop-mcp server with a real PostgreSQL; the approver acts from
another process: ``hoop-mcp approvals approve`` (the CLI, with the approver's own OIDC token), or
the approval page served by ``hoop-mcp approvals web`` and driven in headless Chromium after an
OIDC login (authorization code + PKCE) at the real test issuer.
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from hoop_mcp.core.approvals import ApprovalState
from tests.server.test_approvals import DELETE, POLICY, _as, _data, _identity, _order_exists
from tests.support.browser import WAIT_S, path_of, wait_for
from tests.support.hoop import HoopSetup, hoop_server, write_config
from tests.support.oidc import OidcIssuer
from tests.support.pg import ShopDb

pytestmark = pytest.mark.anyio

CLI = [sys.executable, "-m", "hoop_mcp.cli"]


def _approvals_section(web: str = "") -> str:
    return "approvals:\n  agents: {groups: [agents]}\n" + web


async def test_an_approval_from_the_cli_wakes_the_waiting_agent_which_then_runs_the_call(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    base = write_config(
        tmp_path, shop, identity=_identity(oidc_issuer), policy=POLICY, extra=_approvals_section()
    )
    agent_setup = _as(base, oidc_issuer.mint(sub="agent-7", groups=["agents"]))
    approver_token = oidc_issuer.mint(sub="alice", groups=["dba"])
    async with hoop_server(agent_setup) as (hoop, runtime), Client(hoop.mcp) as agent:
        with anyio.fail_after(90):
            pending = _data(await agent.call_tool("query_db", {"connection": "shop", "sql": DELETE}))
            approval_id = pending["pending_approval"]["approval_id"]
            waited: list[dict[str, Any]] = []

            async def wait() -> None:
                result = await agent.call_tool(
                    "approval_wait", {"approval_id": approval_id, "timeout_seconds": 120}
                )
                waited.append(_data(result))

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.wait_all_tasks_blocked()
                # Another person, another process, their own token (never a command-line value).
                done = await anyio.run_process(
                    [
                        *CLI,
                        "approvals",
                        "approve",
                        approval_id,
                        "--reason",
                        "ticket OPS-77",
                        "--config",
                        str(base.config_path),
                    ],
                    env={**os.environ, **base.environ, "HOOP_APPROVER_TOKEN": approver_token},
                    check=False,
                )
            assert done.returncode == 0, done.stderr.decode()
            assert _order_exists(shop)
            executed = _data(await agent.call_tool("approval_execute", {"approval_id": approval_id}))
        events = [r.event for r in await runtime.audit.records()]
    # The two-minute wait ended with the other process's decision (the test is bounded to 90 s).
    assert waited[0]["status"] == "approved"
    assert waited[0]["decided_by"] == ["alice"]
    assert executed["query_db"]["status"] == "DELETE 1"
    assert not _order_exists(shop)
    approved = [e for e in events if e.kind == "approval" and e.approval and e.approval.event == "approved"]
    assert len(approved) == 1
    assert approved[0].approval is not None
    assert (approved[0].approval.channel, approved[0].approval.reason) == ("cli", "ticket OPS-77")
    assert approved[0].principal is not None
    assert approved[0].principal.subject == "alice"
    assert approver_token not in done.stdout.decode() + done.stderr.decode()


async def test_the_agents_own_token_cannot_approve_from_the_cli(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer
) -> None:
    base = write_config(
        tmp_path, shop, identity=_identity(oidc_issuer), policy=POLICY, extra=_approvals_section()
    )
    agent_token = oidc_issuer.mint(sub="agent-7", groups=["agents", "dba"])
    agent_setup = _as(base, agent_token)
    async with hoop_server(agent_setup) as (hoop, runtime), Client(hoop.mcp) as agent:
        with anyio.fail_after(60):
            pending = _data(await agent.call_tool("query_db", {"connection": "shop", "sql": DELETE}))
            approval_id = pending["pending_approval"]["approval_id"]
            done = await anyio.run_process(
                [
                    *CLI,
                    "approvals",
                    "approve",
                    approval_id,
                    "--reason",
                    "trust me",
                    "--config",
                    str(base.config_path),
                ],
                env={**os.environ, **base.environ, "HOOP_APPROVER_TOKEN": agent_token},
                check=False,
            )
            assert runtime.approvals is not None
            approval = await runtime.approvals.service.get(approval_id)
    assert done.returncode == 1
    assert approval.state is ApprovalState.PENDING
    assert _order_exists(shop)
    assert agent_token not in done.stdout.decode() + done.stderr.decode()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.browser
async def test_an_approver_approves_on_the_page_in_chromium_and_the_agent_runs_the_call(
    shop: ShopDb, tmp_path: Path, oidc_issuer: OidcIssuer, browser: WebDriver
) -> None:
    port = _free_port()
    page = f"http://localhost:{port}"  # the issuer is 127.0.0.1: the login really crosses sites
    client_secret = "page-" + secrets.token_urlsafe(16)
    oidc_issuer.add_user("bob", groups=["dba"], name="Bob Approver", email="bob@example.com")
    oidc_issuer.register_client("hoop-page", redirect_uris=[page + "/callback"], secret=client_secret)
    web = (
        "  web:\n"
        f"    listen_host: 127.0.0.1\n    listen_port: {port}\n    public_url: {page}\n"
        "    client_id: hoop-page\n    client_secret: {env: PAGE_SECRET}\n"
    )
    base = write_config(
        tmp_path, shop, identity=_identity(oidc_issuer), policy=POLICY, extra=_approvals_section(web)
    )
    agent_setup: HoopSetup = _as(base, oidc_issuer.mint(sub="agent-7", groups=["agents"]))
    server = subprocess.Popen(  # noqa: ASYNC220 - a server for the whole test, its stderr read in a thread
        [*CLI, "approvals", "web", "--config", str(base.config_path)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **base.environ, "PAGE_SECRET": client_secret},
    )
    try:
        assert server.stderr is not None
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            while "approval page:" not in (
                line := pool.submit(server.stderr.readline).result(timeout=WAIT_S)
            ):
                assert line, "the approval page exited before serving"
        async with hoop_server(agent_setup) as (hoop, runtime), Client(hoop.mcp) as agent:
            with anyio.fail_after(90):
                pending = _data(await agent.call_tool("query_db", {"connection": "shop", "sql": DELETE}))
                approval = pending["pending_approval"]
                assert approval["approval_url"] == f"{page}/approvals/{approval['approval_id']}"

                # Bob follows the link, logs in at the issuer, reads the plan and approves.
                browser.get(approval["approval_url"])
                login = wait_for(browser, lambda d: d.find_element(By.ID, "login"), "the issuer's login form")
                login.send_keys("bob")
                browser.find_element(By.ID, "submit").click()
                path = f"/approvals/{approval['approval_id']}"
                wait_for(
                    browser, lambda d: path_of(d) == path and d.find_elements(By.ID, "reason"), "the review"
                )
                assert "DELETE FROM orders WHERE id = 104" in browser.find_element(By.ID, "statement").text
                assert "agent-7" in browser.find_element(By.CLASS_NAME, "field-requested-by").text
                browser.find_element(By.ID, "reason").send_keys("customer asked, CS-12")
                browser.find_element(By.ID, "approve").click()
                wait_for(browser, lambda d: d.find_elements(By.ID, "your-decision"), "the decision")

                waited = _data(
                    await agent.call_tool(
                        "approval_wait", {"approval_id": approval["approval_id"], "timeout_seconds": 30}
                    )
                )
                executed = _data(
                    await agent.call_tool("approval_execute", {"approval_id": approval["approval_id"]})
                )
            events = [r.event for r in await runtime.audit.records()]
    finally:
        server.terminate()
        server.wait(timeout=WAIT_S)
        if server.stderr is not None:
            server.stderr.close()
    assert waited["status"] == "approved"
    assert waited["decided_by"] == ["Bob Approver <bob@example.com>"]
    assert executed["query_db"]["status"] == "DELETE 1"
    assert not _order_exists(shop)
    steps = [(e.approval.event, e.approval.channel) for e in events if e.kind == "approval" and e.approval]
    assert steps == [("requested", None), ("approved", "web")]
