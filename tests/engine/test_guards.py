"""Guards that keep apply from acting on a world or a state it has not seen, through the real CLI.

Each test here catches a one-line bug that the rest of the suite let through (issue 10, item 19):

* ``apply PLANFILE`` must take the workspace lock like every other apply;
* after ``kill -9``, the recovery plan must not plan deletes for objects the killed run never
  made (and must still remove those it did make);
* the world check before a saved plan must cover deletes too.

Every stack manages only files under ``tmp_path``; every process a test starts runs in its own
session and is killed with its children at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, run_tectum, tectum_env

HEADER = """\
from tectum.host import Command, File

W = {world!r}
"""

#: holds the workspace lock through the Python API until its standard input closes
LOCK_HOLDER = """\
import sys
from tectum.engine.session import Session

session = Session(sys.argv[1], workspace="default")
try:
    with session.locked("test"):
        print("locked", flush=True)
        sys.stdin.read()
finally:
    session.close()
"""


@dataclass
class Proj:
    """A project directory (``root``) whose stack manages files under ``world``."""

    root: Path
    world: Path
    logs: Path
    started: list[subprocess.Popen[Any]] = field(default_factory=list)

    def write(self, body: str) -> None:
        text = HEADER.format(world=str(self.world)) + textwrap.dedent(body)
        (self.root / "stack.py").write_text(text)

    def run(self, *args: str) -> Result:
        return run_tectum(*args, cwd=self.root)

    def ok(self, *args: str) -> Result:
        res = self.run(*args)
        assert res.returncode == 0, f"tectum {' '.join(args)} failed:\n{res.output}"
        return res

    def state_list(self) -> list[str]:
        return self.ok("state", "list").stdout.split()

    def serials(self) -> list[str]:
        """The lines of ``state history`` after its header: one per stored state version."""
        lines = self.ok("state", "history").stdout.splitlines()
        return lines[1:] if lines and "SERIAL" in lines[0] else []

    def world_files(self) -> dict[str, str]:
        """Every file under ``world`` (by name) with its content."""
        return {p.name: p.read_text() for p in sorted(self.world.iterdir()) if p.is_file()}

    def plan_json(self) -> dict[str, Any]:
        res = self.ok("plan", "--json")
        data: dict[str, Any] = json.loads(res.stdout)
        return data

    def popen(self, argv: list[str], name: str, *,
              stdin: int = subprocess.DEVNULL) -> subprocess.Popen[Any]:
        """Start ``argv`` in the project, in its own session, in tectum's test environment."""
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        try:
            proc = subprocess.Popen(argv, cwd=self.root, env=tectum_env(), stdin=stdin,
                                    stdout=subprocess.PIPE if stdin == subprocess.PIPE else log,
                                    stderr=log, start_new_session=True)
        finally:
            log.close()
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def reap(self, proc: subprocess.Popen[Any]) -> None:
        """Kill ``proc`` and everything left of its session."""
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proj]:
    monkeypatch.delenv("TECTUM_WORKSPACE", raising=False)  # the lock holder's Session too
    root, world, logs = tmp_path / "proj", tmp_path / "world", tmp_path / "logs"
    for d in (root, world, logs):
        d.mkdir()
    p = Proj(root, world, logs)
    yield p
    for proc in p.started:
        p.reap(proc)


def hold_lock(proj: Proj) -> subprocess.Popen[Any]:
    """A helper process holding the workspace lock (``Session.locked``) until its stdin closes."""
    holder = proj.popen([sys.executable, "-c", LOCK_HOLDER, str(proj.root)], "holder",
                        stdin=subprocess.PIPE)
    assert holder.stdout is not None
    line = holder.stdout.readline()
    assert line == b"locked\n", f"the lock holder did not take the lock:\n{proj.log('holder')}"
    return holder


