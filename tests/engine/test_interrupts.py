"""Interrupted and concurrent runs through the real CLI: Ctrl-C (SIGINT) once and twice,
``kill -9`` at random moments, and two applies started together.

After each interruption the state must parse, the next plan must complete, and one apply must
leave the world and the state in agreement: every file that exists is in state and every file in
state exists. Every stack manages only files under ``tmp_path``; every process a test starts
runs in its own session and is killed with its children at the end.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, tectum_env

HEADER = """\
from tectum.host import Command, File

W = {world!r}
"""


@dataclass
class Proj:
    root: Path
    world: Path
    logs: Path
    tectum: Callable[..., Result]
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def write(self, body: str) -> None:
        text = HEADER.format(world=str(self.world)) + textwrap.dedent(body)
        (self.root / "stack.py").write_text(text)

    def run(self, *args: str) -> Result:
        return self.tectum(*args, cwd=self.root)

    def ok(self, *args: str) -> Result:
        res = self.run(*args)
        assert res.returncode == 0, f"tectum {' '.join(args)} failed:\n{res.output}"
        return res

    def state_list(self) -> list[str]:
        return self.ok("state", "list").stdout.split()

    def state_paths(self) -> set[str]:
        """The paths of the file resources in state (``state pull``)."""
        doc = json.loads(self.ok("state", "pull").stdout)
        return {r["attributes"]["path"] for r in doc["resources"] if r["type"] == "file"}

    def serials(self) -> int:
        lines = self.ok("state", "history").stdout.splitlines()
        return max(0, len(lines) - 1) if lines and "SERIAL" in lines[0] else 0

    def world_files(self) -> set[str]:
        """Every file under ``world`` but tectum's temporary files (see :meth:`temp_files`)."""
        return {str(p) for p in self.world.rglob("*")
                if not p.is_dir() and not is_temp(p)}

    def read_state(self) -> tuple[set[str], set[str]]:
        """The addresses in state and the paths of its file resources, read in this process
        through tectum's own API: what ``state list`` and ``state pull`` print, through the same
        :meth:`Session.read_state` (every record parsed), without two ``tectum`` processes
        starting. Raises what that read raises when the state does not parse."""
        from tectum.engine.session import Session

        session = Session(str(self.root), workspace="default")
        try:
            st = session.read_state()
        finally:
            session.close()
        return (set(st.resources),
                {r.attributes["path"] for r in st.resources.values() if r.type == "file"})

    def versions(self) -> int:
        """How many state versions are stored (what :meth:`serials` counts), read in this
        process through tectum's own API."""
        from tectum.engine.session import Session

        session = Session(str(self.root), workspace="default")
        try:
            return len(session.backend.history())
        finally:
            session.close()

    def temp_files(self) -> list[str]:
        """Temporary files of atomic writes (``.NAME.tectum-PID-TID``) left under ``world``."""
        return sorted(str(p) for p in self.world.rglob("*") if is_temp(p))

    def start(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        """``python -m tectum ARGS`` in the background (its own session), output to a log."""
        env = tectum_env()
        with open(self.logs / f"{name}.log", "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "tectum", *args], cwd=self.root,
                                    env=env, stdin=subprocess.DEVNULL, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def reap(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill what is left of ``proc``'s session (commands it started) once it has ended."""
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def is_temp(path: Path) -> bool:
    return path.name.startswith(".") and ".tectum-" in path.name


@pytest.fixture(autouse=True)
def _no_workspace_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TECTUM_WORKSPACE", raising=False)


@pytest.fixture
def proj(tmp_path: Path, tectum: Callable[..., Result]) -> Iterator[Proj]:
    root, world, logs = tmp_path / "proj", tmp_path / "world", tmp_path / "logs"
    for d in (root, world, logs):
        d.mkdir()
    p = Proj(root, world, logs, tectum)
    yield p
    for proc in p.started:
        p.reap(proc)


@pytest.fixture(params=["sqlite", "postgres"])
def any_proj(request: pytest.FixtureRequest, proj: Proj) -> Proj:
    """``proj`` with state in the embedded SQLite backend, or in PostgreSQL (a database of its
    own on the test cluster): the crash and race trials run against both backends."""
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        (proj.root / "tectum.toml").write_text(
            f'[state]\nbackend = "postgres"\nconn_str = "{dsn}"\n')
    return proj


def sleeping_children(pid: int) -> list[int]:
    """Children of ``pid`` (any of its threads) that are running ``sleep``."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    for tid in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == "sleep":
                    out.append(int(child))
            except OSError:
                continue
    return out


def wait_until(cond: Callable[[], bool], proc: subprocess.Popen[bytes], what: str,
               timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def lock_path(proj: Proj) -> Path:
    return proj.root / ".tectum" / "state.db.default.lock"


# -- Ctrl-C ---------------------------------------------------------------------------------------

def many_files_stack(n: int, commands_at: tuple[int, ...], gen: str = "") -> str:
    lines = []
    for k in range(n):
        if k in commands_at:
            lines.append(f'Command("slow{k}", command=["sleep", "0.3"])')
        lines.append(f'File("f{k}", path=f"{{W}}/f{k}.txt", content="{gen}{k}\\n")')
    return "\n".join(lines) + "\n"


def test_sigint_once_finishes_what_runs_saves_state_and_unlocks(proj: Proj) -> None:
    n = 150
    proj.write(many_files_stack(n, commands_at=(20, 40, 60, 80)))
    run = proj.start("apply", "--auto-approve", "--parallelism", "2", name="apply")
    # a command runs: the apply is under way, with much still to do
    wait_until(lambda: bool(sleeping_children(run.pid)), run, "a command to run")
    sent = time.monotonic()
    run.send_signal(signal.SIGINT)
    rc = run.wait(timeout=30)
    took = time.monotonic() - sent
    log = proj.log("apply")
    assert rc == 1, log
    assert "Interrupt received: finishing the operations under way" in log
    m = re.search(r"Interrupted: (\d+) changes finished and are recorded in state; (\d+) not "
                  r"started\. Run apply again to finish\.", log)
    assert m, log
    finished, not_started = int(m[1]), int(m[2])
    assert not_started > 0 and finished + not_started == n + 4
    assert took < 5, f"the interrupted run took {took:.1f} s to stop"
    assert "Apply complete!" not in log

    # the lock is released (and its holder's details cleared)
    assert lock_path(proj).read_text() == ""
    plan = proj.run("plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.output
    assert "State is locked" not in plan.output
    assert "Stale lock" not in plan.output

    # state holds exactly what finished
    listed = proj.state_list()
    assert len(listed) == finished
    assert proj.state_paths() == proj.world_files()
    assert proj.serials() == 1
    assert f"Plan: {n + 4 - finished} to add, 0 to change" in plan.stdout

    proj.ok("apply", "--auto-approve")
    assert len(proj.state_list()) == n + 4
    assert proj.state_paths() == proj.world_files()
    assert len(proj.world_files()) == n
    assert "No changes." in proj.ok("plan").stdout


def test_sigint_twice_exits_at_once_and_the_next_plan_adopts(proj: Proj) -> None:
    n = 300
    # the first command holds one of the two slots for 0.3 s while the other writes files
    proj.write(many_files_stack(n, commands_at=(0, 150)))
    run = proj.start("apply", "--auto-approve", "--parallelism", "2", name="apply")
    wait_until(lambda: any(proj.world.iterdir()), run, "the first file")
    run.send_signal(signal.SIGINT)
    time.sleep(0.01)
    sent = time.monotonic()
    run.send_signal(signal.SIGINT)
    rc = run.wait(timeout=30)
    took = time.monotonic() - sent
    log = proj.log("apply")
    assert rc == 130, log
    assert "Second interrupt: exiting now." in log
    assert took < 1.0, f"exiting took {took:.2f} s"
    proj.reap(run)

    # files made but not yet recorded: the journal has their intents only
    made = proj.world_files()
    recorded = {p for p in proj.state_paths()}
    unrecorded = made - recorded
    assert not recorded - made
    assert unrecorded, "every file was recorded before the exit: nothing left to adopt"
    left_by_exit = proj.temp_files()

    plan = proj.run("plan")
    assert plan.returncode == 0, plan.output
    assert "State is locked" not in plan.output
    assert f", {len(unrecorded)} to adopt." in plan.stdout, plan.stdout
    assert plan.stdout.count("adopted: made by an interrupted run, matches the "
                             "configuration") == len(unrecorded)

    proj.ok("apply", "--auto-approve")
    assert "No changes." in proj.ok("plan").stdout
    assert len(proj.state_list()) == n + 2
    assert proj.state_paths() == proj.world_files()
    assert len(proj.world_files()) == n
    # a write cut short by the exit must not leave its temporary file behind for good
    assert proj.temp_files() == [], f"left by the exit: {left_by_exit}"


# -- kill -9 at random moments --------------------------------------------------------------------

BASE_FILES = 200
EXTRA_FILES = 30


@dataclass
class TrialStats:
    killed_during_run: int = 0
    finished_before_kill: int = 0
    interrupted_leftovers_removed: int = 0
    adopted: int = 0
    temp_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def trial_stack(gen: int, keep_extra: bool, dropped: set[int]) -> tuple[str, dict[str, str]]:
    """The stack of trial ``gen`` and the files it declares (path → content).

    With the extra resources, two slow commands (0.7 s) run one after the other and a third of the
    files waits for each, so that file changes go on through most of the 0–1.5 s window."""
    lines: list[str] = []
    files: dict[str, str] = {}
    after = ["", "", ""]
    if keep_extra:
        lines.append(f'a = Command("slow{gen}a", command=["sleep", "0.7"])')
        lines.append(f'b = Command("slow{gen}b", command=["sleep", "0.7"], depends_on=[a])')
        after = ["", ", depends_on=[a]", ", depends_on=[b]"]
    for k in range(BASE_FILES):
        if k in dropped:
            continue
        dep = after[k * 3 // BASE_FILES]
        lines.append(f'File("b{k}", path=f"{{W}}/b{k}.txt", content="gen {gen} b{k}\\n"{dep})')
        files[f"b{k}.txt"] = f"gen {gen} b{k}\n"
    if keep_extra:
        for j in range(EXTRA_FILES):
            lines.append(f'File("x{gen}_{j}", path=f"{{W}}/x{gen}_{j}.txt", '
                         f'content="x{gen}_{j}\\n"{after[j % 3]})')
            files[f"x{gen}_{j}.txt"] = f"x{gen}_{j}\n"
    return "\n".join(lines) + "\n", files


def plan_part(apply_stdout: str) -> str:
    """The plan an ``apply --auto-approve`` printed before applying it: its output up to and
    including the ``Plan: …`` line (all of it when there is no such line: "No changes.")."""
    at = apply_stdout.find("\nPlan: ")
    if at < 0:
        return apply_stdout
    end = apply_stdout.find("\n", at + 1)
    return apply_stdout if end < 0 else apply_stdout[: end + 1]


def kill_trials(proj: Proj, trials: int, seed: int, *, plan_first: bool) -> TrialStats:
    """``trials`` applies, each killed (SIGKILL) at a random moment of its first 1.5 s, then
    checked: the state parses, the next plan completes and reports what the killed run left
    (with ``plan_first`` a `tectum plan` runs first, and the recovery apply must print the
    same plan), and one apply leaves the world and the state in agreement."""
    rng = random.Random(seed)
    stats = TrialStats()
    for gen in range(trials):
        body, _ = trial_stack(gen, keep_extra=True, dropped=set())
        proj.write(body)
        run = proj.start("apply", "--auto-approve", "--parallelism", "2", name=f"kill{gen}")
        delay = rng.uniform(0.0, 1.5)
        try:  # (the kill lands ``delay`` after the start; a run that ends sooner is not waited on)
            run.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            pass
        if run.poll() is None:
            os.kill(run.pid, signal.SIGKILL)
            stats.killed_during_run += 1
        else:
            stats.finished_before_kill += 1
        run.wait(timeout=30)
        proj.reap(run)
        where = f"trial {gen} (kill after {delay:.3f} s)"

        # the state parses (every record: what `state list` reads, read in this process)
        try:
            listed, _ = proj.read_state()
        except Exception as exc:  # noqa: BLE001 (any failure to read is the finding)
            pytest.fail(f"{where}: the state does not parse: {exc!r}")

        # sometimes the code changes before the next run: the extra files and some base files go
        drop = rng.random() < 0.5
        dropped = set(rng.sample(range(BASE_FILES), 20)) if drop else set()
        body, declared = trial_stack(gen, keep_extra=not drop, dropped=dropped)
        proj.write(body)
        leftovers = sorted(
            f"file.x{gen}_{j}" for j in range(EXTRA_FILES)
            if drop and f"file.x{gen}_{j}" not in listed
            and (proj.world / f"x{gen}_{j}.txt").exists())

        # the next plan completes and reports what the killed run left. With ``plan_first``,
        # a `tectum plan` of its own, whose text the recovery apply must then print as its
        # plan; else the recovery apply's plan (one process less a trial).
        if plan_first:
            alone = proj.run("plan")
            assert alone.returncode == 0, f"{where}: plan failed:\n{alone.output}"
            assert "State is locked" not in alone.output, where
        res = proj.run("apply", "--auto-approve")
        assert res.returncode == 0, f"{where}: apply failed:\n{res.output}"
        assert "State is locked" not in res.output, where
        plan = plan_part(res.stdout)
        if plan_first:
            assert plan.strip() == alone.stdout.strip(), \
                f"{where}: apply planned otherwise than plan did:\n{alone.stdout}\n---\n{plan}"
        for address in leftovers:
            assert re.search(rf"- {re.escape(address)} .*\n.*left by an interrupted run",
                             plan) or \
                re.search(rf"- {re.escape(address)}\b[^\n]*left by an interrupted run",
                          plan), f"{where}: {address} not reported:\n{plan}"
        if leftovers:
            assert "left by an interrupted run" in plan, where
            stats.interrupted_leftovers_removed += len(leftovers)
        m = re.search(r", (\d+) to adopt", plan)
        stats.adopted += int(m[1]) if m else 0

        in_world = proj.world_files()
        _, in_state = proj.read_state()  # (what `state pull` prints, read in this process)
        for path in proj.temp_files():
            if path not in stats.temp_files:
                stats.temp_files.append(path)
                stats.notes.append(f"{where}: left {Path(path).name}")
        assert in_world - in_state == set(), \
            f"{where}: files on disk that state does not know: {sorted(in_world - in_state)}"
        assert in_state - in_world == set(), \
            f"{where}: files in state that do not exist: {sorted(in_state - in_world)}"
        assert {str(proj.world / rel) for rel in declared} == in_world, where
        for rel, text in declared.items():
            assert (proj.world / rel).read_text() == text, f"{where}: {rel}"
    return stats


def test_kill_9_at_random_moments(any_proj: Proj) -> None:
    stats = kill_trials(any_proj, trials=10, seed=1234, plan_first=True)
    assert stats.killed_during_run >= 5, stats
    # temporary files of writes cut short stay for good (see the test after these)
    assert stats.temp_files == [], "\n".join([*stats.notes, repr(stats)])


@pytest.mark.slow
def test_kill_9_at_random_moments_100_trials(any_proj: Proj) -> None:
    stats = kill_trials(any_proj, trials=100, seed=20240601, plan_first=False)
    assert stats.killed_during_run >= 50, stats
    assert stats.interrupted_leftovers_removed > 0, stats
    assert stats.temp_files == [], "\n".join([*stats.notes, repr(stats)])


def test_kill_during_a_write_leaves_no_temporary_file_behind(proj: Proj) -> None:
    """A file is written to ``.NAME.tectum-PID-TID`` and renamed into place. When the run is
    killed between the two, the next runs must not leave that temporary file there for good."""
    proj.write("""
        File("big", path=f"{W}/big.bin", content="x" * 40_000_000)
    """)
    run = proj.start("apply", "--auto-approve", name="apply")
    wait_until(lambda: bool(proj.temp_files()), run, "the temporary file", timeout=60)
    os.kill(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    proj.reap(run)
    left = proj.temp_files()
    assert left, "the write finished before the kill; nothing to check"
    proj.ok("plan")
    proj.ok("apply", "--auto-approve")
    assert (proj.world / "big.bin").stat().st_size == 40_000_000
    assert "No changes." in proj.ok("plan").stdout
    assert proj.temp_files() == [], f"still there after plan and apply: {left}"


# -- two applies at once --------------------------------------------------------------------------

def race_trials(proj: Proj, trials: int, seed: int) -> None:
    rng = random.Random(seed)
    proj.write('File("a", path=f"{W}/a.txt", content="start\\n")\n')
    proj.ok("apply", "--auto-approve")
    serials = proj.serials()
    for gen in range(trials):
        # the winner's command runs until the test releases it, once one of the two runs has
        # ended: the winner holds the lock for as long as the loser runs, however slow either is
        release = proj.logs / f"release{gen}"
        proj.write(f"""
            File("a", path=f"{{W}}/a.txt", content="gen {gen}\\n")
            Command("slow{gen}", command=["sh", "-c",
                                          "until [ -e {release} ]; do sleep 0.01; done"])
        """)
        first = proj.start("apply", "--auto-approve", name=f"race{gen}a")
        time.sleep(rng.uniform(0.0, 0.01))
        second = proj.start("apply", "--auto-approve", name=f"race{gen}b")
        # (both still running after 30 s: neither was refused the lock; the codes tell)
        deadline = time.monotonic() + 30
        while first.poll() is None and second.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        release.touch()
        codes = (first.wait(timeout=60), second.wait(timeout=60))
        logs = (proj.log(f"race{gen}a"), proj.log(f"race{gen}b"))
        where = f"trial {gen}: exit codes {codes}\n--- first:\n{logs[0]}\n--- second:\n{logs[1]}"
        assert sorted(codes) == [0, 1], where
        winner, loser = (first, second) if codes[0] == 0 else (second, first)
        win_log, lose_log = (logs[0], logs[1]) if codes[0] == 0 else (logs[1], logs[0])
        assert "Apply complete!" in win_log, where
        assert "Error: State is locked" in lose_log, where
        assert f"pid {winner.pid} on" in lose_log, where
        assert "created" not in lose_log and "tectum will perform" not in lose_log, where
        serials += 1
        assert proj.versions() == serials, where  # one new version: the winner's
        assert (proj.world / "a.txt").read_text() == f"gen {gen}\n"
        del loser
    if not (proj.root / "tectum.toml").exists():  # the SQLite lock file names no holder now
        assert lock_path(proj).read_text() == ""
    assert "No changes." in proj.ok("plan").stdout


def test_two_applies_at_once(any_proj: Proj) -> None:
    race_trials(any_proj, trials=5, seed=7)


@pytest.mark.slow
def test_two_applies_at_once_50_trials(any_proj: Proj) -> None:
    race_trials(any_proj, trials=50, seed=77)


def test_lock_of_a_killed_run_is_taken_over(proj: Proj) -> None:
    """A killed run's lock is released by the kernel; the details it left are reported as a
    stale lock taken over, and the next runs reconcile what it did."""
    proj.write(many_files_stack(20, commands_at=(0,)))
    run = proj.start("apply", "--auto-approve", name="apply")
    wait_until(lambda: bool(sleeping_children(run.pid)), run, "the command")
    os.kill(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    proj.reap(run)
    held: dict[str, Any] = json.loads(lock_path(proj).read_text())
    assert held["pid"] == run.pid
    plan = proj.run("plan")
    assert plan.returncode == 0, plan.output
    assert "Stale lock taken over" in plan.output
    assert f"pid {run.pid} on" in plan.output
    proj.ok("apply", "--auto-approve")
    assert proj.state_paths() == proj.world_files()
    assert len(proj.world_files()) == 20


def test_force_unlock_after_a_killed_run(proj: Proj) -> None:
    """The details a killed run left can be cleared with its lock ID; a wrong ID is refused."""
    proj.write(many_files_stack(5, commands_at=(0,)))
    run = proj.start("apply", "--auto-approve", name="apply")
    wait_until(lambda: bool(sleeping_children(run.pid)), run, "the command")
    os.kill(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    proj.reap(run)
    held = json.loads(lock_path(proj).read_text())
    wrong = proj.run("force-unlock", "0123456789abcdef")
    assert wrong.returncode == 1, wrong.output
    assert "Lock ID mismatch" in wrong.output and held["id"] in wrong.output
    res = proj.ok("force-unlock", held["id"])
    assert f"Lock {held['id']} released" in res.stdout
    assert lock_path(proj).read_text() == ""
    again = proj.run("force-unlock", held["id"])
    assert again.returncode == 1 and "Not locked" in again.output
    plan = proj.ok("plan")
    assert "Stale lock" not in plan.output


# -- kill -9 while a directory and its files are made; then they leave the stack -----------------

def dir_trials(proj: Proj, trials: int, seed: int) -> dict[str, int]:
    """Each trial: apply a directory with 150 files in it, kill -9 the run at a random moment
    while it writes them, then apply a stack without them. Nothing may be left behind: the recovery
    deletes the files before their directory and checks that each delete happened."""
    rng = random.Random(seed)
    stats = {"killed": 0, "left_behind": 0}
    left: list[str] = []
    for gen in range(trials):
        lines = ["from tectum.host import Directory",
                 f'd = Directory("d{gen}", path=f"{{W}}/d{gen}")']
        lines += [f'File("f{gen}_{k}", path=f"{{W}}/d{gen}/f{k}.txt", content="{k}\\n")'
                  for k in range(150)]
        proj.write("\n".join(lines) + "\n")
        run = proj.start("apply", "--auto-approve", name=f"dir{gen}")
        # the kill lands while the files are written: a random moment after the directory
        # appears (the whole apply takes about a second, its writes a few tens of ms)
        deadline = time.monotonic() + 30
        while not (proj.world / f"d{gen}").exists() and run.poll() is None:
            assert time.monotonic() < deadline, f"trial {gen}: the directory never appeared"
            time.sleep(0.001)
        delay = rng.uniform(0.0, 0.04)
        time.sleep(delay)
        if run.poll() is None:
            os.kill(run.pid, signal.SIGKILL)
            stats["killed"] += 1
        run.wait(timeout=30)
        proj.reap(run)
        proj.write("")
        res = proj.run("apply", "--auto-approve")
        where = f"trial {gen} (kill {delay:.3f} s after the directory appeared)"
        assert res.returncode == 0, f"{where}: apply failed:\n{res.output}"
        if (proj.world / f"d{gen}").exists():
            left.append(f"{where}: d{gen} is still on disk:\n{res.stdout[-3000:]}")
        plan = proj.run("plan")
        assert "No changes." in plan.stdout, f"{where}:\n{plan.output}"
    stats["left_behind"] = len(left)
    assert left == [], "\n".join(left)
    return stats


def test_kill_9_directory_trials(any_proj: Proj) -> None:
    stats = dir_trials(any_proj, trials=5, seed=7)
    assert stats["left_behind"] == 0


@pytest.mark.slow
def test_kill_9_directory_30_trials(any_proj: Proj) -> None:
    stats = dir_trials(any_proj, trials=30, seed=20261206)
    assert stats["killed"] >= 15, stats
    assert stats["left_behind"] == 0, stats
