"""Fuzzing the readers of files tectum does not control: every malformed input gives a
diagnostic, never a traceback.

* ``State.from_json`` returns a well-formed :class:`State` or raises :class:`StateError`.
* ``SQLiteBackend.read`` / ``read_version`` on a database whose stored document (or journal) is
  damaged return a well-formed state or raise :class:`DiagnosticError` "Unreadable state" naming
  the file.
* ``read_plan`` returns a well-formed ``(Plan, project)`` or raises :class:`DiagnosticError`
  "Invalid plan file" naming the file — also for a payload whose checksum was recomputed after
  it was damaged (the structure is checked, not only the bytes).
* The CLI (``apply PLANFILE``, ``show``, ``plan``, ``output``, ``state list|pull|push|diff``,
  ``state show --version``) exits 1 on such files with a diagnostic, never a traceback nor an
  "Internal error".

Inputs are arbitrary bytes, arbitrary JSON values and mutations of valid documents (keys dropped
or added, values of the wrong type, wrong nesting, huge and negative numbers, duplicates, odd
unicode).

Every input has a verdict, given by the oracles below (``state_verdict``, ``record_verdict``,
``intent_verdict``, ``plan_verdict``: the documented format written out independently of the
readers): a must-reject input must raise the documented error, a must-accept input must be read
(and well-formed). Only where the oracle does not know a field (one a newer reader may check)
does it answer ``EITHER``, and then the result must still be an error of the documented kind or a
well-formed value.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tectum.backends.sqlite import SQLiteBackend
from tectum.diagnostics import DiagnosticError
from tectum.plans.plan import Action, AttrChange, Plan, ResourceChange
from tectum.plans.planfile import read_plan, write_plan
from tectum.state.model import FORMAT_VERSION, ResourceRecord, State, StateError

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_SMALL = settings(FUZZ, max_examples=60)
FUZZ_CLI = settings(FUZZ, max_examples=12)

#: nesting deeper than the JSON decoder's recursion limit (RecursionError, not ValueError)
DEEP = 100_000


# -- JSON values -----------------------------------------------------------------------------

ODD_TEXT = st.sampled_from([
    "", " ", "\x00", "\n", "\u202e", "\ufeff", "e\u0301", "\U0001f600", "\ud800", "\udfff",
    "a" * 2000, "file.www", "file.", ".", "file.www[0]", "null", "1", "-1", "true", "{}",
    "directory.www", "create", "no-op", "replace ", "CREATE",
])
JSON_TEXT = st.text(max_size=12) | ODD_TEXT
#: huge and boundary integers (10**4000 still has fewer digits than int→str's 4300-digit limit)
SPECIAL_NUMBERS = st.sampled_from([
    0, -1, -(2**31), 2**31, 2**63, -(2**63) - 1, 2**64, 10**100, -(10**100), 10**4000,
    -(10**4000), 0.5, -0.0, 1e308, float("inf"), float("-inf"), float("nan"),
])
JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | SPECIAL_NUMBERS
                | JSON_TEXT)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(JSON_TEXT, kids, max_size=4),
    max_leaves=16,
)


def dumps(value: Any) -> bytes:
    """JSON bytes as Python writes them (NaN/Infinity allowed, lone surrogates escaped)."""
    return json.dumps(value).encode()


# -- oracles: the documented formats, independent of the readers ------------------------------

ACCEPT, REJECT, EITHER = "accept", "reject", "either"
#: what the state and journal store: SQLite's INTEGER (and PostgreSQL's bigint); write adds 1
MAX_SERIAL = 2**63 - 2


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _strs_ok(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _worst(*verdicts: str) -> str:
    return REJECT if REJECT in verdicts else EITHER if EITHER in verdicts else ACCEPT


#: resource entry keys whose rules the oracle leaves to the reader (newer, optional fields)
_RECORD_UNSURE = ("origin", "on_destroy", "owed", "schema_version")


def record_verdict(entry: Any) -> str:
    """A resource entry of a state: address, type (strings), attributes (an object) required;
    dependencies a list of strings; source anything (a non-string is dropped); other keys are
    ignored."""
    if not isinstance(entry, dict):
        return REJECT
    if not all(k in entry for k in ("address", "type", "attributes")):
        return REJECT
    if not isinstance(entry["address"], str) or not isinstance(entry["type"], str) \
            or not isinstance(entry["attributes"], dict):
        return REJECT
    if "dependencies" in entry and not _strs_ok(entry["dependencies"]):
        return REJECT
    return EITHER if any(k in entry for k in _RECORD_UNSURE) else ACCEPT


def state_verdict(doc: Any) -> str:
    """A state document (format 1 or 2): an object with format_version 1 or 2 (an integer),
    serial (an integer, 0 ≤ serial ≤ MAX_SERIAL), lineage (a non-empty string), resources (a
    list of
    resource entries, each address once), outputs (an object of objects, each with a value);
    tectum_version and other keys are not checked."""
    if not isinstance(doc, dict):
        return REJECT
    if not _int(doc.get("format_version")) or doc["format_version"] not in (1, 2):
        return REJECT  # newer: refused; older: there is no format before 1
    serial: Any = doc.get("serial")
    lineage = doc.get("lineage")
    if not _int(serial) or not 0 <= serial <= MAX_SERIAL:
        return REJECT
    if not isinstance(lineage, str) or not lineage:
        return REJECT
    resources = doc.get("resources", [])
    if not isinstance(resources, list):
        return REJECT
    verdicts = [record_verdict(e) for e in resources]
    if REJECT in verdicts:
        return REJECT
    addresses = [e["address"] for e in resources]
    if len(set(addresses)) != len(addresses):
        return REJECT
    outputs = doc.get("outputs", {})
    if not isinstance(outputs, dict) or not all(isinstance(v, dict) and "value" in v
                                                for v in outputs.values()):
        return REJECT
    return _worst(*verdicts)


def stored_state_verdict(document: bytes, storage: str) -> str:
    """The verdict on a stored document as the backend gets it back: bytes from a BLOB (which
    ``json.loads`` decodes as UTF-8, -16 or -32), text otherwise (undecodable text is damage)."""
    try:
        raw: str | bytes = document if storage == "blob" else document.decode()
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return REJECT
    return state_verdict(doc)


def journal_verdict(action: str, record: str | None, address: str = "file.extra") -> str:
    """A finished-resource row replayed onto a state: a SQL NULL record means the object is
    gone; otherwise ``outputs`` holds an object of objects and any other action the resource's
    record (for ``address``)."""
    if record is None:
        return ACCEPT
    try:
        data = json.loads(record)
    except (ValueError, RecursionError):
        return REJECT
    if action == "outputs":
        ok = isinstance(data, dict) and all(isinstance(v, dict) for v in data.values())
        return ACCEPT if ok else REJECT
    verdict = record_verdict(data)
    if verdict != REJECT and data["address"] != address:
        return REJECT
    return verdict


def intent_verdict(record: str | None) -> str:
    """An intent row: ``{"action": str, "type": str, "identity": object}``."""
    if record is None:
        return REJECT
    try:
        data = json.loads(record)
    except (ValueError, RecursionError):
        return REJECT
    ok = isinstance(data, dict) and isinstance(data.get("action"), str) \
        and isinstance(data.get("type"), str) and isinstance(data.get("identity"), dict)
    return ACCEPT if ok else REJECT


_ACTIONS = ("create", "update", "replace", "delete", "no-op", "forget")
_CHANGE_KEYS = {"name", "before", "after", "force_new", "sensitive"}
#: resource change keys the oracle checks; any other key leaves the verdict to the reader
_RC_KNOWN = {"address", "type", "action", "before", "after", "changes", "triggers", "triggered",
             "drift", "dependencies", "prior", "source", "note", "watches", "origin",
             "on_destroy", "moved_from", "interrupted"}


def _opt_str(rc: dict[str, Any], key: str) -> bool:
    return rc.get(key) is None or isinstance(rc[key], str)


def _opt_obj(rc: dict[str, Any], key: str) -> bool:
    return rc.get(key) is None or isinstance(rc[key], dict)


def change_verdict(rc: Any) -> str:
    """One resource change of a plan."""
    if not isinstance(rc, dict):
        return REJECT
    if not all(k in rc for k in ("address", "type", "action", "before", "after")):
        return REJECT
    if not isinstance(rc["address"], str) or not isinstance(rc["type"], str):
        return REJECT
    if not isinstance(rc["action"], str) or rc["action"] not in _ACTIONS:
        return REJECT
    if not all(_opt_obj(rc, k) for k in ("before", "after", "prior")):
        return REJECT
    changes = rc.get("changes", [])
    if not isinstance(changes, list):
        return REJECT
    for c in changes:
        if not isinstance(c, dict) or not {"name", "before", "after"} <= set(c) \
                or not set(c) <= _CHANGE_KEYS or not isinstance(c["name"], str) \
                or not isinstance(c.get("force_new", False), bool) \
                or not isinstance(c.get("sensitive", False), bool):
            return REJECT
    if not all(_strs_ok(rc.get(k, [])) for k in ("triggers", "drift", "dependencies",
                                                  "interrupted")):
        return REJECT
    if not all(_opt_str(rc, k) for k in ("triggered", "source", "note", "moved_from")):
        return REJECT
    watches = rc.get("watches") or {}
    if not isinstance(watches, dict) or not all(_strs_ok(v) for v in watches.values()):
        return REJECT
    if rc.get("origin") not in (None, "created", "found") \
            or rc.get("on_destroy") not in (None, "delete", "forget"):
        return REJECT
    return ACCEPT if set(rc) <= _RC_KNOWN else EITHER


def plan_verdict(payload: Any) -> str:
    """A plan file's (checksummed) payload: ``{"plan": object, "project": string}``; the plan
    has resource_changes (a list of resource changes) and serial (an integer ≥ 0); outputs,
    output_sensitive (names → booleans), variables are objects; lineage a string or null;
    destroy a boolean, workspace a string; hosts_down maps hosts to {kind, reason} strings;
    limit is null or a list of strings; operation null, apply, destroy or rollback."""
    if not isinstance(payload, dict) or not isinstance(payload.get("plan"), dict) \
            or not isinstance(payload.get("project"), str):
        return REJECT
    plan = payload["plan"]
    if "masked" in plan:
        return EITHER
    rcs = plan.get("resource_changes")
    if not isinstance(rcs, list) or not _int(plan.get("serial")) or plan["serial"] < 0:
        return REJECT
    if not all(isinstance(plan.get(k, {}), dict)
               for k in ("outputs", "output_sensitive", "variables")):
        return REJECT
    if not all(isinstance(v, bool) for v in plan.get("output_sensitive", {}).values()):
        return REJECT
    if not _opt_str(plan, "lineage") or not isinstance(plan.get("destroy", False), bool) \
            or not isinstance(plan.get("workspace", "default"), str):
        return REJECT
    down = plan.get("hosts_down", {})
    if not isinstance(down, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("kind"), str)
            and isinstance(v.get("reason"), str) for v in down.values()):
        return REJECT
    if plan.get("limit") is not None and not _strs_ok(plan["limit"]):
        return REJECT
    if plan.get("operation") not in (None, "apply", "destroy", "rollback"):
        return REJECT
    return _worst(*(change_verdict(rc) for rc in rcs))


def test_the_oracles_accept_the_valid_documents(valid_plan_doc: dict[str, Any]) -> None:
    assert state_verdict(valid_state_doc()) == ACCEPT
    assert record_verdict(_valid_record()) == ACCEPT
    assert intent_verdict(json.dumps(_valid_intent())) == ACCEPT
    assert plan_verdict(valid_plan_doc["payload"]) in (ACCEPT, EITHER)


# -- mutations of a valid document -----------------------------------------------------------

Path_ = tuple[Any, ...]


def _paths(doc: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _paths(value, (*prefix, index))


def _get(doc: Any, path: Path_) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _set(doc: Any, path: Path_, value: Any) -> Any:
    if not path:
        return value
    _get(doc, path[:-1])[path[-1]] = value
    return doc


MUTATIONS = ("drop", "replace", "replace", "wrap_list", "wrap_dict", "duplicate", "add_key",
             "stringify", "negate", "empty", "number")


def mutate(draw: Callable[..., Any], doc: Any) -> Any:
    """One random change somewhere in ``doc`` (a path chosen among all of its values)."""
    path = draw(st.sampled_from(list(_paths(doc))))
    op = draw(st.sampled_from(MUTATIONS))
    target = _get(doc, path)
    if op == "drop":
        if not path:
            return draw(JSON_VALUES)
        del _get(doc, path[:-1])[path[-1]]
        return doc
    if op == "replace":
        return _set(doc, path, draw(JSON_VALUES))
    if op == "wrap_list":
        return _set(doc, path, [target])
    if op == "wrap_dict":
        return _set(doc, path, {draw(JSON_TEXT): target})
    if op == "duplicate":
        if isinstance(target, list) and target:
            target.append(copy.deepcopy(draw(st.sampled_from(target))))
            return doc
        return _set(doc, path, [target, copy.deepcopy(target)])
    if op == "add_key":
        if isinstance(target, dict):
            target[draw(JSON_TEXT)] = draw(JSON_VALUES)
            return doc
        return _set(doc, path, draw(JSON_VALUES))
    if op == "stringify":
        return _set(doc, path, json.dumps(target))
    if op == "negate":
        if isinstance(target, int | float) and not isinstance(target, bool):
            return _set(doc, path, -target - 1)
        return _set(doc, path, not target)
    if op == "empty":
        return _set(doc, path, type(target)() if isinstance(target, dict | list | str) else 0)
    return _set(doc, path, draw(SPECIAL_NUMBERS))


@st.composite
def mutations_of(draw: Callable[..., Any], make: Callable[[], Any], most: int = 3) -> Any:
    doc = make()
    for _ in range(draw(st.integers(1, most))):
        doc = mutate(draw, doc)
    return doc


# -- a valid state document ------------------------------------------------------------------

LINEAGE = "0b6f2a52-2d0e-4f38-9a4b-5b1f7e0c9d11"


def valid_state_doc() -> dict[str, Any]:
    return {
        "format_version": 1,
        "tectum_version": "0.1.0",
        "serial": 3,
        "lineage": LINEAGE,
        "resources": [
            {"address": "directory.www", "type": "directory",
             "attributes": {"path": "/srv/www", "mode": "0755", "owner": None},
             "source": "/p/stack.py:3"},
            {"address": "file.index", "type": "file",
             "attributes": {"path": "/srv/www/index.html", "content": "hi\n",
                            "tags": ["a", 1, {"b": [True, None, 2.5]}]},
             "dependencies": ["directory.www"], "source": "/p/stack.py:4"},
        ],
        "outputs": {"url": {"value": "http://localhost/", "sensitive": False},
                    "secret": {"value": "s3cret", "sensitive": True}},
    }


def assert_well_formed_state(state: Any) -> None:
    """What the rest of tectum relies on when it gets a State."""
    assert isinstance(state, State), state
    assert isinstance(state.lineage, str) and state.lineage
    assert isinstance(state.serial, int) and state.serial >= 0
    assert isinstance(state.resources, dict)
    for address, rec in state.resources.items():
        assert isinstance(rec, ResourceRecord)
        assert rec.address == address and isinstance(address, str)
        assert isinstance(rec.type, str)
        assert isinstance(rec.attributes, dict)
        assert all(isinstance(d, str) for d in rec.dependencies)
        assert rec.source is None or isinstance(rec.source, str)
    assert isinstance(state.outputs, dict)
    assert all(isinstance(k, str) and isinstance(v, dict) for k, v in state.outputs.items())
    assert isinstance(state.tectum_version, str)


def check_state_from_json(doc: Any, verdict: str | None = None) -> None:
    """``State.from_json`` on ``doc``: a :class:`StateError` with a message when the verdict
    (by default :func:`state_verdict`'s) is REJECT, a well-formed state when it is ACCEPT."""
    verdict = verdict or state_verdict(doc)
    try:
        state = State.from_json(doc)
    except StateError as exc:
        assert str(exc)
        assert verdict != ACCEPT, f"a valid document was refused ({exc}): {doc!r:.2000}"
        return
    assert verdict != REJECT, f"an invalid document was accepted: {doc!r:.2000}"
    assert_well_formed_state(state)


#: each must be refused (StateError)
STATE_CASES = {
    "not an object": [valid_state_doc()],
    "empty object": {},
    "negative serial": {**valid_state_doc(), "serial": -1},
    "huge negative serial": {**valid_state_doc(), "serial": -(10**4000)},
    "huge serial": {**valid_state_doc(), "serial": 10**4000},
    "serial beyond storage": {**valid_state_doc(), "serial": 2**63 - 1},
    "boolean serial": {**valid_state_doc(), "serial": True},
    "boolean format": {**valid_state_doc(), "format_version": True},
    "float serial": {**valid_state_doc(), "serial": 3.0},
    "string serial": {**valid_state_doc(), "serial": "3"},
    "newer format": {**valid_state_doc(), "format_version": FORMAT_VERSION + 1},
    "huge format": {**valid_state_doc(), "format_version": 10**4000},
    "old format": {**valid_state_doc(), "format_version": 0},
    "negative format": {**valid_state_doc(), "format_version": -(10**4000)},
    "string format": {**valid_state_doc(), "format_version": "1"},
    "float format": {**valid_state_doc(), "format_version": 1.0},
    "no lineage": {k: v for k, v in valid_state_doc().items() if k != "lineage"},
    "empty lineage": {**valid_state_doc(), "lineage": ""},
    "resources object": {**valid_state_doc(), "resources": {"file.index": {}}},
    "resources string": {**valid_state_doc(), "resources": "file.index"},
    "resource null": {**valid_state_doc(), "resources": [None]},
    "resource without type": {**valid_state_doc(),
                              "resources": [{"address": "a.b", "attributes": {}}]},
    "resource address int": {**valid_state_doc(),
                             "resources": [{"address": 10**4000, "type": "x",
                                            "attributes": {}}]},
    "resource attributes list": {**valid_state_doc(),
                                 "resources": [{"address": "a.b", "type": "a",
                                                "attributes": [["k", "v"]]}]},
    "dependencies string": {**valid_state_doc(),
                            "resources": [{"address": "a.b", "type": "a", "attributes": {},
                                           "dependencies": "a.c"}]},
    "dependencies nested": {**valid_state_doc(),
                            "resources": [{"address": "a.b", "type": "a", "attributes": {},
                                           "dependencies": [["a.c"]]}]},
    "duplicate addresses": {**valid_state_doc(),
                            "resources": valid_state_doc()["resources"] * 2},
    "outputs list": {**valid_state_doc(), "outputs": [{"value": 1}]},
    "output not an object": {**valid_state_doc(), "outputs": {"x": 1}},
    "output without value": {**valid_state_doc(), "outputs": {"x": {"sensitive": False}}},
}

#: each must be read: the reader checks the document's structure and types, not what the
#: strings say (an address that does not parse is kept, and shown as it is)
STATE_ACCEPTED = {
    "odd unicode address": {**valid_state_doc(),
                            "resources": [{"address": "\ud800\u202e\x00", "type": "\ufeff",
                                           "attributes": {"\udfff": "\ud800"}}]},
    "largest serial": {**valid_state_doc(), "serial": MAX_SERIAL},
    "no resources, no outputs": {k: v for k, v in valid_state_doc().items()
                                 if k not in ("resources", "outputs")},
    "unknown keys": {**valid_state_doc(), "comment": [1, {"a": None}]},
    "source not a string": {**valid_state_doc(), "resources": [
        {"address": "a.b", "type": "a", "attributes": {}, "source": 5}]},
}


@pytest.mark.parametrize("doc", list(STATE_CASES.values()), ids=list(STATE_CASES))
def test_state_from_json_refuses_the_known_bad_cases(doc: Any) -> None:
    assert state_verdict(doc) == REJECT
    with pytest.raises(StateError) as info:
        State.from_json(doc)
    assert str(info.value)


@pytest.mark.parametrize("doc", list(STATE_ACCEPTED.values()), ids=list(STATE_ACCEPTED))
def test_state_from_json_accepts_the_known_good_cases(doc: Any) -> None:
    assert state_verdict(doc) == ACCEPT
    assert_well_formed_state(State.from_json(doc))


def test_state_from_json_accepts_the_valid_document() -> None:
    state = State.from_json(valid_state_doc())
    assert_well_formed_state(state)
    assert sorted(state.resources) == ["directory.www", "file.index"]


@FUZZ
@given(JSON_VALUES)
def test_state_from_json_arbitrary_json(doc: Any) -> None:
    check_state_from_json(doc)


@FUZZ
@given(st.dictionaries(st.sampled_from(list(valid_state_doc())) | JSON_TEXT, JSON_VALUES,
                       max_size=7))
def test_state_from_json_objects_with_state_keys(doc: dict[str, Any]) -> None:
    check_state_from_json({"format_version": 1, **doc})


@FUZZ
@given(mutations_of(valid_state_doc))
def test_state_from_json_mutated_document(doc: Any) -> None:
    check_state_from_json(doc)


# -- the SQLite backend ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state database with one valid version in workspace "default"."""
    path = tmp_path_factory.mktemp("template") / "state.db"
    backend = SQLiteBackend(str(path))
    try:
        backend.write(State.from_json(valid_state_doc()), "apply")
    finally:
        backend.close()
    assert not Path(f"{path}-wal").exists()
    return path


_counter = itertools.count()


def fresh_db(template: Path) -> Path:
    """A copy of the template database in a directory of its own."""
    root = template.parent.parent / f"db{next(_counter)}"
    root.mkdir()
    path = root / "state.db"
    shutil.copyfile(template, path)
    return path


def store_document(path: Path, document: bytes, storage: str) -> None:
    """Overwrite ``states.document`` of every version: as a BLOB, as TEXT (decoded when it is
    UTF-8) or as TEXT holding the raw bytes (possibly invalid UTF-8)."""
    if storage == "blob":
        value: Any = document
        sql = "UPDATE states SET document = ?"
    elif storage == "text":
        try:
            value = document.decode()
            sql = "UPDATE states SET document = ?"
        except UnicodeDecodeError:
            value = document
            sql = "UPDATE states SET document = CAST(? AS TEXT)"
    else:
        value = document
        sql = "UPDATE states SET document = CAST(? AS TEXT)"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(sql, (value,))


def assert_unreadable_state(exc: DiagnosticError, path: Path) -> None:
    diags = list(exc.diagnostics)
    assert [d.summary for d in diags] == ["Unreadable state"], diags
    assert str(path) in diags[0].detail, diags[0]


def check_backend(path: Path, verdict: str, version_verdict: str | None = None) -> None:
    """``read`` gives "Unreadable state" when ``verdict`` is REJECT and a well-formed state
    when it is ACCEPT; so does ``read_version`` (of the latest version) by ``version_verdict``
    (default: the same)."""
    backend = SQLiteBackend(str(path))

    def check(what: str, call: Callable[[], State], want: str) -> None:
        try:
            state = call()
        except DiagnosticError as exc:
            assert_unreadable_state(exc, path)
            assert want != ACCEPT, f"{what} refused a valid state: {exc.diagnostics}"
        else:
            assert want != REJECT, f"{what} accepted a damaged state"
            assert_well_formed_state(state)

    try:
        check("read", backend.read, verdict)
        with closing(sqlite3.connect(path)) as db:
            (serial,) = db.execute("SELECT MAX(serial) FROM states").fetchone()
        check("read_version", lambda: backend.read_version(serial)[0],
              version_verdict or verdict)
    finally:
        backend.close()


STORAGE = st.sampled_from(["blob", "text", "raw-text"])


def _truncations(doc: bytes) -> st.SearchStrategy[bytes]:
    return st.integers(0, len(doc) - 1).map(lambda n: doc[:n])


VALID_STATE_BYTES = dumps(valid_state_doc())
STATE_BYTES = st.one_of(
    st.binary(max_size=64),
    JSON_VALUES.map(dumps),
    mutations_of(valid_state_doc).map(dumps),
    _truncations(VALID_STATE_BYTES),
    st.sampled_from([
        b"", b"\xff\xfe\x00", b"\xef\xbb\xbf" + VALID_STATE_BYTES,
        VALID_STATE_BYTES.decode().encode("utf-16"), VALID_STATE_BYTES + b"garbage",
        VALID_STATE_BYTES.replace(b'"serial": 3', b'"serial": ' + b"9" * 5000),
        VALID_STATE_BYTES.replace(b'"serial": 3', b'"serial": 1e999'),
        b"NaN", b'{"format_version": Infinity}', b"\x00" * 16,
    ]),
)


@FUZZ
@given(document=STATE_BYTES, storage=STORAGE)
def test_sqlite_backend_read_damaged_document(template_db: Path, document: bytes,
                                              storage: str) -> None:
    path = fresh_db(template_db)
    store_document(path, document, storage)
    check_backend(path, stored_state_verdict(document, storage))


@pytest.mark.parametrize("document", [
    b"[" * DEEP + b"]" * DEEP,
    b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    VALID_STATE_BYTES.replace(b'"owner": null', b'"owner": ' + b"[" * DEEP + b"]" * DEEP),
], ids=["deep list", "deep object", "deep attribute in a valid state"])
def test_sqlite_backend_read_deeply_nested_document(template_db: Path, document: bytes) -> None:
    path = fresh_db(template_db)
    store_document(path, document, "text")
    check_backend(path, REJECT)


@pytest.mark.parametrize("document, storage", [
    (VALID_STATE_BYTES, "text"), (VALID_STATE_BYTES, "blob"), (VALID_STATE_BYTES, "raw-text"),
    (dumps({**valid_state_doc(), "comment": "x"}), "text"),
], ids=["text", "blob", "raw text", "unknown key"])
def test_sqlite_backend_reads_a_valid_document(template_db: Path, document: bytes,
                                               storage: str) -> None:
    path = fresh_db(template_db)
    store_document(path, document, storage)
    check_backend(path, ACCEPT)


def test_sqlite_backend_read_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(DiagnosticError) as info:
        SQLiteBackend(str(path)).read()
    assert_unreadable_state(info.value, path)


def _valid_record() -> dict[str, Any]:
    return {"address": "file.extra", "type": "file", "attributes": {"path": "/x"}}


JOURNAL_RECORDS = st.one_of(
    st.none(),
    st.binary(max_size=32).map(lambda b: b.decode("latin-1")),
    JSON_VALUES.map(json.dumps),
    mutations_of(_valid_record).map(json.dumps),
)


def insert_journal_row(path: Path, action: str, record: str | None) -> None:
    """A finished-resource row on top of the latest version, as a killed apply leaves it."""
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO journal (workspace, base_serial, address, action, record, "
                   "created_at) SELECT 'default', MAX(serial), 'file.extra', ?, ?, 0 FROM states",
                   (action, record))


@FUZZ_SMALL
@given(action=st.sampled_from(["create", "update", "replace", "delete", "outputs", "noop"]),
       record=JOURNAL_RECORDS)
def test_sqlite_backend_read_damaged_journal(template_db: Path, action: str,
                                             record: str | None) -> None:
    """A run killed mid-apply leaves journal rows that the next read replays: a damaged row
    is "Unreadable state" too, and never leaves a malformed state behind."""
    path = fresh_db(template_db)
    insert_journal_row(path, action, record)
    check_backend(path, journal_verdict(action, record), ACCEPT)


@pytest.mark.parametrize("action, record", [
    ("create", ""),
    ("create", "null"),
    ("create", "{}"),
    ("create", "[" * DEEP + "]" * DEEP),
    ("outputs", "null"),
    ("outputs", '{"url": 1}'),
], ids=["empty", "null", "no address", "deep", "outputs null", "output not an object"])
def test_sqlite_backend_read_damaged_journal_cases(template_db: Path, action: str,
                                                   record: str) -> None:
    assert journal_verdict(action, record) == REJECT
    path = fresh_db(template_db)
    insert_journal_row(path, action, record)
    check_backend(path, REJECT, ACCEPT)


@pytest.mark.parametrize("action, record", [
    ("create", json.dumps(_valid_record())),
    ("delete", None),
    ("outputs", '{"url": {"value": "x"}}'),
    ("outputs", None),
], ids=["record", "gone", "outputs", "outputs null"])
def test_sqlite_backend_read_replays_a_sound_journal(template_db: Path, action: str,
                                                     record: str | None) -> None:
    assert journal_verdict(action, record) == ACCEPT
    path = fresh_db(template_db)
    insert_journal_row(path, action, record)
    check_backend(path, ACCEPT)


def _valid_intent() -> dict[str, Any]:
    return {"action": "create", "type": "file", "identity": {"path": "/srv/new"}}


@FUZZ_SMALL
@given(record=st.one_of(st.none(), st.text(max_size=16), JSON_VALUES.map(json.dumps),
                        mutations_of(_valid_intent).map(json.dumps)))
def test_sqlite_backend_pending_intents_damaged(template_db: Path, record: str | None) -> None:
    """The intents a killed apply left (read by the next plan to adopt what it made): a
    damaged one is "Unreadable state", and those returned are well-formed."""
    from tectum.backends.base import Intent

    path = fresh_db(template_db)
    insert_journal_row(path, "intent", record)
    verdict = intent_verdict(record)
    backend = SQLiteBackend(str(path))
    try:
        intents = backend.pending_intents()
    except DiagnosticError as exc:
        assert_unreadable_state(exc, path)
        assert verdict == REJECT, f"a sound intent was refused: {record!r}"
        return
    finally:
        backend.close()
    assert verdict == ACCEPT, f"a damaged intent was accepted: {record!r}"
    assert len(intents) == 1
    for intent in intents:
        assert isinstance(intent, Intent)
        assert isinstance(intent.action, str) and isinstance(intent.type, str), intent
        assert isinstance(intent.identity, dict), intent


# -- plan files ------------------------------------------------------------------------------

def valid_plan() -> Plan:
    after_www = {"path": "/srv/www", "mode": "0755"}
    after_index = {"path": "/srv/www/index.html", "content": "hello\n"}
    changes = [
        ResourceChange("directory.www", "directory", Action.CREATE, None, after_www,
                       [AttrChange("path", None, "/srv/www"), AttrChange("mode", None, "0755")],
                       source="/p/stack.py:3"),
        ResourceChange("file.index", "file", Action.UPDATE,
                       {"path": "/srv/www/index.html", "content": "old\n"}, after_index,
                       [AttrChange("content", "old\n", "hello\n", sensitive=True)],
                       drift=["content"], dependencies=["directory.www"],
                       prior={"path": "/srv/www/index.html", "content": "old\n"},
                       source="/p/stack.py:4"),
        ResourceChange("file.conf", "file", Action.REPLACE, {"path": "/etc/a"},
                       {"path": "/etc/b"}, [AttrChange("path", "/etc/a", "/etc/b", True)],
                       triggers=["file.index"], triggered="restart",
                       prior={"path": "/etc/a"}),
        ResourceChange("file.old", "file", Action.DELETE, {"path": "/srv/old"}, None,
                       prior={"path": "/srv/old"}),
        ResourceChange("file.moved", "file", Action.NOOP, {"path": "/m"}, {"path": "/m"},
                       prior={"path": "/m"}, note="moved from file.before"),
    ]
    return Plan(changes, {"url": "http://localhost/"}, {"url": False}, LINEAGE, 3,
                workspace="default", variables={"port": 8080})


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plans")


@pytest.fixture(scope="module")
def valid_plan_doc(plan_dir: Path) -> dict[str, Any]:
    """The JSON document ``write_plan`` writes for :func:`valid_plan`."""
    path = plan_dir / "valid.plan"
    write_plan(str(path), valid_plan(), "/p")
    doc: dict[str, Any] = json.loads(path.read_bytes())
    return doc


def _canonical(payload: Any) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def with_checksum(payload: Any) -> dict[str, Any]:
    """A plan document whose checksum matches ``payload`` (as ``write_plan`` computes it)."""
    return {"tectum_plan": 1, "checksum": hashlib.sha256(_canonical(payload)).hexdigest(),
            "payload": payload}


def _well_typed_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def assert_well_formed_plan(plan: Any, project: Any) -> None:
    """What ``show``, ``apply`` and the views rely on when ``read_plan`` returns."""
    assert isinstance(project, str)
    assert isinstance(plan, Plan)
    assert isinstance(plan.changes, list)
    for c in plan.changes:
        assert isinstance(c, ResourceChange)
        where = f"resource change {c.address!r}"
        assert isinstance(c.address, str), where
        assert isinstance(c.type, str), where
        assert isinstance(c.action, Action), where
        for name in ("before", "after", "prior"):
            value = getattr(c, name)
            assert value is None or isinstance(value, dict), f"{where}: {name} = {value!r}"
        assert isinstance(c.changes, list), where
        for a in c.changes:
            assert isinstance(a, AttrChange), where
            assert isinstance(a.name, str), f"{where}: attribute change {a!r}"
            assert isinstance(a.force_new, bool) and isinstance(a.sensitive, bool), a
        for name in ("triggers", "drift", "dependencies"):
            assert _well_typed_str_list(getattr(c, name)), f"{where}: {name}"
        for name in ("triggered", "source", "note"):
            value = getattr(c, name)
            assert value is None or isinstance(value, str), f"{where}: {name} = {value!r}"
        watches = getattr(c, "watches", {})
        assert isinstance(watches, dict), where
        assert all(isinstance(k, str) and _well_typed_str_list(v)
                   for k, v in watches.items()), f"{where}: watches = {watches!r}"
    assert isinstance(plan.outputs, dict)
    assert all(isinstance(k, str) for k in plan.outputs)
    assert isinstance(plan.output_sensitive, dict)
    assert all(isinstance(k, str) and isinstance(v, bool)
               for k, v in plan.output_sensitive.items())
    assert plan.lineage is None or isinstance(plan.lineage, str)
    assert isinstance(plan.serial, int)
    assert isinstance(plan.destroy, bool)
    assert isinstance(plan.workspace, str)
    assert isinstance(plan.variables, dict)
    json.dumps(plan.to_json())  # `show --json` and the next `plan -out` write it back


def envelope_verdict(doc: Any) -> str:
    """A plan file: ``{"tectum_plan": 1, "checksum": sha256 of the canonical payload,
    "payload": object}`` (other keys ignored), with a payload :func:`plan_verdict` judges."""
    if not isinstance(doc, dict) or not _int(doc.get("tectum_plan")) \
            or doc["tectum_plan"] != 1:
        return REJECT
    payload, checksum = doc.get("payload"), doc.get("checksum")
    if not isinstance(payload, dict) or not isinstance(checksum, str):
        return REJECT
    if hashlib.sha256(_canonical(payload)).hexdigest() != checksum:
        return REJECT
    return plan_verdict(payload)


def check_read_plan(path: Path, verdict: str) -> None:
    """``read_plan``: "Invalid plan file" naming the file when ``verdict`` is REJECT, a
    well-formed plan when it is ACCEPT."""
    try:
        plan, project = read_plan(str(path))
    except DiagnosticError as exc:
        diags = list(exc.diagnostics)
        assert [d.summary for d in diags] == ["Invalid plan file"], diags
        assert str(path) in diags[0].detail, diags[0]
        assert verdict != ACCEPT, f"a valid plan file was refused: {diags[0].detail}"
        return
    assert verdict != REJECT, f"an invalid plan file was accepted: {path.read_bytes()[:2000]!r}"
    assert_well_formed_plan(plan, project)


def write_and_check(path: Path, data: bytes, verdict: str) -> None:
    path.write_bytes(data)
    check_read_plan(path, verdict)


def test_read_plan_accepts_the_valid_file(plan_dir: Path, valid_plan_doc: dict[str, Any]
                                          ) -> None:
    plan, project = read_plan(str(plan_dir / "valid.plan"))
    assert_well_formed_plan(plan, project)
    assert project == "/p"
    assert [c.action for c in plan.changes] == [c.action for c in valid_plan().changes]


def test_read_plan_missing_file_and_directory(plan_dir: Path) -> None:
    check_read_plan(plan_dir / "does-not-exist.plan", REJECT)
    check_read_plan(plan_dir, REJECT)


@FUZZ
@given(data=st.binary(max_size=200))
def test_read_plan_arbitrary_bytes(plan_dir: Path, data: bytes) -> None:
    write_and_check(plan_dir / "bytes.plan", data, REJECT)


@FUZZ
@given(doc=JSON_VALUES)
def test_read_plan_arbitrary_json(plan_dir: Path, doc: Any) -> None:
    write_and_check(plan_dir / "json.plan", dumps(doc), envelope_verdict(doc))


@FUZZ
@given(payload=JSON_VALUES | st.fixed_dictionaries(
    {"plan": JSON_VALUES | st.dictionaries(
        st.sampled_from(list(valid_plan().to_json())) | JSON_TEXT, JSON_VALUES, max_size=9),
     "project": JSON_VALUES}))
def test_read_plan_arbitrary_payload_with_checksum(plan_dir: Path, payload: Any) -> None:
    """A correct checksum over a payload that is not a plan: still only "Invalid plan file"."""
    write_and_check(plan_dir / "payload.plan", dumps(with_checksum(payload)),
                    plan_verdict(payload))


@FUZZ
@given(data=st.data(), recompute=st.booleans())
def test_read_plan_mutated_file(plan_dir: Path, valid_plan_doc: dict[str, Any],
                                data: st.DataObject, recompute: bool) -> None:
    """A valid plan file changed somewhere in its payload; with ``recompute`` the checksum is
    made to match again, so the structural checks are what must catch it."""
    payload = data.draw(mutations_of(lambda: copy.deepcopy(valid_plan_doc["payload"])),
                        label="payload")
    doc = with_checksum(payload) if recompute else {**valid_plan_doc, "payload": payload}
    write_and_check(plan_dir / "mutated.plan", dumps(doc), envelope_verdict(doc))


@FUZZ
@given(data=st.data())
def test_read_plan_mutated_envelope(plan_dir: Path, valid_plan_doc: dict[str, Any],
                                    data: st.DataObject) -> None:
    doc = data.draw(mutations_of(lambda: copy.deepcopy(valid_plan_doc)), label="doc")
    write_and_check(plan_dir / "envelope.plan", dumps(doc), envelope_verdict(doc))


@FUZZ_SMALL
@given(data=st.data())
def test_read_plan_truncated_file(plan_dir: Path, valid_plan_doc: dict[str, Any],
                                  data: st.DataObject) -> None:
    raw = dumps(valid_plan_doc)
    write_and_check(plan_dir / "truncated.plan", data.draw(_truncations(raw), label="bytes"),
                    REJECT)


def _plan_case(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], bytes]:
    def make(valid: dict[str, Any]) -> bytes:
        payload = copy.deepcopy(valid["payload"])
        edit(payload)
        return dumps(with_checksum(payload))
    return make


