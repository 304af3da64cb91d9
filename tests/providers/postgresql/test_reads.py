"""Reads are batched: the number of catalog queries a read makes does not grow with the
number of objects — one query per type (per database for the types that live in one), not
one per object (``pg_roles``/``pg_authid``, ``pg_database``, ``aclexplode`` over
``pg_class``/``pg_namespace``/``pg_database``, ``pg_default_acl``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from psycopg import sql

from tectum.providers.base import ReadItem
from tectum.providers.postgresql.client import Client
from tectum.providers.postgresql.grant import DefaultPrivilegesType, GrantType
from tectum.providers.postgresql.role import RoleType
from tectum.testing.recording import Recorder
from tests.providers.cases.postgresql import READS, settings
from tests.providers.postgresql.conftest import Pg


@pytest.fixture
def client(pg: Pg) -> Iterator[Client]:
    made = Client(settings(pg.port))
    yield made
    made.close()


def _queries(rt: object, client: Client, items: list[ReadItem]) -> int:
    rec = Recorder(client, read_only=READS)
    found = rt.read(rec, items)  # type: ignore[attr-defined]
    assert len(found) == len(items)
    assert rec.mutations == []
    return sum(1 for c in rec.calls if c.method == "query")


def test_one_query_per_type_whatever_the_number_of_objects(pg: Pg, prefix: str,
                                                           client: Client) -> None:
    dbs = [f"{prefix}db{i}" for i in range(2)]
    for db in dbs:
        pg.run(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
        for t in range(5):
            pg.run(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(f"t{t}")), db)
    roles = [f"{prefix}r{i}" for i in range(40)]
    for role in roles:
        pg.run(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))

    def role_items(n: int) -> list[ReadItem]:
        return [ReadItem({"name": r}, None) for r in roles[:n]]

    def grant_items(n: int) -> list[ReadItem]:
        return [ReadItem({"role": r, "database": dbs[i % 2], "schema": "public",
                          "object_type": kind, "objects": [], "privileges": ["SELECT"]
                          if kind == "table" else ["USAGE"] if kind == "schema"
                          else ["CONNECT"]}, None)
                for i, r in enumerate(roles[:n]) for kind in ("table", "schema", "database")]

    def default_items(n: int) -> list[ReadItem]:
        return [ReadItem({"role": r, "database": dbs[i % 2], "owner": "postgres",
                          "schema": "public", "object_type": "table",
                          "privileges": ["SELECT"]}, None) for i, r in enumerate(roles[:n])]

    rt_role, rt_grant, rt_default = RoleType(), GrantType(), DefaultPrivilegesType()
    assert _queries(rt_role, client, role_items(40)) == _queries(rt_role, client,
                                                                 role_items(1)) == 1
    few, many = (_queries(rt_grant, client, grant_items(2)),
                 _queries(rt_grant, client, grant_items(40)))
    # existing databases + database ACLs + (table, schema) x 2 databases
    assert few == many == 6
    assert _queries(rt_default, client, default_items(2)) == _queries(
        rt_default, client, default_items(40)) == 3
