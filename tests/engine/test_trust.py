"""tectum does only what the plan showed and says only what is true (issue "Never surprise the
user"): identity changes replace, found objects are forgotten rather than deleted, restarts a
failed run owed are not lost, state records the world as the run left it, an interrupted run's
changes are not called hand edits.

Every stack manages only objects under ``tmp_path`` through the real CLI; nothing outside it is
touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, tectum_env
from tests.engine.test_cli_engine import Proj as EngineProj

HEADER = """\
from tectum import output, var
from tectum.host import Command, Directory, File, Symlink

W = {world!r}
"""


class Proj(EngineProj):
    """:class:`tests.engine.test_cli_engine.Proj` with ``Command`` in the stack's imports."""

    def write(self, body: str) -> None:
        text = HEADER.format(world=str(self.world)) + textwrap.dedent(body)
        (self.root / "stack.py").write_text(text)

    def record(self, address: str) -> dict[str, Any]:
        doc = json.loads(self.ok("state", "pull").stdout)
        found = [r for r in doc["resources"] if r["address"] == address]
        assert found, f"{address} not in state"
        return dict(found[0])


@pytest.fixture
def proj(tmp_path: Path, tectum: Callable[..., Result]) -> Proj:
    root, world = tmp_path / "proj", tmp_path / "world"
    root.mkdir()
    world.mkdir()
    return Proj(root, world, tectum)


# -- 1. an identity that changes replaces the object -------------------------------------------

def test_changed_path_replaces_and_leaves_nothing_behind(proj: Proj) -> None:
    """Directory and file moved from /a to /b: the plan replaces both (``-/+``, with the
    reason), says nothing was deleted outside tectum, and apply leaves no trace of /a."""
    proj.write("""
        d = Directory("d1", path=f"{W}/a")
        File("f", path=f"{W}/a/x", content="x\\n")
    """)
    proj.apply()
    proj.write("""
        d = Directory("d1", path=f"{W}/b")
        File("f", path=f"{W}/b/x", content="x\\n")
    """)
    plan = proj.ok("plan").stdout
    assert "outside" not in plan, plan
    assert "-/+ directory.d1" in plan and "-/+ file.f" in plan, plan
    assert "path changed: the object at the old path is deleted and a new one created" in plan
    assert f'path: "{proj.world}/a" → "{proj.world}/b"' in plan, plan
    assert "2 to replace" in plan
    proj.apply()
    assert not (proj.world / "a").exists(), "the old directory was left behind"
    assert (proj.world / "b" / "x").read_text() == "x\n"
    assert proj.record("directory.d1")["attributes"]["path"] == f"{proj.world}/b"
    assert "No changes." in proj.ok("plan").stdout


def test_changed_path_whose_old_object_is_gone_is_a_create(proj: Proj) -> None:
    """When the object at the old path was deleted by hand, that is what the plan says (it is
    true), and the new one is created."""
    proj.write('File("f", path=f"{W}/one", content="x\\n")')
    proj.apply()
    (proj.world / "one").unlink()
    proj.write('File("f", path=f"{W}/two", content="x\\n")')
    plan = proj.ok("plan").stdout
    assert "+ file.f" in plan and "file.f: deleted" in plan, plan
    proj.apply()
    assert (proj.world / "two").exists()


def test_changed_path_of_a_found_object_leaves_it_in_place(proj: Proj) -> None:
    """The object at the old path was there before tectum: it is forgotten, not deleted."""
    (proj.world / "one").write_text("x\n")
    proj.write('File("f", path=f"{W}/one", content="x\\n")')
    proj.apply()
    proj.write('File("f", path=f"{W}/two", content="x\\n")')
    plan = proj.ok("plan").stdout
    assert "+ file.f" in plan and "was there before tectum" in plan, plan
    assert "outside" not in plan
    proj.apply()
    assert (proj.world / "one").exists() and (proj.world / "two").exists()