def release(proj: Proj, holder: subprocess.Popen[Any]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.wait(timeout=30) == 0, proj.log("holder")


# -- (a) a saved plan takes the lock ------------------------------------------------------------

def test_apply_planfile_is_refused_while_another_process_holds_the_lock(proj: Proj) -> None:
    """``apply PLANFILE`` while another process holds the workspace lock fails with the lock
    error and changes nothing: no file, no state version, no intent left in the journal."""
    proj.write("""
        File("a", path=f"{W}/a.txt", content="one\\n")
    """)
    proj.ok("apply", "--auto-approve")
    proj.write("""
        File("a", path=f"{W}/a.txt", content="two\\n")
        File("b", path=f"{W}/b.txt", content="new\\n")
    """)
    planfile = proj.root / "change.plan"
    proj.ok("plan", "-out", str(planfile))
    history = proj.serials()

    holder = hold_lock(proj)
    try:
        res = proj.run("apply", str(planfile))
        assert res.returncode == 1, res.output
        assert "State is locked" in res.output, res.output
        assert f"pid {holder.pid} on" in res.output, res.output
        assert "Apply complete" not in res.output and "created" not in res.output, res.output
        assert proj.world_files() == {"a.txt": "one\n"}
    finally:
        release(proj, holder)

    # nothing was recorded either: the same state versions, nothing pending in the journal
    assert proj.serials() == history
    assert proj.state_list() == ["file.a"]
    again = proj.ok("plan").stdout
    assert "interrupted" not in again and "Plan: 1 to add, 1 to change" in again, again
    # the plan was good: once the lock is free it applies exactly
    proj.ok("apply", str(planfile))
    assert proj.world_files() == {"a.txt": "two\n", "b.txt": "new\n"}
    assert len(proj.serials()) == len(history) + 1


# -- (b) after kill -9: no deletes for objects the killed run never made -----------------------

LATE = 5


def test_recovery_plans_no_delete_for_what_the_killed_run_never_made(proj: Proj) -> None:
    """A run is killed after it wrote ``early`` but before it made the ``late`` files (they
    wait on a command that sleeps for a minute): their intents stay pending in the journal.
    The next stack declares none of them. The recovery plan removes ``early``, which exists, and
    plans nothing for the ``late`` files, which never existed."""
    lates = "\n".join(
        f'File("late{k}", path=f"{{W}}/late{k}.txt", content="late {k}\\n", depends_on=[gate])'
        for k in range(LATE))
    proj.write(f"""
gate = Command("gate", command=["sleep", "60"])
File("early", path=f"{{W}}/early.txt", content="early\\n")
{lates}
""")
    run = proj.popen([sys.executable, "-m", "tectum", "apply", "--auto-approve"], "apply")
    deadline = time.monotonic() + 60
    while not (proj.world / "early.txt").exists():
        assert run.poll() is None, f"the run ended before it wrote early.txt:\n{proj.log('apply')}"
        assert time.monotonic() < deadline, "timed out waiting for early.txt"
        time.sleep(0.001)
    os.killpg(run.pid, signal.SIGKILL)  # the run and its sleeping command
    run.wait(timeout=30)
    proj.reap(run)
    assert "Apply complete" not in proj.log("apply")
    assert proj.world_files() == {"early.txt": "early\n"}, "the late files were made"
    recorded = proj.state_list()
    assert not any(a.startswith("file.late") for a in recorded), recorded

    proj.write("""
        File("other", path=f"{W}/other.txt", content="other\\n")
    """)
    plan = proj.plan_json()
    changes = {c["address"]: c for c in plan["resource_changes"]}
    never_made = sorted(a for a in changes if a.startswith("file.late"))
    assert never_made == [], (
        f"the recovery plan acts on objects the killed run never made: "
        f"{[(a, changes[a]['action'], changes[a]['note']) for a in never_made]}")
    assert changes["file.early"]["action"] == "delete", changes["file.early"]
    if "file.early" not in recorded:  # made, its result not yet journaled when killed
        assert "left by an interrupted run" in (changes["file.early"]["note"] or ""), \
            changes["file.early"]
    assert changes["file.other"]["action"] == "create", changes["file.other"]
    # (the gate command did start: it is forgotten, a command has nothing to remove)
    deletes = sorted(a for a, c in changes.items()
                     if c["action"] == "delete" and c["type"] == "file")
    assert deletes == ["file.early"], deletes

    text = proj.ok("plan").stdout
    assert "late" not in text, text

    proj.ok("apply", "--auto-approve")
    assert proj.world_files() == {"other.txt": "other\n"}
    assert proj.state_list() == ["file.other"]
    assert "No changes." in proj.ok("plan").stdout


# -- (c) the world check before a saved plan covers deletes -------------------------------------

def test_saved_delete_is_refused_when_the_file_changed_by_hand(proj: Proj) -> None:
    """``plan -out`` a delete of a file (and an update of another); change the file by hand;
    ``apply PLANFILE`` is refused before anything is done: the hand-changed file is still there
    with its hand change, the other file is not updated, state did not move."""
    proj.write("""
        File("victim", path=f"{W}/victim.txt", content="managed\\n")
        File("keep", path=f"{W}/keep.txt", content="k1\\n")
    """)
    proj.ok("apply", "--auto-approve")
    proj.write("""
        File("keep", path=f"{W}/keep.txt", content="k2\\n")
    """)
    planfile = proj.root / "delete.plan"
    made = proj.ok("plan", "-out", str(planfile)).stdout
    assert "- file.victim" in made and "~ file.keep" in made, made
    history = proj.serials()

    (proj.world / "victim.txt").write_text("hand edit\n")
    res = proj.run("apply", str(planfile))
    assert res.returncode == 1, res.output
    assert "The world changed since the plan" in res.output, res.output
    assert "file.victim: content changed" in res.output, res.output
    assert "Nothing was applied" in res.output, res.output
    assert "file.keep" not in res.output.split("The world changed since the plan", 1)[1], \
        res.output
    assert proj.world_files() == {"victim.txt": "hand edit\n", "keep.txt": "k1\n"}
    assert proj.serials() == history
    assert sorted(proj.state_list()) == ["file.keep", "file.victim"]

    # a file deleted by hand is a moved world too: refused, nothing done
    (proj.world / "victim.txt").unlink()
    gone = proj.run("apply", str(planfile))
    assert gone.returncode == 1, gone.output
    assert "file.victim: is gone" in gone.output, gone.output
    assert proj.world_files() == {"keep.txt": "k1\n"}
    assert proj.serials() == history


def test_saved_delete_applies_when_the_world_did_not_move(proj: Proj) -> None:
    """The control for the test above: the same saved delete, the file untouched, applies."""
    proj.write("""
        File("victim", path=f"{W}/victim.txt", content="managed\\n")
    """)
    proj.ok("apply", "--auto-approve")
    proj.write("")
    planfile = proj.root / "delete.plan"
    proj.ok("plan", "-out", str(planfile))
    res = proj.ok("apply", str(planfile))
    assert "1 destroyed" in res.stdout, res.output
    assert proj.world_files() == {}
    assert proj.state_list() == []
