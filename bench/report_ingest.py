"""Benchmark: run-report ingestion — N simulated agents reporting into one PostgreSQL (issue 15).

A fleet of ``tectum agent`` processes reports each cycle's :class:`~tectum.runs.RunReport` into
the ``runs`` table of the shared PostgreSQL state database. This benchmark simulates N agents
(``--agents``, default 500) each storing one report every T seconds (``--interval``, default 10)
for D seconds (``--duration``, default 60), each agent starting at a random phase in ``[0, T)``
(the splay). The agents are threads spread over a few worker processes (``--workers``, default
the number of cores), on a fixed-rate schedule: report k of an agent is due at ``start + phase
+ k*T``.

Variants (``--variant``, default both, one after the other, each into a database of its own):

* ``connect`` — exactly what the agent does each cycle (``Agent.store``): ``open_run_store``'s
  :class:`~tectum.runs.PostgresRunStore` is made, the (empty) report spool is flushed into it,
  the report is ``put``, the store is closed. So every report pays a new connection: TCP +
  startup + a server process forked, and the store's schema check (an advisory-locked
  transaction of ``CREATE TABLE/INDEX IF NOT EXISTS``), then the ``INSERT``. The latency is
  timed from before the store is made to after it is closed, split into *open* (connect +
  schema check), *put* and *close*.
* ``kept`` — the alternative to a connection per report: each agent keeps its
  ``PostgresRunStore`` open across cycles (the store reuses its connection), so a report
  finds its server process ready, as it would behind a connection pooler such as PgBouncer
  (which would share fewer server processes among the agents). The connections are opened
  before the timed window (not timed); latency is the ``put`` alone. The server then holds
  one idle backend per agent, so ``max_connections`` is raised to N + 20 for both variants
  (the ``connect`` variant needs only a handful at a time while it keeps up).

The PostgreSQL cluster is the benchmark's own, started with the test suite's
``tests.backends.conftest.Cluster`` (``initdb`` into a temporary directory, a server on a free
127.0.0.1 port, removed at the end), but with **durable settings**: ``fsync=on``,
``synchronous_commit=on``, ``full_page_writes=on`` (the test suite turns them off), checked with
``SHOW`` and reported. Connections are TCP to 127.0.0.1 with ``trust`` authentication: no
TLS and no password exchange, so a real fleet's connection setup costs more than measured here.

Measured, per variant:

* per-report latency p50/p95/p99/max (ms), and its open/put/close parts;
* schedule lag: how late a report started against its due time (the load generator, or an
  agent's previous report, holding it up) — a large lag means the figures are the generator's;
* reports stored and reports/s achieved against the expected N/T; errors (a report the store
  refused: the agent would spool it);
* the PostgreSQL server's CPU: utime+stime of the postmaster and all its children (live ones
  from ``/proc/PID/stat``, exited ones from the postmaster's cutime/cstime) over the timed
  window, as % of one core — the average and the busiest 5 s — and per report;
* the client backends at their peak, by what they waited on (``pg_stat_activity`` each second:
  ``Lock:advisory`` is the run store's schema check queueing, ``Client:ClientRead`` idle
  connections);
* the load generator's own CPU (the worker processes' ``getrusage``), as % of one core;
* the whole machine's busy CPU (``/proc/stat``) in the window, for context on a shared host;
* the ``runs`` table at the end: rows, heap and total size (with indexes); WAL written per
  report (``pg_current_wal_lsn`` before and after).

Before the variants, for reference: the median of 200 sequential bare connects (``connect`` +
close) against 200 run-store opens (connect + schema check + close), and of an 8 KiB write +
``fsync`` in the data directory (what a durable commit waits for on this disk).

Usage::

    python3 bench/report_ingest.py [--agents 500] [--interval 10] [--duration 60]
        [--workers 2] [--variant connect|kept|both] [--seed 1] [--json FILE]

Needs PostgreSQL installed (``/usr/lib/postgresql/*/bin``; run as root it runs the server as
the ``postgres`` user, as the test suite does) and ``psycopg``. Runs on Linux only (``/proc``).
Exit status: 0 when every variant stored every report it was due with no error and kept the
schedule (lag p99 under one second); 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VARIANTS = ("connect", "kept")
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
#: lag p99 above this (s): the schedule was not kept
MAX_LAG = 1.0


# -- the agents (in worker processes) ---------------------------------------------------------

def _report(agent: int, seq: int, interval: float, rng: random.Random) -> Any:
    """A report like an agent's: mostly ``unchanged``, now and then drift corrected."""
    from tectum.runs import RunReport

    drifted = rng.random() < 0.05
    return RunReport(
        workspace="production", host=f"agent-{agent:04d}.bench.example", mode="remediate",
        status="drift-corrected" if drifted else "unchanged",
        started_at=time.time(), duration=rng.uniform(0.5, 3.0),
        commit=uuid.uuid4().hex + uuid.uuid4().hex[:8], branch="main",
        corrective=2 if drifted else 0, changes=2 if drifted else 0,
        drifted=2 if drifted else 0, interval=interval,
        drift=(f"host_file.motd[{seq}]", "host_service.nginx") if drifted else ())


