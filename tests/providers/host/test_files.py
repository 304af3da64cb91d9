"""``file``, ``directory`` and ``symlink`` for real on the local host (no mocks).

Most tests go through the CLI (``python -m tectum``); a few drive the resource types directly
with a :class:`LocalConnector`. Every managed path lives under ``tmp_path``; the accounts made
for the ownership tests are named ``tectumf_<hex>`` and removed at teardown.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ApplyError, ReadItem
from tectum.providers.host.base import HostType
from tectum.providers.host.connector import LocalConnector
from tectum.providers.host.files import DirectoryType, FileType, SymlinkType
from tests.conftest import Result

# -- fixtures and helpers ------------------------------------------------------------------


HEADER = """\
from tectum import output, var
from tectum.host import Directory, File, Symlink

W = {world!r}
"""


@dataclass
class Proj:
    root: Path
    world: Path
    log: Path
    tectum: Callable[..., Result]

    def write(self, body: str) -> None:
        text = HEADER.format(world=str(self.world)) + textwrap.dedent(body)
        (self.root / "stack.py").write_text(text)

    def run(self, *args: str) -> Result:
        return self.tectum(*args, cwd=self.root, env={"TECTUM_COMMAND_LOG": str(self.log)})

    def ok(self, *args: str) -> Result:
        res = self.run(*args)
        assert res.returncode == 0, f"tectum {' '.join(args)} failed:\n{res.output}"
        return res

    def plan(self) -> str:
        return self.ok("plan").stdout

    def apply(self) -> Result:
        self.log.unlink(missing_ok=True)
        return self.ok("apply", "--auto-approve")

    def mutations(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        entries = [json.loads(x) for x in self.log.read_text().splitlines() if x.strip()]
        return [e for e in entries if e.get("mutating") is True]

    def assert_converged(self) -> None:
        """A further apply changes nothing and mutates nothing."""
        res = self.apply()
        assert "No changes." in res.stdout, res.output
        assert self.mutations() == []


@pytest.fixture
def proj(tmp_path: Path, tectum: Callable[..., Result]) -> Proj:
    root = tmp_path / "proj"
    world = tmp_path / "world"
    root.mkdir()
    world.mkdir()
    return Proj(root, world, tmp_path / "commands.jsonl", tectum)


@pytest.fixture
def conn() -> LocalConnector:
    return LocalConnector(log_path="")


def mode_of(path: Path) -> str:
    return format(stat.S_IMODE(os.lstat(path).st_mode), "04o")


def leftovers(directory: Path) -> list[str]:
    """Temporary files a write may have left behind."""
    return sorted(p.name for p in directory.rglob("*") if ".tectum-" in p.name)


def plan_one(rt: HostType, conn: LocalConnector, attrs: dict[str, Any],
             prior: dict[str, Any] | None = None, base_dir: str = "/") -> ResourceChange:
    desired = rt.prepare(attrs, base_dir)
    observed = rt.read(conn, [ReadItem(desired, prior)])[0]
    action, changes = rt.plan(desired, observed, prior)
    return ResourceChange(address=f"{rt.name}.x", type=rt.name, action=action,
                          before=rt.stored(observed) if observed is not None else None,
                          after=desired, changes=changes, prior=prior)


def converge(rt: HostType, conn: LocalConnector, attrs: dict[str, Any],
             prior: dict[str, Any] | None = None) -> tuple[Action, dict[str, Any] | None]:
    change = plan_one(rt, conn, attrs, prior)
    if change.action is Action.NOOP:
        return change.action, prior
    return change.action, rt.apply(conn, change)


class Accounts:
    """A user and a group made for a test, removed afterwards."""

    def __init__(self) -> None:
        self.users: list[str] = []
        self.groups: list[str] = []

    def group(self) -> str:
        name = f"tectumf_{secrets.token_hex(3)}"
        self.groups.append(name)
        subprocess.run(["groupadd", "--", name], check=True, capture_output=True)
        return name

    def user(self) -> str:
        name = f"tectumf_{secrets.token_hex(3)}"
        self.users.append(name)
        subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell",
                        "/usr/sbin/nologin", "--", name], check=True, capture_output=True)
        return name

    def cleanup(self) -> None:
        for name in self.users:
            subprocess.run(["userdel", "--", name], capture_output=True, check=False)
            subprocess.run(["groupdel", "--", name], capture_output=True, check=False)
        for name in self.groups:
            subprocess.run(["groupdel", "--", name], capture_output=True, check=False)


@pytest.fixture
def accounts() -> Iterator[Accounts]:
    if os.geteuid() != 0:
        pytest.skip("creates accounts: needs root")
    acc = Accounts()
    try:
        yield acc
    finally:
        acc.cleanup()


# -- create and no-op ------------------------------------------------------------------------

def test_create_then_noop(proj: Proj) -> None:
    proj.write("""
        d = Directory("d", path=f"{W}/d", mode="0750")
        f = File("f", path=f"{W}/d/f.txt", content="hello\\n", mode="640")
        File("plain", path=f"{W}/plain.txt", content="plain\\n")
        Symlink("l", path=f"{W}/link", target=f.path)
    """)
    plan = proj.plan()
    assert "Plan: 4 to add, 0 to change, 0 to replace, 0 to destroy." in plan
    proj.apply()
    w = proj.world
    assert (w / "d").is_dir() and mode_of(w / "d") == "0750"
    assert (w / "d" / "f.txt").read_text() == "hello\n"
    assert mode_of(w / "d" / "f.txt") == "0640"
    assert (w / "plain.txt").read_text() == "plain\n"
    assert mode_of(w / "plain.txt") == "0644"  # the default for a new file
    assert os.readlink(w / "link") == f"{w}/d/f.txt"
    ops = {e["op"] for e in proj.mutations()}
    assert {"mkdir", "write", "symlink"} <= ops  # the log records what a run does
    assert leftovers(w) == []

    inode = (w / "d" / "f.txt").stat().st_ino
    proj.assert_converged()
    assert (w / "d" / "f.txt").stat().st_ino == inode
    assert "No changes." in proj.plan()


def test_directory_makes_its_missing_parents(proj: Proj) -> None:
    # as mkdir -p, Ansible's file state=directory and pyinfra's files.directory; the declared
    # middle directory is made first with its own mode, the undeclared ones 0755 (umask 022)
    proj.write("""
        Directory("deep", path=f"{W}/a/b/c/d", mode="0750")
        Directory("middle", path=f"{W}/a/b", mode="0700")
        File("f", path=f"{W}/a/b/c/d/f.txt", content="x\\n")
    """)
    old = os.umask(0o022)
    try:
        proj.apply()
    finally:
        os.umask(old)
    w = proj.world
    assert [mode_of(w / p) for p in ("a", "a/b", "a/b/c", "a/b/c/d")] == \
        ["0755", "0700", "0755", "0750"]
    assert (w / "a/b/c/d/f.txt").read_text() == "x\n"
    proj.assert_converged()
    # destroying takes what was declared, not the parents it made
    proj.ok("destroy", "--auto-approve")
    assert (w / "a").is_dir() and not (w / "a/b").exists()


def test_directory_under_a_file_fails_cleanly(proj: Proj) -> None:
    (proj.world / "plain").write_text("not a directory\n")
    proj.write("""
        Directory("d", path=f"{W}/plain/sub/d")
        Directory("ok", path=f"{W}/ok/d")
    """)
    res = proj.run("apply", "--auto-approve")
    assert res.returncode == 1 and "Traceback" not in res.output
    assert "cannot create its parent directories (one of them is there and is not a " \
        "directory)" in res.output, res.output
    assert 'directory.d' in res.output
    assert (proj.world / "plain").read_text() == "not a directory\n"
    assert (proj.world / "ok" / "d").is_dir()


def test_adopts_a_file_that_already_matches(proj: Proj) -> None:
    (proj.world / "a.txt").write_text("same\n")
    proj.write("""
        File("a", path=f"{W}/a.txt", content="same\\n")
    """)
    plan = proj.plan()
    assert "1 to adopt" in plan
    proj.apply()
    assert proj.mutations() == []
    assert proj.ok("state", "list").stdout.split() == ["file.a"]
    proj.assert_converged()


# -- update -----------------------------------------------------------------------------------

def test_update_content_shows_a_unified_diff(proj: Proj) -> None:
    proj.write("""
        File("f", path=f"{W}/f.conf", content="keep 1\\nold line\\nkeep 2\\n")
    """)
    proj.apply()
    (proj.world / "f.conf").chmod(0o600)  # a hand-set mode is kept when mode is not managed
    proj.write("""
        File("f", path=f"{W}/f.conf", content="keep 1\\nnew line\\nkeep 2\\n")
    """)
    plan = proj.plan()
    assert "~ file.f" in plan
    lines = [line.strip() for line in plan.splitlines()]
    assert f"--- {proj.world}/f.conf (now)" in lines
    assert f"+++ {proj.world}/f.conf (planned)" in lines
    assert "-old line" in lines
    assert "+new line" in lines
    assert "keep 1" in lines  # context
    assert "-keep 1" not in lines and "+keep 1" not in lines
    assert "0 to add, 1 to change, 0 to replace" in plan

    proj.apply()
    assert (proj.world / "f.conf").read_text() == "keep 1\nnew line\nkeep 2\n"
    assert mode_of(proj.world / "f.conf") == "0600"
    assert leftovers(proj.world) == []
    proj.assert_converged()


def test_update_mode_only_does_not_rewrite(proj: Proj) -> None:
    proj.write("""
        File("f", path=f"{W}/f.txt", content="data\\n", mode="0644")
        Directory("d", path=f"{W}/d", mode="0755")
    """)
    proj.apply()
    f = proj.world / "f.txt"
    inode, mtime = f.stat().st_ino, f.stat().st_mtime_ns
    d_inode = (proj.world / "d").stat().st_ino
    proj.write("""
        File("f", path=f"{W}/f.txt", content="data\\n", mode="0600")
        Directory("d", path=f"{W}/d", mode="0700")
    """)
    plan = proj.plan()
    assert 'mode: "0644" → "0600"' in plan
    assert 'mode: "0755" → "0700"' in plan
    assert "content" not in plan
    assert "0 to add, 2 to change, 0 to replace" in plan

    proj.apply()
    assert mode_of(f) == "0600"
    assert mode_of(proj.world / "d") == "0700"
    assert f.stat().st_ino == inode
    assert f.stat().st_mtime_ns == mtime
    assert (proj.world / "d").stat().st_ino == d_inode
    ops = sorted(e["op"] for e in proj.mutations())
    assert ops == ["set_attrs", "set_attrs"]
    proj.assert_converged()


def test_update_owner_and_group_only_does_not_rewrite(proj: Proj,
                                                       accounts: Accounts) -> None:
    user = accounts.user()
    group = accounts.group()
    proj.write("""
        File("f", path=f"{W}/f.txt", content="data\\n")
        Directory("d", path=f"{W}/d")
    """)
    proj.apply()
    f = proj.world / "f.txt"
    inode = f.stat().st_ino
    proj.write(f"""
        File("f", path=f"{{W}}/f.txt", content="data\\n", owner={user!r}, group={group!r})
        Directory("d", path=f"{{W}}/d", owner={user!r})
    """)
    plan = proj.plan()
    assert f'owner: "root" → "{user}"' in plan
    assert f'→ "{group}"' in plan
    proj.apply()
    import grp
    import pwd
    st = f.stat()
    assert pwd.getpwuid(st.st_uid).pw_name == user
    assert grp.getgrgid(st.st_gid).gr_name == group
    assert st.st_ino == inode
    assert pwd.getpwuid((proj.world / "d").stat().st_uid).pw_name == user
    assert [e["op"] for e in proj.mutations()] == ["set_attrs", "set_attrs"]
    proj.assert_converged()

    # content and ownership together: one atomic write that sets the owner
    proj.write(f"""
        File("f", path=f"{{W}}/f.txt", content="new\\n", owner={user!r}, group={group!r},
             mode="0604")
        Directory("d", path=f"{{W}}/d", owner={user!r})
    """)
    proj.apply()
    st = f.stat()
    assert f.read_text() == "new\n"
    assert pwd.getpwuid(st.st_uid).pw_name == user
    assert grp.getgrgid(st.st_gid).gr_name == group
    assert mode_of(f) == "0604"
    proj.assert_converged()


def test_new_file_owned_by_created_user(proj: Proj, accounts: Accounts) -> None:
    import pwd

    user = accounts.user()
    proj.write(f"""
        File("f", path=f"{{W}}/f.txt", content="x\\n", owner={user!r}, mode="0600")
        Directory("d", path=f"{{W}}/d", owner={user!r}, mode="0700")
    """)
    proj.apply()
    assert pwd.getpwuid((proj.world / "f.txt").stat().st_uid).pw_name == user
    assert pwd.getpwuid((proj.world / "d").stat().st_uid).pw_name == user
    assert mode_of(proj.world / "f.txt") == "0600"
    proj.assert_converged()


def test_unknown_owner_fails_cleanly(proj: Proj) -> None:
    """Found at plan time, with the host's other facts (issue 12): nothing is applied."""
    proj.write("""
        File("f", path=f"{W}/f.txt", content="x\\n", owner="tectum_no_such_user_zz")
        File("other", path=f"{W}/other.txt", content="y\\n")
    """)
    res = proj.run("apply", "--auto-approve")
    assert res.returncode == 1
    assert "owner 'tectum_no_such_user_zz' is no user on this machine" in res.output
    assert "Traceback" not in res.output
    assert not (proj.world / "f.txt").exists()
    assert not (proj.world / "other.txt").exists()
    assert leftovers(proj.world) == []


