"""Benchmark: tectum, pyinfra and Ansible configuring the same fleet of test hosts, side by side.

The fleet is ``tests.harness.fleet.Fleet(N, apt=True)`` (default N = 20): isolated Debian
bookworm hosts on this machine, each its own network namespace with an ``sshd`` as PID 1 and apt
through a local apt-cacher-ng. Every tool gets the same hosts, in the same run, and the same
workload per host (105 declared objects):

* 95 files in 5 directories: ``/srv/bench/d0`` … ``d4``, 19 files each, ``f00.txt`` …
  ``f18.txt`` (mode 0644, ~280 bytes of distinct content each). The issue's "100 resources" are
  these 95 files + package + user + service configuration + service (99); the directories are
  declared explicitly too, with their parent ``/srv/bench`` (all mode 0755), so 105 in all.
* 1 package: ``tree`` (not in a Debian minbase, no dependencies beyond libc, no service).
* 1 user: ``benchuser`` (home ``/home/benchuser``, created; shell ``/bin/bash``).
* 1 service configuration + 1 service: ``/etc/cron.d/bench`` (a comment, schedules nothing) and
  the ``cron`` service running, restarted when that file changes. The hosts have no systemd (PID
  1 is sshd), so this is a System V init script driven with ``service``. ``ssh`` — the one
  daemon of the base image — cannot be the service: restarting it kills the host's PID 1.
  ``cron`` is installed (stopped: with no init system ``invoke-rc.d`` does not start it) in the
  untimed setup, so the service resource has real work on the first apply: start it.

Phases, each timed as the wall time of the whole tool process, every measurement taken at
least 3 times by default:

* ``first``  — first apply on fresh hosts (``--first-repeat``, default 3; the hosts are reset
  before every one, see below);
* ``noop``   — the same apply again, nothing to change (``--repeat``, default 5);
* ``repair`` — apply after 10 of the 95 files per host were overwritten by hand over SSH
  (``--repair-repeat``, default 3; other files each repetition, the same files for every tool
  within one repetition).

Order (``--order``): ``interleaved`` (the default) runs the tools round-robin within each phase —
first apply of tectum, pyinfra, Ansible, then again tectum, pyinfra, Ansible, … then the no-op
rounds, then the repair rounds — so that a noisy period of the shared machine falls on every
tool alike rather than on one tool's runs; ``grouped`` runs all phases of one tool before the next
tool (the order before interleaving). For each phase and tool the report gives the median, the
spread (min–max) and the ratio of the peer's median to tectum's (how many times faster tectum
is), with the range of the per-round ratios (peer's run k / tectum's run k: in the interleaved
order, runs taken moments apart), all from the same run. Fewer than 3 repetitions are accepted
(quick checks) with a warning: they give no spread worth the name.

Tectum keeps state, the peers do not: when another tool's first apply was the last to build the
hosts (in the interleaved order, Ansible's last first apply), tectum's state describes objects
that were since removed by a reset and made again by another tool. Before tectum's first no-op
run, an untimed ``tectum apply`` (reported as "settle") brings its state in line with the hosts,
so that its no-op runs measure a no-op, as the peers' do. Should a tool's run fail, the tool
takes no further part; when it failed in the no-op or repair rounds, the hosts are brought back
to the desired state by an untimed run of another tool before the next run (reported).

Untimed, around every run: before each first apply (of every tool, every repetition) the hosts are
reset over SSH (cron stopped, ``tree`` purged, the user, the files and directories and apt's
downloaded packages removed, tectum's state removed) and a fingerprint of each host (installed
packages, account files, managed paths, cron processes, cached .debs) must equal the one taken
after setup; after every run each host must hold exactly the desired state (every file's SHA-256,
modes and types, the package, the user and its home, ``service cron status``); after overwriting
files, exactly 10 per host must differ; a no-op run must change no object's ctime (reported, not
fatal).

Untimed setup, once, for all tools alike: the fleet starts with fresh package lists (the harness
runs ``apt-get update`` one host after the other), then ``cron`` and — when Ansible takes part —
``python3`` and ``python3-apt`` (Ansible's target requirements: its modules run Python; its
``apt`` module imports apt) installed without recommends, ``tree`` downloaded once (so that
apt-cacher-ng holds it; the download is removed), and ``LogLevel VERBOSE`` for sshd (hosts
restarted) so that sshd logs every session. The package lists stay fresh, and no tool refreshes
them in a timed run: the peers are not asked to (no ``update_cache`` / ``update``), tectum only
does after an install fails for stale lists.

apt's binary caches (``/var/cache/apt/pkgcache.bin``, ``srcpkgcache.bin``): ``--apt-cache
clean`` (the default) removes them with the downloads (``apt-get clean``) before every first
apply, as an image built with ``apt-get update && … && apt-get clean`` has it, so each tool's
``apt-get install`` first rebuilds them from the lists (about 0.6 s of CPU per host, the same for
every tool); ``--apt-cache kept`` removes only the downloaded ``.deb`` files and keeps the
caches, as ``apt-get update`` leaves them on a server it runs on (apt-daily does). On 2 CPUs
shared by 20 hosts that rebuild is a fixed cost of several seconds in every tool's first apply.

Tools and settings (all with host key checking against the fleet's known_hosts, as root, no
become):

* tectum: the ``tectum`` beside this Python (the one installed from this checkout), ``tectum apply
  --auto-approve DIR`` for every phase; ``DIR`` holds ``inventory.toml`` (group ``bench``) and a
  ``stack.py`` that applies the role to it; ``TECTUM_COMMAND_LOG`` logs its host operations.
* pyinfra (``bench/fleet/deploy.py``): ``pyinfra -y INVENTORY deploy.py`` with its default
  parallelism (min(20 x CPUs, hosts)), paramiko.
* Ansible (``bench/fleet/playbook.yml``): ``ansible-playbook`` with forks = hosts, pipelining,
  no fact gathering, the linear strategy, the Python interpreter set (no discovery), and its
  default SSH multiplexing (ControlPersist=60s, so a run shortly after another reuses its
  connections).

pyinfra and ansible-core are installed into the benchmark's own virtual environment
(``--venv``, default ``/var/cache/tectum-bench/venv``) with pip on first use. All three read one
generated ``workload.json`` (paths, local source files, names).

SSH round trips per host per run are counted for every tool from the hosts' sshd logs
(``Starting session``: one per command or file transfer channel; ``Accepted publickey``: one per
connection), and for tectum also the entries of ``TECTUM_COMMAND_LOG`` per host (its logged
operations, mutating or not; several reads can share one SSH session, so the sessions are the
round trips).

Targets (issue #3): no-op at least 5x faster than pyinfra and 10x faster than Ansible; first
apply at least 3x faster than pyinfra.

Scale (issue 12, item 7; e.g. ``--hosts 100 --tools tectum,pyinfra``):

* ``floor`` (``--floor``, on by default): the first apply's floor, timed like a tool in the
  first-apply rounds on freshly reset hosts — the same ``apt-get install`` of the package that
  tectum runs (its options and environment), started on every host at once (one ``ssh`` per
  host, all in parallel) and nothing else. tectum's first apply is reported against it.
* ``tectum@K`` (``--scale-from K``, default 20 when there are more hosts): tectum's no-op over an
  inventory of the first K hosts only (its own project and state, settled by an untimed apply),
  in the same no-op rounds, so the growth of tectum's no-op from K to N hosts is measured on the
  same machine at the same time; at most linear means noop(N) / noop(K) <= N / K.
* controller memory: the peak resident set size of each tool's process (``ru_maxrss`` of
  ``wait4``: the largest of the process and its children), per phase.
* targets: every host converges on every first apply (a tool that fails is reported FAILED),
  no-op at least 25x faster than pyinfra at 100 hosts or more, tectum's no-op growing at most
  linearly from K to N hosts.

Usage (as root)::

    python3 bench/fleet.py [--hosts 20] [--tools tectum,pyinfra,ansible]
                           [--first-repeat 3] [--repeat 5] [--repair-repeat 3]
                           [--no-floor] [--scale-from K]
                           [--order interleaved|grouped] [--apt-cache clean|kept]
                           [--baseline PATH] [--json results.json]
    python3 bench/fleet.py --report results.json   # the report of an earlier --json

``--tools`` also sets the round-robin order. The hosts share the machine's CPUs with the tools,
so other work on the machine inflates every figure (the load average is reported); interleaving
spreads that noise over the tools, it does not remove it. On 2 CPUs and 20 hosts a whole run
takes over an hour, most of it Ansible (minutes per run); ``--hosts 3`` or ``--tools
tectum,pyinfra`` is quicker. ``--json`` is rewritten after every run, so a run cut short keeps
what it measured.

With ``TECTUM_BENCH_FACTS=1`` in the environment, tectum's role decides on a host fact
(``if host.facts.os.family == "debian": Package(...)``; the same workload): the facts are read
in each host's one read round trip, so the no-op should cost the same (issue 12: compare with
and without it, and with ``--baseline`` a tectum from before facts).

Exit status: 0 when every run succeeded and every target that could be measured is met, else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PEER_DIR = Path(__file__).resolve().parent / "fleet"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.harness.fleet import Fleet, FleetError  # noqa: E402

# -- the workload ------------------------------------------------------------------------------
ROOT = "/srv/bench"
N_DIRS = 5
FILES_PER_DIR = 19
PACKAGE = "tree"
USER = {"name": "benchuser", "home": "/home/benchuser", "shell": "/bin/bash"}
SERVICE = "cron"
SERVICE_CONF = "/etc/cron.d/bench"
SERVICE_CONF_CONTENT = "# tectum fleet benchmark: a cron.d file that schedules nothing\n"
N_DAMAGE = 10  # files overwritten by hand per host before each repair
RESOURCES = 1 + N_DIRS + N_DIRS * FILES_PER_DIR + 4

# untimed setup on every host, for every tool alike
HOST_PACKAGES = ("cron",)
#: what Ansible needs on a target (its modules run Python; its apt module imports apt):
#: installed in the setup only when Ansible takes part
ANSIBLE_PACKAGES = ("python3", "python3-apt")
SSHD_DROP_IN = "/etc/ssh/sshd_config.d/zz-tectum-bench.conf"

PHASES = ("first", "noop", "repair")
TOOLS = ("tectum", "pyinfra", "ansible")
PEERS = ("pyinfra", "ansible")
# (phase, peer) -> how many times faster than the peer tectum must be
TARGETS = {("noop", "pyinfra"): 5.0, ("noop", "ansible"): 10.0, ("first", "pyinfra"): 3.0}

DEFAULT_VENV = Path(os.environ.get("TECTUM_BENCH_VENV", "/var/cache/tectum-bench/venv"))
PEER_PACKAGES = ("pyinfra", "ansible-core")
# a user's ordinary environment: none of the Python settings that change start-up or I/O cost
# (PYTHONDONTWRITEBYTECODE would recompile every module in every run)
DROPPED_ENV = ("TECTUM_COMMAND_LOG", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
               "PYTHONPROFILEIMPORTTIME", "PYTHONDEVMODE", "PYTHONTRACEMALLOC", "PYTHONMALLOC",
               "PYTHONMALLOCSTATS", "PYTHONINSPECT", "PYTHONVERBOSE", "PYTHONPATH",
               "VIRTUAL_ENV")


def content(d: int, f: int) -> str:
    """The content of file f of directory d: distinct per file, ~280 bytes."""
    head = f"# {ROOT}/d{d}/f{f:02}.txt, managed by the tectum fleet benchmark\n"
    body = "".join(f"line {k}: {(d * 131071 + f * 7919 + k * 104729) % 1000003:07d} lorem\n"
                   for k in range(10))
    return head + body


def dir_specs() -> list[tuple[str, str]]:
    """(resource name, remote path) of every directory, parents first."""
    return [("root", ROOT), *((f"d{d}", f"{ROOT}/d{d}") for d in range(N_DIRS))]


def dir_paths() -> list[str]:
    return [path for _, path in dir_specs()]


def file_specs() -> list[tuple[str, str, str]]:
    """(resource name, remote path, content) of every data file."""
    return [(f"d{d}_f{f:02}", f"{ROOT}/d{d}/f{f:02}.txt", content(d, f))
            for d in range(N_DIRS) for f in range(FILES_PER_DIR)]


# -- the tectum project --------------------------------------------------------------------------
STACK = '''"""Generated by bench/fleet.py: the benchmark's workload on every host of group bench."""

