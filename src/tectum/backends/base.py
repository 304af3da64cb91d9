"""The state backend contract, shared by every backend (embedded SQLite, PostgreSQL).

Small roles combined into one protocol, after Terraform's ``statemgr`` (Reader, Writer,
Persister, Locker): versions of the state document (every write is a new version, kept as
history), the journal of the run in progress (intents before mutations, results after them), and
the workspace lock. Every backend runs the same conformance suite
(``tests/backends/test_conformance.py``).

Rules every backend keeps:

* ``write`` stores a new version with ``serial`` = max(the state's serial, latest) + 1 (so
  serials only grow, and a pushed state keeps a higher serial it had) and clears the journal.
* ``push`` refuses another lineage, or a serial lower than the latest (Terraform's ``state push``
  rules), unless ``force``.
* ``read`` returns the latest version with the journal's results replayed onto it (a run that
  was killed loses nothing it recorded); ``pending_intents`` lists intents that have no result.
* ``lock`` is exclusive per workspace; a second locker gets :class:`DiagnosticError` naming the
  holder (after waiting up to ``timeout`` seconds, with backoff); a holder that died no longer
  holds it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from tectum.state.model import ResourceRecord, State


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
