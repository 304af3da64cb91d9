"""``package`` (apt) against the real package database of this machine, as root.

Each test drives :class:`PackageType` the way the engine does: read → plan → ResourceChange →
apply / apply_batch, and checks the host with ``dpkg-query`` and the commands in ``conn.log``.
Tests that run apt-get are marked ``slow``; each one puts the test packages back the way it found
them (purges what it installed, reinstalls what it removed).
"""

from __future__ import annotations

import glob
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError
from tectum.providers.host.apt import PackageType
from tectum.providers.host.connector import LocalConnector

# Tiny packages from Debian main with no daemons and few dependencies.
SMALL_PACKAGES = ("sl", "tree", "pv", "hello", "figlet")
NO_SUCH_PACKAGE = "tectum-no-such-package"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="apt needs root")
apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}


# -- helpers -------------------------------------------------------------------------------
def installed_version(name: str) -> str | None:
    """The installed version of ``name`` per dpkg, or None."""
    res = subprocess.run(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\\t${Version}", name],
        capture_output=True, text=True, check=False,
    )
    status, _, version = res.stdout.partition("\t")
    return version if res.returncode == 0 and status[1:2] == "i" else None


def candidate_version(name: str) -> str | None:
    """apt's candidate version of ``name`` (``apt-cache policy``), or None."""
    res = subprocess.run(["apt-cache", "policy", name], capture_output=True, text=True,
                         check=False, env=apt_env)
    for line in res.stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "Candidate":
            return None if value == "(none)" else value
    return None


def apt(*args: str) -> None:
    subprocess.run(["apt-get", *args, "-y", "-q"], check=True, capture_output=True, env=apt_env)


def change_for(address: str, action: Action, before: dict[str, Any] | None,
               after: dict[str, Any] | None, changes: list[AttrChange]) -> ResourceChange:
    return ResourceChange(address=address, type="package", action=action, before=before,
                          after=after, changes=changes)


def plan_change(rt: PackageType, conn: LocalConnector, desired: dict[str, Any],
                address: str = "host.local.package.p") -> ResourceChange:
    """read → plan → ResourceChange, as the engine does."""
    desired = rt.prepare(desired, ".")
    observed = rt.read_objects(conn, [desired])[0]
    action, changes = rt.plan(desired, observed, None)
    return change_for(address, action, observed, desired, changes)


def mutations(conn: LocalConnector) -> list[dict[str, object]]:
    return [e for e in conn.log if e["mutating"]]


def apt_commands(conn: LocalConnector, verb: str) -> list[dict[str, object]]:
    out = []
    for entry in conn.log:
        argv = entry.get("argv")
        if isinstance(argv, list) and argv[:2] == ["apt-get", verb]:
            out.append(entry)
    return out


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def apt_lists() -> None:
    """Package lists exist (``apt-get update`` only when there are none at all)."""
    if os.geteuid() != 0:
        pytest.skip("apt needs root")
    if not glob.glob("/var/lib/apt/lists/*Packages*"):
        apt("update")


@pytest.fixture(scope="module")
def small(apt_lists: None) -> list[str]:
    """Two or more small installable packages, those not installed yet first."""
    available = [p for p in SMALL_PACKAGES if candidate_version(p)]
    available.sort(key=lambda p: installed_version(p) is not None)
    if len(available) < 2:
        pytest.skip(f"fewer than two of {SMALL_PACKAGES} are available from apt")
    return available


@pytest.fixture
def restore(small: list[str]) -> Iterator[list[str]]:
    """Yields the test packages; afterwards purges those the test installed and reinstalls
    those it removed."""
    before = {p: installed_version(p) for p in small}
    yield small
    added = [p for p in small if before[p] is None and installed_version(p) is not None]
    removed = [p for p, v in before.items() if v is not None and installed_version(p) is None]
    if added:
        apt("purge", *added)
    if removed:
        apt("install", *removed)


@pytest.fixture
def rt() -> PackageType:
    return PackageType()


# -- schema and plan (no apt) --------------------------------------------------------------
@pytest.mark.parametrize("name", ["tree", "libc6", "g++", "python3.11", "libstdc++6", "0ad"])
def test_valid_names(name: str) -> None:
    assert PackageType.schema.attrs["name"].check(name) is None


@pytest.mark.parametrize("name", ["-rf", "Tree", "a", "tree;ls", "tree name", "", "tree=1.0",
                                  "tree/bookworm", "tree:amd64", "--purge", "über"])
def test_invalid_names(name: str) -> None:
    assert PackageType.schema.attrs["name"].check(name) is not None


@pytest.mark.parametrize("version", ["2.1.0-1", "1:9.2p1-2+deb12u1", "1.0~rc1", "5.02-1+b1"])
def test_valid_versions(version: str) -> None:
    assert PackageType.schema.attrs["version"].check(version) is None


@pytest.mark.parametrize("version", ["-1", "1.0 ", "1.0;rm", "1.0*", "", "1/2"])
def test_invalid_versions(version: str) -> None:
    assert PackageType.schema.attrs["version"].check(version) is not None


