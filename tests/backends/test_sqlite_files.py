"""The embedded backend's own file: what ``SQLiteBackend`` does with what it finds at its path.

* No file: a new, complete database is made (also when several processes start at once: each
  one uses the same database, none sees it half made).
* A file that is not a tectum state database — empty (0 bytes), an SQLite database without
  tectum's tables or with a ``states`` table that is not tectum's, not SQLite at all — or one a
  newer tectum wrote is refused with a diagnostic naming the file, what it is and what to do, by
  every operation, and left exactly as it was (issue 10 item 8: a zero-byte file used to be taken
  for a new project, which started a new lineage and lost the history without a word).
* A database of an older schema (0: before schema versions, 1: without revision and desired
  state per version) is upgraded in place and keeps its versions.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tectum.backends.base import Intent
from tectum.backends.sqlite import SQLiteBackend
from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.state.model import ResourceRecord, State


def _sqlite(path: Path, *statements: str) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        for statement in statements:
            db.execute(statement)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _foreign(path: Path) -> None:
    _sqlite(path, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)",
            "INSERT INTO users (name) VALUES ('ada')", "CREATE TABLE orders (id INTEGER)")


def _no_tables(path: Path) -> None:
    _sqlite(path, "CREATE TABLE t (x)", "DROP TABLE t")


def _other_states(path: Path) -> None:
    _sqlite(path, "CREATE TABLE states (name TEXT, capital TEXT)",
            "INSERT INTO states VALUES ('Ohio', 'Columbus')")


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"this is a text file, not a database\n" * 50)


FOREIGN: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "empty": (_empty, "Not a tectum state database", "is an empty file (0 bytes)"),
    "foreign sqlite": (_foreign, "Not a tectum state database",
                       "is an SQLite database without tectum's tables (it has orders, users)"),
    "sqlite without tables": (_no_tables, "Not a tectum state database",
                              "is an SQLite database without tectum's tables (it has no "
                              "tables)"),
    "another states table": (_other_states, "Not a tectum state database",
                             "is an SQLite database whose states table is not tectum's (it "
                             "lacks author, created_at, document, lineage, operation, serial, "
                             "workspace)"),
    "not sqlite": (_not_sqlite, "Unreadable state", "file is not a database"),
}

#: every operation that opens the database
OPERATIONS: dict[str, Callable[[SQLiteBackend], Any]] = {
    "read": lambda b: b.read(),
    "read_version": lambda b: b.read_version(1),
    "history": lambda b: b.history(),
    "write": lambda b: b.write(State.new(), "apply"),
    "push": lambda b: b.push(State.new()),
    "intend": lambda b: b.intend(0, [Intent("file.a", "create", "file", {"path": "/a"})]),
    "pending_intents": lambda b: b.pending_intents(),
    "record": lambda b: b.record(0, [("file.a", "create",
                                      ResourceRecord("file.a", "file", {}, [], None))]),
    "workspaces": lambda b: b.workspaces(),
    "delete_workspace": lambda b: b.delete_workspace("staging"),
}


def _listing(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()}


@pytest.mark.parametrize("kind", list(FOREIGN), ids=list(FOREIGN))
def test_a_file_that_is_not_tectum_state_is_refused_and_left_alone(tmp_path: Path,
                                                                    kind: str) -> None:
    make, summary, found = FOREIGN[kind]
    path = tmp_path / ".tectum" / "state.db"
    path.parent.mkdir()
    make(path)
    before = _listing(path.parent)
    for name, operation in OPERATIONS.items():
        backend = SQLiteBackend(str(path))
        try:
            with pytest.raises(DiagnosticError) as info:
                operation(backend)
        finally:
            backend.close()
        (diag,) = info.value.diagnostics
        assert diag.summary == summary, (name, diag)
        assert diag.source is not None and diag.source.filename == str(path), (name, diag)
        if summary == "Not a tectum state database":
            assert diag.detail.startswith(
                f"The state database {path} {found}, not a tectum state database"), diag.detail
            for advice in ("Nothing was changed", "restore the file from a backup",
                           "`tectum state push FILE`", "delete the file"):
                assert advice in diag.detail, (advice, diag.detail)
        else:
            assert f"The state database {path} cannot be read: {found}" in diag.detail
            assert "Restore the file from a backup" in diag.detail
        assert _listing(path.parent) == before, f"{name} changed the directory or the file"


def test_a_database_from_a_newer_tectum_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    backend = SQLiteBackend(str(path))
    backend.write(State.new(), "apply")
    backend.close()
    _sqlite(path, "PRAGMA user_version = 99")
    before = path.read_bytes()
    backend = SQLiteBackend(str(path))
    with pytest.raises(DiagnosticError) as info:
        backend.read()
    (diag,) = info.value.diagnostics
    assert diag.summary == "State database from a newer tectum"
    assert f"{path} has schema version 99" in diag.detail and "Upgrade tectum" in diag.detail
    backend.close()
    assert path.read_bytes() == before


def test_no_file_makes_a_new_database(tmp_path: Path) -> None:
    path = tmp_path / "new" / ".tectum" / "state.db"
    backend = SQLiteBackend(str(path))
    try:
        state = backend.read()
        assert state.serial == 0 and state.resources == {}
        assert backend.history() == []
        assert backend.write(state, "apply") == 1
    finally:
        backend.close()
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.db"], \
        "only the database is left (no temporary file)"
    again = SQLiteBackend(str(path))
    try:
        assert again.read().lineage == state.lineage
    finally:
        again.close()


CREATOR = r"""
import sys, time
from tectum.backends.base import Intent
from tectum.backends.sqlite import SQLiteBackend
from tectum.diagnostics import DiagnosticError
path, at = sys.argv[1], float(sys.argv[2])
while time.time() < at:
    pass
