"""MCP tools for Git: ``git_push`` (guarded), ``git_outgoing`` and ``git_remote_branches`` (reads).

The agent names its working copy and branch; the server computes the plan (the outgoing commit
range, files, diffstat, fast-forward or not, secret scan), and policy, confirmation and approval
decide on it. The credential stays in the server.
"""

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, Elicit, ElicitationResult, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field, StrictBool

from hoop_mcp.core.models import OutcomeStatus, Plan
from hoop_mcp.core.pipeline import CallResult, Prepared
from hoop_mcp.server.app import (
    ConfirmForm,
    HoopServer,
    PendingApproval,
    _confirmation_from,
    _NoQuestion,
    confirmation_question,
    connections_of_kind,
    tool_arguments,
)

GIT_INSTRUCTIONS = """\
Git: commit in your own working copy, then call git_outgoing to see what a push would send (commits,
files, secret-scan findings), and git_push to push a branch; the server holds the credential, so
never put one in a remote URL or config. A push is blocked when the outgoing commits contain a
secret: remove it from every commit (rewrite history), then push again. Force pushes, deletions
and protected branches need another person's approval when policy allows them at all.
"""


class GitCommitInfo(BaseModel):
    sha: str
    author: str
    date: str
    subject: str
    merge: bool


class GitFileChange(BaseModel):
    path: str
    insertions: int
    deletions: int
    binary: bool


class GitFinding(BaseModel):
    """A secret found in an outgoing commit (the secret itself is never shown)."""

    path: str
    line: int
    rule: str
    description: str
    commit: str
    preview: str = Field(description="Masked: at most the provider's public prefix")
    fingerprint: str = Field(description="<commit>:<path>:<rule>:<line>, for an operator's allow list")


class GitPlanInfo(BaseModel):
    """What a push sends, as the server computed it (masked)."""

    target: str = Field(description="The remote ref, e.g. refs/heads/main")
    local_sha: str | None
    remote_sha: str | None = Field(description="Where the remote ref is now (None: it does not exist)")
    fast_forward: bool
    commit_count: int
    commits: list[GitCommitInfo] = Field(description="Newest first (at most 100 listed)")
    file_count: int
    files: list[GitFileChange]
    insertions: int
    deletions: int
    bytes: int = Field(description="Uncompressed size of the new objects")
    finding_count: int
    findings: list[GitFinding]


class GitPushResult(BaseModel):
    """A push (or, when ``outcome`` is ``pending_approval``, a push waiting for approval)."""

    call_id: str
    outcome: Literal["ok", "pending_approval"] = "ok"
    pending_approval: PendingApproval | None = None
    connection: str
    rule_id: str = Field(description="The policy rule that allowed (or holds) the push")
    confirmed_by_user: bool
    ref: str
    old_sha: str | None
    new_sha: str | None
    result: str = Field(description="git's own summary of the ref update, e.g. 'abc..def' or '[new branch]'")
    plan: GitPlanInfo | None
    message: str


class GitOutgoing(BaseModel):
    call_id: str
    connection: str
    plan: GitPlanInfo
    push_would_be_blocked: bool = Field(description="True when the secret scan found something")
    message: str


class GitBranch(BaseModel):
    branch: str
    sha: str


class GitBranches(BaseModel):
    connection: str
    branches: list[GitBranch]
    truncated: bool
    message: str


def plan_info(plan: Plan | None) -> GitPlanInfo | None:
    est: dict[str, Any] = dict(plan.estimate or {}) if plan is not None else {}
    if "target" not in est:
        return None

    def ints(key: str) -> int:
        value = est.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    def strs(key: str) -> str | None:
        value = est.get(key)
        return value if isinstance(value, str) else None

    return GitPlanInfo(
        target=str(est["target"]),
        local_sha=strs("local_sha"),
        remote_sha=strs("remote_sha"),
        fast_forward=bool(est.get("fast_forward")),
        commit_count=ints("commit_count"),
        commits=[
            GitCommitInfo(
                sha=str(c.get("sha")),
                author=str(c.get("author")),
                date=str(c.get("date")),
                subject=str(c.get("subject")),
                merge=int(c.get("parents") or 0) > 1,
            )
            for c in est.get("commits") or []
            if isinstance(c, dict)
        ],
        file_count=ints("file_count"),
        files=[
            GitFileChange(
                path=str(f.get("path")),
                insertions=int(f.get("insertions") or 0),
                deletions=int(f.get("deletions") or 0),
                binary=bool(f.get("binary")),
            )
            for f in est.get("files") or []
            if isinstance(f, dict)
        ],
        insertions=ints("insertions"),
        deletions=ints("deletions"),
        bytes=ints("bytes"),
        finding_count=ints("finding_count"),
        findings=[
            GitFinding.model_validate(_finding(f)) for f in est.get("findings") or [] if isinstance(f, dict)
        ],
    )


def _finding(f: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": str(f.get("path")),
        "line": int(f.get("line") or 0),
        "rule": str(f.get("rule")),
        "description": str(f.get("description")),
        "commit": str(f.get("commit")),
        "preview": str(f.get("preview")),
        "fingerprint": str(f.get("fingerprint")),
    }