def _rc(**fields: Any) -> Callable[[dict[str, Any]], None]:
    """Edit the first resource change (a field set to ... is deleted)."""
    def edit(payload: dict[str, Any]) -> None:
        rc = payload["plan"]["resource_changes"][0]
        for key, value in fields.items():
            if value is ...:
                del rc[key]
            else:
                rc[key] = value
    return edit


def _plan_field(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(payload: dict[str, Any]) -> None:
        payload["plan"][key] = value
    return edit


#: structurally wrong payloads with a correct checksum; each must be "Invalid plan file"
PLAN_CASES: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "serial infinity": _plan_case(_plan_field("serial", float("inf"))),
    "serial -infinity": _plan_case(_plan_field("serial", float("-inf"))),
    "serial NaN": _plan_case(_plan_field("serial", float("nan"))),
    "serial string": _plan_case(_plan_field("serial", "three")),
    "serial list": _plan_case(_plan_field("serial", [3])),
    "serial negative": _plan_case(_plan_field("serial", -1)),
    "serial boolean": _plan_case(_plan_field("serial", True)),
    "destroy string": _plan_case(_plan_field("destroy", "false")),
    "workspace int": _plan_case(_plan_field("workspace", 5)),
    "resource_changes object": _plan_case(_plan_field("resource_changes", {"a": {}})),
    "resource_changes string": _plan_case(_plan_field("resource_changes", "abc")),
    "resource change null": _plan_case(_plan_field("resource_changes", [None])),
    "resource change without address": _plan_case(_rc(address=...)),
    "resource change without action": _plan_case(_rc(action=...)),
    "unknown action": _plan_case(_rc(action="explode")),
    "action list": _plan_case(_rc(action=["create"])),
    "address int": _plan_case(_rc(address=5)),
    "address null": _plan_case(_rc(address=None)),
    "type object": _plan_case(_rc(type={"file": 1})),
    "after list": _plan_case(_rc(after=[1, 2])),
    "before string": _plan_case(_rc(before="x")),
    "prior int": _plan_case(_rc(prior=1)),
    "changes entry int": _plan_case(_rc(changes=[5])),
    "changes entry unknown key": _plan_case(_rc(changes=[{"name": "a", "before": 1,
                                                          "after": 2, "bogus": 1}])),
    "changes entry name int": _plan_case(_rc(changes=[{"name": 5, "before": 1, "after": 2}])),
    "changes string": _plan_case(_rc(changes="path")),
    "dependencies string": _plan_case(_rc(dependencies="directory.www")),
    "dependencies ints": _plan_case(_rc(dependencies=[1, 2])),
    "drift ints": _plan_case(_rc(drift=[1])),
    "triggers object": _plan_case(_rc(triggers={"a": 1})),
    "note int": _plan_case(_rc(note=7)),
    "watches list": _plan_case(_rc(watches=[["a", "b"]])),
    "outputs list of pairs": _plan_case(_plan_field("outputs", [["a", 1]])),
    "outputs int": _plan_case(_plan_field("outputs", 5)),
    "output_sensitive string": _plan_case(_plan_field("output_sensitive", {"url": "no"})),
    "variables list": _plan_case(_plan_field("variables", [1])),
    "lineage int": _plan_case(_plan_field("lineage", 5)),
    "plan list": _plan_case(lambda p: p.update(plan=[])),
    "project missing": _plan_case(lambda p: p.pop("project")),
    "project object": _plan_case(lambda p: p.update(project={"dir": "/p"})),
    "deeply nested payload": lambda valid: (
        b'{"tectum_plan":1,"checksum":"0","payload":' + b"[" * DEEP + b"]" * DEEP + b"}"),
    "deeply nested file": lambda valid: b"[" * DEEP + b"]" * DEEP,
    "format true": lambda valid: dumps({**valid, "tectum_plan": True}),
    "format 1.0": lambda valid: dumps({**valid, "tectum_plan": 1.0}),
    # an age header that does not parse is damage, whatever keys the reader holds
    "age header only": lambda valid: b"age-encryption.org/v1",
    "age file cut in its header": lambda valid: _age_encrypted(dumps(valid))[:60],
    "age header, unknown stanza": lambda valid: b"age-encryption.org/v1\n-> X25519 abc\n--- x\n",
}


