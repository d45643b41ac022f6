"""Validate what an agent names for a push: the working copy (inside the workspace roots, not in the
middle of a rebase) and the branch (git's ref rules, no refspec syntax, no option injection).

Nothing here runs git in the agent's repository: its files are read directly, because its config
(``core.fsmonitor``, ``core.sshCommand``, ``url.*.insteadOf`` ...) is the agent's to write.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from hoop_mcp.core.errors import InvalidInput

#: Longest branch or tag name accepted (git allows more; nobody needs it).
MAX_REF_NAME = 200
#: Characters that make a name a refspec or a pattern rather than a branch (git forbids most of
#: them in ref names too; this gives a clearer message).
_REFSPEC_CHARS = re.compile(r"[:+*?\[\\^~\s\x00-\x1f\x7f]")
_IN_PROGRESS = {
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or 'git am'",
    "MERGE_HEAD": "a merge",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
    "BISECT_LOG": "a bisect",
}


def _invalid(message: str, rule: str, hint: str | None = None) -> InvalidInput:
    return InvalidInput(message, hint=hint, details={"rule_id": rule})


@dataclass(frozen=True, slots=True)
class WorkingCopy:
    #: The working tree (resolved, inside a workspace root).
    path: Path
    #: Its git directory (resolved, inside a workspace root).
    git_dir: Path
    #: The branch HEAD points at, or ``None`` when HEAD is detached.
    head_branch: str | None


def _inside(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def resolve_roots(roots: tuple[Path, ...]) -> tuple[Path, ...]:
    return tuple(Path(os.path.realpath(root)) for root in roots)


def working_copy(value: object, *, roots: tuple[Path, ...]) -> WorkingCopy:
    """The agent's working copy named by ``repository``, checked. Raises InvalidInput."""
    if not isinstance(value, str) or not value:
        raise _invalid(
            "'repository' must be the absolute path of a git working copy", "git.invalid_repository"
        )
    if len(value) > 4096 or "\x00" in value or any(ord(c) < 32 for c in value):
        raise _invalid("'repository' is not a valid path", "git.invalid_repository")
    if "::" in value:
        raise _invalid(
            "'repository' must be a local path, not a remote or transport", "git.invalid_repository"
        )
    raw = Path(value)
    if not raw.is_absolute():
        raise _invalid(
            f"'repository' must be an absolute path, got {value!r}",
            "git.invalid_repository",
            hint="give the full path of your working copy, e.g. " + str(roots[0] / "my-repo"),
        )
    if ".." in raw.parts:
        raise _invalid("'repository' must not contain '..'", "git.path_outside_roots")
    path = Path(os.path.realpath(raw))
    listing = ", ".join(str(r) for r in roots)
    if not _inside(path, roots):
        raise _invalid(
            f"{value!r} is outside the workspace roots this connection allows ({listing})",
            "git.path_outside_roots",
        )
    if not path.is_dir():
        raise _invalid(f"{value!r} is not a directory", "git.invalid_repository")
    git_dir = _git_dir(path)
    if git_dir is None:
        raise _invalid(f"{value!r} is not a git working copy (no .git)", "git.invalid_repository")
    if not _inside(git_dir, roots):
        raise _invalid(
            f"the git directory of {value!r} is outside the workspace roots ({listing})",
            "git.path_outside_roots",
        )
    common = _common_dir(git_dir)
    if not _inside(common, roots):
        raise _invalid(
            f"the git directory of {value!r} points (commondir) outside the workspace roots ({listing})",
            "git.path_outside_roots",
        )
    for base in {git_dir, common}:
        if (base / "objects" / "info" / "alternates").exists():
            # Alternates chain up to five levels and could reach any repository the server can
            # read: repositories that borrow objects are refused outright.
            raise _invalid(
                f"{value!r} borrows objects from another repository (objects/info/alternates); "
                "push from a standalone clone",
                "git.path_outside_roots",
            )
    for marker, what in _IN_PROGRESS.items():
        if (git_dir / marker).exists():
            raise _invalid(
                f"{value!r} is in the middle of {what}; finish or abort it before pushing",
                "git.operation_in_progress",
            )
    return WorkingCopy(path=path, git_dir=git_dir, head_branch=_head_branch(git_dir))


def _git_dir(path: Path) -> Path | None:
    dot = path / ".git"
    if dot.is_dir():
        return Path(os.path.realpath(dot))
    if dot.is_file():
        try:
            text = dot.read_text("utf-8", "replace")[:4096]
        except OSError:
            return None
        if text.startswith("gitdir:"):
            target = Path(text[len("gitdir:") :].strip())
            target = target if target.is_absolute() else path / target
            return Path(os.path.realpath(target)) if target.is_dir() else None
    return None


def _common_dir(git_dir: Path) -> Path:
    """The main repository's git directory (for linked worktrees)."""
    try:
        text = (git_dir / "commondir").read_text("utf-8", "replace").strip()
    except OSError:
        return git_dir
    target = Path(text)
    return Path(os.path.realpath(target if target.is_absolute() else git_dir / target))


def _head_branch(git_dir: Path) -> str | None:
    try:
        head = (git_dir / "HEAD").read_text("utf-8", "replace").strip()
    except OSError:
        return None
    if head.startswith("ref: refs/heads/"):
        return head[len("ref: refs/heads/") :]
    return None


def ref_name(value: object, *, what: str) -> str:
    """A branch or tag name as the agent gives it: short (``feature/x``), one ref, no refspec
    syntax, not an option. git's own ``check-ref-format`` runs afterwards as well."""
    if not isinstance(value, str) or not value:
        raise _invalid(f"'{what}' must be a non-empty branch name", "git.invalid_ref")
    shown = value[:80]
    if len(value) > MAX_REF_NAME:
        raise _invalid(f"'{what}' is longer than {MAX_REF_NAME} characters", "git.invalid_ref")
    if value.startswith("-"):
        raise _invalid(
            f"'{what}' {shown!r} starts with '-' (it would be read as an option)", "git.invalid_ref"
        )
    if _REFSPEC_CHARS.search(value):
        raise _invalid(
            f"'{what}' {shown!r} contains refspec or pattern syntax (':', '+', '*', '?', '[', '^', '~', "
            "'\\\\' or whitespace): give exactly one plain branch name",
            "git.refspec_syntax",
            hint="force pushes, deletions and several refs are separate, policy-controlled options",
        )
    if value.startswith("refs/") or value == "HEAD" or value.startswith("HEAD"):
        raise _invalid(
            f"'{what}' must be a short branch name such as 'main' or 'feature/x', not {shown!r}",
            "git.invalid_ref",
        )
    if (
        ".." in value
        or "@{" in value
        or value == "@"
        or value.endswith((".lock", "/", "."))
        or "//" in value
        or any(part.startswith(".") for part in value.split("/"))
    ):
        raise _invalid(f"'{what}' {shown!r} is not a valid git branch name", "git.invalid_ref")
    return value
