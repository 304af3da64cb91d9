"""Benchmark: the state backends (embedded SQLite, PostgreSQL) — journal commits, plan from
state, and how soon a finished resource is durable.

Every measurement runs on both backends: SQLite as tectum configures it (a file in a temporary
directory, WAL, ``synchronous=NORMAL``) and PostgreSQL on a private cluster this script starts
(``initdb`` + ``postgres`` as the ``postgres`` user, helpers from ``tests/backends/conftest.py``)
and stops at the end. Unlike the test fixture's cluster (``fsync=off``,
``synchronous_commit=off``), this one keeps PostgreSQL's default durability — ``fsync``,
``synchronous_commit`` and ``full_page_writes`` on — since commit latency is what is measured.

1. **commit** — journal write latency after each resource. A state already holding N resources
   (``--sizes``, default 1,000 and 10,000), then N single-resource commits
   ``backend.record(serial, [(address, "update", record)])``: p50 / p99 / max ms. Side by side:
   a *floor* (the same row — JSON encoding included — inserted and committed through the bare
   driver, one statement, autocommit) and, for context, the same N updates committed in batches
   of 10 as a walk round would group them, the ``read()`` that replays the N journal entries, the
   ``write()`` of the N-resource version, and each backend in its other durability setting
   (SQLite ``synchronous=FULL``; PostgreSQL ``synchronous_commit=off``). Budget (derived, not
   from the issue): a commit p99 within 1 s - ``JOURNAL_INTERVAL``, what the applier leaves of
   the durability target.
2. **plan** — ``python -m tectum plan -refresh=false DIR`` on a project of 10,000 File resources
   in 100 directories, applied once beforehand (real files; untimed): whole-process wall time
   (median of ``--reps``) and peak memory (``ru_maxrss`` of that process, from ``wait4`` in a
   small helper that forks it — see ``SPAWN_CODE``; ~10 MB is the least it can report). Targets
   (issue): < 2 s and < 300 MB. For reading it: the start-up floor ``python -m tectum --version``.
   Next to it, on the same project and state, the **default plan** — ``python -m tectum plan
   DIR``, refresh on: it reads every one of the 10,100 objects on disk (each file's type, mode,
   owner and content, hashed) before it compares — timed the same way, each repetition right
   after the ``-refresh=false`` one (so the two share the machine's state), with the ratio of the
   medians (default / ``-refresh=false``) and the cost per file of the refresh. For reading it: a
   *read floor*, a bare Python process that only lstats, reads and SHA-256-hashes the same files
   (as in bench/local_files.py). The page cache is warm (the files were just written and read by
   the warm-up run): a cold read is the disk's business. No target for the default plan (the
   issue sets none): reported, not judged. Untimed, afterwards: one file is changed by hand,
   and the default plan must find a change (exit 2 with ``--detailed-exitcode``) where
   ``-refresh=false`` finds none (exit 0), the proof that the default plan did read the files.
   The files are real, under the temporary directory, and removed with it.
3. **durability** — a real apply through the Python API (``Session.evaluate / read_state /
   plan / apply``) of 2,000 files in 20 directories with ``Command`` resources mixed in, each
   resource's "done" event time (``on_event``) against the time the ``record`` call that held
   it returned (``session.backend.record`` wrapped): p50 / p99 / max of the lag over ``--reps``
   applies. Target (issue): <= 1 s (Terraform's remote backends allow 20 s). Two scenarios:
   ``mixed`` — 20 commands running ``sleep 0.1`` spread through the files; ``tail`` — one
   command running ``sleep 2`` after all the files (as a service restart after its config
   files). Also shown: the lag from the provider's ``apply`` returning (in the worker thread),
   the number of commits and entries per commit.

Every process gets the caller's environment minus ``DROPPED_ENV`` (``TECTUM_PG_CONN_STR`` and
``TECTUM_WORKSPACE`` would redirect the state; the Python settings change start-up cost).
Everything is created under one temporary directory, removed at the end with the cluster (also
on Ctrl-C or SIGTERM).

Usage::

    python bench/state.py [--sizes 1000,10000] [--reps 3] [--skip-postgres] [--json FILE]
    python bench/state.py --only plan --skip-postgres   # measurement 2 alone, SQLite only

Exit status: 0 when every target (and budget) is met, 1 when one is missed (or a run failed).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType, MethodType
from typing import Any, Protocol

from tectum.backends.base import JournalEntry, StateBackend
from tectum.backends.sqlite import SQLiteBackend
from tectum.engine.applier import JOURNAL_INTERVAL
from tectum.state.model import ResourceRecord, State

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DROPPED_ENV = ("TECTUM_PG_CONN_STR", "TECTUM_WORKSPACE", "TECTUM_COMMAND_LOG",
               "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONPROFILEIMPORTTIME",
               "PYTHONDEVMODE", "PYTHONTRACEMALLOC", "PYTHONMALLOC", "PYTHONMALLOCSTATS",
               "PYTHONINSPECT", "PYTHONVERBOSE")
MEASUREMENTS = ("commit", "plan", "durability")

BATCH = 10  # entries per commit in the grouped run of measurement 1
FLOOR_SAMPLES = 2000  # bare-driver commits per repetition (the floor does not depend on N)
DURABLE_TARGET_S = 1.0
COMMIT_BUDGET_S = DURABLE_TARGET_S - JOURNAL_INTERVAL
PLAN_RESOURCES = 10_000
PLAN_DIRS = 100
PLAN_TARGET_S = 2.0
PLAN_TARGET_MB = 300.0
DURABLE_FILES = 2000
DURABLE_DIRS = 20
MIXED_COMMANDS = 20
MIXED_SLEEP = 0.1
TAIL_SLEEP = 2.0

# The content of file i: distinct per file, ~300 bytes (as in bench/local_files.py).
CONTENT_SRC = '''
def content(i):
    head = f"# file {i} managed by tectum (benchmark)\\n"
    body = "".join(f"line {k}: {(i * 7919 + k * 104729) % 1000003:07d} lorem ipsum dolor\\n"
                   for k in range(8))
    return head + body
'''

STACK_TEMPLATE = '''"""Generated by bench/state.py: {n} files in {n_dirs} directories{extra}."""

from tectum.host import Command, Directory, File

ROOT = {root!r}
{content_src}
dirs = [Directory(f"d{{j}}", path=f"{{ROOT}}/d{{j}}", mode="0755") for j in range({n_dirs})]
files = []
for i in range({n}):
    d = dirs[i % {n_dirs}]
    files.append(File(f"f{{i}}", path=f"{{d.path}}/f{{i}}.txt", content=content(i),
                      mode="0644"))
{commands}
'''

SCENARIOS: dict[str, tuple[str, str]] = {
    # name: (description, commands appended to the stack)
    "mixed": (f"{MIXED_COMMANDS} commands `sleep {MIXED_SLEEP:g}` spread through the files",
              f"step = len(files) // {MIXED_COMMANDS}\n"
              f"for k in range({MIXED_COMMANDS}):\n"
              f"    Command(f\"slow{{k}}\", command=\"sleep {MIXED_SLEEP:g}\",\n"
              f"            depends_on=[files[k * step + step // 2]])\n"),
    "tail": (f"then one command `sleep {TAIL_SLEEP:g}` after all the files",
             f"Command(\"tail\", command=\"sleep {TAIL_SLEEP:g}\", depends_on=files)\n"),
}


# -- helpers ------------------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile, linear between closest ranks (numpy's default)."""
    s = sorted(values)
    if not s:
        return math.nan
    k = (len(s) - 1) * p / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms(seconds: float) -> float:
    return seconds * 1000.0


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "FAIL")


