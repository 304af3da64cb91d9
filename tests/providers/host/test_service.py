"""``service`` against a throw-away System V service on this machine (no systemd here).

Each test gets its own ``/etc/init.d/tectum-test-<random>`` script: ``start-stop-daemon`` runs
``python3 -m http.server`` on a free 127.0.0.1 port with a pidfile under ``/run``. ``reload``
leaves the daemon alone and appends a line to a marker file, so a test can tell a reload from a
restart (the pid changes only on restart). A finalizer stops the daemon, removes the rc links,
the script, the pidfile and the marker.

Deletes (a ``Service`` leaving the configuration, or ``destroy``) stop what the record says was
running and disable what tectum enabled (issue 10, item 4); the end-to-end version, with a real
package removed after its service, is in ``test_service_destroy.py``.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError
from tectum.providers.host import service as service_module
from tectum.providers.host.connector import LocalConnector
from tectum.providers.host.service import ServiceType

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="managing services needs root"),
    pytest.mark.skipif(os.path.isdir("/run/systemd/system"),
                       reason="these tests drive System V init scripts; systemd is running"),
]

# start-stop-daemon --exec must name the real binary (not a symlink or pyenv shim)
PYTHON = os.path.realpath("/usr/bin/python3")

INIT_SCRIPT = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          {name}
# Required-Start:    $remote_fs
# Required-Stop:     $remote_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: tectum test service (throw-away)
### END INIT INFO
PIDFILE={pidfile}
DAEMON={python}

do_start() {{
    start-stop-daemon --start --quiet --oknodo --background --make-pidfile \\
        --pidfile "$PIDFILE" --exec "$DAEMON" -- \\
        -m http.server {port} --bind 127.0.0.1 --directory {docroot}
}}
do_stop() {{
    start-stop-daemon --stop --quiet --oknodo --retry TERM/5/KILL/5 \\
        --pidfile "$PIDFILE" --exec "$DAEMON"
    rc=$?
    rm -f "$PIDFILE"
    return $rc
}}
do_status() {{
    start-stop-daemon --status --pidfile "$PIDFILE" --exec "$DAEMON"
}}

case "$1" in
    start) do_start ;;
    stop) do_stop ;;
    restart|force-reload) do_stop && do_start ;;
    reload) do_status || exit 7; echo reloaded >> {marker} ;;
    status) do_status ;;
    *) echo "Usage: $0 {{start|stop|restart|reload|status}}" >&2; exit 3 ;;
esac
"""


@dataclasses.dataclass
class Svc:
    name: str
    port: int
    script: str
    pidfile: str
    marker: str

    def pid(self) -> int | None:
        try:
            with open(self.pidfile, encoding="ascii") as fh:
                return int(fh.read().strip())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> bool:
        res = subprocess.run(["start-stop-daemon", "--status", "--pidfile", self.pidfile,
                              "--exec", PYTHON], check=False)
        return res.returncode == 0

    def s_links(self) -> list[str]:
        return sorted(glob.glob(f"/etc/rc[2345].d/S[0-9][0-9]{self.name}"))

    def k_links(self) -> list[str]:
        return sorted(glob.glob(f"/etc/rc[2345].d/K[0-9][0-9]{self.name}"))

    def reloads(self) -> int:
        try:
            with open(self.marker, encoding="ascii") as fh:
                return len(fh.read().splitlines())
        except FileNotFoundError:
            return 0

    def serves(self) -> bool:
        """The daemon answers on its port (waits up to 5 s for it to bind)."""
        deadline = time.monotonic() + 5
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def sh(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), capture_output=True, check=False,
                          stdin=subprocess.DEVNULL)


class MakeSvc(Protocol):
    def __call__(self, *, stop_works: bool = True) -> Svc: ...


