"""The embedded backend: one SQLite file (``.tectum/state.db``) holds state versions, the
journal of the current run and the workspace locks.

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
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from tectum.diagnostics import Diagnostic, DiagnosticError, SourceLocation
from tectum.state.model import ResourceRecord, State, StateError

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS states (
    workspace TEXT NOT NULL,
    serial INTEGER NOT NULL,
    lineage TEXT NOT NULL,
    created_at REAL NOT NULL,
    author TEXT NOT NULL,
    operation TEXT NOT NULL,
    document TEXT NOT NULL,
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
"""


class LockInfo(NamedTuple):
    id: str
    operation: str
    who: str
    host: str
    pid: int
    version: str
    created_at: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created_at))
        return (f"ID {self.id}, operation {self.operation}, by {self.who} (pid {self.pid} on "
                f"{self.host}), tectum {self.version}, since {when}")


def _author() -> str:
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    return f"{user}@{os.uname().nodename}"


def _read_lock_info(fd: int) -> LockInfo | None:
    try:
        data = json.loads(os.pread(fd, 65536, 0) or b"null")
        return LockInfo(**data) if isinstance(data, dict) else None
    except (ValueError, TypeError, OSError):
        return None


class SQLiteBackend:
    """State versions, journal and lock for the workspaces of one project."""

    def __init__(self, path: str, workspace: str = "default") -> None:
        self.path = path
        self.workspace = workspace
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._lock_id: str | None = None

    # -- connection ----------------------------------------------------------------------
    def _corrupt(self, detail: str) -> DiagnosticError:
        return DiagnosticError(Diagnostic.error(
            "Unreadable state",
            f"The state database {self.path} cannot be read: {detail}. Nothing was changed. "
            "Restore the file from a backup, or move it aside to start with an empty state "
            "(tectum then reads the world again and adopts objects that already match).",
            source=SourceLocation(self.path),
        ))

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            try:
                db = sqlite3.connect(self.path, timeout=10, isolation_level=None,
                                     check_same_thread=False)
                if db.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(_SCHEMA)
                    db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(str(exc)) from None
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- lock ------------------------------------------------------------------------------
    @property
    def lock_path(self) -> str:
        return f"{self.path}.{self.workspace}.lock"

    def lock(self, operation: str) -> tuple[LockInfo, str | None]:
        """Take the workspace lock. Returns the lock and, when the previous holder died without
        releasing it, a warning sentence. Raises :class:`DiagnosticError` naming the holder when
        another process holds it."""
        from tectum import __version__

        info = LockInfo(os.urandom(16).hex(), operation, _author(), os.uname().nodename,
                        os.getpid(), __version__, time.time())
        os.makedirs(os.path.dirname(self.lock_path) or ".", exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = _read_lock_info(fd)
            os.close(fd)
            who = held.describe() if held else "details unavailable"
            raise DiagnosticError(Diagnostic.error(
                "State is locked",
                f"Workspace {self.workspace!r} is locked by another run: {who}. Wait for that "
                "run to finish; tectum releases the lock when it ends, even when it is killed.",
            )) from None
        previous = _read_lock_info(fd)
        warning = None
        if previous is not None:
            warning = ("The previous run did not finish cleanly and left its lock "
                       f"({previous.describe()}); the lock was taken over.")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info._asdict()).encode(), 0)
        self._lock_fd = fd
        self._lock_id = info.id
        return info, warning

    def unlock(self, lock_id: str) -> bool:
        fd = self._lock_fd
        if fd is None or lock_id != self._lock_id:
            return False
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        self._lock_fd = None
        return True

    def lock_info(self) -> LockInfo | None:
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            return _read_lock_info(fd)
        finally:
            os.close(fd)

    # -- state -------------------------------------------------------------------------------
    def read(self) -> State:
        """The latest state version with any unfinished run's journal replayed onto it.

        Raises :class:`DiagnosticError` when the database or the document is unreadable."""
        try:
            row = self.db.execute(
                "SELECT serial, document FROM states WHERE workspace = ? "
                "ORDER BY serial DESC LIMIT 1", (self.workspace,)).fetchone()
            if row is None:
                state = State.new()
            else:
                try:
                    state = State.from_json(json.loads(row[1]))
                except (ValueError, StateError) as exc:
                    raise self._corrupt(
                        f"state version {row[0]} is damaged ({exc}); earlier versions are "
                        "kept in the same file"
                    ) from None
            for address, action, record in self.db.execute(
                    "SELECT address, action, record FROM journal WHERE workspace = ? "
                    "AND base_serial = ? ORDER BY id", (self.workspace, state.serial)):
                self._replay(state, address, action, record)
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(str(exc)) from None
        return state

    @staticmethod
    def _replay(state: State, address: str, action: str, record: str | None) -> None:
        if action == "outputs" and record is not None:
            state.outputs = json.loads(record)
        elif record is None:
            state.resources.pop(address, None)
        else:
            state.resources[address] = ResourceRecord.from_json(json.loads(record))

    def pending(self) -> int:
        """How many journal entries an interrupted run left (0 when none)."""
        row = self.db.execute("SELECT COUNT(*) FROM journal WHERE workspace = ?",
                              (self.workspace,)).fetchone()
        return int(row[0])

    def record(self, base_serial: int,
               entries: Sequence[tuple[str, str, ResourceRecord | None]]) -> None:
        """Commit finished resources — ``(address, action, record or None)`` — to the journal
        in one transaction (durable against a killed process when this returns)."""
        now = time.time()
        db = self.db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO journal (workspace, base_serial, address, action, record, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(self.workspace, base_serial, address, action,
                  json.dumps(rec.to_json()) if rec is not None else None, now)
                 for address, action, rec in entries])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def write(self, state: State, operation: str) -> int:
        """Store ``state`` as a new version (serial + 1) and clear the journal. Returns the new
        serial."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT MAX(serial) FROM states WHERE workspace = ?",
                             (self.workspace,)).fetchone()
            latest = row[0] if row and row[0] is not None else 0
            state.serial = max(state.serial, latest) + 1
            db.execute(
                "INSERT INTO states VALUES (?, ?, ?, ?, ?, ?, ?)",
                (self.workspace, state.serial, state.lineage, time.time(), _author(), operation,
                 json.dumps(state.to_json(), separators=(",", ":"))))
            db.execute("DELETE FROM journal WHERE workspace = ?", (self.workspace,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return state.serial

    def history(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT serial, lineage, created_at, author, operation FROM states "
            "WHERE workspace = ? ORDER BY serial", (self.workspace,)).fetchall()
        return [{"serial": r[0], "lineage": r[1], "created_at": r[2], "author": r[3],
                 "operation": r[4]} for r in rows]