def log(verbose: bool, text: str) -> None:
    if verbose:
        print(text, file=sys.stderr, flush=True)


def file_record(i: int, version: int) -> ResourceRecord:
    """A state record shaped like the one the file provider stores for file ``f{i}``."""
    d = i % PLAN_DIRS
    return ResourceRecord(
        f"file.f{i}", "file",
        {"path": f"/srv/bench/d{d}/f{i}.txt", "mode": "0644",
         "content_sha256": hashlib.sha256(f"{i}:{version}".encode()).hexdigest()},
        [f"directory.d{d}"], f"/srv/bench/stack.py:{12 + i % 7}")


def write_stack(project: str, root: str, n: int, n_dirs: int, scenario: str | None,
                state_toml: str) -> None:
    os.makedirs(project, exist_ok=True)
    os.makedirs(root, exist_ok=True)  # the directories' parent (tectum creates no parents)
    extra, commands = SCENARIOS[scenario] if scenario else ("", "")
    with open(os.path.join(project, "stack.py"), "w", encoding="utf-8") as fh:
        fh.write(STACK_TEMPLATE.format(n=n, n_dirs=n_dirs, root=root, content_src=CONTENT_SRC,
                                       extra=f", {extra}" if extra else "",
                                       commands=commands))
    if state_toml:
        with open(os.path.join(project, "tectum.toml"), "w", encoding="utf-8") as fh:
            fh.write(state_toml)


