"""Run reports: what each unattended run (``tectum agent``) did, kept where the state is.

A :class:`RunReport` is one run of one agent — workspace, host, commit, mode, status, the
number of corrective changes (Puppet's ``corrective_change``: a change that put back what was
changed outside tectum), drifted resources, duration, errors (masked) — stored in a ``runs``
table beside the state: the state database for PostgreSQL (one database a fleet of agents
reports to), and otherwise an SQLite file ``runs.db`` next to the embedded backend's state file
(``.tectum/runs.db``; a file of its own, so reports never wait on a state write).
``tectum runs list|show`` read it.

An agent that cannot reach the store keeps its reports in a :class:`Spool` (one JSON file per
report in a local directory) and sends them, oldest first, when the store answers again: no
report is lost while the backend is down.

Statuses (``RunReport.status``):

``unchanged``        nothing to do: the world matched the configuration
``changed``          changes were applied (a new commit, or changes of the code)
``drift-found``      the world differs from what was applied, and the mode only reports it
``drift-corrected``  every change applied put back drift (corrective changes only)
``pending``          changes are waiting: the mode does not apply new commits (``report``,
                     ``remediate``), or a plan waits for ``tectum approve``
``approved``         a pending plan that was approved (then applied by the approver's run)
``refused``          the commit was not accepted (unsigned or untrusted)
``failed``           the run failed (fetch, evaluation, plan or apply); ``errors`` says why

A host is *unreported* when its agent's last report is older than twice its interval.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from tectum.diagnostics import Diagnostic, DiagnosticError

STATUSES = ("unchanged", "changed", "drift-found", "drift-corrected", "pending", "approved",
            "refused", "failed")
MODES = ("report", "remediate", "apply")


@dataclass(frozen=True)
class RunReport:
    """One run of an agent. Times are epoch seconds, ``duration`` seconds; ``interval`` the
    agent's interval in seconds (None: a run outside an agent)."""

    workspace: str
    host: str
    mode: str
    status: str
    started_at: float
    duration: float = 0.0
    commit: str | None = None
    branch: str | None = None
    #: changes applied that put back drift (Puppet's corrective_change)
    corrective: int = 0
    #: changes applied in all
    changes: int = 0
    #: resources whose objects were changed outside tectum (found by this run's plan)
    drifted: int = 0
    #: changes waiting (not applied by this mode, or for approval)
    pending: int = 0
    interval: float | None = None
    #: error messages, masked
    errors: tuple[str, ...] = ()
    #: addresses of the drifted resources (at most 100)
    drift: tuple[str, ...] = ()
    #: a pending plan's file and digest (``tectum approve`` applies exactly that plan)
    plan_path: str | None = None
    plan_digest: str | None = None
    approved_by: str | None = None
    approved_at: float | None = None
    #: an approved run: the id of the agent run that applied its plan (or failed to)
    applied_in: str | None = None
    #: the approval's SSH signature (``tectum approve --sign-with``; :mod:`tectum.approvals`)
    approval_signature: str | None = None
    #: the state serial the pending plan was made from (it goes stale when state moves on)
    plan_serial: int | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def finished_at(self) -> float:
        return self.started_at + self.duration

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["errors"] = list(self.errors)
        data["drift"] = list(self.drift)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunReport:
        """Raises ``ValueError`` for a document that is no run report."""
        if not isinstance(data, dict):
            raise ValueError("a run report is a JSON object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            known["errors"] = tuple(str(e) for e in known.get("errors") or ())
            known["drift"] = tuple(str(e) for e in known.get("drift") or ())
            report = cls(**known)
        except TypeError as exc:
            raise ValueError(f"not a run report: {exc}") from None
        if report.status not in STATUSES:
            raise ValueError(f"unknown run status {report.status!r}")
        return report

    def with_(self, **changes: Any) -> RunReport:
        return replace(self, **changes)


def masked(report: RunReport) -> RunReport:
    """``report`` with every secret this process knows masked in its error messages."""
    from tectum.masking import REDACTOR

    return report.with_(errors=tuple(REDACTOR.redact(e) for e in report.errors))


class RunStore(Protocol):
    """Where run reports live. Every method raises :class:`DiagnosticError` when the store
    cannot be reached."""

    where: str

    def put(self, report: RunReport) -> None:
        """Store ``report`` (a report with the same id is replaced)."""

    def get(self, run_id: str) -> RunReport | None:
        """The report whose id is ``run_id`` or starts with it (None: none; DiagnosticError
        when the prefix is ambiguous)."""

    def recent(self, *, workspace: str | None = None, host: str | None = None,
             status: str | None = None, limit: int = 50) -> list[RunReport]:
        """Reports, newest first."""

    def latest(self) -> list[RunReport]:
        """The newest report of each (workspace, host), newest first."""

    def counts(self) -> dict[tuple[str, str, str], int]:
        """The number of reports per (workspace, host, status)."""

    def close(self) -> None: ...


def unreported(latest: Sequence[RunReport], now: float | None = None) -> list[RunReport]:
    """The agents (their last reports) that have not reported for twice their interval."""
    now = time.time() if now is None else now
    return [r for r in latest
            if r.interval and now - r.finished_at > 2 * r.interval]


_COUNTS = ("SELECT workspace, host, status, COUNT(*) FROM runs "
           "GROUP BY workspace, host, status")

_COLUMNS = ("id", "workspace", "host", "mode", "status", "started_at", "finished_at",
            "commit_sha", "document")


def _row(report: RunReport) -> tuple[Any, ...]:
    return (report.id, report.workspace, report.host, report.mode, report.status,
            report.started_at, report.finished_at, report.commit,
            json.dumps(report.to_json(), separators=(",", ":")))


def _parse(document: Any) -> RunReport | None:
    try:
        return RunReport.from_json(json.loads(document))
    except ValueError:
        return None  # (a damaged row: left out, never a traceback)


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    host TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    commit_sha TEXT,
    document TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_agent ON runs (workspace, host, started_at);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (started_at);
"""


class SQLiteRunStore:
    """Run reports in an SQLite file (``.tectum/runs.db``): a ``runs`` table, WAL, a 10 s
    busy timeout."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.where = f"the SQLite file {path}"
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                     check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SQLITE_SCHEMA)
            except (OSError, sqlite3.Error) as exc:
                raise DiagnosticError(Diagnostic.error(
                    "Cannot open the run reports",
                    f"{self.where}: {exc}. Check that the directory is writable.")) from None
            self._db = db
        return self._db

    @contextlib.contextmanager
    def _errors(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._conn()
        except sqlite3.Error as exc:
            raise DiagnosticError(Diagnostic.error(
                "Run reports error", f"{self.where}: {exc}.")) from None

    def put(self, report: RunReport) -> None:
        with self._errors() as db:
            db.execute(f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) "
                       f"VALUES ({', '.join('?' * len(_COLUMNS))})", _row(report))

    def get(self, run_id: str) -> RunReport | None:
        with self._errors() as db:
            rows = db.execute("SELECT document FROM runs WHERE id LIKE ? || '%' LIMIT 2",
                              (run_id.replace("%", "").replace("_", ""),)).fetchall()
        return _one(rows, run_id)

    def recent(self, *, workspace: str | None = None, host: str | None = None,
             status: str | None = None, limit: int = 50) -> list[RunReport]:
        where, args = _filters(workspace, host, status, "?")
        with self._errors() as db:
            rows = db.execute(f"SELECT document FROM runs{where} ORDER BY started_at DESC "
                              "LIMIT ?", (*args, limit)).fetchall()
        return [r for r in (_parse(row[0]) for row in rows) if r is not None]

    def latest(self) -> list[RunReport]:
        with self._errors() as db:
            rows = db.execute(
                "SELECT document FROM runs r WHERE started_at = (SELECT MAX(started_at) "
                "FROM runs s WHERE s.workspace = r.workspace AND s.host = r.host) "
                "ORDER BY started_at DESC").fetchall()
        return [r for r in (_parse(row[0]) for row in rows) if r is not None]

    def counts(self) -> dict[tuple[str, str, str], int]:
        with self._errors() as db:
            rows = db.execute(_COUNTS).fetchall()
        return {(str(w), str(h), str(s)): int(n) for w, h, s, n in rows}

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _filters(workspace: str | None, host: str | None, status: str | None,
             mark: str) -> tuple[str, list[Any]]:
    clauses, args = [], []
    for column, value in (("workspace", workspace), ("host", host), ("status", status)):
        if value is not None:
            clauses.append(f"{column} = {mark}")
            args.append(value)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _one(rows: Sequence[Any], run_id: str) -> RunReport | None:
    if len(rows) > 1:
        raise DiagnosticError(Diagnostic.error(
            "Ambiguous run id", f"More than one run's id starts with {run_id!r}: give more of "
            "it (`tectum runs list` shows them)."))
    return _parse(rows[0][0]) if rows else None