def test_schema_flags_and_defaults(rt: PackageType) -> None:
    name = rt.schema.attrs["name"]
    assert name.required and name.identity and name.force_new
    assert rt.schema.attrs["ensure"].check("latest") is not None
    assert rt.prepare({"name": "tree"}, ".") == {"name": "tree", "ensure": "present"}
    assert rt.batches is True
    assert rt.check({"name": "tree", "ensure": "absent", "version": "1"})
    assert rt.check({"name": "tree", "version": "1"}) == []


def test_plan_decisions(rt: PackageType) -> None:
    absent = {"name": "tree", "ensure": "absent", "version": None}
    present = {"name": "tree", "ensure": "present", "version": "2.1.0-1"}
    want = {"name": "tree", "ensure": "present"}
    assert rt.plan(want, absent, None) == (
        Action.CREATE, [AttrChange("ensure", "absent", "present")])
    assert rt.plan({**want, "version": "2.1.0-1"}, absent, None) == (
        Action.CREATE,
        [AttrChange("ensure", "absent", "present"), AttrChange("version", None, "2.1.0-1")])
    assert rt.plan(want, present, None) == (Action.NOOP, [])
    assert rt.plan({**want, "version": "2.1.0-1"}, present, None) == (Action.NOOP, [])
    assert rt.plan({**want, "version": "2.0-1"}, present, None) == (
        Action.UPDATE, [AttrChange("version", "2.1.0-1", "2.0-1")])
    assert rt.plan({"name": "tree", "ensure": "absent"}, present, None) == (
        Action.UPDATE, [AttrChange("ensure", "present", "absent")])
    assert rt.plan({"name": "tree", "ensure": "absent"}, absent, None) == (Action.NOOP, [])
    assert rt.plan(want, None, None)[0] is Action.CREATE


# -- read (dpkg-query, no apt-get) ---------------------------------------------------------
def test_read_is_one_dpkg_query(rt: PackageType) -> None:
    conn = LocalConnector()
    got = rt.read_objects(conn, [{"name": "dpkg"}, {"name": NO_SUCH_PACKAGE}, {"name": "bash"}])
    assert got[0] == {"name": "dpkg", "ensure": "present", "version": installed_version("dpkg")}
    assert got[1] == {"name": NO_SUCH_PACKAGE, "ensure": "absent", "version": None}
    assert got[2] is not None and got[2]["ensure"] == "present"
    assert len(conn.log) == 1
    assert conn.log[0]["mutating"] is False
    argv = conn.log[0]["argv"]
    assert isinstance(argv, list) and argv[0] == "dpkg-query"
    assert rt.read_objects(conn, []) == []


# -- apply (apt-get) -----------------------------------------------------------------------
@pytest.mark.apt
@needs_root
def test_create_then_noop(rt: PackageType, restore: list[str]) -> None:
    pkg = restore[0]
    if installed_version(pkg) is not None:
        apt("remove", pkg)
    conn = LocalConnector()
    change = plan_change(rt, conn, {"name": pkg})
    assert change.action is Action.CREATE
    stored = rt.apply(conn, change)
    assert stored == {"name": pkg, "ensure": "present", "version": installed_version(pkg)}
    assert stored["version"] == candidate_version(pkg)
    assert len(apt_commands(conn, "install")) == 1
    cmd = apt_commands(conn, "install")[0]["argv"]
    assert isinstance(cmd, list) and "--allow-downgrades" in cmd and cmd[-1] == pkg

    again = LocalConnector()
    change = plan_change(rt, again, {"name": pkg})
    assert change.action is Action.NOOP and change.changes == []
    assert mutations(again) == []


@pytest.mark.apt
@needs_root
def test_update_ensure_absent(rt: PackageType, restore: list[str]) -> None:
    pkg = restore[0]
    if installed_version(pkg) is None:
        apt("install", pkg)
    conn = LocalConnector()
    change = plan_change(rt, conn, {"name": pkg, "ensure": "absent"})
    assert change.action is Action.UPDATE
    assert change.changes == [AttrChange("ensure", "present", "absent")]
    stored = rt.apply(conn, change)
    assert stored == {"name": pkg, "ensure": "absent", "version": None}
    assert installed_version(pkg) is None
    assert len(apt_commands(conn, "remove")) == 1
    assert apt_commands(conn, "install") == []

    again = LocalConnector()
    assert plan_change(rt, again, {"name": pkg, "ensure": "absent"}).action is Action.NOOP
    assert mutations(again) == []


