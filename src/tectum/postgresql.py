"""PostgreSQL resources, as declared in a stack: ``from tectum.postgresql import Role,
Database, Schema, Grant, Extension, DefaultPrivileges`` (Terraform's ``cyrilgdn/postgresql``
types and attribute names; see ``docs/postgresql.md``).

=================  ================================================================================
Role               name, login, superuser, create_database, create_role, inherit, replication,
                   bypass_row_level_security, connection_limit, valid_until, roles, password
                   (sensitive: ``secret("NAME")`` or ``random_password.result``)
Database           name, owner, encoding, lc_collate, lc_ctype, template, connection_limit,
                   allow_connections
Schema             name, database, owner, drop_cascade
Grant              role, database, schema, object_type, objects, privileges, with_grant_option
Extension          name, database, schema, version, drop_cascade
DefaultPrivileges  role, database, owner, schema, object_type, privileges, with_grant_option
=================  ================================================================================

The server is set in ``tectum.toml`` (``[providers.postgresql]``: host, port, database,
username, sslmode); the password of the connection comes from the environment only.
"""

from __future__ import annotations

from tectum.config.declaration import Resource

__all__ = ["Database", "DefaultPrivileges", "Extension", "Grant", "Role", "Schema"]


class Role(Resource):
    """A role: ``Role("app", login=True, password=secret("app_db_password"))``."""

    type_name = "postgresql_role"
    label_attr = "name"
    __slots__ = ()


class Database(Resource):
    """A database: ``Database("app", owner=app.name)``."""

    type_name = "postgresql_database"
    label_attr = "name"
    __slots__ = ()


class Schema(Resource):
    """A schema: ``Schema("reporting", database=db.name, owner=app.name)``."""

    type_name = "postgresql_schema"
    label_attr = "name"
    __slots__ = ()


class Extension(Resource):
    """An extension: ``Extension("pg_trgm", database=db.name)``."""

    type_name = "postgresql_extension"
    label_attr = "name"
    __slots__ = ()


class Grant(Resource):
    """Privileges of a role: ``Grant("read", role=app.name, database=db.name,
    schema="public", object_type="table", privileges=["SELECT"])`` (every table)."""

    type_name = "postgresql_grant"
    __slots__ = ()


class DefaultPrivileges(Resource):
    """Privileges on objects ``owner`` makes later: ``DefaultPrivileges("read_new",
    role=app.name, database=db.name, owner="postgres", schema="public",
    object_type="table", privileges=["SELECT"])``."""

    type_name = "postgresql_default_privileges"
    __slots__ = ()
