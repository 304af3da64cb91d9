"""The target of the ``postgresql`` provider: one server, reached with psycopg 3.

:class:`Client` keeps one autocommit connection per database it works in, each opened on
first use: the maintenance database (``[providers.postgresql] database``, default
``postgres``: roles, databases, database grants) and every database a schema, extension or
grant lives in. Statements are built with :mod:`psycopg.sql` only (``Identifier`` and
``Literal``), never by formatting text, so a name holding quotes or ``;`` is one identifier.

Reads go through :meth:`Client.query` (never mutating); changes through :meth:`Client.execute`
(one statement) and :meth:`Client.transaction` (several, atomically). A server that cannot be
reached raises :class:`PgError` naming ``host:port`` and what to do, and marks the target down
(:attr:`Client.down`, ``(kind, reason)``): further calls fail at once with that reason for
``connect_timeout`` seconds (a read of six types waits once, not six times), then try again;
a connection made clears it. A database that does not exist (SQLSTATE ``3D000``) is no
server fault: :class:`MissingDatabase`, the target stays up.

A connection kept from earlier is checked (``SELECT 1``) before a call when it has been idle
for a while (:data:`IDLE_CHECK` seconds): one cut by a server restart or an idle timeout is
replaced by a new one, so the first change after a restart does not fail.

Sessions run with ``TimeZone=UTC`` and ``DateStyle=ISO``, whatever the server's or the role's
defaults: timestamps read back in one form.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, cast

import psycopg
from psycopg import sql
from psycopg.errors import InvalidCatalogName
from psycopg.rows import dict_row

from tectum.providers.postgresql.common import MissingDatabase, PgError

__all__ = ["Client", "MissingDatabase", "PgError", "Statement"]

#: seconds a connection may sit unused before a call checks it with ``SELECT 1``
IDLE_CHECK = 5.0

#: what may be executed: a composed statement (never a plain string built from input)
Statement = sql.Composable


class Client:
    """Connections to one PostgreSQL server (see the module docstring).

    ``settings``: the provider's validated settings (``host``, ``port``, ``database``,
    ``username``, ``sslmode``, ``connect_timeout``); ``password``: from the environment
    override, else None (libpq then reads ``PGPASSWORD`` or ``~/.pgpass``)."""

    def __init__(self, settings: dict[str, Any], password: str | None = None) -> None:
        self.settings = settings
        self.database = str(settings.get("database") or "postgres")
        self._password = password
        self._conns: dict[str, psycopg.Connection[Any]] = {}
        self._locks: dict[str, threading.RLock] = {}
        self._lock = threading.Lock()
        self.down: tuple[str, str] | None = None
        self._down_since = 0.0
        self._used: dict[str, float] = {}
        self._superuser: bool | None = None

    # -- connections ----------------------------------------------------------------------
    @property
    def where(self) -> str:
        """``host:port`` as the settings (or libpq's defaults) give them."""
        host = self.settings.get("host") or "(libpq default host)"
        port = self.settings.get("port") or 5432
        return f"{host}:{port}"

    def _db_lock(self, db: str) -> threading.RLock:
        with self._lock:
            return self._locks.setdefault(db, threading.RLock())

    def _connect(self, db: str) -> psycopg.Connection[Any]:
        conn = self._conns.get(db)
        now = time.monotonic()
        if conn is not None and not conn.closed:
            if now - self._used.get(db, now) < IDLE_CHECK:
                self._used[db] = now
                return conn
            try:  # (idle a while: the server may have restarted or cut it since)
                conn.execute("SELECT 1")
                self._used[db] = now
                return conn
            except psycopg.Error:
                self._broken(db)
        s = self.settings
        timeout = int(s.get("connect_timeout") or 15)
        if self.down is not None and now - self._down_since < timeout:
            raise PgError(self.down[1])
        kwargs: dict[str, Any] = {
            "dbname": db, "autocommit": True, "application_name": "tectum",
            "connect_timeout": timeout,
            "options": "-c TimeZone=UTC -c DateStyle=ISO",
        }
        for key, name in (("host", "host"), ("port", "port"), ("username", "user"),
                          ("sslmode", "sslmode")):
            if s.get(key) not in (None, ""):
                kwargs[name] = s[key]
        if self._password is not None:
            kwargs["password"] = self._password
        try:
            conn = psycopg.connect(**kwargs)
        except psycopg.Error as exc:
            if db != self.database and self._missing(db, exc):
                raise MissingDatabase(db) from None
            error = PgError(
                f"cannot connect to PostgreSQL at {self.where} (database {db!r}, user "
                f"{s.get('username') or '(libpq default)'}): {_first_line(exc)}. Check that "
                "the server runs and accepts connections there, and [providers.postgresql] "
                "host, port, username and sslmode (the password comes from PGPASSWORD, "
                "~/.pgpass or TECTUM_PROVIDER_POSTGRESQL_PASSWORD)")
            self.down, self._down_since = ("unreachable", str(error)), time.monotonic()
            raise error from None
        self.down = None
        self._conns[db] = conn
        self._used[db] = time.monotonic()
        return conn

    def _missing(self, db: str, exc: psycopg.Error) -> bool:
        """Whether connecting to ``db`` failed because it does not exist: SQLSTATE
        ``3D000`` when the error carries one, else (libpq gives none for a refused
        connection) what the maintenance database's ``pg_database`` says — never the
        message's text, which follows the server's language."""
        if exc.sqlstate == "3D000" or isinstance(exc, InvalidCatalogName):
            return True
        if exc.sqlstate is not None:
            return False
        try:
            rows = self.query(self.database, sql.SQL(
                "SELECT 1 FROM pg_database WHERE datname = %s"), [db])
        except PgError:
            return False  # (the server itself is not reachable)
        return not rows

    def _broken(self, db: str) -> None:
        conn = self._conns.pop(db, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def encrypt_password(self, password: str, role: str) -> str:
        """The SCRAM-SHA-256 verifier of ``password`` for ``role``, made by libpq on this
        side (``PQencryptPasswordConn``): what ``ALTER ROLE ... PASSWORD`` is given, so the
        password itself never reaches the server. Raises :class:`PgError`."""
        with self._db_lock(self.database):
            conn = self._connect(self.database)
            try:
                made = conn.pgconn.encrypt_password(password.encode(), role.encode(),
                                                    b"scram-sha-256")
            except psycopg.Error as exc:
                raise PgError(f"libpq could not make a SCRAM verifier: {_first_line(exc)}"
                              ) from None
        return bytes(made).decode()

    def is_superuser(self) -> bool:
        """Whether the connecting role is a superuser (it may read ``pg_authid``)."""
        if self._superuser is None:
            rows = self.query(self.database, sql.SQL(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
            self._superuser = bool(rows and rows[0]["rolsuper"])
        return self._superuser

    def server_version(self) -> int:
        """The server's version as libpq gives it (150008 for 15.8). Raises
        :class:`PgError`."""
        with self._db_lock(self.database):
            return int(self._connect(self.database).info.server_version)

    # -- calls ----------------------------------------------------------------------------
    def query(self, db: str, stmt: Statement, params: Sequence[Any] | None = None
              ) -> list[dict[str, Any]]:
        """Rows of a read-only statement in database ``db`` (dicts by column name). Raises
        :class:`PgError`, or :class:`MissingDatabase` when ``db`` does not exist."""
        with self._db_lock(db):
            conn = self._connect(db)
            try:
                with conn.cursor(row_factory=dict_row) as cur:
                    cur.execute(cast(sql.Composed, stmt), params)
                    return list(cur.fetchall())
            except psycopg.OperationalError as exc:
                self._broken(db)
                raise PgError(f"reading from PostgreSQL at {self.where} failed: "
                              f"{_first_line(exc)}") from None
            except psycopg.Error as exc:
                raise PgError(f"PostgreSQL at {self.where}: {_first_line(exc)}") from None

    def execute(self, db: str, stmt: Statement) -> None:
        """Run one changing statement in database ``db``. Raises :class:`PgError` (with the
        server's message, never the statement)."""
        self.transaction(db, [stmt])

    def transaction(self, db: str, stmts: Sequence[Statement]) -> None:
        """Run ``stmts`` in database ``db`` in one transaction (all or nothing; a single
        statement runs alone, as ``CREATE DATABASE`` must). Raises :class:`PgError`."""
        with self._db_lock(db):
            conn = self._connect(db)
            try:
                if len(stmts) == 1:
                    conn.execute(cast(sql.Composed, stmts[0]))
                else:
                    with conn.transaction():
                        for stmt in stmts:
                            conn.execute(cast(sql.Composed, stmt))
            except psycopg.OperationalError as exc:
                self._broken(db)
                raise PgError(f"PostgreSQL at {self.where} failed while changing "
                              f"database {db!r}: {_first_line(exc)} (the connection was "
                              "lost; run tectum apply again once the server is back)"
                              ) from None
            except psycopg.Error as exc:
                raise PgError(_first_line(exc)) from None

    def forget(self, db: str) -> None:
        """Close the connection to ``db`` (before dropping it)."""
        with self._db_lock(db):
            self._broken(db)

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, {}
        for conn in conns.values():
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def locked(self, db: str) -> Iterator[None]:
        with self._db_lock(db):
            yield


def _first_line(exc: BaseException) -> str:
    """The server's message of ``exc`` (its first line: psycopg appends context lines),
    followed by its DETAIL (e.g. the objects that block a ``DROP SCHEMA``) and HINT when the
    server sent them."""
    text = str(exc).strip() or type(exc).__name__
    out = text.splitlines()[0].rstrip(".")
    diag = getattr(exc, "diag", None)
    for label, part in (("detail", getattr(diag, "message_detail", None)),
                        ("hint", getattr(diag, "message_hint", None))):
        if isinstance(part, str) and part.strip():
            out += f" ({label}: {' '.join(part.split()).rstrip('.')})"
    return out
