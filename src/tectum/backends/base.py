"""The state backend contracts: what the engine uses (:class:`StateBackend`) and what a backend
stores (:class:`StateStorage`).

The split follows OpenTofu: a remote backend's ``remote.Client`` only gets, puts and deletes
payloads, and ``remote.State`` (``internal/states/remote/state.go``) keeps the rules over any
client; locking is ``statemgr.Locker``. Here:

* :class:`StateStorage` — storage only, one implementation per backend (embedded SQLite,
  PostgreSQL): the workspace lock, state versions as raw documents (JSON text), the journal of
  the run in progress as raw rows, workspaces. It knows no state rule; every backend runs the
  same conformance suite (``tests/backends/test_conformance.py``).
* :class:`tectum.state.manager.StateManager` — the rules, once, over any storage: document
  parsing and its diagnostics, journal replay, serials, lineage and the push rules, per-type
  state upgrades. ``SQLiteBackend`` and ``PostgresBackend`` are state managers over their
  storage, and what the engine holds as a :class:`StateBackend`.

The rules (kept by the manager, see :mod:`tectum.state.manager`):

* ``write`` stores a new version with ``serial`` = max(the state's serial, latest) + 1 (so
  serials only grow, and a pushed state keeps a higher serial it had) and clears the journal.
* ``push`` refuses another lineage, or a serial lower than the latest (Terraform's ``state push``
  rules), unless ``force``.
* ``read`` returns the latest version with the journal's results replayed onto it (a run that
  was killed loses nothing it recorded); ``pending_intents`` lists intents that have no result.
* ``lock`` is exclusive per workspace; a second locker gets :class:`DiagnosticError` naming the
  holder (after waiting up to ``timeout`` seconds, with backoff); a holder that died no longer
  holds it (kept by each storage: file locks, advisory locks).
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from tectum.diagnostics import DiagnosticError
from tectum.state.model import ResourceRecord, State


def author() -> str:
    """Who is running: ``user@host`` (the uid when it has no name), for versions and locks."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    return f"{user}@{os.uname().nodename}"


class LockInfo(NamedTuple):
    """Who holds a workspace lock: ``id`` (for force-unlock), ``operation``, ``who``
    (user@host), ``host``, ``pid``, tectum ``version``, ``created_at`` (epoch seconds)."""

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


class VersionInfo(NamedTuple):
    """One stored state version (``tectum state history``)."""

    serial: int
    lineage: str
    created_at: float
    author: str
    operation: str
    revision: str | None


class Intent(NamedTuple):
    """A mutation about to happen: ``action`` (create, update, replace, delete) on ``address``
    of ``type``, with the attributes that find the object (``identity``)."""

    address: str
    action: str
    type: str
    identity: dict[str, Any]


JournalEntry = tuple[str, str, "ResourceRecord | None"]  # address, action, record (None: gone)


class StateBackend(Protocol):
    """What the engine reads and writes state through (Terraform's ``statemgr.Full``: Reader,
    Writer, Persister, Locker), for one ``workspace``. Implemented once, over any storage, by
    :class:`tectum.state.manager.StateManager`; the rules are in this module's docstring."""

    workspace: str

    # -- lock --------------------------------------------------------------------------------
    def lock(self, operation: str, *, timeout: float = 0.0) -> tuple[LockInfo, str | None]:
        """Take the workspace lock, waiting up to ``timeout`` seconds. Returns the lock and a
        warning when a dead holder's lock was taken over."""
        ...

    def unlock(self, lock_id: str) -> bool: ...

    def lock_info(self) -> LockInfo | None: ...

    def force_unlock(self, lock_id: str) -> None:
        """Release a lock left behind; DiagnosticError when ``lock_id`` is not the holder's or
        the lock cannot be released from here."""
        ...

    # -- versions ----------------------------------------------------------------------------
    def read(self) -> State: ...

    def read_version(self, serial: int) -> tuple[State, dict[str, Any] | None]:
        """Version ``serial`` and the desired state it applied (None when not recorded);
        DiagnosticError when there is no such version."""
        ...

    def history(self) -> list[VersionInfo]: ...

    def write(self, state: State, operation: str, *, revision: str | None = None,
              desired: dict[str, Any] | None = None) -> int: ...

    def push(self, state: State, *, force: bool = False) -> int: ...

    # -- journal -----------------------------------------------------------------------------
    def intend(self, base_serial: int, intents: Sequence[Intent]) -> None: ...

    def record(self, base_serial: int, entries: Sequence[JournalEntry]) -> None: ...

    def pending_intents(self) -> list[Intent]: ...

    # -- workspaces --------------------------------------------------------------------------
    def workspaces(self) -> list[str]: ...

    def delete_workspace(self, name: str) -> None: ...

    def close(self) -> None: ...