backend = SQLiteBackend(path)
try:
    backend.read()
    backend.history()
    backend.close()
except DiagnosticError as exc:
    print("refused:", [d.summary for d in exc.diagnostics])
    sys.exit(1)
print("ok")
"""


def test_processes_starting_a_new_project_at_once_all_use_one_database(tmp_path: Path) -> None:
    """Made under a temporary name and linked into place: a process never sees the file of a
    new database before it is complete (and would then refuse it as empty)."""
    for trial in range(5):
        path = tmp_path / f"t{trial}" / "state.db"
        at = time.time() + 0.5
        procs = [subprocess.Popen([sys.executable, "-c", CREATOR, str(path), str(at)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(6)]
        outputs = [p.communicate(timeout=60)[0] for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, outputs
        # no temporary file is left; SQLite's own -wal/-shm files may stay when two
        # processes close at the same moment (neither gets the lock that removes them)
        names = {p.name for p in path.parent.iterdir()} - {"state.db-wal", "state.db-shm"}
        assert names == {"state.db"}
        backend = SQLiteBackend(str(path))
        try:
            assert backend.read().serial == 0 and backend.history() == []
        finally:
            backend.close()


def _document(serial: int) -> str:
    state = State("3c4e0e7e-0000-4000-8000-000000000001", serial, {
        "file.a": ResourceRecord("file.a", "file", {"path": "/a"}, [], None)})
    return json.dumps(state.to_json())


@pytest.mark.parametrize("schema", [0, 1])
def test_an_older_schema_is_upgraded_and_keeps_its_versions(tmp_path: Path,
                                                            schema: int) -> None:
    """Schema 0 (tectum before schema versions, with a locks table) and 1 have no revision
    and desired state per version: both are added, the versions kept."""
    path = tmp_path / "state.db"
    _sqlite(path,
            "CREATE TABLE states (workspace TEXT NOT NULL, serial INTEGER NOT NULL, "
            "lineage TEXT NOT NULL, created_at REAL NOT NULL, author TEXT NOT NULL, "
            "operation TEXT NOT NULL, document TEXT NOT NULL, PRIMARY KEY (workspace, serial))",
            "CREATE TABLE journal (id INTEGER PRIMARY KEY AUTOINCREMENT, workspace TEXT NOT "
            "NULL, base_serial INTEGER NOT NULL, address TEXT NOT NULL, action TEXT NOT NULL, "
            "record TEXT, created_at REAL NOT NULL)",
            *(["CREATE TABLE locks (workspace TEXT PRIMARY KEY, id TEXT NOT NULL)"]
              if schema == 0 else []),
            f"PRAGMA user_version = {schema}")
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO states VALUES ('default', 1, ?, 0, 'old@host', 'apply', ?)",
                   ("3c4e0e7e-0000-4000-8000-000000000001", _document(1)))
    backend = SQLiteBackend(str(path))
    try:
        state = backend.read()
        assert (state.serial, sorted(state.resources)) == (1, ["file.a"])
        assert backend.write(state, "apply", revision="r2", desired={"x": 1}) == 2
        assert [(v.serial, v.revision) for v in backend.history()] == [(1, None), (2, "r2")]
        assert backend.read_version(2)[1] == {"x": 1}
    finally:
        backend.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3


def test_the_state_path_is_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.mkdir()
    with pytest.raises(DiagnosticError) as info:
        SQLiteBackend(str(path)).read()
    diag: Diagnostic = next(iter(info.value.diagnostics))
    assert diag.summary == "Unreadable state" and str(path) in diag.detail
    assert os.listdir(path) == []
