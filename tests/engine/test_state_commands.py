"""State commands through the real CLI (``python -m tectum`` in a subprocess): history, show
--version, diff, pull/push, refresh, drift, import, rollback, workspaces and the workspace lock.

Every stack manages only files under ``tmp_path``, except the ``slow`` rollback test with apt
packages, which puts the machine's packages back the way it found them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, tectum_env

HEADER = """\
from tectum import output, var
from tectum.host import Command, Directory, File, Package

W = {world!r}
"""


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def line_sha(text: str) -> str:
    """The content_sha256 of a one-line file holding ``text``."""
    return sha(text + "\n")


@dataclass
class Proj:
    """A project directory (``root``) whose stack manages objects under ``world``."""

    root: Path
    world: Path
    tectum: Callable[..., Result]

    def write(self, body: str) -> None:
        text = HEADER.format(world=str(self.world)) + textwrap.dedent(body)
        (self.root / "stack.py").write_text(text)

    def run(self, *args: str, input: str | None = None,
            env: dict[str, str] | None = None) -> Result:
        return self.tectum(*args, cwd=self.root, input=input, env=env)

    def ok(self, *args: str, env: dict[str, str] | None = None) -> Result:
        res = self.run(*args, env=env)
        assert res.returncode == 0, f"tectum {' '.join(args)} failed:\n{res.output}"
        return res

    def fails(self, *args: str, env: dict[str, str] | None = None) -> Result:
        res = self.run(*args, env=env)
        assert res.returncode == 1, f"tectum {' '.join(args)} should fail:\n{res.output}"
        return res

    def apply(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return self.ok("apply", "--auto-approve", *args, env=env)

    def state_list(self, env: dict[str, str] | None = None) -> list[str]:
        return self.ok("state", "list", env=env).stdout.split()

    def history(self, env: dict[str, str] | None = None) -> list[dict[str, str]]:
        """``state history`` rows as dicts (serial, date, time, author, operation, revision)."""
        lines = self.ok("state", "history", env=env).stdout.splitlines()
        if not lines or not lines[0].lstrip().startswith("SERIAL"):
            return []
        keys = ("serial", "date", "time", "author", "operation", "revision")
        return [dict(zip(keys, line.split(), strict=True)) for line in lines[1:]]

    def pull(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.ok("state", "pull").stdout)
        return doc

    def files(self) -> dict[str, str]:
        """Every regular file under ``world`` (relative path → text)."""
        return {str(p.relative_to(self.world)): p.read_text()
                for p in sorted(self.world.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def _no_workspace_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TECTUM_WORKSPACE", raising=False)


@pytest.fixture
def proj(tmp_path: Path, tectum: Callable[..., Result]) -> Proj:
    root = tmp_path / "proj"
    world = tmp_path / "world"
    root.mkdir()
    world.mkdir()
    return Proj(root, world, tectum)


def author() -> str:
    return f"{pwd.getpwuid(os.getuid()).pw_name}@{os.uname().nodename}"[:24]


# -- history, show --version, diff ---------------------------------------------------------------

def git(root: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=tectum tests",
         "-c", "user.email=tests@example.invalid", "-c", "commit.gpgsign=false", *args],
        capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def test_history_lists_applies_with_author_operation_and_revision(proj: Proj) -> None:
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a1\\n")
    """)
    assert "No state versions yet" in proj.ok("state", "history").stdout

    # outside a git work tree: no revision
    proj.apply()
    rows = proj.history()
    assert [(r["serial"], r["author"], r["operation"], r["revision"]) for r in rows] == \
        [("1", author(), "apply", "-")]

    # a git work tree: each apply records the commit the stack was at
    git(proj.root, "init", "-q")
    (proj.root / ".gitignore").write_text(".tectum/\n")
    git(proj.root, "add", "-A")
    git(proj.root, "commit", "-q", "-m", "v2")
    rev2 = git(proj.root, "rev-parse", "HEAD")
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a2\\n")
    """)
    git(proj.root, "commit", "-q", "-a", "-m", "v2b")
    rev2b = git(proj.root, "rev-parse", "HEAD")
    assert rev2 != rev2b
    proj.apply()

    # uncommitted edits: the revision says so
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a3\\n")
    """)
    proj.apply()
    proj.ok("destroy", "--auto-approve")

    rows = proj.history()
    assert [r["serial"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["operation"] for r in rows] == ["apply", "apply", "apply", "destroy"]
    assert {r["author"] for r in rows} == {author()}
    assert rows[1]["revision"] == rev2b[:12]
    assert rows[2]["revision"] == rev2b[:12] + "-dirty"
    assert rows[3]["revision"].startswith(rev2b[:12])
    for r in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", r["date"]) and re.fullmatch(r"\d\d:\d\d:\d\d",
                                                                            r["time"])