def push_result(server: HoopServer, result: CallResult, connection: str) -> GitPushResult:
    """The structured result of a git_push call (ok or pending approval); raises otherwise."""
    plan = plan_info(result.plan)
    if result.status is OutcomeStatus.PENDING and result.approval is not None:
        return GitPushResult(
            call_id=result.call_id,
            outcome="pending_approval",
            pending_approval=server.pending_model(result.approval),
            connection=connection,
            rule_id=result.decision.rule_id,
            confirmed_by_user=False,
            ref=plan.target if plan else "",
            old_sha=plan.remote_sha if plan else None,
            new_sha=plan.local_sha if plan else None,
            result="",
            plan=plan,
            message=result.message,
        )
    if result.status is not OutcomeStatus.OK:
        raise ToolError(result.message)
    row = result.rows[0] if result.rows else [None, None, None, ""]
    return GitPushResult(
        call_id=result.call_id,
        connection=connection,
        rule_id=result.decision.rule_id,
        confirmed_by_user=bool(result.confirmation and result.confirmation.accepted),
        ref=str(row[0] or (plan.target if plan else "")),
        old_sha=row[1] if isinstance(row[1], str) else None,
        new_sha=row[2] if isinstance(row[2], str) else None,
        result=str(row[3] or ""),
        plan=plan,
        message=result.command_status or result.message,
    )


_Repo = Annotated[
    str,
    Field(
        description="Absolute path of your git working copy (inside the allowed workspace roots)",
        max_length=4096,
    ),
]
_Branch = Annotated[
    str | None,
    Field(description="Local branch to push (default: the checked-out branch)", max_length=200),
]
_RemoteBranch = Annotated[
    str | None, Field(description="Branch on the remote (default: the same name)", max_length=200)
]
_Conn = Annotated[
    str | None, Field(description="Git connection name (default: the only git connection)", max_length=64)
]


def register_git_tools(server: HoopServer) -> None:
    """Add the git tools when the server has at least one git connection."""

    async def prepare_push(
        repository: str,
        branch: str | None,
        remote_branch: str | None,
        connection: str | None,
        force: bool,
        delete: bool,
        tag: bool,
    ) -> Prepared:
        name = server.connection_of_kind("git", connection)
        args = tool_arguments(
            connection=name,
            repository=repository,
            branch=branch,
            remote_branch=remote_branch,
            force=force,
            delete=delete,
            tag=tag,
        )
        return await server._prepare("git_push", name, args)

    async def ask_confirmation(
        prepared: Annotated[Prepared, Resolve(prepare_push)], ctx: Context[Any, Any]
    ) -> _NoQuestion | Elicit[ConfirmForm]:
        return confirmation_question(prepared, ctx)

    async def git_push(
        repository: _Repo,
        prepared: Annotated[Prepared, Resolve(prepare_push)],
        answer: Annotated[ElicitationResult[ConfirmForm], Resolve(ask_confirmation)],
        branch: _Branch = None,
        remote_branch: _RemoteBranch = None,
        connection: _Conn = None,
        force: Annotated[
            StrictBool, Field(description="Overwrite the remote branch (needs a policy rule with review)")
        ] = False,
        delete: Annotated[
            StrictBool, Field(description="Delete the remote branch (needs a policy rule with review)")
        ] = False,
        tag: Annotated[
            StrictBool, Field(description="Push the tag named by 'branch' instead of a branch")
        ] = False,
    ) -> GitPushResult:
        """Push a branch of your working copy to the configured remote, under policy.

        The server computes what would be sent (commits, files, fast-forward or not), scans every
        outgoing commit for secrets (a finding blocks the push), and pushes with its own credential.
        Protected branches may need approval by another person. Denials name the rule."""
        confirmation = _confirmation_from(prepared, answer)
        result = await server._run(prepared, confirmation)
        return push_result(server, result, prepared.connection or "")

    async def git_outgoing(
        repository: _Repo,
        branch: _Branch = None,
        remote_branch: _RemoteBranch = None,
        connection: _Conn = None,
        tag: Annotated[StrictBool, Field(description="Look at the tag named by 'branch'")] = False,
    ) -> GitOutgoing:
        """Show what git_push would send: the outgoing commits, files, diffstat, whether it is a
        fast-forward, and any secrets the scan finds (masked). Pushes nothing."""
        name = server.connection_of_kind("git", connection)
        args = tool_arguments(
            connection=name, repository=repository, branch=branch, remote_branch=remote_branch, tag=tag
        )
        result = await server._read("git_outgoing", name, args)
        plan = plan_info(result.plan)
        if plan is None:
            raise ToolError("No plan could be computed. Nothing was executed.")
        blocked = plan.finding_count > 0
        note = (
            f" PUSH WOULD BE BLOCKED: {plan.finding_count} secret(s) found; remove them from every commit."
            if blocked
            else ""
        )
        message = (
            f"{plan.commit_count} commit(s), {plan.file_count} file(s) (+{plan.insertions} -{plan.deletions}) "
            f"would go to {plan.target} ({'fast-forward' if plan.fast_forward else 'NOT a fast-forward'})."
            + note
        )
        return GitOutgoing(
            call_id=result.call_id, connection=name, plan=plan, push_would_be_blocked=blocked, message=message
        )

    async def git_remote_branches(
        connection: _Conn = None,
        pattern: Annotated[
            str | None, Field(description="Glob of branch names, e.g. 'feature/*'", max_length=200)
        ] = None,
    ) -> GitBranches:
        """List the remote's branches (name and commit), read with the server's credential."""
        name = server.connection_of_kind("git", connection)
        result = await server._read(
            "git_remote_branches", name, tool_arguments(connection=name, pattern=pattern)
        )
        branches = [GitBranch(branch=str(r[0]), sha=str(r[1])) for r in result.rows]
        return GitBranches(
            connection=name,
            branches=branches,
            truncated=result.truncated,
            message=f"{result.row_count} branch(es) on '{name}'"
            + (" (list truncated)" if result.truncated else ""),
        )

    if not connections_of_kind(server, "git"):
        return
    server.add_tool(git_push, "Push a branch (guarded)", read_only=False, open_world=True)
    server.add_tool(git_outgoing, "What a push would send", read_only=True, open_world=True)
    server.add_tool(git_remote_branches, "List remote branches", read_only=True, open_world=True)