def _age_encrypted(data: bytes) -> bytes:
    import pyrage
    from pyrage import x25519

    return bytes(pyrage.encrypt(data, [x25519.Identity.generate().to_public()]))


@pytest.mark.parametrize("make", list(PLAN_CASES.values()), ids=list(PLAN_CASES))
def test_read_plan_known_cases(plan_dir: Path, valid_plan_doc: dict[str, Any],
                               make: Callable[[dict[str, Any]], bytes]) -> None:
    path = plan_dir / "case.plan"
    data = make(valid_plan_doc)
    path.write_bytes(data)
    with contextlib.suppress(ValueError, RecursionError):
        assert envelope_verdict(json.loads(data)) == REJECT
    with pytest.raises(DiagnosticError) as info:
        read_plan(str(path))
    diags = list(info.value.diagnostics)
    assert [d.summary for d in diags] == ["Invalid plan file"], diags
    assert str(path) in diags[0].detail


# -- end to end through the CLI --------------------------------------------------------------

STACK = """\
from tectum.host import Directory, File

www = Directory("www", path="{out}/www")
index = File("index", path=f"{{www.path}}/index.html", content="hello\\n")
"""


@pytest.fixture
def cli_project(tmp_path: Path, tectum: Callable[..., Any]) -> Path:
    """A project whose state database holds one valid version; crash logs go to tmp_path."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "stack.py").write_text(STACK.format(out=tmp_path / "out"))
    backend = SQLiteBackend(str(root / ".tectum" / "state.db"))
    try:
        backend.write(State.from_json(valid_state_doc()), "apply")
    finally:
        backend.close()
    return root


def run_cli(tectum: Callable[..., Any], root: Path, *args: str) -> Any:
    return tectum(*args, cwd=root, env={"TMPDIR": str(root.parent)})


def expect_diagnostic(result: Any, summary: str) -> None:
    out = result.output
    assert result.returncode == 1, f"exit code {result.returncode}, want 1:\n{out}"
    assert "Traceback" not in out, out
    assert "Internal error" not in out, out
    assert f"Error: {summary}" in out, out


@pytest.mark.parametrize("name, data", [
    ("bytes", b"\x00\xff\xfe garbage \x80"),
    ("json", b'{"tectum_plan": 1, "payload": {}, "checksum": "00"}'),
    ("checksummed", dumps(with_checksum({"plan": {"resource_changes": [{"action": "create"}],
                                                  "serial": 0}, "project": "."}))),
    ("infinite serial", dumps(with_checksum({"plan": {"resource_changes": [],
                                                      "serial": float("inf")},
                                             "project": "."}))),
    ("deep", b"[" * DEEP + b"]" * DEEP),
], ids=["bytes", "json", "checksummed", "infinite serial", "deep"])
@pytest.mark.parametrize("command", ["apply", "show"])
def test_cli_garbage_plan_file(cli_project: Path, tectum: Callable[..., Any], command: str,
                               name: str, data: bytes) -> None:
    plan = cli_project.parent / f"{name}.plan"
    plan.write_bytes(data)
    args = [command, str(plan)] + (["--auto-approve"] if command == "apply" else [])
    expect_diagnostic(run_cli(tectum, cli_project, *args), "Invalid plan file")


@pytest.fixture(scope="module")
def cli_plan_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A plan file made by `tectum plan -out` for a project with nothing applied."""
    from tests.conftest import run_tectum

    tmp = tmp_path_factory.mktemp("cli-plan")
    root = tmp / "proj"
    root.mkdir()
    (root / "stack.py").write_text(STACK.format(out=tmp / "out"))
    result = run_tectum("plan", "-out", str(tmp / "made.plan"), cwd=root,
                        env={"TMPDIR": str(tmp)})
    assert result.returncode == 0, result.output
    doc: dict[str, Any] = json.loads((tmp / "made.plan").read_bytes())
    return doc


