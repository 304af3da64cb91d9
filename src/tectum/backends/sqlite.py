"""The embedded backend: one SQLite file (``.tectum/state.db``) holds state versions, the
journal of the current run and the workspace locks. ``SQLiteBackend(path, workspace)`` is the
:class:`~tectum.state.manager.StateManager` (the state rules, the same for every backend) over
:class:`SQLiteStorage`, which stores:

* Every apply stores a new state version (``serial`` + 1); all earlier versions stay (history).
* During an apply each finished resource is committed to the journal at once (a small insert in
  WAL mode), so a killed process loses nothing that was done; the next reader replays the
  journal onto the last version, and the next apply folds it into a new version.
* ``synchronous=NORMAL`` in WAL mode: a commit survives the process being killed; on power loss
  the database stays consistent and may lose the last commits (SQLite's documented trade-off).
* The lock is an exclusive ``flock`` on ``<state file>.<workspace>.lock``, which also holds the
  holder's details (id, operation, who, pid, version, time) as JSON. The kernel releases it when
  the holder dies, however it dies, so a killed run never leaves a lock behind; the details it
  left are reported as taken over. A plan that changes nothing never writes to the database.
* Taking the lock and writing its details are one step for everyone else: both happen under a
  second, short ``flock`` on ``<lock file>.guard`` (held for a few system calls), under which
  every other locker, ``lock_info``, ``unlock`` and ``force_unlock`` look at the lock too. So a
  locker that loses a race always finds the winner's details, never an empty lock file.
* A new database is made complete (schema, WAL mode) under a temporary name and then linked into
  place, so the state file is never seen half made. An existing file that is not a tectum state
  database — empty (0 bytes), an SQLite database without tectum's tables, not SQLite at all, or
  made by a newer tectum — is refused with a diagnostic and left as it is: it is never taken for
  a new project (which would start a new lineage and lose the history).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator, Sequence

from tectum.backends.base import (
    JournalRow,
    LockInfo,
    NewVersion,
    StoredVersion,
    VersionInfo,
    author,
)
from tectum.diagnostics import Diagnostic, DiagnosticError, SourceLocation
from tectum.process import pid_alive
from tectum.state.manager import StateManager

_SCHEMA_VERSION = 3
_SCHEMA = """
CREATE TABLE IF NOT EXISTS states (
    workspace TEXT NOT NULL,
    serial INTEGER NOT NULL,
    lineage TEXT NOT NULL,
    created_at REAL NOT NULL,
    author TEXT NOT NULL,
    operation TEXT NOT NULL,
    document TEXT NOT NULL,
    revision TEXT,
    desired TEXT,
    PRIMARY KEY (workspace, serial)
);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace TEXT NOT NULL,
    base_serial INTEGER NOT NULL,
    address TEXT NOT NULL,
    action TEXT NOT NULL,
    record TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_run ON journal (workspace, base_serial, id);