@pytest.fixture
def make_svc(tmp_path: Any) -> Iterator[MakeSvc]:
    """Makes throw-away, stopped, never-enabled init scripts (``stop_works=False``: one whose
    ``stop`` exits 0 and stops nothing); each is removed with all its traces after: the daemon
    stopped by its own pidfile, the rc links, the script, the pidfile and the marker."""
    made: list[Svc] = []

    def make(*, stop_works: bool = True) -> Svc:
        name = f"tectum-test-{secrets.token_hex(4)}"
        s = Svc(name=name, port=free_port(), script=f"/etc/init.d/{name}",
                pidfile=f"/run/{name}.pid", marker=str(tmp_path / f"{name}.reloads"))
        docroot = tmp_path / f"{name}.www"
        docroot.mkdir()
        text = INIT_SCRIPT.format(name=name, pidfile=s.pidfile, python=PYTHON, port=s.port,
                                  docroot=docroot, marker=s.marker)
        if not stop_works:
            text = text.replace("    stop) do_stop ;;", "    stop) exit 0 ;;")
        made.append(s)
        with open(s.script, "w", encoding="ascii") as fh:
            fh.write(text)
        os.chmod(s.script, 0o755)
        return s

    try:
        yield make
    finally:
        for s in made:
            sh("start-stop-daemon", "--stop", "--quiet", "--oknodo", "--retry", "TERM/5/KILL/5",
               "--pidfile", s.pidfile, "--exec", PYTHON)
            sh("update-rc.d", "-f", s.name, "remove")
            for path in (s.script, s.pidfile):
                if os.path.lexists(path):
                    os.unlink(path)
            for link in glob.glob(f"/etc/rc?.d/[SK][0-9][0-9]{s.name}"):
                os.unlink(link)


@pytest.fixture
def svc(make_svc: MakeSvc) -> Svc:
    """A throw-away, stopped, never-enabled init script; removed with all its traces after."""
    return make_svc()


@pytest.fixture
def rt() -> ServiceType:
    return ServiceType()


def plan_change(rt: ServiceType, conn: LocalConnector, desired: dict[str, Any],
                triggered: str | None = None) -> ResourceChange:
    """read → plan → ResourceChange, as the engine does (a trigger makes a NOOP an UPDATE)."""
    desired = rt.prepare(desired, ".")
    observed = rt.read_objects(conn, [desired])[0]
    action, changes = rt.plan(desired, observed, None)
    if triggered and action is Action.NOOP:
        action = Action.UPDATE
    return ResourceChange(address=f"host.local.service.{desired['name']}", type="service",
                          action=action, before=observed, after=desired, changes=changes,
                          triggered=triggered,
                          triggers=["host.local.file.conf"] if triggered else [])


def commands(conn: LocalConnector, mutating: bool | None = None) -> list[list[str]]:
    out: list[list[str]] = []
    for entry in conn.log:
        argv = entry.get("argv")
        if isinstance(argv, list) and (mutating is None or entry["mutating"] is mutating):
            out.append([str(a) for a in argv])
    return out


def start(svc: Svc) -> int:
    assert sh(svc.script, "start").returncode == 0
    assert svc.serves()
    pid = svc.pid()
    assert pid is not None
    return pid


# -- schema ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["nginx", "getty@tty1", "ssh.service", "php8.2-fpm", "a_b"])
def test_valid_names(name: str) -> None:
    assert ServiceType.schema.attrs["name"].check(name) is None


@pytest.mark.parametrize("name", ["-x", "a b", "a;b", "a/b", "..", "", "$(id)", "a\tb"])
def test_invalid_names(name: str) -> None:
    assert ServiceType.schema.attrs["name"].check(name) is not None


def test_schema_and_describe(rt: ServiceType) -> None:
    name = rt.schema.attrs["name"]
    assert name.required and name.identity and name.force_new
    assert set(rt.schema.attrs) == {"name", "running", "enabled", "started_by_tectum",
                                    "enabled_by_tectum"}
    assert rt.schema.settable == ("name", "running", "enabled")
    assert set(rt.stored_computed) == set(rt.unobserved) == {"started_by_tectum",
                                                              "enabled_by_tectum"}
    assert rt.schema.attrs["running"].check("yes") is not None
    assert rt.describe({"name": "nginx", "running": True}) == "nginx"


