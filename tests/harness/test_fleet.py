"""The fleet harness itself: five isolated hosts answer SSH, are isolated from each other and
from the machine, install packages through the apt cache, can be stopped one at a time, and
leave nothing behind (namespaces, links, mounts, processes) once the fleet is closed."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.harness.fleet import (
    BRIDGE,
    BRIDGE_ADDRESS,
    NET_PREFIX,
    STATE_DIR,
    Fleet,
    _children,
    _start_time,
    apt_cache_log,
    live_fleets,
)

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(os.geteuid() != 0, reason="the fleet harness needs root"),
]

N = 5


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet(N, apt=True) as fleet:
        print(f"fleet timings: {fleet.timings}")
        yield fleet


def _on_all(fleet: Fleet, command: str,
            names: list[str] | None = None) -> dict[str, subprocess.CompletedProcess[str]]:
    names = fleet.names if names is None else names
    with ThreadPoolExecutor(max_workers=N) as pool:
        return dict(zip(names, pool.map(lambda name: fleet.run(name, command), names)))


def _connect_error(address: str, timeout: float = 1.0) -> OSError | None:
    try:
        with socket.create_connection((address, 22), timeout=timeout):
            return None
    except OSError as exc:
        return exc


def _machine_addresses() -> list[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True, check=True).stdout
    link_local = ipaddress.ip_network("169.254.0.0/16")
    found = []
    for line in out.splitlines():
        address = line.split()[3].split("/")[0]
        if ipaddress.ip_address(address) not in link_local:
            found.append(address)
    return found


def test_each_host_answers_with_its_own_name_and_address(fleet: Fleet) -> None:
    assert [h.name for h in fleet.hosts] == [f"host{i}" for i in range(1, N + 1)]
    assert len({h.address for h in fleet.hosts}) == N
    results = _on_all(fleet, "hostname; ip -4 -o addr show dev eth0")
    for host in fleet.hosts:
        assert host.address.startswith(NET_PREFIX) and host.port == 22 and host.user == "root"
        result = results[host.name]
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == host.name
        assert f"inet {host.address}/24" in lines[1]
    # Strict host key checking against the harness's known_hosts: one key per host.
    known = fleet.hosts[0].known_hosts.read_text().split("\n")
    assert sorted(line.split()[0] for line in known if line) == sorted(
        h.address for h in fleet.hosts)


def test_hosts_reach_each_other_and_nothing_outside(fleet: Fleet) -> None:
    first, *others = fleet.hosts
    routes = fleet.run(first.name, "ip -4 route", check=True).stdout
    assert "default" not in routes
    assert [line.split()[0] for line in routes.splitlines()] == [f"{NET_PREFIX}0/24"]
    reach = " && ".join(f"timeout 2 bash -c 'echo > /dev/tcp/{h.address}/22'" for h in others)
    assert fleet.apt_proxy is not None
    cache_port = fleet.apt_proxy.rsplit(":", 1)[1]
    result = fleet.run(first.name, f"{reach} && timeout 2 bash -c "
                       f"'echo > /dev/tcp/{BRIDGE_ADDRESS}/{cache_port}' && echo ok")
    assert result.stdout.strip() == "ok", result.stderr
    outward = _machine_addresses()  # the machine's own addresses beyond the bridge
    assert outward
    for address in outward:
        result = fleet.run(first.name, f"timeout 2 bash -c 'echo > /dev/tcp/{address}/22'")
        assert result.returncode != 0
        assert "unreachable" in result.stderr, result.stderr


def test_files_are_private_to_their_host(fleet: Fleet) -> None:
    token = f"/root/tectum-isolation-{uuid.uuid4().hex}"
    fleet.run("host1", f"echo secret > {token}", check=True)
    assert fleet.run("host1", f"cat {token}").stdout == "secret\n"
    assert (fleet.upper("host1") / token.lstrip("/")).read_text() == "secret\n"
    results = _on_all(fleet, f"test -e {token}")
    assert all(results[name].returncode == 1 for name in fleet.names if name != "host1")
    assert not Path(token).exists()
    base_root = fleet.hosts[0].key_path.parent / "rootfs-bookworm"
    assert base_root.is_dir() and not (base_root / token.lstrip("/")).exists()


def test_apt_install_goes_through_the_cache_and_stays_in_its_host(fleet: Fleet) -> None:
    install = fleet.run("host1", "apt-get update -q && DEBIAN_FRONTEND=noninteractive "
                        "apt-get install -y -q --no-install-recommends tree", timeout=300)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    assert fleet.run("host1", "tree --version").stdout.startswith("tree v")
    assert "tree_" in apt_cache_log() and fleet["host1"].address in apt_cache_log()
    assert fleet.run("host2", "command -v tree").returncode != 0
    assert not (fleet.upper("host2") / "usr" / "bin" / "tree").exists()


def test_stop_host_makes_only_that_host_unreachable(fleet: Fleet) -> None:
    gone = fleet["host5"]
    fleet.stop_host(gone.name)
    assert not fleet.is_running(gone.name)
    assert _connect_error(gone.address) is not None  # the address itself is gone
    results = _on_all(fleet, "true", [n for n in fleet.names if n != gone.name])
    assert all(r.returncode == 0 for r in results.values())

    fleet.stop_host("host4", keep_network=True)  # address still there: refused at once
    assert isinstance(_connect_error(fleet["host4"].address), ConnectionRefusedError)

    for name in ("host4", "host5"):  # back on the same disk, address and host key
        fleet.start_host(name)
        assert fleet.run(name, "hostname", check=True).stdout.strip() == name


def test_close_leaves_nothing_behind(fleet: Fleet) -> None:
    netns = {h.netns for h in fleet.hosts}
    state = fleet._record()
    units = [(h["pid"], h["pid_start"]) for h in state["hosts"].values()]
    pids = [pid for pid, _ in units] + [c for pid, _ in units for c in _children(pid)]
    assert len(pids) == 2 * N  # unshare + PID 1 (sshd) for each host
    veths = {h["veth"] for h in state["hosts"].values()}
    tmpdir = str(fleet.tmpdir)
    acng = json.loads((STATE_DIR / "acng.json").read_text())

    fleet.stop()
    print(f"fleet timings: {fleet.timings}")

    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not netns & {line.split()[0] for line in listed.splitlines() if line}
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}
    assert not veths & names
    mounts = Path("/proc/mounts").read_text()
    assert tmpdir not in mounts and "rootfs-bookworm" not in mounts
    if not live_fleets():  # no other fleet on this machine: the shared pieces are gone too
        assert BRIDGE not in names
        assert " /run/netns " not in mounts or listed.strip()
        assert _start_time(acng["pid"]) != acng["start"]
    assert all(_start_time(pid) is None for pid in pids)
    assert subprocess.run(["pgrep", "-f", f"ListenAddress={NET_PREFIX}"]).returncode == 1
    assert not Path(tmpdir).exists()
