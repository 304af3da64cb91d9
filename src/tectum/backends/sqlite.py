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
from typing import Any

from tectum.backends.base import Intent, JournalEntry, LockInfo, VersionInfo
from tectum.diagnostics import Diagnostic, DiagnosticError, SourceLocation
from tectum.process import pid_alive
from tectum.state.model import ResourceRecord, State, StateError

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


def _author() -> str:
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    return f"{user}@{os.uname().nodename}"


def _holder_details(fd: int) -> LockInfo | None:
    """The details of the process holding the lock. The winner of a race writes them just after
    it takes the lock, so wait briefly while the file is empty or still names a dead holder."""
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
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version != _SCHEMA_VERSION:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(_SCHEMA)
                    if version == 1:  # 1 → 2: revision and desired state per version
                        db.execute("ALTER TABLE states ADD COLUMN revision TEXT")
                        db.execute("ALTER TABLE states ADD COLUMN desired TEXT")
                    db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(str(exc)) from None
            self._db = db
        return self._db

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

    def lock(self, operation: str, *, timeout: float = 0.0) -> tuple[LockInfo, str | None]:
        """Take the workspace lock, waiting up to ``timeout`` seconds (backoff from 50 ms to
        1 s). Returns the lock and, when the previous holder died without releasing it, a
        warning sentence. Raises :class:`DiagnosticError` naming the holder when another process
        still holds it."""
        from tectum import __version__

        info = LockInfo(os.urandom(16).hex(), operation, _author(), os.uname().nodename,
                        os.getpid(), __version__, time.time())
        os.makedirs(os.path.dirname(self.lock_path) or ".", exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    time.sleep(min(delay, remaining))
                    delay = min(delay * 2, 1.0)
                    continue
                held = _holder_details(fd)
                os.close(fd)
                who = held.describe() if held else "details unavailable"
                waited = f" (waited {timeout:g} s)" if timeout else ""
                raise DiagnosticError(Diagnostic.error(
                    "State is locked",
                    f"Workspace {self.workspace!r} is locked by another run{waited}: {who}. "
                    "Wait for that run to finish (or pass --lock-timeout to wait); tectum "
                    "releases the lock when a run ends, even when it is killed.",
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

    def force_unlock(self, lock_id: str) -> None:
        """Release a lock left behind. With ``flock`` the kernel already releases the lock of a
        dead process, so this only clears the holder's details; a lock whose holder still runs
        cannot be taken from it (stop that run instead)."""
        held = None
        if os.path.exists(self.lock_path):
            with open(self.lock_path, "rb") as fh:
                held = _read_lock_info(fh.fileno())
        if held is None:
            raise DiagnosticError(Diagnostic.error(
                "Not locked", f"Workspace {self.workspace!r} is not locked; nothing to do."))
        if held.id != lock_id:
            raise DiagnosticError(Diagnostic.error(
                "Lock ID mismatch",
                f"The lock on workspace {self.workspace!r} has ID {held.id}, not {lock_id}. "
                "Check the ID in the error that named the holder."))
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DiagnosticError(Diagnostic.error(
                    "Lock is in use",
                    f"The lock {lock_id} is held by a run that is still going: "
                    f"{held.describe()}. Stop that process (it releases the lock as it ends) "
                    "rather than unlocking under it.")) from None
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

    # -- state -------------------------------------------------------------------------------
    def read(self) -> State:
        """The latest state version with any unfinished run's journal replayed onto it.

        Raises :class:`DiagnosticError` when the database or the document is unreadable."""
        db = self.db
        try:
            db.execute("BEGIN")  # one snapshot for the version and its journal
            row = db.execute(
                "SELECT serial, document FROM states WHERE workspace = ? "
                "ORDER BY serial DESC LIMIT 1", (self.workspace,)).fetchone()
            if row is None:
                state = State.new()
            else:
                try:
                    state = State.from_json(json.loads(row[1]))
                except (ValueError, RecursionError, StateError) as exc:
                    raise self._corrupt(
                        f"state version {row[0]} is damaged ({exc}). Earlier versions are kept "
                        "in the same file: `tectum state history` lists them, and "
                        "`tectum state show --version N --json > s.json` then "
                        "`tectum state push --force s.json` restores one"
                    ) from None
            for address, action, record in db.execute(
                    "SELECT address, action, record FROM journal WHERE workspace = ? "
                    "AND base_serial = ? AND action != 'intent' ORDER BY id",
                    (self.workspace, state.serial)):
                try:
                    self._replay(state, address, action, record)
                except (ValueError, KeyError, TypeError, RecursionError, StateError) as exc:
                    raise self._corrupt(
                        f"the journal entry for {address} is damaged ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(str(exc)) from None
        finally:
            if db.in_transaction:
                db.execute("COMMIT")
        return state

    @staticmethod
    def _replay(state: State, address: str, action: str, record: str | None) -> None:
        if action == "outputs" and record is not None:
            outputs = json.loads(record)
            if not isinstance(outputs, dict) or not all(isinstance(v, dict)
                                                        for v in outputs.values()):
                raise StateError("outputs must be an object of objects")
            state.outputs = outputs
        elif record is None:
            state.resources.pop(address, None)
        else:
            rec = ResourceRecord.from_json(json.loads(record))
            if rec.address != address:
                raise StateError(f"the record is for {rec.address}")
            state.resources[address] = rec

    def _latest_serial(self) -> int:
        row = self.db.execute("SELECT MAX(serial) FROM states WHERE workspace = ?",
                              (self.workspace,)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def intend(self, base_serial: int, intents: Sequence[Intent]) -> None:
        """Commit what is about to be done (one transaction for all of them)."""
        now = time.time()
        self._insert([(self.workspace, base_serial, i.address, "intent",
                       json.dumps({"action": i.action, "type": i.type,
                                   "identity": i.identity}), now) for i in intents])

    def pending_intents(self) -> list[Intent]:
        """Intents of an interrupted run that have no recorded result."""
        try:
            rows = self.db.execute(
                "SELECT id, address, action, record FROM journal WHERE workspace = ? "
                "AND base_serial = ? ORDER BY id",
                (self.workspace, self._latest_serial())).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(str(exc)) from None
        open_intents: dict[str, Intent] = {}
        for _, address, action, record in rows:
            if action == "intent":
                try:
                    data = json.loads(record)
                    intent = Intent(address, str(data["action"]), str(data["type"]),
                                    dict(data["identity"]))
                except (ValueError, KeyError, TypeError, RecursionError) as exc:
                    raise self._corrupt(
                        f"the journal intent for {address} is damaged ({exc})") from None
                open_intents[address] = intent
            else:
                open_intents.pop(address, None)
        return list(open_intents.values())

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        db = self.db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO journal (workspace, base_serial, address, action, record, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def record(self, base_serial: int, entries: Sequence[JournalEntry]) -> None:
        """Commit finished resources — ``(address, action, record or None)`` — to the journal
        in one transaction (durable against a killed process when this returns)."""
        now = time.time()
        self._insert([(self.workspace, base_serial, address, action,
                       json.dumps(rec.to_json()) if rec is not None else None, now)
                      for address, action, rec in entries])

    def write(self, state: State, operation: str, *, revision: str | None = None,
              desired: dict[str, Any] | None = None) -> int:
        """Store ``state`` as a new version (serial = max(its serial, latest) + 1) with the
        configuration ``revision`` and the ``desired`` state it applied, and clear the journal.
        Returns the new serial."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            self._insert_version(state, operation, revision, desired)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return state.serial

    def _insert_version(self, state: State, operation: str, revision: str | None,
                        desired: dict[str, Any] | None) -> None:
        db = self.db
        state.serial = max(state.serial, self._latest_serial()) + 1
        db.execute(
            "INSERT INTO states VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (self.workspace, state.serial, state.lineage, time.time(), _author(), operation,
             json.dumps(state.to_json(), separators=(",", ":")), revision,
             json.dumps(desired, separators=(",", ":")) if desired is not None else None))
        db.execute("DELETE FROM journal WHERE workspace = ?", (self.workspace,))

    def push(self, state: State, *, force: bool = False) -> int:
        """Store a state made elsewhere (``tectum state push``): refused for another lineage or
        a lower serial than the latest, unless ``force``. Check and write are one transaction.
        Returns the new serial."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT serial, document FROM states WHERE workspace = ? "
                "ORDER BY serial DESC LIMIT 1", (self.workspace,)).fetchone()
            if row is not None and not force:
                latest = int(row[0])
                try:
                    lineage = State.from_json(json.loads(row[1])).lineage
                except (ValueError, RecursionError, StateError) as exc:
                    raise self._corrupt(f"state version {latest} is damaged ({exc})") from None
                if state.lineage != lineage:
                    raise DiagnosticError(Diagnostic.error(
                        "State lineage differs",
                        f"The pushed state has lineage {state.lineage}; workspace "
                        f"{self.workspace!r} has {lineage}. They are different histories; "
                        "pass --force to replace it anyway."))
                if state.serial < latest:
                    raise DiagnosticError(Diagnostic.error(
                        "State serial is older",
                        f"The pushed state has serial {state.serial}, lower than the stored "
                        f"{latest}: it would undo later applies. Pull, or pass --force."))
            self._insert_version(state, "push", None, None)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return state.serial

    def read_version(self, serial: int) -> tuple[State, dict[str, Any] | None]:
        try:
            row = self.db.execute(
                "SELECT document, desired FROM states WHERE workspace = ? AND serial = ?",
                (self.workspace, serial)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(str(exc)) from None
        if row is None:
            raise DiagnosticError(Diagnostic.error(
                "No such state version",
                f"Workspace {self.workspace!r} has no state version {serial}. "
                "`tectum state history` lists the versions there are."))
        try:
            state = State.from_json(json.loads(row[0]))
            desired = json.loads(row[1]) if row[1] else None
        except (ValueError, RecursionError, StateError) as exc:
            raise self._corrupt(f"state version {serial} is damaged ({exc})") from None
        return state, desired

    def history(self) -> list[VersionInfo]:
        rows = self.db.execute(
            "SELECT serial, lineage, created_at, author, operation, revision FROM states "
            "WHERE workspace = ? ORDER BY serial", (self.workspace,)).fetchall()
        return [VersionInfo(*r) for r in rows]

    def workspaces(self) -> list[str]:
        rows = self.db.execute("SELECT DISTINCT workspace FROM states").fetchall()
        return sorted({"default", *(r[0] for r in rows)})

    def delete_workspace(self, name: str) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM states WHERE workspace = ?", (name,))
            db.execute("DELETE FROM journal WHERE workspace = ?", (name,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
