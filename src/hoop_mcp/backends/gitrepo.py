"""Git backend: plan a push as its outgoing commit range, scan it for secrets, push with the
server's credential.

The agent's working copy is only ever *read*: its branch is fetched (git's upload-pack, the way
``git clone --no-local`` reads an untrusted repository) into a staging repository the server owns,
next to a mirror of the remote's refs. Everything else (the range, ancestry, the scan, the push)
runs in the staging repository, with the hardened environment of :mod:`git_cli`. The push uses
``--force-with-lease`` pinned to the remote sha the plan saw, so exactly the planned range lands or
nothing does.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import anyio.to_thread
from pydantic import JsonValue

from hoop_mcp.backends.git_cli import GitResult, GitRunner, check_ref_format
from hoop_mcp.backends.git_scan import (
    MAX_LISTED_FINDINGS,
    CommitFinding,
    patch_args,
    scan_messages,
    scan_patch,
)
from hoop_mcp.backends.git_workspace import WorkingCopy, ref_name, resolve_roots, working_copy
from hoop_mcp.config import GitConnection
from hoop_mcp.core.backend import PlannedCall, ResultColumn, TableResult
from hoop_mcp.core.errors import BackendError, BackendRejected, BackendUnavailable, InvalidInput
from hoop_mcp.core.models import Decision, Plan, Verdict
from hoop_mcp.core.secret_scan import SecretScanner

log = logging.getLogger(__name__)

GIT_TOOLS = ("git_push", "git_outgoing", "git_remote_branches")
_REMOTE_MIRROR = "refs/hoop/remote/"
_INCOMING = "refs/hoop/incoming/current"
_SHA = re.compile(r"^[0-9a-f]{40}$")
#: Commits listed in full in a plan (all are scanned and counted).
MAX_LISTED_COMMITS = 100
MAX_LISTED_FILES = 200
MAX_REMOTE_BRANCHES = 1000
_MESSAGE_BODY_CHARS = 2000


class GitBackend:
    kind = "git"

    def __init__(
        self,
        *,
        name: str,
        settings: GitConnection,
        staging: Path,
        runner: GitRunner,
        scanner: SecretScanner,
    ) -> None:
        self.name = name
        self.settings = settings
        self._staging = staging
        self._runner = runner
        self._scanner = scanner
        self._roots = resolve_roots(settings.workspace_roots)
        self._allowed = frozenset(settings.scan.allow_findings)

    async def close(self) -> None:
        return None

    # -- git helpers --------------------------------------------------------------------------------
    def _git(
        self,
        *args: str,
        remote: bool = False,
        local_file: bool = False,
        global_config: Path | None = None,
        stdin: bytes | None = None,
    ) -> GitResult:
        return self._runner.run(
            ["--git-dir", str(self._staging), *args],
            cwd=self._staging,
            remote=remote,
            local_file=local_file,
            global_config=global_config,
            stdin=stdin,
        )

    def _ensure_staging(self) -> None:
        if (self._staging / "HEAD").exists():
            return
        self._staging.mkdir(parents=True, exist_ok=True, mode=0o700)
        result = self._runner.run(["init", "--bare", "--quiet", str(self._staging)], cwd=self._staging)
        if not result.ok:
            raise BackendUnavailable(f"cannot create the staging repository: {_last_line(result.stderr)}")

    def _sync_remote(self) -> None:
        """Mirror the remote's branches and tags into the staging repository (credential used)."""
        result = self._git(
            "fetch",
            "--prune",
            "--no-tags",
            "--no-write-fetch-head",
            "--quiet",
            "--",
            self.settings.remote_url,
            f"+refs/heads/*:{_REMOTE_MIRROR}heads/*",
            f"+refs/tags/*:{_REMOTE_MIRROR}tags/*",
            remote=True,
        )
        if not result.ok:
            raise self._remote_error(result, "read the remote")

    def _remote_error(self, result: GitResult, action: str) -> BackendError:
        err = result.stderr
        low = err.lower()
        where = f"connection {self.name!r}"
        if any(
            s in low
            for s in (
                "authentication failed",
                "could not read username",
                "could not read password",
                "terminal prompts disabled",
                "returned error: 401",
                "permission denied (publickey",
            )
        ):
            return BackendRejected(
                f"the remote refused the server's credential ({where}): authentication failed; "
                "nothing was pushed",
                hint="an operator must check the connection's token or deploy key",
                details={"rule_id": "git.auth_failed"},
            )
        if (
            "returned error: 404" in low
            or "not found" in low
            or "does not appear to be a git repository" in low
        ):
            return BackendRejected(
                f"the remote repository of {where} does not exist or is not visible to the server's "
                "credential; nothing was pushed",
                hint="an operator must check the connection's remote_url",
                details={"rule_id": "git.remote_not_found"},
            )
        if "returned error: 403" in low or "access denied" in low:
            return BackendRejected(
                f"the server's credential may not {action} ({where}): permission denied; nothing was pushed",
                details={"rule_id": "git.permission_denied"},
            )
        if any(
            s in low
            for s in (
                "could not resolve host",
                "failed to connect",
                "connection refused",
                "timed out",
                "returned error: 5",
                "connection reset",
                "empty reply",
                "unable to access",
                "host key verification failed",
            )
        ):
            return BackendUnavailable(
                f"the remote of {where} cannot be reached ({_last_line(err)})",
                hint="nothing was pushed; retry later or ask an operator to check the remote",
                details={"rule_id": "git.remote_unavailable"},
            )
        return BackendRejected(
            f"git could not {action} ({where}): {_last_line(err)}", details={"rule_id": "git.remote_error"}
        )

    def _rev(self, spec: str) -> str | None:
        result = self._git("rev-parse", "--verify", "--quiet", "--end-of-options", spec)
        sha = result.text().strip()
        return sha if result.ok and _SHA.match(sha) else None

    # -- planning ----------------------------------------------------------------------------------
    async def plan(self, *, tool: str, arguments: Mapping[str, JsonValue]) -> PlannedCall:
        if tool == "git_remote_branches":
            pattern = arguments.get("pattern")
            if pattern is not None and (not isinstance(pattern, str) or len(pattern) > 200):
                raise InvalidInput("'pattern' must be a glob of at most 200 characters")
            return PlannedCall(
                plan=Plan(
                    effect="read",
                    effects=("read",),
                    command="LS-REMOTE",
                    summary=f"list the remote branches of {self.name}",
                ),
                private={"op": "branches", "pattern": pattern or "*"},
            )
        if tool not in ("git_push", "git_outgoing"):
            raise InvalidInput(f"the git backend has no tool {tool!r}")
        request = _PushRequest.read(arguments, roots=self._roots, tool=tool)
        return await anyio.to_thread.run_sync(lambda: self._plan_push(request))

    def _plan_push(self, request: _PushRequest) -> PlannedCall:
        with self._runner.lock:
            self._ensure_staging()
            for name in (request.branch, request.remote_branch):
                if not check_ref_format(self._runner, f"refs/heads/{name}", cwd=self._staging):
                    raise InvalidInput(
                        f"{name!r} is not a valid git branch name (git check-ref-format)",
                        details={"rule_id": "git.invalid_ref"},
                    )
            local = None if request.delete else self._fetch_local(request)
            again = working_copy(str(request.copy.path), roots=self._roots)
            if again.git_dir != request.copy.git_dir:
                raise InvalidInput(
                    f"{request.copy.path} changed while it was being read; nothing was pushed",
                    details={"rule_id": "git.repository_changed"},
                )
            self._sync_remote()
            remote = self._rev(f"{_REMOTE_MIRROR}{request.namespace}/{request.remote_branch}")
            return self._build_plan(request, local=local, remote=remote)

    def _fetch_local(self, request: _PushRequest) -> str:
        source = f"refs/{request.namespace}/{request.branch}"
        result = self._git(
            "fetch",
            "--no-tags",
            "--no-write-fetch-head",
            "--quiet",
            "--",
            str(request.copy.path),
            f"+{source}:{_INCOMING}",
            local_file=True,
            global_config=self._runner.trust_for_reading([request.copy.path, request.copy.git_dir]),
        )
        if not result.ok:
            err = result.stderr.lower()
            if "couldn't find remote ref" in err:
                raise InvalidInput(
                    f"{request.copy.path} has no {request.kind} {request.branch!r}",
                    hint="commit your work on a branch first; 'git branch' lists them",
                    details={"rule_id": "git.no_such_branch"},
                )
            if "dubious ownership" in err:
                raise BackendRejected(
                    f"{request.copy.path} belongs to another user, so the server will not read it",
                    hint="run hoop-mcp as the owner of the workspace (see docs/git.md)",
                    details={"rule_id": "git.dubious_ownership"},
                )
            raise InvalidInput(
                f"the branch could not be read from {request.copy.path}: {_last_line(result.stderr)}",
                details={"rule_id": "git.unreadable_repository"},
            )
        sha = self._rev(f"{_INCOMING}^{{commit}}")
        if sha is None:
            raise InvalidInput(
                f"{request.branch!r} does not point at a commit", details={"rule_id": "git.invalid_ref"}
            )
        return self._rev(_INCOMING) or sha  # an annotated tag is pushed as the tag object

    def _build_plan(self, request: _PushRequest, *, local: str | None, remote: str | None) -> PlannedCall:
        target = f"refs/{request.namespace}/{request.remote_branch}"
        flags: list[str] = []
        fast_forward = True
        if request.delete:
            if remote is None:
                raise InvalidInput(
                    f"the remote has no {request.kind} {request.remote_branch!r}: nothing to delete",
                    details={"rule_id": "git.no_such_remote_ref"},
                )
            flags.append("ref_delete")
        elif remote is None:
            flags.append("new_ref")
        elif remote != local:
            fast_forward = request.kind == "branch" and self._is_ancestor(remote, local or "")
            if request.kind == "tag":
                if not request.force:
                    raise InvalidInput(
                        f"the remote already has tag {request.remote_branch!r} pointing elsewhere; tags are "
                        "not overwritten unless you ask for force (and policy allows it)",
                        details={"rule_id": "git.tag_exists"},
                    )
                flags.append("tag_overwrite")
            elif not fast_forward:
                if not request.force:
                    raise InvalidInput(
                        f"not a fast-forward: the remote {request.remote_branch!r} has commits your branch "
                        "does not have",
                        hint="fetch and rebase or merge, then push again",
                        details={"rule_id": "git.non_fast_forward"},
                    )
                flags.append("force_push")
        if request.kind == "tag" and not request.delete:
            flags.append("tag_push")
        commits: list[dict[str, JsonValue]] = []
        files: dict[str, list[int]] = {}
        findings: list[CommitFinding] = []
        size = 0
        count = 0
        exclude = [f"--glob={_REMOTE_MIRROR}*"]
        if local is not None and local != remote:
            count = self._count(local, exclude)
            if count > self.settings.max_commits:
                raise InvalidInput(
                    f"the push would send {count} commits; this connection allows at most "
                    f"{self.settings.max_commits} per push",
                    details={"rule_id": "git.too_many_commits"},
                )
            size = self._size(local, exclude)
            if size > self.settings.max_push_bytes:
                raise InvalidInput(
                    f"the push would send {_human(size)} of new objects; this connection allows at most "
                    f"{_human(self.settings.max_push_bytes)} per push",
                    details={"rule_id": "git.push_too_large"},
                )
            commits = self._commits(local, exclude)
            files = self._numstat(local, exclude)
            findings = self._scan(local, exclude)
        if request.delete:
            command = "delete"
        elif {"force_push", "tag_overwrite"} & set(flags):
            command = "force-push"
        else:
            command = "push-tag" if request.kind == "tag" else "push"
        short = _short(local) if local else "(delete)"
        statement = (
            f"{command} {local or '(none)'} -> {target} on {self.name} "
            f"(remote at {remote or '(none)'}; {count} new commit(s); "
            f"{'fast-forward' if fast_forward else 'NOT a fast-forward'})"
        )
        inserted = sum(v[0] for v in files.values())
        deleted = sum(v[1] for v in files.values())
        summary = (
            f"{command} {count} commit(s), {len(files)} file(s) (+{inserted} -{deleted}) from "
            f"{request.branch} at {short} to {target} on {self.name}"
        )
        listed = findings[:MAX_LISTED_FINDINGS]
        estimate: dict[str, JsonValue] = {
            "target": target,
            "local_sha": local,
            "remote_sha": remote,
            "fast_forward": fast_forward,
            "commit_count": count,
            "commits": commits[:MAX_LISTED_COMMITS],  # type: ignore[dict-item]
            "files": [
                {"path": path, "insertions": v[0], "deletions": v[1], "binary": v[2] == 1}
                for path, v in sorted(files.items())[:MAX_LISTED_FILES]
            ],
            "file_count": len(files),
            "insertions": inserted,
            "deletions": deleted,
            "bytes": size,
            "findings": [_finding_json(f) for f in listed],
            "finding_count": len(findings),
        }
        plan = Plan(
            effect="read" if request.tool == "git_outgoing" else "write",
            effects=("read",) if request.tool == "git_outgoing" else ("write",),
            command=command.upper(),
            refs=() if request.tool == "git_outgoing" else (target,),
            flags=tuple(sorted(set(flags))) if request.tool == "git_push" else (),
            statement=statement,
            estimate=estimate,
            summary=summary,
        )
        refusal = None
        if findings and request.tool == "git_push":
            refusal = _secret_refusal(findings)
        private: dict[str, Any] = {
            "op": "push" if request.tool == "git_push" else "outgoing",
            "local": local,
            "remote": remote,
            "target": target,
            "force": bool({"force_push", "tag_overwrite"} & set(flags)),
            "delete": request.delete,
            "repository": str(request.copy.path),
            "branch": request.branch,
            "commits": commits,
        }
        return PlannedCall(plan=plan, refusal=refusal, private=private)

    def _is_ancestor(self, older: str, newer: str) -> bool:
        return self._git("merge-base", "--is-ancestor", older, newer).returncode == 0

    def _count(self, tip: str, exclude: list[str]) -> int:
        result = self._git("rev-list", "--count", tip, "--not", *exclude, "--")
        try:
            return int(result.text().strip())
        except ValueError:
            raise BackendRejected(f"cannot list the outgoing commits: {_last_line(result.stderr)}") from None

    def _size(self, tip: str, exclude: list[str]) -> int:
        """Bytes of the objects the push would send (uncompressed)."""
        listed = self._git("rev-list", "--objects", "--no-object-names", tip, "--not", *exclude, "--")
        if not listed.ok:
            raise BackendRejected(f"cannot list the outgoing objects: {_last_line(listed.stderr)}")
        sizes = self._git("cat-file", "--batch-check=%(objectsize)", stdin=listed.stdout)
        if not sizes.ok:
            raise BackendRejected(f"cannot size the outgoing objects: {_last_line(sizes.stderr)}")
        return sum(int(x) for x in sizes.text().split() if x.isdigit())

    def _commits(self, tip: str, exclude: list[str]) -> list[dict[str, JsonValue]]:
        fmt = "%H%x1f%an%x1f%ae%x1f%aI%x1f%cn%x1f%ce%x1f%P%x1f%s%x1f%b%x1e"
        result = self._git(
            "log", f"--format={fmt}", f"--max-count={MAX_LISTED_COMMITS}", tip, "--not", *exclude, "--"
        )
        out: list[dict[str, JsonValue]] = []
        for record in result.text().split("\x1e"):
            parts = record.strip("\n").split("\x1f")
            if len(parts) != 9:
                continue
            sha, an, ae, date, cn, ce, parents, subject, body = parts
            out.append(
                {
                    "sha": sha,
                    "author": f"{an} <{ae}>",
                    "committer": f"{cn} <{ce}>",
                    "date": date,
                    "parents": len(parents.split()),
                    "subject": subject,
                    "body": body.strip()[:_MESSAGE_BODY_CHARS],
                }
            )
        return out

    def _numstat(self, tip: str, exclude: list[str]) -> dict[str, list[int]]:
        """path -> [insertions, deletions, binary] over every outgoing commit."""
        result = self._git(
            "log", "--format=", "--numstat", "-z", "--no-renames", tip, "--not", *exclude, "--"
        )
        if not result.ok:
            raise BackendRejected(f"cannot list the outgoing files: {_last_line(result.stderr)}")
        files: dict[str, list[int]] = {}
        for entry in result.text().split("\x00"):
            entry = entry.strip("\n")
            parts = entry.split("\t", 2)
            if len(parts) != 3 or not parts[2]:
                continue
            added, removed, path = parts
            row = files.setdefault(path, [0, 0, 0])
            if added == "-":
                row[2] = 1
            else:
                row[0] += int(added) if added.isdigit() else 0
                row[1] += int(removed) if removed.isdigit() else 0
        return files

    def _scan(self, tip: str, exclude: list[str]) -> list[CommitFinding]:
        seen: set[tuple[str, str, int]] = set()
        out: list[CommitFinding] = []
        with self._runner.stream(
            ["--git-dir", str(self._staging), *patch_args(tip, exclude)], cwd=self._staging
        ) as proc:
            assert proc.stdout is not None  # noqa: S101 - stdout=PIPE
            for found in scan_patch(proc.stdout, self._scanner):
                key = (found.finding.rule_id, found.finding.path, found.finding.line)
                if key in seen or found.fingerprint in self._allowed:
                    continue
                seen.add(key)
                out.append(found)
            code = proc.wait()
        messages = self._git("log", "--format=%H%x00%an <%ae>%n%B%x1e", tip, "--not", *exclude, "--")
        if not messages.ok:
            code = code or messages.returncode
        for found in scan_messages(messages.text(), self._scanner):
            if found.fingerprint not in self._allowed:
                out.append(found)
        if self._rev(f"{tip}^{{tag}}") == tip:  # an annotated tag: its message goes too
            tag = self._git("cat-file", "tag", tip)
            lines = [(i + 1, t) for i, t in enumerate(tag.text().split("\n"))]
            out += [
                CommitFinding(commit=tip, finding=f) for f in self._scanner.scan_added("(tag message)", lines)
            ]
        if code != 0:
            # Not scanned is not clean: fail closed.
            raise BackendUnavailable(
                "the outgoing commits could not be read completely for secret scanning; nothing was pushed",
                details={"rule_id": "git.scan_failed"},
            )
        return out

    # -- showing -----------------------------------------------------------------------------------
    def render(
        self, planned: PlannedCall, *, mask: Callable[[str], str], for_confirmation: bool
    ) -> str | None:
        """The push as an approver reads it: target, range, commits, files, findings (masked)."""
        if planned.private.get("op") not in ("push", "outgoing"):
            return None
        est = planned.plan.estimate or {}
        lines = [planned.plan.statement or ""]
        lines.append(
            f"from branch {planned.private.get('branch')!s} of {planned.private.get('repository')!s}"
        )
        lines.append(
            f"{est.get('commit_count')} commit(s), {est.get('file_count')} file(s) changed, "
            f"+{est.get('insertions')} -{est.get('deletions')}, {_human(_int(est.get('bytes')))} of new objects"
        )
        commits = est.get("commits")
        if isinstance(commits, list) and commits:
            lines.append("commits (oldest last):")
            for c in commits:
                if isinstance(c, dict):
                    merge = " (merge)" if _int(c.get("parents")) > 1 else ""
                    lines.append(f"  {str(c.get('sha'))[:12]} {c.get('author')} {c.get('date')}{merge}")
                    lines.append(f"      {c.get('subject')}")
        files = est.get("files")
        if isinstance(files, list) and files:
            lines.append("files:")
            for f in files:
                if isinstance(f, dict):
                    change = "binary" if f.get("binary") else f"+{f.get('insertions')} -{f.get('deletions')}"
                    lines.append(f"  {f.get('path')}  {change}")
        findings = est.get("findings")
        if isinstance(findings, list) and findings:
            lines.append(f"SECRETS FOUND ({est.get('finding_count')}):")
            for f in findings:
                if isinstance(f, dict):
                    lines.append(
                        f"  {f.get('path')}:{f.get('line')} {f.get('rule')} in {str(f.get('commit'))[:12]}"
                    )
        return mask("\n".join(lines))

    async def estimate(self, planned: PlannedCall) -> PlannedCall:
        return planned  # the plan already holds the range, the diffstat and the scan

    # -- execution ---------------------------------------------------------------------------------
    async def execute(self, planned: PlannedCall) -> TableResult:
        op = planned.private.get("op")
        if op == "push":
            return await anyio.to_thread.run_sync(lambda: self._push(planned))
        if op == "outgoing":
            return _commit_table(planned)
        if op == "branches":
            return await anyio.to_thread.run_sync(lambda: self._branches(str(planned.private["pattern"])))
        raise InvalidInput("unknown operation")

    def _push(self, planned: PlannedCall) -> TableResult:
        p = planned.private
        local, remote, target = p["local"], p["remote"], str(p["target"])
        if not p["delete"] and local == remote:
            return TableResult(
                columns=_PUSH_COLUMNS,
                rows=[[target, remote, local, "up to date"]],
                row_count=0,
                command_status="PUSH 0 (up to date)",
            )
        refspec = f":{target}" if p["delete"] else f"{'+' if p['force'] else ''}{local}:{target}"
        lease = f"--force-with-lease={target}:{remote or ''}"
        with self._runner.lock:
            result = self._git(
                "push",
                "--porcelain",
                "--no-verify",
                "--no-follow-tags",
                "--no-recurse-submodules",
                lease,
                "--",
                self.settings.remote_url,
                refspec,
                remote=True,
            )
            status = _porcelain_status(result.text(), target)
            if not result.ok or status is None or status[0] == "!":
                raise self._push_error(result, status)
            mirror = f"{_REMOTE_MIRROR}{target.removeprefix('refs/')}"
            if p["delete"]:
                self._git("update-ref", "-d", mirror)
            else:
                self._git("update-ref", mirror, str(local))
        summary = status[1]
        count = _int((planned.plan.estimate or {}).get("commit_count"))
        verb = "deleted" if p["delete"] else f"pushed {count} commit(s) to"
        return TableResult(
            columns=_PUSH_COLUMNS,
            rows=[[target, remote, local, summary]],
            row_count=count,
            command_status=f"{verb} {target} ({summary})",
        )

    def _push_error(self, result: GitResult, status: tuple[str, str] | None) -> BackendError:
        remote_lines = [
            line.removeprefix("remote:").strip()
            for line in result.stderr.splitlines()
            if line.startswith("remote:") and line.removeprefix("remote:").strip()
        ][:20]
        said = f" The remote said: {' | '.join(remote_lines)[:2000]}" if remote_lines else ""
        if status is not None and status[0] == "!":
            reason = status[1]
            if "stale info" in reason or "fetch first" in reason or "non-fast-forward" in reason:
                return BackendRejected(
                    f"the remote branch moved since the push was planned ({reason}); nothing was pushed",
                    hint="call git_push again to see the new plan",
                    details={"rule_id": "git.remote_moved"},
                )
            return BackendRejected(
                f"the remote rejected the push ({reason}); nothing was pushed.{said}",
                details={"rule_id": "git.push_rejected"},
            )
        error = self._remote_error(result, "push")
        if isinstance(error, BackendUnavailable):
            return BackendUnavailable(
                error.message.replace("; nothing was pushed", ""),
                hint="the push may or may not have landed: check with git_remote_branches before retrying",
                details=error.details,
            )
        if said and isinstance(error, BackendRejected):
            error.message += said
        return error

    def _branches(self, pattern: str) -> TableResult:
        with self._runner.lock:
            self._ensure_staging()
        result = self._git("ls-remote", "--heads", "--refs", "--", self.settings.remote_url, remote=True)
        if not result.ok:
            raise self._remote_error(result, "list the remote's branches")
        rows: list[list[JsonValue]] = []
        for line in result.text().splitlines():
            sha, _, ref = line.partition("\t")
            name = ref.removeprefix("refs/heads/")
            if fnmatchcase(name, pattern):
                rows.append([name, sha])
        rows.sort()
        truncated = len(rows) > MAX_REMOTE_BRANCHES
        return TableResult(
            columns=(ResultColumn("branch", "text"), ResultColumn("sha", "text")),
            rows=rows[:MAX_REMOTE_BRANCHES],
            row_count=len(rows),
            truncated=truncated,
            truncated_reason="max_rows" if truncated else None,
            command_status=f"{len(rows)} branch(es)",
        )


