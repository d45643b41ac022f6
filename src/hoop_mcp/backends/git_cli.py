"""Run git with a hardened environment: no system, global or agent-controlled behaviour, no prompts.

Every git child gets a fresh environment (never the server's): ``HOME`` is a private empty
directory, system and global config are off, hooks and fsmonitor are disabled, only the transports
the call needs are allowed (``protocol.allow=never`` otherwise, so ``ext::`` never runs), automatic
gc is off, and prompts are impossible (``GIT_TERMINAL_PROMPT=0``, batch-mode SSH).

The remote credential reaches git only through the child's environment: an askpass helper (a file
the server wrote, holding no secret) prints it from ``HOOP_GIT_USERNAME`` / ``HOOP_GIT_PASSWORD``,
or, for SSH, ``GIT_SSH_COMMAND`` names a key file the server wrote with mode 0600. Never argv, the
remote URL or any config file. Only commands that talk to the remote get it.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hoop_mcp.core.errors import BackendUnavailable

log = logging.getLogger(__name__)

_ASKPASS = """#!/bin/sh
# hoop-mcp askpass helper: holds no secret; prints what the server put in git's environment.
case "$1" in
  Username*) printf '%s\\n' "$HOOP_GIT_USERNAME" ;;
  *) printf '%s\\n' "$HOOP_GIT_PASSWORD" ;;
