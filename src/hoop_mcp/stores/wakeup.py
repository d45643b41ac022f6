"""Wake-ups for approval waiters, within this process and across processes sharing one database.

An agent waiting for a decision should wake within about 100 ms of it, even when the decision is
made by another process (the CLI, the approval page's server), without polling the store.

Design: a private directory (mode 0700) per database holds one Unix datagram socket (mode 0600)
per waiter, bound under a random name for as long as that waiter waits. After a committed
change, the writer sends a small datagram (the topic: an approval id) to every socket in the
directory, non-blocking: a full queue (``EAGAIN``) is skipped, a socket nobody listens on any more
(``ECONNREFUSED``, left by a crashed process) is removed. Waiters in the writer's own process are
also woken directly (an :class:`anyio.Event` per topic).

The directory is ``<db>.wake`` beside the database. Socket paths are short (``sun_path`` holds 108
bytes on Linux, 104 on macOS), so when that path is too long the directory is
``hoop-mcp/<hash of the db path>`` under ``$XDG_RUNTIME_DIR`` (or ``/run/user/<uid>``), else
``/tmp/hoop-mcp-<uid>/<hash>``. Every writer sends to all of these that exist, so processes with
different environments still reach each other. A directory not owned by this user, or not a
plain directory, is never used.

When no directory can be used (no Unix sockets, every path too long, permissions), waiters fall
back to asking ``changed()`` every :data:`POLL_INTERVAL_S` seconds, logged once per database.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import socket
import stat
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

__all__ = ["MAX_SOCKET_PATH", "POLL_INTERVAL_S", "WakeHub", "wake_directories"]

log = logging.getLogger(__name__)

#: Longest socket path used, in bytes (macOS: 104 with the terminating NUL; Linux: 108).
MAX_SOCKET_PATH = 103
#: How often a waiter asks the store when no socket can be used.
POLL_INTERVAL_S = 1.0

_PREFIX = "w-"
_SUFFIX = ".sock"
#: ``w-`` + 16 hex digits + ``.sock``.
_NAME_LENGTH = len(_PREFIX) + 16 + len(_SUFFIX)
_MAX_TOPIC = 256

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(key: str, message: str, *args: object) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message, *args)


def _fits(directory: Path) -> bool:
    return len(os.fsencode(directory)) + 1 + _NAME_LENGTH <= MAX_SOCKET_PATH


def _is_socket_name(name: str) -> bool:
    return (
        len(name) == _NAME_LENGTH
        and name.startswith(_PREFIX)
        and name.endswith(_SUFFIX)
        and all(c in "0123456789abcdef" for c in name[len(_PREFIX) : -len(_SUFFIX)])
    )


def _private_dir(path: Path, *, create: bool) -> str | None:
    """Make sure ``path`` is a directory only this user can use; why not (``None`` when it is)."""
    if create:
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            return f"cannot create {path}: {exc.strerror or exc}"
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"cannot use {path}: {exc.strerror or exc}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a directory"
    if info.st_uid != os.getuid():
        return f"{path} belongs to another user"
    if info.st_mode & 0o077:
        try:
            path.chmod(0o700)
        except OSError as exc:
            return f"cannot restrict {path}: {exc.strerror or exc}"
    return None


def wake_directories(db: str | os.PathLike[str]) -> list[Path]:
    """Where waiters on ``db`` may listen, preferred first (the first usable one is used)."""
    real = Path(os.path.realpath(db))
    digest = hashlib.sha256(os.fsencode(real)).hexdigest()[:16]
    uid = os.getuid()
    bases = []
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isabs(xdg):
        bases.append(Path(xdg) / "hoop-mcp")
    bases.append(Path(f"/run/user/{uid}") / "hoop-mcp")
    # The same place for every process whatever its TMPDIR, so writers find the waiters' sockets.
    bases.append(Path(f"/tmp/hoop-mcp-{uid}"))  # noqa: S108 - a private (0700, owner-checked) directory
    out = [real.with_name(real.name + ".wake")]
    for base in bases:
        candidate = base / digest
        if candidate not in out:
            out.append(candidate)
    return out


def _prepare(directory: Path, *, first: Path) -> str | None:
    """Create ``directory`` (and its private parent, for the fallback ones); why it is unusable."""
    if not _fits(directory):
        return f"socket paths under {directory} would be too long"
    if directory != first:
        base = directory.parent
        if base.name == "hoop-mcp" and not base.parent.is_dir():  # no runtime directory here
            return f"{base.parent} does not exist"
        problem = _private_dir(base, create=True)
        if problem is not None:
            return problem
    return _private_dir(directory, create=True)


class WakeHub:
    """Wake-ups for one database: :meth:`wait` on a topic, :meth:`notify` after a commit."""

    def __init__(self, key: str, directories: list[Path], *, listen: Path | None) -> None:
        self.key = key
        #: Every directory writers send to.
        self.directories = directories
        #: Where this process's waiters bind their sockets (``None``: they poll).
        self.listen_dir = listen
        self._local: dict[str, set[anyio.Event]] = {}
        self._send_lock = threading.Lock()
        self._sender: socket.socket | None = None
        self._closed = False

    @classmethod
    def for_database(cls, db: str | os.PathLike[str]) -> WakeHub:
        """Pick (and create) this process's socket directory; blocking (call from a thread)."""
        key = os.path.realpath(db)
        directories = wake_directories(db)
        if not hasattr(socket, "AF_UNIX"):
            _warn_once(
                key, "approval wake-ups for %s poll every %.0f s: no Unix sockets", key, POLL_INTERVAL_S
            )
            return cls(key, directories, listen=None)
        problems = []
        for directory in directories:
            problem = _prepare(directory, first=directories[0])
            if problem is None:
                return cls(key, directories, listen=directory)
            problems.append(problem)
        _warn_once(
            key,
            "approval wake-ups for %s poll every %.0f s (no usable socket directory: %s)",
            key,
            POLL_INTERVAL_S,
            "; ".join(problems),
        )
        return cls(key, directories, listen=None)

    @property
    def polling(self) -> bool:
        return self.listen_dir is None

    # ---------------------------------------------------------------------------------- writer

    def notify(self, topic: str) -> int:
        """Send ``topic`` to every waiting socket of every process; never raises, never blocks.

        Thread-safe (the store calls it from its writer thread right after the commit). Returns
        how many sockets it reached.
        """
        if not hasattr(socket, "AF_UNIX"):
            return 0
        data = topic.encode("utf-8")[:_MAX_TOPIC]
        sent = 0
        with self._send_lock:
            try:
                sender = self._sender or socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sender.setblocking(False)
            except OSError as exc:
                log.debug("cannot create the wake-up socket: %s", exc)
                return 0
            try:
                for directory in self.directories:
                    sent += self._send_to(sender, directory, data)
            finally:
                if self._closed:  # a write that finished after close(): wake the others, keep nothing
                    sender.close()
                else:
                    self._sender = sender
        return sent

    @staticmethod
    def _send_to(sender: socket.socket, directory: Path, data: bytes) -> int:
        try:
            info = os.lstat(directory)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                return 0
            with os.scandir(directory) as entries:
                names = [e.name for e in entries if _is_socket_name(e.name)]
        except OSError:
            return 0
        sent = 0
        for name in names:
            path = os.path.join(directory, name)
            try:
                sender.sendto(data, path)
                sent += 1
            except ConnectionRefusedError:  # nobody listens there any more (a crashed waiter)
                with contextlib.suppress(OSError):
                    os.unlink(path)
            except (FileNotFoundError, BlockingIOError):  # gone meanwhile / its queue is full
                pass
            except OSError as exc:
                log.debug("cannot wake %s: %s", path, exc)
        return sent

    def wake_local(self, topic: str) -> None:
        """Wake this process's waiters on ``topic`` (call from the event loop)."""
        for event in self._local.get(topic, ()):
            event.set()

    def close(self) -> None:
        """Wake every local waiter (they find the store closed), release the sender, and remove
        the listen directory when nobody else listens in it (a waiter about to bind there makes
        it again)."""
        self._closed = True
        for events in self._local.values():
            for event in events:
                event.set()
        with self._send_lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None
        if self.listen_dir is not None:
            with contextlib.suppress(OSError):  # not empty: other waiters still use it
                self.listen_dir.rmdir()

    # ---------------------------------------------------------------------------------- waiter

    async def wait(self, topic: str, *, up_to_s: float, changed: Callable[[], Awaitable[bool]]) -> None:
        """Return on a wake-up for ``topic``, or after ``up_to_s`` seconds.

        ``changed()`` is asked once after this waiter can be woken (so a change committed just
        before is not missed) and, only when polling, every :data:`POLL_INTERVAL_S` seconds.
        """
        if self._closed or up_to_s <= 0:
            return
        event = anyio.Event()
        self._local.setdefault(topic, set()).add(event)
        listener = self._listen()
        try:
            with anyio.move_on_after(up_to_s):
                if await changed():
                    return
                async with anyio.create_task_group() as tg:
                    if listener is not None:
                        tg.start_soon(self._receive, listener[0], topic, event, changed)
                    else:
                        tg.start_soon(self._poll, event, changed)
                    await event.wait()
                    tg.cancel_scope.cancel()
        finally:
            waiting = self._local.get(topic)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._local[topic]
            if listener is not None:
                sock, path = listener
                sock.close()
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _listen(self) -> tuple[socket.socket, str] | None:
        """A socket bound in the listen directory, or ``None`` (then this waiter polls)."""
        directory = self.listen_dir
        if directory is None:
            return None
        for attempt in range(2):
            path = os.path.join(directory, f"{_PREFIX}{secrets.token_hex(8)}{_SUFFIX}")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.bind(path)
                os.chmod(path, 0o600)
            except FileNotFoundError:  # the directory was removed (a tmp cleaner): make it again
                sock.close()
                if attempt == 0 and _prepare(directory, first=self.directories[0]) is None:
                    continue
                break
            except OSError as exc:
                sock.close()
                with contextlib.suppress(OSError):
                    os.unlink(path)
                _warn_once(
                    f"{self.key}:bind",
                    "approval wake-ups for %s poll every %.0f s: cannot bind a socket in %s: %s",
                    self.key,
                    POLL_INTERVAL_S,
                    directory,
                    exc.strerror or exc,
                )
                return None
            return sock, path
        _warn_once(
            f"{self.key}:bind",
            "approval wake-ups for %s poll every %.0f s: %s cannot be used",
            self.key,
            POLL_INTERVAL_S,
            directory,
        )
        return None

    async def _receive(
        self,
        sock: socket.socket,
        topic: str,
        event: anyio.Event,
        changed: Callable[[], Awaitable[bool]],
    ) -> None:
        wanted = topic.encode("utf-8")[:_MAX_TOPIC]
        while True:
            try:
                await anyio.wait_readable(sock)
                while True:
                    try:
                        data = sock.recv(_MAX_TOPIC + 1)
                    except BlockingIOError:
                        break
                    if data == wanted:
                        event.set()
                        return
            except OSError as exc:
                _warn_once(
                    f"{self.key}:recv",
                    "approval wake-ups for %s poll every %.0f s: the socket failed: %s",
                    self.key,
                    POLL_INTERVAL_S,
                    exc,
                )
                await self._poll(event, changed)
                return

    @staticmethod
    async def _poll(event: anyio.Event, changed: Callable[[], Awaitable[bool]]) -> None:
        while True:
            await anyio.sleep(POLL_INTERVAL_S)
            if await changed():
                event.set()
                return
