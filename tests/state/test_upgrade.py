"""State upgrades, both kinds (Terraform/OpenTofu's):

* the document format: ``data/state_format1.json`` is a state document exactly as tectum 0.1.0
  stored it (format 1: ``tectum apply`` of a directory, a file in it and a symlink to it, with an
  output; the text of its ``states.document`` column). Read through the state manager it becomes
  format 2 with every record and output as it was, and the next write stores format 2.
* a resource type's record shape: a type that raises its ``schema_version`` has older records
  passed through its ``upgrade_state`` when state is read (a throwaway type registered for the
  test renames an attribute); records of unknown types, and those already current, are left as
  they are.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tectum.backends.sqlite import SQLiteBackend
from tectum.diagnostics import DiagnosticError
from tectum.providers.base import ResourceType
from tectum.providers.registry import registry
from tectum.state.model import FORMAT_VERSION, UPGRADES, ResourceRecord, State, StateError

FORMAT_1 = Path(__file__).parent / "data" / "state_format1.json"


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[SQLiteBackend]:
    b = SQLiteBackend(str(tmp_path / ".tectum" / "state.db"))
    b.types = lambda name: registry.get(name)  # (as a session does; late: tests patch it)
    try:
        yield b
    finally:
        b.close()


def stored_documents(backend: SQLiteBackend) -> dict[int, Any]:
    with closing(sqlite3.connect(backend.storage.path)) as db:
        return {serial: json.loads(doc) for serial, doc in
                db.execute("SELECT serial, document FROM states ORDER BY serial")}


# -- the document format ------------------------------------------------------------------------

def test_format_1_upgrade_only_changes_the_version() -> None:
    old = json.loads(FORMAT_1.read_text())
    assert old["format_version"] == 1 and FORMAT_VERSION == 2
    new = UPGRADES[1](old)
    assert new == {**old, "format_version": 2}
    assert old["format_version"] == 1, "the document given is left as it was"


def test_a_format_1_state_of_the_previous_release_is_read(backend: SQLiteBackend) -> None:
    text = FORMAT_1.read_text().strip()
    old = json.loads(text)
    backend.history()  # (makes the database)
    with closing(sqlite3.connect(backend.storage.path)) as db, db:
        db.execute("INSERT INTO states (workspace, serial, lineage, created_at, author, "
                   "operation, document) VALUES ('default', 1, ?, 0, 'root@old', 'apply', ?)",
                   (old["lineage"], text))
    state = backend.read()
    assert (state.serial, state.lineage, state.tectum_version) == (1, old["lineage"], "0.1.0")
    assert sorted(state.resources) == ["directory.www", "file.index", "symlink.current"]
    for entry in old["resources"]:
        rec = state.resources[entry["address"]]
        assert rec.to_json() == entry, "every record is kept as it was"
        assert rec.schema_version == 0
    assert state.resources["file.index"].dependencies == ["directory.www"]
    assert state.outputs == old["outputs"]
    assert backend.read_version(1)[0].resources == state.resources

    assert backend.write(state, "apply") == 2
    stored = stored_documents(backend)
    assert stored[1] == old, "the old version itself is not rewritten"
    assert stored[2]["format_version"] == 2
    assert stored[2]["resources"] == old["resources"]
    assert backend.read().resources == state.resources


def test_schema_version_is_stored_only_when_set() -> None:
    rec = ResourceRecord("test_thing.a", "test_thing", {"x": 1}, [])
    assert "schema_version" not in rec.to_json()
    assert ResourceRecord.from_json(rec.to_json()).schema_version == 0
    rec3 = rec._replace(schema_version=3)
    assert rec3.to_json()["schema_version"] == 3
    assert ResourceRecord.from_json(rec3.to_json()) == rec3


@pytest.mark.parametrize("value", [-1, True, "1", 1.5, None, [1]])
def test_a_bad_schema_version_is_refused(value: Any) -> None:
    entry = {"address": "test_thing.a", "type": "test_thing", "attributes": {},
             "schema_version": value}
    with pytest.raises(StateError, match="schema_version must be a non-negative integer"):
        ResourceRecord.from_json(entry)


# -- per-type upgrades ------------------------------------------------------------------------

class Renamed(ResourceType[Any]):
    """Schema 1 renamed attribute ``text`` to ``content``; records upgraded are counted."""

    name = "test_renamed"
    schema_version = 1

    def __init__(self) -> None:
        self.upgraded: list[tuple[int, dict[str, Any]]] = []

    def read(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def apply(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def upgrade_state(self, version: int, attrs: dict[str, Any]) -> dict[str, Any]:
        self.upgraded.append((version, dict(attrs)))
        if version < 1:
            attrs = {("content" if k == "text" else k): v for k, v in attrs.items()}
        return attrs


@pytest.fixture
def renamed(monkeypatch: pytest.MonkeyPatch) -> Renamed:
    """A ``Renamed`` registered as type ``test_renamed`` for the test."""
    rt = Renamed()
    original = registry.get
    monkeypatch.setattr(registry, "get",
                        lambda name: rt if name == "test_renamed" else original(name))
    return rt


OLD = ResourceRecord("test_renamed.a", "test_renamed", {"path": "/a", "text": "hi"}, [])
CURRENT = ResourceRecord("test_renamed.b", "test_renamed", {"path": "/b", "content": "yo"}, [],
                         schema_version=1)
UNKNOWN = ResourceRecord("nosuch_thing.c", "nosuch_thing", {"text": "kept"}, [])


def test_older_records_are_upgraded_when_read(backend: SQLiteBackend,
                                              renamed: Renamed) -> None:
    state = State.new()
    state.resources = {r.address: r for r in (OLD, CURRENT, UNKNOWN)}
    backend.write(state, "apply")
    before = stored_documents(backend)

    got = backend.read()
    assert got.resources == {
        "test_renamed.a": OLD._replace(attributes={"path": "/a", "content": "hi"},
                                       schema_version=1),
        "test_renamed.b": CURRENT,
        "nosuch_thing.c": UNKNOWN,
    }
    assert renamed.upgraded == [(0, {"path": "/a", "text": "hi"})], \
        "only the older record is passed to upgrade_state"
    assert backend.read_version(1)[0].resources == got.resources
    assert stored_documents(backend) == before, "reading stores nothing"

    renamed.upgraded.clear()
    backend.write(got, "apply")
    stored = {e["address"]: e for e in stored_documents(backend)[2]["resources"]}
    assert stored["test_renamed.a"]["schema_version"] == 1
    assert stored["test_renamed.a"]["attributes"] == {"path": "/a", "content": "hi"}
    assert "schema_version" not in stored["nosuch_thing.c"]
    assert backend.read().resources == got.resources
    assert renamed.upgraded == [], "a record upgraded and written is not upgraded again"


def test_journal_records_are_upgraded_too(backend: SQLiteBackend, renamed: Renamed) -> None:
    serial = backend.write(State.new(), "apply")
    backend.record(serial, [(OLD.address, "create", OLD)])
    assert backend.read().resources == {
        OLD.address: OLD._replace(attributes={"path": "/a", "content": "hi"},
                                  schema_version=1)}


@pytest.mark.parametrize("result", ["raise", "not a dict"])
def test_a_failing_upgrade_is_a_diagnostic(backend: SQLiteBackend, renamed: Renamed,
                                           monkeypatch: pytest.MonkeyPatch,
                                           result: str) -> None:
    def broken(version: int, attrs: dict[str, Any]) -> Any:
        if result == "raise":
            raise KeyError("text")
        return ["text"]

    state = State.new()
    state.resources = {OLD.address: OLD}
    backend.write(state, "apply")
    monkeypatch.setattr(renamed, "upgrade_state", broken)
    for call in (backend.read, lambda: backend.read_version(1)[0]):
        with pytest.raises(DiagnosticError) as exc:
            call()
        (diag,) = exc.value.diagnostics
        assert diag.summary == "Resource state cannot be upgraded"
        assert "test_renamed.a" in diag.detail and "schema version 0" in diag.detail
        assert "to version 1 failed" in diag.detail
        assert ("KeyError: 'text'" if result == "raise" else "not a dict") in diag.detail
