"""Git benchmarks: push-protection scan throughput, and git_push's added latency over a plain push.

Run from the repository root: ``python tools/bench/bench_git.py [--scan-mb 50] [--pushes 10]``

* **Scan throughput**: a branch whose outgoing commits add ``--scan-mb`` MB of realistic source
  lines (Python-like code, config assignments, JSON, prose; a few high-entropy values) across
  ``--scan-commits`` commits. Measured twice: the scanner alone over the same added lines, and the
  whole scan path the backend runs (``git log -p`` of every outgoing commit, patch parsing, scanner).
  Reported as MB of added lines per second.
* **Push latency**: the same one-commit push, ``--pushes`` times each, to a real smart-HTTP remote
  behind Basic auth on loopback: plain ``git push`` (credential by askpass) vs ``git_push`` through an
  in-memory MCP client, the whole pipeline (identity, plan with remote sync and scan, policy, audit
  records, push). Printed with medians and the ratio.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
from mcp import Client  # noqa: E402
from tests.support.git_remote import GitRemote, commit, git_env, run_git  # noqa: E402
from tests.support.gitsetup import write_git_config  # noqa: E402

from hoop_mcp.core.secret_scan import SecretScanner  # noqa: E402
from hoop_mcp.runtime import open_runtime  # noqa: E402
from hoop_mcp.server.app import HoopServer  # noqa: E402

WORDS = ["user", "order", "total", "price", "name", "items", "status", "config", "value", "result", "index"]


def _line(rng: random.Random) -> str:
    kind = rng.random()
    a, b = rng.choice(WORDS), rng.choice(WORDS)
    if kind < 0.55:
        return f"    {a}_{b} = compute_{b}({a}, limit={rng.randint(1, 999)})  # {b} for {a}"
    if kind < 0.7:
        return f'    "{a}": {{"{b}": {rng.randint(0, 10**6)}, "enabled": true}},'
    if kind < 0.85:
        return f"The {a} is derived from the {b}; see section {rng.randint(1, 40)} for details."
    if kind < 0.995:
        return f"def {a}_{b}_{rng.randint(0, 9999)}(self, {a}: int, {b}: str) -> None:"
    token = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(32))
    return f'    cache_key = "{token}"'


def _scan_repo(
    base: Path, megabytes: float, commits: int
) -> tuple[Path, list[tuple[str, list[tuple[int, str]]]]]:
    """A repository whose branch adds ``megabytes`` MB over ``commits`` commits; returns the added lines."""
    rng = random.Random(7)
    repo = base / "scan-repo"
    run_git("init", "-q", "--initial-branch=main", repo)
    run_git("config", "user.name", "Bench", cwd=repo)
    run_git("config", "user.email", "bench@example.invalid", cwd=repo)
    commit(repo, {"README.md": "bench\n"}, "base")
    per_commit = int(megabytes * 1_000_000 / commits)
    files: list[tuple[str, list[tuple[int, str]]]] = []
    for c in range(commits):
        path = f"src/module_{c:03d}.py"
        lines: list[tuple[int, str]] = []
        size = 0
        while size < per_commit:
            text = _line(rng)
            lines.append((len(lines) + 1, text))
            size += len(text) + 1
        commit(repo, {path: "\n".join(t for _, t in lines) + "\n"}, f"module {c}")
        files.append((path, lines))
    return repo, files


def bench_scan(megabytes: float, commits: int) -> None:
    from hoop_mcp.backends.git_cli import Credential, GitRunner
    from hoop_mcp.backends.git_scan import patch_args, scan_patch

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        repo, files = _scan_repo(base, megabytes, commits)
        added = sum(len(t) + 1 for _, lines in files for _, t in lines)
        mb = added / 1_000_000
        scanner = SecretScanner()
        started = time.perf_counter()
        alone = sum(len(scanner.scan_added(path, lines)) for path, lines in files)
        scan_only = time.perf_counter() - started

        runner = GitRunner(
            private_dir=base / "private", remote_scheme="https", credential=Credential(), timeout_s=600
        )
        base_sha = run_git("rev-list", "--max-parents=0", "HEAD", cwd=repo).stdout.strip()
        started = time.perf_counter()
        with runner.stream(["-C", str(repo), *patch_args("HEAD", [base_sha])], cwd=repo) as proc:
            assert proc.stdout is not None
            full = sum(1 for _ in scan_patch(proc.stdout, scanner))
        whole = time.perf_counter() - started
    print(f"scan: {mb:.1f} MB of added lines in {commits} commits")
    print(f"  scanner alone:              {mb / scan_only:7.1f} MB/s  ({scan_only:.2f} s, {alone} findings)")
    print(f"  git log -p + parse + scan:  {mb / whole:7.1f} MB/s  ({whole:.2f} s, {full} findings)")


async def _hoop_pushes(base: Path, remote: GitRemote, repo: Path, count: int) -> list[float]:
    setup = write_git_config(base / "hoop", remote, workspace=base / "ws")
    runtime = await open_runtime(setup.config_path, environ=setup.environ)
    times: list[float] = []
    try:
        server = HoopServer(pipeline=runtime.pipeline, name="bench")
        async with Client(server.mcp) as client:
            for i in range(count + 1):
                commit(repo, {"hoop.txt": f"{i}\n"}, f"hoop {i}")
                started = time.perf_counter()
                result = await client.call_tool("git_push", {"repository": str(repo)})
                elapsed = time.perf_counter() - started
                if result.is_error:
                    raise SystemExit(f"git_push failed: {result.content}")
                if i:  # the first push also builds the staging repository
                    times.append(elapsed)
    finally:
        await runtime.aclose()
    return times


def _plain_pushes(base: Path, remote: GitRemote, repo: Path, count: int) -> list[float]:
    askpass = base / "askpass.sh"
    askpass.write_text('#!/bin/sh\ncase "$1" in Username*) echo "$U";; *) echo "$P";; esac\n')
    askpass.chmod(0o700)
    env = git_env({"GIT_ASKPASS": str(askpass), "U": remote.username, "P": remote.token})
    git = shutil.which("git") or "git"
    times: list[float] = []
    for i in range(count + 1):
        commit(repo, {"plain.txt": f"{i}\n"}, f"plain {i}")
        started = time.perf_counter()
        subprocess.run(
            [git, "push", "-q", remote.url, "HEAD:refs/heads/feature/plain"],
            cwd=repo,
            env=env,
            check=True,
            capture_output=True,
        )
        if i:
            times.append(time.perf_counter() - started)
    return times


def bench_push(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "ws").mkdir()
        with GitRemote(base / "remote") as remote:
            plain_repo = remote.working_copy(base / "plain")
            run_git("switch", "-q", "-c", "feature/plain", cwd=plain_repo)
            hoop_repo = remote.working_copy(base / "ws" / "app")
            run_git("switch", "-q", "-c", "feature/hoop", cwd=hoop_repo)
            plain = _plain_pushes(base, remote, plain_repo, count)
            hoop = anyio.run(_hoop_pushes, base, remote, hoop_repo, count)
    p, h = statistics.median(plain) * 1000, statistics.median(hoop) * 1000
    print(f"push latency: one commit, {count} pushes each, smart HTTP + Basic auth on loopback")
    print(f"  plain git push:             median {p:7.1f} ms")
    print(f"  git_push (MCP, pipeline):   median {h:7.1f} ms")
    print(f"  ratio git_push / plain:     {h / p:5.2f}x  (+{h - p:.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan-mb", type=float, default=50.0)
    parser.add_argument("--scan-commits", type=int, default=50)
    parser.add_argument("--pushes", type=int, default=10)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    bench_scan(args.scan_mb, args.scan_commits)
    bench_push(args.pushes)


if __name__ == "__main__":
    main()