THREE_VERSIONS = (
    """
        File("a", path=f"{W}/a.txt", content="a1\\n", mode="0644")
        File("b", path=f"{W}/b.txt", content="b1\\n", mode="0600")
        File("c", path=f"{W}/c.txt", content="c1\\n")
        output("v", 1)
    """,
    """
        File("a", path=f"{W}/a.txt", content="a2\\n", mode="0640")
        File("b", path=f"{W}/b.txt", content="b2\\n", mode="0600")
        File("c", path=f"{W}/c.txt", content="c1\\n")
        d = Directory("d", path=f"{W}/d")
        File("e", path=f"{d.path}/e.txt", content="e2\\n")
        output("v", 2)
    """,
    """
        File("a", path=f"{W}/a.txt", content="a3\\n", mode="0640")
        File("b", path=f"{W}/b.txt", content="b2\\n", mode="0600")
        d = Directory("d", path=f"{W}/d")
        File("e", path=f"{d.path}/e.txt", content="e3\\n")
        output("v", 3)
    """,
)

V1_FILES = {"a.txt": "a1\n", "b.txt": "b1\n", "c.txt": "c1\n"}
V3_FILES = {"a.txt": "a3\n", "b.txt": "b2\n", "d/e.txt": "e3\n"}


def apply_three_versions(proj: Proj) -> None:
    for body in THREE_VERSIONS:
        proj.write(body)
        proj.apply()
    assert proj.files() == V3_FILES
    assert [r["serial"] for r in proj.history()] == ["1", "2", "3"]


def test_state_show_version(proj: Proj) -> None:
    apply_three_versions(proj)

    whole = proj.ok("state", "show", "--version", "1").stdout
    assert whole.startswith("State version 1 (lineage ")
    assert "# file.a:" in whole and "# file.b:" in whole and "# file.c:" in whole
    assert "directory.d" not in whole and "file.e" not in whole
    assert f'"{line_sha("a1")}"' in whole
    assert "v = 1" in whole

    latest = proj.ok("state", "show").stdout
    assert latest.startswith("State version 3 (lineage ")
    assert "# file.c:" not in latest
    assert f'"{line_sha("a3")}"' in latest

    one = proj.ok("state", "show", "file.a", "--version", "1").stdout
    assert one.startswith("# file.a:")
    assert f'content_sha256 = "{line_sha("a1")}"' in one
    assert 'mode           = "0644"' in one
    assert "file.b" not in one
    one2 = proj.ok("state", "show", "file.a", "--version", "2").stdout
    assert f'"{line_sha("a2")}"' in one2 and '"0640"' in one2

    gone = proj.fails("state", "show", "file.c", "--version", "3")
    assert "No such resource in state" in gone.output
    assert "file.c is not in state version 3" in gone.output

    missing = proj.fails("state", "show", "--version", "9")
    assert "No such state version" in missing.output
    assert "no state version 9" in missing.output


def test_state_diff(proj: Proj) -> None:
    apply_three_versions(proj)
    out = proj.ok("state", "diff", "1", "3").stdout
    lines = out.splitlines()
    assert "~ file.a" in lines
    assert f'    content_sha256: "{line_sha("a1")}" → "{line_sha("a3")}"' in lines
    assert '    mode: "0644" → "0640"' in lines
    assert "~ file.b" in lines
    assert f'    content_sha256: "{line_sha("b1")}" → "{line_sha("b2")}"' in lines
    assert "- file.c" in lines
    assert "+ directory.d" in lines
    assert "+ file.e" in lines
    # in order of address, each once
    heads = [line for line in lines if not line.startswith(" ")]
    assert heads == ["+ directory.d", "~ file.a", "~ file.b", "- file.c", "+ file.e"]

    back = proj.ok("state", "diff", "3", "1").stdout.splitlines()
    assert "+ file.c" in back and "- file.e" in back and "- directory.d" in back

    same = proj.ok("state", "diff", "2", "2").stdout
    assert "State versions 2 and 2 manage the same objects" in same

    bad = proj.fails("state", "diff", "1", "7")
    assert "No such state version" in bad.output


