"""Fixtures of the ``postgresql`` provider's tests: the shared cluster of the test session
(:func:`tests.backends.conftest.shared_cluster`), names unique to each test (removed by name
afterwards: the cluster is shared with other tests), project directories whose
``tectum.toml`` points at the cluster, and a hook that runs ``tectum`` with its
:class:`~tectum.providers.postgresql.client.Client` instrumented (kill -9 or a server stop at
the N-th change)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.backends.conftest import Cluster, shared_cluster
from tests.conftest import Result, tectum_env


@dataclass
class Pg:
    """A cluster under test: its port, DSN and hand-run statements."""

    cluster: Cluster

    @property
    def port(self) -> int:
        return self.cluster.port

    def toml(self, **more: Any) -> str:
        extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in more.items())
        return (f'[providers.postgresql]\nhost = "127.0.0.1"\nport = {self.port}\n'
                f'username = "postgres"\ndatabase = "postgres"\nsslmode = "disable"\n{extra}')

    def connect(self, db: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=db,
                               autocommit=True)

    def run(self, stmt: sql.Composable, db: str = "postgres") -> None:
        with self.connect(db) as conn:
            conn.execute(stmt)  # type: ignore[arg-type]

    def rows(self, stmt: sql.Composable | str, params: Any = None,
             db: str = "postgres") -> list[tuple[Any, ...]]:
        with self.connect(db) as conn:
            return list(conn.execute(stmt, params).fetchall())  # type: ignore[call-overload]

    def roles(self, prefix: str) -> list[str]:
        return sorted(r[0] for r in self.rows(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", [prefix]))

    def databases(self, prefix: str) -> list[str]:
        return sorted(r[0] for r in self.rows(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", [prefix]))

    def clean(self, prefix: str) -> None:
        """Drop every database and role whose name starts with ``prefix``."""
        for db in self.databases(prefix):
            self.run(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(db)))
        roles = self.roles(prefix)
        if not roles:
            return
        dbs = [r[0] for r in self.rows(
            "SELECT datname FROM pg_database WHERE datallowconn")]
        for db in dbs:
            for role in roles:
                try:
                    self.run(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)), db)
                except psycopg.Error:
                    pass
        for role in roles:
            self.run(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(scope="session")
def pg() -> Pg:
    """The session's shared cluster."""
    return Pg(shared_cluster())


@pytest.fixture
def prefix(pg: Pg) -> Iterator[str]:
    """A name prefix unique to the test; what starts with it is dropped afterwards."""
    value = f"tp{secrets.token_hex(3)}_"
    yield value
    pg.clean(value)


@pytest.fixture
def project(tmp_path: Path, pg: Pg) -> Callable[..., Path]:
    """``project(stack, toml=None)``: a project directory with ``stack.py`` and a
    ``tectum.toml`` pointing at the cluster."""

    def make(stack: str, toml: str | None = None, name: str = "proj") -> Path:
        root = tmp_path / name
        root.mkdir(exist_ok=True)
        (root / "stack.py").write_text(textwrap.dedent(stack))
        (root / "tectum.toml").write_text(toml if toml is not None else pg.toml())
        return root

    return make


#: ``python HOOK ACTION WHEN N PROJECT [ARGS...]``: ``tectum ARGS`` whose Client, at its
#: N-th changing call (``transaction``), does ACTION ``before`` or ``after`` it: ``kill``
#: (SIGKILL itself) or ``stop`` (stop the server: ``PGHOOK_STOP`` is the command)
_HOOK = """\
import os, signal, subprocess, sys
from tectum.providers.postgresql import client
action, when, nth, project = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
seen = [0]
real = client.Client.transaction
def act():
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    subprocess.run(os.environ["PGHOOK_STOP"], shell=True, check=True,
                   capture_output=True)
def transaction(self, db, stmts):
    seen[0] += 1
    if seen[0] != nth:
        return real(self, db, stmts)
    if when == "after":
        real(self, db, stmts)
        act()
        return None
    act()
    return real(self, db, stmts)
client.Client.transaction = transaction
from tectum.cli.main import main
sys.argv = ["tectum", "-chdir", project, *sys.argv[5:]]
main()
"""


def hooked(project: Path, action: str, when: str, nth: int, *args: str,
           env: dict[str, str] | None = None) -> Result:
    """Run ``tectum ARGS`` in ``project`` with the hook (see :data:`_HOOK`)."""
    hook = project.parent / "pghook.py"
    hook.write_text(_HOOK)
    proc = subprocess.run([sys.executable, str(hook), action, when, str(nth), str(project),
                           *args], cwd=project, env=tectum_env(env), capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def pg_bindir() -> Path:
    from tests.backends.conftest import _pg_bindir

    return _pg_bindir()


def as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nobody listens on for the whole test: bound (so no other process takes it)
    but not listening, so a connection to it is refused at once."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
