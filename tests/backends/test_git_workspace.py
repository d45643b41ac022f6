"""What an agent may name for a push: branch names and working copies, checked before git runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoop_mcp.backends.git_workspace import ref_name, working_copy
from hoop_mcp.core.errors import InvalidInput
from tests.support.git_remote import commit, run_git

HOSTILE_BRANCHES = [
    ("-f", "git.invalid_ref"),
    ("--upload-pack=touch /tmp/x", "git.invalid_ref"),
    ("--force", "git.invalid_ref"),
    ("main:main", "git.refspec_syntax"),
    (":main", "git.refspec_syntax"),
    ("+main", "git.refspec_syntax"),
    ("feature/*", "git.refspec_syntax"),
    ("refs/heads/*:refs/heads/*", "git.refspec_syntax"),
    ("ma?n", "git.refspec_syntax"),
    ("ma[i]n", "git.refspec_syntax"),
    ("main^", "git.refspec_syntax"),
    ("main~1", "git.refspec_syntax"),
    ("ma in", "git.refspec_syntax"),
    ("main\n", "git.refspec_syntax"),
    ("ma\x00in", "git.refspec_syntax"),
    ("back\\slash", "git.refspec_syntax"),
    ("refs/heads/main", "git.invalid_ref"),
    ("HEAD", "git.invalid_ref"),
    ("HEAD~1", "git.refspec_syntax"),
    ("a..b", "git.invalid_ref"),
    ("@{-1}", "git.invalid_ref"),
    ("@", "git.invalid_ref"),
    ("branch.lock", "git.invalid_ref"),
    ("trailing/", "git.invalid_ref"),
    ("trailing.", "git.invalid_ref"),
    ("a//b", "git.invalid_ref"),
    (".hidden", "git.invalid_ref"),
    ("feature/.hidden", "git.invalid_ref"),
    ("x" * 201, "git.invalid_ref"),
    ("", "git.invalid_ref"),
]


@pytest.mark.parametrize(("name", "rule"), HOSTILE_BRANCHES)
def test_hostile_branch_names_are_refused_with_a_named_rule(name: str, rule: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        ref_name(name, what="branch")
    assert caught.value.details["rule_id"] == rule


@pytest.mark.parametrize("name", ["main", "feature/login", "fix/JIRA-12_x", "release/1.2.3", "v1.0"])
def test_plain_branch_names_are_accepted_as_given(name: str) -> None:
    assert ref_name(name, what="branch") == name


@pytest.mark.parametrize("value", [None, 3, True, ["main"], {"a": 1}])
def test_a_branch_that_is_not_a_string_is_refused(value: object) -> None:
    with pytest.raises(InvalidInput):
        ref_name(value, what="branch")


@given(st.text(max_size=60))
def test_an_accepted_branch_name_never_looks_like_an_option_or_a_refspec(name: str) -> None:
    try:
        accepted = ref_name(name, what="branch")
    except InvalidInput:
        return
    assert not accepted.startswith("-")
    assert not set(accepted) & set(":+*?[\\^~ \t\n\x00")
    assert ".." not in accepted


def _clone(root: Path, name: str = "app") -> Path:
    repo = root / name
    run_git("init", "-q", "--initial-branch=main", repo)
    run_git("config", "user.name", "T", cwd=repo)
    run_git("config", "user.email", "t@example.invalid", cwd=repo)
    commit(repo, {"a.txt": "a\n"}, "a")
    return repo


def test_a_working_copy_inside_the_roots_is_accepted_with_its_branch(tmp_path: Path) -> None:
    repo = _clone(tmp_path)
    copy = working_copy(str(repo), roots=(tmp_path,))
    assert copy.path == repo.resolve()
    assert copy.git_dir == (repo / ".git").resolve()
    assert copy.head_branch == "main"


def test_paths_outside_the_roots_and_traversal_are_refused(tmp_path: Path) -> None:
    inside = tmp_path / "ws"
    inside.mkdir()
    outside = _clone(tmp_path, "elsewhere")
    for value, rule in (
        (str(outside), "git.path_outside_roots"),
        (str(inside / ".." / "elsewhere"), "git.path_outside_roots"),
        ("relative/path", "git.invalid_repository"),
        ("", "git.invalid_repository"),
        ("/tmp/x\x00y", "git.invalid_repository"),
        ("ext::sh -c touch% /tmp/pwned", "git.invalid_repository"),
        (str(inside / "missing"), "git.invalid_repository"),
    ):
        with pytest.raises(InvalidInput) as caught:
            working_copy(value, roots=(inside,))
        assert caught.value.details["rule_id"] == rule, value


def test_a_symlink_inside_the_roots_pointing_outside_is_refused(tmp_path: Path) -> None:
    inside = tmp_path / "ws"
    inside.mkdir()
    outside = _clone(tmp_path, "elsewhere")
    os.symlink(outside, inside / "link")
    with pytest.raises(InvalidInput) as caught:
        working_copy(str(inside / "link"), roots=(inside,))
    assert caught.value.details["rule_id"] == "git.path_outside_roots"


def test_a_gitdir_file_or_alternates_pointing_outside_the_roots_are_refused(tmp_path: Path) -> None:
    inside = tmp_path / "ws"
    inside.mkdir()
    outside = _clone(tmp_path, "elsewhere")
    pointer = inside / "pointer"
    pointer.mkdir()
    (pointer / ".git").write_text(f"gitdir: {outside / '.git'}\n")
    with pytest.raises(InvalidInput) as caught:
        working_copy(str(pointer), roots=(inside,))
    assert caught.value.details["rule_id"] == "git.path_outside_roots"

    borrower = _clone(inside, "borrower")
    alternates = borrower / ".git" / "objects" / "info" / "alternates"
    alternates.write_text(str(outside / ".git" / "objects") + "\n")
    with pytest.raises(InvalidInput) as caught:
        working_copy(str(borrower), roots=(inside,))
    assert caught.value.details["rule_id"] == "git.path_outside_roots"


@pytest.mark.parametrize("marker", ["rebase-merge", "rebase-apply", "MERGE_HEAD", "CHERRY_PICK_HEAD"])
def test_a_working_copy_in_the_middle_of_an_operation_is_refused(tmp_path: Path, marker: str) -> None:
    repo = _clone(tmp_path)
    target = repo / ".git" / marker
    if marker.startswith("rebase"):
        target.mkdir()
    else:
        target.write_text("0" * 40 + "\n")
    with pytest.raises(InvalidInput) as caught:
        working_copy(str(repo), roots=(tmp_path,))
    assert caught.value.details["rule_id"] == "git.operation_in_progress"


def test_a_detached_head_has_no_branch(tmp_path: Path) -> None:
    repo = _clone(tmp_path)
    run_git("checkout", "-q", "--detach", cwd=repo)
    assert working_copy(str(repo), roots=(tmp_path,)).head_branch is None


def test_a_directory_that_is_not_a_working_copy_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(InvalidInput) as caught:
        working_copy(str(plain), roots=(tmp_path,))
    assert caught.value.details["rule_id"] == "git.invalid_repository"


def test_a_commondir_pointing_outside_the_roots_is_refused(tmp_path: Path) -> None:
    inside = tmp_path / "ws"
    inside.mkdir()
    outside = _clone(tmp_path, "elsewhere")
    evil = _clone(inside, "evil")
    (evil / ".git" / "commondir").write_text(str(outside / ".git") + "\n")
    with pytest.raises(InvalidInput) as caught:
        working_copy(str(evil), roots=(inside,))
    assert caught.value.details["rule_id"] == "git.path_outside_roots"


def test_alternates_are_refused_even_when_they_point_inside_the_roots(tmp_path: Path) -> None:
    # Alternates chain (a -> b -> outside): no alternates at all is the only safe answer.
    inside = tmp_path / "ws"
    inside.mkdir()
    other = _clone(inside, "other")
    borrower = _clone(inside, "borrower")
    (borrower / ".git" / "objects" / "info" / "alternates").write_text(str(other / ".git" / "objects") + "\n")
    with pytest.raises(InvalidInput) as caught:
        working_copy(str(borrower), roots=(inside,))
    assert caught.value.details["rule_id"] == "git.path_outside_roots"
