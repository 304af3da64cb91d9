"""The canary test of issue #5: secrets with unique random values go through every command of
tectum, and afterwards no form of any of them is found anywhere it should not be.

One canary per channel a secret can take into a stack:

==============  =========================================================  =====================
channel         how the stack uses it                                      where it must arrive
==============  =========================================================  =====================
db_password     secrets file → template variable (local and host), also    both ``app.conf``
                ``b64encode``d after ``user:``/``ops:``/``admin:`` (HTTP
                Basic auth: base64 at each alignment), output
api_token       ``var(..., sensitive=True)`` from ``TECTUM_VAR_api_token``  both ``app.conf``
                → template variable, output
inline_key      secrets file → ``File(content="..." + secret(...))``        host ``inline.txt``
cmd_arg         secrets file → text of a string-form ``Command``            both ``arg.out``
cmd_env         secrets file → ``Command(environment={...})``               both ``env.out``
gen             ``random.Password`` result (generated, sensitive) → host    host ``gen.txt``
                file by reference, output
fail_env        environment of commands that print it — plain, and base64  nowhere
                and hex of ``PREFIX + value`` at each base64 alignment —
                then exit 1
slow_arg        text of a slow command whose ``tectum apply`` is killed     host ``slow.out``
output_only     secrets file → ``output(...)`` only                        ``output --reveal``
==============  =========================================================  =====================

The stack manages a directory on the local machine and one on a one-host fleet
(:class:`tests.harness.fleet.Fleet`), and goes through: ``plan -out`` and ``plan --json``,
``show`` (and ``--json``) of the saved plan, a plan encrypted to a CI key (``--encrypt-to``) and
``show`` of it with that key, ``apply`` of the saved plan, a failing apply, an apply killed with
SIGKILL while a command that holds a secret runs on the host and the apply after it, a change
made by hand on the host with ``drift --json``, ``drift``, ``refresh``, ``plan`` and the apply
that repairs it (on a terminal, answering the prompt), ``show``, ``state list|show|pull|history|
diff``, ``rollback -out`` and ``show`` of that plan, ``validate``, ``graph``, ``output`` (every
form but one ``--reveal``) and ``destroy`` (on a terminal). tectum has no verbosity flag; its
most verbose record is ``TECTUM_COMMAND_LOG`` (every command it runs on a host), which is on,
and ``--json`` is used wherever a command has it.

Meanwhile a thread reads every process's command line (``/proc/*/cmdline``) every 20 ms. The
fleet's hosts are PID namespaces of this machine, so their processes are in this ``/proc`` too:
a probe process started over SSH proves it before the run, and the ``sleep`` of the killed
command seen in the host's namespace proves it during the run.

So encoded forms of secrets really are printed: the failing commands print them, and the plan
that repairs the hand-edited ``app.conf`` shows its Basic auth line in the diff; both are
asserted to arrive masked. Then every form of every canary (plain; base64 standard and
URL-safe at the three alignments; hex in both cases; URL-encoded —
:func:`tests.secrets.canary_forms`) is looked for in every
captured stdout and stderr (but that one ``output --reveal``), every file under the project
(``.tectum/`` with the SQLite database, its WAL and lock files, saved plans, the command log),
the state as SQL rows (SQLite dump, or the PostgreSQL tables), the files changed during the test
under the controller's temporary directories (``/tmp`` — where the PostgreSQL cluster's data
and WAL live —, ``$TMPDIR``, ``/var/tmp``, ``/dev/shm``), the host's whole overlay upper
directory (everything it changed on disk) and its tmpfs mounts (``/run``, ``/dev/shm``), and
the sampled command lines: 0 hits. The files a secret is meant to reach (the right column above)
are left out of that search by exact path, and must hold their canaries. After ``destroy`` they
are gone, and the search runs once more with no exception at all.

The same search looks for unsalted digests (MD5, SHA-1, SHA-256, SHA-512; hex and base64) of
every canary and of the whole content of every file that holds one: issue #5 allows state to
keep "only a salted hash" where a comparison is all it needs, since an unsalted one lets anyone
who reads state or a plan confirm a guessed secret offline. For SHA-256 (what tectum computes)
a prefix of :data:`DIGEST_PREFIX` hex digits counts too: ``drift`` and ``refresh`` printed
``sha256 50f3195629a1…`` for a file holding a secret, and 48 bits are enough to check guesses
(issue 10 item 11).

The whole run is made twice: with state in SQLite, and in PostgreSQL (``postgres_dsn``: a
private cluster, whose data and WAL files are under ``/tmp`` and searched too).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import pty
import re
import secrets
import select
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Result, run_tectum, tectum_env
from tests.harness.fleet import Fleet
from tests.secrets import canary_forms

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(os.geteuid() != 0, reason="the fleet harness needs root"),
]

HOST = "host1"
SLOW = "2.718"  # seconds the killed command sleeps: also how its process is recognised
SAMPLE_INTERVAL = 0.02
FULL_SWEEP = 25  # every this many samples, pre-existing processes are read too
DIGESTS = ("md5", "sha1", "sha256", "sha512")
DIGEST_PREFIX = 10  # hex digits of a SHA-256 that are a leak on their own (drift printed 12)
# what precedes db_password in the Basic auth line: 5, 4 and 6 bytes, so the value's base64
# is at alignment 2, 1 and 0 (the canaries are 27 bytes)
AUTH_USERS = ("user:", "ops:", "admin:")

# Channels whose value lives in the secrets file (the others: a variable, a generated password).
FILE_SECRETS = ("db_password", "inline_key", "cmd_arg", "cmd_env", "fail_env", "slow_arg",
                "output_only")


# ------------------------------------------------------------------------------- canaries

def _form_kind(value: str, form: bytes) -> str:
    raw = value.encode()
    if form == raw:
        return "plain"
    if form == binascii.hexlify(raw):
        return "hex"
    if form == binascii.hexlify(raw).upper():
        return "HEX"
    if form in (urllib.parse.quote(value).encode(), urllib.parse.quote(value, safe="").encode(),
                urllib.parse.quote_plus(value).encode()):
        return "url-encoded"
    for pad in range(3):
        if form in base64.b64encode(b"\0" * pad + raw):
            return f"base64 (alignment {pad})"
        if form in base64.urlsafe_b64encode(b"\0" * pad + raw):
            return f"urlsafe base64 (alignment {pad})"
    return "encoded"


@dataclass(frozen=True)
class Hit:
    where: str
    channel: str
    kind: str
    snippet: str

    def __str__(self) -> str:
        return f"{self.channel} ({self.kind}) in {self.where}: {self.snippet}"


class Canaries:
    """The canary values by channel, and a search for all their forms at once."""

    PREFIX = 8  # forms are looked for by their first bytes first (shared by many forms)

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self._forms: list[tuple[bytes, str, str]] = []  # (form, channel, kind)
        self._by_prefix: dict[bytes, list[tuple[bytes, str, str]]] = {}
        self._digests: set[bytes] = set()

    def add_digests(self, label: str, data: bytes) -> None:
        """Also look for unsalted digests of ``data`` (a secret, or a text that holds one) —
        hex in both cases and base64 — under the name ``label``: state may keep a hash where a
        comparison is all it needs, but only a salted one (issue #5)."""
        for algorithm in DIGESTS:
            digest = hashlib.new(algorithm, data).digest()
            forms = {(digest.hex(), ""), (digest.hex().upper(), ""),
                     (base64.b64encode(digest).decode().rstrip("="), "")}
            if algorithm == "sha256":
                forms |= {(digest.hex()[:DIGEST_PREFIX], f" prefix ({DIGEST_PREFIX} hex)"),
                          (digest.hex().upper()[:DIGEST_PREFIX],
                           f" prefix ({DIGEST_PREFIX} hex)")}
            for form, what in sorted(forms):
                key = form.encode()
                if key in self._digests:
                    continue
                self._digests.add(key)
                entry = (key, label, f"unsalted {algorithm}{what}")
                self._forms.append(entry)
                self._by_prefix.setdefault(key[:self.PREFIX], []).append(entry)
        self._forms.sort(key=lambda f: len(f[0]), reverse=True)

    def new(self, channel: str) -> str:
        return self.add(channel, f"canary-{secrets.token_hex(10)}")

    def add(self, channel: str, value: str) -> str:
        assert channel not in self.values and value not in self.values.values()
        self.values[channel] = value
        for form in canary_forms(value):
            assert len(form) >= self.PREFIX, form
            entry = (form, channel, _form_kind(value, form))
            self._forms.append(entry)
            self._by_prefix.setdefault(form[:self.PREFIX], []).append(entry)
        self._forms.sort(key=lambda f: len(f[0]), reverse=True)
        self.add_digests(f"{channel} value", value.encode())
        self.add_digests(f"{channel} value and a newline", value.encode() + b"\n")
        return value

    def patterns(self) -> bytes:
        """Every form, one a line (for ``grep -F -f -``)."""
        return b"".join(form + b"\n" for form, _channel, _kind in self._forms)

    def __getitem__(self, channel: str) -> str:
        return self.values[channel]

    def found(self, data: bytes) -> list[tuple[int, int, str, str]]:
        """(start, end, channel, kind) of every occurrence of every form in ``data``."""
        out = []
        for prefix, forms in self._by_prefix.items():
            start = data.find(prefix)
            while start >= 0:
                for form, channel, kind in forms:
                    if data.startswith(form, start):
                        out.append((start, start + len(form), channel, kind))
                start = data.find(prefix, start + 1)
        return out

    def hide(self, data: bytes | str) -> str:
        """``data`` as text with every canary form replaced by ``<canary:CHANNEL>`` — safe to
        put in an assertion message."""
        blob = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        for form, channel, _kind in self._forms:
            blob = blob.replace(form, f"<canary:{channel}>".encode())
        return blob.decode("utf-8", "replace")

    def scan(self, data: bytes | str, where: str) -> list[Hit]:
        blob = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        hits = []
        reported: set[tuple[str, str]] = set()
        for start, end, channel, kind in sorted(self.found(blob)):
            if (channel, kind) in reported:  # one snippet per channel and form is enough
                continue
            reported.add((channel, kind))
            snippet = self.hide(blob[max(0, start - 80):end + 80])
            hits.append(Hit(where, channel, kind, repr(snippet)))
        return hits


# --------------------------------------------------------------------------- the sampler

def _pid_ns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


class CmdlineSampler:
    """Reads ``/proc/*/cmdline`` every ``interval`` seconds in a thread; keeps every distinct
    (pid, command line) with the PID namespace of the process."""

    def __init__(self, interval: float = SAMPLE_INTERVAL) -> None:
        self.interval = interval
        self.seen: dict[tuple[int, bytes], str] = {}
        self.samples = 0
        self.longest_gap = 0.0
        self.busy = 0.0  # seconds spent sampling
        self._old: set[str] | None = None  # PIDs of the processes there before the start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cmdline-sampler", daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> CmdlineSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            began = time.monotonic()
            self.sample()
            now = time.monotonic()
            self.busy += now - began
            self.longest_gap = max(self.longest_gap, now - last)
            last = now
            self._stop.wait(self.interval)

    def sample(self) -> None:
        """Read the command line of every process but those that were there before the
        sampler started (they were not started by anything this test runs) — except on every
        :data:`FULL_SWEEP`-th sample, which reads them too. A pre-existing PID that is gone
        from ``/proc`` is forgotten, so a new process that reuses it is read."""
        try:
            names = [name for name in os.listdir("/proc") if name.isdigit()]
        except OSError:
            return
        if self._old is None:
            self._old = set(names)
        else:
            self._old.intersection_update(names)
        full = self.samples % FULL_SWEEP == 0
        found = []
        for name in names:
            if not full and name in self._old:
                continue
            try:
                fd = os.open(f"/proc/{name}/cmdline", os.O_RDONLY)
            except OSError:
                continue
            try:
                cmdline = chunk = os.read(fd, 65536)
                while len(chunk) == 65536:
                    chunk = os.read(fd, 65536)
                    cmdline += chunk
            except OSError:
                continue
            finally:
                os.close(fd)
            if cmdline:
                found.append((int(name), cmdline))
        with self._lock:
            for key in found:
                if key not in self.seen:
                    ns = _pid_ns(key[0]) or "?"
                    self.seen[key] = ns
            self.samples += 1

    def snapshot(self) -> dict[tuple[int, bytes], str]:
        with self._lock:
            return dict(self.seen)

    def wait_for(self, match: Callable[[bytes, str], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(match(cmd, ns) for (_pid, cmd), ns in self.snapshot().items()):
                return True
            time.sleep(0.01)
        return False


def show_cmdline(cmdline: bytes) -> str:
    return " ".join(part.decode("utf-8", "replace") for part in cmdline.rstrip(b"\0").split(b"\0"))


# ---------------------------------------------------------------------------- file search

@dataclass
class Scan:
    """Looks for the canaries in data and files; collects the hits."""

    canaries: Canaries
    hits: list[Hit] = field(default_factory=list)
    files: int = 0
    size: int = 0  # bytes in the files searched

    def data(self, data: bytes | str, where: str) -> None:
        self.hits += self.canaries.scan(data, where)

    def file(self, path: Path, label: str | None = None) -> None:
        try:
            data = path.read_bytes()
        except OSError:
            return  # gone meanwhile (another process's temporary file)
        self.files += 1
        self.size += len(data)
        self.data(data, label or str(path))

    def tree(self, root: Path, *, exclude: Iterable[Path] = (), since: float | None = None,
             prune: Callable[[str], bool] = lambda path: False,
             label: Callable[[Path], str] | None = None) -> None:
        """Every regular file under ``root`` (not following symlinks), but those in ``exclude``
        and under directories ``prune`` returns True for; with ``since``, only files whose
        status changed at or after that time (ctime: it cannot be set back).

        GNU ``grep -F`` (many fixed strings at once, Aho-Corasick) picks the files that hold
        any form; only those are searched again here, to name the channel and form. The forms
        reach grep on its standard input, never in a file or a command line."""
        skip = {str(p) for p in exclude}
        paths: list[str] = []
        for dirpath, dirs, names in os.walk(root, followlinks=False):
            dirs[:] = [d for d in dirs if not prune(os.path.join(dirpath, d))]
            for name in names:
                path = os.path.join(dirpath, name)
                if path in skip:
                    continue
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                if since is not None and st.st_ctime < since and st.st_mtime < since:
                    continue
                paths.append(path)
                self.files += 1
                self.size += st.st_size
        patterns = self.canaries.patterns()
        for i in range(0, len(paths), 200):
            proc = subprocess.run(["grep", "-F", "-a", "-l", "-Z", "-s", "-f", "-", "--",
                                   *paths[i:i + 200]], input=patterns, capture_output=True,
                                  timeout=300)
            assert proc.returncode in (0, 1, 2), proc.stderr
            for listed in proc.stdout.split(b"\0"):
                if listed:
                    name = os.fsdecode(listed)
                    try:
                        data = Path(name).read_bytes()
                    except OSError:
                        continue
                    self.data(data, label(Path(name)) if label else name)


# ----------------------------------------------------------------------------- the project

INVENTORY = """\
[defaults]
key = "{key}"
known_hosts = "{known_hosts}"
connect_timeout = 5

[hosts.{name}]
address = "{address}"
port = {port}

[groups.web]
hosts = ["{name}"]
"""

TEMPLATE = """\
# rendered by tectum
user=app
password={{ pw }}
token={{ token }}
basic={{ ("user:" ~ pw) | b64encode }} {{ ("ops:" ~ pw) | b64encode }} \
{{ ("admin:" ~ pw) | b64encode }}
"""

STACK = '''\
from tectum import apply_role, output, secret, var
from tectum.host import Command, Directory, File
from tectum.random import Password

W = "@WORLD@"    # on this machine
R = "@REMOTE@"   # on the fleet host
PHASE = "@PHASE@"
# prints base64 and hex of PREFIX + $PW, for prefixes of 5, 4 and 6
# bytes (the value at each base64 alignment), then fails
ENCODE = (
    'for p in user: ops: admin:; do '
    'printf "b64 %s\\n" "$(printf %s "$p$PW" | base64 -w0)"; '
    'printf "hex %s\\n" "$(printf %s "$p$PW" | od -An -tx1 | tr -d " \\n")"; '
    'done >&2; exit 1')

token = var("api_token", str, sensitive=True, description="a sensitive variable")
gen = Password("gen", length=24)

world = Directory("world", path=W, mode="0700")
File("local_conf", path=f"{world.path}/app.conf", template="app.conf.j2",
     vars={"pw": secret("db_password"), "token": token}, mode="0600")
Command("local_cmd",
        command=f"printf %s '{secret('cmd_arg')}' > {W}/arg.out; printf %s \\"$PW\\" > {W}/env.out",
        environment={"PW": secret("cmd_env")}, creates=f"{W}/env.out", depends_on=[world])
if PHASE == "fail":
    Command("local_fail", command='echo "local $PW"; echo "local $PW" >&2; ' + ENCODE,
            environment={"PW": secret("fail_env")}, depends_on=[world])


def web(host):
    top = Directory("top", path=R, mode="0700")
    File("conf", path=f"{top.path}/app.conf", template="app.conf.j2",
         vars={"pw": secret("db_password"), "token": token}, mode="0600")
    File("inline", path=f"{top.path}/inline.txt",
         content="key=" + secret("inline_key") + f"\\nhost={host.name}\\n", mode="0600")
    File("gen", path=f"{top.path}/gen.txt", content=f"{gen.result}\\n", mode="0600")
    Command("arg", command=f"printf %s '{secret('cmd_arg')}' > {R}/arg.out",
            creates=f"{R}/arg.out", depends_on=[top])
    Command("env", command=f"printf %s \\"$PW\\" > {R}/env.out",
            environment={"PW": secret("cmd_env")}, creates=f"{R}/env.out", depends_on=[top])
    if PHASE == "fail":
        Command("fail", command='echo "remote $PW"; echo "remote $PW" >&2; ' + ENCODE,
                environment={"PW": secret("fail_env")}, depends_on=[top])
    if PHASE == "slow":
        Command("slow", command=f"sleep @SLOW@; printf %s '{secret('slow_arg')}' > {R}/slow.out",
                creates=f"{R}/slow.out", depends_on=[top])


apply_role(web, "web")
output("dsn", f"postgres://app:{secret('db_password')}@db.internal/app")
output("api_key", secret("output_only"))
output("token", token)
output("generated", gen.result)
output("plain", "visible")
'''


@dataclass
class Project:
    root: Path
    world: Path          # the local machine's managed directory
    remote: str          # the host's managed directory
    logs: Path
    fleet: Fleet
    canaries: Canaries
    env: dict[str, str]
    host_ns: str         # the host's PID namespace
    captured: list[tuple[str, str, str]] = field(default_factory=list)  # (what, stream, text)
    timings: list[tuple[str, float]] = field(default_factory=list)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def write_stack(self, phase: str) -> None:
        text = (STACK.replace("@WORLD@", str(self.world)).replace("@REMOTE@", self.remote)
                .replace("@PHASE@", phase).replace("@SLOW@", SLOW))
        (self.root / "stack.py").write_text(text)

    def shown(self, result: Result) -> str:
        return self.canaries.hide(f"exit {result.returncode}\n{result.output}")

    def run(self, *args: str, expect: int | tuple[int, ...] | None = 0,
            env: dict[str, str] | None = None, input: str | None = None,
            capture: bool = True) -> Result:
        began = time.monotonic()
        result = run_tectum(*args, cwd=self.root, env={**self.env, **(env or {})}, input=input,
                            timeout=300)
        what = "tectum " + " ".join(args)
        self.timings.append((what, time.monotonic() - began))
        if capture:
            self.captured.append((what, "stdout", result.stdout))
            self.captured.append((what, "stderr", result.stderr))
        if expect is not None:
            codes = expect if isinstance(expect, tuple) else (expect,)
            assert result.returncode in codes, f"{what}:\n{self.shown(result)}"
        assert "Traceback" not in result.output, f"{what}:\n{self.shown(result)}"
        return result

    def run_tty(self, *args: str, answer: bytes = b"", expect: int = 0) -> bytes:
        """``tectum ARGS`` on a pseudo-terminal, in colour (what only a terminal gets: the
        live status line, colours, the approval prompt), typing ``answer``; returns all it
        wrote, which is kept as captured output both as is and without ANSI escapes."""
        master, slave = pty.openpty()
        env = {**tectum_env(self.env), "TERM": "xterm-256color"}
        env.pop("NO_COLOR", None)
        began = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "tectum", *args], cwd=self.root, env=env,
                                stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        self.started.append(proc)
        os.close(slave)
        os.write(master, answer)
        chunks: list[bytes] = []
        deadline = time.monotonic() + 300
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 1.0)
                if not ready:
                    if proc.poll() is not None:
                        break
                    continue
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every holder of the terminal has closed it
                    break
                if not data:
                    break
                chunks.append(data)
        finally:
            os.close(master)
        code = proc.wait(timeout=60)
        output = b"".join(chunks)
        what = "tectum " + " ".join(args) + " (on a terminal)"
        self.timings.append((what, time.monotonic() - began))
        plain = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", output)
        self.captured.append((what, "terminal", output.decode("utf-8", "replace")))
        self.captured.append((what, "terminal without escapes",
                              plain.decode("utf-8", "replace")))
        assert code == expect, f"{what}:\nexit {code}\n{self.canaries.hide(plain)}"
        assert b"Traceback" not in plain, f"{what}:\n{self.canaries.hide(plain)}"
        return plain

    def start(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        """``tectum ARGS`` in the background (its own session), stdout and stderr to files."""
        env = tectum_env(self.env)
        with open(self.logs / f"{name}.out", "wb") as out, \
                open(self.logs / f"{name}.err", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "tectum", *args], cwd=self.root,
                                    env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
        self.started.append(proc)
        return proc

    def remote_path(self, name: str) -> Path:
        """Where the host's file ``R/name`` is, seen from this machine (its overlay upper)."""
        return self.fleet.upper(HOST) / self.remote.lstrip("/") / name


def inventory(fleet: Fleet) -> str:
    h = fleet.host(HOST)
    return INVENTORY.format(key=h.key_path, known_hosts=h.known_hosts, name=h.name,
                            address=h.address, port=h.port)


def public_key(key_file: Path) -> str:
    for line in key_file.read_text().splitlines():
        if line.startswith("# public key: "):
            return line.split(": ", 1)[1].strip()
    raise AssertionError(f"no public key comment in {key_file}")


# ------------------------------------------------------------------------ the host's side

def host_pid_ns(fleet: Fleet) -> str:
    """The host's PID namespace (``pid:[INODE]``), as the host itself reports it."""
    ns = fleet.run(HOST, "readlink /proc/self/ns/pid", check=True).stdout.strip()
    assert ns.startswith("pid:["), ns
    assert ns != _pid_ns("self"), "the test host shares this machine's PID namespace"
    return ns


def host_init_pid(ns: str) -> int:
    """The host's PID 1 (its sshd), by its PID in this machine's namespace."""
    for name in os.listdir("/proc"):
        if not name.isdigit() or _pid_ns(name) != ns:
            continue
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{name}/status").read_text().splitlines():
                if line.startswith("NSpid:") and line.split()[-1] == "1":
                    return int(name)
    raise AssertionError(f"no PID 1 of {ns} in /proc")


def prove_host_processes_visible(fleet: Fleet, sampler: CmdlineSampler, ns: str) -> None:
    """A process started over SSH on the host, with a probe word in its arguments, shows up
    in this machine's ``/proc`` — in the host's PID namespace — and so would a secret."""
    probe = f"probe-{secrets.token_hex(8)}"
    fleet.run(HOST, f"sh -c 'sleep 0.6; true' {probe}", check=True)
    assert sampler.wait_for(lambda cmd, pns: probe.encode() in cmd and pns == ns, 5), \
        "the sampler did not see the host's probe process in /proc"
    assert sampler.wait_for(lambda cmd, pns: probe.encode() in cmd and pns != ns, 1), \
        "the sampler did not see the controller's ssh process with the probe"


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet(1, names=[HOST]) as fleet:
        yield fleet


@pytest.fixture(autouse=True)
def _no_workspace_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TECTUM_WORKSPACE", raising=False)
    for name in ("TECTUM_AGE_KEY", "TECTUM_AGE_KEY_FILE", "TECTUM_PG_CONN_STR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    if request.param == "postgres":
        return "postgres", request.getfixturevalue("pg_dsn")
    return "sqlite", None


# --------------------------------------------------------------------------------- dumps

def sqlite_dump(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def postgres_dump(dsn: str) -> bytes:
    """Every row of every table in the database (COPY text format), after a checkpoint so that
    the cluster's files on disk hold what the tables do."""
    import psycopg

    chunks: list[bytes] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')").fetchall()
        assert tables, "no tables in the PostgreSQL state database"
        for schema, table in tables:
            chunks.append(f"-- {schema}.{table}\n".encode())
            with conn.cursor() as cur, \
                    cur.copy(f'COPY "{schema}"."{table}" TO STDOUT') as copy:
                for data in copy:
                    chunks.append(bytes(data))
        conn.execute("CHECKPOINT")
    return b"".join(chunks)


# ------------------------------------------------------------------------------ the test

def test_no_canary_leaks_anywhere(fleet: Fleet, backend: tuple[str, str | None],
                                  tmp_path: Path) -> None:
    kind, dsn = backend
    started_at = time.time() - 1.0
    canaries = Canaries()
    for channel in (*FILE_SECRETS, "api_token"):
        canaries.new(channel)

    root, world, logs = tmp_path / "proj", tmp_path / "world", tmp_path / "logs"
    root.mkdir()
    logs.mkdir()
    remote = f"/srv/tectum-canary-{secrets.token_hex(4)}"
    key = tmp_path / "me.key"
    command_log = logs / "commands.jsonl"
    env = {"TECTUM_AGE_KEY_FILE": str(key), "TECTUM_VAR_api_token": canaries["api_token"],
           "TECTUM_COMMAND_LOG": str(command_log)}
    ns = host_pid_ns(fleet)
    proj = Project(root, world, remote, logs, fleet, canaries, env, ns)
    (root / "inventory.toml").write_text(inventory(fleet))
    (root / "app.conf.j2").write_text(TEMPLATE)
    if dsn is not None:
        (root / "tectum.toml").write_text(f'[state]\nbackend = "postgres"\nconn_str = "{dsn}"\n')
    proj.write_stack("main")

    init_pid = host_init_pid(ns)
    sampler = CmdlineSampler()
    try:
        with sampler:
            prove_host_processes_visible(fleet, sampler, ns)
            run_flow(proj)
            expected = expected_destinations(proj)
            for path in expected:
                where = (f"{HOST}:/{path.relative_to(fleet.upper(HOST))}"
                         if path.is_relative_to(fleet.upper(HOST)) else f"local:{path}")
                canaries.add_digests(f"content of {where}", path.read_bytes())
            # the search finds what is there: each destination, searched the same way
            probe = Scan(canaries)
            for path in expected:
                probe.file(path)
            assert {(h.where, h.channel) for h in probe.hits if h.kind == "plain"} == \
                {(str(p), c) for p, channels in expected.items() for c in channels}
            scan = Scan(canaries)
            began = time.monotonic()
            search_everywhere(scan, proj, sampler, dsn, started_at, init_pid, exclude=expected)
            proj.timings.append((f"search ({scan.files} files, {scan.size} bytes)",
                                 time.monotonic() - began))
            before_destroy = scan.hits

            proj.run_tty("destroy", answer=b"yes\n")
            for path in expected:
                assert not path.exists(), f"{path} is still there after destroy"
            listed = proj.run("state", "list").stdout.split()
            assert listed == [], listed
        scan = Scan(canaries)
        began = time.monotonic()
        search_everywhere(scan, proj, sampler, dsn, started_at, init_pid, exclude={})
        proj.timings.append((f"search ({scan.files} files, {scan.size} bytes)",
                             time.monotonic() - began))
        after_destroy = scan.hits
    finally:
        sampler.stop()
        for proc in proj.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(Exception):
            fleet.run(HOST, f"rm -rf {remote}")

    print(f"\n{kind}: {sampler.samples} samples of /proc, {len(sampler.seen)} command lines, "
          f"{sampler.busy:.1f}s sampling, longest gap {sampler.longest_gap:.3f}s")
    for what, took in proj.timings:
        print(f"  {took:6.2f}s  {canaries.hide(what)}")
    # the search was not vacuous
    assert sampler.samples > 100, sampler.samples
    seen = sampler.snapshot()
    assert any(b"-m\0tectum\0apply" in cmd for _pid, cmd in seen), \
        "the sampler never saw a tectum apply"
    slow_sleep = b"sleep\0" + SLOW.encode() + b"\0"
    assert any(cmd == slow_sleep and pns == ns for (_pid, cmd), pns in seen.items()), \
        "the sampler never saw the slow command's sleep in the host's PID namespace"
    assert scan.files > 10, scan.files
    assert command_log.is_file() and command_log.stat().st_size > 0

    hits = list(dict.fromkeys(before_destroy + after_destroy))
    encoded = [h for h in hits if not h.kind.startswith("unsalted")]
    digests = [h for h in hits if h.kind.startswith("unsalted")]
    report = []
    if encoded:
        report.append(f"{len(encoded)} leak(s) of canary values (plain, base64, hex or "
                      "URL-encoded; shown as <canary:CHANNEL>):")
        report += [f"  {h}" for h in encoded]
    if digests:
        report.append(f"{len(digests)} unsalted digest(s) of secrets or of texts that hold "
                      "them (issue #5 allows only a salted hash):")
        report += [f"  {h}" for h in digests]
    assert not report, "\n".join(report)


def run_flow(proj: Project) -> None:
    """Secrets set with the real CLI, then every command of tectum over the stack."""
    canaries, root, tmp = proj.canaries, proj.root, proj.root.parent
    proj.run("secrets", "keygen", "-o", str(tmp / "me.key"))
    proj.run("secrets", "init", str(root))
    for channel in FILE_SECRETS:  # the value on stdin, never on a command line
        proj.run("secrets", "set", channel, input=canaries[channel])
    secrets_file = (root / "secrets" / "default.yaml").read_text()
    assert all(f"{c}:" in secrets_file for c in FILE_SECRETS)

    # plan, saved and as JSON; the saved plan shown and applied exactly
    plan_file = tmp / "saved.plan"
    plan = proj.run("plan", "-out", str(plan_file))
    assert "(sensitive value)" in plan.stdout, proj.shown(plan)
    proj.run("plan", "--json")
    proj.run("show", str(plan_file))
    proj.run("show", "--json", str(plan_file))
    # a plan for CI: encrypted to the CI key, which alone can read it
    ci_key = tmp / "ci.key"
    proj.run("secrets", "keygen", "-o", str(ci_key))
    ci_plan = tmp / "ci.plan"
    proj.run("plan", "-out", str(ci_plan), "--encrypt-to", public_key(ci_key))
    assert ci_plan.read_bytes().startswith(b"age-encryption.org/v1")
    proj.run("show", str(ci_plan), env={"TECTUM_AGE_KEY_FILE": str(ci_key)})
    applied = proj.run("apply", str(plan_file))
    assert "dsn = (sensitive value)" in applied.stdout, proj.shown(applied)

    generated = proj.remote_path("gen.txt").read_text().strip()
    assert len(generated) == 24, "the generated password did not reach the host"
    canaries.add("gen", generated)

    # a failing apply: commands print a secret from their environment, then exit 1
    proj.write_stack("fail")
    failed = proj.run("apply", "--auto-approve", expect=1)
    assert "command.fail" in failed.output and "command.local_fail" in failed.output, \
        proj.shown(failed)
    # what the commands printed is shown, with the secret masked
    assert "local (sensitive value)" in failed.stderr, proj.shown(failed)
    assert "remote (sensitive value)" in failed.stderr, proj.shown(failed)
    # and what they printed encoded: 6 lines each (3 alignments × base64, hex)
    # (pytest.fail, not assert: an assertion would print the lines as they are)
    encoded = [line for line in failed.stderr.splitlines()
               if re.search(r"(^|: )(b64|hex) ", line)]
    if len(encoded) < 12:
        pytest.fail(f"the encoded forms were not printed:\n{proj.shown(failed)}")
    unmasked = [line for line in encoded if "(sensitive value)" not in line]
    if unmasked:
        pytest.fail("encoded secrets printed unmasked:\n" + canaries.hide("\n".join(unmasked)))

    # a killed apply: SIGKILL while the host runs a command whose script holds a secret
    proj.write_stack("slow")
    killed = proj.start("apply", "--auto-approve", name="killed-apply")
    deadline = time.monotonic() + 120
    while not host_processes(("sleep", SLOW), proj.host_ns):
        assert killed.poll() is None, \
            canaries.hide((proj.logs / "killed-apply.err").read_bytes())
        assert time.monotonic() < deadline, "the slow command never started on the host"
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    for stream in ("out", "err"):
        proj.captured.append(("killed tectum apply", stream,
                              (proj.logs / f"killed-apply.{stream}").read_text(errors="replace")))
    proj.run("apply", "--auto-approve")
    assert proj.remote_path("slow.out").read_text() == canaries["slow_arg"]

    # drift: the rendered file changed by hand on the host, reported, recorded, repaired
    proj.fleet.run(HOST, f"echo hand-edit >> {proj.remote}/app.conf", check=True)
    canaries.add_digests(f"content of {HOST}:{proj.remote}/app.conf after a hand edit",
                         proj.remote_path("app.conf").read_bytes())
    drift = proj.run("drift", "--json")
    json.loads(drift.stdout)
    assert 'file.conf' in drift.stdout, proj.shown(drift)
    proj.run("drift")
    refreshed = proj.run("refresh")
    assert "file.conf" in refreshed.stdout, proj.shown(refreshed)
    replan = proj.run("plan")
    assert "file.conf" in replan.stdout, proj.shown(replan)
    # the diff's context shows the Basic auth line: each of its three encodings masked
    basic = [line for line in replan.stdout.splitlines() if "basic=" in line]
    if not basic or any(line.count("(sensitive value)") != 3 for line in basic):
        pytest.fail(f"the Basic auth line is not shown masked:\n{proj.shown(replan)}")
    repaired = proj.run_tty("apply", answer=b"yes\n")
    assert b"(sensitive value)" in repaired and b"Enter a value" in repaired, \
        canaries.hide(repaired)
    if not any(line.count(b"(sensitive value)") == 3
               for line in repaired.splitlines() if b"basic=" in line):
        pytest.fail(f"the Basic auth line is not shown masked:\n{canaries.hide(repaired)}")
    assert b"hosts done" in repaired, canaries.hide(repaired)  # the live status line
    assert "hand-edit" not in proj.remote_path("app.conf").read_text()
    proj.run("plan", "--detailed-exitcode")

    # everything that prints state or outputs
    proj.run("show")
    proj.run("show", "--json")
    addresses = proj.run("state", "list").stdout.split()
    for suffix in ("file.conf", "random_password.gen", "command.arg"):
        address = next((a for a in addresses if a.endswith(suffix)), None)
        assert address is not None, (suffix, addresses)
        proj.run("state", "show", address)
    history = proj.run("state", "history").stdout.splitlines()
    serials = [int(line.split()[0]) for line in history
               if line.split() and line.split()[0].isdigit()]
    assert len(serials) >= 3, history
    proj.run("state", "diff", str(min(serials)), str(max(serials)))
    # a return to the first version, from the desired state kept with it (secrets sealed)
    rollback_plan = tmp / "rollback.plan"
    proj.run("rollback", "--to", str(min(serials)), "-out", str(rollback_plan))
    proj.run("show", str(rollback_plan))
    proj.run("validate", expect=None)  # its output is searched; whether it passes is not ours
    proj.run("graph")
    proj.run("output")
    proj.run("output", "--json")
    for name, form in (("dsn", ()), ("api_key", ("--json",)), ("generated", ("--raw",))):
        shown = proj.run("output", name, *form)
        assert "(sensitive value)" in shown.stdout, proj.shown(shown)
    revealed = proj.run("output", "api_key", "--reveal", "--raw", capture=False)
    assert canaries["output_only"] in revealed.stdout, \
        "output --reveal does not print the secret"
    assert "reveal" in revealed.stderr.lower(), "output --reveal does not say it reveals"
    pulled = proj.run("state", "pull")
    json.loads(pulled.stdout)


def host_processes(argv: tuple[str, ...], ns: str) -> list[int]:
    """The processes of the host (PID namespace ``ns``) running exactly ``argv``."""
    want = b"\0".join(a.encode() for a in argv) + b"\0"
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and _pid_ns(name) == ns:
            try:
                with open(f"/proc/{name}/cmdline", "rb") as fh:
                    if fh.read() == want:
                        found.append(int(name))
            except OSError:
                pass
    return found


def expected_destinations(proj: Project) -> dict[Path, tuple[str, ...]]:
    """The files the secrets are meant to reach, each with its canaries; asserted here."""
    w, remote = proj.world, proj.remote_path
    expected: dict[Path, tuple[str, ...]] = {
        w / "app.conf": ("db_password", "api_token"),
        w / "arg.out": ("cmd_arg",),
        w / "env.out": ("cmd_env",),
        remote("app.conf"): ("db_password", "api_token"),
        remote("inline.txt"): ("inline_key",),
        remote("gen.txt"): ("gen",),
        remote("arg.out"): ("cmd_arg",),
        remote("env.out"): ("cmd_env",),
        remote("slow.out"): ("slow_arg",),
    }
    for path, channels in expected.items():
        data = path.read_bytes()
        for channel in channels:
            assert proj.canaries[channel].encode() in data, \
                f"{path} does not hold the {channel} canary: {proj.canaries.hide(data)!r}"
    conf = proj.canaries
    basic = " ".join(base64.b64encode(f"{user}{conf['db_password']}".encode()).decode()
                     for user in AUTH_USERS)
    assert remote("app.conf").read_text() == w.joinpath("app.conf").read_text() == (
        f"# rendered by tectum\nuser=app\npassword={conf['db_password']}\n"
        f"token={conf['api_token']}\nbasic={basic}\n")
    # the search knows the encoded forms the file holds (so it would find them elsewhere)
    data = remote("app.conf").read_bytes()
    kinds = {kind for _start, _end, channel, kind in proj.canaries.found(data)
             if channel == "db_password"}
    assert {"base64 (alignment 1)", "base64 (alignment 2)"} <= kinds, kinds
    for path in expected:  # the mode asked for, or the command's umask
        if path.name.endswith((".conf", ".txt")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    return expected


def elsewhere(path: str, proj: Project) -> bool:
    """Directories under the temporary directories that the search of them skips: those
    searched in full on their own (this test's ``tmp_path``, its host's disk) and those of
    other test runs on this machine (other pytest base directories, other fleets' host disks),
    which no process of this test writes to and which can hold gigabytes."""
    tmp_path = proj.root.parent
    fleet_dir = str(proj.fleet.tmpdir)
    if path == str(tmp_path) or path == str(proj.fleet.upper(HOST)):
        return True
    base = os.path.dirname(path)
    if re.fullmatch(r".*/pytest-of-[^/]+", base) and re.fullmatch(r"pytest-\d+",
                                                                  os.path.basename(path)):
        return not str(tmp_path).startswith(path + "/")
    return os.path.basename(path).startswith("tectum-fleet-") and path != fleet_dir


def search_everywhere(scan: Scan, proj: Project, sampler: CmdlineSampler, dsn: str | None,
                      since: float, init_pid: int, exclude: dict[Path, tuple[str, ...]]) -> None:
    """Every place a canary must not be, into ``scan``."""
    for what, stream, text in proj.captured:
        scan.data(text, f"{stream} of `{what}`")
    # the project: stack, secrets file, .tectum/ (state.db, -wal, -shm, locks), plans, logs
    scan.tree(proj.root.parent, exclude=exclude)
    db = proj.root / ".tectum" / "state.db"
    if dsn is None:
        assert db.is_file(), "no SQLite state database"
        scan.data(sqlite_dump(db), f"SQL dump of {db}")
    else:
        assert not db.exists(), "state went to SQLite, not to PostgreSQL"
        scan.data(postgres_dump(dsn), "the PostgreSQL state tables")
    # the controller's temporary directories: files changed during the test
    temps = {"/tmp", "/var/tmp", "/dev/shm", os.environ.get("TMPDIR") or "/tmp"}
    for top in sorted(temps):
        if os.path.isdir(top):
            scan.tree(Path(top), exclude=exclude, since=since,
                      prune=lambda path: elsewhere(path, proj))
    # the test host: everything it changed on disk, and its tmpfs mounts
    upper = proj.fleet.upper(HOST)
    scan.tree(upper, exclude=exclude,
              label=lambda p: f"{HOST}:/{p.relative_to(upper)} (overlay upper)")
    host_root = Path(f"/proc/{init_pid}/root")
    for top in ("run", "dev/shm"):
        scan.tree(host_root / top, label=lambda p: f"{HOST}:/{p.relative_to(host_root)}")
    # command lines of every process seen while the test ran
    host_ns = _pid_ns(init_pid)
    cmdlines = sampler.snapshot()
    if not proj.canaries.found(b"\n".join(cmd for _pid, cmd in cmdlines)):
        return
    for (pid, cmdline), pns in cmdlines.items():
        where = "test host" if pns == host_ns else "controller"
        for hit in proj.canaries.scan(cmdline, f"command line of pid {pid} on the {where}"):
            scan.hits.append(Hit(hit.where, hit.channel, hit.kind,
                                 repr(proj.canaries.hide(show_cmdline(cmdline)))))