def test_state_diff_lists_only_attributes_that_changed(proj: Proj) -> None:
    """Between two applies that changed only a file's content, the diff shows only the
    content."""
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a1\\n")
    """)
    proj.apply()
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a2\\n")
    """)
    proj.apply()
    out = proj.ok("state", "diff", "1", "2").stdout
    assert out.splitlines() == [
        "~ file.a",
        f'    content_sha256: "{line_sha("a1")}" → "{line_sha("a2")}"',
    ], out


# -- pull / push --------------------------------------------------------------------------------

def test_pull_then_push_and_the_push_rules(proj: Proj, tmp_path: Path) -> None:
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a1\\n")
    """)
    proj.apply()
    v1 = proj.pull()
    assert v1["serial"] == 1 and [r["address"] for r in v1["resources"]] == ["file.a"]
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a2\\n")
        File("b", path=f"{W}/b.txt", content="b2\\n")
    """)
    proj.apply()
    v2 = proj.pull()
    assert v2["serial"] == 2 and v2["lineage"] == v1["lineage"]

    # the current document pushed back: accepted, a new version
    f2 = tmp_path / "v2.json"
    f2.write_text(json.dumps(v2))
    res = proj.ok("state", "push", str(f2))
    assert "Pushed: the state is now version 3." in res.stdout
    assert proj.state_list() == ["file.a", "file.b"]
    assert proj.history()[-1]["operation"] == "push"

    # an older serial: refused, then accepted with --force
    f1 = tmp_path / "v1.json"
    f1.write_text(json.dumps(v1))
    older = proj.fails("state", "push", str(f1))
    assert "State serial is older" in older.output
    assert "serial 1, lower than the stored 3" in older.output
    assert len(proj.history()) == 3
    assert proj.state_list() == ["file.a", "file.b"]
    res = proj.ok("state", "push", "--force", str(f1))
    assert "now version 4" in res.stdout
    assert proj.state_list() == ["file.a"]
    assert proj.pull()["resources"] == v1["resources"]

    # another lineage: refused, then accepted with --force
    other = dict(v2, lineage="00000000-1111-2222-3333-444444444444", serial=99)
    fo = tmp_path / "other.json"
    fo.write_text(json.dumps(other))
    refused = proj.fails("state", "push", str(fo))
    assert "State lineage differs" in refused.output
    assert "00000000-1111-2222-3333-444444444444" in refused.output
    assert proj.pull()["lineage"] == v1["lineage"]
    assert len(proj.history()) == 4
    proj.ok("state", "push", str(fo), "--force")
    now = proj.pull()
    assert now["lineage"] == "00000000-1111-2222-3333-444444444444"
    assert now["serial"] == 99 + 1  # max(pushed, latest) + 1
    assert proj.state_list() == ["file.a", "file.b"]

    # the world was never touched by any of it
    assert proj.files() == {"a.txt": "a2\n", "b.txt": "b2\n"}
    assert "No changes." in proj.ok("plan").stdout

    # not a state document
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": 1}')
    bad = proj.fails("state", "push", str(junk))
    assert "Invalid state file" in bad.output


# -- refresh and drift --------------------------------------------------------------------------

DRIFT_STACK = """
    File("content", path=f"{W}/content.txt", content="orig\\n", mode="0644")
    File("mode", path=f"{W}/mode.txt", content="m\\n", mode="0640")
    File("deleted", path=f"{W}/deleted.txt", content="d\\n")
    File("ignored", path=f"{W}/ignored.txt", content="i\\n", mode="0644",
         ignore_changes=["mode"])
    File("untouched", path=f"{W}/untouched.txt", content="u\\n", mode="0644")
"""