def test_saved_replace_plan_checks_the_old_object(proj: Proj, tmp_path: Path) -> None:
    """The world check before a saved plan reads the object a replace deletes (at its old
    path): unchanged, the plan applies."""
    proj.write('File("f", path=f"{W}/one", content="x\\n")')
    proj.apply()
    proj.write('File("f", path=f"{W}/two", content="x\\n")')
    planfile = tmp_path / "p.plan"
    proj.ok("plan", "-out", str(planfile))
    proj.ok("apply", str(planfile))
    assert not (proj.world / "one").exists() and (proj.world / "two").exists()


# -- 5. what tectum found is forgotten, what it made is deleted ----------------------------------

def test_found_objects_are_forgotten_and_created_ones_deleted(proj: Proj) -> None:
    existing = proj.world / "etc"
    existing.mkdir()
    (existing / "theirs.conf").write_text("someone else's\n")
    mine = proj.world / "found.txt"
    mine.write_text("same\n")
    proj.write("""
        Directory("etc", path=f"{W}/etc")
        File("found", path=f"{W}/found.txt", content="same\\n")
        File("made", path=f"{W}/etc/made.conf", content="made\\n")
    """)
    plan = proj.ok("plan").stdout
    assert "= directory.etc" in plan and "recorded in state as found" in plan, plan
    proj.apply()
    shown = proj.ok("state", "show").stdout
    assert "# directory.etc:  (found already there" in shown, shown
    assert "# file.made:  (created by tectum" in shown, shown
    assert proj.record("file.found").get("origin") == "found"

    plan = proj.ok("plan", "--destroy").stdout
    assert ". directory.etc" in plan and "will no longer be managed by tectum" in plan, plan
    assert ". file.found" in plan and "- file.made" in plan, plan
    assert "1 to destroy, 2 to forget" in plan, plan
    res = proj.ok("destroy", "--auto-approve")
    assert "2 forgotten (left in place)" in res.stdout, res.stdout
    assert (existing / "theirs.conf").exists() and mine.read_text() == "same\n"
    assert not (existing / "made.conf").exists()
    assert proj.ok("state", "list").stdout.strip() == ""


def test_a_file_found_and_rewritten_is_still_forgotten(proj: Proj) -> None:
    """Taking over an existing file (its content changes) does not make tectum its creator:
    removing the resource leaves the file."""
    target = proj.world / "motd"
    target.write_text("old\n")
    proj.write('File("motd", path=f"{W}/motd", content="new\\n")')
    plan = proj.ok("plan").stdout
    assert "found already there: taken over" in plan, plan
    proj.apply()
    proj.write("")
    plan = proj.ok("plan").stdout
    assert ". file.motd" in plan, plan
    proj.apply()
    assert target.read_text() == "new\n"


def test_on_destroy_delete_deletes_a_found_object(proj: Proj) -> None:
    target = proj.world / "found.txt"
    target.write_text("x\n")
    proj.write('File("f", path=f"{W}/found.txt", content="x\\n", on_destroy="delete")')
    proj.apply()
    assert proj.record("file.f").get("on_destroy") == "delete"
    proj.ok("destroy", "--auto-approve")
    assert not target.exists()


def test_on_destroy_change_alone_is_recorded(proj: Proj) -> None:
    target = proj.world / "found.txt"
    target.write_text("x\n")
    proj.write('File("f", path=f"{W}/found.txt", content="x\\n")')
    proj.apply()
    proj.write('File("f", path=f"{W}/found.txt", content="x\\n", on_destroy="delete")')
    plan = proj.ok("plan").stdout
    assert "on_destroy: default → delete" in plan, plan
    proj.apply()
    proj.ok("destroy", "--auto-approve")
    assert not target.exists()


def test_on_destroy_forget_keeps_a_created_object(proj: Proj) -> None:
    proj.write('File("f", path=f"{W}/keep.txt", content="x\\n", on_destroy="forget")')
    proj.apply()
    proj.ok("destroy", "--auto-approve")
    assert (proj.world / "keep.txt").exists()


def test_bad_on_destroy_is_a_diagnostic(proj: Proj) -> None:
    proj.write('File("f", path=f"{W}/x", content="x\\n", on_destroy="never")')
    res = proj.run("validate")
    assert res.returncode == 1 and "Traceback" not in res.output
    assert 'on_destroy must be "delete" or "forget"' in res.output, res.output


# -- 12. state records the world as the run left it --------------------------------------------

