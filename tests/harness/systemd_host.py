"""A Debian test host whose PID 1 is systemd, reachable over SSH (needs root).

This machine does not boot with systemd, and the fleet's hosts (:mod:`tests.harness.fleet`) have
no init at all, so neither can test the systemd path of anything. A systemd host is a
``systemd-nspawn --boot`` container (apt ``systemd-container``) whose PID 1 is
``/lib/systemd/systemd``, run without the machine's systemd (``--register=no --keep-unit``: no
machined, no scope unit, no D-Bus on the machine), in

* its own network namespace on the fleet's bridge (169.254.77.x, an address taken from the same
  pool as the fleet's hosts, no default route); ``ssh.service`` answers on it;
* a private mount namespace holding an overlay root: lower = a cached debootstrap ``minbase`` of
  bookworm with ``systemd``, ``systemd-sysv``, ``dbus`` and ``openssh-server``; upper/work per
  host in a temporary directory (the host key is made there before boot);
* its own cgroup (``tectum-sd-<id>`` in every writable hierarchy the machine mounts: on this
  machine's hybrid layout the ``name=systemd`` v1 hierarchy and the unified v2 one), under which
  ``systemd-nspawn`` makes its ``payload`` and ``supervisor`` cgroups, so hosts never share one.

    with SystemdHost() as host:          # .name .address .port .user .key_path .known_hosts
        host.run("systemctl is-system-running")      # over ssh, strict host key checking
        host.systemctl("is-active", "ssh")            # -> CompletedProcess

The host is recorded in the fleet's registry (``/run/tectum-test/fleets/<id>.json``, same
format): the fleet allocates no address a systemd host holds, keeps the bridge while one runs,
and — if the owning process is killed outright — its next start (or ``python3 -m
tests.harness.fleet cleanup``) stops the container by process id and removes the network
namespace, the link and the temporary directory; the next :class:`SystemdHost` start removes
cgroups left empty by such hosts. ``stop()`` kills the container (it is thrown away, so no
orderly shutdown is waited for) and removes all of that by id.

The base is built once (about a minute) and cached beside the fleet's under
``/var/cache/tectum-test`` (``TECTUM_TEST_CACHE``); ``python3 -m tests.harness.systemd_host
build`` builds it ahead of time, ``... up`` starts a host and prints how to reach it. The mirror
is read from the machine's apt configuration at run time, as the fleet does.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.harness import fleet as _fleet
from tests.harness.fleet import FleetError

SUITE = _fleet.SUITE
PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "ca-certificates")
# Bump when the recipe changes: a cached base with another recipe is rebuilt.
RECIPE = f"1 {SUITE} minbase {','.join(PACKAGES)}"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PREFIX = "tectum-sd-"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"

# Runs as the container's launcher: in a fresh mount namespace (``unshare --mount``), it joins
# the host's own cgroups, mounts the overlay root and becomes ``systemd-nspawn`` (same pid).
LAUNCH_SCRIPT = r"""#!/bin/sh
set -eu
lower=$1 upper=$2 work=$3 root=$4 netns=$5 machine=$6; shift 6
for cg in "$@"; do echo $$ > "$cg/cgroup.procs"; done
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$root"
exec systemd-nspawn --quiet --boot --register=no --keep-unit --console=passive \
    --directory="$root" --machine="$machine" --hostname="$machine" \
    --network-namespace-path="/run/netns/$netns" --setenv=SYSTEMD_LOG_COLOR=0