@dataclass(frozen=True, slots=True)
class _PushRequest:
    """The arguments of git_push / git_outgoing, checked."""

    tool: str
    copy: WorkingCopy
    branch: str
    remote_branch: str
    kind: str
    force: bool
    delete: bool

    @property
    def namespace(self) -> str:
        """``heads`` or ``tags``."""
        return "tags" if self.kind == "tag" else "heads"

    @classmethod
    def read(cls, arguments: Mapping[str, JsonValue], *, roots: tuple[Path, ...], tool: str) -> _PushRequest:
        for key in ("force", "delete", "tag"):
            value = arguments.get(key, False)
            if not isinstance(value, bool):
                raise InvalidInput(
                    f"'{key}' must be true or false", details={"rule_id": "git.invalid_argument"}
                )
        copy = working_copy(arguments.get("repository"), roots=roots)
        branch_arg = arguments.get("branch")
        if branch_arg is None:
            if copy.head_branch is None:
                raise InvalidInput(
                    f"{copy.path} has a detached HEAD: name the branch to push",
                    hint="or check out a branch: git switch -c my-branch",
                    details={"rule_id": "git.detached_head"},
                )
            branch_arg = copy.head_branch
        branch = ref_name(branch_arg, what="branch")
        remote_arg = arguments.get("remote_branch")
        remote_branch = branch if remote_arg is None else ref_name(remote_arg, what="remote_branch")
        delete = bool(arguments.get("delete", False))
        if delete and tool != "git_push":
            raise InvalidInput("'delete' only applies to git_push")
        return cls(
            tool=tool,
            copy=copy,
            branch=branch,
            remote_branch=remote_branch,
            kind="tag" if arguments.get("tag", False) else "branch",
            force=bool(arguments.get("force", False)),
            delete=delete,
        )


