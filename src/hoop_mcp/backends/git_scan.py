"""Push protection: read every outgoing commit's patch (``git log -p``) and scan its added lines.

Every commit of the range is read, not just the tip: a secret added in one commit and removed in
the next is still in the history that would be pushed. Merge commits are read against their first
parent, so lines that only a merge introduces are scanned too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from hoop_mcp.core.secret_scan import Finding, SecretScanner, looks_binary

_HUNK = re.compile(rb"^@@+ [^@]*\+(\d+)(?:,(\d+))? @@")
#: Most findings reported for one push (more are counted, not listed).
MAX_LISTED_FINDINGS = 50


@dataclass(frozen=True, slots=True)
class CommitFinding:
    commit: str
    finding: Finding

    @property
    def fingerprint(self) -> str:
        """``<commit>:<path>:<rule>:<line>``, as gitleaks' ``.gitleaksignore`` writes it."""
        f = self.finding
        return f"{self.commit}:{f.path}:{f.rule_id}:{f.line}"


def unquote_path(raw: str) -> str:
    """A path as git prints it: C-quoted when it holds special characters."""
    if not (raw.startswith('"') and raw.endswith('"') and len(raw) >= 2):
        return raw
    body = raw[1:-1].encode("latin-1", "backslashreplace")
    out = bytearray()
    i = 0
    escapes = {ord("n"): 10, ord("t"): 9, ord('"'): 34, ord("\\"): 92, ord("a"): 7, ord("b"): 8}
    escapes |= {ord("f"): 12, ord("r"): 13, ord("v"): 11}
    while i < len(body):
        c = body[i]
        if c == 92 and i + 1 < len(body):
            nxt = body[i + 1]
            if 48 <= nxt <= 55 and i + 3 < len(body) + 1:
                digits = body[i + 1 : i + 4]
                try:
                    out.append(int(digits, 8) & 0xFF)
                    i += 4
                    continue
                except ValueError:
                    pass
            if nxt in escapes:
                out.append(escapes[nxt])
                i += 2
                continue
        out.append(c)
        i += 1
    return out.decode("utf-8", "replace")


def _new_path(line: bytes) -> str | None:
    """The path of a ``+++ b/path`` header (``None`` for ``/dev/null``: a deletion)."""
    raw = line[4:].rstrip(b"\r\n").decode("utf-8", "surrogateescape")
    raw = raw.split("\t", 1)[0] if not raw.startswith('"') else raw
    if raw == "/dev/null":
        return None
    path = unquote_path(raw)
    return path[2:] if path.startswith("b/") else path


def scan_patch(lines: Iterable[bytes], scanner: SecretScanner) -> Iterator[CommitFinding]:
    """Findings in a ``git log -p -U0 --format=%x00%H`` stream, in order."""
    commit = ""
    path: str | None = None
    added: list[tuple[int, str]] = []
    in_hunk = False
    next_line = 0

    def flush() -> Iterator[CommitFinding]:
        if path is not None and added and not scanner.path_allowed(path):
            for finding in scanner.scan_added(path, added):
                yield CommitFinding(commit=commit, finding=finding)

    for line in lines:
        first = line[:1]
        if in_hunk and first == b"+":
            text = line[1:].rstrip(b"\n").decode("utf-8", "replace")
            if looks_binary(text):
                # Never drop a line: blank out what cannot be text and scan the rest.
                text = text.replace("\x00", " ").replace("\ufffd", " ")
            added.append((next_line, text.rstrip("\r")))
            next_line += 1
            continue
        if in_hunk and first in (b"-", b" ", b"\\"):
            if first == b" ":
                next_line += 1
            continue
        if first == b"@":
            match = _HUNK.match(line)
            if match is not None:
                in_hunk = True
                next_line = int(match.group(1))
            continue
        if line.startswith(b"\x00"):
            yield from flush()
            commit = line[1:].strip().decode("ascii", "replace")
            path, added, in_hunk = None, [], False
            continue
        if line.startswith(b"diff --git "):
            yield from flush()
            path, added, in_hunk = None, [], False
            continue
        if line.startswith(b"+++ ") and not in_hunk:
            path = _new_path(line)
            continue
        if line.startswith(b"Binary files ") and not in_hunk:
            path = None  # binary: nothing to scan
            continue
    yield from flush()


#: Pseudo-path under which commit messages (and tag messages) are scanned.
MESSAGE_PATH = "(commit message)"


def scan_messages(records: str, scanner: SecretScanner) -> Iterator[CommitFinding]:
    """Findings in ``git log --format=%H%x00%an <%ae>%n%B%x1e`` output (messages and authors)."""
    for record in records.split("\x1e"):
        sha, sep, body = record.strip("\n").partition("\x00")
        if not sep:
            continue
        lines = [(i + 1, line.replace("\x00", " ")) for i, line in enumerate(body.split("\n"))]
        for finding in scanner.scan_added(MESSAGE_PATH, lines):
            yield CommitFinding(commit=sha, finding=finding)


def patch_args(tip: str, exclude: Sequence[str]) -> list[str]:
    """``git log`` arguments printing every outgoing commit's patch for :func:`scan_patch`."""
    return [
        "log",
        "-p",
        "-U0",
        # Every file as text: a NUL byte early in a file (or a binary attribute) must not hide the
        # lines after it; lines holding NUL bytes are dropped one by one instead.
        "--text",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--diff-merges=first-parent",
        "--src-prefix=a/",
        "--dst-prefix=b/",
        "--format=%x00%H",
        tip,
        "--not",
        *exclude,
        "--",
    ]
