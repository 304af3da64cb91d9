"""A private PostgreSQL cluster for the backend tests.

``postgres_dsn`` (session): ``initdb`` as the ``postgres`` user into a temporary directory, a
server on a free 127.0.0.1 port with its socket inside that directory (run as a child of the
test process, so that it is reaped here), one database ``tectum_test``; stopped with
``pg_ctl stop -m immediate`` (SIGKILL by pid if it lingers) and the directory removed when the
session ends.

The cluster is started once per process (:func:`shared_cluster`, also for code that is no
fixture: the conformance cases of the ``postgresql`` provider) and stopped when the session
ends. :class:`Cluster` can also be made privately, with server settings of its own
(``settings={"log_statement": "all"}``) and :meth:`Cluster.restart` — for fault tests that
must not disturb the shared one.

``pg_dsn`` (per test): a fresh database on that cluster, dropped ``WITH (FORCE)`` afterwards, so
tests (and the workspaces they list) never see each other.

PostgreSQL must be installed (Debian: ``apt-get install postgresql``; binaries under
``/usr/lib/postgresql/VERSION/bin``): without it the fixture fails rather than skips — CI
installs it, and a silently skipped backend would hide its bugs.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _pg_bindir() -> Path:
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]

    def version(p: Path) -> tuple[int, ...]:
        try:
            return tuple(int(part) for part in p.parent.name.split("."))
        except ValueError:
            return (0,)

    if not found:
        pytest.fail(
            "PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb. The PostgreSQL "
            "backend tests need a local server; install it with `apt-get install postgresql` "
            "(.ci/run does).", pytrace=False)
    return max(found, key=version)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Cluster:
    """A PostgreSQL cluster in a temporary directory (see the module docstring)."""

    def __init__(self, bindir: Path, settings: dict[str, str] | None = None) -> None:
        self.bindir = bindir
        self.settings = dict(settings or {})
        self.root = Path(tempfile.mkdtemp(prefix="tectum-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.server: subprocess.Popen[bytes] | None = None
        # initdb and the server refuse to run as root: run them as postgres, in a directory
        # that user owns. Run as whoever we are when that is not root.
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("PostgreSQL is installed but there is no `postgres` user to run "
                            "initdb as.", pytrace=False)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]

    def run(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run([*self.prefix, *args], cwd=self.root, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n"
                               f"{proc.stdout}{proc.stderr}\n{log}")

    def start(self) -> None:
        self.run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust",
                 "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
        for attempt in itertools.count(1):
            self.port = _free_port()
            try:
                self._start_server()
                break
            except RuntimeError:
                self._stop_server()
                if attempt >= 3:  # the port may have been taken between probe and start
                    raise
        self.run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", "postgres", "tectum_test")

    def _start_server(self) -> None:
        # The postmaster runs as our own child (under runuser) rather than daemonized by
        # `pg_ctl start`: then we reap it ourselves when it stops, instead of leaving a zombie
        # for PID 1 to collect (this machine's init does so only about a second later).
        with open(self.log, "ab") as log:
            self.server = subprocess.Popen(
                [*self.prefix, str(self.bindir / "postgres"), "-D", str(self.data),
                 "-p", str(self.port), "-k", str(self.root), "-c", "listen_addresses=127.0.0.1",
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off",
                 *[a for k, v in self.settings.items() for a in ("-c", f"{k}={v}")]],
                cwd=self.root, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while True:
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p",
                 str(self.port), "-t", "1"], stdin=subprocess.DEVNULL).returncode == 0
            if ready and self._postmaster_pid() == self._server_pid():
                return
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("postgres did not start:\n"
                                   + self.log.read_text(errors="replace"))
            time.sleep(0.05)

    def _server_pid(self) -> int | None:
        """The postmaster: our child, or runuser's child when we are root."""
        if self.server is None:
            return None
        if not self.prefix:
            return self.server.pid
        try:
            with open(f"/proc/{self.server.pid}/task/{self.server.pid}/children") as f:
                children = f.read().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _stop_server(self) -> None:
        server, self.server = self.server, None
        if server is None or server.poll() is not None:
            return
        if self._postmaster_pid() is not None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m",
                         "immediate", "-w", "-t", "20", "stop", timeout=30)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:  # by process id, never by name
            pid = self._postmaster_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            server.kill()
            server.wait(timeout=10)

    def stop(self) -> None:
        try:
            self._stop_server()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def dsn(self) -> str:
        """The libpq DSN of the ``tectum_test`` database (superuser ``postgres``)."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=tectum_test"

    def kill(self) -> None:
        """Stop the server at once (``pg_ctl stop -m immediate``: a crash, for fault tests);
        its data stays for :meth:`restart`."""
        self._stop_server()

    def restart(self, down_for: float = 0.0) -> None:
        """Stop the server at once, wait ``down_for`` seconds, start it again on the same
        port (a crash and recovery, for fault tests); a start that fails (the port not free
        yet) is tried again, five times at most. Raises ``RuntimeError``."""
        self._stop_server()
        time.sleep(down_for)
        for attempt in itertools.count(1):
            try:
                self._start_server()
                return
            except RuntimeError:
                # the port may be held a moment longer (the old postmaster's socket) or
                # taken meanwhile: the clients under test need this one, so try again
                self._stop_server()
                if attempt >= 5:
                    raise
                time.sleep(0.5 * attempt)


#: the public name (fault tests make private clusters)
Cluster = _Cluster

_shared: _Cluster | None = None
_shared_lock = threading.Lock()


def shared_cluster() -> _Cluster:
    """The process's shared cluster, started on first use and stopped at exit (or by the
    ``postgres_dsn`` fixture at the end of the session)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            cluster = _Cluster(_pg_bindir())
            try:
                cluster.start()
            except BaseException:
                cluster.stop()
                raise
            _shared = cluster
            atexit.register(_stop_shared)
        return _shared


def _stop_shared() -> None:
    global _shared
    with _shared_lock:
        cluster, _shared = _shared, None
    if cluster is not None:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """DSN of a private PostgreSQL cluster's ``tectum_test`` database (session-wide)."""
    try:
        yield shared_cluster().dsn
    finally:
        _stop_shared()


_db_numbers = itertools.count(1)


@pytest.fixture
def pg_dsn(postgres_dsn: str) -> Iterator[str]:
    """DSN of a fresh database of its own for one test (dropped after it)."""
    import psycopg

    name = f"t{os.getpid()}_{next(_db_numbers)}"
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield postgres_dsn.replace("dbname=tectum_test", f"dbname={name}")
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