# -- read -----------------------------------------------------------------------------------
def test_absent_service_reads_none_and_plans_create(rt: ServiceType) -> None:
    conn = LocalConnector()
    name = f"tectum-test-{secrets.token_hex(4)}"
    assert rt.read_objects(conn, [{"name": name}]) == [None]
    assert rt.plan({"name": name, "running": True}, None, None) == (
        Action.CREATE, [AttrChange("name", None, name), AttrChange("running", None, True)])
    assert commands(conn, mutating=True) == []


def test_read_batches_in_one_command(rt: ServiceType, svc: Svc) -> None:
    pid = start(svc)
    assert pid
    conn = LocalConnector()
    missing = f"tectum-test-{secrets.token_hex(4)}"
    got = rt.read_objects(conn, [{"name": svc.name}, {"name": missing}, {"name": svc.name}])
    assert got[0] is not None and got[0]["running"] is True and got[0]["enabled"] is False
    assert got[1] is None
    assert got[2] == got[0]
    assert len(conn.log) == 1 and conn.log[0]["mutating"] is False
    argv = commands(conn)[0]
    # names travel as positional arguments, never inside the script text
    assert argv[:2] == ["sh", "-c"] and svc.name not in argv[2]
    # one command for either init system: the count, the names, then their systemd units
    assert argv[3:] == ["sh", "2", svc.name, missing, f"{svc.name}.service",
                        f"{missing}.service"]


# -- running --------------------------------------------------------------------------------
def test_start_then_noop(rt: ServiceType, svc: Svc) -> None:
    conn = LocalConnector()
    change = plan_change(rt, conn, {"name": svc.name, "running": True})
    assert change.action is Action.UPDATE
    assert change.changes == [AttrChange("running", False, True)]
    stored = rt.apply(conn, change)
    assert stored == {"name": svc.name, "running": True, "enabled": False,
                      "started_by_tectum": True, "enabled_by_tectum": False}
    assert svc.running() and svc.serves()
    assert ["service", svc.name, "start"] in commands(conn, mutating=True)

    again = LocalConnector()
    change = plan_change(rt, again, {"name": svc.name, "running": True})
    assert change.action is Action.NOOP and change.changes == []
    assert commands(again, mutating=True) == []


def test_create_starts_a_service_that_appeared_during_apply(rt: ServiceType, svc: Svc) -> None:
    """Planned while absent (a package in the same apply installs it), applied once present."""
    os.rename(svc.script, svc.script + ".hidden")
    try:
        conn = LocalConnector()
        change = plan_change(rt, conn, {"name": svc.name, "running": True, "enabled": True})
        assert change.action is Action.CREATE and change.before is None
    finally:
        os.rename(svc.script + ".hidden", svc.script)
    stored = rt.apply(conn, change)
    assert stored == {"name": svc.name, "running": True, "enabled": True,
                      "started_by_tectum": True, "enabled_by_tectum": True}
    assert svc.running() and len(svc.s_links()) == 4


def test_apply_to_missing_service_fails(rt: ServiceType) -> None:
    name = f"tectum-test-{secrets.token_hex(4)}"
    change = ResourceChange(address="host.local.service.x", type="service",
                            action=Action.CREATE, before=None,
                            after={"name": name, "running": True},
                            changes=[AttrChange("running", None, True)])
    with pytest.raises(ApplyError, match=f"/etc/init.d/{name}"):
        rt.apply(LocalConnector(), change)


def test_stop(rt: ServiceType, svc: Svc) -> None:
    start(svc)
    conn = LocalConnector()
    change = plan_change(rt, conn, {"name": svc.name, "running": False})
    assert change.action is Action.UPDATE
    assert change.changes == [AttrChange("running", True, False)]
    assert rt.apply(conn, change) == {"name": svc.name, "running": False, "enabled": False,
                                      "started_by_tectum": False, "enabled_by_tectum": False}
    assert not svc.running()
    again = LocalConnector()
    assert plan_change(rt, again, {"name": svc.name, "running": False}).action is Action.NOOP
    assert commands(again, mutating=True) == []


