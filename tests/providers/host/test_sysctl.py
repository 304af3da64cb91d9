"""``sysctl`` for real: this machine's kernel settings (``system``) and a fleet host's
(``fleet``), no mocks.

Keys changed on this machine are per-network-namespace TCP/IP settings whose change for a few
seconds harms nothing (``net.ipv4.tcp_keepalive_intvl``, ``tcp_fin_timeout`` and one port
of ``ip_local_port_range``); each test puts the value it found back and removes
its ``/etc/sysctl.d`` file, and refuses to start when that file exists already. The fleet test
changes ``net.ipv4.ip_forward`` inside a test host's own network namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ApplyError, ReadItem
from tectum.providers.host.connector import Connector, LocalConnector
from tectum.providers.host.ssh import SSHConnector
from tectum.providers.host.sysctl import (
    SysctlType,
    conf_path,
    normalize_value,
    persisted_value,
    proc_path,
)
from tests.conftest import run_tectum, tectum_env
from tests.harness.fleet import Fleet

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def rt() -> SysctlType:
    return SysctlType()


@pytest.fixture
def conn() -> LocalConnector:
    return LocalConnector(log_path="")


def kernel_key(name: str) -> Iterator[str]:
    """``name``'s live value is put back and its tectum file removed after the test."""
    path, conf = proc_path(name), conf_path(name)
    if os.path.exists(conf):
        pytest.skip(f"{conf} exists already (not made by this test): left alone")
    original = Path(path).read_text(encoding="ascii")
    try:
        yield original.strip()
    finally:
        Path(path).write_text(original, encoding="ascii")
        if os.path.exists(conf):
            os.unlink(conf)


@pytest.fixture
def intvl() -> Iterator[str]:
    yield from kernel_key("net.ipv4.tcp_keepalive_intvl")


@pytest.fixture
def port_range() -> Iterator[str]:
    yield from kernel_key("net.ipv4.ip_local_port_range")


@pytest.fixture
def fin_timeout() -> Iterator[str]:
    yield from kernel_key("net.ipv4.tcp_fin_timeout")


def plan(rt: SysctlType, conn: Connector, attrs: dict[str, Any],
         prior: dict[str, Any] | None = None) -> ResourceChange:
    desired = rt.prepare(dict(attrs), ".")
    conn.prefetch(rt.facts([desired]))
    try:
        observed = rt.read(conn, [ReadItem(desired, prior)])[0]
    finally:
        conn.forget_facts()
    action, changes = rt.plan(desired, observed, prior)
    return ResourceChange("sysctl.test", "sysctl", action,
                          rt.stored(observed) if observed is not None else None, desired,
                          changes, prior=prior)


