"""``service`` on a host whose PID 1 is systemd: real ``systemctl``, real units, over SSH.

This machine does not boot with systemd, so :mod:`tests.harness.systemd_host` boots one: a
``systemd-nspawn --boot`` container of Debian bookworm with ``/lib/systemd/systemd`` as PID 1, in
its own network namespace, reached with tectum's SSH connector (and with the ``tectum`` command
for the end-to-end test). Each test writes its own unit ``tectum-test-<hex>.service`` (``sleep
infinity``, a reload that appends to a marker file) into ``/etc/systemd/system`` and checks the
outcome with ``systemctl`` inside the host; a finalizer stops, disables and removes the unit
(by its name) and its marker; the host itself is thrown away at the end of the module.
"""

from __future__ import annotations

import os
import secrets
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError
from tectum.providers.host import service as service_module
from tectum.providers.host.service import ServiceType
from tectum.providers.host.ssh import SSHConnector
from tests.conftest import run_tectum
from tests.harness.systemd_host import SystemdHost

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(os.geteuid() != 0, reason="the systemd test host needs root"),
]

UNIT = """[Unit]
Description=tectum test unit (throw-away)

[Service]
ExecStart={exec_start}
ExecReload=/bin/sh -c 'echo reloaded >> {marker}'

[Install]
WantedBy=multi-user.target
"""


@dataclass
class Unit:
    host: SystemdHost
    name: str  # the service name given to tectum (no suffix)

    @property
    def unit(self) -> str:
        return f"{self.name}.service"

    @property
    def marker(self) -> str:
        return f"/run/{self.name}.reloads"

    def show(self, prop: str) -> str:
        return self.host.systemctl("show", "--value", "-p", prop, self.unit).stdout.strip()

    def active(self) -> str:
        return self.host.systemctl("is-active", self.unit).stdout.strip()

    def enabled(self) -> str:
        return self.host.systemctl("is-enabled", self.unit).stdout.strip()

    def main_pid(self) -> int:
        return int(self.show("MainPID"))

    def reloads(self) -> int:
        out = self.host.run(f"cat {shlex.quote(self.marker)} 2>/dev/null").stdout
        return len(out.splitlines())


@pytest.fixture(scope="module")
def host() -> Iterator[SystemdHost]:
    with SystemdHost("sdsvc") as host:
        yield host


@pytest.fixture
def conn(host: SystemdHost) -> Iterator[SSHConnector]:
    c = SSHConnector(host.name, host.address, port=host.port, key_path=host.key_path,
                     known_hosts=host.known_hosts, connect_timeout=5)
    try:
        yield c
    finally:
        c.close()


def _install_unit(host: SystemdHost, exec_start: str) -> Unit:
    u = Unit(host, f"tectum-test-{secrets.token_hex(4)}")
    host.run(f"cat > /etc/systemd/system/{u.unit} && systemctl daemon-reload",
             input=UNIT.format(exec_start=exec_start, marker=u.marker), check=True)
    return u


def _remove_unit(u: Unit) -> None:
    u.host.run(f"systemctl stop {u.unit}; systemctl disable {u.unit}; "
               f"rm -f /etc/systemd/system/{u.unit} {shlex.quote(u.marker)}; "
               "systemctl daemon-reload; systemctl reset-failed")


@pytest.fixture
def unit(host: SystemdHost) -> Iterator[Unit]:
    """A stopped, disabled unit running ``sleep infinity``; removed after the test."""
    u = _install_unit(host, "/bin/sleep infinity")
    try:
        yield u
    finally:
        _remove_unit(u)


@pytest.fixture
def rt() -> ServiceType:
    return ServiceType()


def plan_change(rt: ServiceType, conn: SSHConnector, desired: dict[str, Any],
                triggered: str | None = None) -> ResourceChange:
    """read → plan → ResourceChange, as the engine does (a trigger makes a NOOP an UPDATE)."""
    desired = rt.prepare(desired, ".")
    observed = rt.read_objects(conn, [desired])[0]
    action, changes = rt.plan(desired, observed, None)
    if triggered and action is Action.NOOP:
        action = Action.UPDATE
    return ResourceChange(address=f"host.sd.service.{desired['name']}", type="service",
                          action=action, before=observed, after=desired, changes=changes,
                          triggered=triggered,
                          triggers=["host.sd.file.conf"] if triggered else [])


