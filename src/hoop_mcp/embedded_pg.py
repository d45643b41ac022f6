"""A real, private PostgreSQL server started from the binaries in the ``pgserver`` wheel.

Used by ``hoop-mcp demo`` and by the tests: no system PostgreSQL is needed. The server listens on
127.0.0.1 (a free port) and a private socket directory, and requires a password (SCRAM) for every
role, so authentication is real. When run as root, the server runs as an unprivileged system user
(``hoopmcp-pg``), because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from hoop_mcp.core.errors import BackendUnavailable

log = logging.getLogger(__name__)

_SERVICE_USER = "hoopmcp-pg"


def bin_dir() -> Path:
    """Directory holding the bundled ``postgres`` / ``initdb`` binaries."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(
            "the embedded PostgreSQL needs the 'pgserver' package", hint="pip install pgserver"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise BackendUnavailable(f"no postgres binary under {path}")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run(  # noqa: S603 - fixed arguments
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _SERVICE_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(_SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


def _open_path_for(path: Path) -> None:
    """Let the unprivileged service user traverse every parent of ``path`` and read the binaries."""
    for parent in [path, *path.parents]:
        with contextlib.suppress(PermissionError):
            parent.chmod(parent.stat().st_mode | 0o055)


class EmbeddedPostgres:
    """Start, stop and restart one private PostgreSQL cluster.

    ``superuser_password`` is generated when not given. Nothing here logs it.
    """

    def __init__(
        self,
        datadir: Path,
        *,
        port: int | None = None,
        superuser: str = "postgres",
        superuser_password: str | None = None,
        fsync: bool = False,
    ) -> None:
        self.datadir = Path(datadir).resolve()
        self.port = port or free_port()
        self.superuser = superuser
        self.superuser_password = superuser_password or secrets.token_urlsafe(24)
        self.fsync = fsync
        self.socket_dir = Path(tempfile.mkdtemp(prefix="hoop-pgsock-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._ids = _run_as()

    # -- lifecycle -------------------------------------------------------------------------------
    def _chown(self, path: Path) -> None:
        if self._ids is not None:
            os.chown(path, *self._ids)

    def _cmd(self, args: list[str]) -> subprocess.CompletedProcess[bytes]:
        kwargs: dict[str, object] = {}
        if self._ids is not None:
            kwargs = {"user": self._ids[0], "group": self._ids[1], "extra_groups": []}
        return subprocess.run(args, check=False, capture_output=True, timeout=120, **kwargs)  # type: ignore[call-overload,no-any-return]  # noqa: S603 - our own binaries

    def init(self) -> None:
        if (self.datadir / "PG_VERSION").exists():
            return
        bins = bin_dir()
        _open_path_for(bins)
        for sub in (bins.parent / "lib", bins.parent / "share"):
            if sub.exists():
                for p in sub.rglob("*"):
                    with contextlib.suppress(PermissionError):
                        p.chmod(p.stat().st_mode | (0o055 if p.is_dir() else 0o044))
        self.datadir.mkdir(parents=True, exist_ok=True)
        _open_path_for(self.datadir.parent)
        self._chown(self.datadir)
        self.datadir.chmod(0o700)
        pwfile = self.socket_dir / "pw"
        pwfile.write_text(self.superuser_password)
        self._chown(self.socket_dir)
        self._chown(pwfile)
        try:
            res = self._cmd(
                [
                    str(bins / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    self.superuser,
                    "--pwfile",
                    str(pwfile),
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            raise BackendUnavailable(
                "initdb failed", details={"stderr": res.stderr.decode(errors="replace")[-2000:]}
            )

    def start(self, *, timeout: float = 30.0) -> None:
        self.init()
        self._chown(self.socket_dir)
        _open_path_for(self.socket_dir)
        args = [
            str(bin_dir() / "postgres"),
            "-D",
            str(self.datadir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
            "-c",
            f"fsync={'on' if self.fsync else 'off'}",
            "-c",
            "max_connections=100",
            "-c",
            "shared_buffers=32MB",
            "-c",
            "logging_collector=off",
        ]
        kwargs: dict[str, object] = {}
        if self._ids is not None:
            kwargs = {"user": self._ids[0], "group": self._ids[1], "extra_groups": []}
        log_path = self.datadir.parent / f"{self.datadir.name}.log"
        logf = log_path.open("ab")
        self._proc = subprocess.Popen(args, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]  # noqa: S603 - our own binary
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise BackendUnavailable("embedded PostgreSQL exited during start", details={"log": tail})
            if self._accepting():
                return
            time.sleep(0.05)
        self.stop()
        raise BackendUnavailable(f"embedded PostgreSQL did not start within {timeout:.0f}s")

    def _accepting(self) -> bool:
        res = subprocess.run(  # noqa: S603 - our own binary
            [str(bin_dir() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
            capture_output=True,
        )
        return res.returncode == 0

    def stop(self, *, mode: str = "fast") -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._proc = None
            return
        import signal

        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- connection strings ----------------------------------------------------------------------
    def conninfo(
        self, *, dbname: str = "postgres", user: str | None = None, password: str | None = None
    ) -> str:
        """A libpq keyword/value string for TCP on loopback. Contains the password: never log it."""
        user = user or self.superuser
        pw = self.superuser_password if password is None and user == self.superuser else password
        parts = [f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"]
        if pw is not None:
            parts.append(f"password='{pw}'")
        return " ".join(parts)
