"""The state rules, kept once over any storage (OpenTofu's ``remote.State`` over a
``remote.Client``, ``internal/states/remote/state.go``).

A :class:`StateManager` is the :class:`~tectum.backends.base.StateBackend` the engine uses; what
it stores goes through a :class:`~tectum.backends.base.StateStorage` (an SQLite file, a
PostgreSQL database), which knows no rule. The manager:

* parses stored documents, and reports a damaged one as "Unreadable state" naming the version
  and how to restore an earlier one (the storage says where the state lives);
* replays the journal of an interrupted run onto the latest version (``read``): a resource's row
  must hold a record for its own address, an ``outputs`` row an object of objects; anything else
  is "Unreadable state" naming the row's address;
* keeps serials and lineage: ``write`` stores serial = max(the state's serial, latest) + 1 and
  clears the journal; ``push`` refuses another lineage or a serial lower than the latest
  (Terraform's ``state push`` rules) unless ``force`` — the check runs inside the storage's write
  transaction, so no other writer comes in between;
* upgrades each record whose resource type's ``schema_version`` is higher than the record's
  through the type's ``upgrade_state`` (OpenTofu's ``UpgradeResourceState``), in ``read`` and
  ``read_version``; records of types no installed provider offers are left as they are.

Errors (:class:`~tectum.diagnostics.DiagnosticError`): "Unreadable state" (a damaged version,
journal row or desired state; framed by the storage, which says where the state lives), "No such
state version", "State lineage differs", "State serial is older", "Resource state cannot be
upgraded"; and the storage's own (locks, connections).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from tectum.backends.base import (
    Intent,
    JournalEntry,
    JournalRow,
    LockInfo,
    NewVersion,
    StateStorage,
    StoredVersion,
    VersionInfo,
    author,
)
from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.state.model import ResourceRecord, State, StateError

#: what a damaged JSON value raises while it is decoded and checked
_DAMAGE = (ValueError, TypeError, KeyError, RecursionError)


#: compact JSON; one encoder for every record (``json.dumps`` with arguments makes a new one
#: per call, which shows in a run that journals thousands of records)
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _dumps(data: Any) -> str:
    return _ENCODER.encode(data)


def _parse_intent(address: str, record: str | bytes | None) -> Intent:
    """An intent row's record: ``{"action": str, "type": str, "identity": object}``; raises
    ValueError (or TypeError, KeyError, RecursionError) for anything else."""
    if record is None:
        raise ValueError("the intent is empty")
    data = json.loads(record)
    if not isinstance(data, dict):
        raise ValueError("the intent is not an object")
    action, rtype, identity = data["action"], data["type"], data["identity"]
    if not isinstance(action, str) or not isinstance(rtype, str) \
            or not isinstance(identity, dict):
        raise ValueError("action and type must be strings, identity an object")
    return Intent(address, action, rtype, identity)


def _replay_row(state: State, row: JournalRow) -> None:
    """Apply one result row to ``state``; raises StateError (or ValueError, TypeError, KeyError,
    RecursionError) for a row that does not hold what its action says."""
    if row.action == "outputs" and row.record is not None:
        outputs = json.loads(row.record)
        if not isinstance(outputs, dict) or not all(isinstance(v, dict)
                                                    for v in outputs.values()):
            raise StateError("outputs must be an object of objects")
        state.outputs = outputs
    elif row.record is None:
        state.resources.pop(row.address, None)
    else:
        rec = ResourceRecord.from_json(json.loads(row.record))
        if rec.address != row.address:
            raise StateError(f"the record is for {rec.address}")
        state.resources[row.address] = rec


class StateManager:
    """The :class:`~tectum.backends.base.StateBackend` of one workspace, over ``storage``."""

    def __init__(self, storage: StateStorage) -> None:
        self.storage = storage
        self.workspace = storage.workspace
        #: resource types by name, for per-type record upgrades (the session gives the
        #: provider registry's lookup; None: records are read as stored). A type it does not
        #: know, or whose provider fails to load, leaves its records as they are (the plan
        #: reports the provider where it is used; reading state goes on without it)
        self.types: Callable[[str], Any] | None = None
        #: applied to a state read, after the journal replay and before per-type upgrades
        #: (:class:`~tectum.secrets.sealing.SealingBackend` unseals here, so ``upgrade_state``
        #: sees plain values)
        self.unseal: Callable[[State], State] | None = None

    # -- lock (the storage's) ----------------------------------------------------------------
    def lock(self, operation: str, *, timeout: float = 0.0) -> tuple[LockInfo, str | None]:
        """Take the workspace lock, waiting up to ``timeout`` seconds; the lock and a warning
        when a dead holder's lock was taken over. DiagnosticError "State is locked" naming the
        holder."""
        return self.storage.lock(operation, timeout=timeout)

    def unlock(self, lock_id: str) -> bool:
        """Release the lock this object holds; False when ``lock_id`` is not it."""
        return self.storage.unlock(lock_id)

    def lock_info(self) -> LockInfo | None:
        """The holder of the workspace lock, or None."""
        return self.storage.lock_info()

    def force_unlock(self, lock_id: str) -> None:
        """Release a lock left behind; DiagnosticError "Not locked", "Lock ID mismatch" or "Lock
        is in use"."""
        self.storage.force_unlock(lock_id)

    # -- versions ------------------------------------------------------------------------------
    def _parse(self, version: StoredVersion) -> State:
        try:
            return State.from_json(json.loads(version.document))
        except _DAMAGE as exc:
            raise self.storage.damaged(
                f"state version {version.serial} is damaged ({exc}). Earlier versions are kept "
                "with it: `tectum state history` lists them, and `tectum state show --version N "
                "--json > s.json` then `tectum state push --force s.json` restores one") from None

    def read(self) -> State:
        """The latest version (a new, empty state when there is none) with the journal's
        results on it replayed, and its records upgraded to their types' schema versions.
        DiagnosticError "Unreadable state" when the version or a journal row is damaged,
        "Resource state cannot be upgraded" when a type's ``upgrade_state`` fails."""
        latest, rows = self.storage.get_latest()
        state = State.new() if latest is None else self._parse(latest)
        for row in rows:
            if row.action == "intent":
                continue
            try:
                _replay_row(state, row)
            except _DAMAGE as exc:
                raise self.storage.damaged(
                    f"the journal entry for {row.address} is damaged ({exc}). Delete that row "
                    "of the journal table: its result is then lost, and the next plan reads the "
                    "object from the world again") from None
        if self.unseal is not None:
            state = self.unseal(state)
        self._upgrade_records(state)
        return state

    def read_version(self, serial: int) -> tuple[State, dict[str, Any] | None]:
        """Version ``serial`` (its records upgraded, as by :meth:`read`) and the desired state
        it applied (None when not recorded). DiagnosticError "No such state version", or
        "Unreadable state" when either is damaged."""
        version = self.storage.get_version(serial)
        if version is None:
            raise DiagnosticError(Diagnostic.error(
                "No such state version",
                f"Workspace {self.workspace!r} has no state version {serial}. "
                "`tectum state history` lists the versions there are."))
        state = self._parse(version)
        desired: dict[str, Any] | None = None
        if version.desired:
            try:
                desired = json.loads(version.desired)
                if not isinstance(desired, dict):
                    raise ValueError("it is not an object")
            except _DAMAGE as exc:
                raise self.storage.damaged(
                    f"the desired state of version {serial} is damaged ({exc})") from None
        if self.unseal is not None:
            state = self.unseal(state)
        self._upgrade_records(state)
        return state, desired

    def history(self) -> list[VersionInfo]:
        """Every version's metadata, oldest first."""
        return self.storage.history()

    def write(self, state: State, operation: str, *, revision: str | None = None,
              desired: dict[str, Any] | None = None) -> int:
        """Store ``state`` as a new version (serial = max(its serial, latest) + 1) with the
        configuration ``revision`` and the ``desired`` state it applied, and clear the journal.
        Sets ``state.serial`` and returns it."""
        return self._store(state, operation, revision, desired, check=None)

    def push(self, state: State, *, force: bool = False) -> int:
        """Store a state made elsewhere (``tectum state push``; Terraform's rules): refused
        with DiagnosticError "State lineage differs" for another lineage and "State serial is
        older" for a serial lower than the latest, unless ``force``; "Unreadable state" when
        the latest version cannot be read to check. Check and write are one transaction. Sets
        ``state.serial`` and returns it."""
        return self._store(state, "push", None, None, check=None if force else self._may_push)

    def _may_push(self, state: State, latest: StoredVersion) -> None:
        current = self._parse(latest)
        if state.lineage != current.lineage:
            raise DiagnosticError(Diagnostic.error(
                "State lineage differs",
                f"The pushed state has lineage {state.lineage}; workspace {self.workspace!r} "
                f"has {current.lineage}. They are different histories; pass --force to replace "
                "it anyway."))
        if state.serial < latest.serial:
            raise DiagnosticError(Diagnostic.error(
                "State serial is older",
                f"The pushed state has serial {state.serial}, lower than the stored "
                f"{latest.serial}: it would undo later applies. Pull, or pass --force."))

    def _store(self, state: State, operation: str, revision: str | None,
               desired: dict[str, Any] | None, *,
               check: Callable[[State, StoredVersion], None] | None) -> int:
        document = state.to_json()
        desired_text = _dumps(desired) if desired is not None else None

        def make(latest: StoredVersion | None) -> NewVersion:
            if latest is not None and check is not None:
                check(state, latest)
            serial = max(state.serial, latest.serial if latest is not None else 0) + 1
            return NewVersion(serial, state.lineage, time.time(), author(), operation,
                              _dumps({**document, "serial": serial}), revision, desired_text)

        state.serial = self.storage.put_version(make).serial
        return state.serial

    # -- journal -------------------------------------------------------------------------------
    def intend(self, base_serial: int, intents: Sequence[Intent]) -> None:
        """Commit what is about to be done on version ``base_serial`` (one transaction)."""
        self.storage.append_journal(base_serial, [
            JournalRow(i.address, "intent",
                       _dumps({"action": i.action, "type": i.type, "identity": i.identity}))
            for i in intents])

    def record(self, base_serial: int, entries: Sequence[JournalEntry]) -> None:
        """Commit finished resources — ``(address, action, record or None)`` — to the journal
        in one transaction (durable against a killed process when this returns)."""
        self.storage.append_journal(base_serial, [
            JournalRow(address, action, _dumps(rec.to_json()) if rec is not None else None)
            for address, action, rec in entries])

    def pending_intents(self) -> list[Intent]:
        """Intents on the latest version that have no result (an interrupted run's), in the
        order they were made. DiagnosticError "Unreadable state" for a damaged intent."""
        pending: dict[str, Intent] = {}
        for row in self.storage.get_journal():
            if row.action != "intent":
                pending.pop(row.address, None)
                continue
            try:
                intent = _parse_intent(row.address, row.record)
            except _DAMAGE as exc:
                raise self.storage.damaged(
                    f"the journal intent for {row.address} is damaged ({exc}). Delete that row "
                    "of the journal table, then check that object by hand") from None
            earlier = pending.get(row.address)
            if earlier is not None and earlier.action in ("create", "replace") \
                    and intent.action == "update":
                # a later killed run updating what an interrupted create made: the object is
                # still one tectum created (destroy deletes it), not one it found
                intent = intent._replace(action=earlier.action)
            pending[row.address] = intent
        return list(pending.values())

    # -- per-type upgrades -----------------------------------------------------------------
    def _resource_type(self, name: str) -> Any:
        if self.types is None:
            return None
        try:
            return self.types(name)
        except Exception:  # noqa: BLE001 - see ``types``
            return None

    def _upgrade_records(self, state: State) -> None:
        types: dict[str, Any] = {}
        for address, rec in list(state.resources.items()):
            if rec.type not in types:
                types[rec.type] = self._resource_type(rec.type)
            rt = types[rec.type]
            current = getattr(rt, "schema_version", 0) if rt is not None else 0
            if isinstance(current, int) and rec.schema_version < current:
                state.resources[address] = self._upgrade(rt, rec, current)

    @staticmethod
    def _upgrade(rt: Any, rec: ResourceRecord, current: int) -> ResourceRecord:
        """``rec`` in schema ``current`` of its type; DiagnosticError "Resource state cannot
        be upgraded" when the type's ``upgrade_state`` fails (a provider's bug)."""
        upgrade = getattr(rt, "upgrade_state", None)
        attrs: Any = dict(rec.attributes)
        try:
            if upgrade is not None:
                attrs = upgrade(rec.schema_version, attrs)
            if not isinstance(attrs, dict):
                raise TypeError(f"upgrade_state returned {type(attrs).__name__}, not a dict")
        except Exception as exc:  # noqa: BLE001 - a provider's bug is reported, not raised
            raise DiagnosticError(Diagnostic.error(
                "Resource state cannot be upgraded",
                f"The state of {rec.address} was written by schema version "
                f"{rec.schema_version} of resource type {rec.type}; upgrading it to version "
                f"{current} failed: {type(exc).__name__}: {exc}. Nothing was changed. This is "
                f"a bug in the provider of {rec.type}: report it, or use the provider version "
                "that wrote the state.")) from None
        return rec._replace(attributes=attrs, schema_version=current)

    # -- workspaces ------------------------------------------------------------------------------
    def workspaces(self) -> list[str]:
        """Workspaces with at least one version, and ``default``, sorted."""
        return sorted({"default", *self.storage.workspaces()})

    def delete_workspace(self, name: str) -> None:
        """Remove the versions and journal of workspace ``name`` (its lock is left alone)."""
        self.storage.delete_workspace(name)

    def close(self) -> None:
        """Release a lock still held and let go of the storage."""
        self.storage.close()
