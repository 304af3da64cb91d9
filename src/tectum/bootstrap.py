"""``tectum bootstrap HOST...``: install tectum and its agent as a service on inventory hosts.

For each host (reached over SSH with tectum's own :class:`~tectum.providers.host.ssh.SSHConnector`
and the inventory's connection settings, exactly as the ``host`` provider reaches it), in this
order, each step only when it is needed:

1. ``python3``, ``python3-venv`` and ``git`` (the agent fetches with the git CLI) from apt,
   when ``dpkg-query`` does not find them installed (``apt-get update`` and a second try when
   the first install fails);
2. a virtual environment ``/opt/tectum/venv`` (``python3 -m venv``);
3. tectum itself, from a wheel built on the controller (:func:`build_wheels`: ``pip wheel
   --no-deps`` of the checkout this tectum runs from, or ``--from`` a checkout or a wheel),
   copied to ``/opt/tectum/wheels`` and installed with the ``postgres`` extra. Its
   dependencies come either from a *wheelhouse* built on the controller (``--wheelhouse DIR``:
   ``pip wheel`` into DIR with the controller's pip configuration, copied over and installed
   with ``--no-index``: the host needs no package index at all; the controller must have the
   hosts' Python version and architecture) or from the host's own pip configuration, with
   ``--pip-env NAME=VALUE`` settings (``PIP_INDEX_URL``, ``PIP_CERT``, ...) passed to the host's
   ``pip`` in its environment, never on its command line. What is installed is recorded in
   ``/opt/tectum/installed`` (a digest of the wheels' contents): the same wheels are not
   copied or installed again;
4. the agent's settings in ``/etc/tectum/agent.env`` (mode 0600, root: the PostgreSQL DSN
   may carry a password; so may the webhooks' secrets), the files of the agent's
   ``--approvers``, ``--allowed-signers`` and ``--webhooks`` in ``/etc/tectum/`` (one no
   longer given is removed), a launcher ``/opt/tectum/agent-run`` that reads them and runs
   ``tectum agent``, and the service ``tectum-agent``: a systemd unit
   (``/etc/systemd/system/tectum-agent.service``, enabled) where ``/run/systemd/system``
   exists, else a System V init script ``/etc/init.d/tectum-agent`` that runs the launcher
   with ``start-stop-daemon`` (``--background --make-pidfile``, pidfile
   ``/run/tectum-agent.pid``, output in ``/var/log/tectum-agent.log``), registered with
   ``update-rc.d`` and started with ``service tectum-agent start``;
5. the service is started when it is not running, and restarted when anything it runs or
   reads changed; it must still be running a moment later (else the end of its log is shown).

Idempotent: a second bootstrap with the same settings changes nothing and says so. A step
that fails stops that host (the others go on) with a message naming the host, the step and
what to do; nothing done before it is undone (it is what a second run would do anyway).

The agent runs as root with ``--workdir /var/lib/tectum/agent``; its reports go where the
project's state goes: with ``[state] backend = "postgres"`` in the repository's project and the
DSN given to bootstrap (``TECTUM_PG_CONN_STR``), into the shared PostgreSQL database.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.masking import REDACTOR

if TYPE_CHECKING:
    from tectum.config.inventory import Inventory
    from tectum.providers.host.connector import CommandResult, Connector

HOME = "/opt/tectum"
VENV = f"{HOME}/venv"
WHEELS = f"{HOME}/wheels"
STAMP = f"{HOME}/installed"
RUNNER = f"{HOME}/agent-run"
ENV_FILE = "/etc/tectum/agent.env"
#: files copied from this machine for the agent's options of the same names
SIGNERS = "/etc/tectum/allowed_signers"
APPROVERS = "/etc/tectum/approvers"
HOOKS = "/etc/tectum/webhooks.toml"
AGENT_FILES = (SIGNERS, APPROVERS, HOOKS)
WORKDIR = "/var/lib/tectum/agent"
SERVICE = "tectum-agent"
INIT_SCRIPT = f"/etc/init.d/{SERVICE}"
UNIT = f"/etc/systemd/system/{SERVICE}.service"
PIDFILE = f"/run/{SERVICE}.pid"
LOG = f"/var/log/{SERVICE}.log"
#: apt packages the agent needs on a host
PACKAGES = ("python3", "python3-venv", "git")
#: the extras installed with tectum on a host (reports to PostgreSQL)
EXTRAS = "postgres"
#: seconds a started service must stay up to count as started
SETTLE = 1.5
#: the environment variable that carries the DSN (as ``tectum`` itself reads it)
PG_ENV = "TECTUM_PG_CONN_STR"
MODES = ("report", "remediate", "apply")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BootstrapError(Exception):
    """A step failed on one host; the message names the step and what to do."""


@dataclass
class BootstrapOptions:
    """The agent's settings (``tectum agent``'s options of the same names) and how tectum gets
    onto the hosts. ``interval``/``splay`` are durations as ``tectum agent`` takes them
    (``30s``, ``5m``); ``workspace`` may hold ``{host}``, replaced by each host's inventory
    name (a workspace of its own per host, when every agent manages its own machine in one
    shared state database); ``pg_conn_str`` is a secret (registered with the redactor, written
    only into the 0600 env file); ``pip_env`` is given to the hosts' ``pip`` (values treated as
    secrets too: an index URL may carry a token). Raises :class:`DiagnosticError` for a bad
    mode, duration or variable name."""

    repo: str
    branch: str = "main"
    path: str = "."
    interval: str = "30m"
    splay: str = "0s"
    mode: str = "remediate"
    workspace: str | None = None
    pg_conn_str: str | None = None
    pip_env: dict[str, str] = field(default_factory=dict)
    #: ``tectum agent``'s approval and trust options, passed through to every host
    require_approval: bool = False
    encrypt_to: tuple[str, ...] = ()
    require_signed_commits: bool = False
    #: local paths of the files copied to the hosts (:data:`AGENT_FILES`)
    allowed_signers: str | None = None
    approvers: str | None = None
    webhooks: str | None = None
    #: the files' contents by host path, read from the paths above (filled in here)
    files: dict[str, bytes] = field(default_factory=dict)
    #: the webhooks' secrets (``secret_env`` name → value, from this machine's environment)
    secrets: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from tectum.agent import check_recipients, parse_duration

        if self.mode not in MODES:
            raise DiagnosticError(Diagnostic.error(
                "Unknown agent mode", f"--mode {self.mode}: the modes are {', '.join(MODES)}."))
        if parse_duration(self.interval) <= 0:
            raise DiagnosticError(Diagnostic.error(
                "Invalid interval", "--interval must be above 0."))
        parse_duration(self.splay)
        for name, what in ((self.repo, "--repo"), (self.branch, "--branch"),
                           (self.path, "--path")):
            if not name or "\n" in name or "\0" in name:
                raise DiagnosticError(Diagnostic.error(
                    "Invalid setting", f"{what} must be one non-empty line."))
        for key in self.pip_env:
            if not _ENV_NAME.match(key):
                raise DiagnosticError(Diagnostic.error(
                    "Invalid --pip-env", f"{key!r} is no environment variable name: write "
                    "--pip-env NAME=VALUE, e.g. --pip-env PIP_INDEX_URL=https://..."))
        for value in [self.pg_conn_str or "", *self.pip_env.values()]:
            if "\n" in value or "\0" in value:
                raise DiagnosticError(Diagnostic.error(
                    "Invalid setting", "A DSN or --pip-env value must be one line."))
            REDACTOR.add(value)
        if self.pg_conn_str:
            REDACTOR.add(dsn_password(self.pg_conn_str) or "")
        check_recipients(self.encrypt_to)
        if self.allowed_signers and not self.require_signed_commits:
            raise DiagnosticError(Diagnostic.error(
                "Allowed signers without signed commits", "--allowed-signers names the keys "
                "trusted to sign commits: give --require-signed-commits too."))
        for option, local, remote in (("--allowed-signers", self.allowed_signers, SIGNERS),
                                      ("--approvers", self.approvers, APPROVERS),
                                      ("--webhooks", self.webhooks, HOOKS)):
            if local is None:
                continue
            try:
                with open(local, "rb") as fh:
                    self.files[remote] = fh.read()
            except OSError as exc:
                raise DiagnosticError(Diagnostic.error(
                    "Cannot read a file to copy", f"{option} {local}: {exc.strerror or exc}."
                    )) from None
        if self.webhooks is not None:
            self.secrets = _webhook_secrets(self.webhooks, self.files[HOOKS])
        for value in self.secrets.values():
            if "\n" in value or "\0" in value:
                raise DiagnosticError(Diagnostic.error(
                    "Invalid setting", "A webhook secret must be one line."))
            REDACTOR.add(value)

    def env_file(self, host: str) -> str:
        """``/etc/tectum/agent.env`` for ``host``: ``NAME='value'`` lines (POSIX shell quoting;
        the launcher reads it with ``.``)."""
        values = {
            "TECTUM_AGENT_REPO": self.repo, "TECTUM_AGENT_BRANCH": self.branch,
            "TECTUM_AGENT_PATH": self.path, "TECTUM_AGENT_INTERVAL": self.interval,
            "TECTUM_AGENT_SPLAY": self.splay, "TECTUM_AGENT_MODE": self.mode,
            "TECTUM_AGENT_NAME": host,
            "TECTUM_AGENT_WORKSPACE": (self.workspace or "").replace("{host}", host),
        }
        if self.pg_conn_str:
            values[PG_ENV] = self.pg_conn_str
        if self.require_approval:
            values["TECTUM_AGENT_REQUIRE_APPROVAL"] = "1"
        if self.encrypt_to:  # (one a line: an ssh-ed25519 key holds spaces)
            values["TECTUM_AGENT_ENCRYPT_TO"] = "\n".join(self.encrypt_to)
        if self.require_signed_commits:
            values["TECTUM_AGENT_REQUIRE_SIGNED_COMMITS"] = "1"
        for remote, variable in ((SIGNERS, "TECTUM_AGENT_ALLOWED_SIGNERS"),
                                 (APPROVERS, "TECTUM_AGENT_APPROVERS"),
                                 (HOOKS, "TECTUM_AGENT_WEBHOOKS")):
            if remote in self.files:
                values[variable] = remote
        values.update(self.secrets)
        lines = ["# written by `tectum bootstrap`: the settings of the tectum agent "
                 f"({RUNNER} reads them)"]
        lines += [f"{k}={shlex.quote(v)}" for k, v in values.items()]
        return "\n".join(lines) + "\n"


def _webhook_secrets(path: str, data: bytes) -> dict[str, str]:
    """The secrets the hooks of the webhooks file ``path`` (``data``) name by ``secret_env``,
    from this machine's environment: the file is checked here as the agents will read it
    (:meth:`tectum.webhooks.Webhook.from_table`), so a wrong file fails before any host is
    touched. Raises :class:`DiagnosticError`."""
    import tomllib

    from tectum.webhooks import Webhook

    try:
        tables = tomllib.loads(data.decode()).get("webhooks")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DiagnosticError(Diagnostic.error(
            "Cannot read the webhooks file", f"--webhooks {path}: {exc}.")) from None
    if not isinstance(tables, list) or not tables:
        raise DiagnosticError(Diagnostic.error(
            "No webhooks", f"--webhooks {path} has no [[webhooks]] table."))
    found: dict[str, str] = {}
    for i, table in enumerate(tables, 1):
        Webhook.from_table(table, f"{path} [[webhooks]] #{i}")
        name = str(table["secret_env"])
        if name.startswith("TECTUM_AGENT_") or name in (PG_ENV, "HOME", "PATH", "NO_COLOR"):
            raise DiagnosticError(Diagnostic.error(
                "Invalid webhook", f"{path} [[webhooks]] #{i}: secret_env = {name!r} is a "
                "name the agent's settings use; name another variable."))
        found[name] = os.environ[name]
    return found


def dsn_password(dsn: str) -> str | None:
    """The password in a libpq DSN (``key=value`` words or a ``postgresql://`` URL), if any
    (registered for masking on its own: an error may quote it without the rest)."""
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        found = re.search(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn) \
            or re.search(r"://[^:/@]*:([^@]*)@", dsn)
        return found.group(1).strip("'") if found else None
    try:
        value = conninfo_to_dict(dsn).get("password")
    except Exception:  # noqa: BLE001 - psycopg.ProgrammingError: not a DSN it parses
        return None
    return str(value) if value is not None else None


RUNNER_SCRIPT = f"""#!/bin/sh
# written by `tectum bootstrap`: runs the tectum agent with the settings of {ENV_FILE}
set -a
. {ENV_FILE}
set +a
HOME=/root
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
NO_COLOR=1
export HOME PATH NO_COLOR
set --
[ -n "${{TECTUM_AGENT_REQUIRE_APPROVAL:-}}" ] && set -- "$@" --require-approval
[ -n "${{TECTUM_AGENT_REQUIRE_SIGNED_COMMITS:-}}" ] && set -- "$@" --require-signed-commits
[ -n "${{TECTUM_AGENT_ALLOWED_SIGNERS:-}}" ] && \\
    set -- "$@" --allowed-signers "$TECTUM_AGENT_ALLOWED_SIGNERS"
[ -n "${{TECTUM_AGENT_APPROVERS:-}}" ] && set -- "$@" --approvers "$TECTUM_AGENT_APPROVERS"
[ -n "${{TECTUM_AGENT_WEBHOOKS:-}}" ] && set -- "$@" --webhooks "$TECTUM_AGENT_WEBHOOKS"
[ -n "${{TECTUM_AGENT_WORKSPACE:-}}" ] && set -- "$@" --workspace "$TECTUM_AGENT_WORKSPACE"
# the recipients of saved plans, one a line
set -f
IFS='
'
for recipient in ${{TECTUM_AGENT_ENCRYPT_TO:-}}; do
    set -- "$@" --encrypt-to "$recipient"
done
unset IFS
set +f
exec {VENV}/bin/tectum agent --repo "$TECTUM_AGENT_REPO" --branch "$TECTUM_AGENT_BRANCH" \\
    --path "$TECTUM_AGENT_PATH" --interval "$TECTUM_AGENT_INTERVAL" \\
    --splay "$TECTUM_AGENT_SPLAY" --mode "$TECTUM_AGENT_MODE" --name "$TECTUM_AGENT_NAME" \\
    --workdir {WORKDIR} "$@"
"""

# (s-s-d matches the process by pidfile and name: the launcher execs the `tectum` script,
# whose process name is "tectum")
INIT = f"""#!/bin/sh
### BEGIN INIT INFO
# Provides:          {SERVICE}
# Required-Start:    $network $remote_fs
# Required-Stop:     $network $remote_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: tectum agent: keeps this host matching a git branch
### END INIT INFO
# written by `tectum bootstrap`; settings in {ENV_FILE}
PIDFILE={PIDFILE}
LOG={LOG}
case "$1" in
  start)
    start-stop-daemon --start --quiet --oknodo --background --make-pidfile \\
        --pidfile "$PIDFILE" --name tectum --output "$LOG" --startas {RUNNER}
    ;;
  stop)
    start-stop-daemon --stop --quiet --oknodo --pidfile "$PIDFILE" --name tectum \\
        --retry TERM/120/KILL/5 --remove-pidfile
    ;;
  restart|force-reload)
    "$0" stop && "$0" start
    ;;
  status)
    start-stop-daemon --status --pidfile "$PIDFILE" --name tectum
    case $? in
      0) echo "{SERVICE} is running"; exit 0 ;;
      1) echo "{SERVICE} is not running (stale pidfile)"; exit 1 ;;
      *) echo "{SERVICE} is not running"; exit 3 ;;
    esac
    ;;
  *)
    echo "usage: $0 start|stop|restart|status" >&2
    exit 3
    ;;