# -- replace ----------------------------------------------------------------------------------

def test_directory_where_a_file_should_be_is_replaced(proj: Proj) -> None:
    (proj.world / "f").mkdir()
    proj.write("""
        File("f", path=f"{W}/f", content="now a file\\n")
    """)
    plan = proj.plan()
    assert "-/+ file.f" in plan
    assert "forces replacement" in plan
    assert "0 to add, 0 to change, 1 to replace" in plan
    proj.apply()
    assert (proj.world / "f").is_file()
    assert (proj.world / "f").read_text() == "now a file\n"
    proj.assert_converged()


def test_file_where_a_directory_should_be_is_replaced(proj: Proj) -> None:
    (proj.world / "d").write_text("in the way\n")
    proj.write("""
        Directory("d", path=f"{W}/d", mode="0711")
    """)
    assert "-/+ directory.d" in proj.plan()
    proj.apply()
    assert (proj.world / "d").is_dir()
    assert mode_of(proj.world / "d") == "0711"
    proj.assert_converged()


def test_file_replaces_a_symlink_without_writing_through_it(proj: Proj) -> None:
    victim = proj.world / "victim.txt"
    victim.write_text("do not touch\n")
    (proj.world / "f").symlink_to(victim)
    proj.write("""
        File("f", path=f"{W}/f", content="mine\\n")
    """)
    assert "-/+ file.f" in proj.plan()
    proj.apply()
    assert not (proj.world / "f").is_symlink()
    assert (proj.world / "f").read_text() == "mine\n"
    assert victim.read_text() == "do not touch\n"
    proj.assert_converged()


