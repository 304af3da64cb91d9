"""Every registered resource type passes the conformance suite of :mod:`tectum.testing`.

One :class:`~tectum.testing.Case` per type — built-in host types on this machine (files under
``tmp_path``; real accounts, a real apt package and a throw-away System V service, each with a
unique name and removed afterwards), ``random_password``, and the :class:`MockProvider`'s
``mock_key`` — run through :func:`~tectum.testing.check_resource_type` (the type's hooks, as
the engine calls them) and :func:`~tectum.testing.check_engine` (planner and applier). A type
that is registered but has no case here fails :func:`test_every_registered_type_has_a_case`.
Also here: the mock provider's own behaviour and :func:`~tectum.testing.registered`.
"""

from __future__ import annotations

import glob
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ProviderError, ReadItem
from tectum.providers.registry import registry
from tectum.testing import (
    STEPS,
    Case,
    ConformanceError,
    MockKeyType,
    MockProvider,
    ResourceTypeSuite,
    check_engine,
    check_resource_type,
    mock_store,
    registered,
    reset_mock_stores,
)
from tests.providers.cases import collect
from tests.providers.host.test_package import (
    SMALL_PACKAGES,
    apt,
    candidate_version,
    installed_version,
)
from tests.providers.host.test_service import INIT_SCRIPT, PYTHON, free_port

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
no_systemd = pytest.mark.skipif(
    os.path.isdir("/run/systemd/system"),
    reason="the service case drives a System V init script; systemd is running")


@pytest.fixture
def mock() -> Iterator[None]:
    """The mock provider registered (no entry point) with fresh, empty stores."""
    reset_mock_stores()
    with registered(MockProvider):
        yield
    reset_mock_stores()


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)


# -- one case per type ---------------------------------------------------------------------------
# Each builder is a context manager: it yields the case and removes afterwards whatever the
# case may have left (the suite deletes what it made; a failing run may leave it).

@contextmanager
def file_case(tmp: Path) -> Iterator[Case]:
    path = str(tmp / "conf.txt")
    yield Case("file", {"path": path, "content": "one\n", "mode": "0640"},
               update={"content": "two\n", "mode": "0600"},
               tamper=lambda _t, _r: os.chmod(path, 0o644), drift="mode",
               import_id=path, root=str(tmp))


@contextmanager
def directory_case(tmp: Path) -> Iterator[Case]:
    path = str(tmp / "made" / "www")  # its parent is made too (mkdir -p)
    yield Case("directory", {"path": path, "mode": "0750"}, update={"mode": "0700"},
               tamper=lambda _t, _r: os.chmod(path, 0o755), drift="mode",
               import_id=path, root=str(tmp))


@contextmanager
def symlink_case(tmp: Path) -> Iterator[Case]:
    path = str(tmp / "current")

    def tamper(_target: Any, _record: dict[str, Any]) -> None:
        os.unlink(path)
        os.symlink(str(tmp / "elsewhere"), path)

    yield Case("symlink", {"path": path, "target": str(tmp / "v1")},
               update={"target": str(tmp / "v2")}, tamper=tamper, drift="target",
               import_id=path, root=str(tmp))


def _free_id(db: str) -> int:
    """An id unused in ``db`` (passwd or group), from a random point of a high range."""
    n = 62000 + secrets.randbelow(3000)
    while sh("getent", db, str(n)).returncode == 0:
        n += 1
    return n


def _remove_account(kind: str, name: str, number: int | None) -> None:
    """Remove the account ``name`` — or, when it was renamed, the one holding ``number``."""
    db = "passwd" if kind == "user" else "group"
    found = sh("getent", db, name)
    if found.returncode != 0 and number is not None:
        found = sh("getent", db, str(number))
    if found.returncode != 0:
        return
    real = found.stdout.split(":", 1)[0]
    if kind == "user":
        sh("userdel", "-r", "--", real)
        sh("groupdel", "--", real)  # the private group useradd made, if userdel left it
    else:
        sh("groupdel", "--", real)


