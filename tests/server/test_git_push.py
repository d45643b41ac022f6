"""git_push end to end: a real MCP client (in memory), a real authenticated smart-HTTP remote with a
pre-receive hook, the agent's own working copy, the real audit log."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from tests.support.git_remote import GitRemote, commit, run_git
from tests.support.gitsetup import write_git_config
from tests.support.hoop import HoopSetup
from tests.support.mcp_client import connected as _client
from tests.support.mcp_client import tool_data as _data
from tests.support.mcp_client import tool_text as _text

pytestmark = pytest.mark.anyio


def _pushes(remote: GitRemote) -> list[str]:
    """Requests that could change the remote (receive-pack)."""
    return [r.path for r in remote.requests if "git-receive-pack" in (r.path + r.query)]


def _audit_text(setup: HoopSetup) -> str:
    with sqlite3.connect(setup.workdir / "audit.db") as db:
        return "\n".join(str(row) for row in db.execute("SELECT * FROM audit_records"))


def _secret_forms(remote: GitRemote) -> list[str]:
    basic = base64.b64encode(f"{remote.username}:{remote.token}".encode()).decode()
    return [remote.token, basic, base64.b64encode(remote.token.encode()).decode().rstrip("=")]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    root.mkdir()
    return root


@pytest.fixture
def setup(tmp_path: Path, git_remote: GitRemote, workspace: Path) -> HoopSetup:
    return write_git_config(tmp_path / "hoop", git_remote, workspace=workspace)


async def test_a_feature_branch_push_lands_and_the_credential_is_found_nowhere(
    setup: HoopSetup,
    git_remote: GitRemote,
    workspace: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    repo = git_remote.working_copy(workspace / "app")
    run_git("switch", "-q", "-c", "feature/login", cwd=repo)
    first = commit(repo, {"src/login.py": "def login():\n    return True\n"}, "Add login")
    second = commit(repo, {"src/login.py": "def login():\n    return False\n"}, "Fix login")
    config_before = (repo / ".git" / "config").read_text()
    async with _client(setup) as (agent, _):
        with anyio.fail_after(60):
            outgoing = _data(await agent.call_tool("git_outgoing", {"repository": str(repo)}))
            pushed = _data(await agent.call_tool("git_push", {"repository": str(repo)}))
    assert [c["sha"] for c in outgoing["plan"]["commits"]] == [second, first]
    assert outgoing["plan"]["fast_forward"] is True
    assert outgoing["push_would_be_blocked"] is False
    assert [f["path"] for f in outgoing["plan"]["files"]] == ["src/login.py"]
    assert pushed["outcome"] == "ok"
    assert pushed["rule_id"] == "feature-pushes"
    assert pushed["ref"] == "refs/heads/feature/login"
    assert pushed["new_sha"] == second
    assert pushed["old_sha"] is None
    assert git_remote.refs()["refs/heads/feature/login"] == second
    # The credential went to the remote as a header, and nowhere else.
    assert any(r.header("Authorization") == git_remote.authorization() for r in git_remote.requests)
    assert all(git_remote.token not in r.path + r.query for r in git_remote.requests)
    everything = json.dumps(outgoing) + json.dumps(pushed) + _audit_text(setup) + caplog.text
    everything += (repo / ".git" / "config").read_text()
    for secret in _secret_forms(git_remote):
        assert secret not in everything
    # The agent's working copy was only read.
    assert (repo / ".git" / "config").read_text() == config_before
    assert "hoop" not in run_git("for-each-ref", cwd=repo).stdout


async def test_a_wrong_credential_fails_clearly_and_changes_nothing(
    tmp_path: Path, git_remote: GitRemote, workspace: Path
) -> None:
    setup = write_git_config(tmp_path / "hoop", git_remote, workspace=workspace)
    setup.environ["APP_GIT_TOKEN"] = "tok-wrong-" + "x" * 20
    repo = git_remote.working_copy(workspace / "app")
    run_git("switch", "-q", "-c", "feature/a", cwd=repo)
    commit(repo, {"a.txt": "a\n"}, "a")
    before = git_remote.refs()
    async with _client(setup) as (agent, _):
        with anyio.fail_after(60):
            result = await agent.call_tool("git_push", {"repository": str(repo)})
    assert result.is_error
    assert "authentication failed" in _text(result)
    assert "git.auth_failed" in _text(result)
    assert git_remote.refs() == before
    assert {r.status for r in git_remote.requests} == {401}
    assert "tok-wrong" not in _text(result) + _audit_text(setup)


async def test_a_secret_in_any_outgoing_commit_blocks_the_push_and_nothing_reaches_the_remote(
    setup: HoopSetup, git_remote: GitRemote, workspace: Path
) -> None:
    repo = git_remote.working_copy(workspace / "app")
    run_git("switch", "-q", "-c", "feature/creds", cwd=repo)
    key = (
        Ed25519PrivateKey.generate()
        .private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
        .decode()
    )
    commit(repo, {"deploy/id_ed25519": key}, "Add deploy key")
    commit(repo, {"deploy/id_ed25519": "removed\n"}, "Remove the key again")
    before = git_remote.refs()
    async with _client(setup) as (agent, _):
        with anyio.fail_after(60):
            outgoing = _data(await agent.call_tool("git_outgoing", {"repository": str(repo)}))
            result = await agent.call_tool("git_push", {"repository": str(repo)})
    assert outgoing["push_would_be_blocked"] is True
    finding = outgoing["plan"]["findings"][0]
    assert finding["path"] == "deploy/id_ed25519"
    assert finding["line"] == 1
    assert result.is_error
    text = _text(result)
    assert "git.secret_detected" in text
    assert "deploy/id_ed25519:1" in text
    assert git_remote.refs() == before
    assert _pushes(git_remote) == []
    body = key.splitlines()[1]
    assert body not in text + json.dumps(outgoing) + _audit_text(setup)


async def test_a_push_that_is_not_a_fast_forward_is_refused_and_force_needs_review(
    setup: HoopSetup, git_remote: GitRemote, workspace: Path
) -> None:
    repo = git_remote.working_copy(workspace / "app")
    run_git("switch", "-q", "-c", "feature/x", cwd=repo)
    commit(repo, {"x.txt": "mine\n"}, "mine")
    git_remote.seed({"x.txt": "theirs\n"}, branch="feature/x", message="theirs")
    before = git_remote.refs()
    async with _client(setup) as (agent, _):
        with anyio.fail_after(60):
            plain = await agent.call_tool("git_push", {"repository": str(repo)})
            forced = await agent.call_tool("git_push", {"repository": str(repo), "force": True})
    assert plain.is_error
    assert "not a fast-forward" in _text(plain)
    assert "git.non_fast_forward" in _text(plain)
    # The policy allows feature pushes, but a force push is review-only: the history-rewrites rule
    # (review) decides, so the call is held, not run.
    data = _data(forced)
    assert data["outcome"] == "pending_approval"
    assert data["pending_approval"]["rule_id"] == "history-rewrites"
    assert git_remote.refs() == before
    assert _pushes(git_remote) == []


async def test_a_hook_rejection_is_reported_with_the_hooks_message(
    setup: HoopSetup, git_remote: GitRemote, workspace: Path
) -> None:
    git_remote.set_pre_receive('echo "branch naming policy: use feature/<ticket>" >&2\nexit 1\n')
    repo = git_remote.working_copy(workspace / "app")
    run_git("switch", "-q", "-c", "feature/y", cwd=repo)
    commit(repo, {"y.txt": "y\n"}, "y")
    before = git_remote.refs()
    async with _client(setup) as (agent, _):
        with anyio.fail_after(60):
            result = await agent.call_tool("git_push", {"repository": str(repo)})
    assert result.is_error
    assert "branch naming policy: use feature/<ticket>" in _text(result)
    assert "nothing was pushed" in _text(result)
    assert git_remote.refs() == before


async def test_an_unreachable_remote_is_a_clear_error_and_the_server_keeps_serving(
    setup: HoopSetup, git_remote: GitRemote, workspace: Path
) -> None:
    repo = git_remote.working_copy(workspace / "app")
    run_git("switch", "-q", "-c", "feature/z", cwd=repo)
    sha = commit(repo, {"z.txt": "z\n"}, "z")
    async with _client(setup) as (agent, _):
        with anyio.fail_after(60):
            git_remote.fail_with(503)
            failed = await agent.call_tool("git_push", {"repository": str(repo)})
            git_remote.fail_with(None)
            git_remote.down()
            refused = await agent.call_tool("git_push", {"repository": str(repo)})
            git_remote.up()
            pushed = _data(await agent.call_tool("git_push", {"repository": str(repo)}))
    assert failed.is_error
    assert "cannot be reached" in _text(failed)
    assert refused.is_error
    assert "cannot be reached" in _text(refused)
    assert pushed["new_sha"] == sha


async def test_the_agents_repository_config_cannot_redirect_the_push_or_run_commands(
    setup: HoopSetup, git_remote: GitRemote, workspace: Path, tmp_path: Path
) -> None:
    repo = git_remote.working_copy(workspace / "app")
    run_git("switch", "-q", "-c", "feature/evil", cwd=repo)
    sha = commit(repo, {"e.txt": "e\n"}, "e")
    # Planted after the agent's own git commands (which would run core.fsmonitor themselves).
    pwned = tmp_path / "pwned"
    evil = "http://127.0.0.1:9/steal.git"
    for key, value in (
        (f"url.{evil}.insteadOf", git_remote.url),
        ("core.fsmonitor", f"touch {pwned}"),
        ("core.sshCommand", f"touch {pwned}"),
        ("http.extraHeader", "X-Evil: 1"),
        ("http.proxy", "http://127.0.0.1:9"),
        ("credential.helper", f"!touch {pwned}"),
        ("uploadpack.packObjectsHook", f"touch {pwned}"),
    ):
        run_git("config", key, value, cwd=repo)
    hook = repo / ".git" / "hooks" / "pre-push"
    hook.write_text(f"#!/bin/sh\ntouch {pwned}\n")
    hook.chmod(0o755)
    async with _client(setup) as (agent, _):
        with anyio.fail_after(60):
            pushed = _data(await agent.call_tool("git_push", {"repository": str(repo)}))
    assert pushed["new_sha"] == sha
    assert git_remote.refs()["refs/heads/feature/evil"] == sha
    assert not pwned.exists()
    assert all(r.header("X-Evil") is None for r in git_remote.requests)


async def test_git_remote_branches_lists_the_remote_with_the_servers_credential(
    setup: HoopSetup, git_remote: GitRemote
) -> None:
    git_remote.seed({"r.txt": "r\n"}, branch="release/1.0", message="release")
    async with _client(setup) as (agent, _):
        with anyio.fail_after(60):
            listed = _data(await agent.call_tool("git_remote_branches", {"pattern": "release/*"}))
            everything = _data(await agent.call_tool("git_remote_branches", {}))
    assert [b["branch"] for b in listed["branches"]] == ["release/1.0"]
    assert listed["branches"][0]["sha"] == git_remote.refs()["refs/heads/release/1.0"]
    assert {b["branch"] for b in everything["branches"]} == {"main", "release/1.0"}


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
async def test_a_working_copy_owned_by_another_user_is_read_without_running_its_config(
    setup: HoopSetup, git_remote: GitRemote, workspace: Path, tmp_path: Path
) -> None:
    repo = git_remote.working_copy(workspace / "theirs")
    run_git("switch", "-q", "-c", "feature/theirs", cwd=repo)
    sha = commit(repo, {"t.txt": "t\n"}, "t")
    pwned = tmp_path / "pwned"
    run_git("config", "core.fsmonitor", f"touch {pwned}", cwd=repo)
    for path in [repo, *repo.rglob("*")]:
        os.lchown(path, 65534, 65534)  # nobody: not the server's user
    try:
        async with _client(setup) as (agent, _):
            with anyio.fail_after(60):
                pushed = _data(await agent.call_tool("git_push", {"repository": str(repo)}))
    finally:
        shutil.chown(repo, os.getuid(), os.getgid())
    assert pushed["new_sha"] == sha
    assert not pwned.exists()


async def test_a_nul_byte_at_the_top_of_a_file_does_not_hide_a_secret_below_it(
    setup: HoopSetup, git_remote: GitRemote, workspace: Path
) -> None:
    from tests.support.secret_factory import checksummed

    repo = git_remote.working_copy(workspace / "app")
    run_git("switch", "-q", "-c", "feature/nul", cwd=repo)
    token = checksummed("ghp_")
    commit(repo, {"data.bin": b"\x00\x01binary header\n" + f'token = "{token}"\n'.encode()}, "looks binary")
    async with _client(setup) as (agent, _):
        with anyio.fail_after(60):
            result = await agent.call_tool("git_push", {"repository": str(repo)})
    assert result.is_error
    assert "data.bin:2" in _text(result)
    assert token not in _text(result)
    assert _pushes(git_remote) == []


async def test_secrets_on_a_line_with_nul_bytes_or_in_a_commit_message_block_the_push(
    setup: HoopSetup, git_remote: GitRemote, workspace: Path
) -> None:
    from tests.support.secret_factory import checksummed

    repo = git_remote.working_copy(workspace / "app")
    run_git("switch", "-q", "-c", "feature/hidden", cwd=repo)
    inline = checksummed("ghp_")
    commit(repo, {"mixed.dat": f'token = "{inline}" \x00\xff\n'.encode("latin-1")}, "mixed")
    run_git("switch", "-q", "-c", "feature/message", "main", cwd=repo)
    in_message = checksummed("ghp_")
    commit(repo, {"m.txt": "m\n"}, f"Add m\n\nused token {in_message} for the test")
    async with _client(setup) as (agent, _):
        with anyio.fail_after(60):
            hidden = await agent.call_tool("git_push", {"repository": str(repo), "branch": "feature/hidden"})
            message = await agent.call_tool(
                "git_push", {"repository": str(repo), "branch": "feature/message"}
            )
    assert "mixed.dat:1" in _text(hidden)
    assert "(commit message):4" in _text(message)  # author line, subject, blank, body
    assert inline not in _text(hidden)
    assert in_message not in _text(message)
    assert _pushes(git_remote) == []
