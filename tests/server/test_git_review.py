"""Protected branches: a push to main is held for a maintainer's approval (real OIDC identities),
lands after approval, and is refused when the branch moved after it was approved."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.support.git_remote import GitRemote, commit
from tests.support.gitsetup import APPROVALS, write_git_config
from tests.support.hoop import HoopSetup
from tests.support.mcp_client import connected as _client
from tests.support.mcp_client import reviewer
from tests.support.mcp_client import tool_data as _data
from tests.support.mcp_client import tool_text as _text
from tests.support.oidc import OidcIssuer

pytestmark = pytest.mark.anyio


def _setup(tmp_path: Path, remote: GitRemote, issuer: OidcIssuer, workspace: Path) -> HoopSetup:
    identity = (
        "identity:\n"
        f"  oidc: {{issuer: '{issuer.issuer}', audience: {issuer.audience}}}\n"
        "  token: {env: HOOP_TOKEN}\n"
    )
    return write_git_config(
        tmp_path / "hoop", remote, workspace=workspace, identity=identity, extra=APPROVALS
    )


def _as(setup: HoopSetup, token: str) -> HoopSetup:
    return HoopSetup(
        config_path=setup.config_path, environ={**setup.environ, "HOOP_TOKEN": token}, workdir=setup.workdir
    )


async def test_a_push_to_a_protected_branch_is_held_and_lands_after_a_maintainer_approves(
    tmp_path: Path, git_remote: GitRemote, oidc_issuer: OidcIssuer
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    base = _setup(tmp_path, git_remote, oidc_issuer, workspace)
    agent_setup = _as(base, oidc_issuer.mint(sub="agent-7", groups=["agents"]))
    approver_setup = _as(base, oidc_issuer.mint(sub="maria", groups=["maintainers"]))
    repo = git_remote.working_copy(workspace / "app")
    sha = commit(repo, {"CHANGELOG.md": "## 1.1\n- login\n"}, "Release notes for 1.1")
    before = git_remote.refs()["refs/heads/main"]
    prompts: list[str] = []
    async with (
        _client(agent_setup) as (agent, runtime),
        _client(approver_setup, elicitation_callback=reviewer("approve", "release 1.1", prompts)) as (
            maria,
            _,
        ),
    ):
        with anyio.fail_after(90):
            held = _data(await agent.call_tool("git_push", {"repository": str(repo), "branch": "main"}))
            assert held["outcome"] == "pending_approval"
            assert git_remote.refs()["refs/heads/main"] == before
            approval_id = held["pending_approval"]["approval_id"]
            assert held["pending_approval"]["rule_id"] == "protected-branches"
            assert "Release notes for 1.1" in held["pending_approval"]["reviewing"]

            decided = _data(await maria.call_tool("approval_review", {"approval_id": approval_id}))
            assert decided["status"] == "approved"
            executed = _data(await agent.call_tool("approval_execute", {"approval_id": approval_id}))
        events = [r.event for r in await runtime.audit.records()]
    assert executed["git_push"]["new_sha"] == sha
    assert executed["git_push"]["old_sha"] == before
    assert git_remote.refs()["refs/heads/main"] == sha
    # The approver saw the target ref, the commit range and the files.
    assert "refs/heads/main" in prompts[0]
    assert "Release notes for 1.1" in prompts[0]
    assert "CHANGELOG.md" in prompts[0]
    assert sha in prompts[0]
    steps = [e.approval.event for e in events if e.kind == "approval" and e.approval]
    assert steps == ["requested", "approved"]
    ran = [e for e in events if e.tool == "git_push" and e.kind == "outcome"]
    assert [e.outcome.status.value for e in ran if e.outcome] == ["pending", "ok"]


async def test_an_approved_push_is_refused_when_the_branch_moved_after_approval(
    tmp_path: Path, git_remote: GitRemote, oidc_issuer: OidcIssuer
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    base = _setup(tmp_path, git_remote, oidc_issuer, workspace)
    agent_setup = _as(base, oidc_issuer.mint(sub="agent-7", groups=["agents"]))
    approver_setup = _as(base, oidc_issuer.mint(sub="maria", groups=["maintainers"]))
    repo = git_remote.working_copy(workspace / "app")
    commit(repo, {"a.txt": "reviewed\n"}, "Reviewed change")
    before = git_remote.refs()["refs/heads/main"]
    async with (
        _client(agent_setup) as (agent, _),
        _client(approver_setup, elicitation_callback=reviewer("approve", "ok", [])) as (maria, _),
    ):
        with anyio.fail_after(90):
            held = _data(await agent.call_tool("git_push", {"repository": str(repo), "branch": "main"}))
            approval_id = held["pending_approval"]["approval_id"]
            _data(await maria.call_tool("approval_review", {"approval_id": approval_id}))
            # The agent sneaks another commit onto the approved branch.
            commit(repo, {"a.txt": "not reviewed\n"}, "Unreviewed change")
            refused = await agent.call_tool("approval_execute", {"approval_id": approval_id})
    assert refused.is_error
    assert "changed" in _text(refused)
    assert git_remote.refs()["refs/heads/main"] == before


async def test_an_agent_cannot_approve_its_own_protected_push(
    tmp_path: Path, git_remote: GitRemote, oidc_issuer: OidcIssuer
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    base = _setup(tmp_path, git_remote, oidc_issuer, workspace)
    # Its token even carries the maintainers group: an agent is never an approver.
    agent_setup = _as(base, oidc_issuer.mint(sub="agent-7", groups=["agents", "maintainers"]))
    repo = git_remote.working_copy(workspace / "app")
    commit(repo, {"b.txt": "b\n"}, "b")
    before = git_remote.refs()
    async with _client(agent_setup, elicitation_callback=reviewer("approve", "me", [])) as (agent, _):
        with anyio.fail_after(60):
            held = _data(await agent.call_tool("git_push", {"repository": str(repo), "branch": "main"}))
            approval_id = held["pending_approval"]["approval_id"]
            review = await agent.call_tool("approval_review", {"approval_id": approval_id})
            execute = await agent.call_tool("approval_execute", {"approval_id": approval_id})
    assert review.is_error
    assert execute.is_error
    assert "pending" in _text(execute)
    assert git_remote.refs() == before