def test_start_failure_raises(rt: ServiceType, svc: Svc) -> None:
    """The init script exits 0 but the daemon dies (its port is taken): the status poll
    catches it."""
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", svc.port))
        blocker.listen()
        conn = LocalConnector()
        change = plan_change(rt, conn, {"name": svc.name, "running": True})
        with pytest.raises(ApplyError, match="not running"):
            rt.apply(conn, change)


# -- triggers -------------------------------------------------------------------------------
def test_triggered_restart(rt: ServiceType, svc: Svc) -> None:
    pid = start(svc)
    conn = LocalConnector()
    change = plan_change(rt, conn, {"name": svc.name, "running": True}, triggered="restart")
    assert change.action is Action.UPDATE and change.changes == []
    stored = rt.apply(conn, change)
    assert stored == {"name": svc.name, "running": True, "enabled": False,
                      "started_by_tectum": False, "enabled_by_tectum": False}
    assert ["service", svc.name, "restart"] in commands(conn, mutating=True)
    new_pid = svc.pid()
    assert new_pid is not None and new_pid != pid
    assert svc.running() and svc.serves()


def test_triggered_restart_on_create_restarts_a_service_already_running(
        rt: ServiceType, svc: Svc) -> None:
    """Planned absent, but started during the apply (a systemd host starts what apt installs)
    before its configuration file was written: the trigger restarts it."""
    pid = start(svc)
    change = ResourceChange(address="host.local.service.x", type="service",
                            action=Action.CREATE, before=None,
                            after={"name": svc.name, "running": True},
                            changes=[AttrChange("running", None, True)],
                            triggered="restart", triggers=["host.local.file.conf"])
    conn = LocalConnector()
    assert rt.apply(conn, change) == {"name": svc.name, "running": True, "enabled": False,
                                      "started_by_tectum": False, "enabled_by_tectum": False}
    assert ["service", svc.name, "restart"] in commands(conn, mutating=True)
    assert svc.pid() not in (None, pid)


def test_triggered_reload(rt: ServiceType, svc: Svc) -> None:
    pid = start(svc)
    conn = LocalConnector()
    change = plan_change(rt, conn, {"name": svc.name}, triggered="reload")
    assert rt.apply(conn, change) == {"name": svc.name, "running": True, "enabled": False,
                                      "started_by_tectum": False, "enabled_by_tectum": False}
    assert ["service", svc.name, "reload"] in commands(conn, mutating=True)
    assert svc.pid() == pid and svc.reloads() == 1


def test_triggered_restart_of_stopped_service_just_starts_it(rt: ServiceType, svc: Svc) -> None:
    conn = LocalConnector()
    change = plan_change(rt, conn, {"name": svc.name, "running": True}, triggered="restart")
    assert change.changes == [AttrChange("running", False, True)]
    rt.apply(conn, change)
    verbs = [argv[2] for argv in commands(conn, mutating=True) if argv[0] == "service"]
    assert verbs == ["start"]
    assert svc.running()


def test_trigger_leaves_unmanaged_stopped_service_alone(rt: ServiceType, svc: Svc) -> None:
    """Puppet's refresh convention: a service that is not running is not restarted."""
    conn = LocalConnector()
    change = plan_change(rt, conn, {"name": svc.name}, triggered="restart")
    assert rt.apply(conn, change) == {"name": svc.name, "running": False, "enabled": False,
                                      "started_by_tectum": False, "enabled_by_tectum": False}
    assert commands(conn, mutating=True) == []
    assert not svc.running()


def test_trigger_with_running_false_stops_only(rt: ServiceType, svc: Svc) -> None:
    start(svc)
    conn = LocalConnector()
    change = plan_change(rt, conn, {"name": svc.name, "running": False}, triggered="reload")
    rt.apply(conn, change)
    verbs = [argv[2] for argv in commands(conn, mutating=True) if argv[0] == "service"]
    assert verbs == ["stop"]
    assert not svc.running() and svc.reloads() == 0


