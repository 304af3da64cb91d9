"""A fleet of isolated Debian hosts on this machine, each reachable over SSH (needs root).

Each host is its own network namespace (a veth pair on a bridge, 169.254.77.(10+N)/24, no
default route) plus its own mount/UTS/PID namespaces, whose PID 1 mounts an overlay root
(lower = a cached debootstrap ``minbase`` of bookworm, upper/work per host in a temporary
directory) and then becomes that host's ``sshd``. Hosts reach each other and the bridge address
169.254.77.1, nothing else. With ``apt=True`` an apt-cacher-ng bound to the bridge address
forwards to the machine's own Debian mirror (read from the machine's apt sources at run time),
and every host uses it as its HTTP proxy; the fleet starts with fresh package lists on every host
(``apt-get update``, one host after the other).

    with Fleet(3, apt=True) as fleet:
        host = fleet.hosts[0]            # .name .address .port .user .key_path .known_hosts
        fleet.run(host.name, "hostname")  # the system ssh client, strict host key checking
        fleet.stop_host(host.name)        # port 22 unreachable until start_host(host.name)
        with fleet.stop_bursts(["host2"], stopped=15, every=20) as bursts:
            ...                           # host2 frozen 15 s in every 20 s (SIGSTOP/SIGCONT)

Slowing hosts down, as a loaded or frozen machine: :meth:`Fleet.pause_host` stops every process of
a host (SIGSTOP to its PID 1 and all its descendants; its kernel still answers TCP and ARP, so
a connection is accepted and then nothing answers), :meth:`Fleet.resume_host` continues them
(SIGCONT), :meth:`Fleet.stop_bursts` does both on a schedule in a thread, and
:meth:`Fleet.limit_cpu` holds a host to a CPU quota (cgroup v2 ``cpu.max`` or v1
``cpu.cfs_quota_us``, whichever this machine has).

Everything a fleet makes is recorded (process ids with their start times, namespace and link
names) in ``/run/tectum-test/fleets/``; ``stop()`` tears it down by those ids, and is called by
``__exit__`` and at interpreter exit. If the owning process is killed outright, host processes
die with it (parent-death signal) and the next ``Fleet.start()`` -- or
``python3 -m tests.harness.fleet cleanup`` -- removes what that fleet left.

The base root filesystem is built once (about a minute) and cached under
``/var/cache/tectum-test`` (``TECTUM_TEST_CACHE`` overrides), along with the test SSH key and
apt-cacher-ng's cache; ``python3 -m tests.harness.fleet build`` builds it ahead of time.
Missing tools are installed with apt-get: debootstrap, iproute2, openssh-client, and
apt-cacher-ng when ``apt=True``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import json
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

SUITE = "bookworm"
BASE_PACKAGES = ("openssh-server", "iproute2", "ca-certificates")
# Bump when the base recipe changes: a cached base with another recipe is rebuilt.
RECIPE = f"1 {SUITE} minbase {','.join(BASE_PACKAGES)}"

CACHE_DIR = Path(os.environ.get("TECTUM_TEST_CACHE", "/var/cache/tectum-test"))
STATE_DIR = Path("/run/tectum-test")

BRIDGE = "tectum0"
NET_PREFIX = "169.254.77."
BRIDGE_ADDRESS = NET_PREFIX + "1"
PREFIX_LEN = 24
FIRST_OCTET, LAST_OCTET = 10, 254
NETNS_PREFIX = "tectum-"
VETH_PREFIX = "tectv"
ACNG_PORT = 3142
#: hosts that run ``apt-get update`` at once when a fleet starts (after the first one)
APT_UPDATE_WORKERS = 4
#: seconds one ``apt-get update`` on a starting host may take before it is killed and retried
APT_UPDATE_TIMEOUT = 150
#: times a starting host's ``apt-get update`` is tried
APT_UPDATE_ATTEMPTS = 3
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")

# PID 1 of a host's mount/UTS/PID namespaces (already inside its network namespace).
INIT_SCRIPT = r"""#!/bin/sh
set -eu
lower=$1 upper=$2 work=$3 root=$4 name=$5 addr=$6 plen=$7
ip link set lo up
ip link set eth0 addrgenmode none
ip addr replace "$addr/$plen" dev eth0
ip link set eth0 up
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$root"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t sysfs -o nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o nosuid,mode=0755,size=8m tmpfs "$root/dev"
mknod -m 666 "$root/dev/null" c 1 3
mknod -m 666 "$root/dev/zero" c 1 5
mknod -m 666 "$root/dev/full" c 1 7
mknod -m 666 "$root/dev/random" c 1 8
mknod -m 666 "$root/dev/urandom" c 1 9
mknod -m 666 "$root/dev/tty" c 5 0
mkdir -m 0755 "$root/dev/pts"
mkdir -m 1777 "$root/dev/shm"
ln -s pts/ptmx "$root/dev/ptmx"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec devpts "$root/dev/pts"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$root/dev/shm"
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs "$root/run"
mkdir -m 0755 "$root/run/sshd" "$root/run/lock"
hostname "$name"
if [ ! -s "$root/etc/ssh/ssh_host_ed25519_key.pub" ]; then
    rm -f "$root/etc/ssh/ssh_host_ed25519_key" "$root/etc/ssh/ssh_host_ed25519_key.pub"
    chroot "$root" ssh-keygen -q -t ed25519 -N '' -C "root@$name" \
        -f /etc/ssh/ssh_host_ed25519_key
fi
echo "tectum-init: $name up on $addr"
exec chroot "$root" /usr/sbin/sshd -D -e -o "ListenAddress=$addr" \
    -o HostKey=/etc/ssh/ssh_host_ed25519_key