@FUZZ_CLI
@given(data=st.data())
def test_cli_show_mutated_plan_with_checksum(tmp_path_factory: pytest.TempPathFactory,
                                             cli_plan_doc: dict[str, Any],
                                             data: st.DataObject) -> None:
    """`tectum show PLANFILE` on a re-checksummed, damaged plan: shown, or a diagnostic."""
    from tests.conftest import run_tectum

    payload = data.draw(mutations_of(lambda: copy.deepcopy(cli_plan_doc["payload"])),
                        label="payload")
    verdict = plan_verdict(payload)
    tmp = tmp_path_factory.mktemp("show")
    plan = tmp / "mutated.plan"
    plan.write_bytes(dumps(with_checksum(payload)))
    result = run_tectum("show", str(plan), cwd=tmp, env={"TMPDIR": str(tmp)})
    out = result.output
    assert result.returncode in (0, 1), out
    assert "Traceback" not in out, out
    assert "Internal error" not in out, out
    if result.returncode == 1:
        assert "Error: Invalid plan file" in out, out
        assert verdict != ACCEPT, f"a valid plan was refused:\n{out}"
    else:
        assert verdict != REJECT, f"an invalid plan was shown:\n{out}"


@pytest.mark.parametrize("field, value", [
    ("after", [1, 2]), ("drift", [1]), ("note", 7), ("address", None), ("triggers", "abc"),
], ids=["after list", "drift ints", "note int", "address null", "triggers string"])
@pytest.mark.parametrize("command", ["show", "apply"])
def test_cli_checksummed_plan_with_wrong_types(tmp_path: Path, tectum: Callable[..., Any],
                                               cli_plan_doc: dict[str, Any], command: str,
                                               field: str, value: Any) -> None:
    """A plan file with a valid checksum whose resource change has a field of the wrong type
    is refused as "Invalid plan file" before anything renders or applies it."""
    payload = copy.deepcopy(cli_plan_doc["payload"])
    payload["plan"]["resource_changes"][0][field] = value
    plan = tmp_path / "typed.plan"
    plan.write_bytes(dumps(with_checksum(payload)))
    args = [command, str(plan)] + (["--auto-approve"] if command == "apply" else [])
    result = tectum(*args, cwd=tmp_path, env={"TMPDIR": str(tmp_path)})
    expect_diagnostic(result, "Invalid plan file")