def hand_edits(world: Path) -> None:
    (world / "content.txt").write_text("edited by hand\n")
    os.chmod(world / "mode.txt", 0o600)
    (world / "deleted.txt").unlink()
    os.chmod(world / "ignored.txt", 0o666)


def test_refresh_reports_hand_edits_and_writes_a_version(proj: Proj) -> None:
    proj.write(DRIFT_STACK)
    proj.apply()
    res = proj.ok("refresh")
    assert "No drift." in res.stdout
    assert len(proj.history()) == 1  # nothing to record: no new version

    hand_edits(proj.world)
    res = proj.ok("refresh")
    out = res.stdout
    assert "Objects changed outside of tectum:" in out
    assert "  ~ file.content:" in out
    assert "      content: changed\n" in out
    # never a digest (or a prefix of one): for a file holding a secret it would let anyone
    # test guessed passwords offline
    assert line_sha("orig")[:8] not in out and line_sha("edited by hand")[:8] not in out
    assert "  ~ file.mode:" in out
    assert 'mode: "0640" → "0600"' in out
    assert "  - file.deleted: deleted" in out
    assert "file.ignored" not in out
    assert "file.untouched" not in out
    assert "State updated to version 2." in out

    rows = proj.history()
    assert [(r["serial"], r["operation"]) for r in rows] == [("1", "apply"), ("2", "refresh")]
    # the refreshed state is what is there now; the deleted object left state
    assert proj.state_list() == ["file.content", "file.ignored", "file.mode", "file.untouched"]
    shown = proj.ok("state", "show", "file.mode").stdout
    assert 'mode           = "0600"' in shown
    # refresh changes nothing in the world
    assert (proj.world / "content.txt").read_text() == "edited by hand\n"
    assert not (proj.world / "deleted.txt").exists()

    again = proj.ok("refresh")
    assert "No drift." in again.stdout
    assert len(proj.history()) == 2

    # apply puts it all back
    proj.apply()
    assert (proj.world / "content.txt").read_text() == "orig\n"
    assert (proj.world / "mode.txt").stat().st_mode & 0o777 == 0o640
    assert (proj.world / "deleted.txt").read_text() == "d\n"


def test_drift_json_and_detailed_exitcode(proj: Proj) -> None:
    proj.write(DRIFT_STACK)
    proj.apply()

    res = proj.run("drift", "--detailed-exitcode")
    assert res.returncode == 0, res.output
    assert "No drift." in res.stdout
    assert json.loads(proj.ok("drift", "--json").stdout) == {"drift": []}

    hand_edits(proj.world)
    before = proj.files()
    res = proj.run("drift", "--json", "--detailed-exitcode")
    assert res.returncode == 2, res.output
    report = {d["address"]: d for d in json.loads(res.stdout)["drift"]}
    assert sorted(report) == ["file.content", "file.deleted", "file.mode"]
    assert report["file.content"]["status"] == "changed"
    assert report["file.content"]["type"] == "file"
    assert report["file.content"]["attributes"] == [
        {"name": "content_sha256", "recorded": line_sha("orig"),
         "found": line_sha("edited by hand")}]
    assert report["file.mode"]["attributes"] == [
        {"name": "mode", "recorded": "0640", "found": "0600"}]
    assert report["file.deleted"] == {"address": "file.deleted", "type": "file",
                                      "status": "deleted", "attributes": []}

    # without --detailed-exitcode drift is not an error
    text = proj.ok("drift")
    assert "Objects changed outside of tectum:" in text.stdout
    assert "file.ignored" not in text.stdout

    # drift changes nothing: not the world, not the state
    assert proj.files() == before
    assert (proj.world / "ignored.txt").stat().st_mode & 0o777 == 0o666
    assert len(proj.history()) == 1
    assert "file.deleted" in proj.state_list()

    # the plan puts back what the code manages, and leaves the ignored mode alone
    plan = proj.ok("plan").stdout
    assert "~ file.ignored" not in plan
    assert "~ file.content" in plan and "~ file.mode" in plan and "+ file.deleted" in plan
    proj.apply()
    assert proj.run("drift", "--detailed-exitcode").returncode == 0
    assert (proj.world / "ignored.txt").stat().st_mode & 0o777 == 0o666