def test_symlink_target_change_and_replacing_a_file(proj: Proj) -> None:
    (proj.world / "v1").mkdir()
    (proj.world / "v2").mkdir()
    (proj.world / "current").write_text("a plain file in the way\n")
    proj.write("""
        Symlink("current", path=f"{W}/current", target=f"{W}/v1")
    """)
    assert "-/+ symlink.current" in proj.plan()
    proj.apply()
    assert os.readlink(proj.world / "current") == f"{proj.world}/v1"
    proj.assert_converged()

    proj.write("""
        Symlink("current", path=f"{W}/current", target=f"{W}/v2")
    """)
    plan = proj.plan()
    assert f'target: "{proj.world}/v1" → "{proj.world}/v2"' in plan
    proj.apply()
    assert os.readlink(proj.world / "current") == f"{proj.world}/v2"
    assert (proj.world / "v1").is_dir()  # the old target is left alone
    assert leftovers(proj.world) == []
    proj.assert_converged()


def test_symlink_refuses_to_replace_a_directory(proj: Proj) -> None:
    (proj.world / "dir").mkdir()
    (proj.world / "dir" / "precious").write_text("keep\n")
    proj.write("""
        Symlink("l", path=f"{W}/dir", target="/tmp")
    """)
    res = proj.run("apply", "--auto-approve")
    assert res.returncode == 1
    # SymlinkType.apply's own explanation, not the raw OS error ("Is a directory")
    assert "tectum does not replace a directory with a symlink" in res.output
    assert (proj.world / "dir" / "precious").read_text() == "keep\n"
    assert proj.ok("state", "list").stdout.split() == []


