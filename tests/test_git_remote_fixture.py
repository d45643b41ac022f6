"""The ``git_remote`` fixture behaves like a real authenticated smart-HTTP Git remote.

Credentials reach git only through the environment (``http.extraHeader`` via ``GIT_CONFIG_*``), never
argv or the URL; ``GIT_TERMINAL_PROMPT=0`` (from ``git_env``) makes a 401 fail instead of prompting.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import http.client
import os
import socket
import threading
from pathlib import Path

import pytest

from tests.support.git_remote import (
    GitRemote,
    commit,
    extra_header_env,
    run_git,
    running_git_remote,
)


def git(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run git; return (exit code, stdout + stderr)."""
    proc = run_git(*args, cwd=cwd, env=env, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def credential_forms(remote: GitRemote) -> list[str]:
    return [remote.token, base64.b64encode(f"{remote.username}:{remote.token}".encode()).decode()]


def test_a_push_with_the_right_credential_lands(git_remote: GitRemote, tmp_path: Path) -> None:
    wc = git_remote.working_copy(tmp_path / "wc")
    before = git_remote.refs()
    sha = commit(wc, {"app.py": "print('hi')\n"}, "add app")

    code, out = git("push", "origin", "main", cwd=wc, env=git_remote.auth_env())

    assert code == 0, out
    assert git_remote.refs()["refs/heads/main"] == sha != before["refs/heads/main"]
    assert git_remote.commit_count("refs/heads/main") == 2
    assert git_remote.read_file("main", "app.py") == b"print('hi')\n"
    pushes = [r for r in git_remote.requests if r.method == "POST" and r.service == "git-receive-pack"]
    assert pushes
    assert all(r.status == 200 for r in pushes)
    assert git_remote.errors == []


def test_a_wrong_token_gets_401_and_changes_nothing(git_remote: GitRemote, tmp_path: Path) -> None:
    wc = git_remote.working_copy(tmp_path / "wc")
    before = git_remote.refs()
    commit(wc, {"app.py": "x = 1\n"}, "add app")

    code, out = git("push", "origin", "main", cwd=wc, env=git_remote.auth_env(token="not-the-token"))

    assert code != 0
    assert "terminal prompts disabled" in out or "Authentication failed" in out, out
    assert git_remote.refs() == before
    statuses = {r.status for r in git_remote.requests}
    assert statuses == {401}
    assert git_remote.token not in out


def test_a_wrong_username_with_the_right_token_gets_401(git_remote: GitRemote) -> None:
    code, _ = git("ls-remote", git_remote.url, env=git_remote.auth_env(username="someone-else"))

    assert code != 0
    assert [r.status for r in git_remote.requests] == [401]


def test_no_credential_gets_401_with_a_basic_challenge(git_remote: GitRemote, tmp_path: Path) -> None:
    code, out = git("clone", git_remote.url, tmp_path / "clone")

    assert code != 0
    assert "terminal prompts disabled" in out, out
    assert not (tmp_path / "clone" / "README.md").exists()
    (request,) = git_remote.requests
    assert request.status == 401
    assert request.header("Authorization") is None

    conn = http.client.HTTPConnection("127.0.0.1", git_remote.port, timeout=10)
    try:
        conn.request("GET", "/app.git/info/refs?service=git-upload-pack")
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    assert response.status == 401
    assert response.getheader("WWW-Authenticate", "").startswith('Basic realm="')


def test_an_unauthenticated_chunked_upload_gets_a_clean_401(git_remote: GitRemote) -> None:
    """The server reads the body it refuses, so the client sees the 401 rather than a reset."""
    before = git_remote.refs()
    conn = http.client.HTTPConnection("127.0.0.1", git_remote.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/app.git/git-receive-pack",
            body=iter([os.urandom(64 * 1024) for _ in range(32)]),
            headers={"Content-Type": "application/x-git-receive-pack-request"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()

    assert response.status == 401
    (request,) = git_remote.requests
    assert request.header("Transfer-Encoding") == "chunked"
    assert request.body_bytes == 2 * 1024 * 1024
    assert git_remote.refs() == before


def test_a_pre_receive_hook_rejecting_a_branch_fails_the_push_with_its_message(
    git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.set_pre_receive(
        "#!/bin/sh\n"
        "while read old new ref; do\n"
        '  if [ "$ref" = refs/heads/main ]; then\n'
        '    echo "branch protection: direct pushes to main are not allowed" >&2\n'
        "    exit 1\n"
        "  fi\n"
        "done\n"
    )
    wc = git_remote.working_copy(tmp_path / "wc")
    before = git_remote.refs()
    commit(wc, {"app.py": "x = 2\n"}, "change")

    code, out = git("push", "origin", "main", cwd=wc, env=git_remote.auth_env())

    assert code != 0
    assert "remote: branch protection: direct pushes to main are not allowed" in out
    assert "pre-receive hook declined" in out
    assert git_remote.refs() == before

    # The same hook lets another branch through.
    code, out = git("push", "origin", "main:refs/heads/feature", cwd=wc, env=git_remote.auth_env())
    assert code == 0, out
    assert git_remote.refs()["refs/heads/feature"] != before["refs/heads/main"]
    assert git_remote.refs()["refs/heads/main"] == before["refs/heads/main"]


def test_a_3mb_push_arrives_chunked_and_lands_intact(git_remote: GitRemote, tmp_path: Path) -> None:
    wc = git_remote.working_copy(tmp_path / "wc")
    payload = os.urandom(3 * 1024 * 1024)  # incompressible: the pack stays ~3 MB
    sha = commit(wc, {"data/blob.bin": payload}, "big file")

    code, out = git("push", "origin", "main", cwd=wc, env=git_remote.auth_env())

    assert code == 0, out
    assert git_remote.refs()["refs/heads/main"] == sha
    stored = git_remote.read_file("main", "data/blob.bin")
    assert hashlib.sha256(stored).digest() == hashlib.sha256(payload).digest()
    chunked = [r for r in git_remote.requests if r.header("Transfer-Encoding") == "chunked"]
    assert chunked, "git sends bodies over http.postBuffer (1 MiB) chunked"
    assert all(r.status == 200 and r.body_bytes > 3 * 1024 * 1024 for r in chunked)
    git_remote.git("fsck", "--strict")
    assert git_remote.errors == []


@pytest.mark.slow
def test_a_50mb_push_lands_intact(git_remote: GitRemote, tmp_path: Path) -> None:
    wc = git_remote.working_copy(tmp_path / "wc")
    payload = os.urandom(50 * 1024 * 1024)
    sha = commit(wc, {"huge.bin": payload}, "huge file")

    code, out = git("push", "origin", "main", cwd=wc, env=git_remote.auth_env())

    assert code == 0, out
    assert git_remote.refs()["refs/heads/main"] == sha
    assert (
        hashlib.sha256(git_remote.read_file("main", "huge.bin")).digest() == hashlib.sha256(payload).digest()
    )


def test_ls_remote_lists_the_remotes_refs(git_remote: GitRemote) -> None:
    git_remote.seed({"f.txt": "feature\n"}, branch="feature", message="feature work")

    code, out = git("ls-remote", git_remote.url, env=git_remote.auth_env())

    assert code == 0, out
    listed = {ref: sha for sha, ref in (line.split("\t") for line in out.splitlines())}
    refs = git_remote.refs()
    assert listed["refs/heads/main"] == refs["refs/heads/main"]
    assert listed["refs/heads/feature"] == refs["refs/heads/feature"]
    assert listed["HEAD"] == refs["refs/heads/main"]


def test_requests_are_recorded_with_their_authorization_header_and_no_credentials_in_the_url(
    git_remote: GitRemote, tmp_path: Path
) -> None:
    code, out = git("clone", git_remote.url, tmp_path / "clone", env=git_remote.auth_env())
    assert code == 0, out
    commit(tmp_path / "clone", {"x.txt": "x\n"}, "x")
    code, out = git("push", "origin", "HEAD:main", cwd=tmp_path / "clone", env=git_remote.auth_env())
    assert code == 0, out

    requests = git_remote.requests
    assert {(r.method, r.service) for r in requests} >= {
        ("GET", "git-upload-pack"),
        ("POST", "git-upload-pack"),
        ("GET", "git-receive-pack"),
        ("POST", "git-receive-pack"),
    }
    expected = "Basic " + base64.b64encode(f"{git_remote.username}:{git_remote.token}".encode()).decode()
    assert all(r.header("authorization") == expected for r in requests)
    assert all(r.path.startswith("/app.git/") for r in requests)
    for secret in credential_forms(git_remote):
        assert all(secret not in r.path and secret not in r.query for r in requests)
        assert secret not in out
        assert secret not in (tmp_path / "clone" / ".git" / "config").read_text()
    assert git_remote.token not in git_remote.url
    assert "@" not in git_remote.url


def test_fail_with_503_makes_a_fetch_fail_until_cleared(git_remote: GitRemote, tmp_path: Path) -> None:
    wc = git_remote.working_copy(tmp_path / "wc")
    new_sha = git_remote.seed({"later.txt": "later\n"}, message="later")
    git_remote.fail_with(503)

    code, out = git("fetch", "origin", cwd=wc, env=git_remote.auth_env())

    assert code != 0
    assert "503" in out, out
    assert {r.status for r in git_remote.requests} == {503}

    git_remote.fail_with(None)
    code, out = git("fetch", "origin", cwd=wc, env=git_remote.auth_env())
    assert code == 0, out
    assert run_git("rev-parse", "origin/main", cwd=wc).stdout.strip() == new_sha


def test_down_refuses_connections_and_up_serves_again_on_the_same_port(
    git_remote: GitRemote, tmp_path: Path
) -> None:
    url = git_remote.url
    git_remote.down()

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", git_remote.port), timeout=5).close()
    code, out = git("ls-remote", url, env=git_remote.auth_env())
    assert code != 0
    assert "Failed to connect" in out or "Connection refused" in out, out

    git_remote.up()
    assert git_remote.url == url
    code, out = git("ls-remote", url, env=git_remote.auth_env())
    assert code == 0, out


def test_a_clone_whose_request_git_gzips_is_served(git_remote: GitRemote, tmp_path: Path) -> None:
    """git gzips upload-pack requests over 1 KiB; http-backend inflates them (Content-Encoding passed on)."""
    main = git_remote.refs()["refs/heads/main"]
    for i in range(40):
        git_remote.git("update-ref", f"refs/heads/topic-{i:02d}", main)

    code, out = git("clone", "--mirror", git_remote.url, tmp_path / "mirror", env=git_remote.auth_env())

    assert code == 0, out
    gzipped = [r for r in git_remote.requests if (r.header("Content-Encoding") or "").lower() == "gzip"]
    assert gzipped
    assert all(r.status == 200 for r in gzipped)
    assert run_git("rev-parse", "refs/heads/topic-39", cwd=tmp_path / "mirror").stdout.strip() == main


def test_git_http_backend_runs_with_a_clean_environment(
    git_remote: GitRemote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_HOOP_LEAK_CHECK", "leaked")
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'core.hookspath'='/nonexistent'")
    dump = tmp_path / "hook-env.txt"
    git_remote.set_pre_receive(f"#!/bin/sh\nenv > '{dump}'\nexit 0\n")
    wc = git_remote.working_copy(tmp_path / "wc")
    commit(wc, {"a.txt": "a\n"}, "a")

    code, out = git("push", "origin", "main", cwd=wc, env=git_remote.auth_env())

    assert code == 0, out
    env = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert "GIT_HOOP_LEAK_CHECK" not in env
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["HOME"] != os.environ.get("HOME")
    assert env["REMOTE_USER"] == git_remote.username
    assert "HTTP_AUTHORIZATION" not in env
    assert git_remote.token not in dump.read_text()


def test_every_remote_gets_its_own_random_token(git_remote: GitRemote, tmp_path: Path) -> None:
    with running_git_remote(tmp_path / "other") as other:
        assert other.token != git_remote.token
        assert len(other.token) >= 24
        code, _ = git("ls-remote", other.url, env=other.auth_env(token=git_remote.token))
        assert code != 0
        code, _ = git("ls-remote", other.url, env=other.auth_env())
        assert code == 0


def test_seed_commits_straight_into_the_bare_repo_without_running_hooks(git_remote: GitRemote) -> None:
    git_remote.set_pre_receive("exit 1\n")
    before = git_remote.commit_count("main")

    sha = git_remote.seed({"docs/a.md": "# a\n"}, message="docs")

    assert git_remote.refs()["refs/heads/main"] == sha
    assert git_remote.commit_count("main") == before + 1
    assert git_remote.read_file("main", "README.md").startswith(b"# app")
    assert git_remote.requests == []


def test_a_working_copy_tracks_the_plain_url_on_the_requested_branch(
    git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.seed({"f.txt": "f\n"}, branch="feature")

    wc = git_remote.working_copy(tmp_path / "wc", branch="feature")

    assert run_git("remote", "get-url", "origin", cwd=wc).stdout.strip() == git_remote.url
    assert run_git("symbolic-ref", "--short", "HEAD", cwd=wc).stdout.strip() == "feature"
    assert (wc / "f.txt").read_text() == "f\n"
    new = git_remote.working_copy(tmp_path / "wc2", branch="agent/new-branch")
    assert run_git("symbolic-ref", "--short", "HEAD", cwd=new).stdout.strip() == "agent/new-branch"


def test_concurrent_clones_are_all_served_and_recorded(git_remote: GitRemote, tmp_path: Path) -> None:
    def clone(i: int) -> tuple[int, str]:
        return git("clone", "-q", git_remote.url, tmp_path / f"c{i}", env=git_remote.auth_env())

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(clone, range(6)))

    assert all(code == 0 for code, _ in results), results
    assert len([r for r in git_remote.requests if r.path.endswith("/info/refs")]) == 6
    assert git_remote.errors == []


def test_a_stopped_remote_leaves_no_threads_behind(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    with running_git_remote(tmp_path / "r") as remote:
        code, out = git("ls-remote", remote.url, env=remote.auth_env())
        assert code == 0, out
    assert set(threading.enumerate()) <= before


def test_an_authorization_header_without_basic_scheme_is_refused(git_remote: GitRemote) -> None:
    code, _ = git(
        "ls-remote", git_remote.url, env=extra_header_env(f"Authorization: Bearer {git_remote.token}")
    )

    assert code != 0
    assert [r.status for r in git_remote.requests] == [401]