def test_plan_drift_note_respects_ignore_changes(proj: Proj) -> None:
    """An attribute in ignore_changes is not reported as drift by `drift`; the plan's note on
    objects changed outside tectum should not list it either."""
    proj.write("""
        File("ignored", path=f"{W}/ignored.txt", content="i\\n", mode="0644",
             ignore_changes=["mode"])
    """)
    proj.apply()
    os.chmod(proj.world / "ignored.txt", 0o666)
    assert proj.run("drift", "--detailed-exitcode").returncode == 0
    plan = proj.ok("plan").stdout
    assert "No changes." in plan
    assert "file.ignored" not in plan, plan


# -- import ---------------------------------------------------------------------------------------

def test_import_then_plan_shows_only_the_content_difference(proj: Proj) -> None:
    existing = proj.world / "imp.txt"
    existing.write_text("existing\n")
    os.chmod(existing, 0o600)
    proj.write("""
        File("keep", path=f"{W}/keep.txt", content="k\\n")
    """)
    proj.apply()
    proj.write("""
        File("keep", path=f"{W}/keep.txt", content="k\\n")
        File("imp", path=f"{W}/imp.txt", content="declared\\n", mode="0600")
    """)
    serials = len(proj.history())

    res = proj.ok("import", "file.imp", str(existing))
    assert "Import successful!" in res.stdout
    assert f"{existing} is now managed as file.imp" in res.stdout
    assert proj.state_list() == ["file.imp", "file.keep"]
    rows = proj.history()
    assert len(rows) == serials + 1 and rows[-1]["operation"] == "import"
    shown = proj.ok("state", "show", "file.imp").stdout
    assert f'content_sha256 = "{line_sha("existing")}"' in shown
    assert 'mode           = "0600"' in shown
    assert existing.read_text() == "existing\n"  # import only records

    plan = proj.ok("plan").stdout
    assert "~ file.imp" in plan
    assert "-existing" in plan and "+declared" in plan
    assert "mode:" not in plan  # mode already matches
    assert "file.keep" not in plan
    assert "Plan: 0 to add, 1 to change, 0 to replace, 0 to destroy." in plan
    proj.apply()
    assert existing.read_text() == "declared\n"
    assert "No changes." in proj.ok("plan").stdout


def test_import_errors(proj: Proj) -> None:
    there = proj.world / "there.txt"
    there.write_text("x\n")
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a\\n")
        File("there", path=f"{W}/there.txt", content="x\\n")
    """)
    proj.apply()  # adopts there.txt, creates a.txt
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a\\n")
        File("there", path=f"{W}/there.txt", content="x\\n")
        File("new", path=f"{W}/new.txt", content="n\\n")
    """)
    before = proj.pull()

    undeclared = proj.fails("import", "file.nope", str(there))
    assert "Error: Import to an undeclared resource" in undeclared.output
    assert "file.nope is not declared in the stack" in undeclared.output

    managed = proj.fails("import", "file.a", str(proj.world / "a.txt"))
    assert "Error: Resource already managed" in managed.output
    assert "file.a is already in state" in managed.output

    missing = proj.fails("import", "file.new", str(proj.world / "new.txt"))
    assert "Error: Cannot import non-existent object" in missing.output
    assert f"No file '{proj.world}/new.txt' exists on the host" in missing.output

    assert proj.pull() == before
    assert not (proj.world / "new.txt").exists()


# -- rollback -------------------------------------------------------------------------------------

def test_rollback_to_version_1_restores_its_files(proj: Proj) -> None:
    apply_three_versions(proj)
    res = proj.ok("rollback", "--to", "1", "--auto-approve")
    assert "Rolling back to state version 1." in res.stdout
    assert "Apply complete!" in res.stdout
    assert "v = 1" in res.stdout
    assert proj.files() == V1_FILES
    assert not (proj.world / "d").exists()
    modes = {n: (proj.world / n).stat().st_mode & 0o777 for n in V1_FILES}
    assert modes["a.txt"] == 0o644 and modes["b.txt"] == 0o600
    assert proj.state_list() == ["file.a", "file.b", "file.c"]
    assert proj.ok("output", "v").stdout.strip() == "1"
    assert len(proj.history()) == 4

    # done: rolling back again has nothing to do
    again = proj.ok("rollback", "--to", "1", "--auto-approve")
    assert "No changes." in again.stdout
    assert len(proj.history()) == 4
    # the code still says version 3: a plan goes forward again
    assert proj.run("plan", "--detailed-exitcode").returncode == 2