# -- delete -----------------------------------------------------------------------------------

def test_delete(proj: Proj) -> None:
    proj.write("""
        d = Directory("d", path=f"{W}/d")
        f = File("f", path=f"{W}/d/f.txt", content="x\\n")
        Symlink("l", path=f"{W}/l", target=f.path)
        File("keep", path=f"{W}/keep.txt", content="k\\n")
    """)
    proj.apply()
    (proj.world / "d" / "unmanaged.txt").write_text("also goes\n")
    proj.write("""
        File("keep", path=f"{W}/keep.txt", content="k\\n")
    """)
    plan = proj.plan()
    assert "- directory.d" in plan and "with everything in it" in plan
    assert "- file.f" in plan and "- symlink.l" in plan
    assert "3 to destroy" in plan
    proj.apply()
    assert sorted(p.name for p in proj.world.iterdir()) == ["keep.txt"]
    proj.assert_converged()


def test_delete_of_an_object_already_gone(proj: Proj) -> None:
    proj.write("""
        File("f", path=f"{W}/f.txt", content="x\\n")
    """)
    proj.apply()
    (proj.world / "f.txt").unlink()
    proj.write("")
    plan = proj.plan()
    assert "already gone" in plan
    proj.apply()
    assert proj.ok("state", "list").stdout.split() == []


# -- drift ------------------------------------------------------------------------------------

def test_drift_is_shown_and_repaired(proj: Proj) -> None:
    proj.write("""
        File("f", path=f"{W}/f.txt", content="managed\\n", mode="0644")
        Symlink("l", path=f"{W}/l", target="/tmp")
    """)
    proj.apply()
    f = proj.world / "f.txt"
    f.write_text("edited by hand\n")
    f.chmod(0o666)
    (proj.world / "l").unlink()
    (proj.world / "l").symlink_to("/etc")

    plan = proj.plan()
    assert "Objects changed outside of tectum:" in plan
    assert "changed outside tectum" in plan
    assert "file.f: mode, content" in plan or "file.f: content, mode" in plan
    assert "symlink.l: target" in plan
    assert "-edited by hand" in plan and "+managed" in plan

    proj.apply()
    assert f.read_text() == "managed\n"
    assert mode_of(f) == "0644"
    assert os.readlink(proj.world / "l") == "/tmp"
    proj.assert_converged()


def test_deleted_by_hand_is_recreated(proj: Proj) -> None:
    proj.write("""
        File("f", path=f"{W}/f.txt", content="managed\\n")
    """)
    proj.apply()
    (proj.world / "f.txt").unlink()
    plan = proj.plan()
    assert "+ file.f" in plan
    assert "changed outside tectum: deleted" in plan
    proj.apply()
    assert (proj.world / "f.txt").read_text() == "managed\n"
    proj.assert_converged()


# -- templates --------------------------------------------------------------------------------

def test_template_rendering_with_vars(proj: Proj) -> None:
    (proj.root / "templates").mkdir()
    (proj.root / "templates" / "site.conf.j2").write_text(
        "server {{ name }} {\n"
        "{% for p in ports %}  listen {{ p }};\n{% endfor %}"
        "}\n")
    proj.write("""
        port = var("port", int, default=80)
        File("site", path=f"{W}/site.conf", template="templates/site.conf.j2",
             vars={"name": "example.org", "ports": [port, 443]})
    """)
    proj.apply()
    assert (proj.world / "site.conf").read_text() == \
        "server example.org {\n  listen 80;\n  listen 443;\n}\n"
    proj.assert_converged()

    res = proj.ok("plan", "-var", "port=8080")
    assert "-  listen 80;" in res.stdout and "+  listen 8080;" in res.stdout


