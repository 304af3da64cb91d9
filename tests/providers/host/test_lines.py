"""``line_in_file``, ``block_in_file`` and ``ini_value`` for real (no mocks).

Most tests run the CLI (``python -m tectum``) on a stack editing files under ``tmp_path``;
a few drive the types directly with a :class:`LocalConnector` (concurrent applies on one file),
and one runs them over SSH against a fleet test host (``fleet`` marker).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ReadError, ReadItem
from tectum.providers.host.base import HostType
from tectum.providers.host.connector import Connector, LocalConnector
from tectum.providers.host.lines import BlockInFileType, IniValueType, LineInFileType
from tests.conftest import Result, tectum_env

HEADER = """\
from tectum.host import BlockInFile, File, IniValue, LineInFile

W = {world!r}
"""

SSHD = """\
# sshd_config of this test
Port 22
#PermitRootLogin prohibit-password
PasswordAuthentication yes
"""

INI = """\
; the application's settings
[server]
host = 0.0.0.0
port = 8080

# logging
[log]
level=info
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


def plan_one(rt: HostType, conn: Connector, attrs: dict[str, Any],
             prior: dict[str, Any] | None = None) -> ResourceChange:
    desired = rt.prepare(attrs, "/")
    observed = rt.read(conn, [ReadItem(desired, prior)])[0]
    action, changes = rt.plan(desired, observed, prior)
    return ResourceChange(address=f"{rt.name}.x", type=rt.name, action=action,
                          before=rt.stored(observed) if observed is not None else None,
                          after=desired, changes=changes, prior=prior)


# -- create, the plan's line diff, idempotence ------------------------------------------------

def test_the_three_types_edit_one_file_and_converge(proj: Proj) -> None:
    conf = proj.world / "sshd_config"
    conf.write_text(SSHD)
    proj.write("""
        LineInFile("root", path=f"{W}/sshd_config", line="PermitRootLogin no",
                   regexp="^#?PermitRootLogin")
        LineInFile("sessions", path=f"{W}/sshd_config", line="MaxSessions 4",
                   insert_after="^Port ")
        BlockInFile("match", path=f"{W}/sshd_config",
                    block="Match User backup\\n    ForceCommand internal-sftp\\n")
        LineInFile("x11", path=f"{W}/sshd_config", line="X11Forwarding no")
    """)
    plan = proj.plan()
    assert "Plan: 3 to add, 1 to change, 0 to replace, 0 to destroy." in plan
    assert "~ line_in_file.root" in plan and "+ line_in_file.sessions" in plan
    assert "+ block_in_file.match" in plan and "+ line_in_file.x11" in plan
    lines = [line.strip() for line in plan.splitlines()]
    # the managed parts only: the old and new line, the new block's lines
    assert 'line: "#PermitRootLogin prohibit-password" → "PermitRootLogin no"' in lines
    assert 'line: "MaxSessions 4"' in lines
    assert "| Match User backup" in lines and "|     ForceCommand internal-sftp" in lines
    # never the file's other lines (they may hold what is not tectum's to show)
    for other in ("Port 22", "PasswordAuthentication yes", "# sshd_config of this test"):
        assert not any(other in line for line in lines), (other, plan)
    assert conf.read_text() == SSHD  # the plan changed nothing

    proj.apply()
    text = conf.read_text()
    # the block and the x11 line both go at the end: the engine orders neither of the two
    head = ("# sshd_config of this test\nPort 22\nMaxSessions 4\nPermitRootLogin no\n"
            "PasswordAuthentication yes\n")
    block = ("# BEGIN MANAGED BY TECTUM\nMatch User backup\n    ForceCommand internal-sftp\n"
             "# END MANAGED BY TECTUM\n")
    assert text in (head + "X11Forwarding no\n" + block, head + block + "X11Forwarding no\n"), \
        text
    assert [ln for ln in os.listdir(proj.world) if ".tectum-" in ln] == []
    proj.assert_converged()
    assert "No changes." in proj.plan()