def test_rollback_out_saves_a_plan_that_apply_applies(proj: Proj, tmp_path: Path) -> None:
    apply_three_versions(proj)
    planfile = tmp_path / "rollback.plan"
    res = proj.ok("rollback", "--to", "1", "-out", str(planfile))
    assert "Rolling back to state version 1." in res.stdout
    assert f"Saved the rollback plan to {planfile}" in res.stdout
    assert "- file.e" in res.stdout and "- directory.d" in res.stdout
    assert "+ file.c" in res.stdout
    assert proj.files() == V3_FILES  # nothing applied yet
    assert len(proj.history()) == 3

    shown = proj.ok("show", str(planfile)).stdout
    assert "+ file.c" in shown
    proj.ok("apply", str(planfile))
    assert proj.files() == V1_FILES
    assert proj.state_list() == ["file.a", "file.b", "file.c"]

    stale = proj.fails("apply", str(planfile))
    assert "Saved plan is stale" in stale.output


def test_rollback_refused_without_desired_state(proj: Proj) -> None:
    apply_three_versions(proj)
    (proj.world / "a.txt").write_text("by hand\n")
    assert "State updated to version 4." in proj.ok("refresh").stdout

    res = proj.fails("rollback", "--to", "4", "--auto-approve")
    assert "Error: No desired state recorded" in res.output
    assert "State version 4 was written by a refresh" in res.output
    nosuch = proj.fails("rollback", "--to", "42", "--auto-approve")
    assert "No such state version" in nosuch.output
    # nothing changed
    assert (proj.world / "a.txt").read_text() == "by hand\n"
    assert len(proj.history()) == 4

    # versions written by import and push keep no desired state either
    proj.write(THREE_VERSIONS[2] + '    File("x", path=f"{W}/x.txt", content="x\\n")\n')
    (proj.world / "x.txt").write_text("x\n")
    proj.ok("import", "file.x", str(proj.world / "x.txt"))
    assert proj.history()[-1]["operation"] == "import"
    res = proj.fails("rollback", "--to", "5", "--auto-approve")
    assert "written by a import" in res.output or "written by an import" in res.output


# -- rollback with real packages (slow) -----------------------------------------------------------

APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
ROLLBACK_PACKAGES = ("sl", "hello")  # tiny, from Debian main, no new dependencies


def installed(name: str) -> bool:
    res = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", name],
                         capture_output=True, text=True, check=False)
    return res.returncode == 0 and res.stdout[1:2] == "i"


def has_candidate(name: str) -> bool:
    res = subprocess.run(["apt-cache", "policy", name], capture_output=True, text=True,
                         check=False, env=APT_ENV)
    return any(line.strip().startswith("Candidate:") and "(none)" not in line
               for line in res.stdout.splitlines())


@pytest.fixture
def package_set() -> Iterator[dict[str, bool]]:
    """The test packages' installed status before the test; put back afterwards."""
    if os.geteuid() != 0:
        pytest.skip("apt needs root")
    for name in ROLLBACK_PACKAGES:
        if not has_candidate(name):
            pytest.skip(f"apt has no candidate for {name}")
    before = {name: installed(name) for name in ROLLBACK_PACKAGES}
    yield before
    extra = [n for n, was in before.items() if not was]
    lost = [n for n, was in before.items() if was and not installed(n)]
    if extra:
        subprocess.run(["apt-get", "purge", "-y", "-q", *extra], capture_output=True,
                       check=False, env=APT_ENV)
    if lost:
        subprocess.run(["apt-get", "install", "-y", "-q", *lost], capture_output=True,
                       check=False, env=APT_ENV)
    assert {name: installed(name) for name in ROLLBACK_PACKAGES} == before


