"""The ``postgresql`` provider through the real CLI on the shared cluster: plan shows every
type; apply makes them; ten plans in a row then show no change (also after the owner makes a
new table that default privileges cover); destroy removes everything in dependency order.
Import by the CLI, drift (a database dropped by hand, a grant revoked by hand, a role
attribute changed by hand) repaired, and the diagnostics of bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from psycopg import sql

from tests.conftest import ok, run_tectum
from tests.providers.postgresql.conftest import Pg

STACK = '''
from tectum import output
from tectum.postgresql import Database, DefaultPrivileges, Extension, Grant, Role, Schema

P = "{prefix}"
owner = Role("owner", name=P + 'own"er;x', login=True)
reader = Role("reader", name=P + "reader", roles=[])
db = Database("app", name=P + "app;'db", owner=owner.name)
schema = Schema("data", name='da"ta', database=db.name, owner=owner.name)
Extension("trgm", name="pg_trgm", database=db.name, schema=schema.name)
Grant("connect", role=reader.name, database=db.name, object_type="database",
      privileges=["CONNECT"])
Grant("usage", role=reader.name, database=db.name, schema=schema.name, object_type="schema",
      privileges=["USAGE"])
Grant("tables", role=reader.name, database=db.name, schema=schema.name, object_type="table",
      privileges=["SELECT"])
DefaultPrivileges("future", role=reader.name, database=db.name, owner=owner.name,
                  schema=schema.name, object_type="table", privileges=["SELECT"])
output("database", db.name)
'''

TYPES = ("postgresql_role", "postgresql_database", "postgresql_schema", "postgresql_extension",
         "postgresql_grant", "postgresql_default_privileges")


def test_plan_apply_ten_noops_and_destroy(project: Callable[..., Path], pg: Pg,
                                          prefix: str) -> None:
    root = project(STACK.format(prefix=prefix))
    planned = ok(run_tectum("plan", cwd=root))
    for type_name in TYPES:
        assert type_name in planned.output, planned.output
    assert "9 to add" in planned.output, planned.output
    ok(run_tectum("apply", "-auto-approve", cwd=root))
    db = f"{prefix}app;'db"
    assert pg.databases(prefix) == [db]
    assert pg.roles(prefix) == sorted([f'{prefix}own"er;x', f"{prefix}reader"])
    # the owner makes a table: default privileges give the reader SELECT on it (no drift)
    with pg.connect(db) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(f'{prefix}own"er;x')))
        conn.execute(sql.SQL('CREATE TABLE {}.t (id int)').format(sql.Identifier('da"ta')))
    for _ in range(10):
        noop = run_tectum("plan", "-detailed-exitcode", cwd=root)
        assert noop.returncode == 0, noop.output
    assert ok(run_tectum("output", "database", cwd=root)).stdout.strip().strip('"') == db
    # the schema holds a table tectum did not make: it is not dropped (drop_cascade false)
    refused = run_tectum("destroy", "-auto-approve", cwd=root)
    assert refused.returncode == 1 and "cannot drop schema" in refused.output, refused.output
    assert "postgresql_database.app: upstream postgresql_schema.data failed" in refused.output
    assert pg.databases(prefix) == [db]
    pg.run(sql.SQL("DROP TABLE {}.t").format(sql.Identifier('da"ta')), db)
    ok(run_tectum("destroy", "-auto-approve", cwd=root))
    assert pg.databases(prefix) == [] and pg.roles(prefix) == []


def test_drift_is_seen_and_repaired(project: Callable[..., Path], pg: Pg, prefix: str) -> None:
    root = project(STACK.format(prefix=prefix))
    ok(run_tectum("apply", "-auto-approve", cwd=root))
    db = f"{prefix}app;'db"
    reader = f"{prefix}reader"
    with pg.connect(db) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.t1 (id int)").format(sql.Identifier('da"ta')))
    # a table made by someone else: the ALL TABLES grant no longer holds (real drift)
    drift = run_tectum("plan", "-detailed-exitcode", cwd=root)
    assert drift.returncode == 2 and "postgresql_grant.tables" in drift.output, drift.output
    ok(run_tectum("apply", "-auto-approve", cwd=root))
    assert run_tectum("plan", "-detailed-exitcode", cwd=root).returncode == 0
    # a grant revoked by hand
    pg.run(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
        sql.Identifier(db), sql.Identifier(reader)))
    seen = run_tectum("drift", cwd=root)
    assert "postgresql_grant.connect: deleted" in seen.output, seen.output
    ok(run_tectum("apply", "-auto-approve", cwd=root))
    assert pg.rows("SELECT has_database_privilege(%s, %s, 'CONNECT')", [reader, db]) == [(True,)]
    # a role attribute changed by hand
    pg.run(sql.SQL("ALTER ROLE {} CREATEDB CONNECTION LIMIT 3").format(sql.Identifier(reader)))
    changed = run_tectum("plan", "-detailed-exitcode", cwd=root)
    assert changed.returncode == 2 and "create_database" in changed.output, changed.output
    assert "connection_limit" in changed.output
    ok(run_tectum("apply", "-auto-approve", cwd=root))
    assert pg.rows("SELECT rolcreatedb, rolconnlimit FROM pg_roles WHERE rolname = %s",
                   [reader]) == [(False, -1)]
    # the database dropped by hand: planned anew, made again
    pg.run(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))
    again = run_tectum("plan", "-detailed-exitcode", cwd=root)
    assert again.returncode == 2 and "postgresql_database.app" in again.output, again.output
    ok(run_tectum("apply", "-auto-approve", cwd=root))
    assert pg.databases(prefix) == [db]
    assert run_tectum("plan", "-detailed-exitcode", cwd=root).returncode == 0
    ok(run_tectum("destroy", "-auto-approve", cwd=root))
    assert pg.databases(prefix) == [] and pg.roles(prefix) == []


def test_import_by_the_cli(project: Callable[..., Path], pg: Pg, prefix: str) -> None:
    role, db = f"{prefix}imp'r", f"{prefix}imp;db"
    pg.run(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 4").format(sql.Identifier(role)))
    pg.run(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db),
                                                          sql.Identifier(role)))
    pg.run(sql.SQL("CREATE SCHEMA s AUTHORIZATION {}").format(sql.Identifier(role)), db)
    pg.run(sql.SQL("GRANT USAGE ON SCHEMA s TO PUBLIC"), db)
    stack = f'''
from tectum.postgresql import Database, Grant, Role, Schema
r = Role("r", name={role!r}, login=True, connection_limit=4)
d = Database("d", name={db!r}, owner=r.name)
s = Schema("s", name="s", database=d.name, owner=r.name)
Grant("g", role="public", database=d.name, schema="s", object_type="schema",
      privileges=["USAGE"])
'''
    root = project(stack)
    ok(run_tectum("import", "postgresql_role.r", role, cwd=root))
    ok(run_tectum("import", "postgresql_database.d", db, cwd=root))
    ok(run_tectum("import", "postgresql_schema.s", f"{db}.s", cwd=root))
    ok(run_tectum("import", "postgresql_grant.g", f"public:{db}:schema:s", cwd=root))
    plan = run_tectum("plan", "-detailed-exitcode", cwd=root)
    assert plan.returncode == 0, plan.output
    # imported objects were found, not made: destroy forgets them, deletes nothing
    ok(run_tectum("destroy", "-auto-approve", cwd=root))
    assert pg.databases(prefix) == [db] and pg.roles(prefix) == [role]


def test_bad_input_is_a_diagnostic(project: Callable[..., Path], pg: Pg, prefix: str,
                                   tmp_path: Path) -> None:
    long_name = "x" * 64
    cases = {
        "unknown attribute": (f'Role("r", name="{prefix}r", colour="blue")', "colour"),
        "a name too long": (f'Role("r", name="{long_name}")', "63-byte"),
        "a NUL byte": (f'Role("r", name="{prefix}a\\x00b")', "NUL"),
        "a bad privilege": (f'Grant("g", role="{prefix}r", database="postgres", '
                            'object_type="database", privileges=["SELECT"])',
                            "not a privilege of a database"),
        "a grant without schema": (f'Grant("g", role="{prefix}r", database="postgres", '
                                   'object_type="table", privileges=["SELECT"])',
                                   "needs schema"),
    }
    for what, (decl, expect) in cases.items():
        root = project("from tectum.postgresql import Grant, Role\n" + decl + "\n",
                       name=what.replace(" ", "_"))
        res = run_tectum("plan", cwd=root)
        assert res.returncode == 1, (what, res.output)
        assert expect in res.output and "Traceback" not in res.output, (what, res.output)
    # a password in tectum.toml is refused, and not printed
    root = project(f'from tectum.postgresql import Role\nRole("r", name="{prefix}r")\n',
                   toml=pg.toml(password="hunter2-in-toml"), name="pw")
    res = run_tectum("plan", cwd=root)
    assert res.returncode == 1 and "Password in tectum.toml" in res.output, res.output
    assert "hunter2-in-toml" not in res.output
    # a server that cannot be reached: named, with what to do; nothing planned
    closed = tmp_path / "closed.toml"
    closed.write_text(pg.toml().replace(f"port = {pg.port}", "port = 1"))
    root = project(f'from tectum.postgresql import Role\nRole("r", name="{prefix}r")\n',
                   toml=closed.read_text(), name="down")
    res = run_tectum("plan", cwd=root)
    assert res.returncode == 1 and "127.0.0.1:1" in res.output, res.output
    assert "Check that the server runs" in res.output and "Traceback" not in res.output
    assert "to add" not in res.output
