"""A hoop-mcp configuration with a git connection pointed at a real authenticated remote."""

from __future__ import annotations

from pathlib import Path

from tests.support.git_remote import GitRemote
from tests.support.hoop import APPROVALS, STATIC_AGENT, HoopSetup, write_single_connection_config

#: Reads anywhere; feature branches pushed freely; main and release branches need a maintainer;
#: force pushes, deletions and tag overwrites need a maintainer too.
GIT_POLICY = """\
version: 1
rules:
  - id: git-reads
    description: Agents may look at what a push would send and at the remote's branches
    verdict: allow
    when: {tools: [git_outgoing, git_remote_branches]}
  - id: feature-pushes
    description: Feature and fix branches are the agent's own
    verdict: allow
    when: {tools: [git_push], refs: ["refs/heads/feature/*", "refs/heads/fix/*"]}
  - id: protected-branches
    description: main and release branches need a maintainer's approval
    verdict: review
    review: {approver_groups: [maintainers], ttl_seconds: 600}
    when: {tools: [git_push], refs_any: ["refs/heads/main", "refs/heads/release/*"]}
  - id: history-rewrites
    description: Force pushes, deletions and tag overwrites need a maintainer's approval
    verdict: review
    review: {approver_groups: [maintainers], ttl_seconds: 600}
    when: {tools: [git_push], flags_any: [force_push, ref_delete, tag_overwrite]}
"""


def write_git_config(
    workdir: Path,
    remote: GitRemote,
    *,
    workspace: Path,
    policy: str = GIT_POLICY,
    identity: str = STATIC_AGENT,
    extra: str = APPROVALS,
    connection_extra: str = "",
    token_env: str = "APP_GIT_TOKEN",  # noqa: S107 - the name of an env var, not a secret
) -> HoopSetup:
    """Config + policy in ``workdir``; the remote's token reaches the server as ``token_env``."""
    return write_single_connection_config(
        workdir,
        name="app",
        connection="    kind: git\n"
        + "    description: the application repository\n"
        + f"    remote_url: {remote.url}\n"
        + f"    username: {remote.username}\n"
        + f"    token: {{env: {token_env}}}\n"
        + f"    workspace_roots: [{workspace}]\n"
        + "    timeout_s: 30\n",
        policy=policy,
        identity=identity,
        extra=extra,
        connection_extra=connection_extra,
        environ={token_env: remote.token},
    )