@contextmanager
def user_case(tmp: Path) -> Iterator[Case]:
    name = f"tectumc_{secrets.token_hex(3)}"
    uid = _free_id("passwd")
    try:
        yield Case("user", {"name": name, "uid": uid, "shell": "/bin/sh",
                            "comment": "tectum conformance", "remove_home": True},
                   update={"shell": "/bin/bash"},
                   tamper=lambda _t, _r: _check(sh("usermod", "-c", "changed by hand", name)),
                   drift="comment", import_id=name, root=str(tmp))
    finally:
        _remove_account("user", name, uid)


@contextmanager
def group_case(tmp: Path) -> Iterator[Case]:
    name = f"tectumc_{secrets.token_hex(3)}"
    gid, later, by_hand = _free_id("group"), _free_id("group"), _free_id("group")
    try:
        yield Case("group", {"name": name, "gid": gid}, update={"gid": later},
                   tamper=lambda _t, _r: _check(sh("groupmod", "-g", str(by_hand), name)),
                   drift="gid", import_id=name, root=str(tmp))
    finally:
        _remove_account("group", name, gid)


def _check(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"{proc.args}: {proc.stderr}"


@contextmanager
def package_case(tmp: Path) -> Iterator[Case]:
    if not glob.glob("/var/lib/apt/lists/*Packages*"):
        apt("update")
    missing = [p for p in SMALL_PACKAGES
               if installed_version(p) is None and candidate_version(p)]
    if not missing:
        pytest.skip(f"none of {SMALL_PACKAGES} is both available and not installed")
    name = missing[0]
    try:
        yield Case("package", {"name": name},
                   tamper=lambda _t, _r: apt("remove", name), drift="ensure",
                   import_id=name, root=str(tmp),
                   skip={"update": "a package has no attribute to change in place: ensure="
                                   "absent removes it (the delete step), and a version pin "
                                   "needs two installable versions"})
    finally:
        if installed_version(name) is not None:
            apt("purge", name)


@contextmanager
def service_case(tmp: Path) -> Iterator[Case]:
    name = f"tectum-conf-{secrets.token_hex(4)}"
    script, pidfile = f"/etc/init.d/{name}", f"/run/{name}.pid"
    docroot = tmp / "www"
    docroot.mkdir()
    Path(script).write_text(INIT_SCRIPT.format(
        name=name, pidfile=pidfile, python=PYTHON, port=free_port(), docroot=docroot,
        marker=tmp / "reloads"), encoding="ascii")
    os.chmod(script, 0o755)

    def gone(observed: dict[str, Any] | None) -> bool:
        # the init script stays: "gone" is what a delete undoes (stopped, not enabled)
        return observed is None or (observed["running"] is False
                                    and observed["enabled"] is False)

    try:
        yield Case("service", {"name": name, "running": True},
                   create_action=Action.UPDATE,  # it exists, stopped: tectum starts it
                   update={"enabled": True},
                   tamper=lambda _t, _r: _check(sh("service", name, "stop")), drift="running",
                   import_id=name, gone=gone, root=str(tmp))
    finally:
        sh("start-stop-daemon", "--stop", "--quiet", "--oknodo", "--retry", "TERM/5/KILL/5",
           "--pidfile", pidfile, "--exec", PYTHON)
        sh("update-rc.d", "-f", name, "remove")
        for path in (script, pidfile, *glob.glob(f"/etc/rc?.d/[SK][0-9][0-9]{name}")):
            if os.path.lexists(path):
                os.unlink(path)


@contextmanager
def command_case(tmp: Path) -> Iterator[Case]:
    first, second = str(tmp / "first"), str(tmp / "second")
    yield Case("command", {"command": ["touch", first], "creates": first},
               update={"command": ["touch", second], "creates": second},
               tamper=lambda _t, _r: os.unlink(second), drift="run", root=str(tmp),
               # what a command makes is what its guard looks for
               gone=lambda observed: observed is None or observed.get("_guard") is not True,
               skip={"import": "a command is not an object in the world: nothing to import",
                     "journal": "a command has no identity to look for after a crash: an "
                                "interrupted one is forgotten and its guard decides"})


@contextmanager
def password_case(tmp: Path) -> Iterator[Case]:
    state_only = "a password lives in state alone"
    yield Case("random_password", {"length": 16}, update={"length": 20},
               update_action=Action.REPLACE, root=str(tmp),
               skip={"drift": f"{state_only}: nothing outside tectum can change it",
                     "import": f"{state_only}: there is nothing outside state to import",
                     "journal": f"{state_only}: a run killed before recording it made "
                                "nothing to find",
                     "gone": f"{state_only}: its read reports the record, whatever it is"})


@contextmanager
def mock_case(tmp: Path) -> Iterator[Case]:
    def tamper(store: Any, record: dict[str, Any]) -> None:
        store.objects[record["id"]]["value"] = "changed by hand"

    yield Case("mock_key", {"name": f"key-{secrets.token_hex(3)}", "value": "one"},
               update={"value": "two"}, tamper=tamper, drift="value",
               import_id=lambda record: str(record["id"]), root=str(tmp))


BUILDERS: dict[str, Callable[[Path], AbstractContextManager[Case]]] = {
    "file": file_case,
    "directory": directory_case,
    "symlink": symlink_case,
    "user": user_case,
    "group": group_case,
    "package": package_case,
    "service": service_case,
    "command": command_case,
    "random_password": password_case,
    "mock_key": mock_case,
}

#: what each case needs of this machine (README's markers)
MARKS: dict[str, list[pytest.MarkDecorator]] = {
    "user": [pytest.mark.system, needs_root],
    "group": [pytest.mark.system, needs_root],
    "package": [pytest.mark.apt, needs_root],
    "service": [pytest.mark.system, needs_root, no_systemd],
}

_MORE_BUILDERS, _MORE_MARKS = collect()
assert not set(_MORE_BUILDERS) & set(BUILDERS), "a type with two conformance cases"
BUILDERS.update(_MORE_BUILDERS)
MARKS.update(_MORE_MARKS)

PARAMS = [pytest.param(name, marks=MARKS.get(name, []), id=name) for name in BUILDERS]


def test_every_registered_type_has_a_case(mock: None) -> None:
    names = registry.names()
    assert "mock_key" in names and "file" in names
    missing = sorted(set(names) - set(BUILDERS))
    assert not missing, f"registered types without a conformance case: {missing}"
    stale = sorted(set(BUILDERS) - set(names))
    assert not stale, f"conformance cases for types no provider offers: {stale}"


class TestBuiltinTypes(ResourceTypeSuite):
    """Every case through the type's hooks and through the engine."""

    @pytest.fixture(params=PARAMS)
    def case(self, request: pytest.FixtureRequest, tmp_path: Path, mock: None
             ) -> Iterator[Case]:
        with BUILDERS[request.param](tmp_path) as made:
            yield made


@pytest.mark.parametrize("type_name", ["file", "directory", "symlink", "mock_key"])
def test_every_step_runs_for_a_fully_observable_type(type_name: str, tmp_path: Path,
                                                      mock: None) -> None:
    """Types whose objects are wholly observable skip no step; the report lists them."""
    with BUILDERS[type_name](tmp_path) as case:
        report = check_resource_type(case)
    assert report.done == list(STEPS) and report.skipped == {}


def test_skipped_steps_are_reported_with_their_reasons(tmp_path: Path) -> None:
    with command_case(tmp_path) as case:
        report = check_resource_type(case)
    assert report.done == ["create", "noop", "update", "drift"]
    assert set(report.skipped) == {"import", "journal", "delete", "gone"}
    assert "not deletable" in report.skipped["delete"]


# -- the suite itself ----------------------------------------------------------------------------

def test_a_case_must_say_why_it_leaves_a_step_out() -> None:
    with pytest.raises(ValueError, match="give tamper, or skip 'drift'"):
        Case("file", {"path": "/x"}, update={}, import_id="/x")
    with pytest.raises(ValueError, match="needs a reason"):
        Case("file", {"path": "/x"}, update={}, import_id="/x", skip={"drift": " "})
    with pytest.raises(ValueError, match="unknown step"):
        Case("file", {"path": "/x"}, update={}, import_id="/x",
             skip={"drift": "why", "teleport": "why"})


def test_the_suite_catches_a_type_whose_read_misses_drift(tmp_path: Path, mock: None) -> None:
    """A broken type fails the suite at the step it breaks, naming it."""

    class Blind(MockKeyType):
        def read(self, target: Any, items: Any) -> list[dict[str, Any] | None]:
            found = super().read(target, items)
            # reports the value state holds, not the one the store has
            return [None if f is None else {**f, "value": (i.prior or {}).get(
                "value", f["value"])} for i, f in zip(items, found, strict=True)]

    with mock_case(tmp_path) as case:
        registry._types["mock_key"] = Blind()
        with pytest.raises(ConformanceError, match=r"mock_key \[mock_key\], step drift: a "
                                                   r"change made by hand is not seen"):
            check_resource_type(case)
        reset_mock_stores()  # the failed run left its key behind
        with pytest.raises(ConformanceError, match=r"engine, step drift: a change made by "
                                                   r"hand is planned as no-op"):
            check_engine(case)


def test_the_suite_catches_a_read_that_mutates(tmp_path: Path, mock: None) -> None:
    class Meddling(MockKeyType):
        def read(self, target: Any, items: Any) -> list[dict[str, Any] | None]:
            for found in target.list():
                target.update(found["id"], found["value"])  # "touches" every key
            return super().read(target, items)

    with mock_case(tmp_path) as case:
        registry._types["mock_key"] = Meddling()
        with pytest.raises(ConformanceError, match=r"step noop: a read made mutating calls: "
                                                   r"update\('mk-"):
            check_resource_type(case)


# -- the mock provider ---------------------------------------------------------------------------

def test_mock_store_records_calls_and_assigns_ids(mock: None) -> None:
    store = mock_store("unit")
    made = store.create("a", "1")
    assert made["id"].startswith("mk-") and made["name"] == "a"
    assert store.list() == [made]
    store.update(made["id"], "2")
    store.delete(made["id"])
    store.delete(made["id"])  # idempotent
    assert [c.method for c in store.calls] == ["create", "list", "update", "delete", "delete"]
    assert [c.method for c in store.mutations] == ["create", "update", "delete", "delete"]
    store.fail_on("create", "quota exceeded")
    with pytest.raises(Exception, match="create: quota exceeded"):
        store.create("b", "1")
    assert store.create("b", "1")["name"] == "b"  # the failure was for one call


def test_mock_read_finds_by_prior_id_then_by_name(mock: None) -> None:
    rt = registry.get("mock_key")
    assert isinstance(rt, MockKeyType)
    store = mock_store()
    made = store.create("a", "1")
    store.objects[made["id"]]["name"] = "renamed by hand"
    by_id, by_name, none = rt.read(store, [
        ReadItem({"name": "a"}, {"name": "a", "id": made["id"]}),
        ReadItem({"name": "renamed by hand"}, None),
        ReadItem({"name": "a"}, None),
    ])
    assert by_id == by_name == {"id": made["id"], "name": "renamed by hand", "value": "1"}
    assert none is None
    assert rt.journal_identity({"name": "a", "value": "1", "id": made["id"]}) == {
        "name": "a", "id": made["id"]}
    assert rt.import_item(made["id"]) == ReadItem(None, {"id": made["id"]})
    change = ResourceChange("mock_key.a", "mock_key", Action.DELETE, by_id, None,
                            prior={"name": "a", "id": made["id"]})
    assert rt.apply(store, change) is None and store.objects == {}


def test_registered_adds_and_removes_the_provider() -> None:
    assert registry.provider_of("mock_key") is None
    with registered(MockProvider):
        assert registry.provider_of("mock_key") == "mock"
        assert registry.providers()["mock"] is MockProvider
        assert isinstance(registry.get("mock_key"), MockKeyType)
        with registered(MockProvider):  # nested: a no-op
            pass
        assert registry.provider_of("mock_key") == "mock"
    assert registry.provider_of("mock_key") is None
    assert "mock" not in registry.providers() and registry.get("mock_key") is None


def test_registered_enforces_the_naming_rule() -> None:
    class Sloppy(MockProvider):
        name = "sloppy"
        resource_types = {"key": "tectum.testing.mock:MockKeyType"}

    class Clash(MockProvider):
        name = "clash"
        resource_types = {"file": "tectum.testing.mock:MockKeyType"}

    with pytest.raises(ProviderError) as info, registered(Sloppy):
        pass
    assert "starts with its provider's name (sloppy_...)" in \
        next(iter(info.value.diagnostics)).detail
    with pytest.raises(ProviderError), registered(Clash):
        pass
    assert registry.provider_of("key") is None and registry.provider_of("file") == "host"
