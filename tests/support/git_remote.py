"""A real Git smart-HTTP remote for tests: ``git http-backend`` behind HTTP Basic auth on 127.0.0.1.

Use the ``git_remote`` fixture (registered from ``tests/conftest.py``), or
``with running_git_remote(root) as remote:`` where a fixture does not fit.

    remote.url                      # http://127.0.0.1:PORT/app.git (never carries credentials)
    remote.username, remote.token   # the only credential the server accepts (token made per remote)
    remote.auth_env()               # env for a git command: the credential as an http.extraHeader
    remote.seed({"a.txt": "x"})     # commit straight into the bare repo (no HTTP, no hooks)
    remote.working_copy(tmp_path / "wc")   # an agent's clone whose origin is remote.url
    remote.set_pre_receive("#!/bin/sh\\necho no >&2\\nexit 1\\n")   # server-side branch protection
    remote.refs(), remote.commit_count("refs/heads/main")
    remote.requests                 # every request: method, path, query, headers, status
    remote.fail_with(503)           # answer everything with 503; fail_with(None) to stop
    remote.down(); remote.up()      # refuse connections / serve again on the same port

Every request needs the credential (clone, fetch, ls-remote and push alike); a missing or wrong one
gets ``401`` with ``WWW-Authenticate: Basic realm=...``. The server speaks HTTP/1.0 (one request per
connection), decodes ``Transfer-Encoding: chunked`` request bodies itself (git sends every body over
``http.postBuffer``, 1 MiB by default, chunked; wsgiref does not decode them) and passes
``Content-Encoding: gzip`` through to ``git http-backend``, which inflates it. Bodies are spooled to a
temporary file, so pushes of hundreds of megabytes work.
"""

from __future__ import annotations

import base64
import hmac
import io
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from socketserver import TCPServer, ThreadingMixIn
from types import TracebackType
from typing import IO, Any, cast
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

import pytest

GIT = shutil.which("git") or "git"
DEFAULT_USERNAME = "hoop-bot"
DEFAULT_REALM = "hoop-mcp test git remote"
DEFAULT_BRANCH = "main"
IDENTITY_NAME = "Test Author"
IDENTITY_EMAIL = "author@example.invalid"

#: Refuse request bodies beyond this (a runaway client, not a realistic push).
MAX_BODY_BYTES = 1024 * 1024 * 1024
_COPY_BLOCK = 256 * 1024
#: Request headers never handed to the CGI (credentials, hop-by-hop, httpoxy).
_CGI_SKIP = frozenset(
    {"HTTP_AUTHORIZATION", "HTTP_PROXY", "HTTP_TRANSFER_ENCODING", "HTTP_CONNECTION", "HTTP_EXPECT"}
)
#: Response headers wsgiref refuses from an application (hop-by-hop).
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


# --------------------------------------------------------------------------------------------------
# Local git helpers (no HTTP)


class GitCommandError(RuntimeError):
    """A git command failed; the message carries its stderr."""

    def __init__(self, args: Iterable[str], returncode: int, stdout: str, stderr: str) -> None:
        self.args_list = list(args)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"git {' '.join(self.args_list)} exited {returncode}: {stderr.strip()}")


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a git client in tests: no inherited ``GIT_*`` (or askpass) variables,
    no system or global config, no terminal prompts; then ``extra`` on top."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GIT_") and k not in {"SSH_ASKPASS", "EMAIL", "XDG_CONFIG_HOME"}
    }
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        GIT_ASKPASS="",
        SSH_ASKPASS="",
        LC_ALL="C",
    )
    if extra:
        env.update(extra)
    return env


