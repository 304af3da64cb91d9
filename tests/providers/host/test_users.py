"""``user`` and ``group`` against the real account database (runs as root, no mocks).

Every account is named ``tectumt_<hex>`` and removed in a finalizer, so the suite can run
repeatedly on the same machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError
from tectum.providers.host.base import HostType
from tectum.providers.host.connector import LocalConnector
from tectum.providers.host.users import GroupType, UserType

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(os.geteuid() != 0, reason="creates accounts: needs root")]


# -- fixtures and helpers ------------------------------------------------------------------

class Accounts:
    """Hands out unique names and removes whatever they name at teardown."""

    def __init__(self) -> None:
        self.users: list[str] = []
        self.groups: list[str] = []

    def user(self) -> str:
        name = f"tectumt_{secrets.token_hex(3)}"
        self.users.append(name)
        return name

    def group(self) -> str:
        name = f"tectumg_{secrets.token_hex(3)}"
        self.groups.append(name)
        return name

    def existing_group(self) -> str:
        name = self.group()
        subprocess.run(["groupadd", "--", name], check=True)
        return name

    def cleanup(self) -> None:
        for name in self.users:
            subprocess.run(["userdel", "-r", "--", name], capture_output=True, check=False)
            # the private group useradd made, if userdel left it
            subprocess.run(["groupdel", "--", name], capture_output=True, check=False)
            # homes a test moved away from (usermod -d does not move them) or left behind
            for home in (f"/home/{name}", f"/home/{name}-new", f"/var/lib/{name}"):
                shutil.rmtree(home, ignore_errors=True)
        for name in self.groups:
            subprocess.run(["groupdel", "--", name], capture_output=True, check=False)


@pytest.fixture
def accounts() -> Iterator[Accounts]:
    acc = Accounts()
    try:
        yield acc
    finally:
        acc.cleanup()


@pytest.fixture
def conn() -> LocalConnector:
    return LocalConnector(log_path="")


def getent(db: str, name: str) -> list[str] | None:
    proc = subprocess.run(["getent", db, name], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip().split(":")


def free_id(db: str, start: int = 61000) -> int:
    """An id unused in ``db`` (passwd or group), from a random point of a high range."""
    n = start + secrets.randbelow(3000)
    while subprocess.run(["getent", db, str(n)], capture_output=True, check=False).returncode == 0:
        n += 1
    return n


def mutations(conn: LocalConnector) -> list[dict[str, object]]:
    return [e for e in conn.log if e["mutating"]]


def tool_runs(conn: LocalConnector) -> list[tuple[object, object]]:
    """(group-if-exists, the tool's argv) of each account tool run: every run is the fixed
    ``sh`` script with the tool's arguments after it (see ``users._TOOL_SCRIPT``)."""
    out: list[tuple[object, object]] = []
    for e in mutations(conn):
        argv = e["argv"]
        assert isinstance(argv, list) and argv[:2] == ["/bin/sh", "-c"], argv
        assert argv[3] == "tectum-account", argv
        out.append((argv[4], argv[5:]))
    return out


def converge(rt: HostType, conn: LocalConnector, attrs: dict[str, Any],
             prior: dict[str, Any] | None = None
             ) -> tuple[Action, list[AttrChange], dict[str, Any] | None]:
    """Prepare, read, plan and (unless no-op) apply ``attrs``; returns what the plan decided and
    what apply stored."""
    desired = rt.prepare(attrs, "/tmp")
    observed = rt.read_objects(conn, [desired])[0]
    action, changes = rt.plan(desired, observed, prior)
    if action is Action.NOOP:
        return action, changes, prior
    change = ResourceChange(address=f"{rt.name}.x", type=rt.name, action=action,
                            before=observed, after=desired, changes=changes, prior=prior)
    return action, changes, rt.apply(conn, change)


def assert_noop(rt: HostType, attrs: dict[str, Any], prior: dict[str, Any] | None) -> None:
    fresh = LocalConnector(log_path="")
    desired = rt.prepare(attrs, "/tmp")
    observed = rt.read_objects(fresh, [desired])[0]
    assert rt.plan(desired, observed, prior) == (Action.NOOP, [])
    assert mutations(fresh) == []


def delete(rt: HostType, conn: LocalConnector, stored: dict[str, Any]) -> None:
    observed = rt.read_objects(conn, [stored])[0]
    change = ResourceChange(address=f"{rt.name}.x", type=rt.name, action=Action.DELETE,
                            before=observed, after=None, prior=stored)
    assert rt.apply(conn, change) is None


# -- user ----------------------------------------------------------------------------------

def test_user_create_then_noop(accounts: Accounts, conn: LocalConnector) -> None:
    rt = UserType()
    name, extra = accounts.user(), accounts.existing_group()
    attrs = {"name": name, "shell": "/bin/sh", "comment": "Tectum Test", "groups": [extra]}

    action, changes, stored = converge(rt, conn, attrs)

    assert action is Action.CREATE
    assert {c.name for c in changes} == {"shell", "comment", "groups"}
    entry = getent("passwd", name)
    assert entry is not None
    assert entry[4:] == ["Tectum Test", f"/home/{name}", "/bin/sh"]
    assert os.path.isdir(f"/home/{name}")  # create_home defaults to True
    assert stored is not None
    assert stored["uid"] == int(entry[2])
    assert stored["group"] == name  # USERGROUPS_ENAB: a private group
    assert stored["groups"] == [extra]
    assert stored["ensure"] == "present"
    assert stored["remove_home"] is False
    assert name in (getent("group", extra) or [""])[3].split(",")
    # one command: a group named like the user becomes its primary group if there is one (the
    # host decides), and the accounts come back in the same round trip
    assert tool_runs(conn) == [(name, [
        "useradd", "-G", extra, "-s", "/bin/sh", "-c", "Tectum Test", "-m", "--", name])]

    assert_noop(rt, attrs, stored)


def test_user_read_is_one_readonly_command(accounts: Accounts, conn: LocalConnector) -> None:
    rt = UserType()
    names = [accounts.user() for _ in range(3)]
    observed = rt.read_objects(conn, [{"name": n} for n in names] + [{"name": "root"}])
    assert observed[:3] == [{"name": n, "ensure": "absent"} for n in names]
    root = observed[3]
    assert root is not None
    assert (root["uid"], root["group"], root["home"]) == (0, "root", "/root")
    assert len(conn.log) == 1 and conn.log[0]["mutating"] is False


def test_user_update_attributes(accounts: Accounts, conn: LocalConnector) -> None:
    rt = UserType()
    name = accounts.user()
    g1, g2, g3 = (accounts.existing_group() for _ in range(3))
    _, _, stored = converge(rt, conn, {"name": name, "groups": [g1, g2], "shell": "/bin/sh"})
    uid = free_id("passwd")
    attrs = {"name": name, "shell": "/bin/bash", "home": f"/home/{name}-new",
             "comment": "changed", "groups": [g3, g2], "uid": uid, "group": g1}

    action, changes, stored = converge(rt, conn, attrs, stored)

    assert action is Action.UPDATE
    by_name = {c.name: c for c in changes}
    assert set(by_name) == {"shell", "home", "comment", "groups", "uid", "group"}
    assert by_name["groups"].before == sorted([g1, g2])
    assert by_name["groups"].after == sorted([g2, g3])
    assert by_name["shell"] == AttrChange("shell", "/bin/sh", "/bin/bash")
    entry = getent("passwd", name)
    assert entry is not None
    assert entry[2] == str(uid)
    assert entry[4:] == ["changed", f"/home/{name}-new", "/bin/bash"]
    assert stored is not None
    assert stored["groups"] == sorted([g2, g3])
    assert stored["group"] == g1
    assert stored["uid"] == uid
    # the supplementary groups are managed exactly: g1 lost the user
    assert name not in (getent("group", g1) or [""])[3].split(",")
    assert_noop(rt, attrs, stored)

    # an empty list removes every supplementary group
    action, changes, stored = converge(rt, conn, {"name": name, "groups": []}, stored)
    assert action is Action.UPDATE
    assert changes == [AttrChange("groups", sorted([g2, g3]), [])]
    assert stored is not None and stored["groups"] == []


def test_user_unset_attributes_are_not_managed(accounts: Accounts, conn: LocalConnector) -> None:
    rt = UserType()
    name = accounts.user()
    _, _, stored = converge(rt, conn, {"name": name, "shell": "/bin/sh"})
    subprocess.run(["usermod", "-c", "set by hand", "--", name], check=True)
    assert_noop(rt, {"name": name, "shell": "/bin/sh"}, stored)


def test_user_ensure_absent(accounts: Accounts, conn: LocalConnector) -> None:
    rt = UserType()
    name = accounts.user()
    _, _, stored = converge(rt, conn, {"name": name})
    assert getent("passwd", name) is not None

    action, changes, stored = converge(rt, conn, {"name": name, "ensure": "absent",
                                                  "remove_home": True}, stored)

    assert action is Action.UPDATE
    assert changes == [AttrChange("ensure", "present", "absent")]
    assert getent("passwd", name) is None
    assert not os.path.exists(f"/home/{name}")
    assert stored is not None and stored["ensure"] == "absent"
    assert_noop(rt, {"name": name, "ensure": "absent"}, stored)


def test_user_delete_removed_from_stack(accounts: Accounts, conn: LocalConnector) -> None:
    rt = UserType()
    name, kept = accounts.user(), accounts.user()
    _, _, stored = converge(rt, conn, {"name": name, "remove_home": True})
    _, _, kept_stored = converge(rt, conn, {"name": kept})
    assert stored is not None and kept_stored is not None

    delete(rt, conn, stored)  # remove_home from state: userdel -r
    delete(rt, conn, kept_stored)  # remove_home unset: the home stays

    assert getent("passwd", name) is None and getent("passwd", kept) is None
    assert not os.path.exists(f"/home/{name}")
    assert os.path.isdir(f"/home/{kept}")
    subprocess.run(["rm", "-rf", "--", f"/home/{kept}"], check=True)
    # deleting what is already gone is not an error
    delete(rt, conn, stored)


def test_user_noop_record_keeps_remove_home(accounts: Accounts, conn: LocalConnector) -> None:
    """The applier records ``stored(observed)`` for a no-op resource; a later delete must still
    know to remove the home."""
    rt = UserType()
    name = accounts.user()
    attrs = {"name": name, "remove_home": True}
    converge(rt, conn, attrs)
    observed = rt.read_objects(conn, [rt.prepare(attrs, "/tmp")])[0]
    assert observed is not None
    record = rt.stored(observed)
    assert record["remove_home"] is True
    delete(rt, conn, record)
    assert not os.path.exists(f"/home/{name}")


def test_user_system_without_home(accounts: Accounts, conn: LocalConnector) -> None:
    rt = UserType()
    name = accounts.user()
    home = f"/var/lib/{name}"
    _, _, stored = converge(rt, conn, {"name": name, "system": True, "create_home": False,
                                       "home": home, "shell": "/usr/sbin/nologin"})
    assert stored is not None
    assert stored["uid"] < 1000
    assert stored["system"] is True
    assert not os.path.exists(home)
    # system/create_home act only on create: changing them later plans nothing
    assert_noop(rt, {"name": name, "system": False, "create_home": True, "home": home},
                stored)


def test_user_takes_existing_group_of_its_name(accounts: Accounts, conn: LocalConnector
                                               ) -> None:
    rt = UserType()
    name = accounts.user()
    accounts.groups.append(name)
    subprocess.run(["groupadd", "--", name], check=True)
    _, _, stored = converge(rt, conn, {"name": name, "create_home": False})
    assert stored is not None and stored["group"] == name


def test_user_failure_reports_tool_error(accounts: Accounts, conn: LocalConnector) -> None:
    rt = UserType()
    name = accounts.user()
    missing = f"tectumg_{secrets.token_hex(3)}"
    with pytest.raises(ApplyError, match=rf"cannot create user {name}: useradd exited with "
                                         rf"code \d+: .*{missing}"):
        converge(rt, conn, {"name": name, "groups": [missing]})
    assert getent("passwd", name) is None


@pytest.mark.parametrize("bad", ["-r", "Root", "9lives", "a b", "x:y", "a" * 33, "", "a$b",
                                 "evil\n"])
def test_user_and_group_name_validation(bad: str) -> None:
    for rt in (UserType(), GroupType()):
        problem = rt.schema.attrs["name"].check(bad)
        assert isinstance(problem, str) and problem


@pytest.mark.parametrize("good", ["deploy", "_apt", "www-data", "a" * 32, "host1$", "u_2-x"])
def test_user_and_group_name_valid(good: str) -> None:
    assert UserType.schema.attrs["name"].check(good) is None
    assert GroupType.schema.attrs["name"].check(good) is None


def test_user_attribute_validation() -> None:
    attrs = UserType.schema.attrs
    assert attrs["comment"].check("a:b") is not None
    assert attrs["comment"].check("line\nbreak") is not None
    assert attrs["comment"].check("Jane Doe,,,") is None
    assert attrs["home"].check("relative/home") is not None
    assert attrs["shell"].check("/bin/sh") is None
    assert attrs["groups"].check(["ok", "Not-OK"]) is not None
    assert attrs["groups"].check(["ok", "${tectum:group.g#name}"]) is None
    assert attrs["uid"].check(-1) is not None
    assert attrs["uid"].check(True) is not None
    assert attrs["ensure"].check("gone") is not None


# -- group ---------------------------------------------------------------------------------

def test_group_create_update_noop(accounts: Accounts, conn: LocalConnector) -> None:
    rt = GroupType()
    name = accounts.group()
    gid = free_id("group")

    action, changes, stored = converge(rt, conn, {"name": name, "gid": gid})

    assert action is Action.CREATE
    assert changes == [AttrChange("gid", None, gid)]
    assert (getent("group", name) or [])[2] == str(gid)
    assert stored == {"name": name, "ensure": "present", "gid": gid, "system": False}
    assert_noop(rt, {"name": name, "gid": gid}, stored)
    assert_noop(rt, {"name": name}, stored)

    new_gid = free_id("group", 64500)
    action, changes, stored = converge(rt, conn, {"name": name, "gid": new_gid}, stored)
    assert action is Action.UPDATE
    assert changes == [AttrChange("gid", gid, new_gid)]
    assert (getent("group", name) or [])[2] == str(new_gid)
    assert stored is not None and stored["gid"] == new_gid
    assert_noop(rt, {"name": name, "gid": new_gid}, stored)


def test_group_system(accounts: Accounts, conn: LocalConnector) -> None:
    rt = GroupType()
    name = accounts.group()
    _, _, stored = converge(rt, conn, {"name": name, "system": True})
    assert stored is not None and stored["gid"] < 1000 and stored["system"] is True


def test_group_ensure_absent_and_delete(accounts: Accounts, conn: LocalConnector) -> None:
    rt = GroupType()
    name, other = accounts.group(), accounts.group()
    _, _, stored = converge(rt, conn, {"name": name})
    _, _, other_stored = converge(rt, conn, {"name": other})
    assert stored is not None and other_stored is not None

    action, changes, stored = converge(rt, conn, {"name": name, "ensure": "absent"}, stored)
    assert action is Action.UPDATE
    assert changes == [AttrChange("ensure", "present", "absent")]
    assert getent("group", name) is None
    assert_noop(rt, {"name": name, "ensure": "absent"}, stored)

    delete(rt, conn, other_stored)
    assert getent("group", other) is None
    assert rt.read_objects(conn, [{"name": other}]) == [{"name": other, "ensure": "absent"}]


def test_group_delete_primary_group_fails(accounts: Accounts, conn: LocalConnector) -> None:
    rt = GroupType()
    group, user = accounts.group(), accounts.user()
    _, _, stored = converge(rt, conn, {"name": group})
    assert stored is not None
    converge(UserType(), conn, {"name": user, "group": group, "create_home": False})
    with pytest.raises(ApplyError, match=rf"cannot remove group {group}: groupdel exited"):
        delete(rt, conn, stored)
    assert getent("group", group) is not None