@pytest.mark.apt
def test_rollback_with_packages(proj: Proj, package_set: dict[str, bool]) -> None:
    for name in ROLLBACK_PACKAGES:
        if installed(name):
            subprocess.run(["apt-get", "remove", "-y", "-q", name], capture_output=True,
                           check=True, env=APT_ENV)
    v1 = """
        File("motd", path=f"{W}/motd", content="v1\\n")
    """
    v2 = """
        File("motd", path=f"{W}/motd", content="v2\\n")
        Package("sl")
    """
    v3 = """
        File("motd", path=f"{W}/motd", content="v3\\n")
        Package("sl")
        Package("hello")
    """
    for body in (v1, v2, v3):
        proj.write(body)
        proj.apply()
    assert installed("sl") and installed("hello")
    assert proj.state_list() == ["file.motd", "package.hello", "package.sl"]

    res = proj.ok("rollback", "--to", "1", "--auto-approve")
    assert "- package.sl" in res.stdout and "- package.hello" in res.stdout
    assert "removing the package keeps its configuration files" in res.output
    assert not installed("sl") and not installed("hello")
    assert proj.files() == {"motd": "v1\n"}
    assert proj.state_list() == ["file.motd"]
    assert "No changes." in proj.ok("rollback", "--to", "1").stdout

    # and forward again to version 2 (sl back, hello not)
    proj.ok("rollback", "--to", "2", "--auto-approve")
    assert installed("sl") and not installed("hello")
    assert proj.files() == {"motd": "v2\n"}


# -- workspaces ----------------------------------------------------------------------------------

WS_STACK = """
    name = var("name", default="default")
    File("a", path=f"{W}/{name}.txt", content=f"{name}\\n")
"""


def test_workspaces(proj: Proj) -> None:
    proj.write(WS_STACK)
    assert proj.ok("workspace", "list").stdout.splitlines() == ["* default"]
    proj.apply()
    assert proj.files() == {"default.txt": "default\n"}

    res = proj.ok("workspace", "new", "staging")
    assert "Created and switched to workspace 'staging'." in res.stdout
    assert proj.ok("workspace", "list").stdout.splitlines() == ["  default", "* staging"]
    assert proj.state_list() == []  # a new workspace starts empty
    exists = proj.fails("workspace", "new", "staging")
    assert "Workspace exists" in exists.output

    proj.apply("-var", "name=staging")
    assert proj.files() == {"default.txt": "default\n", "staging.txt": "staging\n"}
    assert proj.state_list() == ["file.a"]
    assert f'"{proj.world}/staging.txt"' in proj.ok("state", "show", "file.a").stdout

    # the default workspace's state did not move
    default_env = {"TECTUM_WORKSPACE": "default"}
    assert f'"{proj.world}/default.txt"' in \
        proj.ok("state", "show", "file.a", env=default_env).stdout
    assert [r["serial"] for r in proj.history(env=default_env)] == ["1"]

    # deleting: not the selected one, not a non-empty one, not default
    selected = proj.fails("workspace", "delete", "staging")
    assert "Cannot delete workspace" in selected.output and "selected" in selected.output
    assert "Switched to workspace 'default'." in proj.ok("workspace", "select", "default").stdout
    assert proj.ok("workspace", "list").stdout.splitlines() == ["* default", "  staging"]
    assert "No changes." in proj.ok("plan").stdout
    not_empty = proj.fails("workspace", "delete", "staging")
    assert "Workspace is not empty" in not_empty.output
    nodefault = proj.fails("workspace", "delete", "default")
    assert "Cannot delete workspace" in nodefault.output
    nosuch = proj.fails("workspace", "select", "prod")
    assert "No such workspace" in nosuch.output
    invalid = proj.fails("workspace", "new", "no/slash")
    assert "Invalid workspace name" in invalid.output

    # empty it, then it can go
    proj.ok("destroy", "--auto-approve", "-var", "name=staging",
            env={"TECTUM_WORKSPACE": "staging"})
    assert proj.files() == {"default.txt": "default\n"}
    assert "Deleted workspace 'staging'." in proj.ok("workspace", "delete", "staging").stdout
    assert proj.ok("workspace", "list").stdout.splitlines() == ["* default"]
    assert proj.state_list() == ["file.a"]
    assert "No changes." in proj.ok("plan").stdout


# -- the workspace lock --------------------------------------------------------------------------