def test_a_line_already_there_is_adopted_and_only_forgotten(proj: Proj) -> None:
    conf = proj.world / "sshd_config"
    conf.write_text(SSHD)
    proj.write("""
        LineInFile("pw", path=f"{W}/sshd_config", line="PasswordAuthentication yes")
    """)
    assert "1 to adopt" in proj.plan()
    proj.apply()
    assert proj.mutations() == []
    proj.write("")
    plan = proj.plan()
    assert ". line_in_file.pw" in plan and "will no longer be managed" in plan
    proj.apply()
    assert conf.read_text() == SSHD


# -- drift ------------------------------------------------------------------------------------

def test_drift_in_the_managed_part_only(proj: Proj) -> None:
    conf = proj.world / "app.ini"
    conf.write_text(INI)
    proj.write("""
        IniValue("port", path=f"{W}/app.ini", section="server", option="port", value=9090)
        LineInFile("env", path=f"{W}/app.ini", line="env = prod", insert_after=r"^\\[server\\]")
        BlockInFile("extra", path=f"{W}/app.ini", block="[extra]\\nflag = on\\n",
                    marker="; {mark} tectum extra")
    """)
    proj.apply()
    proj.assert_converged()

    # edits elsewhere in the file: no drift, nothing to do
    text = conf.read_text()
    conf.write_text(text.replace("level=info", "level=debug") + "\n; added by hand\n")
    assert "No changes." in proj.plan()

    # edits of the managed parts: drift, each with its attribute, repaired by apply
    text = conf.read_text()
    text = text.replace("port = 9090", "port = 1").replace("flag = on", "flag = off")
    conf.write_text(text.replace("env = prod\n", ""))
    plan = proj.plan()
    assert "Objects changed outside of tectum:" in plan
    assert "ini_value.port: value" in plan
    assert "block_in_file.extra: block" in plan
    assert "line_in_file.env: ensure" in plan
    assert 'value: "1" → "9090"' in plan
    assert "level=debug" not in plan and "added by hand" not in plan  # not the other lines
    proj.apply()
    text = conf.read_text()
    assert "port = 9090\n" in text and "flag = on\n" in text and "env = prod\n" in text
    assert "level=debug\n" in text and "; added by hand\n" in text  # others' edits stay
    proj.assert_converged()


def test_ignore_changes_leaves_a_hand_made_value(proj: Proj) -> None:
    conf = proj.world / "app.ini"
    conf.write_text(INI)
    proj.write("""
        IniValue("port", path=f"{W}/app.ini", section="server", option="port", value="9090",
                 ignore_changes=["value"])
        IniValue("workers", path=f"{W}/app.ini", section="server", option="workers",
                 value="4", ignore_changes=["value"])
    """)
    proj.apply()
    # (as Terraform's: an update is ignored, a create is not)
    assert "port = 8080\n" in conf.read_text() and "workers = 4\n" in conf.read_text()
    conf.write_text(conf.read_text().replace("workers = 4", "workers = 1"))
    assert "No changes." in proj.plan()
    proj.assert_converged()
    assert "workers = 1\n" in conf.read_text()


# -- several resources on one file ----------------------------------------------------------

def test_many_resources_of_all_three_types_on_one_file_lose_no_edit(proj: Proj) -> None:
    conf = proj.world / "app.ini"
    conf.write_text(INI)
    proj.write("""
        for i in range(12):
            LineInFile(f"l{i}", path=f"{W}/app.ini", line=f"line_{i} = {i}",
                       insert_before=r"^\\[server\\]")
            IniValue(f"v{i}", path=f"{W}/app.ini", section="server", option=f"opt_{i}",
                     value=str(i))
        for i in range(4):
            BlockInFile(f"b{i}", path=f"{W}/app.ini", block=f"# block {i}\\n",
                        marker=f"# {{mark}} block {i}")
    """)
    proj.apply()
    text = conf.read_text()
    for i in range(12):
        assert f"\nline_{i} = {i}\n" in text, text
        assert f"\nopt_{i} = {i}\n" in text, text
    for i in range(4):
        assert f"# BEGIN block {i}\n# block {i}\n# END block {i}\n" in text, text
    for line in INI.splitlines():
        assert line in text.splitlines(), (line, text)
    # the added lines sit where they were asked to
    assert text.index("line_0 = 0") < text.index("[server]") < text.index("opt_0 = 0") \
        < text.index("[log]")
    proj.assert_converged()