# -- enabled --------------------------------------------------------------------------------
def test_enable_disable_enable(rt: ServiceType, svc: Svc) -> None:
    conn = LocalConnector()
    change = plan_change(rt, conn, {"name": svc.name, "enabled": True})
    assert change.changes == [AttrChange("enabled", False, True)]
    assert rt.apply(conn, change) == {"name": svc.name, "running": False, "enabled": True,
                                      "started_by_tectum": False, "enabled_by_tectum": True}
    assert ["update-rc.d", svc.name, "defaults"] in commands(conn, mutating=True)
    assert len(svc.s_links()) == 4 and not svc.running()

    again = LocalConnector()
    assert plan_change(rt, again, {"name": svc.name, "enabled": True}).action is Action.NOOP
    assert commands(again, mutating=True) == []

    conn = LocalConnector()
    change = plan_change(rt, conn, {"name": svc.name, "enabled": False})
    assert change.changes == [AttrChange("enabled", True, False)]
    assert rt.apply(conn, change) == {"name": svc.name, "running": False, "enabled": False,
                                      "started_by_tectum": False, "enabled_by_tectum": False}
    assert ["update-rc.d", svc.name, "disable"] in commands(conn, mutating=True)
    assert svc.s_links() == [] and len(svc.k_links()) == 4

    # links exist now (all K): `defaults` would do nothing, so `enable` is used
    conn = LocalConnector()
    change = plan_change(rt, conn, {"name": svc.name, "enabled": True})
    assert rt.apply(conn, change) == {"name": svc.name, "running": False, "enabled": True,
                                      "started_by_tectum": False, "enabled_by_tectum": True}
    assert ["update-rc.d", svc.name, "enable"] in commands(conn, mutating=True)
    assert len(svc.s_links()) == 4


def test_enable_and_start_together(rt: ServiceType, svc: Svc) -> None:
    conn = LocalConnector()
    change = plan_change(rt, conn, {"name": svc.name, "running": True, "enabled": True})
    assert {c.name for c in change.changes} == {"running", "enabled"}
    assert rt.apply(conn, change) == {"name": svc.name, "running": True, "enabled": True,
                                      "started_by_tectum": True, "enabled_by_tectum": True}
    again = LocalConnector()
    assert plan_change(rt, again, {"name": svc.name, "running": True,
                                   "enabled": True}).action is Action.NOOP
    assert commands(again, mutating=True) == []


# -- flags: what tectum itself did ----------------------------------------------------------
def test_flags_follow_what_this_resource_did(rt: ServiceType, svc: Svc) -> None:
    """``started_by_tectum`` / ``enabled_by_tectum`` come from the record, are set by a start /
    an enable, cleared by a stop / a disable, and kept by everything else."""
    conn = LocalConnector()
    stored = rt.apply(conn, plan_change(rt, conn, {"name": svc.name, "running": True,
                                                   "enabled": True}))
    assert stored is not None
    assert stored["started_by_tectum"] is True and stored["enabled_by_tectum"] is True

    # a triggered restart keeps both (it is this resource's record)
    change = plan_change(rt, conn, {"name": svc.name, "running": True}, triggered="restart")
    change.prior = stored
    again = rt.apply(conn, change)
    assert again is not None
    assert again["started_by_tectum"] is True and again["enabled_by_tectum"] is True

    # another service's record (a REPLACE from another name) lends no flags
    change = plan_change(rt, conn, {"name": svc.name, "running": True}, triggered="reload")
    change.prior = {**stored, "name": "tectum-test-other"}
    change.action = Action.UPDATE
    other = rt.apply(conn, change)
    assert other is not None and other["started_by_tectum"] is False
    assert other["enabled_by_tectum"] is False

    change = plan_change(rt, conn, {"name": svc.name, "running": False, "enabled": False})
    change.prior = stored
    stopped = rt.apply(conn, change)
    assert stopped is not None
    assert stopped["started_by_tectum"] is False and stopped["enabled_by_tectum"] is False


def test_flags_stay_false_for_a_service_found_running_and_enabled(rt: ServiceType,
                                                                   svc: Svc) -> None:
    start(svc)
    assert sh("update-rc.d", svc.name, "defaults").returncode == 0
    conn = LocalConnector()
    change = plan_change(rt, conn, {"name": svc.name, "running": True, "enabled": True})
    assert change.action is Action.NOOP
    assert rt.apply(conn, change) == {"name": svc.name, "running": True, "enabled": True,
                                      "started_by_tectum": False, "enabled_by_tectum": False}
    assert commands(conn, mutating=True) == []