def run_git(
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``git ARGS`` with :func:`git_env` (plus ``env``); raise :class:`GitCommandError` on failure."""
    argv = [GIT, *(os.fspath(a) for a in args)]
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=git_env(env),
        input=input,
        capture_output=True,
        check=False,
        timeout=300,
    )
    result = subprocess.CompletedProcess(
        argv,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )
    if check and proc.returncode != 0:
        raise GitCommandError(argv[1:], proc.returncode, result.stdout, result.stderr)
    return result


def _resolves(repo: Path, rev: str) -> bool:
    return run_git("rev-parse", "--verify", "-q", rev + "^{commit}", cwd=repo, check=False).returncode == 0


def _identity_args(repo: Path) -> list[str]:
    """``-c user.name/-c user.email`` for a repo that has no identity of its own."""
    args: list[str] = []
    for key, default in (("user.name", IDENTITY_NAME), ("user.email", IDENTITY_EMAIL)):
        if run_git("config", "--get", key, cwd=repo, check=False).returncode != 0:
            args += ["-c", f"{key}={default}"]
    return args


def write_files(root: Path, files: Mapping[str, str | bytes]) -> None:
    """Write ``files`` (relative path -> text or bytes) under ``root``, creating directories."""
    for name, content in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")


def commit(repo: Path, files: Mapping[str, str | bytes], message: str, *, author: str | None = None) -> str:
    """Write ``files`` into the working tree ``repo``, ``git add -A``, commit; return the new sha.

    ``author`` is ``"Name <email>"``; without it the repo's identity (or a test identity) is used.
    """
    write_files(repo, files)
    run_git("add", "-A", cwd=repo)
    argv = [*_identity_args(repo), "commit", "-q", "--no-verify", "--allow-empty", "-m", message]
    if author is not None:
        argv.append(f"--author={author}")
    run_git(*argv, cwd=repo)
    return run_git("rev-parse", "HEAD", cwd=repo).stdout.strip()


def basic_authorization(username: str, password: str) -> str:
    """The value of an ``Authorization`` header for HTTP Basic auth."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def extra_header_env(header: str) -> dict[str, str]:
    """Env that makes git send ``header`` on every HTTP request (``http.extraHeader``), not via argv."""
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": header}


# --------------------------------------------------------------------------------------------------
# The server


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it. ``path`` and ``query`` are raw (as on the request line)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int
    #: Bytes of request body received (after undoing chunked transfer coding, before gzip).
    body_bytes: int = 0

    def header(self, name: str) -> str | None:
        """A request header by case-insensitive name."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    @property
    def service(self) -> str | None:
        """``git-upload-pack`` / ``git-receive-pack`` for smart-HTTP requests, else ``None``."""
        for candidate in ("git-upload-pack", "git-receive-pack"):
            if self.path.endswith("/" + candidate) or f"service={candidate}" in self.query:
                return candidate
        return None


class _BadRequest(Exception):
    pass


class _ServerHandler(ServerHandler):
    """wsgiref's handler, with errors recorded on the remote instead of printed."""

    remote: GitRemote

    def log_exception(self, exc_info: Any) -> None:
        self.remote._record_error("".join(traceback.format_exception(*exc_info)))


class _RequestHandler(WSGIRequestHandler):
    server: _Server
    #: Seconds a socket read or write may block before the request is abandoned.
    timeout = 120

    def get_environ(self) -> dict[str, Any]:
        env = super().get_environ()
        env["hoop.headers"] = dict(self.headers.items())
        env["hoop.raw_path"] = self.path
        env["hoop.wfile"] = self.wfile
        return env

    def handle(self) -> None:
        # As WSGIRequestHandler.handle, with our ServerHandler (errors recorded, multithreaded).
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        if not self.parse_request():
            return
        handler = _ServerHandler(
            self.rfile, cast(IO[bytes], self.wfile), sys.stderr, self.get_environ(), multithread=True
        )
        handler.remote = self.server.remote
        handler.request_handler = self  # type: ignore[attr-defined]  # wsgiref's back-pointer for logging
        handler.run(self.server.remote._app)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = False  # server_close() joins request threads: nothing outlives the fixture
    block_on_close = True
    allow_reuse_address = True  # up() rebinds the same port
    remote: GitRemote

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn); loopback needs no DNS.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.remote._record_error(traceback.format_exc())