#: "{serial}" stands for the serial of the one version in a `cli_project`
STATE_COMMANDS = [("state", "list"), ("show",), ("output",), ("plan",), ("state", "pull"),
                  ("state", "show", "--version", "{serial}"),
                  ("state", "diff", "{serial}", "{serial}")]


def latest_serial(root: Path) -> str:
    with closing(sqlite3.connect(root / ".tectum" / "state.db")) as db:
        (serial,) = db.execute("SELECT MAX(serial) FROM states").fetchone()
    return str(serial)


@pytest.mark.parametrize("document", [
    b"not json",
    b"\xff\xfe\x80 not UTF-8",
    dumps([1, 2, 3]),
    dumps({**valid_state_doc(), "serial": -1}),
    b"[" * DEEP + b"]" * DEEP,
], ids=["not json", "not utf-8", "list", "negative serial", "deep"])
@pytest.mark.parametrize("command", STATE_COMMANDS, ids=" ".join)
def test_cli_corrupt_state_document(cli_project: Path, tectum: Callable[..., Any],
                                    command: tuple[str, ...], document: bytes) -> None:
    serial = latest_serial(cli_project)
    store_document(cli_project / ".tectum" / "state.db", document, "text")
    args = [arg.replace("{serial}", serial) for arg in command]
    expect_diagnostic(run_cli(tectum, cli_project, *args), "Unreadable state")