# -- delete ---------------------------------------------------------------------------------
def delete_change(record: dict[str, Any], before: dict[str, Any] | None = None
                  ) -> ResourceChange:
    """The DELETE the planner makes for a record that left the configuration."""
    return ResourceChange(address="host.local.service.x", type="service", action=Action.DELETE,
                          before=before, after=None, prior=record)


def test_delete_stops_a_running_service(rt: ServiceType, svc: Svc) -> None:
    """Issue 10 item 4: a deleted service whose record says running is stopped (it used to be
    only forgotten, and kept running after its package was removed)."""
    conn = LocalConnector()
    record = rt.apply(conn, plan_change(rt, conn, {"name": svc.name, "running": True}))
    assert record is not None and svc.running()
    observed = rt.read_objects(conn, [{"name": svc.name}])[0]
    conn = LocalConnector()
    assert rt.apply(conn, delete_change(record, rt.stored(observed or {}))) is None
    assert not svc.running()
    assert commands(conn, mutating=True) == [["service", svc.name, "stop"]]


def test_delete_stops_what_the_record_says_ran_even_if_tectum_did_not_start_it(
        rt: ServiceType, svc: Svc) -> None:
    """``running=True`` in the record is what a delete undoes; whether the object is deleted or
    only forgotten at all (found before tectum, ``on_destroy``) is the engine's decision."""
    start(svc)
    conn = LocalConnector()
    record = rt.apply(conn, plan_change(rt, conn, {"name": svc.name, "running": True}))
    assert record is not None and record["started_by_tectum"] is False
    assert rt.apply(LocalConnector(), delete_change(record)) is None
    assert not svc.running()


def test_delete_disables_what_tectum_enabled(rt: ServiceType, svc: Svc) -> None:
    conn = LocalConnector()
    record = rt.apply(conn, plan_change(rt, conn, {"name": svc.name, "running": True,
                                                   "enabled": True}))
    assert record is not None and record["enabled_by_tectum"] is True
    assert svc.running() and len(svc.s_links()) == 4
    conn = LocalConnector()
    assert rt.apply(conn, delete_change(record)) is None
    assert not svc.running()
    assert svc.s_links() == [] and len(svc.k_links()) == 4
    assert commands(conn, mutating=True) == [["update-rc.d", svc.name, "disable"],
                                             ["service", svc.name, "stop"]]


def test_delete_keeps_a_service_found_enabled_enabled(rt: ServiceType, svc: Svc) -> None:
    assert sh("update-rc.d", svc.name, "defaults").returncode == 0
    conn = LocalConnector()
    record = rt.apply(conn, plan_change(rt, conn, {"name": svc.name, "running": True,
                                                   "enabled": True}))
    assert record is not None and record["enabled_by_tectum"] is False
    conn = LocalConnector()
    assert rt.apply(conn, delete_change(record)) is None
    assert not svc.running()
    assert len(svc.s_links()) == 4
    assert commands(conn, mutating=True) == [["service", svc.name, "stop"]]


def test_delete_of_a_stopped_service_only_forgets_it(rt: ServiceType, svc: Svc) -> None:
    conn = LocalConnector()
    record = rt.apply(conn, plan_change(rt, conn, {"name": svc.name, "running": False}))
    assert record is not None and record["running"] is False
    # started outside of tectum since: the record does not say running, so it is left alone
    pid = start(svc)
    conn = LocalConnector()
    assert rt.apply(conn, delete_change(record)) is None
    assert conn.log == []  # nothing to undo: not even a read
    assert svc.running() and svc.pid() == pid


def test_delete_of_a_service_already_stopped_runs_no_stop(rt: ServiceType, svc: Svc) -> None:
    conn = LocalConnector()
    record = rt.apply(conn, plan_change(rt, conn, {"name": svc.name, "running": True}))
    assert record is not None
    assert sh(svc.script, "stop").returncode == 0
    conn = LocalConnector()
    assert rt.apply(conn, delete_change(record)) is None
    assert commands(conn, mutating=True) == []
    assert len(commands(conn, mutating=False)) == 1  # the re-read