def test_template_with_undefined_variable_is_an_error(proj: Proj) -> None:
    (proj.root / "t.j2").write_text("{{ missing }}\n")
    proj.write("""
        File("t", path=f"{W}/t", template="t.j2", vars={"other": 1})
    """)
    res = proj.run("plan")
    assert res.returncode == 1
    assert "missing" in res.output and "t.j2" in res.output
    assert not (proj.world / "t").exists()


# -- atomic writes, directly through the resource types ----------------------------------------

def test_write_is_atomic_and_leaves_no_temp_files(conn: LocalConnector, tmp_path: Path) -> None:
    rt = FileType()
    path = tmp_path / "big.bin"
    big = "x" * 3_000_000 + "\n"
    action, stored = converge(rt, conn, {"path": str(path), "content": big})
    assert action is Action.CREATE
    assert stored is not None and stored["path"] == str(path)
    assert path.read_text() == big
    assert leftovers(tmp_path) == []
    old_inode = path.stat().st_ino

    action, stored = converge(rt, conn, {"path": str(path), "content": "small\n"}, stored)
    assert action is Action.UPDATE
    assert path.read_text() == "small\n"
    assert path.stat().st_ino != old_inode  # a new file renamed into place
    assert leftovers(tmp_path) == []
    writes = [e for e in conn.log if e["op"] == "write"]
    assert len(writes) == 2


def test_failed_write_keeps_the_old_file_and_no_temp(conn: LocalConnector,
                                                     tmp_path: Path) -> None:
    rt = FileType()
    path = tmp_path / "f.txt"
    path.write_text("old\n")
    change = plan_one(rt, conn, {"path": str(path), "content": "new\n",
                                 "owner": "tectum_no_such_user_zz"})
    assert change.action is Action.UPDATE
    with pytest.raises(ApplyError, match="tectum_no_such_user_zz"):
        rt.apply(conn, change)
    assert path.read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_write_into_missing_directory_fails(conn: LocalConnector, tmp_path: Path) -> None:
    rt = FileType()
    change = plan_one(rt, conn, {"path": str(tmp_path / "nope" / "f"), "content": "x"})
    with pytest.raises(ApplyError, match="does not exist"):
        rt.apply(conn, change)
    assert list(tmp_path.iterdir()) == []


def test_non_empty_directory_is_not_silently_destroyed(conn: LocalConnector,
                                                       tmp_path: Path) -> None:
    rt = FileType()
    target = tmp_path / "d"
    target.mkdir()
    (target / "data").write_text("precious\n")
    change = plan_one(rt, conn, {"path": str(target), "content": "x"})
    assert change.action is Action.REPLACE
    with pytest.raises(ApplyError):
        rt.apply(conn, change)
    assert (target / "data").read_text() == "precious\n"