import json
import os

from tectum import apply_role
from tectum.host import Directory, File, Package, Service, User

with open({workload!r}, encoding="utf-8") as fh:
    W = json.load(fh)

# TECTUM_BENCH_FACTS=1: the role decides on a host fact, as real roles do (the same workload)
FACTS = os.environ.get("TECTUM_BENCH_FACTS") == "1"


def _read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


CONTENTS = {{item["src"]: _read(item["src"]) for item in [*W["files"], W["service_conf"]]}}


def bench(host):
    for item in W["dirs"]:
        Directory(item["name"], path=item["path"], mode="0755")
    for item in W["files"]:
        File(item["name"], path=item["dest"], content=CONTENTS[item["src"]], mode="0644")
    if not FACTS or host.facts.os.family == "debian":
        Package(W["package"])
    User(W["user"]["name"], name=W["user"]["name"], home=W["user"]["home"],
         shell=W["user"]["shell"])
    conf = File("service_conf", path=W["service_conf"]["dest"],
                content=CONTENTS[W["service_conf"]["src"]], mode="0644")
    Service(W["service"], name=W["service"], running=True, restart_on=[conf])


apply_role(bench, "bench")
'''

# -- remote scripts (untimed) --------------------------------------------------------------------
SETUP_SCRIPT = f"""set -e
export DEBIAN_FRONTEND=noninteractive
printf 'LogLevel VERBOSE\\n' > {SSHD_DROP_IN}
apt-get install -y -q --no-install-recommends @PACKAGES@
apt-get install -y -q --download-only {PACKAGE}
apt-get clean
"""
#: the first apply's floor: tectum's own ``apt-get install`` of the package (its options and
#: environment: tectum.providers.host.apt), alone
FLOOR_SCRIPT = (f"DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none apt-get install "
                f"-y -q -o DPkg::Lock::Timeout=120 --allow-downgrades "
                f"-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "
                f"{PACKAGE} >/dev/null")

_KILL_SERVICE = f"""for p in /proc/[0-9]*; do
    if [ "$(cat "$p/comm" 2>/dev/null)" = {SERVICE} ]; then kill -9 "${{p#/proc/}}" 2>/dev/null; fi
done"""

RESET_SCRIPT = f"""set -u
export DEBIAN_FRONTEND=noninteractive
service {SERVICE} stop >/dev/null 2>&1 || true
{_KILL_SERVICE}
rm -f /run/crond.pid /run/crond.reboot
if dpkg-query -W -f='${{db:Status-Abbrev}}' {PACKAGE} 2>/dev/null | grep -q '^i'; then
    apt-get purge -y -q {PACKAGE} >/dev/null || exit 1
fi
if getent passwd {USER['name']} >/dev/null; then
    userdel -r {USER['name']} >/dev/null 2>&1 || userdel {USER['name']} || exit 1
fi
if getent group {USER['name']} >/dev/null; then groupdel {USER['name']} || exit 1; fi
rm -rf {ROOT} {SERVICE_CONF} {USER['home']} /var/mail/{USER['name']} /root/.ansible
@APT_CACHE@
exit 0
"""
#: how the reset leaves apt's caches (``--apt-cache``): every download and the binary caches
#: removed, or only the downloads (the caches rebuilt from the lists if missing)
APT_CACHE_MODES = {
    "clean": "apt-get clean",
    "kept": "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*\n"
            "apt-cache stats >/dev/null || exit 1",
}

FINGERPRINT_SCRIPT = f"""echo "packages $(dpkg-query -W \
-f='${{db:Status-Abbrev}} ${{Package}} ${{Version}}\\n' | grep '^ii' | sort | sha256sum \
| cut -c1-16)"
echo "accounts $(cat /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/subuid /etc/subgid \
2>/dev/null | sha256sum | cut -c1-16)"
for p in {ROOT} {SERVICE_CONF} {USER['home']} /var/mail/{USER['name']}; do
    if [ -e "$p" ]; then echo "present $p"; fi
done
for p in /proc/[0-9]*; do
    if [ "$(cat "$p/comm" 2>/dev/null)" = {SERVICE} ]; then echo "process {SERVICE}"; fi
done
service {SERVICE} status >/dev/null 2>&1 && echo "service running"
echo "debs $(ls /var/cache/apt/archives | grep -c '[.]deb$')"
"""


def check_script() -> tuple[str, list[str]]:
    """A script that reports a host's state, and the report of a host in the desired state."""
    files = [path for _, path, _ in file_specs()]
    quoted = " ".join(shlex.quote(p) for p in [*dir_paths(), *files, SERVICE_CONF])
    script = f"""cd /
for p in {quoted}; do
    if [ -e "$p" ]; then stat -c '%a %U:%G %F %n' -- "$p"; else echo "missing $p"; fi
done
sha256sum -- {' '.join(shlex.quote(p) for p in [*files, SERVICE_CONF])} 2>&1
echo "package $(dpkg-query -W -f='${{db:Status-Abbrev}}' {PACKAGE} 2>/dev/null)"
echo "user $(getent passwd {USER['name']} | cut -d: -f1,6,7)"
if [ -d {USER['home']} ]; then echo "home present"; else echo "home missing"; fi
if service {SERVICE} status >/dev/null 2>&1; then echo "service running"; \
else echo "service stopped"; fi
"""
    expected = [f"755 root:root directory {d}" for d in dir_paths()]
    expected += [f"644 root:root regular file {p}" for p in [*files, SERVICE_CONF]]
    expected += [f"{hashlib.sha256(c.encode()).hexdigest()}  {p}" for _, p, c in file_specs()]
    expected.append(f"{hashlib.sha256(SERVICE_CONF_CONTENT.encode()).hexdigest()}  "
                    f"{SERVICE_CONF}")
    expected += ["package ii", f"user {USER['name']}:{USER['home']}:{USER['shell']}",
                 "home present", "service running"]
    return script, expected


# what a no-op run must not touch: ctime of every managed object and of the package/user dbs
CTIME_SCRIPT = f"""find {ROOT} {SERVICE_CONF} {USER['home']} -printf '%C@ %p\\n' 2>/dev/null
stat -c '%Z %n' /etc/passwd /etc/group /var/lib/dpkg/status
"""


class BenchError(RuntimeError):
    """A tool run failed or left the hosts in the wrong state."""


# -- runs ----------------------------------------------------------------------------------------
@dataclass
class Run:
    phase: str
    wall: float  # seconds, whole process
    cpu: float  # user + system of the process and its waited-for children (the controller)
    connections: dict[str, int]  # per host, from sshd's log
    sessions: dict[str, int]  # per host, from sshd's log
    commands: dict[str, dict[str, int]] | None = None  # tectum: per host {"total", "mutating"}
    touched: dict[str, int] | None = None  # no-op: objects whose ctime changed, per host
    rep: int = 0  # repetition (round) of the phase, from 0
    seq: int = 0  # position among all the timed runs of the benchmark, from 1
    max_rss_kib: int = 0  # peak RSS of the tool's process (or its largest child), KiB

    def doc(self) -> dict[str, Any]:
        return {"phase": self.phase, "rep": self.rep, "seq": self.seq, "wall_s": self.wall,
                "cpu_s": self.cpu, "ssh_connections": self.connections,
                "ssh_sessions": self.sessions, "commands": self.commands,
                "touched": self.touched, "max_rss_kib": self.max_rss_kib}


@dataclass
class ToolResult:
    name: str
    version: str = ""
    settings: str = ""
    runs: list[Run] = field(default_factory=list)
    error: str | None = None

    def walls(self, phase: str) -> list[float]:
        return [r.wall for r in self.runs if r.phase == phase]

    def median(self, phase: str) -> float | None:
        walls = self.walls(phase)
        return statistics.median(walls) if walls else None

    def spread(self, phase: str) -> tuple[float, float] | None:
        """(min, max) of the wall times of PHASE."""
        walls = self.walls(phase)
        return (min(walls), max(walls)) if walls else None

    def by_rep(self, phase: str) -> dict[int, float]:
        """Wall time of each repetition (round) of PHASE."""
        return {r.rep: r.wall for r in self.runs if r.phase == phase}

    def median_cpu(self, phase: str) -> float | None:
        cpus = [r.cpu for r in self.runs if r.phase == phase]
        return statistics.median(cpus) if cpus else None

    def max_rss_mib(self, phase: str) -> float | None:
        """The largest peak RSS of PHASE's runs, MiB."""
        sizes = [r.max_rss_kib for r in self.runs if r.phase == phase and r.max_rss_kib]
        return max(sizes) / 1024 if sizes else None


def _per_host_median(values: Sequence[dict[str, int]]) -> tuple[float, int, int] | None:
    """(median, min, max) over hosts and runs of per-host counts."""
    flat = [v for per_host in values for v in per_host.values()]
    return (statistics.median(flat), min(flat), max(flat)) if flat else None


# -- the tools -----------------------------------------------------------------------------------
class Tool:
    name = ""
    #: keeps state of its own between runs (tectum): its no-op runs need that state to describe
    #: the hosts as they are (see ``Bench.settle``)
    stateful = False
    #: the phases it takes part in
    phases: tuple[str, ...] = PHASES

    def __init__(self, workdir: Path, fleet: Fleet, workload: Path, env: dict[str, str]) -> None:
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.fleet = fleet
        self.workload = workload
        self.env = dict(env)

    def prepare(self) -> None:
        """Write the inventory and configuration (untimed)."""

    def argv(self) -> list[str]:
        raise NotImplementedError

    def before_first(self) -> None:
        """Forget what earlier runs left on the controller (untimed)."""

    def before_run(self, log_dir: Path, label: str) -> None:
        """Called just before each timed run."""

    def after_run(self, run: Run) -> None:
        """Called just after each timed run (adds what only the tool can count)."""

    def version(self) -> str:
        raise NotImplementedError

    def settings(self) -> str:
        raise NotImplementedError

    def warm_up(self) -> None:
        """Untimed: load the tool's code once (bytecode, page cache)."""


class Tectum(Tool):
    name = "tectum"
    stateful = True

    def __init__(self, *args: Any, executable: str, extra: Sequence[str] = ()) -> None:
        super().__init__(*args)
        self.executable = executable
        self.extra = list(extra)
        self.command_log: Path | None = None

    @staticmethod
    def find_executable() -> str | None:
        """The ``tectum`` of this Python's environment (not a pyenv shim, not the bench venv)."""
        beside = Path(sys.executable).parent / "tectum"
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
        return shutil.which("tectum")

    def hosts(self) -> list[Any]:
        return self.fleet.hosts

    def prepare(self) -> None:
        hosts = self.hosts()
        first = hosts[0]
        lines = ["# generated by bench/fleet.py", "[defaults]", f"user = {json.dumps(first.user)}",
                 f"port = {first.port}", f"key = {json.dumps(str(first.key_path))}",
                 f"known_hosts = {json.dumps(str(first.known_hosts))}", ""]
        for h in hosts:
            lines += [f"[hosts.{h.name}]", f"address = {json.dumps(h.address)}"]
            if h.port != first.port:
                lines.append(f"port = {h.port}")
            if h.user != first.user:
                lines.append(f"user = {json.dumps(h.user)}")
            if str(h.key_path) != str(first.key_path):
                lines.append(f"key = {json.dumps(str(h.key_path))}")
            lines.append("")
        lines += ["[groups.bench]", f"hosts = {json.dumps([h.name for h in hosts])}", ""]
        (self.workdir / "inventory.toml").write_text("\n".join(lines))
        (self.workdir / "stack.py").write_text(STACK.format(workload=str(self.workload)))

    def argv(self) -> list[str]:
        return [self.executable, "apply", "--auto-approve", *self.extra, str(self.workdir)]

    def before_first(self) -> None:
        shutil.rmtree(self.workdir / ".tectum", ignore_errors=True)

    def before_run(self, log_dir: Path, label: str) -> None:
        self.command_log = log_dir / f"tectum-{label}.commands.jsonl"
        self.command_log.unlink(missing_ok=True)
        self.env["TECTUM_COMMAND_LOG"] = str(self.command_log)

    def after_run(self, run: Run) -> None:
        counts: dict[str, dict[str, int]] = {h.name: {"total": 0, "mutating": 0}
                                             for h in self.hosts()}
        if self.command_log is not None and self.command_log.exists():
            for line in self.command_log.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                entry = json.loads(line)
                host = str(entry.get("host"))
                slot = counts.setdefault(host, {"total": 0, "mutating": 0})
                slot["total"] += 1
                slot["mutating"] += 1 if entry.get("mutating") else 0
        run.commands = counts

    def version(self) -> str:
        proc = subprocess.run([self.executable, "--version"], capture_output=True, text=True,
                              env=self.env)
        out = (proc.stdout or proc.stderr).strip().splitlines()
        if proc.returncode == 0 and out:
            return out[0]
        from importlib import metadata

        try:
            return f"tectum {metadata.version('tectum')}"
        except metadata.PackageNotFoundError:
            return "tectum (version unknown)"

    def settings(self) -> str:
        return (f"{shlex.join(self.argv())}; inventory.toml + stack.py (apply_role to group "
                "bench); default parallelism; TECTUM_COMMAND_LOG set")


class TectumBefore(Tectum):
    """Another tectum (``--baseline PATH``: e.g. a wrapper running a snapshot of an earlier
    commit), run in the same rounds as ``tectum`` so a change is measured before and after on
    the same machine at the same time; reported as ``before`` with its ratio to ``tectum``."""

    name = "before"

    def warm_up(self) -> None:
        subprocess.run([self.executable, "--help"], capture_output=True, env=self.env)


class TectumScale(Tectum):
    """tectum over the first K hosts only (``--scale-from K``), in the no-op rounds: the growth
    of tectum's no-op from K hosts to the whole fleet, measured side by side."""

    phases = ("noop",)

    def __init__(self, *args: Any, count: int, executable: str,
                 extra: Sequence[str] = ()) -> None:
        self.name = f"tectum@{count}"
        self.count = count
        super().__init__(*args, executable=executable, extra=extra)

    def hosts(self) -> list[Any]:
        return self.fleet.hosts[:self.count]

    def settings(self) -> str:
        return f"as tectum, with an inventory of the first {self.count} hosts (no-op only)"


class Floor(Tool):
    """The first apply's floor: tectum's ``apt-get install`` of the package alone, on every host
    at once (``python3 bench/fleet.py --floor-run FILE``: one ssh per host, all in parallel)."""

    name = "floor"
    phases = ("first",)

    def prepare(self) -> None:
        commands = [self.fleet.ssh_command(h.name, FLOOR_SCRIPT) for h in self.fleet.hosts]
        (self.workdir / "commands.json").write_text(json.dumps(commands))

    def argv(self) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--floor-run",
                str(self.workdir / "commands.json")]

    def version(self) -> str:
        return "apt-get install alone"

    def settings(self) -> str:
        return (f"one ssh per host, all at once: {FLOOR_SCRIPT.split(' >')[0]} "
                "(tectum's command and environment)")


def floor_run(path: str) -> int:
    """Run every ssh command of the JSON list in PATH at once; 0 when all succeeded."""
    commands = json.loads(Path(path).read_text())
    procs = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for argv in commands]
    failed = 0
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            failed += 1
            sys.stderr.write(err.decode(errors="replace")[-500:])
    if failed:
        print(f"apt-get install failed on {failed} of {len(procs)} hosts", file=sys.stderr)
    return 1 if failed else 0


class Pyinfra(Tool):
    name = "pyinfra"

    def __init__(self, *args: Any, venv: Path) -> None:
        super().__init__(*args)
        self.venv = venv
        self.env["TECTUM_BENCH_WORKLOAD"] = str(self.workload)

    def prepare(self) -> None:
        hosts = self.fleet.hosts
        first = hosts[0]
        rows = [f"    ({h.name!r}, {{'ssh_hostname': {h.address!r}, 'ssh_port': {h.port}, "
                f"'ssh_user': {h.user!r}, 'ssh_key': {str(h.key_path)!r}}}),"
                for h in hosts]
        text = (
            '"""Generated by bench/fleet.py: the test fleet for pyinfra."""\n\n'
            "bench = (\n    [\n" + "\n".join("    " + r for r in rows) + "\n    ],\n"
            "    {\n"
            f"        'ssh_known_hosts_file': {str(first.known_hosts)!r},\n"
            "        'ssh_strict_host_key_checking': 'yes',\n"
            "        'ssh_allow_agent': False,\n"
            "        'ssh_look_for_keys': False,\n"
            "    },\n)\n")
        (self.workdir / "inventory.py").write_text(text)

    def argv(self) -> list[str]:
        return [str(self.venv / "bin" / "pyinfra"), "-y", str(self.workdir / "inventory.py"),
                str(PEER_DIR / "deploy.py")]

    def version(self) -> str:
        proc = subprocess.run([str(self.venv / "bin" / "pyinfra"), "--version"],
                              capture_output=True, text=True, env=self.env)
        return (proc.stdout or proc.stderr).strip().splitlines()[0]

    def settings(self) -> str:
        parallel = min(20 * (os.cpu_count() or 1), len(self.fleet.hosts))
        return (f"pyinfra -y inventory.py bench/fleet/deploy.py; default parallel = {parallel} "
                "(min(20 x CPUs, hosts)); paramiko, strict host key checking")

    def warm_up(self) -> None:
        subprocess.run([str(self.venv / "bin" / "pyinfra"), "--help"], capture_output=True,
                       env=self.env)


class Ansible(Tool):
    name = "ansible"

    def __init__(self, *args: Any, venv: Path) -> None:
        super().__init__(*args)
        self.venv = venv
        self.forks = len(self.fleet.hosts)
        self.env["ANSIBLE_CONFIG"] = str(self.workdir / "ansible.cfg")
        self.env["ANSIBLE_HOME"] = str(self.workdir / "home")
        if "UTF-8" not in (self.env.get("LC_ALL") or self.env.get("LANG") or "").upper():
            self.env["LC_ALL"] = "C.UTF-8"  # ansible-core refuses any other locale encoding

    def prepare(self) -> None:
        hosts = self.fleet.hosts
        first = hosts[0]
        ssh_common = (f"-o UserKnownHostsFile={first.known_hosts} "
                      "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes "
                      "-o IdentitiesOnly=yes")
        cfg = f"""# generated by bench/fleet.py
[defaults]
inventory = {self.workdir / 'inventory.ini'}
forks = {self.forks}
host_key_checking = True
gathering = explicit
interpreter_python = /usr/bin/python3
retry_files_enabled = False
local_tmp = {self.workdir / 'home' / 'tmp'}

[ssh_connection]
pipelining = True
ssh_common_args = {ssh_common}
control_path_dir = {self.workdir / 'cp'}
"""
        (self.workdir / "ansible.cfg").write_text(cfg)
        lines = ["# generated by bench/fleet.py", "[bench]"]
        lines += [f"{h.name} ansible_host={h.address} ansible_port={h.port} ansible_user={h.user} "
                  f"ansible_ssh_private_key_file={h.key_path}" for h in hosts]
        (self.workdir / "inventory.ini").write_text("\n".join(lines) + "\n")

    def argv(self) -> list[str]:
        return [str(self.venv / "bin" / "ansible-playbook"), "-e", f"workload={self.workload}",
                str(PEER_DIR / "playbook.yml")]

    def version(self) -> str:
        proc = subprocess.run([str(self.venv / "bin" / "ansible-playbook"), "--version"],
                              capture_output=True, text=True, env=self.env)
        return (proc.stdout or proc.stderr).strip().splitlines()[0]

    def settings(self) -> str:
        return (f"ansible-playbook bench/fleet/playbook.yml; forks = {self.forks}, pipelining, "
                "gather_facts: false, linear strategy, interpreter_python set, OpenSSH "
                "ControlPersist=60s (default), strict host key checking")

    def warm_up(self) -> None:
        subprocess.run([*self.argv(), "--syntax-check"], capture_output=True, env=self.env)


# -- the benchmark -------------------------------------------------------------------------------
_CHILD: subprocess.Popen[bytes] | None = None


def _kill_child() -> None:
    """Kill the running tool process and what it started (its own process group)."""
    if _CHILD is not None and _CHILD.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(_CHILD.pid, signal.SIGKILL)


def _on_sigterm(signum: int, frame: Any) -> None:
    _kill_child()
    raise SystemExit(128 + signum)


class Bench:
    def __init__(self, fleet: Fleet, workdir: Path, verbose: bool, apt_cache: str = "clean",
                 packages: Sequence[str] = HOST_PACKAGES) -> None:
        self.fleet = fleet
        self.packages = list(packages)
        self.reset_script = RESET_SCRIPT.replace("@APT_CACHE@", APT_CACHE_MODES[apt_cache])
        self.workdir = workdir
        self.verbose = verbose
        self.names = [h.name for h in fleet.hosts]
        self.logs = workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.check, self.expected = check_script()
        self.baseline: dict[str, str] = {}
        self.sshd_verbose = False
        self.setup_s = 0.0
        self.seq = 0  # timed runs so far
        #: stateful tools whose state describes the hosts as they are (see ``settle``)
        self.in_sync: set[str] = set()
        #: untimed runs made between the timed ones: (tool, why, wall seconds)
        self.untimed: list[tuple[str, str, float]] = []

    def say(self, text: str) -> None:
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    # -- remote helpers ----------------------------------------------------------------------
    def on_all(self, script: str | Callable[[str], str], *, timeout: float = 300,
               workers: int = 20) -> dict[str, subprocess.CompletedProcess[str]]:
        def one(name: str) -> subprocess.CompletedProcess[str]:
            text = script(name) if callable(script) else script
            return self.fleet.run(name, text, timeout=timeout)

        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(self.names)))) as pool:
            return dict(zip(self.names, pool.map(one, self.names)))

    @staticmethod
    def _failed(results: dict[str, subprocess.CompletedProcess[str]], what: str) -> None:
        bad = {n: r for n, r in results.items() if r.returncode != 0}
        if bad:
            name, r = next(iter(bad.items()))
            raise FleetError(f"{what} failed on {len(bad)} host(s), e.g. {name} (exit "
                             f"{r.returncode}): {(r.stderr or r.stdout).strip()[-1500:]}")

    # -- setup, reset, checks ------------------------------------------------------------------
    def setup(self) -> None:
        started = time.monotonic()
        self.say(f"setup: install {' '.join(self.packages)}; sshd LogLevel VERBOSE (untimed)")
        self._failed(self.on_all(SETUP_SCRIPT.replace("@PACKAGES@", " ".join(self.packages)),
                                 timeout=900, workers=10), "host setup")
        self.fleet.restart_hosts(self.names)  # sshd reads LogLevel when it starts
        mark = len(self.fleet.log(self.names[0]))
        self.fleet.run(self.names[0], "true", check=True)
        self.sshd_verbose = "Starting session:" in self.fleet.log(self.names[0])[mark:]
        if not self.sshd_verbose:
            self.say("warning: sshd does not log sessions; SSH session counts are unavailable")
        self._failed(self.on_all(self.reset_script), "reset")
        prints = self.on_all(FINGERPRINT_SCRIPT)
        self._failed(prints, "fingerprint")
        for name, r in prints.items():
            if "present " in r.stdout or "process " in r.stdout or "service running" in r.stdout:
                raise FleetError(f"{name} is not fresh after setup:\n{r.stdout}")
            self.baseline[name] = r.stdout
        self.setup_s = time.monotonic() - started

    def reset(self) -> None:
        """Put every host back to the fresh state and prove it (untimed)."""
        self._failed(self.on_all(self.reset_script), "reset")
        prints = self.on_all(FINGERPRINT_SCRIPT)
        self._failed(prints, "fingerprint")
        for name, r in prints.items():
            if r.stdout != self.baseline[name]:
                raise FleetError(f"{name} is not fresh after the reset; expected\n"
                                 f"{self.baseline[name]}got\n{r.stdout}")

    def mismatches(self) -> dict[str, list[str]]:
        """Per host, the lines of the state report that differ from the desired state."""
        out = {}
        for name, r in self.on_all(self.check).items():
            got = [line.rstrip() for line in r.stdout.splitlines()]
            if r.returncode != 0 and not got:
                out[name] = [f"check failed (exit {r.returncode}): {r.stderr.strip()[-300:]}"]
                continue
            missing = sorted(set(self.expected) - set(got))
            extra = sorted(set(got) - set(self.expected))
            out[name] = [f"- {x}" for x in missing] + [f"+ {x}" for x in extra]
        return out

    def verify(self, what: str) -> None:
        bad = {n: m for n, m in self.mismatches().items() if m}
        if bad:
            name, lines = next(iter(bad.items()))
            raise BenchError(f"after {what}: {len(bad)} host(s) are not in the desired state, "
                             f"e.g. {name}:\n  " + "\n  ".join(lines[:12]))

    def ctimes(self) -> dict[str, set[str]]:
        results = self.on_all(CTIME_SCRIPT)
        return {n: set(r.stdout.splitlines()) for n, r in results.items()}

    def damage(self, rep: int) -> None:
        """Overwrite N_DAMAGE data files per host by hand (different ones per rep and host)."""
        paths = [p for _, p, _ in file_specs()]

        def script(name: str) -> str:
            picked = random.Random(f"{rep}/{name}").sample(paths, N_DAMAGE)
            return "set -e\n" + "\n".join(
                f"printf 'changed by hand (repetition {rep})\\n' > {shlex.quote(p)}"
                for p in picked) + "\n"

        self._failed(self.on_all(script), "changing files by hand")
        for name, lines in self.mismatches().items():
            changed = [x for x in lines if x.startswith("- ") and len(x.split()[1]) == 64]
            if len(changed) != N_DAMAGE or len(lines) != 2 * N_DAMAGE:
                raise FleetError(f"{name}: expected {N_DAMAGE} changed files after the damage, "
                                 f"found:\n  " + "\n  ".join(lines[:30]))

    # -- timed runs ------------------------------------------------------------------------------
    def timed(self, tool: Tool, phase: str, label: str, rep: int = 0) -> Run:
        global _CHILD
        tool.before_run(self.logs, label)
        marks = {n: len(self.fleet.log(n)) for n in self.names}
        log = self.logs / f"{tool.name}-{label}.log"
        with open(log, "wb") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(tool.argv(), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=tool.env, cwd=tool.workdir,
                                    start_new_session=True)
            _CHILD = proc
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            except BaseException:  # Ctrl-C: stop the tool too
                _kill_child()
                raise
            wall = time.perf_counter() - start
            proc.returncode = code = os.waitstatus_to_exitcode(status)
            _CHILD = None
        connections, sessions = {}, {}
        for n in [h.name for h in tool.hosts()] if isinstance(tool, Tectum) else self.names:
            text = self.fleet.log(n)[marks[n]:]
            connections[n] = text.count("Accepted publickey for")
            sessions[n] = text.count("Starting session:")
        run = Run(phase, wall, usage.ru_utime + usage.ru_stime, connections, sessions, rep=rep,
                  max_rss_kib=int(usage.ru_maxrss))
        tool.after_run(run)
        if code != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise BenchError(f"{tool.name} {label} exited {code} after {wall:.1f}s; the end of "
                             f"its output ({log}):\n{tail}")
        return run

    def _wrote_hosts(self, tool: Tool | None) -> None:
        """The hosts were changed (by TOOL, or by hand when None): only TOOL's state, if it
        keeps one, still describes them."""
        self.in_sync = {tool.name} if tool is not None and tool.stateful else set()

    def run_once(self, tool: Tool, phase: str, rep: int) -> Run:
        """One timed run of PHASE (repetition REP) by TOOL, with the untimed work around it:
        reset before a first apply, damage before a repair, the state check after."""
        label = f"{phase}-{rep + 1}"
        if phase == "first" and isinstance(tool, Floor):
            self.reset()
            self._wrote_hosts(None)
            run = self.timed(tool, phase, label, rep)
            self._wrote_hosts(None)
            installed = self.on_all(f"dpkg-query -W -f='${{db:Status-Abbrev}}' {PACKAGE}")
            bad = [n for n, r in installed.items() if not r.stdout.startswith("ii")]
            if bad:
                raise BenchError(f"floor: {PACKAGE} is not installed on {len(bad)} host(s), "
                                 f"e.g. {bad[0]}")
        elif phase == "first":
            self.reset()
            self._wrote_hosts(None)
            tool.before_first()
            run = self.timed(tool, phase, label, rep)
            self._wrote_hosts(tool)
            self.verify(f"{tool.name} first apply")
        elif phase == "noop":
            if tool.stateful and tool.name not in self.in_sync:
                self.settle(tool)
            before = self.ctimes()
            run = self.timed(tool, phase, label, rep)
            self.verify(f"{tool.name} no-op run")
            after = self.ctimes()
            run.touched = {n: len(after[n] - before[n]) for n in self.names}
        else:
            self.damage(rep)
            self._wrote_hosts(None)
            run = self.timed(tool, phase, label, rep)
            self._wrote_hosts(tool)
            self.verify(f"{tool.name} repair")
        self.seq += 1
        run.seq = self.seq
        return run

    def untimed_apply(self, tool: Tool, why: str) -> None:
        """An apply by TOOL outside the measurements (its time is reported, not counted)."""
        label = f"untimed-{len(self.untimed) + 1}"
        run = self.timed(tool, "untimed", label)
        self._wrote_hosts(tool)
        self.verify(f"{tool.name} untimed apply ({why})")
        self.untimed.append((tool.name, why, run.wall))
        self.say(f"  {tool.name:<8} untimed apply ({why}): {run.wall:7.2f} s wall")

    def settle(self, tool: Tool) -> None:
        """Bring a stateful tool's state in line with hosts another tool built (untimed). The
        hosts were in the desired state already (checked after every run), so the states of
        the tools in sync stay so."""
        in_sync = set(self.in_sync)
        self.untimed_apply(tool, "settle: its state after another tool built the hosts")
        self.in_sync |= in_sync

    def restore(self, tools: Sequence[Tool]) -> None:
        """After a failed run: the desired state again on every host, by the first of TOOLS
        that can (untimed); BenchError when none can."""
        if not any(self.mismatches().values()):
            return
        for tool in tools:
            try:
                self.untimed_apply(tool, "restore after a failed run")
                return
            except (BenchError, FleetError, OSError, subprocess.SubprocessError) as exc:
                self.say(f"  {tool.name}: could not restore the hosts: "
                         f"{str(exc).splitlines()[0]}")
        raise BenchError("the hosts could not be brought back to the desired state")

    def run_all(self, tools: Sequence[Tool], results: dict[str, ToolResult],
                reps: dict[str, int], order: str = "interleaved",
                on_run: Callable[[], None] = lambda: None) -> None:
        """Every phase of every tool into RESULTS, in ORDER (``interleaved``: round-robin per
        phase; ``grouped``: one tool after the other); ON_RUN after each run (saves progress)."""
        ready: list[Tool] = []
        for tool in tools:
            result = results.setdefault(tool.name, ToolResult(tool.name))
            try:
                tool.prepare()
                result.version = tool.version()
                result.settings = tool.settings()
                tool.warm_up()
                ready.append(tool)
            except (OSError, subprocess.SubprocessError, IndexError) as exc:
                self._fail(tool, result, exc)
        if order == "grouped":
            schedule = [(tool, phase, rep) for tool in ready for phase in PHASES
                        for rep in range(reps[phase]) if phase in tool.phases]
        else:
            schedule = [(tool, phase, rep) for phase in PHASES for rep in range(reps[phase])
                        for tool in ready if phase in tool.phases]
        failed: set[str] = set()
        for tool, phase, rep in schedule:
            if tool.name in failed:
                continue
            result = results[tool.name]
            try:
                run = self.run_once(tool, phase, rep)
            except (BenchError, FleetError, OSError, subprocess.SubprocessError) as exc:
                failed.add(tool.name)
                self._fail(tool, result, exc)
                on_run()
                if phase != "first":  # the next run expects the desired state
                    try:
                        self.restore([t for t in ready if t.name not in failed
                                      and not isinstance(t, (Floor, TectumScale))])
                    except (BenchError, FleetError) as again:
                        for other in ready:
                            if other.name not in failed:
                                results[other.name].error = f"not run to the end: {again}"
                        print(f"\nstopped: {again}\n", file=sys.stderr, flush=True)
                        break
                continue
            result.runs.append(run)
            self._progress(tool, run, rep, reps[phase])
            on_run()
        on_run()

    @staticmethod
    def _fail(tool: Tool, result: ToolResult, exc: BaseException) -> None:
        result.error = str(exc) or type(exc).__name__
        print(f"\n{tool.name}: FAILED — {exc}\n", file=sys.stderr, flush=True)

    def _progress(self, tool: Tool, run: Run, rep: int, reps: int) -> None:
        sessions = _per_host_median([run.sessions]) if self.sshd_verbose else None
        extra = f", {sessions[0]:g} SSH sessions/host" if sessions else ""
        if run.commands:
            med = _per_host_median([{n: c["total"] for n, c in run.commands.items()}])
            if med:
                extra += f", {med[0]:g} logged commands/host"
        if run.touched is not None and any(run.touched.values()):
            extra += f", touched {max(run.touched.values())} objects on a host"
        self.say(f"  {tool.name:<8} {run.phase:<6} {rep + 1}/{reps}: {run.wall:7.2f} s wall, "
                 f"{run.cpu:6.2f} s cpu{extra}")


# -- venv ----------------------------------------------------------------------------------------
def ensure_venv(venv: Path, tools: Sequence[str]) -> None:
    needed = {"pyinfra": "pyinfra", "ansible": "ansible-playbook"}
    if all((venv / "bin" / needed[t]).exists() for t in tools if t in needed):
        return
    print(f"installing {' '.join(PEER_PACKAGES)} into {venv} (pip) ...", file=sys.stderr,
          flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                           *PEER_PACKAGES], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"pip install {' '.join(PEER_PACKAGES)} failed:\n"
                         f"{(proc.stderr or proc.stdout)[-3000:]}")


def write_workload(workdir: Path) -> Path:
    """The local source files and workload.json that all three tools read."""
    files_dir = workdir / "files"
    entries = []
    for name, path, text in file_specs():
        src = files_dir / path.removeprefix(ROOT + "/")
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(text, encoding="utf-8")
        entries.append({"name": name, "src": str(src), "dest": path})
    conf_src = files_dir / "service.conf"
    conf_src.write_text(SERVICE_CONF_CONTENT, encoding="utf-8")
    doc = {"dirs": [{"name": n, "path": p} for n, p in dir_specs()], "files": entries,
           "package": PACKAGE, "user": USER, "service": SERVICE,
           "service_conf": {"src": str(conf_src), "dest": SERVICE_CONF}}
    out = workdir / "workload.json"
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return out


# -- report --------------------------------------------------------------------------------------
def summarize(results: dict[str, ToolResult], reps: dict[str, int],
              n_hosts: int | None = None) -> dict[str, Any]:
    """Ratios to tectum: ``ratios`` (peer's median / tectum's median, what the targets judge)
    and ``round_ratios`` ([min, max] of peer's run k / tectum's run k over the rounds k);
    ``scale``: tectum's first apply over its floor, its no-op growth from K to N hosts, and
    the scale targets (issue 12 item 7)."""
    tectum = results.get("tectum")
    ratios: dict[str, dict[str, float | None]] = {}
    round_ratios: dict[str, dict[str, list[float] | None]] = {}
    for phase in PHASES:
        ratios[phase] = {}
        round_ratios[phase] = {}
        t = tectum.median(phase) if tectum else None
        t_runs = tectum.by_rep(phase) if tectum else {}
        for peer in (*PEERS, TectumBefore.name):
            p = results[peer].median(phase) if peer in results else None
            ratios[phase][peer] = p / t if p is not None and t else None
            p_runs = results[peer].by_rep(phase) if peer in results else {}
            paired = [p_runs[k] / t_runs[k] for k in sorted(set(p_runs) & set(t_runs))
                      if t_runs[k] > 0]
            round_ratios[phase][peer] = [min(paired), max(paired)] if paired else None
    targets = []
    for (phase, peer), need in TARGETS.items():
        got = ratios[phase].get(peer)
        targets.append({"phase": phase, "peer": peer, "at_least": need, "ratio": got,
                        "pass": None if got is None else got >= need})
    return {"reps": reps, "ratios": ratios, "round_ratios": round_ratios, "targets": targets,
            "scale": scale_summary(results, ratios, n_hosts)}


def scale_summary(results: dict[str, ToolResult], ratios: dict[str, dict[str, float | None]],
                  n_hosts: int | None) -> dict[str, Any]:
    """tectum's first apply / the floor; tectum's no-op at N hosts / at K hosts against N / K;
    and the targets of issue 12 item 7."""
    tectum = results.get("tectum")
    floor = results.get("floor")
    out: dict[str, Any] = {"first_over_floor": None, "floor_s": None, "growth": None,
                           "scale_from": None, "hosts_ratio": None, "targets": []}
    if tectum is not None and floor is not None:
        t, f = tectum.median("first"), floor.median("first")
        out["floor_s"] = f
        out["first_over_floor"] = t / f if t and f else None
    scaled = [r for name, r in results.items() if name.startswith("tectum@")]
    if tectum is not None and scaled and n_hosts:
        k = int(scaled[0].name.split("@", 1)[1])
        big, small = tectum.median("noop"), scaled[0].median("noop")
        out["scale_from"] = k
        out["hosts_ratio"] = n_hosts / k
        out["growth"] = big / small if big and small else None
    if tectum is not None:
        converged = [r.name for r in results.values() if r.name in ("tectum", "floor")
                     or r.name.startswith("tectum@")]
        errors = [name for name in converged if results[name].error]
        out["targets"].append({"what": "tectum converges every host on every first apply",
                               "pass": None if not tectum.walls("first") and not errors
                               else not errors})
        if n_hosts and n_hosts >= 100:
            got = ratios["noop"].get("pyinfra")
            out["targets"].append({"what": "no-op >= 25x faster than pyinfra (100+ hosts)",
                                   "ratio": got, "pass": None if got is None else got >= 25})
        if out["growth"] is not None:
            out["targets"].append({"what": f"no-op grows at most linearly from "
                                   f"{out['scale_from']} to {n_hosts} hosts",
                                   "ratio": out["growth"],
                                   "pass": out["growth"] <= out["hosts_ratio"]})
    return out


def _phases_of(name: str) -> tuple[str, ...]:
    """The phases a tool of that name takes part in."""
    if name == Floor.name:
        return Floor.phases
    if name.startswith("tectum@"):
        return TectumScale.phases
    return PHASES


def _fmt(value: float | None, unit: str = " s") -> str:
    if value is None:
        return "—"
    return f"{value:.2f}{unit}" if value < 100 else f"{value:.1f}{unit}"


def print_report(results: dict[str, ToolResult], summary: dict[str, Any], n_hosts: int,
                 sshd_verbose: bool, load: tuple[Sequence[float], Sequence[float]],
                 apt_cache: str = "clean", order: str = "interleaved",
                 untimed: Sequence[Sequence[Any]] = ()) -> None:
    names = list(results)
    print(f"\ntectum fleet benchmark — {n_hosts} hosts, {RESOURCES} objects per host; whole "
          "tool process, wall seconds")
    if order == "grouped":
        print("order: grouped — every phase of one tool, then the next tool")
    else:
        print(f"order: interleaved — within each phase, rounds of one run per tool "
              f"({', '.join(names)}, {names[0] if names else ''}, ...)")
    print("apt's binary caches before each first apply: " + (
        "removed (--apt-cache clean)" if apt_cache == "clean" else "kept (--apt-cache kept)"))
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs (the hosts run on the same "
          "CPUs as the tools)\n")
    for name in names:
        r = results[name]
        print(f"  {name:<9} {r.version or '?'}\n           {r.settings}")
    print()
    tectum = results.get("tectum")
    head = (f"{'phase':<7} {'tool':<8} {'runs':>4} {'median':>9} {'min–max':>17}   "
            "vs tectum: median (per round)")
    print(head)
    print("-" * len(head))
    for phase in PHASES:
        shown = False
        for name in names:
            r = results[name]
            walls = r.walls(phase)
            if not walls and phase not in _phases_of(name):
                continue
            spread = r.spread(phase)
            cell = ""
            if name != "tectum" and tectum is not None:
                ratio = summary["ratios"][phase].get(name)
                per_round = (summary.get("round_ratios") or {}).get(phase, {}).get(name)
                if ratio is not None:
                    cell = f"{ratio:.2f}x"
                    if per_round:
                        cell += f" ({per_round[0]:.2f}–{per_round[1]:.2f}x)"
                elif walls:
                    cell = "—"
            rng = f"{_fmt(spread[0], '')}–{_fmt(spread[1])}" if spread else "—"
            print(f"{phase if not shown else '':<7} {name:<8} {len(walls):>4} "
                  f"{_fmt(r.median(phase)):>9} {rng:>17}   {cell}".rstrip())
            shown = True
    if tectum is not None and len(names) > 1:
        print("vs tectum: the peer's median / tectum's median, how many times faster tectum is; "
              "(per round): the range of the peer's run k / tectum's run k")
    if untimed:
        print("\nuntimed applies between the measurements (not counted):")
        for tool, why, wall in untimed:
            print(f"  {tool:<8} {_fmt(wall):>9}  {why}")
    print("\ncontroller CPU seconds (user + system of the tool process and its children), "
          "median:")
    for phase in PHASES:
        print(f"  {phase:<7}" + "".join(f"  {n}: {_fmt(results[n].median_cpu(phase))}"
                                        for n in names if phase in _phases_of(n)))

    print("\ncontroller memory (peak RSS of the tool's process or its largest child, MiB), "
          "largest run:")
    for phase in PHASES:
        cells = [f"  {n}: {_fmt(results[n].max_rss_mib(phase), ' MiB')}" for n in names
                 if results[n].max_rss_mib(phase) is not None]
        if cells:
            print(f"  {phase:<7}" + "".join(cells))
    scale = summary.get("scale") or {}
    if scale.get("first_over_floor") is not None:
        print(f"\nfirst apply against its floor ({PACKAGE}'s apt-get install alone on all hosts "
              f"at once, median {_fmt(scale['floor_s'])}): tectum takes "
              f"{scale['first_over_floor']:.2f}x the floor")
    if scale.get("growth") is not None:
        verdict = ("at most linear" if scale["growth"] <= scale["hosts_ratio"]
                   else "WORSE than linear")
        print(f"tectum's no-op from {scale['scale_from']} to {n_hosts} hosts "
              f"({scale['hosts_ratio']:.1f}x the hosts): {scale['growth']:.2f}x the time "
              f"({verdict})")

    print("\nSSH per host per run (median over hosts and runs, [min–max]):")
    if not sshd_verbose:
        print("  (sshd did not log sessions: not available)")
    for name in names:
        r = results[name]
        for phase in PHASES:
            runs = [x for x in r.runs if x.phase == phase]
            if not runs:
                continue
            parts = []
            conn = _per_host_median([x.connections for x in runs])
            if conn:
                parts.append(f"connections {conn[0]:g} [{conn[1]}–{conn[2]}]")
            if sshd_verbose:
                ses = _per_host_median([x.sessions for x in runs])
                if ses:
                    parts.append(f"sessions {ses[0]:g} [{ses[1]}–{ses[2]}]")
            cmds = [x.commands for x in runs if x.commands]
            if cmds:
                tot = _per_host_median([{h: c["total"] for h, c in m.items()} for m in cmds])
                mut = _per_host_median([{h: c["mutating"] for h, c in m.items()} for m in cmds])
                if tot and mut:
                    parts.append(f"logged commands {tot[0]:g} [{tot[1]}–{tot[2]}], mutating "
                                 f"{mut[0]:g} [{mut[1]}–{mut[2]}] (TECTUM_COMMAND_LOG)")
            touched = [x.touched for x in runs if x.touched is not None]
            if touched:
                most = max((max(t.values()) for t in touched if t), default=0)
                parts.append(f"objects touched: {most}")
            print(f"  {name:<8} {phase:<7} " + "; ".join(parts))
    print("  sessions = SSH channels sshd started (commands and file transfers), from its log")

    print("\ntargets (issue #3):")
    for t in summary["targets"]:
        need = f"{t['phase']}: tectum >= {t['at_least']:g}x faster than {t['peer']}"
        if t["pass"] is None:
            print(f"  {need:<46} not measured")
        else:
            print(f"  {need:<46} {'PASS' if t['pass'] else 'FAIL'} ({t['ratio']:.1f}x)")
    if scale.get("targets"):
        print("targets (issue 12, item 7: scale):")
    for t in scale.get("targets", []):
        ratio = f" ({t['ratio']:.2f}x)" if t.get("ratio") is not None else ""
        verdict = "not measured" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")
        print(f"  {t['what']:<60} {verdict}{ratio}")
    for name in names:
        error = results[name].error
        if error:
            first_line = error.splitlines()[0]
            print(f"  {name} FAILED: {first_line}")
    print(f"\nload average (1 min): {load[0][0]:.2f} before, {load[1][0]:.2f} after; other work "
          "on the machine inflates wall times.")


def report_from_json(path: str) -> int:
    """Print the report of a results file written by ``--json`` (also a partial one)."""
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    results = {}
    for name, t in doc["tools"].items():
        r = ToolResult(name, t["version"], t["settings"], error=t["error"])
        seen: dict[str, int] = {}
        for x in t["runs"]:
            # results written before the interleaving have no "rep": the runs of a phase are
            # in order
            rep = x.get("rep", seen.get(x["phase"], 0))
            seen[x["phase"]] = rep + 1
            r.runs.append(Run(x["phase"], x["wall_s"], x["cpu_s"], x["ssh_connections"],
                              x["ssh_sessions"], x.get("commands"), x.get("touched"), rep,
                              x.get("seq", 0), x.get("max_rss_kib", 0)))
        results[name] = r
    summary = summarize(results, doc["reps"], doc["hosts"])
    load = doc["loadavg"]
    print_report(results, summary, doc["hosts"], doc["sshd_sessions_logged"],
                 (load["before"], load.get("after") or load["now"]), doc.get("apt_cache", "clean"),
                 doc.get("order", "grouped"), doc.get("untimed_applies", []))
    if doc.get("partial"):
        print("(partial results: the run was cut short)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=20, help="test hosts (default 20)")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help=f"comma-separated, in run order (default {','.join(TOOLS)})")
    parser.add_argument("--repeat", type=int, default=5, help="no-op runs per tool (default 5)")
    parser.add_argument("--repair-repeat", type=int, default=3,
                        help="repair runs per tool (default 3)")
    parser.add_argument("--first-repeat", type=int, default=3,
                        help="first applies per tool, each on freshly reset hosts (default 3)")
    parser.add_argument("--order", choices=("interleaved", "grouped"), default="interleaved",
                        help="interleaved (default): round-robin over the tools within each "
                             "phase; grouped: every phase of one tool, then the next")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV,
                        help=f"the peers' virtual environment (default {DEFAULT_VENV})")
    parser.add_argument("--tectum", metavar="PATH",
                        help="the tectum executable (default: the one beside this Python)")
    parser.add_argument("--baseline", metavar="PATH",
                        help="also run this tectum executable (e.g. a wrapper that runs a "
                        "snapshot of an earlier commit with PYTHONPATH) as tool 'before', in "
                        "the same rounds as tectum: a change measured before and after")
    parser.add_argument("--tectum-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `tectum apply` (repeatable)")
    parser.add_argument("--json", dest="json_path", metavar="FILE",
                        help="also write the results as JSON to FILE")
    parser.add_argument("--apt-cache", choices=sorted(APT_CACHE_MODES), default="clean",
                        help="before each first apply: remove apt's binary caches with the "
                             "downloads (clean, default) or keep them (kept)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (projects, inventories, logs)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--report", metavar="FILE",
                        help="only print the report of a results file written by --json")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="do not time the first apply's floor (the package's apt-get "
                             "install alone on all hosts at once)")
    parser.add_argument("--scale-from", type=int, metavar="K",
                        help="also time tectum's no-op over the first K hosts (default 20 "
                             "when --hosts is larger; 0: not)")
    parser.add_argument("--floor-run", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_run:
        return floor_run(args.floor_run)
    if args.report:
        return report_from_json(args.report)
    scale_from = args.scale_from if args.scale_from is not None else (
        20 if args.hosts > 20 else 0)
    if scale_from < 0 or scale_from >= args.hosts and scale_from:
        parser.error("--scale-from must be smaller than --hosts")
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if not tools or any(t not in TOOLS for t in tools) or len(set(tools)) != len(tools):
        parser.error(f"--tools: a comma-separated subset of {','.join(TOOLS)}")
    if args.hosts < 1 or args.repeat < 1 or args.repair_repeat < 1 or args.first_repeat < 1:
        parser.error("--hosts and the repetitions must be at least 1")
    if min(args.repeat, args.repair_repeat, args.first_repeat) < 3:
        print("warning: fewer than 3 repetitions of a phase: its median and spread say little",
              file=sys.stderr)
    if os.geteuid() != 0:
        parser.error("the fleet harness needs root")
    tectum_exe = None
    if "tectum" in tools:
        tectum_exe = args.tectum or Tectum.find_executable()
        if tectum_exe is None:
            parser.error("no tectum executable found (pip install -e . or --tectum PATH)")
    if any(t in PEERS for t in tools):
        ensure_venv(args.venv, tools)

    signal.signal(signal.SIGTERM, _on_sigterm)
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    workdir = Path(tempfile.mkdtemp(prefix="tectum-fleet-bench-"))
    workload = write_workload(workdir)
    results: dict[str, ToolResult] = {}
    reps = {"first": args.first_repeat, "noop": args.repeat, "repair": args.repair_repeat}
    load_before = os.getloadavg()
    verbose = not args.quiet
    started = time.monotonic()
    fleet_timings: dict[str, float] = {}
    setup_s = 0.0
    sshd_verbose = False
    interrupted = False
    bench: Bench | None = None

    def save(partial: bool) -> None:
        """Write the JSON results (also after every run, so a cut-short run keeps them)."""
        if not args.json_path:
            return
        summary = summarize(results, reps, args.hosts)
        doc = {
            "benchmark": "fleet", "partial": partial, "hosts": args.hosts,
            "apt_cache": args.apt_cache, "order": args.order, "tool_order": tools,
            "resources_per_host": RESOURCES,
            "workload": {"dirs": 1 + N_DIRS, "files": N_DIRS * FILES_PER_DIR, "package": PACKAGE,
                         "user": USER["name"], "service": SERVICE,
                         "service_conf": SERVICE_CONF, "damaged_files_per_repair": N_DAMAGE},
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "setup_s": setup_s, "fleet_timings": fleet_timings,
            "total_s": time.monotonic() - started, "sshd_sessions_logged": sshd_verbose,
            "loadavg": {"before": load_before, "now": os.getloadavg()},
            "tools": {name: {"version": r.version, "settings": r.settings, "error": r.error,
                             "median_s": {p: r.median(p) for p in PHASES},
                             "spread_s": {p: r.spread(p) for p in PHASES},
                             "median_cpu_s": {p: r.median_cpu(p) for p in PHASES},
                             "runs": [run.doc() for run in r.runs]}
                      for name, r in results.items()},
            "untimed_applies": [list(u) for u in bench.untimed] if bench else [],
            **summary,
        }
        tmp = f"{args.json_path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
        os.replace(tmp, args.json_path)

    try:
        # a large fleet boots (and reboots after the setup) all at once: give it time
        with Fleet(args.hosts, apt=True, boot_timeout=max(30.0, 1.0 * args.hosts)) as fleet:
            fleet_timings = dict(fleet.timings)
            packages = [*HOST_PACKAGES, *(ANSIBLE_PACKAGES if "ansible" in tools else ())]
            bench = Bench(fleet, workdir, verbose, args.apt_cache, packages)
            bench.setup()
            setup_s, sshd_verbose = bench.setup_s, bench.sshd_verbose
            bench.say(f"setup done in {setup_s:.1f} s; work directory {workdir}; "
                      f"order {args.order}")
            runners: list[Tool] = []
            for name in tools:
                if name == "tectum":
                    assert tectum_exe is not None
                    runners.append(Tectum(workdir, fleet, workload, env, executable=tectum_exe,
                                          extra=args.tectum_arg))
                    if args.baseline:
                        runners.append(TectumBefore(workdir, fleet, workload, env,
                                                    executable=args.baseline,
                                                    extra=args.tectum_arg))
                    if scale_from:
                        runners.append(TectumScale(workdir, fleet, workload, env,
                                                   count=scale_from, executable=tectum_exe,
                                                   extra=args.tectum_arg))
                elif name == "pyinfra":
                    runners.append(Pyinfra(workdir, fleet, workload, env, venv=args.venv))
                else:
                    runners.append(Ansible(workdir, fleet, workload, env, venv=args.venv))
            if args.floor:
                runners.append(Floor(workdir, fleet, workload, env))
            bench.run_all(runners, results, reps, args.order, on_run=lambda: save(partial=True))
    except FleetError as exc:
        print(f"the test fleet failed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        interrupted = True
        print("\ninterrupted: the report below has the runs finished so far", file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    summary = summarize(results, reps, args.hosts)
    print_report(results, summary, args.hosts, sshd_verbose, (load_before, load_after),
                 args.apt_cache, args.order, bench.untimed if bench else ())
    save(partial=interrupted)
    ok = not interrupted and all(r.error is None for r in results.values()) and \
        all(t["pass"] is not False for t in summary["targets"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