def test_delete_of_a_service_that_is_gone_forgets_it(rt: ServiceType) -> None:
    name = f"tectum-test-{secrets.token_hex(4)}"
    record = {"name": name, "running": True, "enabled": True, "started_by_tectum": True,
              "enabled_by_tectum": True}
    conn = LocalConnector()
    assert rt.apply(conn, delete_change(record)) is None
    assert commands(conn, mutating=True) == []


def test_delete_fails_when_the_service_keeps_running(
        rt: ServiceType, make_svc: MakeSvc, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop is verified: an init script whose ``stop`` exits 0 but stops nothing fails the
    delete, with what the status command says."""
    monkeypatch.setattr(service_module, "VERIFY_SECONDS", 1.0)
    stubborn = make_svc(stop_works=False)
    conn = LocalConnector()
    record = rt.apply(conn, plan_change(rt, conn, {"name": stubborn.name, "running": True}))
    assert record is not None
    with pytest.raises(ApplyError) as err:
        rt.apply(LocalConnector(), delete_change(record))
    text = str(err.value)
    assert f"service {stubborn.name} is still running" in text
    assert f"service {stubborn.name} stop" in text
    assert f"service {stubborn.name} status exited 0" in text
    assert stubborn.running()


def test_replace_by_another_name_stops_the_old_service(rt: ServiceType,
                                                        make_svc: MakeSvc) -> None:
    """The name is the identity: a REPLACE deletes the old service (as a delete would) and
    starts the new one."""
    old, new = make_svc(), make_svc()
    conn = LocalConnector()
    record = rt.apply(conn, plan_change(rt, conn, {"name": old.name, "running": True}))
    assert record is not None and old.running()
    desired = rt.prepare({"name": new.name, "running": True}, ".")
    change = ResourceChange(address="host.local.service.x", type="service",
                            action=Action.REPLACE, before=record, after=desired,
                            changes=[AttrChange("name", old.name, new.name, force_new=True)],
                            prior=record)
    conn = LocalConnector()
    stored = rt.apply(conn, change)
    assert stored == {"name": new.name, "running": True, "enabled": False,
                      "started_by_tectum": True, "enabled_by_tectum": False}
    assert not old.running() and new.running()
    verbs = [argv[1:] for argv in commands(conn, mutating=True)]
    assert verbs == [[old.name, "stop"], [new.name, "start"]]


@pytest.mark.parametrize(("record", "summary"), [
    ({"running": True, "enabled_by_tectum": True}, "stops the service and disables it"),
    ({"running": True, "enabled": True, "enabled_by_tectum": False}, "stops the service"),
    ({"running": True}, "stops the service"),
    ({"running": False, "enabled_by_tectum": True}, "disables the service"),
    ({"running": False, "enabled": True}, None),
    ({}, None),
])
def test_delete_summary(rt: ServiceType, record: dict[str, Any], summary: str | None) -> None:
    assert rt.delete_summary({"name": "nginx", **record}) == summary


@pytest.mark.parametrize(("found", "desired", "created"), [
    (None, {"running": True}, True),
    (None, {}, True),
    ({"running": False, "enabled": False}, {"running": True}, True),
    ({"running": False, "enabled": False}, {"running": True, "enabled": True}, True),
    ({"running": True, "enabled": False}, {"running": True}, False),
    ({"running": True, "enabled": True}, {"running": True, "enabled": True}, False),
    ({"running": False, "enabled": False}, {"enabled": True}, False),
    ({"running": False, "enabled": False}, {"running": False}, False),
])
def test_takes_over_as_created_when_tectum_starts_it(
        rt: ServiceType, found: dict[str, Any] | None, desired: dict[str, Any],
        created: bool) -> None:
    """A service counts as made by tectum (deleted, i.e. stopped, when its resource goes)
    when it was absent or tectum starts it; one found running is only forgotten."""
    found = None if found is None else {"name": "nginx", **found}
    assert rt.takes_over_as_created(found, {"name": "nginx", **desired}) is created