"""


@dataclass(frozen=True)
class Base:
    rootfs: Path
    key_path: Path


def ensure_tools() -> None:
    """apt-get install what the harness drives and is missing (``systemd-nspawn`` and the
    fleet's tools)."""
    _fleet.ensure_tools()
    if shutil.which("systemd-nspawn") is None:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                   "systemd-container"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            proc = subprocess.run(install, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise FleetError(f"apt-get install systemd-container failed: "
                                 f"{proc.stderr[-2000:]}")


def build_base(force: bool = False) -> Base:
    """The cached systemd root filesystem and the fleet's test key, built on first use."""
    ensure_tools()
    cache = _fleet.CACHE_DIR
    cache.mkdir(parents=True, exist_ok=True)
    rootfs = cache / f"rootfs-{SUITE}-systemd"
    marker = cache / f"rootfs-{SUITE}-systemd.complete"
    with _fleet._flock(cache / "build-systemd.lock"):
        key = _fleet._ensure_key()
        pub = key.with_suffix(".pub").read_text()
        if (not force and marker.is_file() and rootfs.is_dir()
                and json.loads(marker.read_text()).get("recipe") == RECIPE):
            authorized = rootfs / "root" / ".ssh" / "authorized_keys"
            if not authorized.is_file() or authorized.read_text() != pub:
                _fleet._authorize(rootfs, pub)
            return Base(rootfs, key)
        marker.unlink(missing_ok=True)
        building = cache / f"rootfs-{SUITE}-systemd.building"
        _fleet._remove_tree(building)
        _fleet._remove_tree(rootfs)
        log = cache / "debootstrap-systemd.log"
        started = time.monotonic()
        with open(log, "w") as out:
            proc = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                 SUITE, str(building), _fleet.machine_mirror()],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=1800)
        _fleet._unmount_under(building)
        if proc.returncode != 0:
            tail = log.read_text()[-3000:]
            _fleet._remove_tree(building)
            raise FleetError(f"debootstrap failed ({proc.returncode}), see {log}:\n{tail}")
        _fleet._customize(building, pub)
        # every boot makes its own machine id (an empty file: systemd writes a transient one)
        (building / "etc" / "machine-id").write_text("")
        os.rename(building, rootfs)
        _fleet._write(marker, json.dumps({"recipe": RECIPE, "seconds": round(
            time.monotonic() - started, 1), "built": time.time()}) + "\n")
        return Base(rootfs, key)


def _cgroup_hierarchies() -> list[Path]:
    """Where a host's cgroup is made: the unified (v2) hierarchy and, on a hybrid or legacy
    machine, the ``name=systemd`` one that systemd inside uses for its own tracking."""
    if (CGROUP_ROOT / "cgroup.procs").is_file():  # pure cgroup v2
        return [CGROUP_ROOT]
    return [CGROUP_ROOT / sub for sub in ("unified", "systemd")
            if (CGROUP_ROOT / sub / "cgroup.procs").is_file()]


def _remove_cgroup(path: Path) -> None:
    """rmdir a cgroup and its children, deepest first (cgroups are removed with rmdir only)."""
    if not path.is_dir():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                      reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def _reap_stale_cgroups_locked() -> None:
    """Under the fleet lock: remove cgroups of systemd hosts whose record is gone."""
    live = {r["fid"] for r in _fleet._registries() if _fleet._owner_alive(r)}
    for hierarchy in _cgroup_hierarchies():
        for path in hierarchy.glob(f"{CGROUP_PREFIX}*"):
            if path.name.removeprefix(CGROUP_PREFIX) not in live:
                _remove_cgroup(path)


_LIVE: set[SystemdHost] = set()
_LIVE_LOCK = threading.Lock()