def _why(exc: Any) -> str:
    return "; ".join(f"{d.summary}: {d.detail}" for d in exc.diagnostics)


def _agent(agent: int, variant: str, dsn: str, start: float, interval: float,
           duration: float, phase: float, spool_root: str, ready: threading.Barrier,
           samples: list[tuple[float, ...]], errors: list[str]) -> None:
    """One agent: its reports at ``start + phase + k*interval`` until ``start + duration``.
    A sample is (due, lag, latency, open, put, close), seconds."""
    from tectum.diagnostics import DiagnosticError
    from tectum.runs import PostgresRunStore, Spool

    rng = random.Random(agent)
    spool = Spool(os.path.join(spool_root, f"agent-{agent}"))  # never made: nothing spooled
    kept: PostgresRunStore | None = None
    try:
        if variant == "kept":
            kept = PostgresRunStore(dsn)
            try:
                kept._connection()  # opened before the window: not timed
            except DiagnosticError as exc:
                errors.append(f"agent {agent} (open): {_why(exc)}")
                kept = None
        ready.wait(timeout=300)
        if variant == "kept" and kept is None:
            return
        due, seq = start + phase, 0
        while due < start + duration:
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            lag = time.time() - due
            report = _report(agent, seq, interval, rng)
            t0 = time.perf_counter()
            store = kept if kept is not None else PostgresRunStore(dsn)
            try:
                store._connection()  # what store.put() does first (connect + schema check)
                t1 = time.perf_counter()
                spool.flush(store)
                store.put(report)
                t2 = time.perf_counter()
                if kept is None:
                    store.close()
                t3 = time.perf_counter()
                samples.append((due - start, lag, t3 - t0, t1 - t0, t2 - t1, t3 - t2))
            except DiagnosticError as exc:
                if kept is None:
                    store.close()
                errors.append(f"agent {agent} after {time.perf_counter() - t0:.1f} s: "
                              + _why(exc))
            due += interval
            seq += 1
    finally:
        if kept is not None:
            kept.close()


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(variant: str, dsn: str, agents: Sequence[tuple[int, float]], start: float,
           interval: float, duration: float, spool_root: str) -> dict[str, Any]:
    """Run ``agents`` ((id, phase) pairs) as threads; returns their samples, errors and this
    process's CPU seconds over the window."""
    samples: list[tuple[float, ...]] = []
    errors: list[str] = []
    ready = threading.Barrier(len(agents) + 1)
    threads = [threading.Thread(target=_agent, daemon=True, args=(
        agent, variant, dsn, start, interval, duration, phase, spool_root, ready, samples,
        errors)) for agent, phase in agents]
    for thread in threads:
        thread.start()
    ready.wait(timeout=300)
    if time.time() > start:
        errors.append(f"worker {os.getpid()}: its agents were ready "
                      f"{time.time() - start:.1f} s after the start")
    time.sleep(max(0.0, start - time.time()))
    cpu0 = _cpu_self()
    for thread in threads:
        thread.join()
    return {"samples": samples, "errors": errors, "cpu": _cpu_self() - cpu0}