def test_concurrent_applies_on_one_file_are_serialised(conn: LocalConnector,
                                                       tmp_path: Path) -> None:
    """Threads applying changes of the three types to one file at once (as the engine's
    workers may): every edit is in the file afterwards."""
    path = tmp_path / "app.ini"
    path.write_text(INI)
    jobs: list[tuple[HostType, dict[str, Any]]] = []
    for i in range(8):
        jobs.append((LineInFileType(), {"path": str(path), "line": f"line {i}"}))
        jobs.append((IniValueType(), {"path": str(path), "section": "log",
                                      "option": f"o{i}", "value": str(i)}))
        jobs.append((BlockInFileType(), {"path": str(path), "block": f"b{i}\n",
                                         "marker": f"# {{mark}} {i}", "insert_before": "BOF"}))
    changes = [(rt, plan_one(rt, conn, attrs)) for rt, attrs in jobs]
    assert all(c.action is Action.CREATE for _, c in changes)
    start = threading.Barrier(len(changes))
    errors: list[BaseException] = []

    def work(rt: HostType, change: ResourceChange) -> None:
        try:
            start.wait()
            rt.apply(conn, change)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=job) for job in changes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    text = path.read_text()
    for i in range(8):
        assert f"line {i}\n" in text and f"o{i} = {i}\n" in text
        assert f"# BEGIN {i}\nb{i}\n# END {i}\n" in text
    for rt, attrs in jobs:
        assert plan_one(rt, conn, attrs).action is Action.NOOP


# -- what a delete removes -------------------------------------------------------------------

def test_delete_removes_what_tectum_added_and_forgets_what_it_found(proj: Proj) -> None:
    conf = proj.world / "app.ini"
    conf.write_text(INI)
    proj.write("""
        IniValue("port", path=f"{W}/app.ini", section="server", option="port", value="9090")
        IniValue("workers", path=f"{W}/app.ini", section="server", option="workers",
                 value="4")
        IniValue("cache", path=f"{W}/app.ini", section="cache", option="size", value="64M")
        LineInFile("env", path=f"{W}/app.ini", line="env = prod", insert_after="^host")
        LineInFile("host", path=f"{W}/app.ini", line="host = 127.0.0.1", regexp="^host ")
        BlockInFile("extra", path=f"{W}/app.ini", block="; extra\\n", insert_before=r"^\\[log")
        LineInFile("nolog", path=f"{W}/app.ini", regexp="^level", ensure="absent")
    """)
    proj.apply()
    text = conf.read_text()
    assert "[cache]\nsize = 64M\n" in text and "level=info" not in text
    proj.write("")
    plan = proj.plan()
    # made by tectum: deleted; found (port, host: there with other values; nolog): forgotten
    for made in ("ini_value.workers", "ini_value.cache", "line_in_file.env",
                 "block_in_file.extra"):
        assert f"- {made}" in plan, plan
    for found in ("ini_value.port", "line_in_file.host", "line_in_file.nolog"):
        assert f". {found}" in plan, plan
    assert "removes size ([cache])" in plan
    proj.apply()
    text = conf.read_text()
    # the values tectum set on what it found stay; what it added is gone, [cache] too
    assert text == INI.replace("port = 8080", "port = 9090").replace(
        "host = 0.0.0.0", "host = 127.0.0.1").replace("level=info\n", ""), text
    proj.assert_converged()