esac
"""

#: Config every git child runs with (command-line config beats every file, the agent's included).
_HARDENING: tuple[tuple[str, str], ...] = (
    ("protocol.allow", "never"),
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("core.quotePath", "false"),
    ("credential.helper", ""),
    ("gc.auto", "0"),
    ("core.bigFileThreshold", "4g"),
    ("maintenance.auto", "false"),
    ("fetch.recurseSubmodules", "false"),
    ("submodule.recurse", "false"),
    ("push.recurseSubmodules", "no"),
    ("http.followRedirects", "false"),
    ("transfer.fsckObjects", "true"),
    ("fetch.fsck.zeroPaddedFilemode", "ignore"),
    ("fetch.fsck.badTimezone", "ignore"),
    ("fetch.fsck.missingSpaceBeforeDate", "ignore"),
    ("diff.external", ""),
    ("core.pager", "cat"),
    ("advice.detachedHead", "false"),
    ("init.defaultBranch", "main"),
)


@dataclass(frozen=True, slots=True)
class GitResult:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Credential:
    """How git authenticates to the remote (values only ever placed in a child's environment)."""

    #: HTTPS: user name and token for the askpass helper.
    username: str | None = None
    password: str | None = None
    #: SSH: the key file (0600, server-owned) and known_hosts file.
    ssh_key_file: Path | None = None
    known_hosts: Path | None = None


class GitRunner:
    """Runs git children for one connection. Thread-safe; holds no open resources."""

    def __init__(
        self,
        *,
        private_dir: Path,
        remote_scheme: str,
        credential: Credential,
        timeout_s: float,
    ) -> None:
        """``private_dir`` is server-owned (0700): the empty HOME and the askpass helper live there."""
        self._home = private_dir / "home"
        self._home.mkdir(parents=True, exist_ok=True, mode=0o700)
        private_dir.chmod(0o700)
        self._askpass = private_dir / "askpass.sh"
        if not self._askpass.exists() or self._askpass.read_text() != _ASKPASS:
            self._askpass.write_text(_ASKPASS)
        self._askpass.chmod(0o700)
        self._scheme = remote_scheme  # "https", "http" or "ssh"
        self._credential = credential
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        found = shutil.which("git")
        if found is None:
            raise BackendUnavailable("git is not installed on the server (no 'git' on PATH)")
        #: Resolved once, so a later PATH change cannot swap the program.
        self.git = str(Path(found).resolve())

    # -- environment --------------------------------------------------------------------------------
    def trust_for_reading(self, paths: Sequence[Path]) -> Path:
        """A global config listing ``paths`` in ``safe.directory``, for the one command that reads an
        agent's working copy (owned by another user when hoop-mcp runs as its own user, as it
        should). Reading through upload-pack with the hardening above is what ``git clone
        --no-local`` of an untrusted repository does; nothing of that repository's config runs."""
        config = self._home / "read-workspace.gitconfig"
        lines = ["[safe]"] + [f"\tdirectory = {_config_value(str(p))}" for p in paths]
        config.write_text("\n".join(lines) + "\n")
        return config

    def environment(
        self, *, remote: bool, local_file: bool = False, global_config: Path | None = None
    ) -> dict[str, str]:
        """The complete environment of a git child (nothing inherited but ``PATH``)."""
        config = list(_HARDENING)
        if remote:
            config.append((f"protocol.{self._scheme}.allow", "always"))
        if local_file:
            config.append(("protocol.file.allow", "always"))
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),  # git's helpers, ssh
            "HOME": str(self._home),
            "XDG_CONFIG_HOME": str(self._home / ".config"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": str(global_config) if global_config is not None else os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_NO_REPLACE_OBJECTS": "1",
            "GIT_OPTIONAL_LOCKS": "0",
            "GIT_PAGER": "cat",
            "PAGER": "cat",
            "LC_ALL": "C",
            "LANG": "C",
            "GIT_CONFIG_COUNT": str(len(config)),
        }
        for index, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{index}"] = key
            env[f"GIT_CONFIG_VALUE_{index}"] = value
        if remote:
            cred = self._credential
            if cred.ssh_key_file is not None and cred.known_hosts is not None:
                env["GIT_SSH_COMMAND"] = " ".join(
                    [
                        "ssh",
                        "-F",
                        os.devnull,
                        "-i",
                        shlex.quote(str(cred.ssh_key_file)),
                        "-o",
                        "IdentitiesOnly=yes",
                        "-o",
                        "BatchMode=yes",
                        "-o",
                        "StrictHostKeyChecking=yes",
                        "-o",
                        shlex.quote(f"UserKnownHostsFile={cred.known_hosts}"),
                    ]
                )
                env["GIT_SSH_VARIANT"] = "ssh"
            elif cred.password is not None:
                env["GIT_ASKPASS"] = str(self._askpass)
                env["HOOP_GIT_USERNAME"] = cred.username or "x-access-token"
                env["HOOP_GIT_PASSWORD"] = cred.password
        else:
            # Nothing that could answer a prompt: a local command never authenticates.
            env["GIT_ASKPASS"] = "/bin/false"
            env["SSH_ASKPASS"] = "/bin/false"
        return env

    # -- running ------------------------------------------------------------------------------------
    def run(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        remote: bool = False,
        local_file: bool = False,
        stdin: bytes | None = None,
        timeout_s: float | None = None,
        global_config: Path | None = None,
    ) -> GitResult:
        """Run ``git <args>`` in ``cwd``. Raises BackendUnavailable on a timeout or a missing git."""
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        try:
            proc = subprocess.run(  # noqa: S603 - argument list, no shell
                [self.git, *args],
                cwd=cwd,
                env=self.environment(remote=remote, local_file=local_file, global_config=global_config),
                input=stdin,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BackendUnavailable(
                f"git {args[0]} did not finish within {timeout:g} s",
                hint="nothing was pushed unless the push itself timed out; check the remote's branches",
            ) from None
        except FileNotFoundError:
            what = "git is not installed on the server" if cwd.is_dir() else f"the directory {cwd} is missing"
            raise BackendUnavailable(what) from None
        return GitResult(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))

    @contextmanager
    def stream(
        self, args: Sequence[str], *, cwd: Path, timeout_s: float | None = None
    ) -> Iterator[subprocess.Popen[bytes]]:
        """A local git command whose (large) output is read as it comes. Killed on exit."""
        proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
            [self.git, *args],
            cwd=cwd,
            env=self.environment(remote=False),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        timer = threading.Timer(timeout_s or self.timeout_s, proc.kill)
        timer.start()
        try:
            yield proc
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
            proc.wait()

    @property
    def lock(self) -> threading.Lock:
        """Serialises work on the connection's staging repository."""
        return self._lock


def _config_value(text: str) -> str:
    """A value as a git config file writes it (quoted, with backslashes and quotes escaped)."""
    if any(c in text for c in "\n\r\x00"):
        raise ValueError("a config value cannot hold a line break or NUL")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_ref_format(runner: GitRunner, refname: str, *, cwd: Path) -> bool:
    """git's own rules for ref names (``git check-ref-format``); no repository needed."""
    return runner.run(["check-ref-format", refname], cwd=cwd, timeout_s=10).ok