@pytest.mark.parametrize("document", [
    b"",
    dumps({**valid_state_doc(), "resources": valid_state_doc()["resources"] * 2}),
    dumps({**valid_state_doc(), "format_version": 99}),
    dumps({**valid_state_doc(), "outputs": {"url": "http://localhost/"}}),
], ids=["empty", "duplicates", "newer format", "output not an object"])
def test_cli_state_list_corrupt_state_document(cli_project: Path, tectum: Callable[..., Any],
                                               document: bytes) -> None:
    store_document(cli_project / ".tectum" / "state.db", document, "blob")
    expect_diagnostic(run_cli(tectum, cli_project, "state", "list"), "Unreadable state")


@pytest.mark.parametrize("action, record", [
    ("intent", "null"), ("intent", "{}"), ("create", "[1]"), ("outputs", "[]"),
], ids=["intent null", "intent without fields", "record not an object", "outputs list"])
def test_cli_plan_damaged_journal(cli_project: Path, tectum: Callable[..., Any], action: str,
                                  record: str) -> None:
    insert_journal_row(cli_project / ".tectum" / "state.db", action, record)
    expect_diagnostic(run_cli(tectum, cli_project, "plan"), "Unreadable state")


@pytest.mark.parametrize("data", [
    b"\x00\xff garbage",
    b"[" * DEEP + b"]" * DEEP,
    dumps([valid_state_doc()]),
    dumps({**valid_state_doc(), "lineage": ""}),
    dumps({**valid_state_doc(), "serial": 10**4000}).replace(b"1" + b"0" * 4000,
                                                             b"1" + b"0" * 5000),
], ids=["bytes", "deep", "list", "empty lineage", "5000-digit serial"])
def test_cli_state_push_garbage_file(cli_project: Path, tectum: Callable[..., Any],
                                     data: bytes) -> None:
    pushed = cli_project.parent / "pushed.json"
    pushed.write_bytes(data)
    result = run_cli(tectum, cli_project, "state", "push", str(pushed))
    expect_diagnostic(result, "Invalid state file")
    assert run_cli(tectum, cli_project, "state", "list").stdout.split() == [
        "directory.www", "file.index"]