def test_a_file_tectum_created_goes_with_its_last_part(proj: Proj) -> None:
    proj.write("""
        LineInFile("a", path=f"{W}/new.conf", line="a = 1", create=True, mode="0600")
        IniValue("b", path=f"{W}/new.conf", section="s", option="b", value="2", create=True,
                 mode="0600")
    """)
    plan = proj.plan()
    assert "file: \"absent\" → \"created\"" in plan
    proj.apply()
    conf = proj.world / "new.conf"
    assert mode_of(conf) == "0600"
    assert "a = 1\n" in conf.read_text() and "[s]\nb = 2\n" in conf.read_text()
    proj.assert_converged()
    proj.write("""
        IniValue("b", path=f"{W}/new.conf", section="s", option="b", value="2", create=True,
                 mode="0600")
    """)
    proj.apply()
    # the line went; the file stays (not empty); which one made it is the engine's order
    assert conf.read_text().strip("\n") == "[s]\nb = 2"
    proj.write("")
    proj.apply()
    assert not conf.exists()


def test_a_new_line_without_regexp_replaces_the_old_one(proj: Proj) -> None:
    conf = proj.world / "f.conf"
    conf.write_text("keep\n")
    proj.write("""
        LineInFile("l", path=f"{W}/f.conf", line="one")
    """)
    proj.apply()
    proj.write("""
        LineInFile("l", path=f"{W}/f.conf", line="two")
    """)
    plan = proj.plan()
    assert "-/+ line_in_file.l" in plan, plan
    proj.apply()
    assert conf.read_text() == "keep\ntwo\n"
    proj.assert_converged()


# -- keeping what is not managed ----------------------------------------------------------------

def test_mode_owner_and_group_of_an_edited_file_are_kept(proj: Proj) -> None:
    conf = proj.world / "f.conf"
    conf.write_text("a\n")
    os.chown(conf, 4242, 4343)
    conf.chmod(0o640)
    proj.write("""
        LineInFile("l", path=f"{W}/f.conf", line="b")
        BlockInFile("k", path=f"{W}/f.conf", block="c\\n")
    """)
    proj.apply()
    st = os.lstat(conf)
    assert (st.st_uid, st.st_gid, mode_of(conf)) == (4242, 4343, "0640")
    assert conf.read_text().startswith("a\nb\n")