def apply(rt: SysctlType, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
    return rt.apply(conn, change)


def mutations(conn: LocalConnector) -> list[dict[str, object]]:
    return [e for e in conn.log if e["mutating"]]


# -- pure parts ------------------------------------------------------------------------------

def test_names_and_paths() -> None:
    assert proc_path("net.ipv4.ip_forward") == "/proc/sys/net/ipv4/ip_forward"
    # a / inside a component stands for a . in the path (a VLAN interface), as procps has it
    assert proc_path("net.ipv4.conf.eth0/100.forwarding") == \
        "/proc/sys/net/ipv4/conf/eth0.100/forwarding"
    assert conf_path("net.ipv4.ip_forward") == "/etc/sysctl.d/99-tectum-net.ipv4.ip_forward.conf"
    # two keys never share a file
    assert conf_path("a.b/c") != conf_path("a.b.c")
    assert "/" not in conf_path("net.ipv4.conf.eth0/100.forwarding").removeprefix(
        "/etc/sysctl.d/")
    # 99-tectum-* is read after Debian's 99-sysctl.conf (the link to /etc/sysctl.conf): it wins
    assert sorted(["99-sysctl.conf", os.path.basename(conf_path("vm.swappiness"))])[-1] \
        .startswith("99-tectum-")


def test_values_compare_normalised() -> None:
    assert normalize_value("32768\t60999\n") == normalize_value("32768  60999") == "32768 60999"
    assert normalize_value(1) == "1"


def test_persisted_value_is_read_as_sysctl_reads_the_file() -> None:
    text = ("# comment\n; another\n\n"
            "net.ipv4.ip_forward = 0\n"
            "-net/ipv4/ip_forward=1\n"            # slash form, ignore-errors prefix
            "net.ipv4.ip_forwardx = 7\n"
            "  net.ipv4.tcp_keepalive_time  =  10 \n")
    assert persisted_value(text, "net.ipv4.ip_forward") == "1"  # the last assignment wins
    assert persisted_value(text, "net.ipv4.tcp_keepalive_time") == "10"
    assert persisted_value(text, "vm.swappiness") is None
    assert persisted_value("net/ipv4/conf/eth0.100/forwarding = 1\n",
                           "net.ipv4.conf.eth0/100.forwarding") == "1"


def test_bad_names_and_values_are_diagnostics(rt: SysctlType) -> None:
    name, value = rt.schema.attrs["name"], rt.schema.attrs["value"]
    assert name.check("net.ipv4.ip_forward") is None
    assert "with dots" in str(name.check("net/ipv4/ip_forward"))
    assert "empty component" in str(name.check("net..ipv4"))
    assert "empty component" in str(name.check("net.ipv4."))
    assert "not a kernel parameter name" in str(name.check("net.ipv4.a b"))
    assert "not a kernel parameter name" in str(name.check("net.ipv4./.."))
    assert value.check(1) is None and value.check("32768 60999") is None
    assert "boolean" in str(value.check(True))
    assert "one line" in str(value.check("1\n2"))
    assert "empty" in str(value.check("  "))
    with pytest.raises(ValueError, match="write 1 or 0"):
        rt.prepare({"name": "net.ipv4.ip_forward", "value": True}, ".")


def test_unknown_key_is_a_plan_time_diagnostic(tmp_path: Path) -> None:
    (tmp_path / "stack.py").write_text(
        "from tectum.host import Sysctl\n"
        "Sysctl('typo', name='net.ipv4.ip_forwad', value=1)\n")
    result = run_tectum("plan", str(tmp_path))
    assert result.returncode == 1, result.output
    assert "net.ipv4.ip_forwad is not a kernel parameter" in result.output
    assert "/proc/sys/net/ipv4/ip_forwad does not exist" in result.output
    assert "Traceback" not in result.output


def test_unknown_key_of_a_resource_that_goes_is_no_error(rt: SysctlType,
                                                         conn: LocalConnector) -> None:
    """A key that vanished (its module unloaded) does not block removing its resource."""
    prior = {"name": "net.ipv4.no_such_key", "value": "1",
             "file": conf_path("net.ipv4.no_such_key"), "persisted": "1"}
    assert rt.read(conn, [ReadItem(None, prior)]) == [None]
    assert rt.missing(conn, [ReadItem(None, prior)]) == [[]]
    declared = [ReadItem(rt.prepare(dict(prior), "."), None)]
    found = rt.read(conn, declared)[0]
    assert found is not None and found["value"] is None
    (need,) = rt.missing(conn, declared)[0]
    assert need[0] is None and "no_such_key is not a kernel parameter" in need[1]


# -- this machine ----------------------------------------------------------------------------

@pytest.mark.system
@needs_root
def test_create_noop_drift_on_both_and_delete(rt: SysctlType, conn: LocalConnector,
                                              intvl: str) -> None:
    key = "net.ipv4.tcp_keepalive_intvl"
    want = str(int(intvl) + 1)
    attrs = {"name": key, "value": int(want)}

    change = plan(rt, conn, attrs)
    assert change.action is Action.CREATE
    assert {c.name: (c.before, c.after) for c in change.changes} == {
        "value": (intvl, want), "persisted": (None, want), "file": (None, conf_path(key))}
    assert rt.warnings(change)  # a rollback leaves the live value
    record = apply(rt, conn, change)
    assert record == {"name": key, "value": want, "file": conf_path(key), "persisted": want}
    assert Path(proc_path(key)).read_text().strip() == want
    assert f"{key} = {want}" in Path(conf_path(key)).read_text()

    # converged: a no-op with no mutation
    mark = len(mutations(conn))
    assert plan(rt, conn, attrs, record).action is Action.NOOP
    assert mutations(conn)[mark:] == []

    # the live value changed by hand: only the live value is written back
    Path(proc_path(key)).write_text(str(int(want) + 5) + "\n")
    change = plan(rt, conn, attrs, record)
    assert change.action is Action.UPDATE
    assert [(c.name, c.before, c.after) for c in change.changes] == [
        ("value", str(int(want) + 5), want)]
    mark = len(mutations(conn))
    record = apply(rt, conn, change)
    assert [e["op"] for e in mutations(conn)[mark:]] == ["run"]  # tee, no file write
    assert Path(proc_path(key)).read_text().strip() == want

    # the file edited by hand: only the file is written back
    Path(conf_path(key)).write_text(f"{key} = 3\n")
    change = plan(rt, conn, attrs, record)
    assert [(c.name, c.before, c.after) for c in change.changes] == [("persisted", "3", want)]
    mark = len(mutations(conn))
    record = apply(rt, conn, change)
    assert [e["op"] for e in mutations(conn)[mark:]] == ["write"]
    assert plan(rt, conn, attrs, record).action is Action.NOOP

    # a comment added, the same value spelled with a tab: not drift
    Path(conf_path(key)).write_text(f"# note\n{key}\t=\t{want}\n")
    assert plan(rt, conn, attrs, record).action is Action.NOOP

    # the file removed by hand: made again
    os.unlink(conf_path(key))
    change = plan(rt, conn, attrs, record)
    assert change.action is Action.CREATE
    record = apply(rt, conn, change)
    assert os.path.exists(conf_path(key))

    # delete: the file goes, the live value stays (and the plan says so)
    assert record is not None
    summary = rt.delete_summary(record)
    assert summary is not None and conf_path(key) in summary and "live value stays" in summary
    gone = apply(rt, conn, ResourceChange("sysctl.test", "sysctl", Action.DELETE, record, None,
                                          [], prior=record))
    assert gone is None
    assert not os.path.exists(conf_path(key))
    assert Path(proc_path(key)).read_text().strip() == want
    assert rt.read(conn, [ReadItem(None, record)]) == [None]


@pytest.mark.system
@needs_root
def test_vector_value_written_with_spaces(rt: SysctlType, conn: LocalConnector,
                                          port_range: str) -> None:
    """The kernel prints a tab between the parts; the stack writes spaces: no diff."""
    low, high = (int(x) for x in port_range.split())
    assert "\t" in Path(proc_path("net.ipv4.ip_local_port_range")).read_text()
    attrs = {"name": "net.ipv4.ip_local_port_range", "value": f"{low}  {high - 1}"}
    change = plan(rt, conn, attrs)
    assert change.action is Action.CREATE
    record = apply(rt, conn, change)
    assert record is not None and record["value"] == f"{low} {high - 1}"
    assert Path(proc_path(attrs["name"])).read_text() == f"{low}\t{high - 1}\n"
    assert plan(rt, conn, attrs, record).action is Action.NOOP
    assert plan(rt, conn, {**attrs, "value": f"{low}\t{high - 1}"}, record).action \
        is Action.NOOP


@pytest.mark.system
@needs_root
def test_refused_or_rewritten_value_fails_before_the_file(rt: SysctlType,
                                                          conn: LocalConnector,
                                                          fin_timeout: str) -> None:
    key = "net.ipv4.tcp_fin_timeout"
    change = plan(rt, conn, {"name": key, "value": "abc"})
    with pytest.raises(ApplyError, match="Invalid argument"):
        apply(rt, conn, change)
    assert not os.path.exists(conf_path(key))
    assert Path(proc_path(key)).read_text().strip() == fin_timeout
    # the kernel reads "010" as a number and prints it otherwise: the value would never
    # converge, so the apply fails and the file (the next boot) is left alone
    change = plan(rt, conn, {"name": key, "value": "010"})
    with pytest.raises(ApplyError, match="write it as the kernel shows it"):
        apply(rt, conn, change)
    assert not os.path.exists(conf_path(key))


@pytest.mark.system
@needs_root
def test_found_file_is_only_forgotten(rt: SysctlType, conn: LocalConnector,
                                      intvl: str) -> None:
    """A file that was there before tectum makes tectum its finder, not its creator."""
    key = "net.ipv4.tcp_keepalive_intvl"
    Path(conf_path(key)).write_text(f"{key} = {intvl}\n")
    change = plan(rt, conn, {"name": key, "value": intvl})
    assert change.action is Action.NOOP
    assert not rt.takes_over_as_created(change.before, change.after or {})


@pytest.mark.system
@needs_root
def test_stack_apply_drift_and_destroy(tmp_path: Path, intvl: str) -> None:
    """Through the CLI: the drift of both sides is reported, the destroy says what stays."""
    key = "net.ipv4.tcp_keepalive_intvl"
    want = int(intvl) + 2
    (tmp_path / "stack.py").write_text(
        f"from tectum.host import Sysctl\nSysctl('intvl', name='{key}', value={want})\n")
    result = run_tectum("apply", "--auto-approve", str(tmp_path))
    assert result.returncode == 0, result.output
    Path(proc_path(key)).write_text(f"{want + 1}\n")
    Path(conf_path(key)).write_text(f"{key} = {want + 1}\n")
    result = run_tectum("plan", str(tmp_path))
    assert "changed outside tectum: value, persisted" in result.output, result.output
    result = run_tectum("apply", "--auto-approve", str(tmp_path))
    assert result.returncode == 0, result.output
    assert Path(proc_path(key)).read_text().strip() == str(want)
    result = run_tectum("destroy", "--auto-approve", str(tmp_path))
    assert result.returncode == 0, result.output
    assert "the live value stays as it is until the next boot" in result.output
    assert not os.path.exists(conf_path(key))


# -- a fleet host, over SSH --------------------------------------------------------------------

@pytest.mark.fleet
@needs_root
def test_over_ssh_in_one_round_trip(rt: SysctlType) -> None:
    """On a test host (its own network namespace): the read of the live value and
    of the file comes in the host's one fact round trip — ``/proc`` files have a stat size of
    0, so their text comes from ``cat``, not from the content prefetch — and create, drift,
    repair and delete work through the SSH connector's own scripts."""
    key = "net.ipv4.ip_forward"
    with Fleet(names=["sysctl1"]) as fleet:
        host = fleet.host("sysctl1")
        conn = SSHConnector(host.name, host.address, port=host.port, key_path=host.key_path,
                            known_hosts=host.known_hosts, log_path="")
        try:
            live = fleet.run("sysctl1", f"cat {proc_path(key)}", check=True).stdout.strip()
            want = "0" if live == "1" else "1"
            start = conn.round_trips
            change = plan(rt, conn, {"name": key, "value": want})
            assert conn.round_trips - start == 1  # facts of the live value and of the file
            assert change.action is Action.CREATE
            assert [(c.name, c.before) for c in change.changes][0] == ("value", live)
            record = apply(rt, conn, change)
            assert fleet.run("sysctl1", f"cat {proc_path(key)}").stdout.strip() == want
            assert f"{key} = {want}" in fleet.run("sysctl1", f"cat {conf_path(key)}").stdout
            start = conn.round_trips
            assert plan(rt, conn, {"name": key, "value": want}, record).action is Action.NOOP
            assert conn.round_trips - start == 1

            fleet.run("sysctl1", f"echo {live} > {proc_path(key)}; "
                      f"echo '{key} = {live}' > {conf_path(key)}", check=True)
            change = plan(rt, conn, {"name": key, "value": want}, record)
            assert sorted(c.name for c in change.changes) == ["persisted", "value"]
            record = apply(rt, conn, change)
            assert plan(rt, conn, {"name": key, "value": want}, record).action is Action.NOOP

            assert apply(rt, conn, ResourceChange("sysctl.test", "sysctl", Action.DELETE,
                                                  record, None, [], prior=record)) is None
            assert fleet.run("sysctl1", f"test -e {conf_path(key)}").returncode == 1
            assert fleet.run("sysctl1", f"cat {proc_path(key)}").stdout.strip() == want
        finally:
            conn.close()


# -- keys a dependency brings, and the file's path shared with a File --------------------------

def test_a_file_on_the_sysctl_file_is_refused(tmp_path: Path) -> None:
    key = "net.ipv4.tcp_fin_timeout"
    (tmp_path / "stack.py").write_text(
        "from tectum.host import File, Sysctl\n"
        f"Sysctl('fin', name={key!r}, value=30)\n"
        f"File('conf', path={conf_path(key)!r}, content='{key} = 31\\n')\n")
    result = run_tectum("validate", str(tmp_path))
    assert result.returncode == 1 and "Object managed twice" in result.output, result.output
    assert "sysctl.fin" in result.output and "file.conf" in result.output


def test_a_missing_key_is_excused_when_a_dependency_changes(tmp_path: Path) -> None:
    """Planned without the key: the Command it depends on changes in the plan, so the plan
    is made; the apply then says the key is still missing (nothing is written)."""
    key = "net.ipv4.tectum_no_such_key"
    (tmp_path / "stack.py").write_text(
        "from tectum.host import Command, Sysctl\n"
        f"mod = Command('load', command=['touch', {str(tmp_path / 'loaded')!r}], "
        f"creates={str(tmp_path / 'loaded')!r})\n"
        f"Sysctl('k', name={key!r}, value=1, depends_on=[mod])\n")
    result = run_tectum("plan", str(tmp_path))
    assert result.returncode == 0 and "2 to add" in result.output, result.output
    result = run_tectum("apply", "--auto-approve", str(tmp_path))
    assert result.returncode == 1, result.output
    assert "is not a kernel parameter" in result.output and "does not exist" in result.output
    assert not os.path.exists(conf_path(key))


@pytest.mark.system
@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None,
                    reason="needs unshare and ip")