def test_state_records_what_a_later_change_did(proj: Proj) -> None:
    """A command that runs after a file is written changes its mode (as a package's install
    script chowns a directory): state records the mode as the run left it, so `drift` reports
    nothing that nobody did."""
    proj.write("""
        f = File("f", path=f"{W}/conf", content="x\\n")
        Command("post", command=["chmod", "0600", f"{W}/conf"], depends_on=[f])
    """)
    proj.apply()
    assert proj.record("file.f")["attributes"]["mode"] == "0600"
    res = proj.ok("drift")
    assert "No drift." in res.stdout, res.stdout


# -- 16. a restart that is owed is never lost ------------------------------------------------------

SERVICE_HEADER = """\
from tectum.host import Command, File, Service
W = {world!r}
"""


@pytest.fixture
def daemon(proj: Proj) -> Iterator[str]:
    """A sysv service of this test's own (``/etc/init.d/tectum-owed-ID``) whose restart count
    is written to ``world/restarts``; removed (stopped first) afterwards."""
    name = f"tectum-owed-{os.getpid()}-{time.monotonic_ns() % 100000}"
    script = Path("/etc/init.d") / name
    pidfile = proj.world / "daemon.pid"
    counter = proj.world / "restarts"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        PIDFILE={pidfile}
        start() {{ start-stop-daemon --start --background --make-pidfile --pidfile $PIDFILE \\
                   --exec /bin/sleep -- 100000; }}
        stop() {{ start-stop-daemon --stop --oknodo --retry 5 --pidfile $PIDFILE \\
                  --exec /bin/sleep; rm -f $PIDFILE; }}
        case "$1" in
          start) start ;;
          stop) stop ;;
          restart) stop; start; echo x >> {counter} ;;
          reload) echo r >> {counter} ;;
          status) start-stop-daemon --status --pidfile $PIDFILE --exec /bin/sleep; exit $? ;;
          *) exit 2 ;;
        esac
        """))
    script.chmod(0o755)
    try:
        yield name
    finally:
        subprocess.run([str(script), "stop"], check=False, capture_output=True)
        script.unlink(missing_ok=True)


def restarts(proj: Proj) -> int:
    path = proj.world / "restarts"
    return path.read_text().count("x") if path.exists() else 0


def owed_stack(proj: Proj, name: str, content: str, fail: bool, sleep: float = 0.0) -> None:
    """conf → gate (a command that fails, or sleeps) → the service, which restarts on conf."""
    gate = ["false"] if fail else ["sleep", str(sleep)] if sleep else ["true"]
    text = SERVICE_HEADER.format(world=str(proj.world)) + textwrap.dedent(f"""
        conf = File("conf", path=f"{{W}}/daemon.conf", content={content!r})
        gate = Command("gate", command={gate!r}, depends_on=[conf])
        Service("svc", name={name!r}, running=True, restart_on=[conf], depends_on=[gate])
    """)
    (proj.root / "stack.py").write_text(text)


@pytest.mark.system
def test_restart_owed_after_a_failure_is_kept_until_it_runs(proj: Proj, daemon: str) -> None:
    owed_stack(proj, daemon, "v1\n", fail=False)
    proj.apply()
    assert restarts(proj) == 0
    # the configuration changes, then the run fails before the restart
    owed_stack(proj, daemon, "v2\n", fail=True)
    res = proj.run("apply", "--auto-approve")
    assert res.returncode == 1 and "Traceback" not in res.output
    assert restarts(proj) == 0
    assert (proj.world / "daemon.conf").read_text() == "v2\n"
    shown = proj.ok("state", "show", "service.svc").stdout
    assert "owed: a restart (file.conf changed" in shown, shown
    # the failure is fixed; the file already matches, but the restart is still owed
    owed_stack(proj, daemon, "v2\n", fail=False)
    plan = proj.ok("plan").stdout
    assert "~ service.svc" in plan and "owed since an earlier run" in plan, plan
    assert "file.conf" in plan
    proj.apply()
    assert restarts(proj) == 1
    assert "No changes." in proj.ok("plan").stdout
    assert proj.record("service.svc").get("owed") is None


@pytest.mark.slow
@pytest.mark.system
def test_restart_owed_survives_kill_9(proj: Proj, daemon: str) -> None:
    """kill -9 between the write and the restart (10 trials): the next apply restarts."""
    owed_stack(proj, daemon, "v0\n", fail=False)
    proj.apply()
    for trial in range(1, 11):
        owed_stack(proj, daemon, f"v{trial}\n", fail=False, sleep=3.0)
        env = tectum_env()
        run = subprocess.Popen([sys.executable, "-m", "tectum", "apply", "--auto-approve"],
                               cwd=proj.root, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
        conf = proj.world / "daemon.conf"
        deadline = time.monotonic() + 30
        while conf.read_text() != f"v{trial}\n":
            assert time.monotonic() < deadline and run.poll() is None, f"trial {trial}"
            time.sleep(0.01)
        time.sleep(0.4 + 0.1 * (trial % 5))  # the journal is durable within 0.2 s
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        before = restarts(proj)
        owed_stack(proj, daemon, f"v{trial}\n", fail=False)
        plan = proj.ok("plan").stdout
        assert "owed since an earlier run" in plan, f"trial {trial}:\n{plan}"
        proj.apply()
        assert restarts(proj) == before + 1, f"trial {trial}"


# -- 13. an interrupted run's changes are its own, not hand edits -------------------------------

@pytest.mark.slow
def test_interrupted_changes_are_not_called_drift(proj: Proj) -> None:
    n = 120
    body = "\n".join(f'File("f{k}", path=f"{{W}}/f{k}", content="one\\n")' for k in range(n))
    proj.write(body)
    proj.apply()
    body = 'a = Command("slow", command=["sleep", "0.5"])\n' + "\n".join(
        f'File("f{k}", path=f"{{W}}/f{k}", content="two\\n", mode="0600", '
        f'depends_on=[a] if {k} % 2 else [])' for k in range(n))
    for attempt in range(20):
        proj.write(body.replace("two", f"two{attempt}"))
        env = tectum_env()
        run = subprocess.Popen([sys.executable, "-m", "tectum", "apply", "--auto-approve",
                                "--parallelism", "1"], cwd=proj.root, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while not any((proj.world / f"f{k}").read_text().startswith(f"two{attempt}")
                      for k in range(0, n, 2)):
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.002)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        plan = proj.ok("plan").stdout
        drift = proj.ok("drift").stdout
        assert "Objects changed outside of tectum" not in plan, plan
        assert "Objects changed outside of tectum" not in drift, drift
        if "Left by an interrupted run" in drift:
            assert "interrupted run" in plan, plan
            return
        proj.apply()
    pytest.fail("no kill landed between a write and its journal record in 20 attempts")


# -- 14. reports that say what happened ----------------------------------------------------------

def test_saved_rollback_plan_is_recorded_as_rollback(proj: Proj, tmp_path: Path) -> None:
    proj.write('File("f", path=f"{W}/f", content="one\\n")')
    proj.apply()
    proj.write('File("f", path=f"{W}/f", content="two\\n")')
    proj.apply()
    planfile = tmp_path / "back.plan"
    proj.ok("rollback", "--to", "1", "-out", str(planfile))
    proj.ok("apply", str(planfile))
    assert (proj.world / "f").read_text() == "one\n"
    history = proj.ok("state", "history").stdout.splitlines()
    assert " rollback " in history[-1], history


def test_state_diff_shows_values_not_sealed_text(proj: Proj) -> None:
    """A value sealed at rest (a file rendered from a sensitive variable: its digest) is shown
    decrypted and masked by state diff, never as sealed text."""
    proj.write("""
        pw = var("pw", str, sensitive=True)
        File("f", path=f"{W}/f", content=f"password={pw}\\n")
    """)
    (proj.root / "tectum.toml").write_text('[vars]\npw = "first-secret-1"\n')
    proj.apply()
    (proj.root / "tectum.toml").write_text('[vars]\npw = "second-secret-2"\n')
    proj.apply()
    out = proj.ok("state", "diff", "1", "2").stdout
    assert "~ file.f" in out, out
    assert "tectum-sealed" not in out and "age-encryption" not in out, out
    assert "secret" not in out, out
