"""Faults and secrets, on a private cluster of this module's own (statements logged with
``log_statement = all``; stopped mid-apply without disturbing the shared one):

* the secrets canary: a role's password (a sensitive variable) and a generated one
  (``random_password.result``) go through plan, apply, show, state, drift, a change made by
  hand and its repair, and destroy; the canary is then looked for in every output, every file
  of the project (state database, WAL) and the server's statement log: 0 hits — while the log
  holds the statements (``CREATE ROLE ... PASSWORD 'SCRAM-SHA-256$...'``);
* a password changed by hand is drift (shown masked) and repaired: the stored SCRAM verifier
  then checks against the desired password;
* PostgreSQL stopped in the middle of an apply: the run fails naming the changes that could
  not be made and the server, state keeps what was done, and once the server is back the next
  apply converges (then no change).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from psycopg import sql

from tectum.providers.postgresql.scram import verifies
from tests.backends.conftest import Cluster, _pg_bindir
from tests.conftest import Result, ok, run_tectum
from tests.providers.postgresql.conftest import Pg, as_postgres, hooked


@pytest.fixture(scope="module")
def logged() -> Iterator[Pg]:
    cluster = Cluster(_pg_bindir(), settings={"log_statement": "all",
                                              "password_encryption": "scram-sha-256"})
    try:
        cluster.start()
        yield Pg(cluster)
    finally:
        cluster.stop()


def _files(root: Path) -> Iterator[Path]:
    yield from (p for p in root.rglob("*") if p.is_file())


def test_the_password_never_shows_and_drift_of_it_is_repaired(
        logged: Pg, project: Callable[..., Path]) -> None:
    canary = f"Canary{secrets.token_hex(12)}"
    stack = '''
from tectum import var
from tectum.postgresql import Role
from tectum.random import Password
pw = var("pw", str, sensitive=True)
gen = Password("gen", length=24, special=False)
Role("app", name="canary_app", login=True, password=pw)
Role("gen", name="canary_gen", login=True, password=gen.result)
'''
    root = project(stack, toml=logged.toml())
    env = {"TECTUM_VAR_pw": canary}
    outputs: list[Result] = []

    def run(*args: str) -> Result:
        res = run_tectum(*args, cwd=root, env=env)
        outputs.append(res)
        return res

    ok(run("plan"))
    ok(run("apply", "-auto-approve"))
    stored = logged.rows("SELECT rolpassword FROM pg_authid WHERE rolname = 'canary_app'")
    assert stored[0][0].startswith("SCRAM-SHA-256$") and verifies(stored[0][0], canary)
    assert ok(run("plan", "-detailed-exitcode")).returncode == 0
    for args in (("show",), ("show", "-json"), ("state", "list"), ("state", "pull"),
                 ("drift", "-detailed-exitcode"), ("refresh",)):
        ok(run(*args))  # (each ran to the end: its whole output was looked at)
    # changed by hand: drift, masked; repaired
    logged.run(sql.SQL("ALTER ROLE canary_app PASSWORD {}").format(
        sql.Literal("set-by-hand-" + secrets.token_hex(4))))
    changed = run("plan", "-detailed-exitcode")
    assert changed.returncode == 2 and "password" in changed.output, changed.output
    assert "(sensitive value)" in changed.output
    ok(run("apply", "-auto-approve"))
    stored = logged.rows("SELECT rolpassword FROM pg_authid WHERE rolname = 'canary_app'")
    assert verifies(stored[0][0], canary)
    assert run("plan", "-detailed-exitcode").returncode == 0
    ok(run("destroy", "-auto-approve"))
    assert logged.rows("SELECT rolname FROM pg_roles WHERE rolname LIKE 'canary_%'") == []

    hits = [" ".join(o.stdout.split()[:3]) for o in outputs if canary in o.output]
    hits += [str(p) for p in _files(root) if canary.encode() in p.read_bytes()]
    log = logged.cluster.log.read_bytes()
    assert b"CREATE ROLE" in log and b"SCRAM-SHA-256$" in log, "statements were not logged"
    if canary.encode() in log:
        hits.append("the server log")
    assert hits == [], f"the password was found in: {hits}"


def test_postgresql_stopped_mid_apply_then_the_next_apply_converges(
        logged: Pg, project: Callable[..., Path]) -> None:
    suffix = secrets.token_hex(3)
    stack = f'''
from tectum.postgresql import Database, Grant, Role, Schema
for i in range(4):
    r = Role(f"r{{i}}", name=f"mid_{suffix}_r{{i}}", login=True)
    d = Database(f"d{{i}}", name=f"mid_{suffix}_d{{i}}", owner=r.name)
    Schema(f"s{{i}}", name="s", database=d.name, owner=r.name)
    Grant(f"g{{i}}", role=r.name, database=d.name, object_type="database",
          privileges=["ALL"])
'''
    root = project(stack, toml=logged.toml(concurrency=1))
    data = logged.cluster.data
    stop = " ".join([*as_postgres(), str(_pg_bindir() / "pg_ctl"), "-D", str(data),
                     "-m", "immediate", "-w", "stop"])
    try:
        res = hooked(root, "stop", "before", 5, "apply", "-auto-approve",
                     env={"PGHOOK_STOP": stop})
        assert res.returncode == 1, res.output
        assert "Traceback" not in res.output
        assert f"127.0.0.1:{logged.port}" in res.output, res.output
        assert "State records everything that was done" in res.output, res.output
        listed = ok(run_tectum("state", "list", cwd=root)).stdout.split()
        assert 1 <= len(listed) < 16, listed
    finally:
        logged.cluster.restart()
    ok(run_tectum("apply", "-auto-approve", cwd=root))
    assert run_tectum("plan", "-detailed-exitcode", cwd=root).returncode == 0
    assert len(ok(run_tectum("state", "list", cwd=root)).stdout.split()) == 16
    ok(run_tectum("destroy", "-auto-approve", cwd=root))
    assert logged.rows("SELECT datname FROM pg_database WHERE datname LIKE %s",
                       [f"mid_{suffix}%"]) == []