def test_read_reports_kind_mismatch(conn: LocalConnector, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    (tmp_path / "l").symlink_to(tmp_path / "f")
    objs = [{"path": str(tmp_path / n)} for n in ("d", "f", "l", "none")]
    files = FileType().read_objects(conn, objs)
    assert files[0] is not None and files[0]["_kind"] == "directory"
    assert files[1] is not None and files[1]["_content"] == b"x"
    assert files[2] is not None and files[2]["_kind"] == "symlink"
    assert files[3] is None
    dirs = DirectoryType().read_objects(conn, objs)
    assert dirs[0] is not None and "_kind" not in dirs[0]
    assert dirs[1] is not None and dirs[1]["_kind"] == "file"
    links = SymlinkType().read_objects(conn, objs)
    assert links[2] == {"path": str(tmp_path / "l"), "target": str(tmp_path / "f")}
    assert links[0] is not None and links[0]["_kind"] == "directory"
    assert conn.log == []  # reading mutates nothing


def test_prepare_normalises_mode_and_hashes_content(tmp_path: Path) -> None:
    rt = FileType()
    for given in ("644", "0644"):
        out = rt.prepare({"path": "/x", "content": "a", "mode": given}, str(tmp_path))
        assert out["mode"] == "0644"
    out = rt.prepare({"path": "/x", "content": "a"}, str(tmp_path))
    import hashlib
    assert out["content_sha256"] == hashlib.sha256(b"a").hexdigest()
    (tmp_path / "t.j2").write_text("hi {{ who }}")
    out = rt.prepare({"path": "/x", "template": "t.j2", "vars": {"who": "you"}}, str(tmp_path))
    assert out["content"] == "hi you"
    assert "template" not in out and "vars" not in out


# -- issue 10: what a write keeps, what a path and a mode may be, validate, deletes -------------

def ids_of(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


@pytest.mark.skipif(os.geteuid() != 0, reason="gives files to other owners: needs root")
@pytest.mark.parametrize("mode", ["0640", "4750", None])
@pytest.mark.parametrize("managed", [{}, {"owner": "4244"}, {"group": "4345"}],
                         ids=["neither", "owner", "group"])
def test_rewrite_keeps_the_owner_and_group_it_does_not_manage(
        conn: LocalConnector, tmp_path: Path, mode: str | None, managed: dict[str, str]) -> None:
    # issue 10 item 3: a rewrite with mode but no owner/group made the file root's, so state
    # (which keeps the owner read before) and the world disagreed, and drift blamed the user
    path = tmp_path / "f.conf"
    path.write_text("old\n")
    os.chown(path, 4242, 4343)
    path.chmod(0o600)
    rt = FileType()
    attrs: dict[str, Any] = {"path": str(path), "content": "new\n", **managed}
    if mode is not None:
        attrs["mode"] = mode
    action, stored = converge(rt, conn, attrs)
    assert action is Action.UPDATE
    want = (int(managed.get("owner", 4242)), int(managed.get("group", 4343)))
    assert ids_of(path) == want
    assert mode_of(path) == (mode or "0600")  # set-id bits survive the chown
    assert path.read_text() == "new\n"
    assert leftovers(tmp_path) == []
    # state says what the world holds, and the next plan has nothing to do
    assert stored is not None and (stored["owner"], stored["group"]) == tuple(map(str, want))
    assert converge(rt, conn, attrs, stored)[0] is Action.NOOP


@pytest.mark.parametrize("given, hints", [
    ("644", ['mode="0644"']),
    ("0o755", ['mode="0755"']),
    ("0o640", ['mode="0640"', 'mode="0416"']),  # 0o640 is 416, itself a valid octal spelling
    ("9999", ['mode="0644"']),
])
def test_an_integer_mode_is_refused_with_the_string_to_write(proj: Proj, given: str,
                                                             hints: list[str]) -> None:
    # issue 10 item 7: mode=644 became "1204" (sticky bit, no read for anyone)
    proj.write(f"""
        File("f", path=f"{{W}}/f.txt", content="x\\n", mode={given})
        Directory("d", path=f"{{W}}/d", mode={given})
    """)
    res = proj.run("plan")
    assert res.returncode == 1, res.output
    assert "integer" in res.output, res.output
    for hint in hints:
        assert hint in res.output, res.output
    assert "Traceback" not in res.output
    assert list(proj.world.iterdir()) == []


def test_an_integer_mode_from_a_variable_is_refused(proj: Proj) -> None:
    proj.write("""
        m = var("m", int, default=644)
        File("f", path=f"{W}/f.txt", content="x\\n", mode=m)
    """)
    res = proj.run("apply", "--auto-approve")
    assert res.returncode == 1 and 'mode="0644"' in res.output, res.output
    assert list(proj.world.iterdir()) == []
    from tectum.providers.host.files import normalize_mode

    with pytest.raises(ValueError, match='mode="0644"'):
        normalize_mode(644)
    assert normalize_mode("644") == normalize_mode("0644") == "0644"


@pytest.mark.parametrize("kind, path, normal", [
    ("File", "/etc/../etc/passwd", "/etc/passwd"),
    ("File", "{W}/a/./f", "{W}/a/f"),
    ("File", "//etc/passwd", "/etc/passwd"),
    ("File", "{W}//etc/../etc", "{W}/etc"),
    ("Directory", "{W}/d/", "{W}/d"),
    ("Directory", "{W}/d/..", "{W}"),
    ("Directory", "{W}/d/.", "{W}/d"),
    ("Symlink", "{W}/x/../l", "{W}/l"),
])
def test_a_path_that_is_not_normalised_is_refused_with_its_normal_form(
        proj: Proj, kind: str, path: str, normal: str) -> None:
    # issue 10 item 10: "/etc/../etc/passwd" passed validation
    extra = ', content="x\\n"' if kind == "File" else ', target="/tmp"' if kind == "Symlink" \
        else ""
    proj.write(f"""
        {kind}("x", path=f"{path}"{extra})
    """)
    res = proj.run("plan")
    assert res.returncode == 1, res.output
    want = normal.replace("{W}", str(proj.world))
    assert f'"{want}"' in res.output, res.output
    assert "normal" in res.output and "Traceback" not in res.output


def test_a_relative_or_resolved_path_is_checked_too(proj: Proj) -> None:
    proj.write("""
        File("rel", path="x//etc/../etc", content="x\\n")
    """)
    res = proj.run("plan")
    assert res.returncode == 1 and "must be an absolute path" in res.output, res.output
    # a path built from a reference is checked once resolved
    proj.write("""
        d = Directory("d", path=f"{W}/d")
        File("f", path=f"{d.path}/../f", content="x\\n")
    """)
    res = proj.run("plan")
    assert res.returncode == 1, res.output
    assert f'"{proj.world}/f"' in res.output, res.output
    proj.write("""
        d = Directory("d", path=f"{W}/d")
        File("f", path=f"{d.path}/f", content="x\\n")
        File("dots", path=f"{W}/..f...", content="names with dots are fine\\n")
    """)
    proj.apply()
    assert (proj.world / "d" / "f").read_text() == "x\n"
    assert (proj.world / "..f...").exists()


# -- validate (Ansible's validate: the staged file is checked before it replaces the target) ---

def test_validate_checks_the_staged_file_before_it_replaces_the_target(
        conn: LocalConnector, tmp_path: Path) -> None:
    rt = FileType()
    seen = tmp_path / "seen"
    path = tmp_path / "site.conf"
    path.write_text("ok old\n")
    check = (f"sh -c 'echo \"$1\" >> {seen}; stat -c %a \"$1\" >> {seen}; "
             f"grep -q ^ok \"$1\"' sh %s")
    attrs = {"path": str(path), "content": "ok new\n", "mode": "0640", "validate": check}
    action, stored = converge(rt, conn, attrs)
    assert action is Action.UPDATE and path.read_text() == "ok new\n"
    staged, mode = seen.read_text().splitlines()
    # the command saw the staged file beside the target, with its final mode, not the target
    assert os.path.dirname(staged) == str(tmp_path) and staged != str(path)
    assert ".tectum-" in staged and mode == "640"
    assert leftovers(tmp_path) == []
    assert stored is not None and stored["validate"] == check
    # validate is not observable: it is neither drift nor a change
    assert converge(rt, conn, {**attrs, "validate": "true %s"}, stored)[0] is Action.NOOP

    # a failed validation keeps the old file, removes the staged one, fails with the output
    bad = ("sh -c 'for i in $(seq -w 1 30); do echo line-$i; done; "
           "echo \"rejected: $(cat \"$1\")\" >&2; exit 3' sh %s")
    change = plan_one(rt, conn, {**attrs, "content": "broken\n", "validate": bad}, stored)
    assert change.action is Action.UPDATE
    with pytest.raises(ApplyError) as info:
        rt.apply(conn, change)
    message = str(info.value)
    assert str(path) in message and "exit code 3" in message, message
    assert "rejected: broken" in message and "line-30" in message, message
    assert "line-01" not in message, message  # the last lines, not all of them
    assert path.read_text() == "ok new\n" and mode_of(path) == "0640"
    assert leftovers(tmp_path) == []

    # a new file that fails validation is not created
    new = tmp_path / "new.conf"
    change = plan_one(rt, conn, {"path": str(new), "content": "x\n", "validate": "false %s"})
    with pytest.raises(ApplyError, match="exit code 1"):
        rt.apply(conn, change)
    assert not new.exists() and leftovers(tmp_path) == []
    change = plan_one(rt, conn, {"path": str(new), "content": "x\n",
                                 "validate": "tectum-no-such-validator %s"})
    with pytest.raises(ApplyError, match="exit code 127"):
        rt.apply(conn, change)
    assert not new.exists() and leftovers(tmp_path) == []


def test_validate_substitutes_the_staged_path_as_one_word(
        conn: LocalConnector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # where a relative "touch pwned" would land
    rt = FileType()
    path = tmp_path / "a b'c\"$(touch pwned)`touch pwned` ;*"
    copy = tmp_path / "copy"
    # %s as a word and inside one, %% a literal %; the staged path is never split or run
    check = (f"sh -c 'test \"$1\" = --%%s && test \"$2\" = \"--file=$3\" && cp -- \"$3\" "
             f"{copy}' sh --%%s --file=%s %s")
    _, stored = converge(rt, conn, {"path": str(path), "content": "data\n",
                                    "validate": check})
    assert path.read_text() == "data\n" and copy.read_text() == "data\n"
    assert not (tmp_path / "pwned").exists() and leftovers(tmp_path) == []


def test_validate_in_a_stack(proj: Proj) -> None:
    proj.write("""
        File("f", path=f"{W}/f.conf", content="ok 1\\n", validate="grep -q ^ok %s")
        File("other", path=f"{W}/other", content="x\\n")
    """)
    plan = proj.plan()
    assert "grep -q ^ok %s" in plan
    proj.apply()
    assert (proj.world / "f.conf").read_text() == "ok 1\n"
    proj.assert_converged()
    proj.write("""
        File("f", path=f"{W}/f.conf", content="broken\\n", validate="grep -q ^ok %s")
        File("other", path=f"{W}/other", content="y\\n")
    """)
    res = proj.run("apply", "--auto-approve")
    assert res.returncode == 1, res.output
    assert "file.f" in res.output and "validate" in res.output, res.output
    assert (proj.world / "f.conf").read_text() == "ok 1\n"
    assert (proj.world / "other").read_text() == "y\n"  # independent changes go on
    assert leftovers(proj.world) == []
    # changing only the command is no change and no drift (it cannot be observed)
    proj.write("""
        File("f", path=f"{W}/f.conf", content="ok 1\\n", validate="grep -q ok %s")
        File("other", path=f"{W}/other", content="y\\n")
    """)
    res = proj.ok("plan")
    assert "No changes." in res.stdout and "outside of tectum" not in res.stdout, res.output


@pytest.mark.parametrize("command, why", [
    ("nginx -t", "%s"),
    ("nginx -t -c %%s", "%s"),
    ("sh -c 'unbalanced %s", "quot"),
    ("   ", "empty"),
])
def test_a_validate_command_without_its_placeholder_is_refused(
        proj: Proj, command: str, why: str) -> None:
    proj.write(f"""
        File("f", path=f"{{W}}/f", content="x\\n", validate={command!r})
    """)
    res = proj.run("plan")
    assert res.returncode == 1 and why in res.output, res.output
    assert "validate" in res.output and "Traceback" not in res.output


# -- deletes are verified ------------------------------------------------------------------

def test_directory_delete_while_its_files_are_deleted_concurrently(
        conn: LocalConnector, tmp_path: Path) -> None:
    # issue 10 item 2: the recursive delete hit ENOENT on a file another worker had just
    # removed, stopped, and was reported as done with the directory still on disk
    import random
    import threading

    files, dirs = FileType(), DirectoryType()

    def delete(rt: HostType, path: Path) -> ResourceChange:
        prior = {"path": str(path)}
        return ResourceChange(address=f"{rt.name}.x", type=rt.name, action=Action.DELETE,
                              before=prior, after=None, changes=[], prior=prior)

    for trial in range(20):
        root = tmp_path / f"t{trial}"
        paths: list[Path] = []
        for i in range(20):
            (root / f"s{i}").mkdir(parents=True)
            for j in range(30):
                (root / f"s{i}" / f"f{j}").write_text("x")
                paths.append(root / f"s{i}" / f"f{j}")
        random.shuffle(paths)
        start = threading.Barrier(5)
        errors: list[BaseException] = []

        def worker(chunk: list[Path], start: threading.Barrier,
                   errors: list[BaseException]) -> None:
            start.wait()
            for p in chunk:
                try:
                    files.apply(conn, delete(files, p))
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

        threads = [threading.Thread(target=worker, args=(paths[k::4], start, errors))
                   for k in range(4)]
        for t in threads:
            t.start()
        start.wait()
        try:
            assert dirs.apply(conn, delete(dirs, root)) is None
        finally:
            for t in threads:
                t.join()
        assert errors == []
        assert not root.exists(), f"trial {trial}: the directory was reported deleted"


def test_a_delete_that_leaves_the_directory_fails(conn: LocalConnector, tmp_path: Path) -> None:
    # a recursive delete that cannot finish says so (here: a mount point inside)
    if os.geteuid() != 0:
        pytest.skip("mounts: needs root")
    root = tmp_path / "d"
    (root / "mnt").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tectum-test", str(root / "mnt")], check=True)
    try:
        change = ResourceChange(address="directory.x", type="directory", action=Action.DELETE,
                                before={"path": str(root)}, after=None, changes=[],
                                prior={"path": str(root)})
        with pytest.raises(ApplyError, match=f"cannot remove {root}"):
            DirectoryType().apply(conn, change)
        assert (root / "mnt").is_dir()
    finally:
        subprocess.run(["umount", str(root / "mnt")], check=False)


# -- content is compared whole (issue 10 item 19) ---------------------------------------------

def test_content_differing_only_after_8_kib_or_at_the_end_of_megabytes(proj: Proj) -> None:
    proj.write("""
        tail = var("tail", str, default="a")
        File("small", path=f"{W}/small", content="x" * 9000 + tail + "\\n")
        # unique lines: the plan's diff of many equal lines is slow (difflib), not what is tested
        File("big", path=f"{W}/big", content="".join(f"line {i}\\n" for i in range(250_000))
             + tail + "\\n")
    """)
    proj.apply()
    assert (proj.world / "small").read_text() == "x" * 9000 + "a\n"
    proj.assert_converged()
    res = proj.ok("plan", "-var", "tail=b")
    assert "0 to add, 2 to change" in res.stdout, res.stdout[-2000:]
    proj.log.unlink(missing_ok=True)
    proj.ok("apply", "--auto-approve", "-var", "tail=b")
    assert (proj.world / "small").read_text() == "x" * 9000 + "b\n"
    big = "".join(f"line {i}\n" for i in range(250_000)) + "b\n"
    assert (proj.world / "big").read_text() == big and len(big) > 2_500_000
    assert "No changes." in proj.ok("plan", "-var", "tail=b").stdout
    assert "No changes." not in proj.ok("plan").stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="gives files to other owners: needs root")
def test_a_replace_records_the_owner_of_the_new_object(conn: LocalConnector,
                                                       tmp_path: Path) -> None:
    # the owner of the directory a file replaces is not the new file's: state must not say so
    path = tmp_path / "x"
    path.mkdir()
    os.chown(path, 4242, 4343)
    rt = FileType()
    attrs = {"path": str(path), "content": "now a file\n"}
    action, stored = converge(rt, conn, attrs)
    assert action is Action.REPLACE and path.read_text() == "now a file\n"
    assert stored is not None
    assert (stored["owner"], stored["group"], stored["mode"]) == ("root", "root", "0644")
    assert ids_of(path) == (0, 0) and mode_of(path) == "0644"
    assert converge(rt, conn, attrs, stored)[0] is Action.NOOP