esac
"""

UNIT_FILE = f"""# written by `tectum bootstrap`; settings in {ENV_FILE}
[Unit]
Description=tectum agent: keeps this host matching a git branch
Wants=network-online.target
After=network-online.target

[Service]
ExecStart={RUNNER}
Restart=always
RestartSec=5
KillSignal=SIGTERM
TimeoutStopSec=180

[Install]
WantedBy=multi-user.target
"""


# ---------------------------------------------------------------------------- the wheels

@dataclass(frozen=True)
class Wheels:
    """What is copied to every host: tectum's wheel and the dependency wheels (none: the
    hosts' pip configuration provides them). ``digest`` identifies the set by content."""

    tectum: Path
    deps: tuple[Path, ...]
    digest: str
    #: (Python version, machine) the compiled wheels among ``deps`` were built for (this
    #: machine's); None when every wheel is pure Python (``py3-none-any``)
    platform: tuple[str, str] | None = None

    @property
    def all(self) -> tuple[Path, ...]:
        return (self.tectum, *self.deps)


def checkout_root() -> Path | None:
    """The source checkout this tectum runs from (an editable install), or None."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "tectum"' in pyproject.read_text(errors="replace"):
        return root
    return None


def _pip(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def _wheel_digest(paths: Sequence[Path]) -> str:
    """SHA-256 over the wheels' names and member contents (not their zip timestamps: the
    same source built twice gives the same digest)."""
    h = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        h.update(path.name.encode() + b"\0")
        with zipfile.ZipFile(path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if info.filename.endswith(".dist-info/RECORD"):
                    continue
                h.update(info.filename.encode() + b"\0")
                h.update(hashlib.sha256(zf.read(info)).digest())
    return h.hexdigest()


def build_wheels(source: str | None, workdir: str, wheelhouse: str | None) -> Wheels:
    """tectum's wheel (``source``: a checkout, a ``.whl``; None: the checkout this tectum runs
    from) built into ``workdir`` with ``pip wheel --no-deps``; with ``wheelhouse``, the
    dependencies (``tectum[postgres]``'s) as wheels in that directory, built by ``pip wheel``
    with the controller's pip configuration (a cache: what is there is used without an index
    first). Raises :class:`DiagnosticError` naming the pip failure."""
    if source is not None and source.endswith(".whl"):
        if not os.path.isfile(source):
            raise DiagnosticError(Diagnostic.error(
                "No such wheel", f"--from {source}: no such file."))
        wheel = Path(source).resolve()
    else:
        root = Path(source).resolve() if source else checkout_root()
        if root is None or not (root / "pyproject.toml").is_file():
            raise DiagnosticError(Diagnostic.error(
                "No tectum source", "This tectum is not installed from a checkout: give "
                "--from CHECKOUT_DIR or --from tectum-VERSION-py3-none-any.whl."))
        out = Path(workdir) / "tectum-wheel"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        isolation = ["--no-build-isolation"] if _has_build_tools() else []
        # a build of its own from a copy: the checkout gets no build/ directory
        with tempfile.TemporaryDirectory(prefix="tectum-src-") as tmp:
            copy = Path(tmp) / "src"
            shutil.copytree(root, copy, ignore=shutil.ignore_patterns(
                ".git", ".venv", ".tectum", "__pycache__", "*.egg-info", "build", "dist",
                ".*_cache", "bench", "tests"))
            proc = _pip("wheel", "--no-deps", *isolation, "-q", "-w", str(out), str(copy))
        found = sorted(out.glob("tectum-*.whl"))
        if proc.returncode != 0 or not found:
            raise DiagnosticError(Diagnostic.error(
                "Cannot build tectum's wheel", f"pip wheel {root} failed: "
                f"{REDACTOR.redact((proc.stderr or proc.stdout).strip()[-1500:])}"))
        wheel = found[0]
    deps: tuple[Path, ...] = ()
    if wheelhouse is not None:
        house = Path(wheelhouse).resolve()
        house.mkdir(parents=True, exist_ok=True)
        want = f"{wheel}[{EXTRAS}]"
        proc = _pip("wheel", "-q", "--no-index", "--find-links", str(house), "-w", str(house),
                    want)
        if proc.returncode != 0:
            proc = _pip("wheel", "-q", "--find-links", str(house), "-w", str(house), want)
        if proc.returncode != 0:
            raise DiagnosticError(Diagnostic.error(
                "Cannot build the wheelhouse", f"pip wheel {want} -w {house} failed (the "
                "controller's pip configuration must reach an index): "
                f"{REDACTOR.redact((proc.stderr or proc.stdout).strip()[-1500:])}"))
        deps = tuple(sorted(p for p in house.glob("*.whl")
                            if not p.name.startswith("tectum-")))
    compiled = any(not p.name.endswith("-none-any.whl") for p in deps)
    platform = (f"{sys.version_info[0]}.{sys.version_info[1]}", _machine()) if compiled \
        else None
    return Wheels(wheel, deps, _wheel_digest([wheel, *deps]), platform)


def _machine() -> str:
    import platform

    return platform.machine()


def _has_build_tools() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("setuptools", "wheel"))


# ----------------------------------------------------------------------------- one host

@dataclass
class HostResult:
    """What bootstrap did on one host: ``changes`` (human sentences, in order), or ``error``
    (the failed step and what to do; changes before it stay listed)."""

    host: str
    changes: list[str] = field(default_factory=list)
    error: str | None = None
    init: str = ""  # "systemd" or "sysv"
    #: what works but will not do what was asked (the database not reachable from the host)
    warnings: list[str] = field(default_factory=list)


class HostBootstrap:
    """The steps on one host over ``conn`` (a :class:`Connector`)."""

    def __init__(self, conn: Connector, name: str, options: BootstrapOptions, wheels: Wheels,
                 log: Callable[[str], None]) -> None:
        self.conn = conn
        self.name = name
        self.options = options
        self.wheels = wheels
        self.log = log
        self.result = HostResult(name)

    # -- helpers ------------------------------------------------------------------------
    def run(self, argv: Sequence[str], step: str, *, env: Mapping[str, str] | None = None,
            timeout: float = 600, check: bool = True, todo: str = "") -> CommandResult:
        result = self.conn.run(argv, env=env, timeout=timeout)
        if check and not result.ok:
            raise BootstrapError(
                f"{step} failed (exit {result.returncode}): "
                f"{REDACTOR.redact(result.error_text(800))}" + (f". {todo}" if todo else ""))
        return result

    def changed(self, what: str) -> None:
        self.result.changes.append(what)
        self.log(f"{self.name}: {what}")

    def put(self, path: str, text: str, mode: str, what: str) -> bool:
        """Write ``path`` when its content or mode differs; whether it was written."""
        fact = self.conn.stat_paths([path], content=True)[0]
        data = text.encode()
        if fact is not None and fact.kind == "file" and fact.content == data \
                and fact.mode == mode and fact.owner == "root":
            return False
        if not self.conn.exists(os.path.dirname(path)):
            self.conn.make_dir(os.path.dirname(path), mode=None, owner=None, group=None)
        self.conn.write_file(path, data, mode=mode, owner="root", group="root")
        self.changed(f"{'wrote' if fact is None else 'updated'} {what} {path}")
        return True

    # -- the steps ----------------------------------------------------------------------
    def probe(self) -> tuple[set[str], bool, str]:
        """Installed packages of :data:`PACKAGES`, systemd or not, the install stamp."""
        script = ('for p in "$@"; do dpkg-query -W -f "\\${db:Status-Abbrev}" "$p" '
                  '2>/dev/null | grep -q "^ii" && echo "pkg $p"; done; '
                  '[ -d /run/systemd/system ] && echo systemd; '
                  f'[ -f {STAMP} ] && echo "stamp $(cat {STAMP})"; true')
        out = self.run(["sh", "-c", script, "sh", *PACKAGES], "Probing the host").text()
        have, systemd, stamp = set(), False, ""
        for line in out.splitlines():
            if line.startswith("pkg "):
                have.add(line[4:].strip())
            elif line.strip() == "systemd":
                systemd = True
            elif line.startswith("stamp "):
                stamp = line[6:].strip()
        return have, systemd, stamp

    def packages(self, have: set[str]) -> None:
        missing = [p for p in PACKAGES if p not in have]
        if not missing:
            return
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
        first = self.run(argv, "apt-get install", env=env, timeout=900, check=False)
        if not first.ok:
            self.run(["apt-get", "update", "-q"], "apt-get update", env=env, timeout=600,
                     todo="Check the host's apt sources and proxy, then bootstrap again.")
            self.run(argv, f"apt-get install {' '.join(missing)}", env=env, timeout=900,
                     todo="Check the host's apt sources and proxy, then bootstrap again.")
        self.changed(f"installed {', '.join(missing)} (apt)")

    def venv(self) -> None:
        if self.conn.exists(f"{VENV}/bin/python"):
            return
        self.run(["python3", "-m", "venv", VENV], f"python3 -m venv {VENV}",
                 todo="python3-venv must be installed (apt-get install python3-venv).")
        self.changed(f"made the virtual environment {VENV}")

    def install(self, stamp: str) -> bool:
        """tectum and its dependencies into the venv unless the same wheels are in."""
        w = self.wheels
        if stamp == w.digest and self.conn.exists(f"{VENV}/bin/tectum"):
            return False
        if w.platform is not None:
            self.check_python(w.platform)
        self.copy_wheels()
        pip = [f"{VENV}/bin/pip", "--disable-pip-version-check", "install", "-q"]
        source = ["--no-index", "--find-links", WHEELS] if w.deps \
            else ["--find-links", WHEELS]
        todo = ("Give --wheelhouse DIR (the dependencies built on this machine), or make the "
                "host's pip reach an index (--pip-env PIP_INDEX_URL=...), then bootstrap again.")
        env = dict(self.options.pip_env)
        self.run([*pip, *source, f"{WHEELS}/{w.tectum.name}[{EXTRAS}]"],
                 "pip install of tectum's dependencies", env=env, timeout=1200, todo=todo)
        # the same version number with other content: put this wheel's files in
        self.run([*pip, "--force-reinstall", "--no-deps", f"{WHEELS}/{w.tectum.name}"],
                 "pip install of tectum", env=env, timeout=600, todo=todo)
        self.conn.write_file(STAMP, (w.digest + "\n").encode(), mode="0644", owner=None,
                             group=None)
        self.changed(f"installed {w.tectum.name}"
                     + (f" and {len(w.deps)} dependency wheel(s)" if w.deps else "")
                     + f" into {VENV}")
        return True

    def check_python(self, platform: tuple[str, str]) -> None:
        """The venv's Python must be the one the wheelhouse's compiled wheels were built for
        (``platform``: Python version and machine). Raises :class:`BootstrapError`."""
        probe = "import platform, sys; print('%d.%d' % sys.version_info[:2], platform.machine())"
        got = self.run([f"{VENV}/bin/python", "-c", probe], "Checking the host's Python")
        version, _, machine = got.text().strip().partition(" ")
        if (version, machine) != platform:
            raise BootstrapError(
                f"the host has Python {version} on {machine}, but the wheelhouse's compiled "
                f"wheels are for Python {platform[0]} on {platform[1]} (this machine). "
                "Bootstrap it from a machine with the host's Python, or without --wheelhouse "
                "(the host's pip installs from an index: --pip-env PIP_INDEX_URL=...)")

    def copy_wheels(self) -> None:
        """Make ``/opt/tectum/wheels`` hold exactly the wheels to install, copying only those
        not there already with the same content (``sha256sum`` on the host)."""
        if not self.conn.exists(WHEELS):
            self.conn.make_dir(WHEELS, mode="0755", owner=None, group=None)
        listed = self.run(["sh", "-c", f'cd {WHEELS} && for f in *.whl; do [ -f "$f" ] && '
                           'sha256sum -- "$f"; done; true'], "Listing the copied wheels").text()
        there = {}
        for line in listed.splitlines():
            digest, _, name = line.partition("  ")
            there[name.strip()] = digest
        wanted = {wheel.name: wheel for wheel in self.wheels.all}
        for name in sorted(set(there) - set(wanted)):
            self.conn.remove(f"{WHEELS}/{name}")
        for name, wheel in wanted.items():
            data = wheel.read_bytes()
            if there.get(name) != hashlib.sha256(data).hexdigest():
                self.conn.write_file(f"{WHEELS}/{name}", data, mode="0644", owner=None,
                                     group=None)

    def agent_files(self) -> bool:
        """The files of the agent's options (approvers, allowed signers, webhooks) as given;
        one no longer given is removed. Whether any changed."""
        changed = False
        for remote in AGENT_FILES:
            data = self.options.files.get(remote)
            if data is not None:
                what = {SIGNERS: "the commit signers", APPROVERS: "the approvers",
                        HOOKS: "the webhooks"}[remote]
                changed |= self.put(remote, data.decode(), "0644", what)
            elif self.conn.exists(remote):
                self.conn.remove(remote)
                self.changed(f"removed {remote} (no longer given)")
                changed = True
        return changed

    def check_database(self) -> None:
        """Connect from the host to the DSN (given in the environment, never on a command
        line): a warning when it fails (the agent keeps its reports until the database
        answers)."""
        if not self.options.pg_conn_str:
            return
        probe = ("import os, psycopg\n"
                 f"psycopg.connect(os.environ['{PG_ENV}'], connect_timeout=10).close()\n")
        result = self.conn.run([f"{VENV}/bin/python", "-c", probe],
                               env={PG_ENV: self.options.pg_conn_str}, timeout=60)
        if not result.ok:
            last = (result.error_text(600).strip().splitlines() or ["?"])[-1]
            self.result.warnings.append(
                f"{self.name} cannot reach the PostgreSQL database: {REDACTOR.redact(last)}. "
                "Its agent keeps its reports on the host until it can; check that the DSN's "
                "address is reachable from the host and that pg_hba.conf lets it in.")

    def service(self, systemd: bool, restart: bool) -> None:
        if systemd:
            self.result.init = "systemd"
            self._systemd(restart)
        else:
            self.result.init = "sysv"
            self._sysv(restart)

    def _systemd(self, restart: bool) -> None:
        wrote = self.put(UNIT, UNIT_FILE, "0644", "the unit")
        if wrote:
            self.run(["systemctl", "daemon-reload"], "systemctl daemon-reload")
        enabled = self.run(["systemctl", "is-enabled", "--quiet", SERVICE], "", check=False)
        if not enabled.ok:
            self.run(["systemctl", "enable", "--quiet", SERVICE], f"systemctl enable {SERVICE}")
            self.changed(f"enabled {SERVICE}")
        active = self.run(["systemctl", "is-active", "--quiet", SERVICE], "", check=False).ok
        if active and (restart or wrote):
            self.run(["systemctl", "restart", SERVICE], f"systemctl restart {SERVICE}")
            self.changed(f"restarted {SERVICE}")
        elif not active:
            self.run(["systemctl", "start", SERVICE], f"systemctl start {SERVICE}",
                     todo=f"See `journalctl -u {SERVICE}` on the host.")
            self.changed(f"started {SERVICE}")
        else:
            return
        time.sleep(SETTLE)
        if not self.run(["systemctl", "is-active", "--quiet", SERVICE], "", check=False).ok:
            tail = self.run(["journalctl", "-u", SERVICE, "-n", "20", "--no-pager"], "",
                            check=False).text()
            raise BootstrapError(f"{SERVICE} stopped right after it started: "
                                 f"{REDACTOR.redact(tail.strip()[-1500:])}")

    def _sysv(self, restart: bool) -> None:
        wrote = self.put(INIT_SCRIPT, INIT, "0755", "the init script")
        has_service = self.run(["sh", "-c", "command -v service"], "", check=False).ok
        ctl = ["service", SERVICE] if has_service else [INIT_SCRIPT]
        if wrote and self.run(["sh", "-c", "command -v update-rc.d"], "", check=False).ok:
            self.run(["update-rc.d", SERVICE, "defaults"], f"update-rc.d {SERVICE} defaults")
        running = self.run([*ctl, "status"], "", check=False).returncode == 0
        if running and (restart or wrote):
            self.run([*ctl, "restart"], f"{' '.join(ctl)} restart")
            self.changed(f"restarted {SERVICE}")
        elif not running:
            self.run([*ctl, "start"], f"{' '.join(ctl)} start", todo=f"See {LOG} on the host.")
            self.changed(f"started {SERVICE}")
        else:
            return
        time.sleep(SETTLE)
        if self.run([*ctl, "status"], "", check=False).returncode != 0:
            tail = self.run(["tail", "-n", "20", LOG], "", check=False).text()
            raise BootstrapError(f"{SERVICE} stopped right after it started; the end of "
                                 f"{LOG}: {REDACTOR.redact(tail.strip()[-1500:])}")

    def __call__(self) -> HostResult:
        from tectum.providers.host.connector import ConnectorError

        try:
            have, systemd, stamp = self.probe()
            self.packages(have)
            self.venv()
            installed = self.install(stamp)
            env = self.put(ENV_FILE, self.options.env_file(self.name), "0600",
                           "the agent's settings")
            runner = self.put(RUNNER, RUNNER_SCRIPT, "0755", "the launcher")
            files = self.agent_files()
            self.check_database()
            self.service(systemd, restart=installed or env or runner or files)
        except BootstrapError as exc:
            self.result.error = str(exc)
        except DiagnosticError as exc:
            self.result.error = "; ".join(d.summary + (f": {d.detail}" if d.detail else "")
                                          for d in exc.diagnostics)
        except ConnectorError as exc:  # unreachable, host key refused, a failed write
            self.result.error = REDACTOR.redact(str(exc))
        except Exception as exc:  # noqa: BLE001 - reported per host, the others go on
            self.result.error = REDACTOR.redact(f"internal error: {type(exc).__name__}: {exc}")
        return self.result


# ------------------------------------------------------------------------------ the fleet

def connect(inventory: Inventory, name: str, *, trust_unknown: bool) -> Connector:
    """The connector of inventory host ``name``, made as the ``host`` provider makes it.
    Raises :class:`DiagnosticError` for a host without SSH, or a become password not set."""
    from tectum.providers.host.provider import ssh_connector

    conn = inventory.hosts[name].connection
    if conn.connector != "ssh":
        raise DiagnosticError(Diagnostic.error(
            "Not an SSH host", f"Host {name!r} has connector = {conn.connector!r}: bootstrap "
            "installs the agent on SSH hosts only.", address=f'host["{name}"]'))
    return ssh_connector(name, conn, inventory.path, trust_unknown=trust_unknown)


def bootstrap(inventory: Inventory, names: Sequence[str], options: BootstrapOptions,
              wheels: Wheels, *, forks: int = 50, trust_unknown: bool = False,
              log: Callable[[str], None] = print) -> list[HostResult]:
    """Bootstrap ``names`` (inventory hosts), ``forks`` at once; one result per host, in
    order. Raises :class:`DiagnosticError` for a host that is not an SSH host before anything
    is done."""
    conns = {name: connect(inventory, name, trust_unknown=trust_unknown) for name in names}

    def one(name: str) -> HostResult:
        conn = conns[name]
        try:
            return HostBootstrap(conn, name, options, wheels, log)()
        finally:
            close = getattr(conn, "close", None)
            if close is not None:
                close()

    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(names)))) as pool:
        return list(pool.map(one, names))