# -- measuring the server (in the main process) ----------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_times(pid: int, children_too: bool) -> float:
    """utime+stime (+ cutime+cstime) of ``pid`` in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14-17
    times = [int(x) for x in fields[11:15]]
    return (sum(times) if children_too else times[0] + times[1]) / _TICK


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from every ``/proc/N/stat``: the ``children``
    file is not reliable while processes come and go)."""
    found: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(name))
    return found


def server_cpu(postmaster: int) -> float:
    """CPU seconds the server has used: its live children (backends, auxiliary processes) and
    the postmaster with the children it has reaped (read in this order: a child reaped between
    the two reads is counted twice until the next sample, never missed)."""
    children = sum(_stat_times(c, True) for c in _children(postmaster))
    return children + _stat_times(postmaster, True)


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (``/proc/stat``)."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:9]]
    total = sum(values)
    idle = values[3] + values[4]
    return (total - idle) / _TICK, total / _TICK


class Sampler(threading.Thread):
    """Samples (time, server CPU, machine busy, machine total) every ``every`` seconds, and
    the client backends by what they wait on (``pg_stat_activity``, over a connection of its
    own): the peak count of each wait and of the backends."""

    def __init__(self, postmaster: int, dsn: str, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.postmaster = postmaster
        self.dsn = dsn
        self.every = every
        self.samples: list[tuple[float, float, float, float]] = []
        self.waits: dict[str, int] = {}
        self.backends = 0
        self.stopping = threading.Event()

    def sample(self) -> None:
        self.samples.append((time.time(), server_cpu(self.postmaster), *machine_busy()))

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stopping.is_set():
                self.sample()
                rows = conn.execute(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, state, '?'), "
                    "count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                    "AND pid <> pg_backend_pid() GROUP BY 1").fetchall()
                for what, count in rows:
                    self.waits[what] = max(self.waits.get(what, 0), int(count))
                self.backends = max(self.backends, sum(int(c) for _, c in rows))
                self.stopping.wait(self.every)

    def stop(self) -> None:
        self.stopping.set()
        self.join()
        self.sample()


# -- one variant --------------------------------------------------------------------------------

def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, inclusive method."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run_variant(variant: str, admin_dsn: str, postmaster: int, args: argparse.Namespace,
                log: Callable[[str], None]) -> dict[str, Any]:
    import psycopg

    database = f"bench_{variant}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    dsn = admin_dsn.replace("dbname=tectum_test", f"dbname={database}")
    try:
        # the schema once, as the first agent would make it
        from tectum.runs import PostgresRunStore

        first = PostgresRunStore(dsn)
        first._connection()
        first.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
            assert row is not None
            wal0 = row[0]

        rng = random.Random(args.seed)
        phases = [(a, rng.uniform(0, args.interval)) for a in range(args.agents)]
        due = sum(len(range(0, 1 + int((args.duration - p) // args.interval)))
                  if p < args.duration else 0 for _, p in phases)
        shares = [phases[w::args.workers] for w in range(args.workers)]
        # time for the workers to start and (kept) open their connections first
        start = time.time() + 3.0 + (args.agents / 100 if variant == "kept" else 0.0)
        log(f"[{variant}] {args.agents} agents every {args.interval:g} s for "
            f"{args.duration:g} s ({due} reports due, {args.agents / args.interval:.1f}/s), "
            f"{args.workers} worker processes")
        sampler = Sampler(postmaster, dsn)
        with tempfile.TemporaryDirectory(prefix="tectum-bench-spool-") as spool_root, \
                ProcessPoolExecutor(args.workers,
                                    mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(worker, variant, dsn, share, start, args.interval,
                                   args.duration, spool_root) for share in shares]
            time.sleep(max(0.0, start - time.time()))
            sampler.start()
            results = [f.result() for f in futures]
            sampler.stop()
        end = time.time()

        samples = [s for r in results for s in r["samples"]]
        errors = [e for r in results for e in r["errors"]]
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*), pg_relation_size('runs'), pg_total_relation_size('runs'), "
                "pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn) FROM runs",
                (str(wal0),)).fetchone()
            assert row is not None
            rows, heap, total, wal = (int(v) for v in row)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")

    window = end - start
    first_s, last_s = sampler.samples[0], sampler.samples[-1]
    server_s = last_s[1] - first_s[1]
    # the busiest 5 s (a single second can be off by the backends reaped during a sample)
    marks = sampler.samples
    per_5s = [(b[1] - a[1]) / (b[0] - a[0])
              for a, b in zip(marks, marks[5:]) if b[0] > a[0]]
    latency = sorted(s[2] for s in samples)
    lags = sorted(s[1] for s in samples)

    def ms(values: Sequence[float]) -> dict[str, float]:
        if not values:
            return {}
        return {"p50": round(1000 * pct(values, 50), 2), "p95": round(1000 * pct(values, 95), 2),
                "p99": round(1000 * pct(values, 99), 2), "max": round(1000 * max(values), 2),
                "mean": round(1000 * statistics.fmean(values), 2)}

    return {
        "variant": variant, "agents": args.agents, "interval_s": args.interval,
        "duration_s": args.duration, "workers": args.workers,
        "due": due, "stored": len(samples), "rows": rows, "errors": len(errors),
        "error_examples": errors[:5],
        "expected_per_s": round(args.agents / args.interval, 2),
        "achieved_per_s": round(len(samples) / args.duration, 2),
        "window_s": round(window, 2),
        "latency_ms": ms(latency),
        "open_ms": ms(sorted(s[3] for s in samples)),
        "put_ms": ms(sorted(s[4] for s in samples)),
        "close_ms": ms(sorted(s[5] for s in samples)),
        "lag_ms": ms(lags),
        "peak_backends": sampler.backends,
        "peak_waits": dict(sorted(sampler.waits.items(), key=lambda kv: -kv[1])[:6]),
        "server_cpu_pct": round(100 * server_s / window, 1),
        "server_cpu_peak_5s_pct": round(100 * max(per_5s, default=server_s / window), 1),
        "server_cpu_ms_per_report": round(1000 * server_s / max(1, len(samples)), 3),
        "generator_cpu_pct": round(100 * sum(r["cpu"] for r in results) / window, 1),
        "machine_busy_pct": round(100 * (last_s[2] - first_s[2]) / window, 1),
        "machine_cores": os.cpu_count(),
        "table_rows": rows, "table_heap_bytes": heap, "table_total_bytes": total,
        "wal_bytes": wal, "wal_bytes_per_report": round(wal / max(1, len(samples))),
    }


def fsync_ms(directory: str, n: int = 20) -> float:
    """Median time (ms) of an 8 KiB write + fsync in ``directory``: the disk's commit cost."""
    times = []
    fd, path = tempfile.mkstemp(dir=directory)
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, b"\0" * 8192)
            os.fsync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return round(1000 * statistics.median(times), 3)