def test_a_key_the_command_it_depends_on_brings(tmp_path: Path) -> None:
    """As ``Sysctl("net.ipv4.vs...", depends_on=[Command("modprobe ip_vs")])``: in a network
    namespace of its own, the Command makes a veth interface, whose keys
    (``net.ipv4.conf.IFACE.*``) appear only then. Plan, apply, a no-op plan and destroy run
    in that one namespace (it goes with the process)."""
    key = "net.ipv4.conf.tectumv0.forwarding"
    if os.path.exists(conf_path(key)):
        pytest.skip(f"{conf_path(key)} exists already (not made by this test): left alone")
    (tmp_path / "stack.py").write_text(
        "from tectum.host import Command, Sysctl\n"
        "veth = Command('veth', command=['ip', 'link', 'add', 'tectumv0', 'type', 'veth', "
        "'peer', 'name', 'tectumv1'], unless='test -d /proc/sys/net/ipv4/conf/tectumv0')\n"
        f"Sysctl('fwd', name={key!r}, value=1, depends_on=[veth])\n")
    tectum = f"{sys.executable} -m tectum"
    script = (f"{tectum} apply --auto-approve . && cat {proc_path(key)} && "
              f"{tectum} plan --detailed-exitcode . && cat {conf_path(key)} && "
              f"{tectum} destroy --auto-approve .")
    try:
        proc = subprocess.run(["unshare", "-n", "/bin/sh", "-c", script], cwd=tmp_path,
                              env=tectum_env(), capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL, check=False)
        if "unshare failed" in proc.stderr or "Operation not permitted" in proc.stderr:
            pytest.skip(f"no network namespace here: {proc.stderr.strip()}")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"{key} = 1" in proc.stdout and "Apply complete" in proc.stdout
        assert not os.path.exists(conf_path(key))
    finally:
        if os.path.exists(conf_path(key)):
            os.unlink(conf_path(key))