def popen_tectum(root: Path, *args: str, log: Path,
                 workspace: str | None = None) -> subprocess.Popen[bytes]:
    env = tectum_env()
    if workspace:
        env["TECTUM_WORKSPACE"] = workspace
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "tectum", *args], cwd=root, env=env,
                                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)


def wait_for_lock(root: Path, pid: int, timeout: float = 20.0,
                  workspace: str = "default") -> dict[str, Any]:
    """The lock details once ``pid`` holds the workspace's lock."""
    path = root / ".tectum" / f"state.db.{workspace}.lock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = json.loads(path.read_text() or "null")
        except (OSError, ValueError):
            info = None
        if isinstance(info, dict) and info.get("pid") == pid:
            return info
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} never took the lock")


def test_lock_refuses_a_second_run_and_lock_timeout_waits(proj: Proj, tmp_path: Path) -> None:
    proj.write("""
        File("a", path=f"{W}/a.txt", content="a\\n")
        Command("slow", command=["sleep", "3"])
    """)
    holder = popen_tectum(proj.root, "apply", "--auto-approve", log=tmp_path / "holder.log")
    try:
        info = wait_for_lock(proj.root, holder.pid)
        assert info["operation"] == "apply"
        # the holder evaluated its stack already; this change is what the others would do
        proj.write("""
            File("a", path=f"{W}/a.txt", content="a\\n")
            Command("slow", command=["sleep", "3"])
            File("x", path=f"{W}/x.txt", content="x\\n")
        """)
        second = proj.fails("apply", "--auto-approve")
        assert "Error: State is locked" in second.output
        assert f"pid {holder.pid} on" in second.output
        assert f"ID {info['id']}" in second.output
        assert "operation apply" in second.output
        assert not (proj.world / "x.txt").exists()
        assert "x" not in second.stdout.split()  # no plan printed, nothing done

        short = proj.fails("apply", "--auto-approve", "--lock-timeout", "300ms")
        assert "State is locked" in short.output and "(waited 0.3 s)" in short.output

        wrong = proj.fails("force-unlock", "WRONGID")
        assert "Lock ID mismatch" in wrong.output
        assert info["id"] in wrong.output
        in_use = proj.fails("force-unlock", info["id"])
        assert "Lock is in use" in in_use.output
        assert holder.poll() is None  # still running, still holding

        started = time.monotonic()
        waiter = proj.ok("apply", "--auto-approve", "--lock-timeout", "10s")
        waited = time.monotonic() - started
        assert holder.wait(timeout=30) == 0, (tmp_path / "holder.log").read_text()
        assert waited > 0.5
        assert "Apply complete!" in waiter.stdout
        assert (proj.world / "x.txt").read_text() == "x\n"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    holder_log = (tmp_path / "holder.log").read_text()
    assert "Apply complete!" in holder_log
    assert proj.state_list() == ["command.slow", "file.a", "file.x"]
    assert [r["operation"] for r in proj.history()] == ["apply", "apply"]
    assert "No changes." in proj.ok("plan").stdout


def test_workspace_delete_refused_while_a_run_holds_its_lock(proj: Proj, tmp_path: Path) -> None:
    """Deleting a workspace must not pull its state from under a run that is applying in it."""
    proj.write("""
        File("a", path=f"{W}/staging.txt", content="s\\n")
        Command("slow", command=["sleep", "3"])
    """)
    proj.ok("workspace", "new", "staging")
    proj.ok("workspace", "select", "default")
    run = popen_tectum(proj.root, "apply", "--auto-approve", log=tmp_path / "staging.log",
                       workspace="staging")
    try:
        wait_for_lock(proj.root, run.pid, workspace="staging")
        res = proj.run("workspace", "delete", "staging")
        assert run.wait(timeout=30) == 0, (tmp_path / "staging.log").read_text()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    staging = {"TECTUM_WORKSPACE": "staging"}
    assert res.returncode == 1, f"deleted under a running apply:\n{res.output}\n" \
        f"staging history now:\n{proj.ok('state', 'history', env=staging).stdout}"
    assert "locked" in res.output
    assert [r["serial"] for r in proj.history(env=staging)] == ["1", "2"]
    assert proj.state_list(env=staging) == ["command.slow", "file.a"]
    proj.ok("destroy", "--auto-approve", env=staging)