class _BackendBody:
    """The body of an http-backend response; reaps the process when wsgiref closes it."""

    def __init__(self, remote: GitRemote, proc: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
        self._remote = remote
        self._proc = proc
        self._stderr = stderr
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        stdout = cast(io.BufferedReader, self._proc.stdout)
        while block := stdout.read1(_COPY_BLOCK):
            yield block

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._remote._reap(self._proc, self._stderr)


class GitRemote:
    """A bare repository served over smart HTTP with Basic auth. Not started until :meth:`start`."""

    def __init__(
        self,
        root: Path,
        *,
        repo_name: str = "app.git",
        username: str = DEFAULT_USERNAME,
        token: str | None = None,
        realm: str = DEFAULT_REALM,
        default_branch: str = DEFAULT_BRANCH,
    ) -> None:
        self.root = Path(root)
        self.repo_name = repo_name
        self.username = username
        self.token = token if token is not None else "tok-" + secrets.token_urlsafe(24)
        self.realm = realm
        self.default_branch = default_branch
        self.project_root = self.root / "repos"
        self.bare = self.project_root / repo_name
        self._home = self.root / "home"
        self._spool = self.root / "spool"
        self._scratch = self.root / "scratch"
        for directory in (self.project_root, self._home, self._spool, self._scratch):
            directory.mkdir(parents=True, exist_ok=True)
        run_git("init", "-q", "--bare", f"--initial-branch={default_branch}", self.bare)
        run_git("config", "http.receivepack", "true", cwd=self.bare)
        self._expected = f"{username}:{self.token}".encode()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._errors: list[str] = []
        self._fail_status: int | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> GitRemote:
        """Start serving (on the port used before, if any). Idempotent while running."""
        with self._lock:
            if self._server is not None:
                return self
            server = _Server(("127.0.0.1", self._port), _RequestHandler)
            server.remote = self
            self._port = server.server_port
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"git-remote-{self._port}",
                daemon=True,
            )
            self._server, self._thread = server, thread
        thread.start()
        return self

    def down(self) -> None:
        """Stop serving: connections to the port are refused until :meth:`up`."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()  # joins request threads (block_on_close)
        thread.join(timeout=30)
        if thread.is_alive():  # pragma: no cover - would be a bug in the server
            raise RuntimeError("git remote server thread did not stop")

    def up(self) -> None:
        """Serve again on the same port after :meth:`down` (``SO_REUSEADDR``; fails only if another
        process took the port meanwhile)."""
        self.start()

    def stop(self) -> None:
        """Stop serving and join every server thread (idempotent); the same as :meth:`down`."""
        self.down()

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> GitRemote:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def fail_with(self, status: int | None) -> None:
        """Answer every request with ``status`` (e.g. 503) before auth; ``None`` serves normally again."""
        with self._lock:
            self._fail_status = status

    # ---- addresses and credentials --------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the remote has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The clone URL. It never contains credentials."""
        return f"{self.base_url}/{self.repo_name}"

    def authorization(self, *, username: str | None = None, token: str | None = None) -> str:
        """An ``Authorization`` header value (default: the right credential)."""
        return basic_authorization(
            self.username if username is None else username, self.token if token is None else token
        )

    def auth_env(self, *, username: str | None = None, token: str | None = None) -> dict[str, str]:
        """Env entries that make git send the credential as a header (nothing in argv or the URL)."""
        return extra_header_env("Authorization: " + self.authorization(username=username, token=token))

    # ---- recorded traffic -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request so far, in the order their responses started."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def errors(self) -> list[str]:
        """Server-side problems: exceptions in the server, http-backend exiting non-zero (its stderr)."""
        with self._lock:
            return list(self._errors)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _record_error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)

    # ---- the bare repository --------------------------------------------------------------------

    def set_pre_receive(self, script: str) -> None:
        """Install ``script`` as the bare repo's executable ``hooks/pre-receive`` (``#!/bin/sh`` added
        if it has no shebang). Its output reaches the pusher as ``remote: ...`` lines."""
        if not script.startswith("#!"):
            script = "#!/bin/sh\n" + script
        hook = self.bare / "hooks" / "pre-receive"
        hook.parent.mkdir(exist_ok=True)
        hook.write_text(script, encoding="utf-8")
        hook.chmod(0o755)

    def clear_pre_receive(self) -> None:
        (self.bare / "hooks" / "pre-receive").unlink(missing_ok=True)

    def git(self, *args: str) -> str:
        """``git ARGS`` in the bare repo; its stdout."""
        return run_git(*args, cwd=self.bare).stdout

    def refs(self) -> dict[str, str]:
        """refname -> sha for every ref in the bare repo."""
        out = self.git("for-each-ref", "--format=%(refname) %(objectname)")
        refs: dict[str, str] = {}
        for line in out.splitlines():
            name, _, sha = line.rpartition(" ")
            if name:
                refs[name] = sha
        return refs

    def commit_count(self, ref: str) -> int:
        """How many commits ``ref`` (e.g. ``main`` or ``refs/heads/main``) reaches."""
        return int(self.git("rev-list", "--count", ref, "--").strip())

    def read_file(self, ref: str, path: str) -> bytes:
        """The content of ``path`` at ``ref`` in the bare repo."""
        proc = subprocess.run(
            [GIT, "cat-file", "blob", f"{ref}:{path}"],
            cwd=self.bare,
            env=git_env(),
            capture_output=True,
            check=True,
            timeout=300,
        )
        return proc.stdout

    def seed(
        self, files: Mapping[str, str | bytes], *, branch: str = DEFAULT_BRANCH, message: str = "initial"
    ) -> str:
        """Commit ``files`` on ``branch`` of the bare repo without HTTP and without running hooks:
        commit in a temporary clone, then fetch it into the bare repo. Returns the commit sha.

        A missing branch starts from the remote's HEAD (or as a root commit in an empty repo)."""
        refs = self.refs()
        with tempfile.TemporaryDirectory(dir=self._scratch) as tmp:
            work = Path(tmp) / "seed"
            run_git("init", "-q", f"--initial-branch={branch}", work)
            base = f"refs/heads/{branch}" if f"refs/heads/{branch}" in refs else None
            if base is None and _resolves(self.bare, "HEAD"):
                base = "HEAD"
            if base is not None:
                run_git("fetch", "-q", "--no-tags", self.bare, base, cwd=work)
                run_git("reset", "-q", "--hard", "FETCH_HEAD", cwd=work)
            sha = commit(work, files, message)
            run_git(
                "fetch",
                "-q",
                "--no-tags",
                "--update-head-ok",
                work,
                f"refs/heads/{branch}:refs/heads/{branch}",
                cwd=self.bare,
            )
        return sha

    def working_copy(self, dest: Path, *, branch: str = DEFAULT_BRANCH) -> Path:
        """An agent's clone at ``dest``: cloned from the bare path, ``origin`` = :attr:`url` (no
        credentials), an identity configured, ``branch`` checked out (created if the remote lacks it)."""
        run_git("clone", "-q", "--no-hardlinks", self.bare, dest)
        run_git("remote", "set-url", "origin", self.url, cwd=dest)
        run_git("config", "user.name", "Agent", cwd=dest)
        run_git("config", "user.email", "agent@example.invalid", cwd=dest)
        current = run_git("symbolic-ref", "-q", "--short", "HEAD", cwd=dest, check=False).stdout.strip()
        if current != branch:
            if _resolves(dest, f"refs/remotes/origin/{branch}"):
                run_git("checkout", "-q", "-B", branch, "--track", f"origin/{branch}", cwd=dest)
            else:
                run_git("checkout", "-q", "-b", branch, cwd=dest)
        return dest

    # ---- the WSGI application -------------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        if header is None:
            return False
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except ValueError:
            return False
        return hmac.compare_digest(given, self._expected)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers: dict[str, str] = environ["hoop.headers"]
        lowered = {k.lower(): v for k, v in headers.items()}
        raw_path: str = environ["hoop.raw_path"]
        path, _, query = raw_path.partition("?")
        method: str = environ["REQUEST_METHOD"]
        expects_continue = lowered.get("expect", "").lower() == "100-continue"

        def reply(status: int, body: bytes, extra: list[tuple[str, str]], received: int) -> list[bytes]:
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = "Status"
            start_response(
                f"{status} {phrase}",
                [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))), *extra],
            )
            self._record(RecordedRequest(method, path, query, headers, status, received))
            return [body]

        with self._lock:
            failing = self._fail_status
        if failing is not None:
            received = 0 if expects_continue else self._discard_body(environ)
            return reply(failing, f"failing on purpose with {failing}\n".encode(), [], received)

        if not self._authorized(lowered.get("authorization")):
            # Read what the client already sent, so closing the socket does not reset the connection
            # before it reads the 401. A client waiting for 100-continue has sent nothing.
            received = 0 if expects_continue else self._discard_body(environ)
            return reply(
                401,
                b"authentication required\n",
                [("WWW-Authenticate", f'Basic realm="{self.realm}", charset="UTF-8"')],
                received,
            )

        if expects_continue:
            wfile = environ["hoop.wfile"]
            wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            wfile.flush()

        spool = tempfile.TemporaryFile(dir=self._spool)  # noqa: SIM115 - closed below or by Popen's owner
        try:
            try:
                received = self._copy_body(environ, spool)
            except _BadRequest as exc:
                return reply(400, f"bad request body: {exc}\n".encode(), [], 0)
            spool.seek(0)
            return self._run_backend(environ, spool, received, start_response, method, path, query, headers)
        finally:
            spool.close()

    def _body_blocks(self, environ: dict[str, Any]) -> Iterator[bytes]:
        """The request body, with chunked transfer coding undone."""
        stream = environ["wsgi.input"]
        if environ.get("HTTP_TRANSFER_ENCODING", "").lower().strip() == "chunked":
            yield from _dechunk(stream)
            return
        length_text = environ.get("CONTENT_LENGTH") or "0"
        try:
            remaining = int(length_text)
        except ValueError:
            raise _BadRequest(f"bad Content-Length {length_text!r}") from None
        if remaining < 0 or remaining > MAX_BODY_BYTES:
            raise _BadRequest(f"Content-Length {remaining} out of range")
        while remaining:
            block = stream.read(min(remaining, _COPY_BLOCK))
            if not block:
                raise _BadRequest("body shorter than Content-Length")
            remaining -= len(block)
            yield block

    def _copy_body(self, environ: dict[str, Any], out: IO[bytes]) -> int:
        total = 0
        for block in self._body_blocks(environ):
            total += len(block)
            if total > MAX_BODY_BYTES:
                raise _BadRequest("body too large")
            out.write(block)
        out.flush()
        return total

    def _discard_body(self, environ: dict[str, Any]) -> int:
        total = 0
        with suppress(_BadRequest, OSError):
            for block in self._body_blocks(environ):
                total += len(block)
                if total > MAX_BODY_BYTES:
                    break
        return total

    def _cgi_env(self, environ: Mapping[str, Any], content_length: int | None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self._home),
            "XDG_CONFIG_HOME": str(self._home / ".config"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "LC_ALL": "C",
            "GIT_PROJECT_ROOT": str(self.project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_SOFTWARE": "hoop-test-git-remote",
            "SERVER_PROTOCOL": str(environ.get("SERVER_PROTOCOL", "HTTP/1.1")),
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(self._port),
            "REQUEST_METHOD": str(environ["REQUEST_METHOD"]),
            "SCRIPT_NAME": "",
            "PATH_INFO": str(environ.get("PATH_INFO", "")),
            "QUERY_STRING": str(environ.get("QUERY_STRING", "")),
            "REMOTE_ADDR": str(environ.get("REMOTE_ADDR", "127.0.0.1")),
            "REMOTE_USER": self.username,
            "AUTH_TYPE": "Basic",
        }
        if environ.get("CONTENT_TYPE"):
            env["CONTENT_TYPE"] = str(environ["CONTENT_TYPE"])
        if content_length is not None:
            env["CONTENT_LENGTH"] = str(content_length)
        for key, value in environ.items():
            if key.startswith("HTTP_") and key not in _CGI_SKIP and isinstance(value, str):
                env[key] = value
        return env

    def _run_backend(
        self,
        environ: dict[str, Any],
        body: IO[bytes],
        received: int,
        start_response: Callable[..., Any],
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
    ) -> Iterable[bytes]:
        content_length = received if method in {"POST", "PUT"} else None
        stderr = tempfile.TemporaryFile(dir=self._spool)  # noqa: SIM115 - closed by _reap
        try:
            proc = subprocess.Popen(
                [GIT, "http-backend"],
                stdin=body,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=self._cgi_env(environ, content_length),
                cwd=self._home,
            )
        except BaseException:
            stderr.close()
            raise
        try:
            status, cgi_headers = _read_cgi_headers(proc)
            start_response(status, cgi_headers)
            self._record(RecordedRequest(method, path, query, headers, int(status.split()[0]), received))
            return _BackendBody(self, proc, stderr)
        except BaseException:
            self._reap(proc, stderr)
            raise

    def _reap(self, proc: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
        try:
            if proc.stdout is not None:
                proc.stdout.close()
            try:
                returncode = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                returncode = proc.wait()
            if returncode != 0:
                stderr.seek(0)
                text = stderr.read().decode("utf-8", "replace")
                self._record_error(f"git http-backend exited {returncode}: {text.strip()}")
        finally:
            stderr.close()


def _dechunk(stream: IO[bytes]) -> Iterator[bytes]:
    """Undo ``Transfer-Encoding: chunked`` (RFC 9112 §7.1), reading trailers to the end."""
    while True:
        line = stream.readline(1024)
        if not line.endswith(b"\n"):
            raise _BadRequest("truncated chunk size line")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _BadRequest(f"bad chunk size {size_text!r}") from None
        if size < 0:
            raise _BadRequest("negative chunk size")
        if size == 0:
            while True:  # trailer section, ends with an empty line
                trailer = stream.readline(8192)
                if not trailer.endswith(b"\n"):
                    raise _BadRequest("truncated trailers")
                if trailer in (b"\r\n", b"\n"):
                    return
        remaining = size
        while remaining:
            block = stream.read(min(remaining, _COPY_BLOCK))
            if not block:
                raise _BadRequest("truncated chunk")
            remaining -= len(block)
            yield block
        if stream.readline(3) not in (b"\r\n", b"\n"):
            raise _BadRequest("chunk not followed by CRLF")


def _read_cgi_headers(proc: subprocess.Popen[bytes]) -> tuple[str, list[tuple[str, str]]]:
    """Read a CGI response's header block; return the HTTP status line and the headers to send."""
    stdout = proc.stdout
    assert stdout is not None
    status = "200 OK"
    headers: list[tuple[str, str]] = []
    while True:
        line = stdout.readline(16384)
        if not line:
            raise RuntimeError("git http-backend ended before finishing its headers")
        if line in (b"\r\n", b"\n"):
            return status, headers
        name, sep, value = line.decode("latin-1").rstrip("\r\n").partition(":")
        if not sep:
            raise RuntimeError(f"git http-backend sent a malformed header line {line!r}")
        name, value = name.strip(), value.strip()
        if name.lower() == "status":
            status = value
        elif name.lower() not in _HOP_BY_HOP:
            headers.append((name, value))


# --------------------------------------------------------------------------------------------------
# Entry points


@contextmanager
def running_git_remote(root: Path, *, seed_readme: bool = True, **kwargs: Any) -> Iterator[GitRemote]:
    """A started remote under ``root`` (``app.git``, one README commit on ``main``); stopped on exit."""
    remote = GitRemote(root, **kwargs)
    if seed_readme:
        remote.seed({"README.md": "# app\n\nSeeded by the test git remote.\n"}, message="initial")
    with remote:
        yield remote


@pytest.fixture
def git_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitRemote]:
    """A fresh authenticated smart-HTTP remote per test: ``app.git`` with a README commit on ``main``."""
    with running_git_remote(tmp_path_factory.mktemp("git-remote")) as remote:
        yield remote
