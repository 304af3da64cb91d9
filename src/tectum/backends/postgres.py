"""The PostgreSQL backend: state versions, the journal of the current run and the workspace lock
in one PostgreSQL database shared by a team (psycopg 3; ``pip install 'tectum[postgres]'``).

``PostgresBackend(dsn, workspace)`` takes a libpq connection string (``host=db.example port=5432
dbname=tectum user=ops`` or ``postgresql://ops@db.example/tectum``); the password may come from
the string, ``PGPASSWORD`` or ``~/.pgpass`` and is never shown in a message. It is the
:class:`~tectum.state.manager.StateManager` (the state rules, the same for every backend) over
:class:`PostgresStorage`, which stores on these tables (created when missing, in the first schema
of the ``search_path``; pass ``options=-csearch_path=NAME`` to keep them apart from other
applications' tables):

* ``states(workspace, serial, lineage, created_at, author, operation, document, revision,
  desired)`` — one row per version, primary key ``(workspace, serial)``; ``document`` and
  ``desired`` are JSON text, as in SQLite (not ``jsonb``: a damaged document must be storable,
  so that reading it reports "Unreadable state" instead of failing the write that made it).
* ``journal(id, workspace, base_serial, address, action, record, created_at)`` — intents
  (``action = 'intent'``) and results of the run in progress; replayed by ``read`` onto the
  version ``base_serial`` when that is still the latest, cleared by ``write``.
* ``lock_info(workspace, info, pg_pid)`` — the lock holder's :class:`LockInfo` as JSON (NULL when
  free) and the PostgreSQL backend pid of its session.

The lock is a session-level advisory lock (``pg_try_advisory_lock``) on a key derived from the
workspace name (first 8 bytes of SHA-256 of ``"tectum workspace lock:" + name``, as a signed
64-bit integer), held on this object's own connection — Terraform's ``pg`` backend locks the same
way. The server drops it when the holder's session ends, however the holder ends (killed,
machine gone: TCP keepalives are set per session so a vanished client is noticed within about a
minute), so a dead run never blocks the next one; the details it left in ``lock_info`` are
reported as taken over, as with SQLite. Every attempt to take or release the lock first locks the
workspace's ``lock_info`` row (``SELECT ... FOR UPDATE``), so the advisory lock and the recorded
holder change together: a locker that loses a race always names the run that won it.

Differences from SQLite, all in what PostgreSQL makes possible:

* :meth:`force_unlock` of a lock whose holder still runs terminates the holder's database session
  (``pg_terminate_backend``, which needs the same database role or ``pg_signal_backend``); that
  run then fails at its next state operation with "State lock lost" instead of writing without
  the lock.
* Connection problems are :class:`DiagnosticError` "Cannot reach the state database" naming host,
  port, database and user (never the password) and what to check.
Storage errors: "State is locked" (naming the holder), "Lock ID mismatch", "Not locked", "Lock is
in use" (the holder's session could not be terminated), "State lock lost", "Unreadable state"
(naming the workspace and the database), "Cannot reach the state database", "Invalid state
database address", "State database error" (anything else the server refuses, with its message);
the manager's are in :mod:`tectum.state.manager`.

psycopg is imported only when a backend is used, so ``import tectum`` stays light.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tectum.backends.base import (
    JournalRow,
    LockInfo,
    NewVersion,
    StoredVersion,
    VersionInfo,
    author,
)
from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.state.manager import StateManager

if TYPE_CHECKING:
    import psycopg

    Connection = psycopg.Connection[tuple[Any, ...]]

_TABLES = ("states", "journal", "lock_info")
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS states (
        workspace TEXT NOT NULL,
        serial BIGINT NOT NULL,
        lineage TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        author TEXT NOT NULL,
        operation TEXT NOT NULL,
        document TEXT NOT NULL,
        revision TEXT,
        desired TEXT,
        PRIMARY KEY (workspace, serial)
    )""",
    """CREATE TABLE IF NOT EXISTS journal (
        id BIGSERIAL PRIMARY KEY,
        workspace TEXT NOT NULL,
        base_serial BIGINT NOT NULL,
        address TEXT NOT NULL,
        action TEXT NOT NULL,
        record TEXT,
        created_at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS journal_workspace_idx ON journal (workspace, base_serial, id)",
    """CREATE TABLE IF NOT EXISTS lock_info (
        workspace TEXT PRIMARY KEY,
        info TEXT,
        pg_pid INTEGER
    )""",
)
_ROW_LOCK_TIMEOUT = "10s"  # waiting for another locker's (short) transaction on lock_info
_TERMINATE_WAIT = 10.0  # seconds for a terminated holder's session to let go of the lock


def _key(purpose: str, workspace: str) -> int:
    """A signed 64-bit advisory lock key for ``purpose`` on ``workspace``."""
    digest = hashlib.sha256(f"tectum {purpose}:{workspace}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _parse_lock_info(text: str | None) -> LockInfo | None:
    if not text:
        return None
    try:
        data = json.loads(text)
        return LockInfo(**data) if isinstance(data, dict) else None
    except (ValueError, TypeError):
        return None


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


class PostgresStorage:
    """The versions, journal and lock of one workspace in a PostgreSQL database: storage only
    (:class:`~tectum.backends.base.StateStorage`); :class:`PostgresBackend` adds the rules."""

    def __init__(self, dsn: str, workspace: str = "default") -> None:
        import importlib.util

        if importlib.util.find_spec("psycopg") is None:  # (finds it without importing it)
            raise DiagnosticError(Diagnostic.error(
                "PostgreSQL support is not installed",
                "The PostgreSQL state backend needs psycopg 3: install it with "
                "`pip install 'tectum[postgres]'` (or `pip install 'psycopg[binary]'`)."))
        self.dsn = dsn
        self.workspace = workspace
        self._conn: Connection | None = None
        self._lock_id: str | None = None
        self._lock_held: LockInfo | None = None
        self._lock_key = _key("workspace lock", workspace)
        self._write_key = _key("write", workspace)

    # -- connection ----------------------------------------------------------------------
    def _params(self) -> dict[str, str]:
        from psycopg.conninfo import conninfo_to_dict

        try:
            return {k: str(v) for k, v in conninfo_to_dict(self.dsn).items() if v is not None}
        except Exception:  # the message may quote the string, password included
            raise DiagnosticError(Diagnostic.error(
                "Invalid state database address",
                "The PostgreSQL connection string of the state backend cannot be parsed. Write "
                "it as key=value pairs (host=... port=... dbname=... user=...) or as a "
                "postgresql://user@host:port/dbname URI.")) from None

    def _where(self) -> str:
        """Host, port, database and user of the DSN, for messages (no password)."""
        params = self._params()
        host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") \
            or "the local socket"
        port = params.get("port") or os.environ.get("PGPORT") or "5432"
        dbname = params.get("dbname") or os.environ.get("PGDATABASE")
        user = params.get("user") or os.environ.get("PGUSER")
        where = f"host {host} port {port}"
        if dbname:
            where += f", database {dbname}"
        if user:
            where += f", user {user}"
        return where

    def _reason(self, exc: BaseException) -> str:
        # libpq's first line says what failed; the next ones are its own hints ("Is the
        # server running...?"), which the diagnostic's advice replaces
        text = " ".join(str(exc).strip().split("\n", 1)[0].split()) or type(exc).__name__
        password = self._params().get("password")
        if password:
            text = text.replace(password, "***")
        return text.rstrip(".")

    def _unreachable(self, exc: BaseException, *, lost: bool = False) -> DiagnosticError:
        what = "The connection to" if lost else "tectum cannot connect to"
        verb = " was lost" if lost else ""
        return DiagnosticError(Diagnostic.error(
            "Cannot reach the state database",
            f"{what} the PostgreSQL state database at {self._where()}{verb}: "
            f"{self._reason(exc)}. Check that the server is running and accepts connections "
            "from this machine, and that the connection string names the right host, port, "
            "database and user (and a password, via the string, PGPASSWORD or ~/.pgpass)."))

    def _lock_lost(self) -> DiagnosticError:
        lock_id = self._lock_id
        self._lock_id = None
        self._lock_held = None
        self._drop_connection()
        return DiagnosticError(Diagnostic.error(
            "State lock lost",
            f"The database session that held the lock {lock_id} on workspace "
            f"{self.workspace!r} ended (the connection to {self._where()} was lost, or someone "
            "ran force-unlock), so another run may now hold it. Nothing more was stored; run "
            "the command again: what was already recorded is kept in the journal."))

    def damaged(self, detail: str) -> DiagnosticError:
        """"Unreadable state" naming the workspace and the database (no password): ``detail``
        says what the state manager found damaged."""
        return DiagnosticError(Diagnostic.error(
            "Unreadable state",
            f"The state of workspace {self.workspace!r} in the PostgreSQL database at "
            f"{self._where()} cannot be read: {detail}. Nothing was changed.",
        ))

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _connect(self) -> Connection:
        import psycopg

        params = self._params()
        extra: dict[str, Any] = {}
        if "connect_timeout" not in params and "PGCONNECT_TIMEOUT" not in os.environ:
            extra["connect_timeout"] = 10
        if "application_name" not in params and "PGAPPNAME" not in os.environ:
            extra["application_name"] = f"tectum ({self.workspace})"
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, **extra)
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc) from None
        except psycopg.Error as exc:
            raise self._database_error(exc) from None
        try:
            # Notice a client that vanished without closing its connection (and so free its
            # lock) within about a minute; ignored on Unix sockets.
            conn.execute("SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; "
                         "SET tcp_keepalives_count = 3")
            self._ensure_schema(conn)
        except psycopg.Error as exc:
            broken = conn.broken
            conn.close()
            if broken:
                raise self._unreachable(exc, lost=True) from None
            raise self._database_error(exc) from None
        return conn

    @staticmethod
    def _ensure_schema(conn: Connection) -> None:
        row = conn.execute("SELECT " + ", ".join(f"to_regclass('{t}')" for t in _TABLES)
                           ).fetchone()
        if row is not None and all(r is not None for r in row):
            return
        with conn.transaction():
            # CREATE TABLE IF NOT EXISTS is not safe against itself running concurrently
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_key("schema", ""),))
            for statement in _SCHEMA:
                conn.execute(statement)

    def _database_error(self, exc: BaseException) -> DiagnosticError:
        return DiagnosticError(Diagnostic.error(
            "State database error",
            f"The PostgreSQL state database at {self._where()} refused an operation on "
            f"workspace {self.workspace!r}: {self._reason(exc)}. Nothing was changed. Check "
            "the server's log, and the role's privileges on the tables states, journal and "
            "lock_info."))

    def _connection(self) -> Connection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._lock_id is not None:  # the session that held the lock is gone
            raise self._lock_lost()
        self._conn = self._connect()
        return self._conn

    @contextmanager
    def _tx(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A transaction on this backend's connection, with psycopg errors turned into
        diagnostics (``snapshot``: REPEATABLE READ, one consistent view for several reads)."""
        import psycopg

        conn = self._connection()
        try:
            with conn.transaction():
                if snapshot:
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                yield conn
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                if self._lock_id is not None:
                    raise self._lock_lost() from None
                self._drop_connection()
                raise self._unreachable(exc, lost=True) from None
            raise self._database_error(exc) from None

    def close(self) -> None:
        """Release a lock still held and close the connection."""
        if self._lock_id is not None:
            self.unlock(self._lock_id)
        self._lock_id = None
        self._lock_held = None
        self._drop_connection()

    # -- lock ------------------------------------------------------------------------------
    def lock(self, operation: str, *, timeout: float = 0.0) -> tuple[LockInfo, str | None]:
        """Take the workspace lock, waiting up to ``timeout`` seconds (attempts with backoff
        from 50 ms to 1 s, the last one at the deadline). Returns the lock and, when the
        previous holder's session ended without releasing it, a warning sentence. Raises
        :class:`DiagnosticError` "State is locked" naming the holder when another session holds
        it (this object's own lock included: a lock is not taken twice)."""
        from tectum import __version__

        lock_id = os.urandom(16).hex()
        deadline = time.monotonic() + timeout
        delay = 0.05
        if self._lock_held is not None:  # this object's own lock: no point in waiting
            raise self._locked(self._lock_held, 0)
        while True:
            info = LockInfo(lock_id, operation, author(), os.uname().nodename,
                            os.getpid(), __version__, time.time())
            got, holder = self._try_lock(info)
            if got:
                self._lock_id = info.id
                self._lock_held = info
                warning = None
                if holder is not None:
                    warning = ("The previous run did not finish cleanly and left its lock "
                               f"({holder.describe()}); the lock was taken over.")
                return info, warning
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._locked(holder, timeout)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)

    def _locked(self, holder: LockInfo | None, timeout: float) -> DiagnosticError:
        who = holder.describe() if holder else "details unavailable"
        waited = f" (waited {timeout:g} s)" if timeout else ""
        return DiagnosticError(Diagnostic.error(
            "State is locked",
            f"Workspace {self.workspace!r} is locked by another run{waited}: {who}. "
            "Wait for that run to finish (or pass --lock-timeout to wait); the database "
            "releases the lock when a run ends, even when it is killed.",
        ))

    def _try_lock(self, info: LockInfo) -> tuple[bool, LockInfo | None]:
        """One attempt: (True, details a dead holder left) or (False, the live holder)."""
        import psycopg

        got = False
        try:
            with self._tx() as conn:
                conn.execute(f"SET LOCAL lock_timeout = '{_ROW_LOCK_TIMEOUT}'")
                conn.execute("INSERT INTO lock_info (workspace) VALUES (%s) "
                             "ON CONFLICT DO NOTHING", (self.workspace,))
                row = conn.execute("SELECT info FROM lock_info WHERE workspace = %s "
                                   "FOR UPDATE", (self.workspace,)).fetchone()
                recorded = _parse_lock_info(row[0] if row else None)
                flag = conn.execute("SELECT pg_try_advisory_lock(%s)",
                                    (self._lock_key,)).fetchone()
                got = bool(flag and flag[0])
                if got:
                    conn.execute("UPDATE lock_info SET info = %s, pg_pid = pg_backend_pid() "
                                 "WHERE workspace = %s", (_dumps(info._asdict()),
                                                          self.workspace))
        except BaseException:
            if got and self._conn is not None and not self._conn.closed:
                # a session-level advisory lock outlives the rolled-back transaction
                try:
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._lock_key,))
                except psycopg.Error:
                    self._drop_connection()
            raise
        return got, recorded

    def unlock(self, lock_id: str) -> bool:
        """Release the lock this object holds; False when ``lock_id`` is not it or the lock
        was already lost (its session ended, which released it)."""
        import psycopg

        if self._lock_id is None or lock_id != self._lock_id:
            return False
        self._lock_id = None
        self._lock_held = None
        conn = self._conn
        if conn is None or conn.closed:
            self._drop_connection()
            return False
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL lock_timeout = '{_ROW_LOCK_TIMEOUT}'")
                row = conn.execute("SELECT info FROM lock_info WHERE workspace = %s "
                                   "FOR UPDATE", (self.workspace,)).fetchone()
                recorded = _parse_lock_info(row[0] if row else None)
                if recorded is not None and recorded.id == lock_id:
                    conn.execute("UPDATE lock_info SET info = NULL, pg_pid = NULL "
                                 "WHERE workspace = %s", (self.workspace,))
                flag = conn.execute("SELECT pg_advisory_unlock(%s)",
                                    (self._lock_key,)).fetchone()
            return bool(flag and flag[0])
        except psycopg.Error:
            # ending the session releases the lock in any case
            self._drop_connection()
            return False

    def lock_info(self) -> LockInfo | None:
        """The recorded holder (as with SQLite, possibly a dead one whose lock is free)."""
        with self._tx() as conn:
            row = conn.execute("SELECT info FROM lock_info WHERE workspace = %s",
                               (self.workspace,)).fetchone()
        return _parse_lock_info(row[0] if row else None)

    def force_unlock(self, lock_id: str) -> None:
        """Release a lock left behind. When its holder's session is still alive, that session
        is terminated (``pg_terminate_backend``) — the run it belongs to then fails with "State
        lock lost" at its next state operation. DiagnosticError "Not locked", "Lock ID
        mismatch", or "Lock is in use" when the session cannot be terminated from here."""
        import psycopg

        if self._lock_id is not None and self._lock_id == lock_id:
            self.unlock(lock_id)
            return
        got = False
        try:
            with self._tx() as conn:
                conn.execute(f"SET LOCAL lock_timeout = '{_ROW_LOCK_TIMEOUT}'")
                row = conn.execute("SELECT info, pg_pid FROM lock_info WHERE workspace = %s "
                                   "FOR UPDATE", (self.workspace,)).fetchone()
                held = _parse_lock_info(row[0] if row else None)
                if held is None:
                    raise DiagnosticError(Diagnostic.error(
                        "Not locked",
                        f"Workspace {self.workspace!r} is not locked; nothing to do."))
                if held.id != lock_id:
                    raise DiagnosticError(Diagnostic.error(
                        "Lock ID mismatch",
                        f"The lock on workspace {self.workspace!r} has ID {held.id}, not "
                        f"{lock_id}. Check the ID in the error that named the holder."))
                got = self._take_from_holder(conn, held)
                conn.execute("UPDATE lock_info SET info = NULL, pg_pid = NULL "
                             "WHERE workspace = %s", (self.workspace,))
                conn.execute("SELECT pg_advisory_unlock(%s)", (self._lock_key,))
                got = False
        finally:
            if got and self._conn is not None and not self._conn.closed:
                try:
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._lock_key,))
                except psycopg.Error:
                    self._drop_connection()

    def _take_from_holder(self, conn: Connection, held: LockInfo) -> bool:
        """Get the advisory lock, terminating the session that holds it if need be."""
        import psycopg

        def try_lock() -> bool:
            flag = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_key,)).fetchone()
            return bool(flag and flag[0])

        if try_lock():  # the holder is gone already: only its details were left
            return True
        unsigned = self._lock_key & 0xFFFF_FFFF_FFFF_FFFF
        pids = [r[0] for r in conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1",
            (unsigned >> 32, unsigned & 0xFFFF_FFFF))]
        refused = ""
        for pid in pids:
            try:
                with conn.transaction():  # a savepoint: a refusal must not abort the rest
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            except psycopg.errors.InsufficientPrivilege as exc:
                refused = self._reason(exc)
        deadline = time.monotonic() + _TERMINATE_WAIT
        while True:
            if try_lock():
                return True
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        because = f" ({refused})" if refused else ""
        raise DiagnosticError(Diagnostic.error(
            "Lock is in use",
            f"The lock {held.id} is held by a run that is still going: {held.describe()}, and "
            f"its database session could not be ended from here{because}. Stop that process "
            "(it releases the lock as it ends), or run force-unlock as a role that may "
            "terminate its session (the same role, or one with pg_signal_backend)."))

    # -- versions and journal ------------------------------------------------------------------
    def get_latest(self) -> tuple[StoredVersion | None, list[JournalRow]]:
        """The latest version and the journal rows on it, in one snapshot (REPEATABLE READ)."""
        with self._tx(snapshot=True) as conn:
            row = conn.execute(
                "SELECT serial, document FROM states WHERE workspace = %s "
                "ORDER BY serial DESC LIMIT 1", (self.workspace,)).fetchone()
            latest = None if row is None else StoredVersion(int(row[0]), row[1])
            rows = conn.execute(
                "SELECT address, action, record FROM journal WHERE workspace = %s "
                "AND base_serial = %s ORDER BY id",
                (self.workspace, 0 if latest is None else latest.serial)).fetchall()
        return latest, [JournalRow(*r) for r in rows]

    def get_journal(self) -> list[JournalRow]:
        """The journal rows on the latest version, oldest first."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT address, action, record FROM journal WHERE workspace = %s "
                "AND base_serial = (SELECT COALESCE(MAX(serial), 0) FROM states "
                "WHERE workspace = %s) ORDER BY id", (self.workspace, self.workspace)).fetchall()
        return [JournalRow(*r) for r in rows]

    def get_version(self, serial: int) -> StoredVersion | None:
        """Version ``serial`` with its desired state, or None."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT document, desired FROM states WHERE workspace = %s AND serial = %s",
                (self.workspace, serial)).fetchone()
        return None if row is None else StoredVersion(serial, row[0], row[1])

    def history(self) -> list[VersionInfo]:
        """Every version's metadata, oldest first."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT serial, lineage, created_at, author, operation, revision FROM states "
                "WHERE workspace = %s ORDER BY serial", (self.workspace,)).fetchall()
        return [VersionInfo(int(r[0]), r[1], float(r[2]), r[3], r[4], r[5]) for r in rows]

    def put_version(self, make: Callable[[StoredVersion | None], NewVersion]) -> NewVersion:
        """Insert the version ``make`` returns for the latest one and clear the journal, in one
        transaction; a transaction-level advisory lock on the workspace's write key holds off
        every other writer until it commits."""
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._write_key,))
            row = conn.execute("SELECT serial, document FROM states WHERE workspace = %s "
                               "ORDER BY serial DESC LIMIT 1", (self.workspace,)).fetchone()
            new = make(None if row is None else StoredVersion(int(row[0]), row[1]))
            conn.execute(
                "INSERT INTO states (workspace, serial, lineage, created_at, author, operation, "
                "document, revision, desired) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (self.workspace, *new))
            conn.execute("DELETE FROM journal WHERE workspace = %s", (self.workspace,))
        return new

    def append_journal(self, base_serial: int, rows: Sequence[JournalRow]) -> None:
        """Commit ``rows`` in one transaction (durable when this returns)."""
        if not rows:
            return
        now = time.time()
        with self._tx() as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO journal (workspace, base_serial, address, action, record, "
                "created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                [(self.workspace, base_serial, *row, now) for row in rows])

    # -- workspaces --------------------------------------------------------------------------
    def workspaces(self) -> list[str]:
        """Workspaces with at least one version."""
        with self._tx() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT workspace FROM states")]

    def delete_workspace(self, name: str) -> None:
        """Remove the versions and journal of workspace ``name`` (its lock is left alone)."""
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_key("write", name),))
            conn.execute("DELETE FROM states WHERE workspace = %s", (name,))
            conn.execute("DELETE FROM journal WHERE workspace = %s", (name,))


class PostgresBackend(StateManager):
    """The state of workspace ``workspace`` in the PostgreSQL database ``dsn``: the state rules
    of :class:`~tectum.state.manager.StateManager` over :class:`PostgresStorage`."""

    storage: PostgresStorage

    def __init__(self, dsn: str, workspace: str = "default") -> None:
        super().__init__(PostgresStorage(dsn, workspace))
