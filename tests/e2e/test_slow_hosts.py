"""A slow host is not an unreachable host (issue 12, item 7): real test hosts
(``tests.harness.fleet``) frozen with SIGSTOP/SIGCONT (:meth:`Fleet.pause_host`,
:meth:`Fleet.stop_bursts`) or held to a CPU quota (:meth:`Fleet.limit_cpu`), reached by the SSH
connector and by the ``tectum`` command.

A paused host's kernel still accepts TCP connections, so it looks like a machine too loaded to
answer: the SSH connector waits for it as long as it answers keepalives (or until a connection
attempt has been retried ``connect_retries`` times), loses no command in flight, and gives it up
only when the keepalives go unanswered. Everything a test makes on the hosts lives under its own
``/srv/tectum-slow-<hex>`` (plus the ``tree`` package, purged afterwards); projects live in
pytest's ``tmp_path``.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tectum.providers.host.ssh import HostUnreachable, SSHConnector
from tests.conftest import Result, run_tectum
from tests.harness.fleet import Fleet, Host, cpu_cgroup_root

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the fleet harness needs root"),
]

HOSTS = 4


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet(HOSTS, apt=True) as fleet:
        yield fleet


@pytest.fixture(autouse=True)
def _all_hosts_running(fleet: Fleet) -> Iterator[None]:
    """Whatever a test did, every host runs, unpaused and unlimited, after it."""
    yield
    for h in fleet.hosts:
        fleet.resume_host(h.name)
        if cpu_cgroup_root() is not None:
            fleet.limit_cpu(h.name, None)


def connector(host: Host, **kwargs: Any) -> SSHConnector:
    options: dict[str, Any] = {"key_path": host.key_path, "known_hosts": host.known_hosts,
                               "log_path": ""}
    options.update(kwargs)
    return SSHConnector(host.name, host.address, port=host.port, **options)


def later(seconds: float, action: Any) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


# -- the connector ----------------------------------------------------------------------------

def test_paused_host_keeps_its_connection_and_every_command_in_flight(fleet: Fleet) -> None:
    host = fleet.hosts[0]
    c = connector(host, connect_timeout=1.0)  # keepalives: 10 s x (3 + 1) of silence
    try:
        assert c.run(["true"]).ok
        with ThreadPoolExecutor(max_workers=4) as pool:
            # in flight when the host freezes: a running command, and channels being opened
            running = pool.submit(c.run, ["sh", "-c", "sleep 1; echo slept"])
            time.sleep(0.3)
            stopped = fleet.pause_host(host.name)
            assert stopped >= 2  # sshd and what it runs
            started = time.monotonic()
            opening = [pool.submit(c.run, ["hostname"]) for _ in range(3)]
            time.sleep(4.0)  # four connect_timeouts with nothing answering
            assert not running.done() and not any(f.done() for f in opening)
            fleet.resume_host(host.name)
            assert running.result(timeout=30).stdout == b"slept\n"
            for f in opening:
                assert f.result(timeout=30).stdout == f"{host.name}\n".encode()
            assert time.monotonic() - started >= 4.0
        assert c.connects == 1  # the same connection throughout: nothing was dropped
    finally:
        fleet.resume_host(host.name)
        c.close()


def test_connection_attempt_to_a_paused_host_is_retried(fleet: Fleet) -> None:
    host = fleet.hosts[0]
    fleet.pause_host(host.name)
    timer = later(2.5, lambda: fleet.resume_host(host.name))
    c = connector(host, connect_timeout=1.0, connect_retries=3)
    try:
        started = time.monotonic()
        assert c.run(["hostname"]).stdout == f"{host.name}\n".encode()
        assert time.monotonic() - started >= 2.5
        assert c.connect_attempts_retried >= 1 and c.connects == 1
    finally:
        timer.cancel()
        fleet.resume_host(host.name)
        c.close()


def test_attempts_to_a_host_paused_for_good_give_up_together(fleet: Fleet) -> None:
    host = fleet.hosts[1]
    fleet.pause_host(host.name)
    c = connector(host, connect_timeout=1.0, connect_retries=2)
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=3) as pool:
            calls: list[Future[Any]] = [pool.submit(c.run, ["true"]) for _ in range(3)]
            errors = []
            for f in calls:
                with pytest.raises(HostUnreachable) as info:
                    f.result(timeout=60)
                errors.append(str(info.value))
        elapsed = time.monotonic() - started
        # three attempts of 1 s and two backoffs (0.5-1 s, then 1-2 s): one series for all
        # three calls, the waiting calls get its answer instead of trying again
        assert 4.0 <= elapsed < 9.0, elapsed
        assert c.connect_attempts_retried == 2
        assert all("did not complete the SSH handshake and login within 1 s" in e
                   and "3 attempts" in e and host.address in e for e in errors), errors
        assert c.connects == 0
    finally:
        fleet.resume_host(host.name)
    assert c.run(["true"]).ok  # a later call tries again, and the host answers now
    c.close()


def test_host_paused_for_good_is_lost_by_its_keepalives(fleet: Fleet) -> None:
    host = fleet.hosts[1]
    c = connector(host, connect_timeout=1.0, keepalive_interval=1.0, keepalive_count_max=2)
    try:
        assert c.run(["true"]).ok
        with ThreadPoolExecutor(max_workers=2) as pool:
            running = pool.submit(c.run, ["sleep", "30"])
            time.sleep(0.3)
            fleet.pause_host(host.name)
            started = time.monotonic()
            with pytest.raises(HostUnreachable) as info:
                c.run(["true"])
            elapsed = time.monotonic() - started
            with pytest.raises(HostUnreachable) as lost:
                running.result(timeout=30)
        # three keepalive intervals of silence (1 s each), then given up
        assert 2.0 <= elapsed < 6.0, elapsed
        for message in (str(info.value), str(lost.value)):
            assert "no reply to SSH keepalives for about 3 s" in message, message
            assert host.address in message
    finally:
        fleet.resume_host(host.name)
    assert c.run(["hostname"]).stdout == f"{host.name}\n".encode()  # connects again
    assert c.connects == 2
    c.close()


def test_host_held_to_a_small_cpu_quota_still_answers(fleet: Fleet) -> None:
    if cpu_cgroup_root() is None:
        pytest.skip("no cgroup CPU controller on this machine")
    host = fleet.hosts[2]
    # connected first: what is tested is a session whose commands crawl, not a handshake that
    # needs more CPU than 2 % of one on a loaded machine gives it within a connect_timeout
    c = connector(host, connect_timeout=5.0)
    assert c.run(["true"]).returncode == 0
    fleet.limit_cpu(host.name, 0.02)  # 2 ms of CPU in every 100 ms
    try:
        pids = fleet.processes(host.name)
        cgroup = fleet._rt(host.name).cgroup
        assert cgroup is not None
        inside = {int(p) for p in (cgroup / "cgroup.procs").read_text().split()}
        assert set(pids) <= inside
        # a CPU-bound loop on the host: at 2 % of a CPU it takes far longer than unlimited
        burn = ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo $i"]
        started = time.monotonic()
        result = c.run(burn)
        slow = time.monotonic() - started
        assert result.stdout == b"20000\n", result
        fleet.limit_cpu(host.name, None)
        assert not cgroup.exists()
        started = time.monotonic()
        assert c.run(burn).stdout == b"20000\n"
        fast = time.monotonic() - started
        assert slow > 3 * fast, (slow, fast)
        assert c.connects == 1
    finally:
        fleet.limit_cpu(host.name, None)
        c.close()


# -- tectum over a fleet with slow hosts --------------------------------------------------------

def inventory(fleet: Fleet, extra: str = "") -> str:
    first = fleet.hosts[0]
    lines = ["[defaults]", f'key = "{first.key_path}"', f'known_hosts = "{first.known_hosts}"',
             extra, ""]
    for h in fleet.hosts:
        lines += [f"[hosts.{h.name}]", f'address = "{h.address}"', f"port = {h.port}", ""]
    lines += ["[groups.web]", "hosts = [" + ", ".join(f'"{h.name}"' for h in fleet.hosts) + "]"]
    return "\n".join(lines) + "\n"


def role_stack(base: str, *, package: bool) -> str:
    """A directory, a command that takes 4 s (and marks when it starts), eight files after it
    and, with ``package``, the ``tree`` package."""
    pkg = '    Package("tree")\n' if package else ""
    return f'''
from tectum import apply_role
from tectum.host import Command, Directory, File, Package

BASE = "{base}"

def web(host):
    top = Directory("top", path=BASE, mode="0755")
    slow = Command("slow", command=["sh", "-c", f"touch {{BASE}}/started; sleep 4; "
                                    f"touch {{BASE}}/done"],
                   creates=f"{{BASE}}/done", depends_on=[top])
    for i in range(8):
        File(f"f{{i}}", path=f"{{BASE}}/f{{i}}.txt", content=f"{{host.name}} {{i}}\\n",
             mode="0644", depends_on=[slow])
{pkg}
apply_role(web, "web")
'''


def project(tmp_path: Path, fleet: Fleet, stack: str, extra: str = "") -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "stack.py").write_text(stack)
    (root / "inventory.toml").write_text(inventory(fleet, extra))
    return root


def tectum(root: Path, *args: str) -> Result:
    return run_tectum(*args, str(root), timeout=600)


def on_disk(fleet: Fleet, host: str, path: str) -> bool:
    return (fleet.upper(host) / path.lstrip("/")).exists()


@pytest.fixture
def base(fleet: Fleet) -> Iterator[str]:
    path = f"/srv/tectum-slow-{secrets.token_hex(4)}"
    yield path
    for h in fleet.hosts:
        fleet.resume_host(h.name)
        fleet.run(h.name, f"rm -rf {path}; if dpkg -s tree >/dev/null 2>&1; then "
                  "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q tree >/dev/null; fi",
                  timeout=300)


def test_apply_converges_while_hosts_stop_longer_than_connect_timeout(
        fleet: Fleet, base: str, tmp_path: Path) -> None:
    early, mid = fleet.hosts[0].name, fleet.hosts[1].name
    root = project(tmp_path, fleet, role_stack(base, package=True), "connect_timeout = 5")
    marker = fleet.upper(mid) / base.lstrip("/") / "started"
    frozen_mid: list[tuple[float, float, int]] = []

    def freeze_mid_run() -> None:  # MID freezes 15 s once it runs its slow command
        deadline = time.monotonic() + 300
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if marker.exists():
            start = time.monotonic()
            try:
                count = fleet.pause_host(mid)
                time.sleep(15)
            finally:
                fleet.resume_host(mid)  # (always: a host left stopped is lost for good)
            frozen_mid.append((start, time.monotonic(), count))

    watcher = threading.Thread(target=freeze_mid_run)
    watcher.start()
    # EARLY is frozen 15 s in every 20 s from the start: its first connection attempts meet a
    # host that accepts TCP and answers nothing for three connect_timeouts; MID freezes with
    # its command, channel opens and keepalives in flight
    try:
        with fleet.stop_bursts([early], stopped=15, every=20) as bursts:
            started = time.monotonic()
            run = tectum(root, "apply", "--auto-approve")
            ended = time.monotonic()
    finally:
        watcher.join()
    assert run.returncode == 0, run.output
    assert f"Hosts: {HOSTS} changed, 0 ok, 0 failed, 0 unreachable." in run.stdout
    assert "Traceback" not in run.output
    # the freezes really happened during the run, each longer than connect_timeout
    assert bursts and bursts[0][0] - started < 1 and bursts[0][1] - bursts[0][0] >= 15, bursts
    assert frozen_mid and frozen_mid[0][1] <= ended, frozen_mid
    assert frozen_mid[0][2] >= 4, frozen_mid  # sshd, its session, sh and sleep were stopped
    for h in fleet.hosts:
        for i in range(8):
            assert (fleet.upper(h.name) / f"{base.lstrip('/')}/f{i}.txt").read_text() == \
                f"{h.name} {i}\n"
        assert fleet.run(h.name, "dpkg -s tree", check=True).returncode == 0
    listed = tectum(root, "state", "list").stdout.split()
    for h in fleet.hosts:
        for name in ("directory.top", "command.slow", "package.tree",
                     *(f"file.f{i}" for i in range(8))):
            assert f'host["{h.name}"].{name}' in listed, (h.name, name, listed)
    plan = tectum(root, "plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.output


def test_host_stopped_for_good_is_unreachable_and_the_others_converge(
        fleet: Fleet, base: str, tmp_path: Path) -> None:
    victim = fleet.hosts[2].name
    root = project(tmp_path, fleet, role_stack(base, package=False),
                   "connect_timeout = 3\nkeepalive_interval = 2\nkeepalive_count_max = 2")
    marker = fleet.upper(victim) / base.lstrip("/") / "started"
    paused = threading.Event()

    def freeze_when_started() -> None:  # mid-run: the victim is running its slow command
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if marker.exists():
            fleet.pause_host(victim)
            paused.set()

    watcher = threading.Thread(target=freeze_when_started)
    watcher.start()
    try:
        started = time.monotonic()
        run = tectum(root, "apply", "--auto-approve")
        elapsed = time.monotonic() - started
        watcher.join()
        assert paused.is_set(), run.output
        assert run.returncode == 4, run.output
        assert f"host {victim}: unreachable" in run.stderr, run.stderr
        assert "keepalives" in run.output, run.output
        assert "1 unreachable" in run.stdout and "0 failed" in run.stdout, run.stdout
        assert "Traceback" not in run.output
        assert elapsed < 60, elapsed  # given up after ~6 s of silence, not a command timeout
        for h in fleet.hosts:
            if h.name != victim:
                assert on_disk(fleet, h.name, f"{base}/f7.txt")
        # state keeps what was done: every other host complete, and nothing recorded for the
        # victim that is not on its disk (it is still frozen: nothing finishes meanwhile)
        listed = tectum(root, "state", "list").stdout.split()
        for h in fleet.hosts:
            if h.name != victim:
                assert f'host["{h.name}"].file.f7' in listed
        mine = [a for a in listed if a.startswith(f'host["{victim}"].')]
        assert f'host["{victim}"].directory.top' in mine
        for i in range(8):
            assert f'host["{victim}"].file.f{i}' not in mine
            assert not on_disk(fleet, victim, f"{base}/f{i}.txt")
    finally:
        watcher.join()
        fleet.resume_host(victim)
    again = tectum(root, "apply", "--auto-approve")
    assert again.returncode == 0, again.output
    assert on_disk(fleet, victim, f"{base}/f7.txt") and on_disk(fleet, victim, f"{base}/done")
    assert tectum(root, "plan", "--detailed-exitcode").returncode == 0


def test_pause_and_resume_reach_every_process_of_a_host(fleet: Fleet) -> None:
    name = fleet.hosts[3].name
    c = connector(fleet.hosts[3])
    try:
        pool = ThreadPoolExecutor(max_workers=1)
        child = pool.submit(c.run, ["sh", "-c", "sleep 2 & sleep 2; wait; echo ok"])
        time.sleep(0.5)
        count = fleet.pause_host(name)
        pids = fleet.processes(name)
        assert count == len(pids) >= 4  # sshd, its session, sh and the sleeps
        assert all(Path(f"/proc/{p}/stat").read_text().split(") ")[1][0] in "Tt" for p in pids)
        time.sleep(2.5)  # the sleeps are stopped, not sleeping: nothing finished
        assert not child.done()
        fleet.resume_host(name)
        assert child.result(timeout=30).stdout == b"ok\n"
        pool.shutdown()
        with pytest.raises(ValueError), fleet.stop_bursts([name], stopped=2, every=1):
            pass
    finally:
        fleet.resume_host(name)
        c.close()
