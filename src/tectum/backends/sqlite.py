"""The embedded backend: one SQLite file (``.tectum/state.db``) holds state versions, the
journal of the current run and the workspace locks.

* Every apply stores a new state version (``serial`` + 1); all earlier versions stay (history).
* During an apply each finished resource is committed to the journal at once (a small insert in
  WAL mode), so a killed process loses nothing that was done; the next reader replays the
  journal onto the last version, and the next apply folds it into a new version.
* ``synchronous=NORMAL`` in WAL mode: a commit survives the process being killed; on power loss
  the database stays consistent and may lose the last commits (SQLite's documented trade-off).
* The lock is a row per workspace, taken inside ``BEGIN IMMEDIATE``; a row left by a process that
  no longer runs on this machine is recognised as stale and taken over.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

from tectum.diagnostics import Diagnostic, DiagnosticError, SourceLocation
from tectum.state.model import ResourceRecord, State, StateError

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
CREATE TABLE IF NOT EXISTS locks (
    workspace TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    operation TEXT NOT NULL,
    who TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    version TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class LockInfo:
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
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SQLiteBackend:
    """State versions, journal and lock for the workspaces of one project."""

    def __init__(self, path: str, workspace: str = "default") -> None:
        self.path = path
        self.workspace = workspace
        self._db: sqlite3.Connection | None = None

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
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(str(exc)) from None
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- lock ------------------------------------------------------------------------------
    def lock(self, operation: str) -> tuple[LockInfo, str | None]:
        """Take the workspace lock. Returns the lock and, when a stale lock was taken over, a
        warning sentence. Raises :class:`DiagnosticError` naming the holder when it is held."""
        from tectum import __version__

        info = LockInfo(str(uuid.uuid4()), operation, _author(), socket.gethostname(),
                        os.getpid(), __version__, time.time())
        warning = None
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT id, operation, who, host, pid, version, created_at FROM locks "
                    "WHERE workspace = ?", (self.workspace,)).fetchone()
                if row is not None:
                    held = LockInfo(*row)
                    if held.host == info.host and not _pid_alive(held.pid):
                        warning = (f"Took over a stale lock left by a process that no longer "
                                   f"runs ({held.describe()}).")
                    else:
                        db.execute("ROLLBACK")
                        raise DiagnosticError(Diagnostic.error(
                            "State is locked",
                            f"Workspace {self.workspace!r} is locked: {held.describe()}. Wait "
                            "for that run to finish. If it is dead, release the lock with "
                            f"`tectum force-unlock {held.id}`.",
                        ))
                db.execute(
                    "INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.workspace, info.id, info.operation, info.who, info.host, info.pid,
                     info.version, info.created_at))
                db.execute("COMMIT")
            except DiagnosticError:
                raise
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(str(exc)) from None
        return info, warning

    def unlock(self, lock_id: str) -> bool:
        cur = self.db.execute("DELETE FROM locks WHERE workspace = ? AND id = ?",
                              (self.workspace, lock_id))
        return cur.rowcount > 0

    def lock_info(self) -> LockInfo | None:
        row = self.db.execute(
            "SELECT id, operation, who, host, pid, version, created_at FROM locks "
            "WHERE workspace = ?", (self.workspace,)).fetchone()
        return LockInfo(*row) if row else None

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

    def record(self, base_serial: int, address: str, action: str,
               record: ResourceRecord | None) -> None:
        """Commit one finished resource to the journal (durable when this returns)."""
        self.db.execute(
            "INSERT INTO journal (workspace, base_serial, address, action, record, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (self.workspace, base_serial, address, action,
             json.dumps(record.to_json()) if record is not None else None, time.time()))

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
