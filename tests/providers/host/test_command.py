"""``command`` run for real on the local host (no mocks); every file lives in ``tmp_path``."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import pytest

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError
from tectum.providers.host.command import PENDING, PENDING_GUARD, CommandType
from tectum.providers.host.connector import LocalConnector

# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def conn() -> LocalConnector:
    return LocalConnector(log_path="")


@pytest.fixture
def rt() -> CommandType:
    return CommandType()


def plan(rt: CommandType, conn: LocalConnector, attrs: dict[str, Any],
         prior: dict[str, Any] | None = None) -> tuple[ResourceChange, dict[str, Any]]:
    desired = rt.prepare(attrs, "/tmp")
    observed = rt.read_objects(conn, [desired])[0]
    assert observed is not None
    action, changes = rt.plan(desired, observed, prior)
    change = ResourceChange(address="command.x", type="command", action=action,
                            before=observed, after=desired, changes=changes, prior=prior)
    return change, observed


def converge(rt: CommandType, conn: LocalConnector, attrs: dict[str, Any],
             prior: dict[str, Any] | None = None) -> tuple[Action, dict[str, Any] | None]:
    change, _ = plan(rt, conn, attrs, prior)
    if change.action is Action.NOOP:
        return change.action, prior
    return change.action, rt.apply(conn, change)


def mutations(conn: LocalConnector) -> list[dict[str, object]]:
    return [e for e in conn.log if e["mutating"]]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- unguarded: once, and again when the arguments change ----------------------------------

def test_runs_once_without_guard(rt: CommandType, conn: LocalConnector, tmp_path: Path) -> None:
    out = tmp_path / "out"
    attrs = {"command": f"echo run >> {out}"}

    change, observed = plan(rt, conn, attrs)
    assert observed == {"command": attrs["command"], "_guard": None}
    assert change.action is Action.CREATE
    assert AttrChange("run", None, PENDING) in change.changes
    stored = rt.apply(conn, change)

    assert lines(out) == ["run"]
    assert stored == {"command": attrs["command"], "creates": None, "unless": None,
                      "cwd": None, "environment": None, "exit_code": 0}

    fresh = LocalConnector(log_path="")
    change, _ = plan(rt, fresh, attrs, stored)
    assert (change.action, change.changes) == (Action.NOOP, [])
    assert fresh.log == []  # nothing to read without a guard, nothing run
    assert lines(out) == ["run"]


def test_reruns_when_command_changes(rt: CommandType, conn: LocalConnector, tmp_path: Path
                                     ) -> None:
    out = tmp_path / "out"
    _, stored = converge(rt, conn, {"command": f"echo one >> {out}"})

    action, stored = converge(rt, conn, {"command": f"echo two >> {out}"}, stored)
    assert action is Action.REPLACE
    assert lines(out) == ["one", "two"]

    # a new environment is a new run too; a changed timeout is not
    change, _ = plan(rt, conn, {"command": f"echo two >> {out}", "environment": {"A": "1"}},
                     stored)
    assert change.action is Action.REPLACE
    assert change.changes == [AttrChange("environment", None, {"A": "1"}, force_new=True)]
    change, _ = plan(rt, conn, {"command": f"echo two >> {out}", "timeout": 5}, stored)
    assert change.action is Action.NOOP


def test_noop_record_still_says_what_ran(rt: CommandType, conn: LocalConnector, tmp_path: Path
                                         ) -> None:
    """The applier records ``stored(observed)`` for a no-op resource: the next plan must still
    be a no-op, and a changed command must still re-run."""
    out = tmp_path / "out"
    attrs = {"command": f"echo x >> {out}", "cwd": str(tmp_path), "environment": {"A": "1"}}
    _, stored = converge(rt, conn, attrs)
    change, observed = plan(rt, conn, attrs, stored)
    assert change.action is Action.NOOP
    record = rt.stored(observed)
    assert plan(rt, conn, attrs, record)[0].action is Action.NOOP
    assert plan(rt, conn, {**attrs, "command": "true"}, record)[0].action is Action.REPLACE


def test_dropping_a_guard_runs_once(rt: CommandType, conn: LocalConnector, tmp_path: Path
                                    ) -> None:
    out = tmp_path / "out"
    attrs: dict[str, Any] = {"command": f"echo x >> {out}", "unless": "true"}
    change, observed = plan(rt, conn, attrs)
    assert change.action is Action.NOOP  # the guard held: never ran
    del attrs["unless"]
    action, stored = converge(rt, conn, attrs, rt.stored(observed))
    assert action is Action.REPLACE and lines(out) == ["x"]
    assert converge(rt, conn, attrs, stored)[0] is Action.NOOP


def test_delete_runs_nothing(rt: CommandType, conn: LocalConnector, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _, stored = converge(rt, conn, {"command": f"echo x >> {out}"})
    change = ResourceChange(address="command.x", type="command", action=Action.DELETE,
                            before=None, after=None, prior=stored)
    assert rt.apply(conn, change) is None
    assert lines(out) == ["x"]


# -- guards --------------------------------------------------------------------------------

def test_creates_guard(rt: CommandType, conn: LocalConnector, tmp_path: Path) -> None:
    made = tmp_path / "made"
    runs = tmp_path / "runs"
    attrs = {"command": f"echo run >> {runs} && touch {made}", "creates": str(made)}

    change, observed = plan(rt, conn, attrs)
    assert observed["_guard"] is False
    assert change.action is Action.CREATE
    stored = rt.apply(conn, change)
    assert made.exists() and lines(runs) == ["run"]
    assert stored is not None and stored["creates"] == str(made)

    fresh = LocalConnector(log_path="")
    change, observed = plan(rt, fresh, attrs, stored)
    assert observed["_guard"] is True
    assert change.action is Action.NOOP
    assert fresh.log == []  # creates is checked with stat, not a command

    # the path disappears: the command is due again (an update of a known resource)
    made.unlink()
    change, _ = plan(rt, conn, attrs, stored)
    assert change.action is Action.UPDATE
    assert [c.name for c in change.changes] == ["run"]
    assert change.changes[0].after == PENDING
    rt.apply(conn, change)
    assert lines(runs) == ["run", "run"]


def test_creates_guard_already_holds_for_new_resource(rt: CommandType, conn: LocalConnector,
                                                      tmp_path: Path) -> None:
    made = tmp_path / "made"
    made.touch()
    marker = tmp_path / "marker"
    action, _ = converge(rt, conn, {"command": ["/usr/bin/touch", str(marker)],
                                    "creates": str(made)})
    assert action is Action.NOOP
    assert not marker.exists()


def test_creates_missing_after_run_fails(rt: CommandType, conn: LocalConnector, tmp_path: Path
                                         ) -> None:
    never = tmp_path / "never"
    with pytest.raises(ApplyError, match=rf"did not create {never}"):
        converge(rt, conn, {"command": "true", "creates": str(never)})


def test_unless_guard(rt: CommandType, conn: LocalConnector, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    runs = tmp_path / "runs"
    attrs = {"command": f"echo run >> {runs}; touch {flag}",
             "unless": ["/usr/bin/test", "-e", str(flag)]}

    change, observed = plan(rt, conn, attrs)
    assert observed["_guard"] is False
    assert change.action is Action.CREATE
    assert [e["argv"] for e in conn.log] == [["/usr/bin/test", "-e", str(flag)]]
    assert mutations(conn) == []  # unless runs during plan, as a read
    stored = rt.apply(conn, change)
    assert lines(runs) == ["run"]

    fresh = LocalConnector(log_path="")
    change, observed = plan(rt, fresh, attrs, stored)
    assert observed["_guard"] is True
    assert change.action is Action.NOOP
    assert len(fresh.log) == 1 and mutations(fresh) == []


def test_unless_shell_string_uses_cwd_and_environment(rt: CommandType, conn: LocalConnector,
                                                      tmp_path: Path) -> None:
    (tmp_path / "ready").touch()
    attrs = {"command": "false", "unless": 'test -e ready && test "$MODE" = on',
             "cwd": str(tmp_path), "environment": {"MODE": "on"}}
    change, observed = plan(rt, conn, attrs)
    assert observed["_guard"] is True and change.action is Action.NOOP


def test_creates_checked_before_unless(rt: CommandType, conn: LocalConnector, tmp_path: Path
                                       ) -> None:
    made = tmp_path / "made"
    made.touch()
    attrs = {"command": "false", "creates": str(made), "unless": "false"}
    change, _ = plan(rt, conn, attrs)
    assert change.action is Action.NOOP
    assert all(e["op"] != "run" for e in conn.log)  # unless was not needed


def test_guard_unknown_at_plan_is_evaluated_at_apply(rt: CommandType, conn: LocalConnector,
                                                     tmp_path: Path) -> None:
    made = tmp_path / "made"
    attrs = {"command": f"touch {made}", "creates": "${tectum:directory.d#path}/made"}
    change, observed = plan(rt, conn, attrs)
    assert observed["_guard"] is None
    assert change.action is Action.CREATE
    assert AttrChange("run", None, PENDING_GUARD) in change.changes
    assert conn.log == []

    # resolved by apply time, and the path is already there: nothing runs
    made.touch()
    change.after = {**(change.after or {}), "creates": str(made), "command": "false"}
    stored = rt.apply(conn, change)
    assert stored is not None and stored["exit_code"] is None
    assert mutations(conn) == []


# -- running -------------------------------------------------------------------------------

def test_failing_command_reports_exit_code(rt: CommandType, conn: LocalConnector) -> None:
    with pytest.raises(ApplyError, match=r"exited with code 3: it broke"):
        converge(rt, conn, {"command": "echo some output; echo it broke >&2; exit 3"})
    with pytest.raises(ApplyError, match=r"exited with code 1: only stdout"):
        converge(rt, conn, {"command": ["/bin/sh", "-c", "echo only stdout; exit 1"]})


def test_argv_list_is_passed_byte_exact(rt: CommandType, conn: LocalConnector, tmp_path: Path
                                        ) -> None:
    marker = tmp_path / "MARKER"
    out = tmp_path / "out"
    arg = f"a; touch {marker} $(id) `id` 'q' \"d\" * \\"
    # /usr/bin/printf writes its argument back; the shell is never involved
    _, stored = converge(rt, conn, {"command": ["/usr/bin/printf", "%s", arg],
                                    "unless": ["/usr/bin/test", "-e", str(out)]})
    assert stored is not None and stored["exit_code"] == 0
    run = [e for e in mutations(conn) if e["op"] == "run"]
    assert run[-1]["argv"] == ["/usr/bin/printf", "%s", arg]
    assert not marker.exists()

    # and through a file, to see the bytes the program received
    _, _ = converge(rt, conn, {"command": ["/usr/bin/python3", "-c",
                                           "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
                                           str(out), arg]})
    assert out.read_text() == arg
    assert not marker.exists()


def test_echo_with_shell_metacharacters_runs_no_shell(rt: CommandType, conn: LocalConnector
                                                      ) -> None:
    marker = f"/tmp/tectum_marker_{secrets.token_hex(3)}"
    try:
        _, stored = converge(rt, conn, {"command": ["/bin/echo", f"a; touch {marker}"]})
        assert stored is not None and stored["exit_code"] == 0
        assert not os.path.exists(marker)
    finally:
        if os.path.lexists(marker):
            os.unlink(marker)


def test_environment_and_cwd(rt: CommandType, conn: LocalConnector, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    _, stored = converge(rt, conn, {
        "command": 'pwd > out && printf "%s\\n" "$GREETING" "$LC_ALL" >> out',
        "cwd": str(work),
        "environment": {"GREETING": "hello; world $HOME"},
    })
    assert stored is not None
    assert stored["cwd"] == str(work)
    assert stored["environment"] == {"GREETING": "hello; world $HOME"}
    assert lines(work / "out") == [str(work), "hello; world $HOME", "C"]


def test_missing_cwd_is_reported(rt: CommandType, conn: LocalConnector, tmp_path: Path) -> None:
    with pytest.raises(ApplyError, match="working directory .* does not exist"):
        converge(rt, conn, {"command": "true", "cwd": str(tmp_path / "nope")})


def test_timeout(rt: CommandType, conn: LocalConnector) -> None:
    with pytest.raises(ApplyError, match="timed out after 1"):
        converge(rt, conn, {"command": ["/bin/sleep", "5"], "timeout": 1})


# -- configuration -------------------------------------------------------------------------

def test_check_and_validation(rt: CommandType) -> None:
    assert rt.check({"command": "echo hi"}) == []
    assert rt.check({"command": ["/bin/true"], "creates": "/var/lib/x"}) == []
    assert rt.check({"command": "${tectum:file.f#path}"}) == []
    assert rt.check({"command": "  "})
    assert rt.check({"command": []})
    assert rt.check({})
    assert rt.check({"command": "true", "creates": "relative/path"})
    attrs = CommandType.schema.attrs
    assert attrs["command"].check([]) is not None
    assert attrs["command"].check(["/bin/echo", 3]) is not None
    assert attrs["command"].check(7) is not None
    assert attrs["creates"].check("x") is not None
    assert attrs["environment"].check({"BAD-NAME": "x"}) is not None
    assert attrs["environment"].check({"OK": 1}) is not None
    assert attrs["environment"].check({"OK": "1"}) is None
    assert attrs["timeout"].check(0) is not None
    assert rt.prepare({"command": "x"}, "/tmp")["timeout"] == 600


def test_describe(rt: CommandType) -> None:
    assert rt.describe({"command": ["/usr/bin/x", "--init"]}) == "/usr/bin/x --init"
    assert len(rt.describe({"command": "y" * 100})) == 60


def test_read_many_objects(rt: CommandType, conn: LocalConnector, tmp_path: Path) -> None:
    there = tmp_path / "there"
    there.touch()
    objects: list[dict[str, Any]] = [
        {"command": "a"},
        {"command": "b", "creates": str(there)},
        {"command": "c", "creates": str(tmp_path / "missing")},
        {"command": "d", "unless": "true"},
        {"command": "e", "creates": str(tmp_path / "missing"), "unless": ["/bin/false"]},
        # a record from state: echoed back as found, so nothing shows as drift
        {"command": ["f"], "cwd": "/", "environment": {"A": "1"}, "creates": None,
         "unless": None, "exit_code": 0},
    ]
    found = rt.read_objects(conn, objects)
    assert [o["_guard"] if o else "?" for o in found] == [None, True, False, True, False, None]
    assert found[5] == {**objects[5], "_guard": None}
    assert [e["argv"] for e in conn.log] == [["/bin/sh", "-c", "true"], ["/bin/false"]]
    assert mutations(conn) == []