def probe_open(dsn: str, n: int = 200) -> dict[str, float]:
    """Median ms, sequentially, of a bare ``psycopg.connect`` + close, and of a
    ``PostgresRunStore`` open (connect + its schema check) + close: the schema check's share
    of a report's connection cost."""
    import psycopg

    from tectum.runs import PostgresRunStore

    bare, store = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        psycopg.connect(dsn, autocommit=True, connect_timeout=10).close()
        t1 = time.perf_counter()
        s = PostgresRunStore(dsn)
        s._connection()
        s.close()
        t2 = time.perf_counter()
        bare.append(t1 - t0)
        store.append(t2 - t1)
    return {"connect_ms": round(1000 * statistics.median(bare), 3),
            "store_open_ms": round(1000 * statistics.median(store), 3)}


def summary(result: dict[str, Any]) -> list[str]:
    lat, lag = result["latency_ms"], result["lag_ms"]
    lines = [
        f"[{result['variant']}] stored {result['stored']}/{result['due']} reports "
        f"({result['achieved_per_s']}/s of {result['expected_per_s']}/s expected), "
        f"{result['errors']} errors",
        f"  latency ms  p50 {lat.get('p50')}  p95 {lat.get('p95')}  p99 {lat.get('p99')}  "
        f"max {lat.get('max')}   (open p50 {result['open_ms'].get('p50')} / put p50 "
        f"{result['put_ms'].get('p50')} / close p50 {result['close_ms'].get('p50')})",
        f"  schedule lag ms  p99 {lag.get('p99')}  max {lag.get('max')}",
        f"  server CPU {result['server_cpu_pct']}% of a core (busiest 5 s "
        f"{result['server_cpu_peak_5s_pct']}%), {result['server_cpu_ms_per_report']} ms/report;"
        f" generator {result['generator_cpu_pct']}%; machine busy {result['machine_busy_pct']}%"
        f" of {result['machine_cores'] * 100}%",
        f"  peak client backends {result['peak_backends']}; by wait (peak): "
        + ", ".join(f"{k} {v}" for k, v in result["peak_waits"].items()),
        f"  runs table {result['table_rows']} rows, heap {result['table_heap_bytes'] // 1024}"
        f" KiB, with indexes {result['table_total_bytes'] // 1024} KiB; WAL "
        f"{result['wal_bytes_per_report']} B/report",
    ]
    return lines


