"""``cron`` for real: files in this machine's ``/etc/cron.d`` (``system``), no mocks.

Every file a test makes is ``/etc/cron.d/tectumtest-<hex>`` (a unique name), removed at
teardown. The cron daemon need not run. Debian's cron has no option that only checks a file,
so :func:`test_debian_cron_agrees_with_the_validators` gives every schedule of the validator
tables to Debian's own parser, ``crontab`` (for a throw-away user; ``cron`` is installed for
it, without recommends, when missing, and purged again).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ApplyError, ReadItem
from tectum.providers.host.connector import LocalConnector
from tectum.providers.host.cron import (
    FIELDS,
    SPECIAL_TIMES,
    CronType,
    field_problem,
    parse,
    render,
)
from tests.conftest import run_tectum

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def rt() -> CronType:
    return CronType()


@pytest.fixture
def conn() -> LocalConnector:
    return LocalConnector(log_path="")


@pytest.fixture
def name() -> Iterator[str]:
    """A unique cron.d file name; the file is removed after the test. (Not ``tectum-...``:
    the local connector's ``sweep_temp`` splits a leftover's name at its first ``.tectum-``,
    so it does not recognise the leftovers of a file whose name starts with ``tectum-``.)"""
    name = f"tectumtest-{secrets.token_hex(4)}"
    yield name
    path = f"/etc/cron.d/{name}"
    if os.path.lexists(path):
        os.unlink(path)


def plan(rt: CronType, conn: LocalConnector, attrs: dict[str, Any],
         prior: dict[str, Any] | None = None) -> ResourceChange:
    problems = rt.check({k: v for k, v in attrs.items() if k != "name"})
    assert not problems, problems
    desired = rt.prepare(dict(attrs), ".")
    observed = rt.read(conn, [ReadItem(desired, prior)])[0]
    action, changes = rt.plan(desired, observed, prior)
    return ResourceChange("cron.test", "cron", action,
                          rt.stored(observed) if observed is not None else None, desired,
                          changes, prior=prior)


def mutations(conn: LocalConnector) -> list[dict[str, object]]:
    return [e for e in conn.log if e["mutating"]]


# -- validation (crontab(5) of Debian's cron) --------------------------------------------------

VALID_FIELDS: list[tuple[str, Any]] = [
    ("minute", "*"), ("minute", "*/5"), ("minute", "0-59/15"), ("minute", "1,15,30"),
    ("minute", 0), ("minute", "59"), ("hour", "23"), ("hour", "9-17"), ("day", "1"),
    ("day", "31"), ("month", "jan"), ("month", "JAN-mar"), ("month", "1-12/3"),
    ("weekday", "mon-fri"), ("weekday", "7"), ("weekday", "0"), ("weekday", "sun,sat"),
]
INVALID_FIELDS: list[tuple[str, Any, str]] = [
    ("minute", "60", "60 is out of range (0-59)"),
    ("hour", 24, "24 is out of range (0-23)"),
    ("day", "0", "0 is out of range (1-31)"),
    ("month", "13", "out of range (1-12)"),
    ("weekday", "8", "out of range (0-7)"),
    ("minute", "5/10", 'write "5-59/10" or "*/10"'),
    ("minute", "*/0", "at least 1"),
    ("minute", "*/x", "at least 1"),
    ("minute", "1-", "is not a number"),
    ("minute", ",1", "empty item"),
    ("minute", "1,,2", "empty item"),
    ("hour", "22-2", 'would never match it (it does not wrap around); write two ranges'),
    ("weekday", "fri-sun", 'would never match it; write "fri-7"'),
    ("minute", "jan", "is not a number"),     # names only in month and weekday
    ("month", "mon", "or a name (jan,"),
    ("minute", "1 2", "must not contain spaces"),
    ("minute", "", "must not be empty"),
]
#: refused by tectum though Debian's crontab takes them: a backwards range matches nothing
STRICTER = {("hour", "22-2"), ("weekday", "fri-sun")}


@pytest.mark.parametrize(("field", "value"), VALID_FIELDS)
def test_valid_fields(field: str, value: Any) -> None:
    assert field_problem(field, value) is None


@pytest.mark.parametrize(("field", "value", "says"), INVALID_FIELDS)
def test_invalid_fields_say_what_to_write(field: str, value: Any, says: str) -> None:
    problem = field_problem(field, value)
    assert problem is not None and says in problem, problem


def test_names_jobs_and_env_are_validated(rt: CronType) -> None:
    attrs = rt.schema.attrs
    assert attrs["name"].check("backup_daily-2") is None
    problem = attrs["name"].check("backup.conf")
    assert problem is not None and "cron ignores files" in problem and "'backup-conf'" in problem
    assert attrs["job"].check("date +\\%F > /tmp/x") is None
    assert "write \\%" in str(attrs["job"].check("date +%F"))
    assert "one line" in str(attrs["job"].check("a\nb"))
    assert attrs["env"].check({"MAILTO": "", "PATH": "/usr/bin:/bin"}) is None
    assert "not a variable name" in str(attrs["env"].check({"1X": "y"}))
    assert "one line" in str(attrs["env"].check({"X": "a\nb"}))
    assert "both kinds of quotes" in str(attrs["env"].check({"X": "a'b\"c"}))
    assert attrs["special_time"].check("fortnightly") is not None
    assert attrs["user"].check("Root!") is not None
    assert rt.check({"special_time": "daily", "minute": "5", "job": "x"}) == [
        "special_time replaces the schedule fields: remove minute, or special_time."]
    assert rt.check({"minute": "5"}) == ["Set job (the command line to run)."]
    assert rt.check({"ensure": "absent"}) == []


def test_a_bad_schedule_is_a_validate_diagnostic(tmp_path: Path) -> None:
    (tmp_path / "stack.py").write_text(
        "from tectum.host import Cron\n"
        "Cron('backup', minute='*/0', hour='25', job='/usr/local/bin/backup')\n")
    result = run_tectum("validate", str(tmp_path))
    assert result.returncode == 1, result.output
    assert "Attribute 'minute'" in result.output and "at least 1" in result.output
    assert "Attribute 'hour'" in result.output and "25 is out of range (0-23)" in result.output
    assert "cron.backup" in result.output and "Traceback" not in result.output


def test_a_missing_user_is_a_plan_diagnostic_unless_the_stack_makes_it(tmp_path: Path
                                                                        ) -> None:
    user = f"tectumnouser{secrets.token_hex(3)}"
    (tmp_path / "stack.py").write_text(
        "from tectum.host import Cron, User\n"
        f"Cron('a', name='tectumtest-a', job='/bin/true', user='{user}x')\n"
        f"Cron('b', name='tectumtest-b', job='/bin/true', user='{user}')\n"
        f"User('{user}')\n")
    result = run_tectum("plan", str(tmp_path))
    assert result.returncode == 1, result.output
    assert f"user '{user}x' is no user on this machine" in result.output
    assert "cron.a" in result.output and "cron.b" not in result.output


def test_render_and_parse_round_trip(rt: CronType) -> None:
    attrs = rt.prepare({"name": "x", "minute": 5, "hour": "3", "weekday": "mon-fri",
                        "job": "  /usr/bin/backup --all  ",
                        "env": {"MAILTO": "", "Q": 'say "hi"', "PATH": "/bin"}}, ".")
    text = render(attrs)
    assert text.splitlines()[1:] == ['MAILTO=""', "PATH=\"/bin\"", "Q='say \"hi\"'",
                                     "5 3 * * mon-fri root /usr/bin/backup --all"]
    fields, entries = parse(text)
    assert entries == 1
    assert fields == {k: attrs[k] for k in fields}
    daily = rt.prepare({"name": "x", "special_time": "daily", "job": "run", "user": "nobody"},
                       ".")
    assert render(daily).splitlines()[-1] == "@daily nobody run"
    fields, _ = parse(render(daily))
    assert fields["special_time"] == "daily" and fields["minute"] is None


# -- real files ---------------------------------------------------------------------------------

@pytest.mark.system
@needs_root
def test_create_noop_drift_and_delete(rt: CronType, conn: LocalConnector, name: str) -> None:
    path = f"/etc/cron.d/{name}"
    attrs = {"name": name, "minute": "*/15", "job": "/bin/true", "env": {"MAILTO": ""}}
    change = plan(rt, conn, attrs)
    assert change.action is Action.CREATE
    record = rt.apply(conn, change)
    assert record is not None
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o644 and st.st_uid == 0 and st.st_gid == 0
    assert Path(path).read_text().splitlines()[1:] == [
        'MAILTO=""', "*/15 * * * * root /bin/true"]

    mark = len(mutations(conn))
    assert plan(rt, conn, attrs, record).action is Action.NOOP
    assert mutations(conn)[mark:] == []

    # mode changed by hand (cron would ignore a group-writable file): only the mode is set
    os.chmod(path, 0o664)
    change = plan(rt, conn, attrs, record)
    assert [(c.name, c.before, c.after) for c in change.changes] == [("mode", "0664", "0644")]
    mark = len(mutations(conn))
    record = rt.apply(conn, change)
    assert [e["op"] for e in mutations(conn)[mark:]] == ["set_attrs"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644

    # the schedule edited by hand: seen as the field that changed, written back
    Path(path).write_text(Path(path).read_text().replace("*/15 ", "7 "))
    change = plan(rt, conn, attrs, record)
    assert [(c.name, c.before, c.after) for c in change.changes] == [("minute", "7", "*/15")]
    record = rt.apply(conn, change)
    assert plan(rt, conn, attrs, record).action is Action.NOOP

    # a second entry added by hand: the fields still match, the content does not
    with open(path, "a") as fh:
        fh.write("0 0 * * * root /bin/false\n")
    change = plan(rt, conn, attrs, record)
    assert [c.name for c in change.changes] == ["content"]
    record = rt.apply(conn, change)
    assert "/bin/false" not in Path(path).read_text()

    assert record is not None and rt.delete_summary(record) == f"removes {path}"
    assert rt.apply(conn, ResourceChange("cron.test", "cron", Action.DELETE, record, None, [],
                                         prior=record)) is None
    assert not os.path.exists(path)
    assert rt.read(conn, [ReadItem(None, record)]) == [None]


@pytest.mark.system
@needs_root
def test_special_time_update_and_import(rt: CronType, conn: LocalConnector, name: str) -> None:
    attrs = {"name": name, "minute": "0", "hour": "4", "job": "/bin/true"}
    record = rt.apply(conn, plan(rt, conn, attrs))
    assert record is not None
    daily = {"name": name, "special_time": "daily", "job": "/bin/true"}
    change = plan(rt, conn, daily, record)
    assert change.action is Action.UPDATE
    assert {c.name for c in change.changes} == {"special_time", "minute", "hour", "day",
                                                "month", "weekday"}
    record = rt.apply(conn, change)
    assert record is not None
    assert Path(f"/etc/cron.d/{name}").read_text().splitlines()[-1] == "@daily root /bin/true"
    # import by name reads back everything state holds
    imported = rt.read(conn, [rt.import_item(name)])[0]
    assert imported is not None and rt.exists(imported)
    assert rt.stored(imported) == record


@pytest.mark.system
@needs_root
def test_ensure_absent(rt: CronType, conn: LocalConnector, name: str) -> None:
    path = f"/etc/cron.d/{name}"
    mark = len(mutations(conn))
    change = plan(rt, conn, {"name": name, "ensure": "absent"})
    assert change.action is Action.NOOP and mutations(conn)[mark:] == []
    Path(path).write_text("0 1 * * * root /bin/true\n")
    os.chmod(path, 0o644)
    change = plan(rt, conn, {"name": name, "ensure": "absent"})
    assert change.action is Action.UPDATE
    assert rt.apply(conn, change) == {"name": name, "ensure": "absent"}
    assert not os.path.exists(path)


@pytest.mark.system
@needs_root
def test_missing_user_fails_before_the_file_is_written(rt: CronType, conn: LocalConnector,
                                                       name: str) -> None:
    user = f"tectum-nouser-{secrets.token_hex(3)}"
    with pytest.raises(KeyError):
        pwd.getpwnam(user)
    change = plan(rt, conn, {"name": name, "job": "/bin/true", "user": user})
    with pytest.raises(ApplyError, match=f"user '{user}' does not exist"):
        rt.apply(conn, change)
    assert not os.path.exists(f"/etc/cron.d/{name}")


@pytest.mark.system
@needs_root
def test_a_file_that_was_there_is_found_not_created(rt: CronType, conn: LocalConnector,
                                                    name: str) -> None:
    attrs = {"name": name, "hour": "2", "minute": "30", "job": "/bin/true"}
    Path(f"/etc/cron.d/{name}").write_text(render(rt.prepare(dict(attrs), ".")))
    os.chmod(f"/etc/cron.d/{name}", 0o644)
    change = plan(rt, conn, attrs)
    assert change.action is Action.NOOP
    assert not rt.takes_over_as_created(change.before, change.after or {})


@pytest.mark.system
@needs_root
def test_stack_apply_and_destroy(tmp_path: Path, name: str) -> None:
    (tmp_path / "stack.py").write_text(
        "from tectum.host import Cron\n"
        f"Cron('{name.replace('-', '_')}', name='{name}', minute='*/5', weekday='mon-fri',\n"
        "     job='/usr/bin/test -d /tmp', env={'MAILTO': ''})\n")
    result = run_tectum("apply", "--auto-approve", str(tmp_path))
    assert result.returncode == 0, result.output
    assert "*/5 * * * mon-fri root /usr/bin/test -d /tmp" in result.output  # the plan's text
    assert os.path.exists(f"/etc/cron.d/{name}")
    result = run_tectum("plan", str(tmp_path))
    assert "No changes" in result.output, result.output
    result = run_tectum("destroy", "--auto-approve", str(tmp_path))
    assert result.returncode == 0, result.output
    assert not os.path.exists(f"/etc/cron.d/{name}")


@pytest.mark.system
@needs_root
def test_sweep_removes_what_a_killed_write_left(rt: CronType, conn: LocalConnector,
                                                name: str) -> None:
    dead = _exited_pid()  # a process that has exited: no writer of that pid runs
    leftover = f"/etc/cron.d/.{name}.tectum-{dead}-1"
    Path(leftover).write_text("half a file")
    try:
        rt.sweep_interrupted(conn, [{"name": name}])
        assert not os.path.exists(leftover)
    finally:
        if os.path.exists(leftover):
            os.unlink(leftover)


def _exited_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# -- Debian's own parser -----------------------------------------------------------------------

APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


@pytest.fixture(scope="module")
def crontab() -> Iterator[str]:
    """Debian's ``crontab``: the machine's, else ``cron`` installed for these tests (without
    recommends) and purged afterwards — exactly the packages this install added, as
    ``apt-get -s`` listed them beforehand."""
    found = shutil.which("crontab")
    if found is not None:
        yield found
        return
    sim = subprocess.run(["apt-get", "install", "-s", "--no-install-recommends", "cron"],
                         capture_output=True, text=True, env=APT_ENV, check=False)
    added = [line.split()[1] for line in sim.stdout.splitlines() if line.startswith("Inst ")]
    if sim.returncode != 0 or not added:
        pytest.skip(f"cron cannot be installed from apt here: {sim.stderr.strip()[-300:]}")
    got = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                          "-o", "DPkg::Lock::Timeout=120", "cron"],
                         capture_output=True, text=True, env=APT_ENV, check=False)
    try:
        path = shutil.which("crontab")
        if got.returncode != 0 or path is None:
            pytest.skip(f"cron cannot be installed from apt here: {got.stderr.strip()[-300:]}")
        yield path
    finally:
        subprocess.run(["apt-get", "purge", "-y", "-q", "-o", "DPkg::Lock::Timeout=120",
                        *added], capture_output=True, env=APT_ENV, check=False)


@pytest.fixture
def cron_user() -> Iterator[str]:
    """A throw-away account to install test crontabs for (removed with its crontab)."""
    user = f"tectumct{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", user], check=True)
    try:
        yield user
    finally:
        subprocess.run(["crontab", "-u", user, "-r"], capture_output=True, check=False)
        subprocess.run(["userdel", user], capture_output=True, check=False)


@pytest.mark.apt
@pytest.mark.system
@needs_root
def test_debian_cron_agrees_with_the_validators(crontab: str, cron_user: str,
                                                tmp_path: Path) -> None:
    """Every schedule field tectum takes, Debian's crontab takes; every one it refuses,
    crontab refuses too — but for backwards ranges, which crontab takes and then never
    matches (:data:`STRICTER`). The env lines tectum writes are read as assignments."""
    def accepted(text: str) -> bool:
        path = tmp_path / "crontab"
        path.write_text(text)
        return subprocess.run([crontab, "-u", cron_user, str(path)], capture_output=True,
                              check=False).returncode == 0

    for field, value in VALID_FIELDS:
        line = " ".join(str(value) if f == field else "*" for f in FIELDS)
        assert accepted(f"{line} /bin/true\n"), f"crontab refuses {field}={value!r}"
    for field, value, _ in INVALID_FIELDS:
        if not str(value) or " " in str(value):
            continue  # a field of its own in no crontab line
        line = " ".join(str(value) if f == field else "*" for f in FIELDS)
        if (field, value) in STRICTER:
            assert accepted(f"{line} /bin/true\n")
        else:
            assert not accepted(f"{line} /bin/true\n"), f"crontab takes {field}={value!r}"
    for special in SPECIAL_TIMES:
        assert accepted(f"@{special} /bin/true\n"), special
    # what tectum renders, less the user column of a cron.d file
    text = render(CronType().prepare({"name": "x", "minute": "*/5", "job": "date +\\%F",
                                      "env": {"MAILTO": "", "Q": 'say "hi"'}}, "."))
    assert accepted(text.replace(" root ", " "))