# -- storage ------------------------------------------------------------------------------------

class StoredVersion(NamedTuple):
    """A state version as stored: its ``serial``, the state ``document`` and the ``desired``
    state it applied (None when not recorded), both JSON text as written — bytes when a damaged
    row holds them so (an SQLite BLOB); the manager parses them."""

    serial: int
    document: str | bytes
    desired: str | bytes | None = None


class NewVersion(NamedTuple):
    """A version to store (every column of a ``states`` row but the workspace): ``document``
    and ``desired`` are JSON text (``desired`` None when not recorded)."""

    serial: int
    lineage: str
    created_at: float
    author: str
    operation: str
    document: str
    revision: str | None
    desired: str | None


class JournalRow(NamedTuple):
    """One journal row: ``action`` ``"intent"`` (``record``: ``{"action", "type",
    "identity"}`` JSON), ``"outputs"`` (``record``: the outputs object) or a resource's action
    (``record``: its :class:`ResourceRecord` JSON, None when the object is gone). ``record`` is
    text as written, bytes when a damaged row holds them so."""

    address: str
    action: str
    record: str | bytes | None


class StateStorage(Protocol):
    """Where one workspace's versions, journal and lock live — storage only, no state rule
    (OpenTofu's ``remote.Client`` with ``statemgr.Locker``). Every method raises
    :class:`DiagnosticError` for a store it cannot reach or read (never a driver's exception);
    the lock methods keep the semantics of :class:`StateBackend`'s."""

    workspace: str

    def lock(self, operation: str, *, timeout: float = 0.0) -> tuple[LockInfo, str | None]: ...

    def unlock(self, lock_id: str) -> bool: ...

    def lock_info(self) -> LockInfo | None: ...

    def force_unlock(self, lock_id: str) -> None: ...

    def damaged(self, detail: str) -> DiagnosticError:
        """The "Unreadable state" error for damage the manager found (``detail``: what is
        damaged, a sentence without a final stop), naming where this store keeps the state."""
        ...

    def get_latest(self) -> tuple[StoredVersion | None, list[JournalRow]]:
        """The latest version (None: the workspace has none; ``desired`` left out) and every
        journal row on it (``base_serial`` = its serial, 0 when none), oldest first — read in
        one snapshot."""
        ...

    def get_journal(self) -> list[JournalRow]:
        """The journal rows on the latest version, oldest first (one snapshot)."""
        ...

    def get_version(self, serial: int) -> StoredVersion | None:
        """Version ``serial`` with its desired state; None when there is none."""
        ...

    def history(self) -> list[VersionInfo]:
        """Every version's metadata, oldest first."""
        ...

    def put_version(self, make: Callable[[StoredVersion | None], NewVersion]) -> NewVersion:
        """Store a new version and clear the workspace's journal, in one transaction that
        holds off every other writer of the workspace: ``make`` gets the latest version then
        (``desired`` left out; None when there is none) and returns the version to store, or
        raises to store nothing (the exception propagates; nothing is changed). Returns what
        was stored."""
        ...

    def append_journal(self, base_serial: int, rows: Sequence[JournalRow]) -> None:
        """Commit ``rows`` (on version ``base_serial``) in one transaction; durable when this
        returns."""
        ...

    def workspaces(self) -> list[str]:
        """Names of the workspaces with at least one version (any order)."""
        ...

    def delete_workspace(self, name: str) -> None:
        """Remove the versions and journal of workspace ``name`` (its lock is left alone)."""
        ...

    def close(self) -> None:
        """Release a lock still held by this object, and let go of the store."""
        ...
