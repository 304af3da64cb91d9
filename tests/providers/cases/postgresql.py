"""Conformance cases of the ``postgresql`` types, on the test session's shared PostgreSQL
cluster (:func:`tests.backends.conftest.shared_cluster`). Every name carries a random suffix,
the role names hold a double quote, a single quote and ``;`` (identifiers are quoted by
``psycopg.sql``, never formatted into text), and each builder drops what its case may have
left, by name. Tampering is done by hand over a connection of the test's own."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tectum.testing import Case
from tectum.testing.recording import Recorder
from tests.backends.conftest import shared_cluster

#: the Client's methods that only read
READS = frozenset({"query", "is_superuser", "encrypt_password", "where", "locked",
                   "server_version"})


def record(target: Any) -> Recorder:
    return Recorder(target, read_only=READS)


def settings(port: int) -> dict[str, Any]:
    """Provider settings for the cluster on ``port`` (trust authentication: no password)."""
    return {"host": "127.0.0.1", "port": port, "database": "postgres",
            "username": "postgres", "sslmode": "disable"}


def odd_name(prefix: str) -> str:
    """A unique name holding a double quote, a single quote and ``;``."""
    return f"{prefix}\"q';{secrets.token_hex(4)}"


class Admin:
    """Statements run by hand (as ``postgres``) on the shared cluster, outside tectum."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def run(self, stmt: sql.Composable, db: str = "postgres") -> None:
        with psycopg.connect(self.dsn, dbname=db, autocommit=True) as conn:
            conn.execute(stmt)  # type: ignore[arg-type]

    def drop_database(self, name: str) -> None:
        self.run(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def drop_role(self, name: str) -> None:
        for db in self.databases():
            try:
                self.run(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)), db)
            except psycopg.errors.UndefinedObject:
                return
        self.run(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))

    def databases(self) -> list[str]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT datname FROM pg_database WHERE datallowconn").fetchall()
        return [str(r[0]) for r in rows]

    def create_database(self, name: str) -> None:
        self.run(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


@contextmanager
def _world() -> Iterator[tuple[Admin, dict[str, Any]]]:
    cluster = shared_cluster()
    yield Admin(cluster.dsn), settings(cluster.port)


@contextmanager
def role_case(tmp: Path) -> Iterator[Case]:
    with _world() as (admin, conf):
        name = odd_name("tectum_r")
        group = odd_name("tectum_g")
        admin.run(sql.SQL("CREATE ROLE {}").format(sql.Identifier(group)))

        def tamper(_client: Any, _record: dict[str, Any]) -> None:
            admin.run(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(name)))

        try:
            yield Case("postgresql_role",
                       # (the password: tests/providers/postgresql/test_faults.py, the
                       # secrets canary, and test_regressions.py — an import cannot read a
                       # password back, as in Terraform)
                       {"name": name, "login": True, "connection_limit": 5, "roles": [group]},
                       update={"connection_limit": 10, "create_database": True, "roles": [],
                               "valid_until": "2040-01-01 00:00:00+00"},
                       tamper=tamper, drift="login", import_id=name, settings=conf,
                       root=str(tmp), record=record)
        finally:
            try:
                admin.drop_role(name)
            finally:
                admin.drop_role(group)


@contextmanager
def database_case(tmp: Path) -> Iterator[Case]:
    with _world() as (admin, conf):
        name = odd_name("tectum_d")

        def tamper(_client: Any, _record: dict[str, Any]) -> None:
            admin.run(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 1").format(
                sql.Identifier(name)))

        try:
            yield Case("postgresql_database",
                       {"name": name, "connection_limit": 3, "owner": "postgres",
                        "encoding": "UTF8", "template": "template0"},
                       update={"connection_limit": 7, "allow_connections": False},
                       tamper=tamper, drift="connection_limit", import_id=name, settings=conf,
                       root=str(tmp), record=record)
        finally:
            admin.drop_database(name)


