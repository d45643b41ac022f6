"""Bad git_push input gets a clear error, pushes nothing, is recorded, and the server keeps serving."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from tests.support.git_remote import GitRemote, commit, run_git
from tests.support.gitsetup import write_git_config
from tests.support.hoop import HoopSetup, hoop_server
from tests.support.mcp_client import tool_text as _text

pytestmark = pytest.mark.anyio


def _records(setup: HoopSetup) -> int:
    with sqlite3.connect(setup.workdir / "audit.db") as db:
        (count,) = db.execute("SELECT count(*) FROM audit_records").fetchone()
    return int(count)


def _pushes(remote: GitRemote) -> list[str]:
    return [r.path for r in remote.requests if r.service == "git-receive-pack" or "receive-pack" in r.path]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


@pytest.fixture
def repo(git_remote: GitRemote, workspace: Path) -> Path:
    repo = git_remote.working_copy(workspace / "app")
    run_git("switch", "-q", "-c", "feature/ok", cwd=repo)
    commit(repo, {"ok.txt": "ok\n"}, "ok")
    return repo


def _cases(repo: Path, outside: Path) -> list[tuple[dict[str, Any], str]]:
    return [
        ({"repository": str(outside)}, "git.path_outside_roots"),
        ({"repository": str(repo / ".." / ".." / "elsewhere")}, "git.path_outside_roots"),
        ({"repository": "relative/app"}, "git.invalid_repository"),
        ({"repository": str(repo), "branch": "-f"}, "git.invalid_ref"),
        ({"repository": str(repo), "branch": "--upload-pack=touch /tmp/pwned"}, "git.invalid_ref"),
        ({"repository": str(repo), "branch": "feature/ok:main"}, "git.refspec_syntax"),
        ({"repository": str(repo), "branch": "+feature/ok"}, "git.refspec_syntax"),
        ({"repository": str(repo), "branch": "feature/*"}, "git.refspec_syntax"),
        ({"repository": str(repo), "remote_branch": "refs/heads/main"}, "git.invalid_ref"),
        ({"repository": str(repo), "branch": "no-such-branch"}, "git.no_such_branch"),
        ({"repository": str(repo), "branch": "ma\x00in"}, "git.refspec_syntax"),
    ]


async def test_bad_arguments_get_clear_errors_push_nothing_and_are_recorded(
    tmp_path: Path, git_remote: GitRemote, workspace: Path, repo: Path
) -> None:
    outside = git_remote.working_copy(tmp_path / "outside")
    setup = write_git_config(tmp_path / "hoop", git_remote, workspace=workspace)
    before = git_remote.refs()
    async with hoop_server(setup) as (hoop, _), Client(hoop.mcp) as agent:
        for arguments, rule in _cases(repo, outside):
            recorded = _records(setup)
            with anyio.fail_after(60):
                result = await agent.call_tool("git_push", arguments)
            assert result.is_error, arguments
            assert rule in _text(result), (arguments, _text(result))
            assert "Nothing was executed" in _text(result)
            assert _records(setup) == recorded + 2, arguments  # intent + outcome
        # Still serving: a good push lands afterwards.
        with anyio.fail_after(60):
            ok = await agent.call_tool("git_push", {"repository": str(repo)})
    assert not ok.is_error, _text(ok)
    assert set(git_remote.refs()) == set(before) | {"refs/heads/feature/ok"}
    assert len(_pushes(git_remote)) >= 1


async def test_wrong_types_and_unknown_arguments_are_refused_and_recorded(
    tmp_path: Path, git_remote: GitRemote, workspace: Path, repo: Path
) -> None:
    setup = write_git_config(tmp_path / "hoop", git_remote, workspace=workspace)
    async with hoop_server(setup) as (hoop, _), Client(hoop.mcp) as agent:
        for arguments in (
            {"repository": str(repo), "force": "yes"},
            {"repository": 42},
            {"repository": str(repo), "refspec": "+feature/ok:main"},
        ):
            recorded = _records(setup)
            with anyio.fail_after(60):
                result = await agent.call_tool("git_push", arguments)
            assert result.is_error, arguments
            assert _records(setup) > recorded
    assert _pushes(git_remote) == []
    assert "refs/heads/feature/ok" not in git_remote.refs()


async def test_a_detached_head_or_a_rebase_in_progress_is_refused(
    tmp_path: Path, git_remote: GitRemote, workspace: Path, repo: Path
) -> None:
    setup = write_git_config(tmp_path / "hoop", git_remote, workspace=workspace)
    run_git("checkout", "-q", "--detach", cwd=repo)
    async with hoop_server(setup) as (hoop, _), Client(hoop.mcp) as agent:
        with anyio.fail_after(60):
            detached = await agent.call_tool("git_push", {"repository": str(repo)})
            (repo / ".git" / "rebase-merge").mkdir()
            rebasing = await agent.call_tool("git_push", {"repository": str(repo), "branch": "feature/ok"})
    assert "git.detached_head" in _text(detached)
    assert "git.operation_in_progress" in _text(rebasing)
    assert _pushes(git_remote) == []


async def test_pushes_over_the_size_or_commit_caps_are_refused_before_anything_is_sent(
    tmp_path: Path, git_remote: GitRemote, workspace: Path, repo: Path
) -> None:
    setup = write_git_config(
        tmp_path / "hoop",
        git_remote,
        workspace=workspace,
        connection_extra="max_push_bytes: 20000\nmax_commits: 3\n",
    )
    run_git("switch", "-q", "-c", "feature/big", cwd=repo)
    commit(repo, {"big.bin": bytes(range(256)) * 200}, "big")
    run_git("switch", "-q", "-c", "feature/many", "feature/ok", cwd=repo)
    for i in range(3):
        commit(repo, {f"m{i}.txt": f"{i}\n"}, f"m{i}")
    async with hoop_server(setup) as (hoop, _), Client(hoop.mcp) as agent:
        with anyio.fail_after(60):
            big = await agent.call_tool("git_push", {"repository": str(repo), "branch": "feature/big"})
            many = await agent.call_tool("git_push", {"repository": str(repo), "branch": "feature/many"})
    assert "git.push_too_large" in _text(big)
    assert "git.too_many_commits" in _text(many)
    assert _pushes(git_remote) == []


async def test_a_missing_remote_repository_is_a_clear_error(
    tmp_path: Path, git_remote: GitRemote, workspace: Path, repo: Path
) -> None:
    setup = write_git_config(tmp_path / "hoop", git_remote, workspace=workspace)
    text = setup.config_path.read_text().replace(git_remote.url, git_remote.base_url + "/missing.git")
    setup.config_path.write_text(text)
    async with hoop_server(setup) as (hoop, _), Client(hoop.mcp) as agent:
        with anyio.fail_after(60):
            result = await agent.call_tool("git_push", {"repository": str(repo)})
    assert result.is_error
    assert "git.remote_not_found" in _text(result)


async def test_deleting_a_remote_branch_is_held_for_review_and_denied_without_a_review_rule(
    tmp_path: Path, git_remote: GitRemote, workspace: Path, repo: Path
) -> None:
    git_remote.seed({"old.txt": "old\n"}, branch="feature/old", message="old")
    allow_only = (
        "version: 1\nrules:\n  - id: feature-pushes\n    description: feature branches\n"
        "    verdict: allow\n    when: {tools: [git_push], refs: ['refs/heads/feature/*']}\n"
    )
    setup = write_git_config(tmp_path / "hoop", git_remote, workspace=workspace, policy=allow_only)
    async with hoop_server(setup) as (hoop, _), Client(hoop.mcp) as agent:
        with anyio.fail_after(60):
            result = await agent.call_tool(
                "git_push",
                {
                    "repository": str(repo),
                    "branch": "feature/ok",
                    "remote_branch": "feature/old",
                    "delete": True,
                },
            )
    assert result.is_error
    assert "git.needs_review" in _text(result)
    assert "refs/heads/feature/old" in git_remote.refs()
    assert _pushes(git_remote) == []