def test_ensure_absent_removes_every_matching_line(conn: LocalConnector,
                                                    tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x=1\ny\nx=2\nx=3")
    rt = LineInFileType()
    attrs = {"path": str(path), "regexp": "^x=", "ensure": "absent"}
    change = plan_one(rt, conn, attrs)
    assert change.action is Action.UPDATE
    assert [c.name for c in change.changes] == ["line"]  # (the text before and after)
    rt.apply(conn, change)
    assert path.read_text() == "y\n"
    assert plan_one(rt, conn, attrs).action is Action.NOOP


def test_crlf_files_and_a_last_line_without_newline(conn: LocalConnector,
                                                    tmp_path: Path) -> None:
    path = tmp_path / "win.ini"
    path.write_bytes(b"[a]\r\nk=1\r\nlast=x")
    rt = IniValueType()
    attrs = {"path": str(path), "section": "a", "option": "n", "value": "2"}
    rt.apply(conn, plan_one(rt, conn, attrs))
    assert path.read_bytes() == b"[a]\r\nk=1\r\nlast=x\r\nn=2\r\n"
    assert plan_one(rt, conn, attrs).action is Action.NOOP


# -- diagnostics ------------------------------------------------------------------------------

def test_a_missing_file_without_create_fails_at_apply_and_says_so_in_the_plan(
        proj: Proj) -> None:
    proj.write("""
        LineInFile("l", path=f"{W}/missing.conf", line="x")
        LineInFile("ok", path=f"{W}/there.conf", line="y", create=True)
    """)
    plan = proj.plan()
    assert "must exist by apply time" in plan
    res = proj.run("apply", "--auto-approve")
    assert res.returncode == 1 and "Traceback" not in res.output
    assert "missing.conf does not exist, and create is false" in res.output
    assert not (proj.world / "missing.conf").exists()
    assert (proj.world / "there.conf").read_text() == "y\n"  # the other one still applied


@pytest.mark.parametrize(("body", "message"), [
    ('LineInFile("l", path=f"{W}/f", line="x", regexp="(")', "not a valid regular expression"),
    ('LineInFile("l", path=f"{W}/f", line="a\\nb")', "must be one line"),
    ('LineInFile("l", path=f"{W}/f", line="x", mode="0600")', "set create=True"),
    ('LineInFile("l", path=f"{W}/f", line="x", insert_after="a", insert_before="b")',
     "not both"),
    ('LineInFile("l", path=f"{W}/f", ensure="absent")', "Set line or regexp"),
    ('LineInFile("l", path=f"{W}/f", line="x", insert_before="EOF")', "only for insert_after"),
    ('BlockInFile("b", path=f"{W}/f", block="x", marker="# tectum")', "must contain {mark}"),
    ('BlockInFile("b", path=f"{W}/f", block="")', "to remove a block use ensure"),
    ('BlockInFile("b", path=f"{W}/f", block="# BEGIN MANAGED BY TECTUM\\n")',
     "holds the marker line"),
    ('IniValue("i", path=f"{W}/f", option="a", ensure="absent", value="1")',
     "value is not used"),
    ('IniValue("i", path=f"{W}/f", option="a=b", value="1")', "must not contain ="),
    ('IniValue("i", path=f"{W}/f", section="[s]", option="a", value="1")', "without brackets"),
])
def test_bad_input_is_refused_at_validate(proj: Proj, body: str, message: str) -> None:
    (proj.world / "f").write_text("")
    proj.write(body + "\n")
    res = proj.run("validate")
    assert res.returncode != 0 and "Traceback" not in res.output
    assert message in res.output, res.output
    assert "line_in_file.l" in res.output or "block_in_file.b" in res.output \
        or "ini_value.i" in res.output


def test_a_symlink_or_directory_path_is_a_plan_error(proj: Proj) -> None:
    (proj.world / "real.conf").write_text("a\n")
    (proj.world / "link.conf").symlink_to(proj.world / "real.conf")
    proj.write("""
        LineInFile("l", path=f"{W}/link.conf", line="b")
    """)
    res = proj.run("plan")
    assert res.returncode == 1 and "Traceback" not in res.output
    assert "link.conf is a symlink, not a regular file" in res.output
    assert "give the path of the file it points to" in res.output
    assert (proj.world / "real.conf").read_text() == "a\n"


def test_a_read_of_a_directory_raises_read_error(conn: LocalConnector, tmp_path: Path) -> None:
    rt = BlockInFileType()
    desired = rt.prepare({"path": str(tmp_path), "block": "x\n"}, "/")
    with pytest.raises(ReadError, match="is a directory, not a regular file"):
        rt.read(conn, [ReadItem(desired, None)])
    # an object known only from state is simply gone
    assert rt.read(conn, [ReadItem(None, desired)]) == [None]


def test_import_ids(proj: Proj) -> None:
    conf = proj.world / "app.ini"
    conf.write_text(INI + "# BEGIN MANAGED BY TECTUM\nx\n# END MANAGED BY TECTUM\n")
    proj.write("""
        IniValue("port", path=f"{W}/app.ini", section="server", option="port", value="8080")
        BlockInFile("b", path=f"{W}/app.ini", block="x\\n")
        LineInFile("l", path=f"{W}/app.ini", line="level=info")
    """)
    proj.ok("import", "ini_value.port", f"{conf}:server:port")
    proj.ok("import", "block_in_file.b", str(conf))
    proj.ok("import", "line_in_file.l", f"{conf}:level=info")
    assert "No changes." in proj.plan()
    res = proj.run("import", "line_in_file.l", "no-path")
    assert res.returncode != 0 and "Traceback" not in res.output


# -- over SSH ---------------------------------------------------------------------------------

@pytest.mark.fleet
@pytest.mark.skipif(os.geteuid() != 0, reason="the fleet harness needs root")
def test_the_three_types_over_ssh() -> None:
    from tectum.providers.host.provider import HostProvider
    from tectum.providers.host.ssh import SSHConnector
    from tests.harness.fleet import Fleet

    with Fleet(1) as fleet:
        host = fleet.host("host1")
        base = f"/srv/tectum-lines-{secrets.token_hex(4)}"
        fleet.run("host1", f"mkdir -p {base}", check=True)
        local = fleet.upper("host1") / base.lstrip("/") / "app.ini"  # (the host's file)
        local.write_text(INI)
        os.chown(local, 4242, 4343)
        local.chmod(0o640)
        conn = SSHConnector(host.name, host.address, port=host.port, key_path=host.key_path,
                            known_hosts=host.known_hosts, log_path="")
        try:
            path = f"{base}/app.ini"
            jobs: list[tuple[HostType, dict[str, Any]]] = [
                (LineInFileType(), {"path": path, "line": "debug = 1", "insert_after": "^host"}),
                (IniValueType(), {"path": path, "section": "log", "option": "level",
                                  "value": "warn"}),
                (BlockInFileType(), {"path": path, "block": "[extra]\nx = 1\n"}),
            ]
            provider = HostProvider()

            def plans(priors: list[dict[str, Any] | None]) -> list[ResourceChange]:
                desired = [rt.prepare(a, "/") for rt, a in jobs]
                provider.begin_read(conn, [(rt, [ReadItem(d, p)]) for (rt, _), d, p
                                           in zip(jobs, desired, priors, strict=True)])
                try:
                    trips = conn.round_trips
                    out = [plan_one(rt, conn, a, p) for (rt, a), p
                           in zip(jobs, priors, strict=True)]
                    assert conn.round_trips == trips  # answered from the one prefetch
                finally:
                    provider.end_read(conn)
                return out

            changes = plans([None, None, None])
            assert [c.action for c in changes] == [Action.CREATE, Action.UPDATE, Action.CREATE]
            records = [rt.apply(conn, c) for (rt, _), c in zip(jobs, changes, strict=True)]
            text = (fleet.upper("host1") / path.lstrip("/")).read_text()
            assert "host = 0.0.0.0\ndebug = 1\n" in text and "level=warn\n" in text
            assert "# BEGIN MANAGED BY TECTUM\n[extra]\nx = 1\n# END" in text
            st = os.lstat(fleet.upper("host1") / path.lstrip("/"))
            assert (st.st_uid, st.st_gid, mode_of(fleet.upper("host1") / path.lstrip("/"))) \
                == (4242, 4343, "0640")
            assert [c.action for c in plans(records)] == [Action.NOOP] * 3
        finally:
            conn.close()
            fleet.run("host1", f"rm -rf {base}")


def test_a_file_managed_whole_and_in_parts_is_refused(proj: Proj) -> None:
    """A ``File`` and a ``LineInFile`` on one path would undo each other at every apply: the
    stack is refused at validate (``ResourceType.part_of``); parts alone are fine."""
    proj.write("""
        File("whole", path=f"{W}/app.conf", content="a = 1\\n")
        LineInFile("part", path=f"{W}/app.conf", line="b = 2")
        IniValue("other", path=f"{W}/other.ini", section="s", option="o", value="1",
                 create=True)
        LineInFile("other_line", path=f"{W}/other.ini", line="# note", create=True)
    """)
    res = proj.run("validate")
    assert res.returncode == 1, res.output
    assert "Object managed twice" in res.stderr
    assert "line_in_file.part manages a part of path" in res.stderr
    assert "which file.whole" in res.stderr
    assert "other.ini" not in res.stderr and res.stderr.count("Object managed twice") == 1
    assert not (proj.world / "app.conf").exists()


# -- review fixes: what a delete removes, secrets in plans, interrupted writes ----------------

def test_delete_removes_the_line_tectum_wrote_not_a_later_match(proj: Proj) -> None:
    """A regexp that now also matches a line someone added after tectum's: the delete removes
    the line exactly as tectum wrote it, and leaves the other one."""
    hosts = proj.world / "hosts.txt"
    hosts.write_text("a\nb\n")
    proj.write("""
        LineInFile("l", path=f"{W}/hosts.txt", line="10.0.0.1 db", regexp="db$")
    """)
    proj.apply()
    assert hosts.read_text() == "a\nb\n10.0.0.1 db\n"
    hosts.write_text(hosts.read_text() + "10.0.0.9 olddb\n")  # an administrator's line
    proj.write("")
    assert "removes the line '10.0.0.1 db'" in proj.plan()
    proj.apply()
    assert hosts.read_text() == "a\nb\n10.0.0.9 olddb\n"


def test_a_line_changed_by_hand_is_only_forgotten(proj: Proj) -> None:
    hosts = proj.world / "hosts.txt"
    hosts.write_text("a\n")
    proj.write("""
        LineInFile("l", path=f"{W}/hosts.txt", line="10.0.0.1 db", regexp="db$")
    """)
    proj.apply()
    hosts.write_text("a\n10.0.0.2 db\n")  # no longer the line tectum wrote
    proj.write("")
    proj.apply()
    assert hosts.read_text() == "a\n10.0.0.2 db\n"
    assert "No changes." in proj.plan()


def test_delete_of_an_option_removes_only_the_line_tectum_wrote(proj: Proj) -> None:
    conf = proj.world / "app.ini"
    conf.write_text(INI)
    proj.write("""
        IniValue("w", path=f"{W}/app.ini", section="server", option="workers", value="4")
        IniValue("t", path=f"{W}/app.ini", section="log", option="target", value="file")
    """)
    proj.apply()
    text = conf.read_text()
    assert "workers = 4\n" in text and text.endswith("target = file\n"), text
    # someone adds a second line of the option; someone else sets the other to a value of
    # their own: neither line is tectum's any more to remove
    conf.write_text(text.replace("workers = 4\n", "workers = 4\nworkers = 8\n")
                    .replace("target = file", "target = syslog"))
    proj.write("")
    proj.apply()
    assert conf.read_text() == INI.replace("port = 8080\n", "port = 8080\nworkers = 8\n") \
        + "target = syslog\n", conf.read_text()


def test_a_stray_marker_never_makes_other_lines_a_block(conn: LocalConnector,
                                                        tmp_path: Path) -> None:
    """An end marker before the begin marker (the block's own end marker removed by hand):
    the lines between are someone else's; neither a delete nor an edit takes them."""
    path = tmp_path / "hosts"
    rt = BlockInFileType()
    attrs = {"path": str(path), "block": "10.0.0.1 db\n"}
    path.write_text("a\n")
    created = rt.apply(conn, plan_one(rt, conn, attrs))
    assert created is not None
    mine = "# BEGIN MANAGED BY TECTUM\n10.0.0.1 db\n"
    path.write_text(f"# END MANAGED BY TECTUM\nkeep me\n{mine}")
    delete = ResourceChange(address="block_in_file.x", type=rt.name, action=Action.DELETE,
                            before=created, after=None, changes=[], prior=created)
    rt.apply(conn, delete)
    assert path.read_text() == f"# END MANAGED BY TECTUM\nkeep me\n{mine}"
    # declared again, the block is not found (no begin marker closed after it): added anew
    change = plan_one(rt, conn, attrs)
    assert change.action is Action.CREATE
    rt.apply(conn, change)
    assert path.read_text().startswith(f"# END MANAGED BY TECTUM\nkeep me\n{mine}")
    assert plan_one(rt, conn, attrs).action is Action.NOOP


SECRETS_INI = """\
[db]
user = app
password = OLD-PASSWORD-111
api_token = OTHER-TOKEN-XYZ
"""


def test_a_sensitive_value_and_the_files_other_lines_never_show_in_a_plan(proj: Proj) -> None:
    """A sensitive variable sets an option, a line and a block: neither the new nor the old
    value, nor any other line of the file, is in the plan, its JSON or a saved plan file."""
    conf = proj.world / "app.ini"
    conf.write_text(SECRETS_INI + "secret_line = OLD-LINE-222\n"
                    "# BEGIN MANAGED BY TECTUM\nOLD-BLOCK-333\n# END MANAGED BY TECTUM\n")
    proj.write("""
        from tectum import var
        pw = var("pw", str, sensitive=True)
        IniValue("pw", path=f"{W}/app.ini", section="db", option="password", value=pw)
        LineInFile("l", path=f"{W}/app.ini", line=f"secret_line = {pw}", regexp="^secret_line")
        BlockInFile("b", path=f"{W}/app.ini", block=f"{pw}\\n")
    """)
    new = "NEW-PASSWORD-444"
    never = ("OLD-PASSWORD-111", "OTHER-TOKEN-XYZ", "user = app", "OLD-LINE-222",
             "OLD-BLOCK-333", new)
    plan = proj.ok("plan", "-var", f"pw={new}").stdout
    assert "Plan: 0 to add, 3 to change" in plan, plan
    assert "value: (sensitive value)" in plan and "line: (sensitive value)" in plan
    as_json = proj.ok("plan", "-var", f"pw={new}", "--json").stdout
    out = proj.root / "plan.bin"
    proj.ok("plan", "-var", f"pw={new}", "-out", str(out))
    saved = out.read_bytes()
    for text in never:
        assert text not in plan, (text, plan)
        assert text not in as_json, (text, as_json)
        assert text.encode() not in saved, text
    shown = proj.ok("show", str(out)).stdout
    assert "ini_value.pw" in shown and not any(t in shown for t in never), shown
    proj.ok("apply", "--auto-approve", str(out))
    assert conf.read_text() == SECRETS_INI.replace("OLD-PASSWORD-111", new) \
        + f"secret_line = {new}\n# BEGIN MANAGED BY TECTUM\n{new}\n# END MANAGED BY TECTUM\n"
    assert "No changes." in proj.ok("plan", "-var", f"pw={new}").stdout


def _exited_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_sweep_removes_what_a_killed_write_left(conn: LocalConnector, tmp_path: Path) -> None:
    """Each type removes the temporary files a killed writer of its files left (the writer's
    pid no longer runs), and nothing else."""
    for i, rt in enumerate((LineInFileType(), BlockInFileType(), IniValueType())):
        path = tmp_path / f"f{i}.conf"
        path.write_text("keep\n")
        leftover = tmp_path / f".f{i}.conf.tectum-{_exited_pid()}-1"
        leftover.write_text("half a fi")
        live = tmp_path / f".f{i}.conf.tectum-{os.getpid()}-1"  # a write in progress
        live.write_text("half")
        other = tmp_path / f".other.conf.tectum-{_exited_pid()}-1"  # not this type's file
        other.write_text("x")
        rt.sweep_interrupted(conn, [{"path": str(path)}, {"path": None}])
        assert not leftover.exists() and live.exists() and other.exists(), rt.name
        assert path.read_text() == "keep\n"
        live.unlink()
        other.unlink()


def test_kill_9_during_a_write_leaves_no_temporary_file(proj: Proj) -> None:
    """``tectum apply`` killed (SIGKILL) while it writes a large file with a line added: the
    next apply removes the temporary file and finishes the edit."""
    big = proj.world / "big.conf"
    body = ("x" * 99 + "\n") * 400_000  # 40 MB: the write takes long enough to be caught
    for attempt in range(3):
        big.write_text(body)
        proj.write(f"""
            LineInFile("l", path=f"{{W}}/big.conf", line="added {attempt}")
        """)
        env = {**tectum_env(), "TECTUM_COMMAND_LOG": str(proj.log)}
        run = subprocess.Popen([sys.executable, "-m", "tectum", "apply", "--auto-approve"],
                               cwd=proj.root, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while not temp_files(proj.world) and run.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.002)
            if temp_files(proj.world):
                os.kill(run.pid, signal.SIGKILL)
        finally:
            run.wait(timeout=60)
        if temp_files(proj.world):
            break
    left = temp_files(proj.world)
    assert left, "every write finished before the kill; nothing to check"
    proj.apply()
    assert temp_files(proj.world) == [], left
    assert big.read_text() == body + f"added {attempt}\n"
    proj.assert_converged()


def temp_files(directory: Path) -> list[str]:
    """The temporary files of atomic writes (``.NAME.tectum-PID-TID``) in ``directory``."""
    return sorted(p.name for p in directory.iterdir()
                  if p.name.startswith(".") and ".tectum-" in p.name)
