"""Regressions of the review of the ``postgresql`` provider (one test per item, numbered as
the review numbers them), on the shared cluster: mostly the types called directly with a
:class:`~tectum.providers.postgresql.client.Client` (fast), the CLI where the behaviour lives
in the plan (a refused stack, an import ID)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tectum.diagnostics import DiagnosticError
from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ReadItem, ResourceType
from tectum.providers.postgresql import client as client_module
from tectum.providers.postgresql.client import Client, MissingDatabase, PgError
from tectum.providers.postgresql.common import grantee
from tectum.providers.postgresql.database import DatabaseType, SchemaType
from tectum.providers.postgresql.grant import DefaultPrivilegesType, GrantType
from tectum.providers.postgresql.role import CHANGED, RoleType
from tectum.providers.postgresql.scram import saslprep, verifies
from tests.conftest import run_tectum
from tests.providers.cases.postgresql import settings
from tests.providers.postgresql.conftest import Pg


@pytest.fixture
def client(pg: Pg) -> Iterator[Client]:
    made = Client(settings(pg.port))
    yield made
    made.close()


def _apply(rt: ResourceType[Any], client: Client, action: Action,
           after: dict[str, Any] | None, prior: dict[str, Any] | None = None
           ) -> dict[str, Any] | None:
    if after is not None:
        after = rt.prepare(after, ".")
    return rt.apply(client, ResourceChange(f"{rt.name}.x", rt.name, action, prior, after,
                                           prior=prior))


def _plan(rt: ResourceType[Any], client: Client, desired: dict[str, Any],
          prior: dict[str, Any] | None) -> Action:
    want = rt.prepare(desired, ".")
    found = rt.read(client, [ReadItem(want, prior)])[0]
    return rt.plan(want, found, prior)[0]


def _acl(pg: Pg, db: str, table: str) -> list[str]:
    rows = pg.rows("SELECT unnest(relacl)::text FROM pg_class WHERE relname = %s", [table], db)
    return sorted(str(r[0]) for r in rows)


@pytest.fixture
def db(pg: Pg, prefix: str) -> str:
    """A database of the test (dropped with the prefix), holding tables t1 and t2."""
    name = f"{prefix}db"
    pg.run(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    for table in ("t1", "t2"):
        pg.run(sql.SQL("CREATE TABLE public.{} (id int)").format(sql.Identifier(table)), name)
    return name


# -- 1 ---------------------------------------------------------------------------------------
def test_1_a_role_named_Public_is_that_role_not_PUBLIC(pg: Pg, db: str,
                                                       client: Client) -> None:
    assert grantee("public").as_string(None) == "PUBLIC"
    assert grantee("PUBLIC").as_string(None) == '"PUBLIC"'
    role = "Public"  # (the name itself is the point; the shared cluster is this process's)
    pg.run(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        attrs = GrantType().prepare({"role": role, "database": db, "schema": "public",
                                     "object_type": "table", "objects": ["t2"],
                                     "privileges": ["SELECT"]}, ".")
        assert GrantType().implicit_needs(attrs)[0] == [("role", role)]
        _apply(GrantType(), client, Action.CREATE, attrs)
        acl = _acl(pg, db, "t2")
        assert not any(a.startswith("=") for a in acl), acl  # nothing went to PUBLIC
        assert any(a.startswith("Public=r/") for a in acl), acl
        assert _plan(GrantType(), client, attrs, GrantType().stored(attrs)) is Action.NOOP
        _apply(GrantType(), client, Action.DELETE, None, GrantType().stored(attrs))
        assert not any("Public" in a for a in _acl(pg, db, "t2"))
    finally:
        pg.run(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))
        pg.run(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# -- 2 ---------------------------------------------------------------------------------------
def test_2_an_imported_database_is_not_replaced_for_its_template(pg: Pg, prefix: str,
                                                                 client: Client) -> None:
    rt = DatabaseType()
    name = f"{prefix}tpl"
    pg.run(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    imported = rt.read(client, [rt.import_item(name)])[0]
    assert imported is not None
    record = rt.stored(imported)
    desired = {"name": name, "template": "template0", "owner": "postgres"}
    assert _plan(rt, client, desired, record) is Action.NOOP
    # a template changed after tectum made the database: the record only, with a warning
    made = {**record, "template": "template0"}
    want = rt.prepare({**desired, "template": "template1"}, ".")
    found = rt.read(client, [ReadItem(want, made)])[0]
    assert found is not None
    action, changes = rt.plan(want, found, made)
    assert action is Action.UPDATE and [c.name for c in changes] == ["template"]
    assert not any(c.force_new for c in changes)
    change = ResourceChange("postgresql_database.x", rt.name, action, found, want,
                            changes=changes, prior=made)
    assert any("template only matters" in w for w in rt.warnings(change))
    rt.apply(client, change)
    assert pg.databases(name) == [name]  # (not dropped)


# -- 3 ---------------------------------------------------------------------------------------
OVERLAP = '''
from tectum.postgresql import Grant
Grant("all", role="{role}", database="{db}", schema="public", object_type="table",
      privileges=["SELECT"])
Grant("one", role="{role}", database="{db}", schema="public", object_type="table",
      objects=["t1"], privileges=["SELECT", "INSERT"])
'''


def test_3_overlapping_grants_are_refused_at_plan_time(project: Callable[..., Path], pg: Pg,
                                                       prefix: str, db: str) -> None:
    role = f"{prefix}r"
    pg.run(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    root = project(OVERLAP.format(role=role, db=db))
    result = run_tectum("plan", cwd=root)
    assert result.returncode == 1, result.output
    assert "postgresql_grant.one" in result.output and "postgresql_grant.all" in result.output
    assert "Object managed twice" in result.output and "Traceback" not in result.output
    # the same objects twice too
    (root / "stack.py").write_text(OVERLAP.format(role=role, db=db).replace(
        'privileges=["SELECT"])', 'objects=["t1"], privileges=["SELECT"])', 1))
    result = run_tectum("plan", cwd=root)
    assert result.returncode == 1 and "Object managed twice" in result.output, result.output


def test_3_deleting_a_grant_revokes_only_what_it_recorded(pg: Pg, prefix: str, db: str,
                                                          client: Client) -> None:
    role = f"{prefix}r"
    pg.run(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    rt = GrantType()
    attrs = rt.prepare({"role": role, "database": db, "schema": "public",
                        "object_type": "table", "privileges": ["SELECT"]}, ".")
    record = _apply(rt, client, Action.CREATE, attrs)
    # granted since by someone else: not tectum's to take away
    pg.run(sql.SQL("GRANT UPDATE ON public.t1 TO {}").format(sql.Identifier(role)), db)
    _apply(rt, client, Action.DELETE, None, record)
    assert [a for a in _acl(pg, db, "t1") if a.startswith(role)] == [f"{role}=w/postgres"]
    assert not [a for a in _acl(pg, db, "t2") if a.startswith(role)]
    # default privileges: the same
    drt = DefaultPrivilegesType()
    dattrs = drt.prepare({"role": role, "database": db, "owner": "postgres",
                          "schema": "public", "object_type": "table",
                          "privileges": ["SELECT"]}, ".")
    drecord = _apply(drt, client, Action.CREATE, dattrs)
    pg.run(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT UPDATE "
                   "ON TABLES TO {}").format(sql.Identifier(role)), db)
    _apply(drt, client, Action.DELETE, None, drecord)
    rows = pg.rows("SELECT a.privilege_type FROM pg_default_acl d, aclexplode(d.defaclacl) a "
                   "WHERE a.grantee = %s::regrole", [role], db)
    assert [r[0] for r in rows] == ["UPDATE"]
    pg.run(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public REVOKE ALL "
                   "ON TABLES FROM {}").format(sql.Identifier(role)), db)


# -- 4 ---------------------------------------------------------------------------------------
def test_4_all_functions_settles_beside_a_procedure(pg: Pg, prefix: str, db: str,
                                                    client: Client) -> None:
    role = f"{prefix}r"
    pg.run(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    pg.run(sql.SQL("CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'"), db)
    pg.run(sql.SQL("CREATE PROCEDURE public.p() LANGUAGE sql AS 'SELECT 1'"), db)
    rt = GrantType()
    attrs = rt.prepare({"role": role, "database": db, "schema": "public",
                        "object_type": "function", "privileges": ["EXECUTE"]}, ".")
    record = _apply(rt, client, Action.CREATE, attrs)
    assert _plan(rt, client, attrs, record) is Action.NOOP


# -- 5 ---------------------------------------------------------------------------------------
def test_5_empty_privileges_are_refused() -> None:
    for rt, attrs in ((GrantType(), {"role": "r", "database": "d", "object_type": "database",
                                     "privileges": []}),
                      (DefaultPrivilegesType(), {"role": "r", "database": "d", "owner": "o",
                                                 "object_type": "table", "privileges": []})):
        problems = rt.check(attrs)
        assert any("privileges is empty" in p for p in problems), problems
        assert not any("privileges is empty" in p
                       for p in rt.check({**attrs, "privileges": ["ALL"]}))


# -- 6 ---------------------------------------------------------------------------------------
def test_6_public_default_privileges_on_functions_settle_and_go_back_to_the_default(
        pg: Pg, prefix: str, db: str, client: Client) -> None:
    owner = f"{prefix}o"
    pg.run(sql.SQL("CREATE ROLE {}").format(sql.Identifier(owner)))
    rt = DefaultPrivilegesType()
    for kind, privilege in (("function", "EXECUTE"), ("type", "USAGE")):
        attrs = rt.prepare({"role": "public", "database": db, "owner": owner,
                            "object_type": kind, "privileges": [privilege]}, ".")
        # the built-in default is read as what it is (found, not to create)
        assert _plan(rt, client, attrs, None) is Action.NOOP
        record = _apply(rt, client, Action.CREATE, attrs)
        assert _plan(rt, client, attrs, record) is Action.NOOP
        _apply(rt, client, Action.DELETE, None, record)
        rows = pg.rows("SELECT count(*) FROM pg_default_acl WHERE defaclrole = %s::regrole",
                       [owner], db)
        assert rows == [(0,)]  # (the built-in default, not a REVOKE from PUBLIC)
    # revoked from PUBLIC by hand: drift, and deleting the resource restores the default
    attrs = rt.prepare({"role": "public", "database": db, "owner": owner,
                        "object_type": "function", "privileges": ["EXECUTE"]}, ".")
    pg.run(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} REVOKE EXECUTE ON FUNCTIONS "
                   "FROM PUBLIC").format(sql.Identifier(owner)), db)
    assert _plan(rt, client, attrs, rt.stored(attrs)) is Action.CREATE
    pg.run(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT EXECUTE ON FUNCTIONS "
                   "TO PUBLIC").format(sql.Identifier(owner)), db)


# -- 7, 8 ------------------------------------------------------------------------------------
def test_7_an_md5_verifier_is_checked_too(pg: Pg, prefix: str, client: Client) -> None:
    name = f"{prefix}md5"
    verifier = "md5" + hashlib.md5(b"right-one" + name.encode()).hexdigest()
    pg.run(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name),
                                                               sql.Literal(verifier)))
    assert pg.rows("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [name]) == [
        (verifier,)]
    rt = RoleType()
    for password, seen in (("right-one", "right-one"), ("wrong-one", CHANGED)):
        want = rt.prepare({"name": name, "login": True, "password": password}, ".")
        found = rt.read(client, [ReadItem(want, None)])[0]
        assert found is not None and found["password"] == seen
    assert not verifies(verifier, "right-one")  # (an MD5 verifier needs the role's name)


def test_8_saslprep_maps_a_zero_width_space_as_postgresql_does(pg: Pg, prefix: str,
                                                               client: Client) -> None:
    password = "a\u200bb\u00a0c"
    assert saslprep(password) == b"a b c"
    name = f"{prefix}sasl"
    verifier = client.encrypt_password(password, name)  # (libpq's own SASLprep)
    pg.run(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name),
                                                               sql.Literal(verifier)))
    rt = RoleType()
    want = rt.prepare({"name": name, "login": True, "password": password}, ".")
    found = rt.read(client, [ReadItem(want, None)])[0]
    assert found is not None and found["password"] == password


# -- 9 ---------------------------------------------------------------------------------------
def test_9_roles_read_whatever_the_datestyle(pg: Pg, prefix: str) -> None:
    maint = f"{prefix}dmy"
    pg.run(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(maint)))
    pg.run(sql.SQL("ALTER DATABASE {} SET DateStyle = 'SQL, DMY'").format(
        sql.Identifier(maint)))
    with pg.connect(maint) as conn:  # (the setting is in force for a new session there)
        assert "SQL" in str(conn.execute("SHOW DateStyle").fetchone())
    dated, never = f"{prefix}dated", f"{prefix}never"
    pg.run(sql.SQL("CREATE ROLE {} VALID UNTIL '2031-02-03 04:05:06+00'").format(
        sql.Identifier(dated)))
    pg.run(sql.SQL("CREATE ROLE {} VALID UNTIL '-infinity'").format(sql.Identifier(never)))
    client = Client({**settings(pg.port), "database": maint})
    try:
        rt = RoleType()
        found = rt.read(client, [rt.import_item(dated), rt.import_item(never)])
        assert found[0] is not None and found[0]["valid_until"] == "2031-02-03 04:05:06+00:00"
        assert found[1] is not None and found[1]["valid_until"] == "-infinity"
        want = rt.prepare({"name": never, "valid_until": "-infinity"}, ".")
        assert rt.plan(want, found[1], None)[0] is Action.NOOP
    finally:
        client.close()


# -- 10 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("rt", [GrantType(), DefaultPrivilegesType()], ids=lambda r: r.name)
def test_10_a_bad_import_id_is_a_diagnostic(rt: ResourceType[Any]) -> None:
    for bad in ("{bad", '["x"]', "{\"role\": 1}", "r:db:tables:public:x:y" if
                rt.name == "postgresql_grant" else "r:db:o:tables", "r", "{}"):
        with pytest.raises(DiagnosticError) as info:
            rt.import_item(bad)
        diag = next(iter(info.value.diagnostics))
        assert diag.summary == "Invalid import ID" and repr(bad) in diag.detail, diag.detail


def test_10_a_bad_import_id_through_the_cli(project: Callable[..., Path]) -> None:
    root = project('from tectum.postgresql import Grant\n'
                   'Grant("g", role="r", database="d", object_type="database", '
                   'privileges=["CONNECT"])\n')
    result = run_tectum("import", "postgresql_grant.g", "r:d:tables", cwd=root)
    assert result.returncode == 1, result.output
    assert "Invalid import ID" in result.output and "object type 'tables'" in result.output
    assert "Internal error" not in result.output and "Traceback" not in result.output


# -- 12, 13 ----------------------------------------------------------------------------------
def test_12_a_connection_cut_while_idle_is_made_again(pg: Pg, prefix: str, db: str,
                                                      client: Client,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    client.query(db, sql.SQL("SELECT 1"))
    pid = client.query(db, sql.SQL("SELECT pg_backend_pid() AS pid"))[0]["pid"]
    pg.rows("SELECT pg_terminate_backend(%s)", [pid])
    monkeypatch.setattr(client_module, "IDLE_CHECK", 0.0)
    client.execute(db, sql.SQL("CREATE TABLE public.after_cut (id int)"))  # (no error)
    assert client.down is None
    assert pg.rows("SELECT count(*) FROM pg_class WHERE relname = 'after_cut'", db=db) == [
        (1,)]


def test_12_a_failed_read_marks_the_server_down_once(monkeypatch: pytest.MonkeyPatch,
                                                     closed_port: int) -> None:
    client = Client({"host": "127.0.0.1", "port": closed_port, "connect_timeout": 5})
    tries: list[str] = []
    real = psycopg.connect

    def counting(*args: Any, **kwargs: Any) -> Any:
        tries.append(str(kwargs.get("dbname")))
        return real(*args, **kwargs)

    monkeypatch.setattr(psycopg, "connect", counting)
    for db in ("postgres", "other", "third"):
        with pytest.raises(PgError, match="cannot connect to PostgreSQL at 127.0.0.1:"):
            client.query(db, sql.SQL("SELECT 1"))
    assert client.down is not None and client.down[0] == "unreachable"
    assert tries == ["postgres"]  # (the others failed at once, with the same reason)


def test_12_a_missing_database_is_no_server_fault(pg: Pg, prefix: str,
                                                  client: Client) -> None:
    for call in (lambda: client.query(f"{prefix}none", sql.SQL("SELECT 1")),
                 lambda: client.execute(f"{prefix}none", sql.SQL("SELECT 1"))):
        with pytest.raises(MissingDatabase):
            call()
        assert client.down is None
    client.query("postgres", sql.SQL("SELECT 1"))  # (still up)


def test_13_a_failed_change_says_what_blocks_it(pg: Pg, db: str, client: Client) -> None:
    pg.run(sql.SQL("CREATE SCHEMA busy"), db)
    pg.run(sql.SQL("CREATE TABLE busy.blocker (id int)"), db)
    with pytest.raises(PgError) as info:
        client.execute(db, sql.SQL("DROP SCHEMA busy"))
    assert "busy.blocker" in str(info.value) and "detail:" in str(info.value), info.value


# -- 14 --------------------------------------------------------------------------------------
def test_14_a_schema_in_a_database_named_with_a_dot_imports_by_json(
        pg: Pg, prefix: str, client: Client) -> None:
    dotted = f"{prefix}a.b"
    pg.run(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dotted)))
    pg.run(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier("s.1")), dotted)
    rt = SchemaType()
    item = rt.import_item(json.dumps({"database": dotted, "name": "s.1"}))
    found = rt.read(client, [item])[0]
    assert found is not None and found["name"] == "s.1" and found["database"] == dotted
    for bad in ('{"name": 1}', "{nope", ".x"):
        with pytest.raises(DiagnosticError):
            rt.import_item(bad)


# -- not covered before: a password set by a role that is no superuser -------------------------
def test_a_createrole_role_sets_a_password(pg: Pg, prefix: str) -> None:
    admin, app = f"{prefix}admin", f"{prefix}app"
    pg.run(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(admin)))
    client = Client({**settings(pg.port), "username": admin})
    try:
        rt = RoleType()
        made = _apply(rt, client, Action.CREATE, {"name": app, "login": True,
                                                  "password": "first-pw"})
        assert made is not None
        _apply(rt, client, Action.UPDATE, {"name": app, "login": True,
                                           "password": "second-pw"}, made)
        stored = pg.rows("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [app])
        assert verifies(stored[0][0], "second-pw") and not verifies(stored[0][0], "first-pw")
    finally:
        client.close()


def test_3_grants_sharing_some_listed_objects_are_refused(project: Callable[..., Path],
                                                          pg: Pg, prefix: str,
                                                          db: str) -> None:
    role = f"{prefix}r"
    pg.run(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    pg.run(sql.SQL("CREATE TABLE public.t3 (id int)"), db)
    root = project(f'''
from tectum.postgresql import Grant
Grant("a", role="{role}", database="{db}", schema="public", object_type="table",
      objects=["t1", "t2"], privileges=["SELECT"])
Grant("b", role="{role}", database="{db}", schema="public", object_type="table",
      objects=["t2", "t3"], privileges=["INSERT"])
''')
    result = run_tectum("plan", cwd=root)
    assert result.returncode == 1, result.output
    assert "share 't2'" in result.output and "postgresql_grant.a" in result.output
    assert "Traceback" not in result.output
    assert [a for a in _acl(pg, db, "t2") if a.startswith(role)] == []  # (nothing applied)