_PG_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY,
        workspace TEXT NOT NULL,
        host TEXT NOT NULL,
        mode TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION NOT NULL,
        commit_sha TEXT,
        document TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS runs_by_agent ON runs (workspace, host, started_at)",
    "CREATE INDEX IF NOT EXISTS runs_by_time ON runs (started_at)",
)


class PostgresRunStore:
    """Run reports in the PostgreSQL state database (``TECTUM_PG_CONN_STR`` / ``[state]
    conn_str``): a ``runs`` table, one connection (autocommit); the table is made by the first
    store that finds none, under an advisory lock (``CREATE TABLE IF NOT EXISTS`` is not safe
    against itself)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.where = "the PostgreSQL state database"
        self._conn: Any = None
        _mask_password(dsn)

    def _connection(self) -> Any:
        import psycopg

        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10,
                                   application_name="tectum (runs)")
            # (the schema is there, the usual case: no lock — CREATE INDEX IF NOT EXISTS waits
            # for a SHARE lock on runs even when the index exists, so making the schema on
            # every connect queued a fleet's reports behind each other: bench/report_ingest.py.
            # runs_by_time is made last: its presence means all of it is there)
            made = conn.execute("SELECT to_regclass('runs_by_time') IS NOT NULL").fetchone()
            if not (made and made[0]):
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(7365286539)")
                    for statement in _PG_SCHEMA:
                        conn.execute(statement)
        except psycopg.ProgrammingError:
            # (an unparsable connection string: libpq's message quotes it, password and all)
            raise DiagnosticError(Diagnostic.error(
                "Invalid state database address",
                f"{self.where}: the connection string cannot be parsed. Write it as "
                "key=value pairs or a postgresql:// URI.")) from None
        except psycopg.Error as exc:
            first = " ".join(str(exc).strip().split("\n", 1)[0].split())
            raise DiagnosticError(Diagnostic.error(
                "Cannot reach the run reports",
                f"{self.where}: {first}. Reports are kept locally until it answers.")) from None
        self._conn = conn
        return conn

    @contextlib.contextmanager
    def _errors(self) -> Iterator[Any]:
        import psycopg

        conn = self._connection()
        try:
            yield conn
        except psycopg.Error as exc:
            first = " ".join(str(exc).strip().split("\n", 1)[0].split())
            raise DiagnosticError(Diagnostic.error(
                "Run reports error", f"{self.where}: {first}.")) from None

    def put(self, report: RunReport) -> None:
        with self._errors() as conn:
            conn.execute(
                f"INSERT INTO runs ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join(['%s'] * len(_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET "
                + ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS[1:]), _row(report))

    def get(self, run_id: str) -> RunReport | None:
        with self._errors() as conn:
            rows = conn.execute("SELECT document FROM runs WHERE starts_with(id, %s) LIMIT 2",
                                (run_id,)).fetchall()
        return _one(rows, run_id)

    def recent(self, *, workspace: str | None = None, host: str | None = None,
             status: str | None = None, limit: int = 50) -> list[RunReport]:
        where, args = _filters(workspace, host, status, "%s")
        with self._errors() as conn:
            rows = conn.execute(f"SELECT document FROM runs{where} ORDER BY started_at DESC "
                                "LIMIT %s", (*args, limit)).fetchall()
        return [r for r in (_parse(row[0]) for row in rows) if r is not None]

    def latest(self) -> list[RunReport]:
        with self._errors() as conn:
            rows = conn.execute(
                "SELECT DISTINCT ON (workspace, host) document, started_at FROM runs "
                "ORDER BY workspace, host, started_at DESC").fetchall()
        found = [r for r in (_parse(row[0]) for row in rows) if r is not None]
        return sorted(found, key=lambda r: r.started_at, reverse=True)

    def counts(self) -> dict[tuple[str, str, str], int]:
        with self._errors() as conn:
            rows = conn.execute(_COUNTS).fetchall()
        return {(str(w), str(h), str(s)): int(n) for w, h, s, n in rows}

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def _mask_password(dsn: str) -> None:
    """Register the password a connection string holds for masking: libpq's messages may
    quote the whole string."""
    from tectum.masking import REDACTOR

    try:
        from psycopg.conninfo import conninfo_to_dict

        password = conninfo_to_dict(dsn).get("password")
    except Exception:  # noqa: BLE001 - unparsable: its text is never shown (see _connection)
        return
    if isinstance(password, str) and password:
        REDACTOR.add(password)


def open_run_store(project: Any) -> RunStore:
    """The run store of ``project`` (a :class:`~tectum.config.project.Project`): beside its
    state (see the module docstring)."""
    backend = str(project.state.get("backend", "sqlite"))
    if backend == "postgres":
        dsn = os.environ.get("TECTUM_PG_CONN_STR") or str(project.state.get("conn_str"))
        return PostgresRunStore(dsn)
    if backend == "sqlite":
        state_dir = os.path.dirname(os.path.join(project.root, project.state_path))
        return SQLiteRunStore(os.path.join(state_dir, "runs.db"))
    return SQLiteRunStore(os.path.join(project.root, ".tectum", "runs.db"))


class Spool:
    """Reports waiting for the store: one JSON file per report in ``directory`` (written to a
    temporary name and renamed, so a kill leaves no half file)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def add(self, report: RunReport) -> None:
        os.makedirs(self.directory, exist_ok=True)
        name = f"{report.started_at:017.6f}-{report.id}.json"
        tmp = os.path.join(self.directory, f".{name}.tmp")
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w",
                  encoding="utf-8") as f:
            json.dump(report.to_json(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.directory, name))

    def waiting(self) -> list[str]:
        """The spooled files, oldest first."""
        try:
            names = sorted(n for n in os.listdir(self.directory) if n.endswith(".json")
                           and not n.startswith("."))
        except FileNotFoundError:
            return []
        return [os.path.join(self.directory, n) for n in names]

    def flush(self, store: RunStore) -> int:
        """Send every spooled report to ``store``, oldest first, deleting each once stored;
        returns how many were sent. Stops at the first failure (DiagnosticError raised); a
        file that is no report is moved aside (``.bad``)."""
        sent = 0
        for path in self.waiting():
            try:
                with open(path, encoding="utf-8") as f:
                    report = RunReport.from_json(json.load(f))
            except (OSError, ValueError):
                with contextlib.suppress(OSError):
                    os.replace(path, path + ".bad")
                continue
            store.put(report)
            os.unlink(path)
            sent += 1
        return sent