def run(report: Callable[[str], None], argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark with ``argv`` (the command-line options); ``report`` gets each
    line of the summary. Returns the JSON document."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=500)
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between reports")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per variant")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--variant", choices=(*VARIANTS, "both"), default="both")
    ap.add_argument("--seed", type=int, default=1, help="of the agents' phases")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    if args.agents < 1 or args.interval <= 0 or args.duration <= 0 or args.workers < 1:
        ap.error("--agents, --interval, --duration and --workers must be positive")

    sys.path.insert(0, ROOT)
    import psycopg

    from tests.backends.conftest import Cluster, _pg_bindir

    cluster = Cluster(_pg_bindir(), settings={
        **DURABLE, "max_connections": str(max(100, args.agents + 20))})
    try:
        cluster.start()
        postmaster = cluster._server_pid()
        if postmaster is None:
            raise RuntimeError("the postmaster's process id is unknown")
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            settings = {name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                        for name in (*DURABLE, "max_connections", "wal_level",
                                     "shared_buffers", "server_version")}
        for name, value in DURABLE.items():
            if settings[name] != value:
                raise RuntimeError(f"the server runs with {name}={settings[name]}, not {value}")
        disk = fsync_ms(str(cluster.data))
        report(f"PostgreSQL {settings['server_version']}: fsync={settings['fsync']} "
               f"synchronous_commit={settings['synchronous_commit']} full_page_writes="
               f"{settings['full_page_writes']} max_connections={settings['max_connections']};"
               f" an 8 KiB write+fsync on its disk takes {disk} ms (median)")
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        report(f"load average before: {' '.join(load)} on {os.cpu_count()} cores")
        probe = probe_open(cluster.dsn)
        report(f"sequential, median: connect+close {probe['connect_ms']} ms; the run store's "
               f"open (connect + schema check)+close {probe['store_open_ms']} ms")
        results = []
        for variant in VARIANTS if args.variant == "both" else (args.variant,):
            result = run_variant(variant, cluster.dsn, postmaster, args, report)
            results.append(result)
            for line in summary(result):
                report(line)
    finally:
        cluster.stop()
    document = {"benchmark": "report_ingest", "settings": settings,
                "fsync_ms": disk, "loadavg_before": load,
                "open_probe": probe, "variants": results}
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2)
    return document


def ok(document: dict[str, Any]) -> bool:
    """Every variant stored all it was due, without errors, keeping the schedule."""
    return all(v["stored"] == v["due"] and not v["errors"]
               and v["lag_ms"].get("p99", 0.0) < 1000 * MAX_LAG
               for v in document["variants"])


def main(argv: list[str] | None = None) -> int:
    return 0 if ok(run(print, argv)) else 1


if __name__ == "__main__":
    sys.exit(main())