"""
#: the columns that make a ``states`` table tectum's (schema 0 and 1 lack revision and desired)
_STATES_COLUMNS = frozenset({"workspace", "serial", "lineage", "created_at", "author",
                             "operation", "document"})
#: how long the lock guard is waited for; it is held for a few system calls, so only a process
#: stopped (SIGSTOP, a debugger) in between holds it longer, and then lockers go on without it
_GUARD_WAIT = 10.0


def _holder_details(fd: int) -> LockInfo | None:
    """The details of the process holding the lock, read under the guard (so complete). A holder
    that took the lock without the guard (a tectum from before it) writes them just after it
    takes the lock: then wait briefly while the file is empty or still names a dead holder."""
    host = os.uname().nodename
    held = None
    for _ in range(50):
        held = _read_lock_info(fd)
        if held is not None and (held.host != host or pid_alive(held.pid)):
            return held
        time.sleep(0.01)
    return held


def _read_lock_info(fd: int) -> LockInfo | None:
    try:
        data = json.loads(os.pread(fd, 65536, 0) or b"null")
        return LockInfo(**data) if isinstance(data, dict) else None
    except (ValueError, TypeError, OSError):
        return None


class SQLiteStorage:
    """The versions, journal and lock of one workspace in the SQLite file ``path``: storage
    only (:class:`~tectum.backends.base.StateStorage`); :class:`SQLiteBackend` adds the rules."""

    def __init__(self, path: str, workspace: str = "default") -> None:
        self.path = path
        self.workspace = workspace
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._lock_id: str | None = None

    # -- connection ----------------------------------------------------------------------
    def damaged(self, detail: str) -> DiagnosticError:
        """"Unreadable state" naming the file: ``detail`` says what is damaged (what the state
        manager found, or SQLite's error)."""
        return DiagnosticError(Diagnostic.error(
            "Unreadable state",
            f"The state database {self.path} cannot be read: {detail}. Nothing was changed. "
            "Restore the file from a backup, or move it aside to start with an empty state "
            "(tectum then reads the world again and adopts objects that already match).",
            source=SourceLocation(self.path),
        ))

    def _foreign(self, found: str) -> DiagnosticError:
        return DiagnosticError(Diagnostic.error(
            "Not a tectum state database",
            f"The state database {self.path} is {found}, not a tectum state database: it holds "
            "none of this project's state versions (their lineage and history). Nothing was "
            "changed, and tectum does not start a new state over it. If the project has state, "
            "restore the file from a backup, or move this file aside and load a saved state "
            "with `tectum state push FILE`. If the project has no state yet, delete the file "
            "and run the command again to start over (tectum then reads the world again and "
            "adopts objects that already match).",
            source=SourceLocation(self.path),
        ))

    @property
    def db(self) -> sqlite3.Connection:
        """The open database, made on first use when there is no file yet.

        Raises :class:`DiagnosticError` "Not a tectum state database" for an existing file that
        is empty or an SQLite database without tectum's tables, "State database from a newer
        tectum" for a schema this version does not know, and "Unreadable state" for a file
        that is not SQLite or cannot be opened; the file is left as it is."""
        if self._db is None:
            try:
                info = os.stat(self.path)
            except FileNotFoundError:
                self._create()
            except OSError as exc:
                raise self.damaged(exc.strerror or str(exc)) from None
            else:
                if stat.S_ISREG(info.st_mode) and info.st_size == 0:
                    raise self._foreign("an empty file (0 bytes)")
            try:
                db = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                                     check_same_thread=False)
            except sqlite3.DatabaseError as exc:
                raise self.damaged(str(exc)) from None
            try:
                self._check_schema(db)
                db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.DatabaseError as exc:
                db.close()
                raise self.damaged(str(exc)) from None
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def _create(self) -> None:
        """Make a new, complete database at ``path``: built under a temporary name beside it,
        then hard-linked into place, so that no one ever opens it half made (a process that
        loses the race to create it uses the winner's)."""
        directory = os.path.dirname(self.path) or "."
        tmp = os.path.join(directory, f".{os.path.basename(self.path)}.new-{os.getpid()}-"
                                      f"{os.urandom(4).hex()}")
        try:
            os.makedirs(directory, exist_ok=True)
            with contextlib.closing(sqlite3.connect(tmp, isolation_level=None)) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # made by another process meanwhile: that one is used
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP,
                                     errno.EMLINK):
                    raise
                if not os.path.exists(self.path):  # a file system without hard links
                    os.rename(tmp, self.path)
        except sqlite3.DatabaseError as exc:
            raise self.damaged(f"it cannot be created ({exc})") from None
        except OSError as exc:
            raise self.damaged(f"it cannot be created ({exc.strerror or exc})") from None
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp + suffix)

    def _check_schema(self, db: sqlite3.Connection) -> None:
        """Refuse a database that is not tectum's (reading only), upgrade an older schema."""
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        if version > _SCHEMA_VERSION:
            raise DiagnosticError(Diagnostic.error(
                "State database from a newer tectum",
                f"The state database {self.path} has schema version {version}; this tectum "
                f"reads up to version {_SCHEMA_VERSION}. Nothing was changed. Upgrade tectum "
                "to the version that wrote it.",
                source=SourceLocation(self.path)))
        if "states" not in tables:
            listed = ", ".join(tables[:8]) + (" …" if len(tables) > 8 else "")
            raise self._foreign("an SQLite database without tectum's tables ("
                                + (f"it has {listed}" if tables else "it has no tables") + ")")
        columns = {r[1] for r in db.execute("PRAGMA table_info(states)")}
        if missing := _STATES_COLUMNS - columns:
            raise self._foreign("an SQLite database whose states table is not tectum's (it "
                                f"lacks {', '.join(sorted(missing))})")
        if version != _SCHEMA_VERSION:  # 0, 1 → 3: revision and desired state per version
            db.execute("PRAGMA journal_mode=WAL")  # (executescript would commit on its own)
            db.execute("BEGIN IMMEDIATE")
            try:  # (read again: another process may have upgraded it meanwhile)
                columns = {r[1] for r in db.execute("PRAGMA table_info(states)")}
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                for column in ("revision", "desired"):
                    if column not in columns:
                        db.execute(f"ALTER TABLE states ADD COLUMN {column} TEXT")
                db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the database and release the lock if this object still holds it."""
        if self._lock_fd is not None and self._lock_id is not None:
            self.unlock(self._lock_id)
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- lock ------------------------------------------------------------------------------
    @property
    def lock_path(self) -> str:
        return f"{self.path}.{self.workspace}.lock"

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Hold the guard of the lock: an exclusive ``flock`` on ``<lock file>.guard`` under
        which the lock is taken and its details written (or cleared and released), and under
        which everyone else looks at the lock. Waited for up to ``_GUARD_WAIT`` seconds; after
        that (a holder stopped in those few system calls) the caller goes on without it."""
        fd = os.open(f"{self.lock_path}.guard", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            deadline = time.monotonic() + _GUARD_WAIT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.0005)
            yield
        finally:
            os.close(fd)  # releases the guard

    def lock(self, operation: str, *, timeout: float = 0.0) -> tuple[LockInfo, str | None]:
        """Take the workspace lock, waiting up to ``timeout`` seconds (backoff from 50 ms to
        1 s, the last attempt at the deadline). Returns the lock and, when the previous holder
        died without releasing it, a warning sentence. Raises :class:`DiagnosticError` "State
        is locked" naming the holder (its lock ID, pid, host) when another process — or this
        object — still holds it."""
        from tectum import __version__

        info = LockInfo(os.urandom(16).hex(), operation, author(), os.uname().nodename,
                        os.getpid(), __version__, time.time())
        os.makedirs(os.path.dirname(self.lock_path) or ".", exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + timeout
        delay = 0.05
        try:
            while True:
                held: LockInfo | None = None
                with self._guard():
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        held = _read_lock_info(fd)  # complete: written under the guard
                    else:
                        previous = _read_lock_info(fd)
                        os.ftruncate(fd, 0)
                        os.pwrite(fd, json.dumps(info._asdict()).encode(), 0)
                        break
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    time.sleep(min(delay, remaining))
                    delay = min(delay * 2, 1.0)
                    continue
                if held is None or (held.host == os.uname().nodename
                                    and not pid_alive(held.pid)):
                    held = _holder_details(fd)  # a holder that did not use the guard
                who = held.describe() if held else "details unavailable"
                waited = f" (waited {timeout:g} s)" if timeout else ""
                raise DiagnosticError(Diagnostic.error(
                    "State is locked",
                    f"Workspace {self.workspace!r} is locked by another run{waited}: {who}. "
                    "Wait for that run to finish (or pass --lock-timeout to wait); tectum "
                    "releases the lock when a run ends, even when it is killed.",
                ))
        except BaseException:
            os.close(fd)
            raise
        warning = None
        if previous is not None:
            warning = ("The previous run did not finish cleanly and left its lock "
                       f"({previous.describe()}); the lock was taken over.")
        self._lock_fd = fd
        self._lock_id = info.id
        return info, warning

    def unlock(self, lock_id: str) -> bool:
        """Release the lock this object holds (its details cleared first, under the guard);
        False when ``lock_id`` is not that lock."""
        fd = self._lock_fd
        if fd is None or lock_id != self._lock_id:
            return False
        with self._guard():
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._lock_fd = None
        return True

    def force_unlock(self, lock_id: str) -> None:
        """Release a lock left behind. With ``flock`` the kernel already releases the lock of a
        dead process, so this only clears the holder's details; a lock whose holder still runs
        cannot be taken from it (stop that run instead). Raises :class:`DiagnosticError` "Not
        locked", "Lock ID mismatch" or "Lock is in use"."""
        not_locked = DiagnosticError(Diagnostic.error(
            "Not locked", f"Workspace {self.workspace!r} is not locked; nothing to do."))
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise not_locked from None
        try:
            with self._guard():
                held = _read_lock_info(fd)
                if held is None:
                    raise not_locked
                if held.id != lock_id:
                    raise DiagnosticError(Diagnostic.error(
                        "Lock ID mismatch",
                        f"The lock on workspace {self.workspace!r} has ID {held.id}, not "
                        f"{lock_id}. Check the ID in the error that named the holder."))
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise DiagnosticError(Diagnostic.error(
                        "Lock is in use",
                        f"The lock {lock_id} is held by a run that is still going: "
                        f"{held.describe()}. Stop that process (it releases the lock as it "
                        "ends) rather than unlocking under it.")) from None
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def lock_info(self) -> LockInfo | None:
        """The holder's details, or None when nobody holds the lock (a dead holder does not:
        the kernel released its ``flock``)."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            with self._guard():
                if self._lock_fd is None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    except BlockingIOError:
                        pass  # held: report the holder
                    else:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                        return None
                return _read_lock_info(fd)
        finally:
            os.close(fd)

    # -- versions and journal ------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction (one snapshot; ``write``: ``BEGIN IMMEDIATE``, holding off every
        other writer of the file), committed when the block ends and rolled back when it
        raises. SQLite's own errors become :class:`DiagnosticError` "Unreadable state" (or
        "Cannot write state" for ``write``)."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            if not write:
                raise self.damaged(str(exc)) from None
            raise DiagnosticError(Diagnostic.error(
                "Cannot write state",
                f"The state database {self.path} refused a write: {exc}. Nothing was changed. "
                "Check that the file and its directory are writable and that the disk has "
                "room.", source=SourceLocation(self.path))) from None

    def get_latest(self) -> tuple[StoredVersion | None, list[JournalRow]]:
        """The latest version and the journal rows on it, in one snapshot."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT serial, document FROM states WHERE workspace = ? "
                "ORDER BY serial DESC LIMIT 1", (self.workspace,)).fetchone()
            latest = None if row is None else StoredVersion(int(row[0]), row[1])
            rows = db.execute(
                "SELECT address, action, record FROM journal WHERE workspace = ? "
                "AND base_serial = ? ORDER BY id",
                (self.workspace, 0 if latest is None else latest.serial)).fetchall()
        return latest, [JournalRow(*r) for r in rows]

    def get_journal(self) -> list[JournalRow]:
        """The journal rows on the latest version, oldest first."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT address, action, record FROM journal WHERE workspace = ? "
                "AND base_serial = (SELECT COALESCE(MAX(serial), 0) FROM states "
                "WHERE workspace = ?) ORDER BY id", (self.workspace, self.workspace)).fetchall()
        return [JournalRow(*r) for r in rows]

    def get_version(self, serial: int) -> StoredVersion | None:
        """Version ``serial`` with its desired state, or None."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT document, desired FROM states WHERE workspace = ? AND serial = ?",
                (self.workspace, serial)).fetchone()
        return None if row is None else StoredVersion(serial, row[0], row[1])

    def history(self) -> list[VersionInfo]:
        """Every version's metadata, oldest first."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT serial, lineage, created_at, author, operation, revision FROM states "
                "WHERE workspace = ? ORDER BY serial", (self.workspace,)).fetchall()
        return [VersionInfo(*r) for r in rows]

    def put_version(self, make: Callable[[StoredVersion | None], NewVersion]) -> NewVersion:
        """Insert the version ``make`` returns for the latest one and clear the journal, in one
        ``BEGIN IMMEDIATE`` transaction (no other writer in between)."""
        with self._transaction(write=True) as db:
            row = db.execute(
                "SELECT serial, document FROM states WHERE workspace = ? "
                "ORDER BY serial DESC LIMIT 1", (self.workspace,)).fetchone()
            new = make(None if row is None else StoredVersion(int(row[0]), row[1]))
            db.execute(
                "INSERT INTO states (workspace, serial, lineage, created_at, author, operation, "
                "document, revision, desired) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self.workspace, *new))
            db.execute("DELETE FROM journal WHERE workspace = ?", (self.workspace,))
        return new

    def append_journal(self, base_serial: int, rows: Sequence[JournalRow]) -> None:
        """Commit ``rows`` in one transaction (a small insert in WAL mode)."""
        if not rows:
            return
        now = time.time()
        with self._transaction(write=True) as db:
            db.executemany(
                "INSERT INTO journal (workspace, base_serial, address, action, record, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(self.workspace, base_serial, *row, now) for row in rows])

    def workspaces(self) -> list[str]:
        """Workspaces with at least one version."""
        with self._transaction() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT workspace FROM states")]

    def delete_workspace(self, name: str) -> None:
        """Remove the versions and journal of workspace ``name``."""
        with self._transaction(write=True) as db:
            db.execute("DELETE FROM states WHERE workspace = ?", (name,))
            db.execute("DELETE FROM journal WHERE workspace = ?", (name,))


class SQLiteBackend(StateManager):
    """The state of workspace ``workspace`` in the SQLite file ``path``: the state rules of
    :class:`~tectum.state.manager.StateManager` over :class:`SQLiteStorage`."""

    storage: SQLiteStorage

    def __init__(self, path: str, workspace: str = "default") -> None:
        super().__init__(SQLiteStorage(path, workspace))