def mutations(conn: SSHConnector) -> list[list[str]]:
    out: list[list[str]] = []
    for entry in conn.log:
        argv = entry.get("argv")
        if entry.get("mutating") and isinstance(argv, list):
            out.append([str(a) for a in argv])
    return out


def test_the_host_runs_systemd(host: SystemdHost) -> None:
    """What makes this the systemd path: PID 1 is systemd and ``/run/systemd/system`` exists."""
    out = host.run("cat /proc/1/comm; test -d /run/systemd/system && echo booted; "
                   "systemctl is-system-running", check=True).stdout.split()
    assert out == ["systemd", "booted", "running"]


def test_read_uses_systemctl_show(rt: ServiceType, conn: SSHConnector, unit: Unit) -> None:
    missing = f"tectum-test-{secrets.token_hex(4)}"
    got = rt.read_objects(conn, [{"name": unit.name}, {"name": missing}, {"name": unit.unit}])
    assert got == [{"name": unit.name, "running": False, "enabled": False}, None,
                   {"name": unit.unit, "running": False, "enabled": False}]
    assert len(conn.log) == 1 and conn.log[0]["mutating"] is False


def test_start_and_enable_then_noop(rt: ServiceType, conn: SSHConnector, unit: Unit) -> None:
    change = plan_change(rt, conn, {"name": unit.name, "running": True, "enabled": True})
    assert change.action is Action.UPDATE
    assert {c.name for c in change.changes} == {"running", "enabled"}
    stored = rt.apply(conn, change)
    assert stored == {"name": unit.name, "running": True, "enabled": True,
                      "started_by_tectum": True, "enabled_by_tectum": True}
    assert unit.active() == "active" and unit.enabled() == "enabled"
    assert mutations(conn) == [["systemctl", "enable", "--", unit.unit],
                               ["systemctl", "start", "--", unit.unit]]
    conn.log.clear()
    again = plan_change(rt, conn, {"name": unit.name, "running": True, "enabled": True})
    assert again.action is Action.NOOP and again.changes == []
    assert mutations(conn) == []


def test_stop_and_disable(rt: ServiceType, conn: SSHConnector, unit: Unit) -> None:
    unit.host.systemctl("enable", "--now", unit.unit)
    assert unit.active() == "active" and unit.enabled() == "enabled"
    change = plan_change(rt, conn, {"name": unit.name, "running": False, "enabled": False})
    assert change.changes == [AttrChange("running", True, False),
                              AttrChange("enabled", True, False)]
    assert rt.apply(conn, change) == {"name": unit.name, "running": False, "enabled": False,
                                      "started_by_tectum": False, "enabled_by_tectum": False}
    assert unit.active() == "inactive" and unit.enabled() == "disabled"


def test_triggered_restart_and_reload(rt: ServiceType, conn: SSHConnector, unit: Unit) -> None:
    unit.host.systemctl("start", unit.unit)
    pid = unit.main_pid()
    assert pid > 0
    rt.apply(conn, plan_change(rt, conn, {"name": unit.name, "running": True},
                               triggered="restart"))
    restarted = unit.main_pid()
    assert restarted not in (0, pid) and unit.active() == "active"
    assert ["systemctl", "restart", "--", unit.unit] in mutations(conn)

    rt.apply(conn, plan_change(rt, conn, {"name": unit.name}, triggered="reload"))
    assert unit.main_pid() == restarted and unit.reloads() == 1
    assert ["systemctl", "reload", "--", unit.unit] in mutations(conn)


def test_start_of_a_unit_that_dies_fails(rt: ServiceType, conn: SSHConnector,
                                         host: SystemdHost) -> None:
    """``systemctl start`` of a simple unit returns at once; the unit dies 0.2 s later. The
    settle-and-poll catches it, and the error carries ``systemctl status``."""
    dying = _install_unit(host, "/bin/sh -c 'sleep 0.2; exit 3'")
    try:
        with pytest.raises(ApplyError) as err:
            rt.apply(conn, plan_change(rt, conn, {"name": dying.name, "running": True}))
        text = str(err.value)
        assert f"service {dying.name} is not running" in text
        assert f"systemctl status --no-pager --lines=5 -- {dying.unit} exited 3" in text
        assert dying.active() == "failed"
    finally:
        _remove_unit(dying)