class SystemdHost:
    """One booted systemd container answering SSH as root with the test key."""

    def __init__(self, name: str = "sdhost", *, boot_timeout: float = 60.0) -> None:
        if not _fleet.NAME_RE.match(name):
            raise ValueError(f"need a host name like 'sdhost': {name!r}")
        self.name = name
        self.boot_timeout = boot_timeout
        self.fid = "sd" + secrets.token_hex(3)
        self.address = ""
        self.port = 22
        self.user = "root"
        self.key_path = Path()
        self.known_hosts = Path()
        self.netns = f"{_fleet.NETNS_PREFIX}{self.fid}-{name}"
        self.veth = ""
        self.tmpdir: Path | None = None
        self.timings: dict[str, float] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._pid_start: int | None = None
        self._cgroups: list[Path] = []
        self._started = False
        self._stopped = False

    # -- public API -------------------------------------------------------------------------

    @property
    def console(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "console.log"

    def log(self) -> str:
        """What the container printed (systemd's boot messages)."""
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def ssh_command(self, command: str | None = None) -> list[str]:
        """argv for the system ssh client (strict host key checking, test key)."""
        argv = ["ssh", "-F", "none", "-i", str(self.key_path), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
                "-p", str(self.port), f"{self.user}@{self.address}"]
        return argv if command is None else [*argv, command]

    def run(self, command: str, *, check: bool = False, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run COMMAND (a shell string) on the host over ssh; captures text output. Raises
        :class:`FleetError` with ``check=True`` when it exits non-zero."""
        proc = subprocess.run(self.ssh_command(command), input=input, capture_output=True,
                              text=True, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise FleetError(f"{self.name}: {command!r} exited {proc.returncode}: "
                             f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        return proc

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``systemctl ARGS`` inside the host (the arguments are quoted for the remote
        shell)."""
        import shlex

        return self.run(" ".join(["systemctl", "--no-pager", *map(shlex.quote, args)]))

    def start(self) -> SystemdHost:
        if self._started:
            raise FleetError("a SystemdHost starts once; make a new one")
        self._started = True
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill the container and remove its network, cgroups, directory and record."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        began = time.monotonic()
        try:
            self._kill()
        finally:
            links, names = _fleet._links(), _fleet._netns_names()
            lines = [f"link del {self.veth}"] if self.veth and self.veth in links else []
            if self.netns in names:
                lines.append(f"netns del {self.netns}")
            if self.address and _fleet.BRIDGE in links:
                lines.append(f"neigh flush to {self.address} dev {_fleet.BRIDGE}")
            _fleet._ip_batch(lines, check=False)
            for cgroup in self._cgroups:
                _remove_cgroup(cgroup)
            if self.tmpdir is not None:
                _fleet._remove_tree(self.tmpdir)
            with _fleet._lock():
                (_fleet._fleets_dir() / f"{self.fid}.json").unlink(missing_ok=True)
                if not [r for r in _fleet._registries() if _fleet._owner_alive(r)]:
                    _fleet._teardown_shared_locked()
            with _LIVE_LOCK:
                _LIVE.discard(self)
            self.timings["stop"] = time.monotonic() - began

    close = stop

    def __enter__(self) -> SystemdHost:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------

    def _record(self) -> dict[str, object]:
        return {"fid": self.fid, "owner_pid": os.getpid(),
                "owner_start": _fleet._start_time(os.getpid()),
                "tmpdir": str(self.tmpdir) if self.tmpdir else None, "kind": "systemd",
                "hosts": {self.name: {"address": self.address, "netns": self.netns,
                                      "veth": self.veth, "pid": self._pid,
                                      "pid_start": self._pid_start}}}

    def _save_locked(self) -> None:
        _fleet._write(_fleet._fleets_dir() / f"{self.fid}.json",
                      json.dumps(self._record(), indent=1) + "\n")

    def _start(self) -> None:
        began = time.monotonic()
        base = build_base()
        self.timings["base"] = time.monotonic() - began
        self.key_path = base.key_path
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"tectum-{self.fid}-"))
        self.known_hosts = self.tmpdir / "known_hosts"
        launch = self.tmpdir / "launch.sh"
        _fleet._write(launch, LAUNCH_SCRIPT, 0o755)
        upper, work, root = (self.tmpdir / d for d in ("upper", "work", "root"))
        for d in (upper, work, root):
            d.mkdir()
        with _fleet._lock():
            live = _fleet._reap_stale_locked()
            _reap_stale_cgroups_locked()
            used = {int(h["address"].rsplit(".", 1)[1])
                    for r in live for h in r.get("hosts", {}).values()}
            free = [o for o in range(_fleet.FIRST_OCTET, _fleet.LAST_OCTET + 1)
                    if o not in used]
            if not free:
                raise FleetError(f"no address left in {_fleet.NET_PREFIX}0/24")
            octet = free[-1]  # from the top: the fleet allocates from the bottom
            self.address = f"{_fleet.NET_PREFIX}{octet}"
            self.veth = f"{_fleet.VETH_PREFIX}{octet}"
            self._save_locked()  # recorded before anything is made, so it can be reaped
            _fleet._ensure_bridge_locked()
        # the host's own files, in its upper layer before boot
        etc = upper / "etc"
        _fleet._write(etc / "hostname", self.name + "\n")
        _fleet._write(etc / "hosts", f"127.0.0.1\tlocalhost\n{self.address}\t{self.name}\n")
        key = etc / "ssh" / "ssh_host_ed25519_key"
        key.parent.mkdir(parents=True, exist_ok=True)
        _fleet._run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                     f"root@{self.name}", "-f", str(key)])
        keytype, pub = key.with_name(key.name + ".pub").read_text().split()[:2]
        _fleet._write(self.known_hosts, f"{self.address} {keytype} {pub}\n")
        # network namespace, configured from outside (the container has no network manager)
        plen = _fleet.PREFIX_LEN
        _fleet._ip_batch([
            f"neigh flush to {self.address} dev {_fleet.BRIDGE}",
            f"netns add {self.netns}",
            f"link add {self.veth} type veth peer name eth0 netns {self.netns}",
            f"link set {self.veth} addrgenmode none",
            f"link set {self.veth} master {_fleet.BRIDGE}",
            f"link set {self.veth} up"])
        for cmd in (["link", "set", "lo", "up"], ["link", "set", "eth0", "addrgenmode", "none"],
                    ["addr", "replace", f"{self.address}/{plen}", "dev", "eth0"],
                    ["link", "set", "eth0", "up"]):
            _fleet._run(["ip", "-n", self.netns, *cmd])
        for hierarchy in _cgroup_hierarchies():
            cgroup = hierarchy / f"{CGROUP_PREFIX}{self.fid}"
            cgroup.mkdir()
            self._cgroups.append(cgroup)
        argv = ["unshare", "--mount", "--propagation", "private", "--",
                "/bin/sh", str(launch), str(base.rootfs), str(upper), str(work), str(root),
                self.netns, f"tectum-{self.fid}", *map(str, self._cgroups)]
        with open(self.console, "ab") as out:
            self._proc = _fleet._LAUNCHER.popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=subprocess.STDOUT,
                                                start_new_session=True)
        self._pid, self._pid_start = self._proc.pid, _fleet._start_time(self._proc.pid)
        with _fleet._lock():
            self._save_locked()
        self._wait_booted()
        self.timings["start"] = time.monotonic() - began - self.timings["base"]

    def _wait_booted(self) -> None:
        """Until sshd answers and ``systemctl is-system-running --wait`` says the boot is
        over (``running``; ``degraded`` is reported with the failed units)."""
        deadline = time.monotonic() + self.boot_timeout
        while not _fleet._port_answers(self.address, 22):
            if self._proc is not None and self._proc.poll() is not None:
                raise FleetError(f"systemd host {self.name} exited ({self._proc.returncode}) "
                                 f"while booting:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise FleetError(f"systemd host {self.name} did not answer SSH within "
                                 f"{self.boot_timeout:g}s:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        left = max(1.0, deadline - time.monotonic())
        state = self.run("systemctl is-system-running --wait", timeout=left).stdout.strip()
        if state != "running":
            failed = self.run("systemctl --failed --no-pager --plain").stdout
            raise FleetError(f"systemd host {self.name} booted {state!r}:\n{failed}")

    def _kill(self) -> None:
        """SIGKILL the container's PID 1 (its whole PID namespace dies with it), then let
        ``systemd-nspawn`` exit; by process id, with start times checked."""
        pid, start = self._pid, self._pid_start
        if pid is None or start is None:
            return
        if _fleet._is(pid, start):
            for child in _fleet._children(pid):
                _fleet._kill(child, signal.SIGKILL)
            if self._proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=10)
        _fleet._stop_processes([(pid, start)])
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)
        self._pid = self._pid_start = None


def _stop_all() -> None:
    with _LIVE_LOCK:
        hosts = list(_LIVE)
    for host in hosts:
        with contextlib.suppress(Exception):
            host.stop()


atexit.register(_stop_all)


def main(argv: Sequence[str]) -> int:
    usage = "usage: python3 -m tests.harness.systemd_host build|up"
    if not argv or argv[0] not in ("build", "up"):
        print(usage, file=sys.stderr)
        return 2
    if argv[0] == "build":
        began = time.monotonic()
        base = build_base()
        print(f"{base.rootfs} ready ({time.monotonic() - began:.1f}s); key {base.key_path}")
        return 0
    with SystemdHost() as host:  # for poking at by hand
        print(" ".join(host.ssh_command()))
        print(f"timings: {host.timings}; Ctrl-C stops the host")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
