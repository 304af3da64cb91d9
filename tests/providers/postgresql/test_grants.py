"""The grant types beyond the conformance case (a table grant): grants on sequences (named
objects), on every function of a schema, on a schema to PUBLIC, and with the grant option —
each through the whole conformance lifecycle (:func:`tectum.testing.check_resource_type`),
names holding quotes and ``;``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from tectum.testing import Case, check_resource_type
from tests.providers.cases.postgresql import odd_name, record, settings
from tests.providers.postgresql.conftest import Pg


@pytest.mark.parametrize("kind", ["sequence", "function", "schema-public", "grant-option"])
def test_grant_lifecycle(kind: str, pg: Pg, prefix: str, tmp_path: Path) -> None:
    db = f"{prefix}db"
    role = odd_name(prefix)
    pg.run(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    pg.run(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    pg.run(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier('s;"1')), db)
    for seq in ("q1", "q'2"):
        pg.run(sql.SQL("CREATE SEQUENCE {}").format(sql.Identifier('s;"1', seq)), db)
    for fn in ("f1", "f2"):
        pg.run(sql.SQL("CREATE FUNCTION {}() RETURNS int LANGUAGE sql AS 'SELECT 1'").format(
            sql.Identifier('s;"1', fn)), db)
    pg.run(sql.SQL("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {} FROM PUBLIC").format(
        sql.Identifier('s;"1')), db)
    base = {"role": role, "database": db, "schema": 's;"1'}
    if kind == "sequence":
        create = {**base, "object_type": "sequence", "objects": ["q1", "q'2"],
                  "privileges": ["USAGE"]}
        update = {"privileges": ["USAGE", "SELECT"]}
        hand = sql.SQL("REVOKE USAGE ON SEQUENCE {} FROM {}").format(
            sql.Identifier('s;"1', "q'2"), sql.Identifier(role))
        import_id = json.dumps({"role": role, "database": db, "schema": 's;"1',
                                "object_type": "sequence", "objects": ["q1", "q'2"]})
    elif kind == "function":
        create = {**base, "object_type": "function", "privileges": ["EXECUTE"]}
        update = {"with_grant_option": True}
        hand = sql.SQL("REVOKE EXECUTE ON FUNCTION {}() FROM {}").format(
            sql.Identifier('s;"1', "f2"), sql.Identifier(role))
        import_id = None
    elif kind == "schema-public":
        create = {"role": "public", "database": db, "schema": 's;"1',
                  "object_type": "schema", "privileges": ["USAGE"]}
        update = {"privileges": ["USAGE", "CREATE"]}
        hand = sql.SQL("REVOKE USAGE ON SCHEMA {} FROM PUBLIC").format(sql.Identifier('s;"1'))
        import_id = f'public:{db}:schema:s;"1'
    else:
        create = {"role": role, "database": db, "object_type": "database",
                  "privileges": ["CONNECT"], "with_grant_option": True}
        update = {"privileges": ["ALL"]}
        hand = sql.SQL("REVOKE GRANT OPTION FOR CONNECT ON DATABASE {} FROM {}").format(
            sql.Identifier(db), sql.Identifier(role))
        import_id = f"{role}:{db}:database"

    def tamper(_client: Any, _record: dict[str, Any]) -> None:
        pg.run(hand, "postgres" if kind == "grant-option" else db)

    drift = "with_grant_option" if kind == "grant-option" else "privileges"
    case = Case("postgresql_grant", create, update=update, tamper=tamper, drift=drift,
                import_id=import_id, settings=settings(pg.port), root=str(tmp_path),
                record=record,
                skip={"import": "shown by the other kinds"} if import_id is None else {})
    report = check_resource_type(case)
    assert "drift" in report.done and "gone" in report.done