_PUSH_COLUMNS = (
    ResultColumn("ref", "text"),
    ResultColumn("old_sha", "text"),
    ResultColumn("new_sha", "text"),
    ResultColumn("result", "text"),
)


def _commit_table(planned: PlannedCall) -> TableResult:
    commits = planned.private.get("commits") or []
    rows: list[list[JsonValue]] = [
        [c["sha"], c["author"], c["date"], c["subject"], c["parents"]] for c in commits if isinstance(c, dict)
    ]
    count = _int((planned.plan.estimate or {}).get("commit_count"))
    return TableResult(
        columns=(
            ResultColumn("sha", "text"),
            ResultColumn("author", "text"),
            ResultColumn("date", "text"),
            ResultColumn("subject", "text"),
            ResultColumn("parents", "int"),
        ),
        rows=rows,
        row_count=count,
        truncated=count > len(rows),
        truncated_reason="max_rows" if count > len(rows) else None,
        command_status=f"{count} outgoing commit(s)",
    )


def _porcelain_status(text: str, target: str) -> tuple[str, str] | None:
    """(flag, summary) of ``target`` in ``git push --porcelain`` output."""
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1].endswith(":" + target):
            return parts[0][:1] or " ", parts[2]
    return None


def _finding_json(found: CommitFinding) -> dict[str, JsonValue]:
    f = found.finding
    return {
        "rule": f.rule_id,
        "description": f.description,
        "path": f.path,
        "line": f.line,
        "commit": found.commit,
        "preview": f.preview,
        "fingerprint": found.fingerprint,
    }


def _secret_refusal(findings: list[CommitFinding]) -> Decision:
    shown = findings[:10]
    where = "; ".join(
        f"{c.finding.path}:{c.finding.line} ({c.finding.rule_id}, commit {c.commit[:12]}, {c.finding.preview})"
        for c in shown
    )
    more = f" and {len(findings) - len(shown)} more" if len(findings) > len(shown) else ""
    return Decision(
        verdict=Verdict.DENY,
        rule_id="git.secret_detected",
        reason=(
            f"push protection: {len(findings)} secret(s) found in the outgoing commits: {where}{more}. "
            "Remove them from EVERY commit (rewrite the history, e.g. git rebase -i), rotate any real "
            "credential, and push again; a false positive can be allowed by an operator "
            "(docs/git.md, scan.allow_findings)"
        ),
    )


def _short(sha: str | None) -> str:
    return (sha or "")[:12]


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else "no detail"