@pytest.mark.apt
@needs_root
def test_pinned_version(rt: PackageType, restore: list[str]) -> None:
    pkg = restore[0]
    if installed_version(pkg) is not None:
        apt("remove", pkg)
    version = candidate_version(pkg)
    assert version
    conn = LocalConnector()
    change = plan_change(rt, conn, {"name": pkg, "version": version})
    assert change.action is Action.CREATE
    assert AttrChange("version", None, version) in change.changes
    stored = rt.apply(conn, change)
    assert stored == {"name": pkg, "ensure": "present", "version": version}
    cmd = apt_commands(conn, "install")[0]["argv"]
    assert isinstance(cmd, list) and cmd[-1] == f"{pkg}={version}"

    again = LocalConnector()
    assert plan_change(rt, again, {"name": pkg, "version": version}).action is Action.NOOP
    assert mutations(again) == []

    # a pin apt cannot satisfy: an UPDATE that fails with apt's own message, nothing changed
    bogus = "0.0.0-tectum1"
    change = plan_change(rt, conn, {"name": pkg, "version": bogus})
    assert change.action is Action.UPDATE
    assert change.changes == [AttrChange("version", version, bogus)]
    with pytest.raises(ApplyError, match="was not found"):
        rt.apply(conn, change)
    assert installed_version(pkg) == version


@pytest.mark.apt
@needs_root
def test_delete_removes(rt: PackageType, restore: list[str]) -> None:
    pkg = restore[0]
    if installed_version(pkg) is None:
        apt("install", pkg)
    conn = LocalConnector()
    observed = rt.read_objects(conn, [{"name": pkg}])[0]
    change = change_for("host.local.package.p", Action.DELETE, observed, None, [])
    assert rt.apply(conn, change) is None
    assert installed_version(pkg) is None
    # deleting what is already gone runs no apt-get
    gone = rt.read_objects(conn, [{"name": pkg}])[0]
    conn2 = LocalConnector()
    assert rt.apply(conn2, change_for("host.local.package.p", Action.DELETE, gone, None,
                                      [])) is None
    assert mutations(conn2) == []


@pytest.mark.apt
@needs_root
def test_batch_is_one_install_and_one_remove(rt: PackageType, restore: list[str]) -> None:
    pkgs = restore[:2]
    present = [p for p in pkgs if installed_version(p) is not None]
    if present:
        apt("remove", *present)
    conn = LocalConnector()
    desired = [rt.prepare({"name": p}, ".") for p in pkgs]
    observed = rt.read_objects(conn, desired)
    assert len(conn.log) == 1  # one dpkg-query for both
    changes = []
    for want, have in zip(desired, observed, strict=True):
        action, attr_changes = rt.plan(want, have, None)
        assert action is Action.CREATE
        changes.append(change_for(f"host.local.package.{want['name']}", action, have, want,
                                  attr_changes))
    results = rt.apply_batch(conn, changes)
    assert results == [{"name": p, "ensure": "present", "version": installed_version(p)}
                       for p in pkgs]
    installs = apt_commands(conn, "install")
    assert len(installs) == 1
    argv = installs[0]["argv"]
    assert isinstance(argv, list) and argv[-2:] == pkgs
    assert installs[0]["mutating"] is True

    # and both go with one apt-get remove
    conn = LocalConnector()
    gone = [rt.prepare({"name": p, "ensure": "absent"}, ".") for p in pkgs]
    observed = rt.read_objects(conn, gone)
    changes = []
    for want, have in zip(gone, observed, strict=True):
        action, attr_changes = rt.plan(want, have, None)
        assert action is Action.UPDATE
        changes.append(change_for(f"host.local.package.{want['name']}", action, have, want,
                                  attr_changes))
    results = rt.apply_batch(conn, changes)
    assert results == [{"name": p, "ensure": "absent", "version": None} for p in pkgs]
    assert len(apt_commands(conn, "remove")) == 1
    assert apt_commands(conn, "install") == []
    assert all(installed_version(p) is None for p in pkgs)


@pytest.mark.apt
@needs_root
def test_batch_failure_is_reported_per_change(rt: PackageType, restore: list[str]) -> None:
    pkg = restore[0]
    if installed_version(pkg) is not None:
        apt("remove", pkg)
    conn = LocalConnector()
    desired = [rt.prepare({"name": n}, ".") for n in (pkg, NO_SUCH_PACKAGE)]
    observed = rt.read_objects(conn, desired)
    changes = [
        change_for(f"host.local.package.p{i}", *_plan(rt, want, have))
        for i, (want, have) in enumerate(zip(desired, observed, strict=True))
    ]
    results = rt.apply_batch(conn, changes)
    assert all(isinstance(r, ApplyError) for r in results)
    assert all(f"Unable to locate package {NO_SUCH_PACKAGE}" in str(r) for r in results)
    # stale lists are suspected once: one apt-get update, then one retry
    assert len(apt_commands(conn, "update")) == 1
    assert len(apt_commands(conn, "install")) == 2
    assert installed_version(pkg) is None
    with pytest.raises(ApplyError):
        rt.apply(conn, changes[1])


def _plan(rt: PackageType, want: dict[str, Any], have: dict[str, Any] | None
          ) -> tuple[Action, dict[str, Any] | None, dict[str, Any], list[AttrChange]]:
    action, changes = rt.plan(want, have, None)
    return action, have, want, changes