# -- the PostgreSQL cluster ---------------------------------------------------------------------
def _start_durable_server(cluster: Any) -> None:
    """``_Cluster._start_server`` of tests/backends/conftest.py with PostgreSQL's default
    durability instead of the tests' ``fsync=off``, ``synchronous_commit=off`` and
    ``full_page_writes=off`` (the postmaster still runs as our child, and is reaped here)."""
    with open(cluster.log, "ab") as log_file:
        cluster.server = subprocess.Popen(
            [*cluster.prefix, str(cluster.bindir / "postgres"), "-D", str(cluster.data),
             "-p", str(cluster.port), "-k", str(cluster.root),
             "-c", "listen_addresses=127.0.0.1"],
            cwd=cluster.root, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
    deadline = time.monotonic() + 30
    while True:
        ready = subprocess.run(
            [str(cluster.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p",
             str(cluster.port), "-t", "1"], stdin=subprocess.DEVNULL).returncode == 0
        if ready and cluster._postmaster_pid() == cluster._server_pid():
            return
        if cluster.server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("postgres did not start:\n"
                               + cluster.log.read_text(errors="replace"))
        time.sleep(0.05)


class PgCluster:
    """A private PostgreSQL cluster (tests/backends/conftest.py's ``_Cluster``, durable)."""

    def __init__(self) -> None:
        if REPO not in sys.path:
            sys.path.insert(0, REPO)
        try:
            import pytest

            from tests.backends import conftest
        except ImportError as exc:
            raise SystemExit(f"cannot import tests/backends/conftest.py ({exc}); it needs "
                             "pytest (pip install -e '.[dev]'), or pass --skip-postgres"
                             ) from None
        try:
            self._cluster: Any = conftest._Cluster(conftest._pg_bindir())
        except pytest.fail.Exception as exc:
            raise SystemExit(f"PostgreSQL: {exc}; or pass --skip-postgres") from None
        # an instance attribute, shadowing the method (the only change to the test cluster)
        vars(self._cluster)["_start_server"] = MethodType(_start_durable_server, self._cluster)
        self.pid: int | None = None
        self.version = ""

    def start(self) -> None:
        self._cluster.start()
        self.pid = self._cluster._postmaster_pid()
        import psycopg

        with psycopg.connect(self.dsn("tectum_test"), autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('server_version'), "
                               "current_setting('fsync'), current_setting('synchronous_commit'),"
                               " current_setting('full_page_writes')").fetchone()
        assert row is not None
        self.version = f"{row[0]} (fsync={row[1]}, synchronous_commit={row[2]}, " \
                       f"full_page_writes={row[3]})"

    def dsn(self, dbname: str, options: str = "") -> str:
        dsn = f"host=127.0.0.1 port={self._cluster.port} user=postgres dbname={dbname}"
        return f"{dsn} options='{options}'" if options else dsn

    def create_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn("tectum_test"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def stop(self) -> bool:
        """Stop the server and remove its directory; True when the postmaster is gone."""
        self._cluster.stop()
        if self.pid is None:
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


# -- 1. commit latency --------------------------------------------------------------------------
class Floor(Protocol):
    def commit(self, serial: int, rec: ResourceRecord) -> None: ...

    def close(self) -> None: ...


_INSERT = ("INSERT INTO journal (workspace, base_serial, address, action, record, created_at) "
           "VALUES ({p}, {p}, {p}, {p}, {p}, {p})")


class SQLiteFloor:
    """One journal row per commit through bare sqlite3 (autocommit: the INSERT is the
    transaction), on the backend's database file and with its synchronous setting."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.sql = _INSERT.format(p="?")

    def commit(self, serial: int, rec: ResourceRecord) -> None:
        self.db.execute(self.sql, ("bench-floor", serial, rec.address, "update",
                                   json.dumps(rec.to_json()), time.time()))

    def close(self) -> None:
        self.db.close()


class PgFloor:
    """One journal row per commit through bare psycopg (autocommit: one round trip)."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.sql = _INSERT.format(p="%s")

    def commit(self, serial: int, rec: ResourceRecord) -> None:
        self.conn.execute(self.sql, ("bench-floor", serial, rec.address, "update",
                                     json.dumps(rec.to_json(), separators=(",", ":")),
                                     time.time()))

    def close(self) -> None:
        self.conn.execute("DELETE FROM journal WHERE workspace = 'bench-floor'")
        self.conn.close()


@dataclass(frozen=True)
class Variant:
    """A backend in one durability setting; ``primary``: as tectum configures it (judged
    against the budget); otherwise context."""

    backend: str
    config: str
    primary: bool
    make: Callable[[str], StateBackend]  # key -> a fresh backend (own file or workspace)
    floor: Callable[[str], Floor]  # key -> the bare-driver floor on the same database


def sqlite_variant(workdir: str, synchronous: str, primary: bool) -> Variant:
    folder = os.path.join(workdir, f"commit-sqlite-{synchronous.lower()}")
    os.makedirs(folder, exist_ok=True)

    def make(key: str) -> StateBackend:
        backend = SQLiteBackend(os.path.join(folder, f"{key}.db"))
        if synchronous != "NORMAL":  # the backend sets NORMAL when it connects
            backend.db.execute(f"PRAGMA synchronous={synchronous}")
        return backend

    def floor(key: str) -> Floor:
        return SQLiteFloor(os.path.join(folder, f"{key}.db"), synchronous)

    config = f"WAL, synchronous={synchronous}" + (" (tectum's)" if primary else "")
    return Variant("sqlite", config, primary, make, floor)


def pg_variant(dsn: str, synchronous_commit: str, primary: bool) -> Variant:
    from tectum.backends.postgres import PostgresBackend

    if synchronous_commit != "on":
        dsn = f"{dsn} options='-c synchronous_commit={synchronous_commit}'"

    def make(key: str) -> StateBackend:
        return PostgresBackend(dsn, key)

    def floor(key: str) -> Floor:
        return PgFloor(dsn)

    config = f"synchronous_commit={synchronous_commit}" + (" (default)" if primary else "")
    return Variant("postgres", config, primary, make, floor)


@dataclass
class CommitSamples:
    single: list[float] = field(default_factory=list)  # seconds per single-entry commit
    batched: list[float] = field(default_factory=list)  # seconds per BATCH-entry commit
    floor: list[float] = field(default_factory=list)  # seconds per bare-driver commit
    replay_read: list[float] = field(default_factory=list)  # read() replaying N entries
    version_write: list[float] = field(default_factory=list)  # write() of N resources


def commit_run(variant: Variant, n: int, rep: int, out: CommitSamples) -> None:
    key = f"n{n}-r{rep}"
    backend = variant.make(key)
    try:
        state = State.new()
        for i in range(n):
            rec = file_record(i, 0)
            state.resources[rec.address] = rec
        t0 = time.perf_counter()
        serial = backend.write(state, "apply")
        out.version_write.append(time.perf_counter() - t0)

        updates = [file_record(i, 1) for i in range(n)]
        for rec in updates:
            entry: list[JournalEntry] = [(rec.address, "update", rec)]
            t0 = time.perf_counter()
            backend.record(serial, entry)
            out.single.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        replayed = backend.read()
        out.replay_read.append(time.perf_counter() - t0)
        last = updates[-1]
        if replayed.serial != serial or len(replayed.resources) != n \
                or replayed.resources[last.address].attributes != last.attributes:
            raise SystemExit(f"{variant.backend}: the journal replay lost updates (n={n})")
        serial = backend.write(replayed, "apply")  # folds the journal into a version

        updates = [file_record(i, 2) for i in range(n)]
        for k in range(0, n, BATCH):
            entries: list[JournalEntry] = [(r.address, "update", r)
                                           for r in updates[k:k + BATCH]]
            t0 = time.perf_counter()
            backend.record(serial, entries)
            out.batched.append(time.perf_counter() - t0)
        final = backend.read()
        if final.resources[updates[-1].address].attributes != updates[-1].attributes:
            raise SystemExit(f"{variant.backend}: the batched journal lost updates (n={n})")
    finally:
        backend.close()
    floor = variant.floor(key)
    try:
        for i in range(min(n, FLOOR_SAMPLES)):
            rec = file_record(i, 3)
            t0 = time.perf_counter()
            floor.commit(serial, rec)
            out.floor.append(time.perf_counter() - t0)
    finally:
        floor.close()


def measure_commits(variants: Sequence[Variant], sizes: Sequence[int], reps: int,
                    verbose: bool) -> list[dict[str, Any]]:
    rows = []
    for variant in variants:
        for n in sizes:
            samples = CommitSamples()
            for rep in range(reps):
                t0 = time.perf_counter()
                commit_run(variant, n, rep, samples)
                log(verbose, f"  commit {variant.backend} {variant.config} n={n} rep "
                    f"{rep + 1}/{reps}: {time.perf_counter() - t0:.1f} s")
            p99 = percentile(samples.single, 99)
            single_total = statistics.fmean(samples.single)
            per_resource_batched = statistics.fmean(samples.batched) / BATCH
            rows.append({
                "backend": variant.backend, "config": variant.config,
                "primary": variant.primary, "n": n, "commits": len(samples.single),
                "p50_ms": ms(percentile(samples.single, 50)), "p99_ms": ms(p99),
                "max_ms": ms(max(samples.single)), "mean_ms": ms(single_total),
                "floor_p50_ms": ms(percentile(samples.floor, 50)),
                "floor_p99_ms": ms(percentile(samples.floor, 99)),
                "x_floor": percentile(samples.single, 50) / percentile(samples.floor, 50),
                "batch": BATCH,
                "batch_p50_ms": ms(percentile(samples.batched, 50)),
                "batch_p99_ms": ms(percentile(samples.batched, 99)),
                "per_resource_single_us": 1e6 * single_total,
                "per_resource_batched_us": 1e6 * per_resource_batched,
                "batch_speedup": single_total / per_resource_batched,
                "replay_read_ms": ms(statistics.median(samples.replay_read)),
                "version_write_ms": ms(statistics.median(samples.version_write)),
                "budget_ms": ms(COMMIT_BUDGET_S),
                "pass": (p99 <= COMMIT_BUDGET_S) if variant.primary else None,
            })
    return rows


# -- 2. plan, -refresh=false and default -----------------------------------------------------------
@dataclass(frozen=True)
class Proc:
    wall: float  # seconds, whole process
    cpu: float  # user + system seconds of the process
    maxrss_mb: float  # peak resident set of the process


# Runs a command and reports its wall time and rusage. A child's ru_maxrss on Linux starts at
# the RSS of the process it was forked from (exec keeps the old address space's high-water
# mark), and this benchmark's own process holds ~100 MB after measurement 1: so the measured
# process is forked by this small, freshly started helper instead (its children start at ~10 MB).
SPAWN_CODE = """
import json, os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(out, "w") as fh:
    json.dump({"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "maxrss_kb": ru.ru_maxrss}, fh)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


# The read floor of measurement 2: what any tool has to do to know the files are right — stat,
# read, hash (as bench/local_files.py's FLOOR_CODE; the same layout as STACK_TEMPLATE's).
READ_FLOOR_CODE = """
import hashlib, os, sys
root, n, n_dirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for j in range(n_dirs):
    os.lstat(f"{root}/d{j}")
for i in range(n):
    p = f"{root}/d{i % n_dirs}/f{i}.txt"
    os.lstat(p)
    with open(p, "rb") as fh:
        hashlib.sha256(fh.read()).hexdigest()
"""


class Runner:
    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
        self.report = os.path.join(workdir, "spawn-report.json")

    def run(self, argv: Sequence[str], what: str, ok_codes: Sequence[int] = (0,)) -> Proc:
        """Run ``argv`` (through the helper) to its end: wall time from fork to exit, cpu
        (user + system) and peak RSS of that process alone."""
        proc = subprocess.run([sys.executable, "-c", SPAWN_CODE, self.report, *argv],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=self.env, cwd=self.workdir,
                              check=False)
        if proc.returncode not in ok_codes:
            sys.stderr.write(proc.stderr.decode("utf-8", "replace"))
            raise SystemExit(f"{what} failed with exit code {proc.returncode}")
        with open(self.report, encoding="utf-8") as fh:
            got = json.load(fh)
        os.unlink(self.report)
        return Proc(got["wall"], got["cpu"], got["maxrss_kb"] / 1024)  # kB on Linux

    def tectum(self, *args: str, what: str, ok_codes: Sequence[int] = (0,)) -> Proc:
        return self.run([sys.executable, "-m", "tectum", *args], what, ok_codes)


def state_doc_bytes(backend: str, where: str) -> int:
    """Length of the latest state document (SQLite path or PostgreSQL DSN)."""
    sql = "SELECT length(document) FROM states ORDER BY serial DESC LIMIT 1"
    if backend == "sqlite":
        with contextlib.closing(sqlite3.connect(where)) as db:
            row = db.execute(sql).fetchone()
    else:
        import psycopg

        with psycopg.connect(where) as conn:
            row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _spread(times: Sequence[Proc]) -> dict[str, Any]:
    """Median, min and max wall seconds, median cpu, peak RSS and every wall time of TIMES."""
    return {"median_s": statistics.median(t.wall for t in times),
            "min_s": min(t.wall for t in times), "max_s": max(t.wall for t in times),
            "median_cpu_s": statistics.median(t.cpu for t in times),
            "peak_rss_mb": max(t.maxrss_mb for t in times),
            "times_s": [t.wall for t in times], "rss_mb": [t.maxrss_mb for t in times]}


def measure_plan(runner: Runner, backends: dict[str, str], reps: int,
                 verbose: bool) -> dict[str, Any]:
    """``backends``: name -> PostgreSQL DSN ("" for SQLite). Per backend: ``plan
    -refresh=false`` (judged) and the default plan (refresh on), alternately, and the read
    floor."""
    floor = [runner.tectum("--version", what="tectum --version") for _ in range(reps + 1)][1:]
    rows = []
    for name, dsn in backends.items():
        project = os.path.join(runner.workdir, f"plan-{name}")
        root = os.path.join(runner.workdir, f"plan-{name}-files")
        toml = f'[state]\nbackend = "postgres"\nconn_str = "{dsn}"\n' if dsn else ""
        write_stack(project, root, PLAN_RESOURCES, PLAN_DIRS, None, toml)
        try:
            applied = runner.tectum("apply", "--auto-approve", project,
                                    what=f"apply of {PLAN_RESOURCES} files ({name})")
            log(verbose, f"  plan {name}: applied {PLAN_RESOURCES} files in {applied.wall:.1f} "
                "s (untimed setup)")
            no_refresh = ("plan", "-refresh=false", "--detailed-exitcode", project)
            # --detailed-exitcode: 0 = nothing to change (2 would be a change found: a failure
            # here, the files are as applied)
            default = ("plan", "--detailed-exitcode", project)
            read_floor = [sys.executable, "-c", READ_FLOOR_CODE, root, str(PLAN_RESOURCES),
                          str(PLAN_DIRS)]
            runner.tectum(*no_refresh, what=f"plan -refresh=false ({name}, warm-up)")
            runner.tectum(*default, what=f"plan ({name}, warm-up)")
            runner.run(read_floor, f"read floor ({name}, warm-up)")
            times, refreshed, floors = [], [], []
            for rep in range(reps):
                t = runner.tectum(*no_refresh, what=f"plan -refresh=false ({name})")
                r = runner.tectum(*default, what=f"plan ({name})")
                f = runner.run(read_floor, f"read floor ({name})")
                times.append(t)
                refreshed.append(r)
                floors.append(f)
                log(verbose, f"  plan {name} rep {rep + 1}/{reps}: -refresh=false {t.wall:.3f} "
                    f"s wall, {t.cpu:.3f} s cpu, {t.maxrss_mb:.0f} MB; default (refresh) "
                    f"{r.wall:.3f} s wall, {r.cpu:.3f} s cpu, {r.maxrss_mb:.0f} MB; read floor "
                    f"{f.wall:.3f} s")
            # untimed proof that the default plan reads the files: one file changed by hand is
            # a change for it (exit 2) and none for -refresh=false (exit 0)
            with open(os.path.join(root, "d0", "f0.txt"), "a", encoding="utf-8") as fh:
                fh.write("changed by hand\n")
            runner.tectum(*default, what=f"plan ({name}) after a file was changed by hand "
                          "(expected exit 2: a change)", ok_codes=(2,))
            runner.tectum(*no_refresh, what=f"plan -refresh=false ({name}) after a file was "
                          "changed by hand (expected exit 0: from state)")
        finally:
            shutil.rmtree(root, ignore_errors=True)
        wall = statistics.median(t.wall for t in times)
        rss = max(t.maxrss_mb for t in times)
        where = dsn or os.path.join(project, ".tectum", "state.db")
        refresh = _spread(refreshed)
        read = _spread(floors)
        objects = PLAN_RESOURCES + PLAN_DIRS
        refresh.update({
            "ratio_to_no_refresh": refresh["median_s"] / wall,
            "per_round_ratios": [r.wall / t.wall for r, t in zip(refreshed, times, strict=True)],
            "refresh_cost_s": refresh["median_s"] - wall,
            "refresh_us_per_object": 1e6 * (refresh["median_s"] - wall) / objects,
            "read_floor_s": read["median_s"], "read_floor_times_s": read["times_s"],
            "ratio_to_read_floor": refresh["median_s"] / read["median_s"],
            "pass": None,  # no target
        })
        rows.append({
            "backend": name, "resources": objects,
            **_spread(times),
            "wall_of_target": wall / PLAN_TARGET_S, "rss_of_target": rss / PLAN_TARGET_MB,
            "pass_wall": wall < PLAN_TARGET_S, "pass_rss": rss < PLAN_TARGET_MB,
            "pass": wall < PLAN_TARGET_S and rss < PLAN_TARGET_MB,
            "apply_setup_s": applied.wall, "apply_setup_rss_mb": applied.maxrss_mb,
            "state_doc_mb": state_doc_bytes(name, where) / 1e6,
            "refresh": refresh,
        })
    return {"rows": rows, "startup_floor_s": statistics.median(t.wall for t in floor),
            "startup_floor_rss_mb": max(t.maxrss_mb for t in floor)}


# -- 3. durability lag --------------------------------------------------------------------------
@dataclass
class ApplyTimes:
    done: dict[str, float] = field(default_factory=dict)  # on_event("done")
    returned: dict[str, float] = field(default_factory=dict)  # provider apply returned
    committed: dict[str, float] = field(default_factory=dict)  # record() returned
    commits: list[tuple[int, float]] = field(default_factory=list)  # (entries, seconds)
    failed: dict[str, str] = field(default_factory=dict)
    wall: float = 0.0


@contextlib.contextmanager
def provider_return_times(types: Sequence[str], into: dict[str, float]) -> Iterator[None]:
    """Note when each provider ``apply`` returns (in the worker thread), per address."""
    from tectum.providers.registry import registry

    patched = []
    for type_name in types:
        rt = registry.get(type_name)
        assert rt is not None, type_name

        def timed(conn: Any, change: Any, _inner: Callable[..., Any] = rt.apply) -> Any:
            try:
                return _inner(conn, change)
            finally:
                into[change.address] = time.monotonic()

        vars(rt)["apply"] = timed  # an instance attribute, shadowing the method
        patched.append(rt)
    try:
        yield
    finally:
        for rt in patched:
            vars(rt).pop("apply", None)


def durability_run(project: str, workspace: str) -> ApplyTimes:
    from tectum.engine.session import Session

    times = ApplyTimes()
    session = Session(project, workspace=workspace)
    try:
        backend = session.backend
        inner = backend.record

        def record(base_serial: int, entries: Sequence[JournalEntry]) -> None:
            t0 = time.monotonic()
            inner(base_serial, entries)
            now = time.monotonic()
            for address, _, _ in entries:
                times.committed.setdefault(address, now)
            times.commits.append((len(entries), now - t0))

        backend.record = record  # type: ignore[method-assign]

        def on_event(kind: str, change: Any, message: str | None) -> None:
            if kind == "done":
                times.done[change.address] = time.monotonic()
            elif kind == "failed":
                times.failed[change.address] = message or ""

        stack = session.evaluate()
        with session.locked("apply"), \
                provider_return_times(("file", "directory", "command"), times.returned):
            state = session.read_state()
            plan = session.plan(stack, state).plan
            t0 = time.monotonic()
            result = session.apply(plan, state, on_event=on_event)
            times.wall = time.monotonic() - t0
        if not result.ok:
            raise SystemExit(f"apply of {project} failed: {dict(list(result.failed.items())[:3])}"
                             f" {dict(list(result.skipped.items())[:3])}")
    finally:
        session.close()
    missing = [a for a in times.done if a not in times.committed]
    if missing:
        raise SystemExit(f"{len(missing)} results were never committed, e.g. {missing[:3]}")
    return times


def measure_durability(workdir: str, backends: dict[str, str], reps: int,
                       verbose: bool) -> list[dict[str, Any]]:
    rows = []
    for name, dsn in backends.items():
        for scenario, (description, _) in SCENARIOS.items():
            lags: list[float] = []
            worker_lags: list[float] = []
            run_max: list[float] = []
            walls: list[float] = []
            commits: list[tuple[int, float]] = []
            late: list[int] = []
            for rep in range(reps):
                project = os.path.join(workdir, f"durable-{name}-{scenario}-{rep}")
                root = os.path.join(workdir, f"durable-{name}-{scenario}-{rep}-files")
                # PostgreSQL: a workspace per run (one database); SQLite: a file per project
                toml = (f'[state]\nbackend = "postgres"\nconn_str = "{dsn}"\n' if dsn else "")
                write_stack(project, root, DURABLE_FILES, DURABLE_DIRS, scenario, toml)
                try:
                    t = durability_run(project, f"{scenario}-{rep}")
                finally:
                    shutil.rmtree(root, ignore_errors=True)
                run = [t.committed[a] - d for a, d in t.done.items()]
                lags.extend(run)
                worker_lags.extend(t.committed[a] - r for a, r in t.returned.items()
                                   if a in t.done)
                run_max.append(max(run))
                late.append(sum(1 for lag in run if lag > DURABLE_TARGET_S))
                walls.append(t.wall)
                commits.extend(t.commits)
                log(verbose, f"  durability {name} {scenario} rep {rep + 1}/{reps}: apply "
                    f"{t.wall:.2f} s, {len(t.commits)} commits, lag p50 "
                    f"{ms(percentile(run, 50)):.0f} ms, max {ms(max(run)):.0f} ms, "
                    f"{late[-1]} results later than {DURABLE_TARGET_S:g} s")
            worst = max(lags)
            rows.append({
                "backend": name, "scenario": scenario, "description": description,
                "runs": reps, "results": len(lags), "apply_s": statistics.median(walls),
                "p50_ms": ms(percentile(lags, 50)), "p99_ms": ms(percentile(lags, 99)),
                "max_ms": ms(worst), "max_per_run_ms": [ms(v) for v in run_max],
                "late_per_run": late,
                "worker_p99_ms": ms(percentile(worker_lags, 99)),
                "worker_max_ms": ms(max(worker_lags)),
                "commits_per_run": len(commits) / reps,
                "entries_per_commit_median": statistics.median(c[0] for c in commits),
                "commit_p50_ms": ms(percentile([c[1] for c in commits], 50)),
                "commit_max_ms": ms(max(c[1] for c in commits)),
                "of_target": worst / DURABLE_TARGET_S,
                "pass": worst <= DURABLE_TARGET_S,
            })
    return rows


# -- report -------------------------------------------------------------------------------------
def print_table(head: Sequence[tuple[str, int]], rows: Sequence[Sequence[str]]) -> None:
    widths = [w for _, w in head]
    line = "  ".join(f"{h:>{w}}" if w > 0 else f"{h:<{-w}}" for h, w in head)
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(f"{c:>{w}}" if w > 0 else f"{c:<{-w}}"
                        for c, w in zip(row, widths, strict=True)).rstrip())


def report_commits(rows: list[dict[str, Any]], reps: int) -> None:
    print(f"\n1. Journal commit latency after each resource — backend.record() of one entry, "
          f"N commits on a state of N resources, {reps} run(s) pooled")
    print(f"   budget (derived): p99 <= 1 s target - JOURNAL_INTERVAL {JOURNAL_INTERVAL:g} s = "
          f"{ms(COMMIT_BUDGET_S):.0f} ms; floor: the same row committed through the bare driver"
          "\n")
    print_table(
        [("backend", -8), ("config", -34), ("N", 6), ("p50 ms", 7), ("p99 ms", 7),
         ("max ms", 7), ("floor p50", 9), ("x floor", 7), ("budget", 9), ("result", -6)],
        [(r["backend"], r["config"], str(r["n"]), f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}",
          f"{r['max_ms']:.2f}", f"{r['floor_p50_ms']:.3f}", f"{r['x_floor']:.2f}x",
          f"<={r['budget_ms']:.0f}ms" if r["primary"] else "context", verdict(r["pass"]))
         for r in rows])
    print(f"\n   context: the same updates grouped {BATCH} per commit (as a walk round would), "
          "the read() replaying N journal entries, the write() of the N-resource version\n")
    print_table(
        [("backend", -8), ("config", -34), ("N", 6), (f"x{BATCH} p50 ms", 11),
         (f"x{BATCH} p99 ms", 11), ("us/res 1", 9), (f"us/res {BATCH}", 9), ("gain", 6),
         ("replay ms", 9), ("write ms", 8)],
        [(r["backend"], r["config"], str(r["n"]), f"{r['batch_p50_ms']:.3f}",
          f"{r['batch_p99_ms']:.3f}", f"{r['per_resource_single_us']:.0f}",
          f"{r['per_resource_batched_us']:.0f}", f"{r['batch_speedup']:.1f}x",
          f"{r['replay_read_ms']:.1f}", f"{r['version_write_ms']:.1f}") for r in rows])
    by = {(r["backend"], r["config"], r["n"]): r for r in rows}
    notes = []
    for r in rows:
        if r["backend"] == "postgres" and r["primary"]:
            base = next((s for (b, _, n), s in by.items()
                         if b == "sqlite" and n == r["n"] and s["primary"]), None)
            if base is not None:
                notes.append(f"N={r['n']}: postgres/sqlite p50 {r['p50_ms'] / base['p50_ms']:.1f}x,"
                             f" p99 {r['p99_ms'] / base['p99_ms']:.1f}x")
    sizes = sorted({r["n"] for r in rows})
    if len(sizes) > 1:
        for r in rows:
            if r["n"] == sizes[-1]:
                small = by[(r["backend"], r["config"], sizes[0])]
                notes.append(f"{r['backend']} {r['config']}: p50 at N={sizes[-1]} / "
                             f"N={sizes[0]} = {r['p50_ms'] / small['p50_ms']:.2f}x")
    if notes:
        print("\n   " + "\n   ".join(notes))


def report_plan(result: dict[str, Any], reps: int) -> None:
    print(f"\n2. tectum plan -refresh=false and the default plan, {PLAN_RESOURCES:,} files in "
          f"{PLAN_DIRS} directories (+{PLAN_DIRS} directory resources) — whole process, median "
          f"of {reps}")
    print(f"   targets: wall < {PLAN_TARGET_S:g} s, peak RSS < {PLAN_TARGET_MB:.0f} MB; start-up "
          f"floor (python -m tectum --version): {result['startup_floor_s']:.3f} s, "
          f"{result['startup_floor_rss_mb']:.0f} MB\n")
    print_table(
        [("backend", -8), ("wall s", 7), ("min-max s", 11), ("cpu s", 6), ("of 2 s", 6),
         ("RSS MB", 7), ("of 300", 6), ("state MB", 8), ("apply s", 7), ("result", -6)],
        [(r["backend"], f"{r['median_s']:.3f}", f"{r['min_s']:.2f}-{r['max_s']:.2f}",
          f"{r['median_cpu_s']:.2f}", f"{r['wall_of_target']:.2f}", f"{r['peak_rss_mb']:.0f}",
          f"{r['rss_of_target']:.2f}", f"{r['state_doc_mb']:.1f}", f"{r['apply_setup_s']:.1f}",
          verdict(r["pass"])) for r in result["rows"]])
    print("\n   apply s: the untimed first apply that made the state (for reading only); "
          "state MB: size of the state document")
    print(f"\n   default plan (refresh on: reads every file — type, mode, owner, content hash), "
          f"same project and state, median of {reps}; no target (reported, not judged)\n")
    print_table(
        [("backend", -8), ("wall s", 7), ("min-max s", 11), ("cpu s", 6), ("RSS MB", 7),
         ("x no-refresh", 12), ("per round", 11), ("+s refresh", 10), ("us/object", 9),
         ("read floor s", 12), ("x floor", 7)],
        [(r["backend"], f"{f['median_s']:.3f}", f"{f['min_s']:.2f}-{f['max_s']:.2f}",
          f"{f['median_cpu_s']:.2f}", f"{f['peak_rss_mb']:.0f}",
          f"{f['ratio_to_no_refresh']:.2f}x",
          f"{min(f['per_round_ratios']):.2f}-{max(f['per_round_ratios']):.2f}",
          f"{f['refresh_cost_s']:.3f}", f"{f['refresh_us_per_object']:.0f}",
          f"{f['read_floor_s']:.3f}", f"{f['ratio_to_read_floor']:.1f}x")
         for r in result["rows"] for f in [r["refresh"]]])
    print("\n   x no-refresh: default plan median / plan -refresh=false median; per round: the "
          "range of the same ratio\n   within each repetition; +s refresh: the difference of "
          "the medians, us/object: that per object read;\n   read floor: a bare Python "
          "process that lstats, reads and hashes the same files (start-up included)")


def report_durability(rows: list[dict[str, Any]], reps: int) -> None:
    print(f"\n3. Time from a resource's \"done\" event to the commit that holds it — "
          f"Session.apply of {DURABLE_FILES:,} files in {DURABLE_DIRS} directories, "
          f"{reps} run(s) pooled, parallelism 10")
    print(f"   target: max <= {DURABLE_TARGET_S:g} s (Terraform's remote backends allow 20 s); "
          f"JOURNAL_INTERVAL = {JOURNAL_INTERVAL:g} s")
    for name, (description, _) in SCENARIOS.items():
        print(f"   {name}: {description}")
    print()
    print_table(
        [("backend", -8), ("scenario", -8), ("apply s", 7), ("p50 ms", 7), ("p99 ms", 7),
         ("max ms", 7), ("late", 5), ("wkr max", 7), ("commits", 7), ("ent/c", 5),
         ("c ms p50", 8), ("of 1 s", 6), ("result", -6)],
        [(r["backend"], r["scenario"], f"{r['apply_s']:.2f}", f"{r['p50_ms']:.0f}",
          f"{r['p99_ms']:.0f}", f"{r['max_ms']:.0f}", str(sum(r["late_per_run"])),
          f"{r['worker_max_ms']:.0f}", f"{r['commits_per_run']:.0f}",
          f"{r['entries_per_commit_median']:.0f}", f"{r['commit_p50_ms']:.2f}",
          f"{r['of_target']:.2f}", verdict(r["pass"])) for r in rows])
    print("\n   late: results (all runs) committed more than 1 s after done; wkr max: max lag "
          "from the provider's apply returning in its worker thread; commits: per run; ent/c: "
          "median entries per commit; c ms: record() duration")


# -- main ---------------------------------------------------------------------------------------
def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: cleanup runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000",
                        help="state sizes N for the commit measurement (default 1000,10000)")
    parser.add_argument("--reps", type=int, default=3,
                        help="repetitions of every measurement (default 3)")
    parser.add_argument("--skip-postgres", action="store_true",
                        help="measure the SQLite backend only (no cluster)")
    parser.add_argument("--only", default=",".join(MEASUREMENTS),
                        help=f"comma-separated measurements to run ({', '.join(MEASUREMENTS)})")
    parser.add_argument("--json", dest="json_path", metavar="FILE",
                        help="also write the results as JSON to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    only = [m.strip() for m in args.only.split(",") if m.strip()]
    if args.reps < 1 or not sizes or min(sizes) < BATCH or any(m not in MEASUREMENTS
                                                                for m in only):
        parser.error(f"need --reps >= 1, sizes >= {BATCH}, --only among {MEASUREMENTS}")
    verbose = not args.quiet
    for name in DROPPED_ENV:  # this process runs sessions too (measurement 3)
        if name.startswith("TECTUM_"):
            os.environ.pop(name, None)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)

    workdir = tempfile.mkdtemp(prefix="tectum-bench-state-")
    cluster: PgCluster | None = None
    cluster_gone: bool | None = None
    load_before = os.getloadavg()
    doc: dict[str, Any] = {
        "benchmark": "state", "reps": args.reps, "sizes": sizes, "measurements": only,
        "python": platform.python_version(), "executable": sys.executable,
        "cpus": os.cpu_count(), "journal_interval_s": JOURNAL_INTERVAL,
        "targets": {"commit_p99_budget_s": COMMIT_BUDGET_S, "plan_wall_s": PLAN_TARGET_S,
                    "plan_rss_mb": PLAN_TARGET_MB, "durable_s": DURABLE_TARGET_S},
    }
    try:
        if not args.skip_postgres:
            cluster = PgCluster()
            log(verbose, "starting a private PostgreSQL cluster...")
            cluster.start()
            doc["postgres"] = cluster.version
            log(verbose, f"  PostgreSQL {cluster.version}")
        if "commit" in only:
            variants = [sqlite_variant(workdir, "NORMAL", True),
                        sqlite_variant(workdir, "FULL", False)]
            if cluster is not None:
                dsn = cluster.create_db("bench_commit")
                variants[1:1] = [pg_variant(dsn, "on", True)]
                variants.append(pg_variant(dsn, "off", False))
            doc["commit"] = measure_commits(variants, sizes, args.reps, verbose)
        backends = {"sqlite": ""}
        if "plan" in only:
            if cluster is not None:
                backends["postgres"] = cluster.create_db("bench_plan")
            doc["plan"] = measure_plan(Runner(workdir), backends, args.reps, verbose)
        if "durability" in only:
            backends = {"sqlite": ""}
            if cluster is not None:
                backends["postgres"] = cluster.create_db("bench_durable")
            doc["durability"] = measure_durability(workdir, backends, args.reps, verbose)
    finally:
        if cluster is not None:
            cluster_gone = cluster.stop()
            if not cluster_gone:
                print(f"warning: the postmaster (pid {cluster.pid}) is still running",
                      file=sys.stderr)
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    doc["loadavg"] = {"before": load_before, "after": os.getloadavg()}
    doc["postgres_stopped"] = cluster_gone

    print(f"\ntectum state backends benchmark — python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs; SQLite {sqlite3.sqlite_version}"
          + (f"; PostgreSQL {doc['postgres']}" if "postgres" in doc else " (PostgreSQL skipped)"))
    if "commit" in doc:
        report_commits(doc["commit"], args.reps)
    if "plan" in doc:
        report_plan(doc["plan"], args.reps)
    if "durability" in doc:
        report_durability(doc["durability"], args.reps)
    before, after = doc["loadavg"]["before"], doc["loadavg"]["after"]
    print(f"\nload average (1 min): {before[0]:.2f} before, {after[0]:.2f} after. "
          + ("PostgreSQL cluster stopped and removed." if cluster_gone else ""))
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
    rows = [*doc.get("commit", []), *doc.get("plan", {}).get("rows", []),
            *doc.get("durability", [])]
    return 0 if all(r["pass"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