def test_delete_stops_and_disables_what_tectum_started_and_enabled(
        rt: ServiceType, conn: SSHConnector, unit: Unit) -> None:
    record = rt.apply(conn, plan_change(rt, conn, {"name": unit.name, "running": True,
                                                   "enabled": True}))
    assert record is not None
    conn.log.clear()
    delete = ResourceChange(address="host.sd.service.x", type="service", action=Action.DELETE,
                            before=None, after=None, prior=record)
    assert rt.apply(conn, delete) is None
    assert unit.active() == "inactive" and unit.enabled() == "disabled"
    assert mutations(conn) == [["systemctl", "disable", "--", unit.unit],
                               ["systemctl", "stop", "--", unit.unit]]


def test_delete_leaves_a_unit_found_enabled_enabled(rt: ServiceType, conn: SSHConnector,
                                                    unit: Unit) -> None:
    unit.host.systemctl("enable", unit.unit)
    record = rt.apply(conn, plan_change(rt, conn, {"name": unit.name, "running": True,
                                                   "enabled": True}))
    assert record is not None and record["enabled_by_tectum"] is False
    delete = ResourceChange(address="host.sd.service.x", type="service", action=Action.DELETE,
                            before=None, after=None, prior=record)
    assert rt.apply(conn, delete) is None
    assert unit.active() == "inactive" and unit.enabled() == "enabled"


def test_delete_fails_when_the_unit_keeps_running(
        rt: ServiceType, conn: SSHConnector, host: SystemdHost,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit whose stop is refused (``RefuseManualStop``) makes ``systemctl stop`` fail: the
    delete fails with systemctl's message, and the unit still runs."""
    monkeypatch.setattr(service_module, "VERIFY_SECONDS", 1.0)
    stubborn = _install_unit(host, "/bin/sleep infinity")
    try:
        host.run(f"sed -i 's/^\\[Unit\\]$/[Unit]\\nRefuseManualStop=yes/' "
                 f"/etc/systemd/system/{stubborn.unit} && systemctl daemon-reload", check=True)
        record = rt.apply(conn, plan_change(rt, conn, {"name": stubborn.name, "running": True}))
        assert record is not None
        delete = ResourceChange(address="host.sd.service.x", type="service",
                                action=Action.DELETE, before=None, after=None, prior=record)
        with pytest.raises(ApplyError, match=f"systemctl stop -- {stubborn.unit} failed"):
            rt.apply(conn, delete)
        assert stubborn.active() == "active"
    finally:
        host.run(f"sed -i '/^RefuseManualStop=yes$/d' /etc/systemd/system/{stubborn.unit} "
                 "&& systemctl daemon-reload")
        _remove_unit(stubborn)


def test_apply_plan_and_destroy_with_the_tectum_command(host: SystemdHost, unit: Unit,
                                                        tmp_path: Path) -> None:
    """The whole path: ``tectum apply`` starts and enables the unit over SSH; ``plan
    --destroy`` says it will be stopped and disabled; ``destroy`` does it."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "stack.py").write_text(
        "from tectum import apply_role\n"
        "from tectum.host import Service\n\n"
        "def node(host):\n"
        f"    Service('unit', name={unit.name!r}, running=True, enabled=True)\n\n"
        "apply_role(node, 'nodes')\n")
    (root / "inventory.toml").write_text("\n".join([
        "[defaults]", f'key = "{host.key_path}"', f'known_hosts = "{host.known_hosts}"',
        "connect_timeout = 5", "",
        f"[hosts.{host.name}]", f'address = "{host.address}"', f"port = {host.port}", "",
        "[groups.nodes]", f'hosts = ["{host.name}"]', ""]))
    applied = run_tectum("apply", "--auto-approve", str(root))
    assert applied.returncode == 0, applied.output
    assert unit.active() == "active" and unit.enabled() == "enabled"
    assert run_tectum("plan", "--detailed-exitcode", str(root)).returncode == 0

    plan = run_tectum("plan", "--destroy", str(root))
    assert plan.returncode == 0, plan.output
    assert "stops the service and disables it" in plan.stdout, plan.stdout
    gone = run_tectum("destroy", "--auto-approve", str(root))
    assert gone.returncode == 0, gone.output
    assert unit.active() == "inactive" and unit.enabled() == "disabled"