@contextmanager
def _database(admin: Admin) -> Iterator[str]:
    db = f"tectum_cdb_{secrets.token_hex(4)}"
    admin.create_database(db)
    try:
        yield db
    finally:
        admin.drop_database(db)


@contextmanager
def schema_case(tmp: Path) -> Iterator[Case]:
    with _world() as (admin, conf), _database(admin) as db:
        name = odd_name("s")
        owner = odd_name("tectum_o")
        admin.run(sql.SQL("CREATE ROLE {}").format(sql.Identifier(owner)))

        def tamper(_client: Any, _record: dict[str, Any]) -> None:
            admin.run(sql.SQL("ALTER SCHEMA {} OWNER TO postgres").format(
                sql.Identifier(name)), db)

        try:
            yield Case("postgresql_schema", {"name": name, "database": db,
                                             "owner": "postgres"},
                       update={"owner": owner}, tamper=tamper, drift="owner",
                       import_id=f"{db}.{name}", settings=conf, root=str(tmp), record=record)
        finally:
            admin.drop_database(db)
            admin.drop_role(owner)


@contextmanager
def extension_case(tmp: Path) -> Iterator[Case]:
    with _world() as (admin, conf), _database(admin) as db:
        admin.run(sql.SQL("CREATE SCHEMA other"), db)

        def tamper(_client: Any, _record: dict[str, Any]) -> None:
            admin.run(sql.SQL("ALTER EXTENSION hstore SET SCHEMA other"), db)

        yield Case("postgresql_extension", {"name": "hstore", "database": db,
                                            "version": "1.6", "schema": "public"},
                   update={"version": "1.7"}, tamper=tamper, drift="schema",
                   import_id=f"{db}.hstore", settings=conf, root=str(tmp), record=record)


@contextmanager
def grant_case(tmp: Path) -> Iterator[Case]:
    with _world() as (admin, conf), _database(admin) as db:
        role = odd_name("tectum_gr")

        def tamper(_client: Any, _record: dict[str, Any]) -> None:
            admin.run(sql.SQL("REVOKE SELECT ON public.t1 FROM {}").format(
                sql.Identifier(role)), db)

        try:
            admin.run(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
            for table in ("t1", 'odd"t;2'):
                admin.run(sql.SQL("CREATE TABLE public.{} (id int)").format(
                    sql.Identifier(table)), db)
            yield Case("postgresql_grant",
                       {"role": role, "database": db, "schema": "public",
                        "object_type": "table", "privileges": ["SELECT"]},
                       update={"privileges": ["SELECT", "INSERT"]}, tamper=tamper,
                       drift="privileges", import_id=f"{role}:{db}:table:public",
                       settings=conf, root=str(tmp), record=record)
        finally:
            admin.drop_database(db)
            admin.drop_role(role)


@contextmanager
def default_privileges_case(tmp: Path) -> Iterator[Case]:
    with _world() as (admin, conf), _database(admin) as db:
        role = odd_name("tectum_dp")
        admin.run(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))

        def tamper(_client: Any, _record: dict[str, Any]) -> None:
            admin.run(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public "
                              "REVOKE INSERT ON TABLES FROM {}").format(sql.Identifier(role)),
                      db)

        try:
            yield Case("postgresql_default_privileges",
                       {"role": role, "database": db, "owner": "postgres",
                        "schema": "public", "object_type": "table",
                        "privileges": ["SELECT"]},
                       update={"privileges": ["SELECT", "INSERT"]}, tamper=tamper,
                       drift="privileges", import_id=f"{role}:{db}:postgres:table:public",
                       settings=conf, root=str(tmp), record=record)
        finally:
            admin.drop_database(db)
            admin.drop_role(role)


BUILDERS: dict[str, Callable[[Path], AbstractContextManager[Case]]] = {
    "postgresql_role": role_case,
    "postgresql_database": database_case,
    "postgresql_schema": schema_case,
    "postgresql_extension": extension_case,
    "postgresql_grant": grant_case,
    "postgresql_default_privileges": default_privileges_case,
}
MARKS: dict[str, list[pytest.MarkDecorator]] = {}