"""

SSHD_CONFIG = """\
# tectum test host
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
"""


class FleetError(RuntimeError):
    """A fleet could not be built, started or stopped."""


# ---------------------------------------------------------------- processes and small helpers

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the forked child, before exec
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class _Launcher:
    """Starts host processes so that they die with this process, and not before.

    The parent-death signal fires when the *thread* that forked exits, so processes are forked
    from the main thread, or else from one daemon thread that lives as long as the process."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], subprocess.Popen[bytes]],
                                      Future[subprocess.Popen[bytes]]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        def spawn() -> subprocess.Popen[bytes]:
            return subprocess.Popen(list(argv), preexec_fn=_die_with_parent, **kwargs)

        if threading.current_thread() is threading.main_thread():
            return spawn()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="tectum-fleet-launcher",
                                                 daemon=True)
                self._thread.start()
        done: Future[subprocess.Popen[bytes]] = Future()
        self._jobs.put((spawn, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            spawn, done = self._jobs.get()
            try:
                done.set_result(spawn())
            except BaseException as exc:  # handed to the caller's thread
                done.set_exception(exc)


_LAUNCHER = _Launcher()


def _run(cmd: Sequence[str], *, input: str | None = None, check: bool = True,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), input=input, capture_output=True, text=True,
                          timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise FleetError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc


def _ip_batch(lines: Sequence[str], *, check: bool = True) -> None:
    """Run many ``ip`` commands in one process (``-force``: go on past errors)."""
    if lines:
        _run(["ip", "-force", "-batch", "-"], input="\n".join(lines) + "\n", check=check)


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (with its pid, an identity that is not reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def _is(pid: int | None, start: int | None) -> bool:
    """True if process PID is alive and is the same process that was recorded."""
    return pid is not None and pid > 0 and start is not None and _start_time(pid) == start


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]
    except OSError:
        pass
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _descendants(pid: int) -> list[int]:
    """PID and every process below it (breadth first)."""
    found, queue_ = [], [pid]
    while queue_:
        current = queue_.pop(0)
        found.append(current)
        queue_.extend(_children(current))
    return found


def _state(pid: int) -> str | None:
    """The process's state letter (R, S, D, T, t, Z ...), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[0]


def _stop_pending(pid: int) -> bool:
    """Whether a SIGSTOP waits in the process's shared pending set (it stops the moment it
    leaves the kernel: a process in D, e.g. a vfork parent whose child stopped before exec,
    takes no signal until then)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    for line in status.splitlines():
        if line.startswith("ShdPnd:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGSTOP - 1)))
    return False


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _paused(pid: int) -> bool:
    """Whether the process runs no user code until a SIGCONT: stopped, a zombie, gone, or in
    uninterruptible sleep with a SIGSTOP pending."""
    state = _state(pid)
    return state in ("T", "t", "Z", None) or (state == "D" and _stop_pending(pid))


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _stop_processes(procs: Sequence[tuple[int, int]], grace: float = 3.0) -> None:
    """Stop ``unshare --fork`` parents given as (pid, start time): SIGTERM to each one's child
    (PID 1 of the namespaces; the parent ignores SIGTERM), then SIGKILL to both if needed."""
    live = [(pid, start) for pid, start in procs if _is(pid, start)]
    for pid, _ in live:
        for child in _children(pid):
            _kill(child, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        for pid, _ in live:
            _reap(pid)
        live = [(pid, start) for pid, start in live if _is(pid, start)]
        if live:
            time.sleep(0.02)
    for pid, _ in live:
        for child in _children(pid):
            _kill(child, signal.SIGKILL)
        _kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while live and time.monotonic() < deadline:
        for pid, _ in live:
            _reap(pid)
        live = [(pid, start) for pid, start in live if _is(pid, start)]
        if live:
            time.sleep(0.02)
    if live:
        raise FleetError(f"processes {[pid for pid, _ in live]} did not exit")


def _mounts() -> list[str]:
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 1:
            points.append(parts[1].replace("\\040", " "))
    return points


def _unmount_under(path: Path) -> None:
    prefix = str(path).rstrip("/")
    inside = [m for m in _mounts() if m == prefix or m.startswith(prefix + "/")]
    for point in sorted(inside, key=len, reverse=True):
        _run(["umount", "-l", point], check=False)


def _remove_tree(path: Path) -> None:
    """rm -rf that never descends into a mount (unmounted first)."""
    if path.exists() or path.is_symlink():
        _unmount_under(path)
        shutil.rmtree(path, ignore_errors=True)


def _port_answers(address: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return port != 22 or sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------- tools and apt

TOOLS = {  # command -> Debian package
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "debootstrap": "debootstrap",
    "unshare": "util-linux",
    "mount": "mount",
}


def ensure_tools(apt: bool = False) -> None:
    """apt-get install whatever the harness drives and is missing."""
    if os.geteuid() != 0:
        raise FleetError("the fleet harness needs root")
    tools = dict(TOOLS)
    if apt:
        tools["apt-cacher-ng"] = "apt-cacher-ng"
    missing = sorted({pkg for cmd, pkg in tools.items()
                      if shutil.which(cmd, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                      "/usr/bin:/sbin:/bin") is None})
    if not missing:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        proc = subprocess.run(install, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise FleetError(f"apt-get install {' '.join(missing)} failed: {proc.stderr[-2000:]}")


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def machine_apt_sources() -> list[AptSource]:
    """The machine's enabled ``deb`` sources (deb822 ``*.sources`` and one-line ``*.list``)."""
    found: list[AptSource] = []
    apt = Path("/etc/apt")
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n[ \t]*\n", path.read_text()):
            fields: dict[str, str] = {}
            key = ""
            for line in stanza.splitlines():
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                if line[0] in " \t" and key:
                    fields[key] += " " + line.strip()
                    continue
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() in ("no", "false", "0"):
                continue
            for uri in fields.get("uris", "").split():
                found.append(AptSource(uri.rstrip("/"), tuple(fields.get("suites", "").split()),
                                       tuple(fields.get("components", "").split())))
    one_line = re.compile(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$")
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            match = one_line.match(line.split("#", 1)[0].strip())
            if match:
                found.append(AptSource(match[1].rstrip("/"), (match[2],),
                                       tuple(match[3].split())))
    return found


def suite_sources(suite: str = SUITE) -> list[AptSource]:
    """The machine's sources for SUITE and its -updates/-security siblings."""
    keep = []
    for source in machine_apt_sources():
        suites = tuple(s for s in source.suites if s == suite or s.startswith(suite + "-"))
        if suites and source.uri.startswith(("http://", "https://")):
            keep.append(AptSource(source.uri, suites, source.components or ("main",)))
    return keep


def machine_mirror(suite: str = SUITE) -> str:
    """The machine's own mirror for SUITE, read from its apt configuration."""
    for source in suite_sources(suite):
        if suite in source.suites:
            return source.uri
    raise FleetError(f"no apt source for {suite} in /etc/apt/sources.list(.d)")


def _host_sources_list(suite: str = SUITE) -> str:
    lines = ["# written by the tectum test harness from the machine's apt sources"]
    for source in suite_sources(suite):
        lines += [f"deb {source.uri} {s} {' '.join(source.components)}" for s in source.suites]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- the base image

@dataclass(frozen=True)
class Base:
    rootfs: Path
    key_path: Path


def _ensure_key() -> Path:
    key = CACHE_DIR / "id_ed25519"
    if not (key.is_file() and key.with_suffix(".pub").is_file()):
        for stale in (key, key.with_suffix(".pub")):
            stale.unlink(missing_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tectum-test",
              "-f", str(key)])
    key.chmod(0o600)
    return key


def _authorize(rootfs: Path, pub: str) -> None:
    ssh_dir = rootfs / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    ssh_dir.chmod(0o700)
    _write(ssh_dir / "authorized_keys", pub, 0o600)


def _customize(rootfs: Path, pub: str) -> None:
    for key in (rootfs / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    _authorize(rootfs, pub)
    _write(rootfs / "etc" / "ssh" / "sshd_config.d" / "tectum-test.conf", SSHD_CONFIG)
    resolv = rootfs / "etc" / "resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text("")
    for conf in sorted(Path("/etc/apt/apt.conf.d").glob("99*")):
        if conf.is_file():
            shutil.copyfile(conf, rootfs / "etc" / "apt" / "apt.conf.d" / conf.name)
    _write(rootfs / "etc" / "apt" / "sources.list", _host_sources_list())
    for junk in [*(rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"),
                 *(rootfs / "var" / "cache" / "apt").glob("*.bin")]:
        junk.unlink()
    for junk in (rootfs / "var" / "lib" / "apt" / "lists").iterdir():
        if junk.is_file() and junk.name != "lock":
            junk.unlink()
    (rootfs / "etc" / "hostname").write_text("localhost\n")


def build_base(force: bool = False) -> Base:
    """The cached base root filesystem and the test key, built on first use (~1 min)."""
    ensure_tools()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    rootfs = CACHE_DIR / f"rootfs-{SUITE}"
    marker = CACHE_DIR / f"rootfs-{SUITE}.complete"
    with _flock(CACHE_DIR / "build.lock"):
        key = _ensure_key()
        pub = key.with_suffix(".pub").read_text()
        done = (not force and marker.is_file() and rootfs.is_dir()
                and json.loads(marker.read_text()).get("recipe") == RECIPE)
        if done:
            authorized = rootfs / "root" / ".ssh" / "authorized_keys"
            if not authorized.is_file() or authorized.read_text() != pub:
                _authorize(rootfs, pub)
            return Base(rootfs, key)
        marker.unlink(missing_ok=True)
        building = CACHE_DIR / f"rootfs-{SUITE}.building"
        _remove_tree(building)
        _remove_tree(rootfs)
        log = CACHE_DIR / "debootstrap.log"
        started = time.monotonic()
        with open(log, "w") as out:
            proc = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                 SUITE, str(building), machine_mirror()],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=1800)
        _unmount_under(building)
        if proc.returncode != 0:
            tail = log.read_text()[-3000:]
            _remove_tree(building)
            raise FleetError(f"debootstrap failed ({proc.returncode}), see {log}:\n{tail}")
        _customize(building, pub)
        os.rename(building, rootfs)
        _write(marker, json.dumps({"recipe": RECIPE, "seconds": round(
            time.monotonic() - started, 1), "built": time.time()}) + "\n")
        return Base(rootfs, key)


# ------------------------------------------------------------- shared state across fleets

def _fleets_dir() -> Path:
    return STATE_DIR / "fleets"


def _lock() -> contextlib.AbstractContextManager[None]:
    return _flock(STATE_DIR / "lock")


def _registries() -> list[dict[str, Any]]:
    found = []
    for path in sorted(_fleets_dir().glob("*.json")) if _fleets_dir().is_dir() else []:
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
    return found


def _owner_alive(record: dict[str, Any]) -> bool:
    return _is(record.get("owner_pid"), record.get("owner_start"))


def _netns_names() -> list[str]:
    netns = Path("/run/netns")
    return sorted(p.name for p in netns.iterdir()) if netns.is_dir() else []


def _links() -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir())


def _reap_record(record: dict[str, Any]) -> None:
    """Tear down everything a fleet record names, by process id and by name."""
    hosts = record.get("hosts", {}).values()
    for h in hosts:  # a paused host (pause_host) takes SIGTERM only once continued
        if _is(h.get("pid"), h.get("pid_start")):
            for pid in _descendants(h["pid"]):
                _kill(pid, signal.SIGCONT)
    _stop_processes([(h["pid"], h["pid_start"]) for h in hosts if h.get("pid")])
    for h in hosts:
        if h.get("cgroup"):
            with contextlib.suppress(FleetError):
                _remove_cgroup(Path(h["cgroup"]))
    lines = [f"link del {h['veth']}" for h in hosts if h["veth"] in _links()]
    names = _netns_names()
    lines += [f"netns del {h['netns']}" for h in hosts if h["netns"] in names]
    _ip_batch(lines, check=False)
    if record.get("tmpdir"):
        _remove_tree(Path(record["tmpdir"]))
    (_fleets_dir() / f"{record['fid']}.json").unlink(missing_ok=True)


def _reap_stale_locked() -> list[dict[str, Any]]:
    """Under the lock: remove fleets whose owner is gone and orphaned names; return live ones."""
    live = []
    for record in _registries():
        if _owner_alive(record):
            live.append(record)
        else:
            _reap_record(record)
    claimed_ns = {h["netns"] for r in live for h in r.get("hosts", {}).values()}
    claimed_veth = {h["veth"] for r in live for h in r.get("hosts", {}).values()}
    lines = [f"link del {link}" for link in _links()
             if link.startswith(VETH_PREFIX) and link not in claimed_veth]
    lines += [f"netns del {ns}" for ns in _netns_names()
              if ns.startswith(NETNS_PREFIX) and ns not in claimed_ns]
    _ip_batch(lines, check=False)
    return live


def _teardown_shared_locked() -> None:
    """Under the lock, when no fleet is alive: stop apt-cacher-ng, remove the bridge, and
    unmount /run/netns if no network namespace is left."""
    _stop_acng_locked()
    if BRIDGE in _links():
        _run(["ip", "link", "del", BRIDGE], check=False)
    if not _netns_names():
        while "/run/netns" in _mounts():
            if _run(["umount", "/run/netns"], check=False).returncode != 0:
                break


def cleanup_stale() -> None:
    """Remove what fleets of dead processes left (and shared pieces, if no fleet is alive)."""
    if not STATE_DIR.is_dir():
        return
    with _lock():
        if not _reap_stale_locked():
            _teardown_shared_locked()


def _ensure_bridge_locked() -> None:
    if BRIDGE in _links():
        return
    _ip_batch([f"link add {BRIDGE} type bridge",
               f"link set {BRIDGE} addrgenmode none",
               f"addr add {BRIDGE_ADDRESS}/{PREFIX_LEN} dev {BRIDGE}",
               f"link set {BRIDGE} up"])


# ------------------------------------------------------------------------- apt-cacher-ng

def _acng_record() -> Path:
    return STATE_DIR / "acng.json"


def _acng_port() -> int | None:
    """The port of the harness's running apt-cacher-ng, if it runs."""
    try:
        record = json.loads(_acng_record().read_text())
    except (OSError, ValueError):
        return None
    if _is(record.get("pid"), record.get("start")):
        return int(record.get("port", ACNG_PORT))
    return None


def _free_port(first: int) -> int:
    """FIRST, or the next port free on the bridge address (another apt-cacher-ng, e.g. the
    packaged service on all addresses, may hold 3142)."""
    for port in range(first, first + 20):
        with socket.socket() as sock:
            try:
                sock.bind((BRIDGE_ADDRESS, port))
                return port
            except OSError:
                continue
    raise FleetError(f"no free port on {BRIDGE_ADDRESS} from {first}")


def _ensure_acng_locked() -> int:
    """Start the harness's apt-cacher-ng on the bridge address if needed; return its port."""
    port = _acng_port()
    if port is not None and _port_answers(BRIDGE_ADDRESS, port):
        return port
    _stop_acng_locked()
    port = _free_port(ACNG_PORT)
    conf = STATE_DIR / "acng"
    _remove_tree(conf)
    (conf / "log").mkdir(parents=True)
    cache = CACHE_DIR / "apt-cacher-ng"
    cache.mkdir(parents=True, exist_ok=True)
    lines = [
        "# written by the tectum test harness",
        f"CacheDir: {cache}",
        f"LogDir: {conf / 'log'}",
        "SupportDir: /usr/lib/apt-cacher-ng",
        f"BindAddress: {BRIDGE_ADDRESS}",
        f"Port: {port}",
        f"SocketPath: {conf / 'socket'}",
        f"PidFile: {conf / 'pid'}",
        "ForeGround: 1",
        "ExThreshold: 4",
        "ReportPage: acng-report.html",
    ]
    # One repository per mirror URI, whose backend file is that URI of the machine's mirror.
    uris = list(dict.fromkeys(s.uri for s in suite_sources() if s.uri.startswith("http://")))
    for i, uri in enumerate(uris):
        repo = f"tectumrep{i}"
        (conf / f"backends_{repo}").write_text(uri + "/\n")
        lines.append(f"Remap-{repo}: {uri.removeprefix('http://')} ; file:backends_{repo}")
    (conf / "acng.conf").write_text("\n".join(lines) + "\n")
    log = open(conf / "log" / "stdout.log", "w")  # noqa: SIM115 - handed to the daemon
    with log:
        proc = subprocess.Popen(["apt-cacher-ng", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    start = _start_time(proc.pid)
    _write(_acng_record(), json.dumps({"pid": proc.pid, "start": start, "port": port}) + "\n")
    deadline = time.monotonic() + 15
    while not _port_answers(BRIDGE_ADDRESS, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_acng_locked()
            raise FleetError(f"apt-cacher-ng did not answer on {BRIDGE_ADDRESS}:{port}: "
                             f"{(conf / 'log' / 'stdout.log').read_text()[-2000:]}")
        time.sleep(0.05)
    return port


def apt_cache_log() -> str:
    """apt-cacher-ng's transfer log (one line per file: time|I or O|bytes|client|path)."""
    path = STATE_DIR / "acng" / "log" / "apt-cacher.log"
    return path.read_text(errors="replace") if path.exists() else ""


def live_fleets() -> list[str]:
    """Ids of the fleets whose owning process is alive (any process on this machine)."""
    return [r["fid"] for r in _registries() if _owner_alive(r)]


def _stop_acng_locked() -> None:
    try:
        record = json.loads(_acng_record().read_text())
    except (OSError, ValueError):
        return
    pid, start = record.get("pid"), record.get("start")
    if _is(pid, start):
        _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while _is(pid, start) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.02)
        if _is(pid, start):
            _kill(pid, signal.SIGKILL)
            time.sleep(0.05)
            _reap(pid)
    _acng_record().unlink(missing_ok=True)
    _remove_tree(STATE_DIR / "acng")


# ------------------------------------------------------------------------- CPU quota

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_NAME = "tectum-test"
#: the period of a CPU quota (microseconds): a host held to 0.1 CPU runs 10 ms in every 100 ms
CPU_PERIOD_US = 100_000


def cpu_cgroup_root() -> tuple[int, Path] | None:
    """(version, directory) under which this machine lets us make CPU-limited cgroups: cgroup
    v2 when its root offers the ``cpu`` controller, else the v1 ``cpu`` hierarchy; None if
    neither is mounted."""
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.is_file() and "cpu" in controllers.read_text().split():
        return 2, CGROUP_ROOT
    if (CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us").is_file():
        return 1, CGROUP_ROOT / "cpu"
    return None


def _cgroup_of(pid: int, version: int) -> str:
    """PID's cgroup path in the hierarchy of that version (v1: the ``cpu`` controller's)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if version == 2 and number == "0":
            return path
        if version == 1 and "cpu" in controllers.split(","):
            return path
    return "/"


def _move_all(pids: Sequence[int], procs_file: Path) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, FileNotFoundError, OSError):
            procs_file.write_text(f"{pid}\n")


def _remove_cgroup(path: Path, back_to: Path | None = None) -> None:
    """Move what is left in the cgroup PATH to BACK_TO (its parent when None) and remove it."""
    if not path.is_dir():
        return
    target = (back_to or path.parent) / "cgroup.procs"
    for _ in range(20):
        try:
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except OSError:
            pids = []
        _move_all(pids, target)
        try:
            path.rmdir()
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)
            continue
        if path.parent.name == CGROUP_NAME:  # empty unless another fleet uses it
            with contextlib.suppress(OSError):
                path.parent.rmdir()
        return
    raise FleetError(f"cannot remove cgroup {path}: processes are still in it")


# --------------------------------------------------------------------------------- fleet

@dataclass(frozen=True)
class Host:
    """How to reach one test host."""

    name: str
    address: str
    port: int
    user: str
    key_path: Path
    known_hosts: Path
    netns: str


@dataclass
class _Runtime:
    host: Host
    octet: int
    veth: str
    dir: Path
    pid: int | None = None
    pid_start: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_mark: int = 0  # console.log size when the current boot began
    paused: bool = False  # pause_host: every process stopped (SIGSTOP)
    cgroup: Path | None = None  # limit_cpu: the host's CPU-limited cgroup

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @property
    def upper(self) -> Path:
        return self.dir / "upper"


_LIVE: set[Fleet] = set()
_LIVE_LOCK = threading.Lock()


class Fleet:
    """N isolated hosts answering SSH as root with the test key; a context manager."""

    def __init__(self, count: int = 1, *, names: Sequence[str] | None = None, apt: bool = False,
                 boot_timeout: float = 30.0) -> None:
        names = list(names) if names is not None else [f"host{i + 1}" for i in range(count)]
        if not names or len(set(names)) != len(names) or not all(map(NAME_RE.match, names)):
            raise ValueError(f"need unique host names like 'host1': {names!r}")
        self.names = names
        self.apt = apt
        self.boot_timeout = boot_timeout
        self.fid = secrets.token_hex(3)
        self.timings: dict[str, float] = {}
        self.tmpdir: Path | None = None
        self.known_hosts: Path | None = None
        self.apt_proxy: str | None = None  # http://169.254.77.1:3142 with apt=True
        self._hosts: dict[str, _Runtime] = {}
        self._base: Base | None = None
        self._init: Path | None = None
        self._started = False
        self._stopped = False

    # -- public API -------------------------------------------------------------------------

    @property
    def hosts(self) -> list[Host]:
        return [rt.host for rt in self._hosts.values()]

    def host(self, name: str) -> Host:
        return self._rt(name).host

    def __getitem__(self, name: str) -> Host:
        return self.host(name)

    def upper(self, name: str) -> Path:
        """The host's overlay upper directory: everything it changed, seen from the machine."""
        return self._rt(name).upper

    def log(self, name: str) -> str:
        """The host's init and sshd output."""
        path = self._rt(name).console
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> Fleet:
        if self._started:
            raise FleetError("a Fleet starts once; make a new one")
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
        """Tear down every host and, if this was the last fleet, the bridge and the cache."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        started = time.monotonic()
        try:
            self._stop_hosts(list(self._hosts.values()), keep_network=False)
        finally:
            if self.tmpdir is not None:
                _remove_tree(self.tmpdir)
            with _lock():
                (_fleets_dir() / f"{self.fid}.json").unlink(missing_ok=True)
                if not [r for r in _registries() if _owner_alive(r)]:
                    _teardown_shared_locked()
            with _LIVE_LOCK:
                _LIVE.discard(self)
            self.timings["stop"] = time.monotonic() - started

    close = stop

    def stop_host(self, name: str, *, keep_network: bool = False) -> None:
        """Stop one host. Its port 22 then times out (no such address any more), or with
        keep_network=True refuses connections. Its disk (upper layer) is kept."""
        rt = self._rt(name)
        if rt.paused:
            self.resume_host(name)
        self._stop_hosts([rt], keep_network=keep_network)
        self._save()

    def start_host(self, name: str) -> None:
        """Boot a stopped host again on the same disk, address and host key."""
        rt = self._rt(name)
        if _is(rt.pid, rt.pid_start):
            return
        if rt.host.netns not in _netns_names():
            _ip_batch(self._network_lines([rt]))
        self._launch(rt)
        self._save()
        self._wait_ready([rt])

    def restart_hosts(self, names: Sequence[str]) -> None:
        """Stop the hosts NAMES and boot them again on the same disks, addresses and host
        keys, all at once (sshd rereads its configuration)."""
        rts = [self._rt(name) for name in names]
        for rt in rts:
            if rt.paused:
                self.resume_host(rt.host.name)
        self._stop_hosts(rts, keep_network=True)
        for rt in rts:
            self._launch(rt)
        self._save()
        self._wait_ready(rts)

    def is_running(self, name: str) -> bool:
        rt = self._rt(name)
        return _is(rt.pid, rt.pid_start)

    # -- slowing hosts down -------------------------------------------------------------------

    def _init_pid(self, rt: _Runtime) -> int:
        """PID (in this machine's namespace) of the host's PID 1: the child of its unshare."""
        if not _is(rt.pid, rt.pid_start):
            raise FleetError(f"host {rt.host.name} is not running")
        assert rt.pid is not None
        kids = _children(rt.pid)
        if len(kids) != 1:
            raise FleetError(f"host {rt.host.name}: expected one init process under "
                             f"{rt.pid}, found {kids}")
        return kids[0]

    def processes(self, name: str) -> list[int]:
        """Every process of host NAME (its PID 1 first), as PIDs of this machine."""
        return _descendants(self._init_pid(self._rt(name)))

    def pause_host(self, name: str) -> int:
        """Stop every process of host NAME (SIGSTOP), as a machine so loaded or frozen that
        nothing on it runs; its kernel still completes TCP connections and answers ARP. The
        host's processes are its PID 1 and all its descendants; stopping repeats until every
        one is stopped (one forked meanwhile shows up in the next pass). Returns how many
        processes are stopped. A process in uninterruptible sleep (D) with the SIGSTOP pending
        counts as stopped: it runs no user code before it stops (a vfork parent whose child was
        stopped before exec stays in D until the child goes on). Idempotent."""
        rt = self._rt(name)
        init = self._init_pid(rt)
        rt.paused = True
        pending: list[int] = []
        deadline = time.monotonic() + 30  # (a loaded machine delivers signals late)
        while time.monotonic() < deadline:
            pending = [p for p in _descendants(init) if not _paused(p)]
            if not pending:
                return len(_descendants(init))
            for pid in pending:
                _kill(pid, signal.SIGSTOP)
            time.sleep(0.002)
        running = ", ".join(f"{p} {_state(p)} {_comm(p)}" for p in pending)
        self.resume_host(name)  # (never leave a host half stopped)
        raise FleetError(f"host {name}: processes keep running after SIGSTOP: {running}")

    def resume_host(self, name: str) -> None:
        """Continue every process of host NAME (SIGCONT), PID 1 first. Idempotent."""
        rt = self._rt(name)
        rt.paused = False
        if not _is(rt.pid, rt.pid_start):
            return
        init = self._init_pid(rt)
        for pid in _descendants(init):  # (also those in D whose SIGSTOP is still pending)
            _kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while True:  # until none is stopped (a loaded machine delivers signals late)
            stopped = [p for p in _descendants(init) if _state(p) in ("T", "t")]
            if not stopped or time.monotonic() > deadline:
                return
            for pid in stopped:
                _kill(pid, signal.SIGCONT)
            time.sleep(0.002)

    def is_paused(self, name: str) -> bool:
        return self._rt(name).paused

    @contextlib.contextmanager
    def stop_bursts(self, names: Sequence[str], *, stopped: float, every: float,
                    delay: float = 0.0) -> Iterator[list[tuple[float, float, int]]]:
        """While the block runs: after DELAY seconds, the hosts NAMES are paused for STOPPED
        seconds in every EVERY seconds (all at once; :meth:`pause_host`), and resumed when the
        block ends. Yields the list of bursts so far, ``(start, end, processes stopped)`` in
        ``time.monotonic()`` seconds (end 0 while a burst lasts)."""
        if not 0 < stopped < every:
            raise ValueError("need 0 < stopped < every")
        for name in names:
            self._rt(name)
        bursts: list[tuple[float, float, int]] = []
        done = threading.Event()
        errors: list[BaseException] = []

        def cycle() -> None:
            try:
                if done.wait(delay):
                    return
                while not done.is_set():
                    start = time.monotonic()
                    count = sum(self.pause_host(name) for name in names)
                    bursts.append((start, 0.0, count))
                    done.wait(stopped)
                    for name in names:
                        self.resume_host(name)
                    bursts[-1] = (start, time.monotonic(), count)
                    done.wait(max(0.0, every - (time.monotonic() - start)))
            except BaseException as exc:  # reported when the block ends
                errors.append(exc)
            finally:
                for name in names:
                    with contextlib.suppress(Exception):
                        self.resume_host(name)

        thread = threading.Thread(target=cycle, name="tectum-fleet-bursts", daemon=True)
        thread.start()
        try:
            yield bursts
        finally:
            done.set()
            thread.join(timeout=30)
            for name in names:
                self.resume_host(name)
        if errors:
            raise FleetError(f"stop bursts failed: {errors[0]}") from errors[0]

    def limit_cpu(self, name: str, cpus: float | None) -> None:
        """Hold host NAME to CPUS of one CPU (e.g. 0.05) with a CPU quota on a cgroup of its
        own (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``; every process the host starts
        later inherits it); None lifts the limit (the cgroup is removed). FleetError when this
        machine has no cgroup CPU controller."""
        rt = self._rt(name)
        found = cpu_cgroup_root()
        if found is None:
            raise FleetError("no cgroup CPU controller on this machine (v1 cpu or v2 cpu)")
        version, root = found
        if cpus is None:
            if rt.cgroup is not None:
                home = root / self._home_cgroup(rt, version).lstrip("/")
                _remove_cgroup(rt.cgroup, home)
                rt.cgroup = None
                self._save()
            return
        if not cpus > 0:
            raise ValueError("cpus must be positive")
        quota = max(1000, int(cpus * CPU_PERIOD_US))
        if rt.cgroup is None:
            path = root / CGROUP_NAME / f"{self.fid}-{name}"
            if version == 2:
                top = root / CGROUP_NAME
                top.mkdir(exist_ok=True)
                with contextlib.suppress(OSError):
                    (root / "cgroup.subtree_control").write_text("+cpu\n")
                (top / "cgroup.subtree_control").write_text("+cpu\n")
            path.mkdir(parents=True, exist_ok=True)
            rt.cgroup = path
            self._save()
        if version == 2:
            (rt.cgroup / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}\n")
        else:
            (rt.cgroup / "cpu.cfs_period_us").write_text(f"{CPU_PERIOD_US}\n")
            (rt.cgroup / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        _move_all(self.processes(name), rt.cgroup / "cgroup.procs")

    @staticmethod
    def _home_cgroup(rt: _Runtime, version: int) -> str:
        """The cgroup the host's processes came from: its unshare parent's, never moved."""
        if rt.pid is not None and _is(rt.pid, rt.pid_start):
            return _cgroup_of(rt.pid, version)
        return "/"

    def ssh_command(self, name: str, command: str | None = None) -> list[str]:
        """argv for the system ssh client to HOST (strict host key checking, test key)."""
        h = self.host(name)
        argv = ["ssh", "-F", "none", "-i", str(h.key_path), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={h.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
                "-p", str(h.port), f"{h.user}@{h.address}"]
        return argv if command is None else [*argv, command]

    def run(self, name: str, command: str, *, check: bool = False, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run COMMAND (a shell string) on host NAME over ssh; captures text output."""
        proc = subprocess.run(self.ssh_command(name, command), input=input, capture_output=True,
                              text=True, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise FleetError(f"{name}: {command!r} exited {proc.returncode}: "
                             f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        return proc

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------

    def _rt(self, name: str) -> _Runtime:
        try:
            return self._hosts[name]
        except KeyError:
            raise KeyError(f"no host {name!r} in this fleet ({', '.join(self.names)})") from None

    def _start(self) -> None:
        ensure_tools(apt=self.apt)
        t0 = time.monotonic()
        self._base = build_base()
        t1 = time.monotonic()
        self.timings["base"] = t1 - t0
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"tectum-fleet-{self.fid}-"))
        self.known_hosts = self.tmpdir / "known_hosts"
        self.known_hosts.write_text("")
        self._init = self.tmpdir / "init.sh"
        _write(self._init, INIT_SCRIPT, 0o755)
        with _lock():
            live = _reap_stale_locked()
            used = {int(h["address"].rsplit(".", 1)[1])
                    for r in live for h in r.get("hosts", {}).values()}
            free = [o for o in range(FIRST_OCTET, LAST_OCTET + 1) if o not in used]
            if len(free) < len(self.names):
                raise FleetError(f"only {len(free)} addresses left in {NET_PREFIX}0/24")
            for name, octet in zip(self.names, free):
                host = Host(name=name, address=f"{NET_PREFIX}{octet}", port=22, user="root",
                            key_path=self._base.key_path, known_hosts=self.known_hosts,
                            netns=f"{NETNS_PREFIX}{self.fid}-{name}")
                self._hosts[name] = _Runtime(host, octet, f"{VETH_PREFIX}{octet}",
                                             self.tmpdir / "hosts" / name)
            self._save_locked()  # recorded before anything is made, so it can be reaped
            _ensure_bridge_locked()
            if self.apt:
                self.apt_proxy = f"http://{BRIDGE_ADDRESS}:{_ensure_acng_locked()}"
        sources = _host_sources_list()
        for rt in self._hosts.values():
            for sub in ("upper", "work", "root"):
                (rt.dir / sub).mkdir(parents=True)
            etc = rt.upper / "etc"
            _write(etc / "hostname", rt.host.name + "\n")
            _write(etc / "hosts", f"127.0.0.1\tlocalhost\n{rt.host.address}\t{rt.host.name}\n"
                   "::1\tlocalhost ip6-localhost ip6-loopback\n")
            _write(etc / "apt" / "sources.list", sources)
            if self.apt:
                _write(etc / "apt" / "apt.conf.d" / "01tectum-proxy",
                       f'Acquire::http::Proxy "{self.apt_proxy}";\n'
                       '// no translated descriptions: a third less to fetch and parse\n'
                       'Acquire::Languages "none";\n'
                       '// a request stuck in the cache fails and is retried, not waited on\n'
                       'Acquire::http::Timeout "30";\n'
                       'Acquire::Retries "3";\n')
        _ip_batch(self._network_lines(list(self._hosts.values())))
        for rt in self._hosts.values():
            self._launch(rt)
        self._save()
        self._wait_ready(list(self._hosts.values()))
        self.timings["start"] = time.monotonic() - t1
        if self.apt:
            self._update_package_lists()

    def _update_package_lists(self) -> None:
        """``apt-get update`` on every host: the first host alone, then the others
        :data:`APT_UPDATE_WORKERS` at a time. The base has no package lists; left to the tests,
        every host would fetch them at the same moment, and several clients revalidating one
        index through apt-cacher-ng at once can leave one of them stalled for minutes (each
        host's apt gives a stuck request up after 30 s and retries it). The first host fetches;
        the rest are served from the cache, a few at once (most of an update's time is the
        host's own CPU: parsing the lists, so a large fleet is not updated one by one)."""
        started = time.monotonic()
        rts = list(self._hosts.values())

        def update(rt: _Runtime) -> None:
            # apt's own Timeout covers a request that stalls, not one that trickles; an update
            # that still runs after APT_UPDATE_TIMEOUT is killed on the host (it would hold
            # apt's lock) and started again, up to APT_UPDATE_ATTEMPTS times.
            last = ""
            for _attempt in range(APT_UPDATE_ATTEMPTS):
                try:
                    proc = self.run(rt.host.name,
                                    f"timeout -k 5 {APT_UPDATE_TIMEOUT} apt-get update -q",
                                    timeout=APT_UPDATE_TIMEOUT + 30)
                except subprocess.TimeoutExpired:
                    last = "ssh did not return"
                    continue
                if proc.returncode == 0:
                    return
                last = f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-2000:]}"
            raise FleetError(f"apt-get update on {rt.host.name} failed "
                             f"{APT_UPDATE_ATTEMPTS} times; the last: {last}")

        update(rts[0])
        with ThreadPoolExecutor(max_workers=APT_UPDATE_WORKERS) as pool:
            list(pool.map(update, rts[1:]))
        self.timings["apt_update"] = time.monotonic() - started

    def _network_lines(self, rts: Sequence[_Runtime]) -> list[str]:
        lines = []
        for rt in rts:
            # A neighbour entry left from an earlier host on this address (another MAC) would
            # hold the first connections for seconds.
            lines += [f"neigh flush to {rt.host.address} dev {BRIDGE}",
                      f"netns add {rt.host.netns}",
                      f"link add {rt.veth} type veth peer name eth0 netns {rt.host.netns}",
                      f"link set {rt.veth} addrgenmode none",
                      f"link set {rt.veth} master {BRIDGE}",
                      f"link set {rt.veth} up"]
        return lines

    def _launch(self, rt: _Runtime) -> None:
        assert self._base is not None and self._init is not None
        argv = ["ip", "netns", "exec", rt.host.netns,
                "unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child", "--",
                "/bin/sh", str(self._init), str(self._base.rootfs), str(rt.upper),
                str(rt.dir / "work"), str(rt.dir / "root"), rt.host.name, rt.host.address,
                str(PREFIX_LEN)]
        with open(rt.console, "ab") as log:
            rt.log_mark = log.tell()
            rt.proc = _LAUNCHER.popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        rt.pid, rt.pid_start = rt.proc.pid, _start_time(rt.proc.pid)

    def _wait_ready(self, rts: Sequence[_Runtime]) -> None:
        deadline = time.monotonic() + self.boot_timeout
        waiting = list(rts)
        while waiting:
            for rt in list(waiting):
                if rt.proc is not None and rt.proc.poll() is not None:
                    raise FleetError(f"host {rt.host.name} exited ({rt.proc.returncode}) "
                                     f"while booting:\n{self.log(rt.host.name)[-3000:]}")
                # Probe only once sshd says it listens: a probe sent before the host's address
                # exists waits for the next ARP retry, a second later.
                if self._listening(rt) and _port_answers(rt.host.address, 22):
                    waiting.remove(rt)
            if waiting and time.monotonic() > deadline:
                raise FleetError(f"hosts {[rt.host.name for rt in waiting]} did not answer "
                                 f"SSH within {self.boot_timeout}s:\n"
                                 f"{self.log(waiting[0].host.name)[-3000:]}")
            if waiting:
                time.sleep(0.02)
        self._write_known_hosts()

    @staticmethod
    def _listening(rt: _Runtime) -> bool:
        try:
            with open(rt.console, "rb") as log:
                log.seek(rt.log_mark)
                return b"Server listening on" in log.read()
        except OSError:
            return False

    def _write_known_hosts(self) -> None:
        assert self.known_hosts is not None
        lines = []
        for rt in self._hosts.values():
            pub = rt.upper / HOST_KEY.lstrip("/")
            pub = pub.with_name(pub.name + ".pub")
            if pub.is_file():
                keytype, key = pub.read_text().split()[:2]
                lines.append(f"{rt.host.address} {keytype} {key}")
        _write(self.known_hosts, "\n".join(lines) + "\n")

    def _stop_hosts(self, rts: Sequence[_Runtime], *, keep_network: bool) -> None:
        for rt in rts:
            if rt.paused:  # a stopped process takes SIGTERM only once continued
                with contextlib.suppress(FleetError):
                    self.resume_host(rt.host.name)
        try:
            _stop_processes([(rt.pid, rt.pid_start) for rt in rts
                             if rt.pid is not None and rt.pid_start is not None])
        finally:
            for rt in rts:  # the processes are gone: their CPU-limited cgroups go too
                if rt.cgroup is not None:
                    with contextlib.suppress(FleetError):
                        _remove_cgroup(rt.cgroup)
                    rt.cgroup = None
            for rt in rts:
                if rt.proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        rt.proc.wait(timeout=1)
                rt.proc, rt.pid, rt.pid_start = None, None, None
            if not keep_network:
                links, names = _links(), _netns_names()
                _ip_batch([f"link del {rt.veth}" for rt in rts if rt.veth in links]
                          + [f"netns del {rt.host.netns}" for rt in rts
                             if rt.host.netns in names]
                          + [f"neigh flush to {rt.host.address} dev {BRIDGE}" for rt in rts
                             if BRIDGE in links], check=False)
            for rt in rts:  # overlays live in the host's own mount namespace; be sure anyway
                _unmount_under(rt.dir / "root")

    def _record(self) -> dict[str, Any]:
        return {
            "fid": self.fid, "owner_pid": os.getpid(), "owner_start": _start_time(os.getpid()),
            "tmpdir": str(self.tmpdir) if self.tmpdir else None,
            "hosts": {name: {"address": rt.host.address, "netns": rt.host.netns,
                             "veth": rt.veth, "pid": rt.pid, "pid_start": rt.pid_start,
                             "cgroup": str(rt.cgroup) if rt.cgroup else None}
                      for name, rt in self._hosts.items()},
        }

    def _save_locked(self) -> None:
        _write(_fleets_dir() / f"{self.fid}.json", json.dumps(self._record(), indent=1) + "\n")

    def _save(self) -> None:
        with _lock():
            self._save_locked()


def _stop_all() -> None:
    with _LIVE_LOCK:
        fleets = list(_LIVE)
    for fleet in fleets:
        with contextlib.suppress(Exception):
            fleet.stop()


atexit.register(_stop_all)


def main(argv: Sequence[str]) -> int:
    usage = "usage: python3 -m tests.harness.fleet build|cleanup|up [N]"
    if not argv or argv[0] not in ("build", "cleanup", "up"):
        print(usage, file=sys.stderr)
        return 2
    if argv[0] == "build":
        started = time.monotonic()
        base = build_base()
        print(f"{base.rootfs} ready ({time.monotonic() - started:.1f}s); key {base.key_path}")
    elif argv[0] == "cleanup":
        cleanup_stale()
    else:  # start a fleet and keep it until Ctrl-C, for poking at by hand
        with Fleet(int(argv[1]) if len(argv) > 1 else 2, apt=True) as fleet:
            for host in fleet.hosts:
                print(" ".join(fleet.ssh_command(host.name)))
            print(f"timings: {fleet.timings}; Ctrl-C stops the fleet")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