@pytest.mark.parametrize("command", [("state", "list"), ("show",), ("output",)], ids=" ".join)
def test_cli_state_db_not_a_database(cli_project: Path, tectum: Callable[..., Any],
                                     command: tuple[str, ...]) -> None:
    (cli_project / ".tectum" / "state.db").write_bytes(b"\x00garbage" * 512)
    expect_diagnostic(run_cli(tectum, cli_project, *command), "Unreadable state")


@pytest.mark.parametrize("document", [
    dumps({**valid_state_doc(), "outputs": {"url": {}}}),
    dumps({**valid_state_doc(), "outputs": {"url": {"sensitive": "yes"}}}),
], ids=["output without value", "output without value, sensitive string"])
def test_cli_output_with_malformed_output_entry(cli_project: Path, tectum: Callable[..., Any],
                                                document: bytes) -> None:
    """An output entry without a "value" is a damaged state: every command says so."""
    assert state_verdict(json.loads(document)) == REJECT
    store_document(cli_project / ".tectum" / "state.db", document, "text")
    for args in (("output",), ("output", "url"), ("output", "--json"), ("show",)):
        expect_diagnostic(run_cli(tectum, cli_project, *args), "Unreadable state")


def test_cli_state_with_surrogate_address(cli_project: Path, tectum: Callable[..., Any]) -> None:
    """JSON may escape a lone surrogate ("\\ud800"); printing it must not crash the CLI."""
    doc = valid_state_doc()
    doc["resources"][0]["address"] = "directory.\ud800"
    store_document(cli_project / ".tectum" / "state.db", dumps(doc), "text")
    for args in (("state", "list"), ("show",)):
        result = run_cli(tectum, cli_project, *args)
        assert "Traceback" not in result.output, result.output
        assert "Internal error" not in result.output, (args, result.output)
        assert result.returncode in (0, 1), result.output


def test_cli_lists_a_valid_state(cli_project: Path, tectum: Callable[..., Any]) -> None:
    """Sanity check of the harness: a valid state is listed, exit 0, no crash log written."""
    result = run_cli(tectum, cli_project, "state", "list")
    assert result.returncode == 0, result.output
    assert result.stdout.split() == ["directory.www", "file.index"]
    assert not list(cli_project.parent.glob("tectum-crash-*"))
    assert os.path.isdir(cli_project / ".tectum")
