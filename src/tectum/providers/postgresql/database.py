"""``postgresql_database``, ``postgresql_schema`` and ``postgresql_extension`` (Terraform's
``cyrilgdn/postgresql`` names and attributes).

``postgresql_database``: ``name`` (identity: a new name makes a new database), ``owner``
(``ALTER DATABASE ... OWNER TO``),
``connection_limit`` (-1: no limit), ``allow_connections``, and what PostgreSQL cannot change
once a database exists — ``encoding``, ``lc_collate``, ``lc_ctype`` — which force a new
database (the plan says "replace", and the warning that its data goes). Left unset,
``encoding``/``lc_collate``/``lc_ctype``/``owner`` are the server's choice and not managed.
``template`` is used only by ``CREATE DATABASE``: PostgreSQL does not record it, so it is
never compared (never drift, never a replace — an imported database is not dropped for it)
and changing it for an existing database does nothing (the plan view warns). Reads: one
``pg_database`` query for every database. A database dropped by hand is absent: the plan
makes it again. Deleting one closes tectum's own connection to it first; another session
connected to it makes the drop fail with PostgreSQL's message (tectum does not end other
people's sessions).

``postgresql_schema``: ``name``, ``database`` (default: the provider's ``database``),
``owner``, ``drop_cascade`` (default false: a schema that still holds objects is not dropped
— the apply fails with PostgreSQL's message naming them). Reads: one ``pg_namespace`` query
per database. Import ID: ``DATABASE.SCHEMA`` (Terraform's; split at the first dot), ``SCHEMA``
in the provider's database, or ``{"database": ..., "name": ...}`` (JSON: a database name
holding a dot).

``postgresql_extension``: ``name``, ``schema``, ``version`` (``ALTER EXTENSION ... UPDATE
TO``), ``database``, ``drop_cascade``. Reads: one ``pg_extension`` query per database. Import
ID: ``DATABASE.NAME``, ``NAME`` or the JSON form (as for schemas).

Implicit dependencies: a database needs its owner role (``("role", OWNER)``) and offers
``("database", NAME)``; a schema needs its database and owner and offers ``("schema", DB,
NAME)``; an extension needs its database and schema.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey, ReadError, ReadItem, ResourceType
from tectum.providers.postgresql.common import (
    MissingDatabase,
    PgError,
    check_known,
    sql,
    valid_name,
)
from tectum.schema import Attr, Schema

if TYPE_CHECKING:
    from tectum.providers.postgresql.client import Client


def _limit(value: Any) -> str | None:
    return None if isinstance(value, int) and value >= -1 else "must be -1 (no limit) or more"


def _where(item: ReadItem) -> dict[str, Any]:
    """What finds an item's object: the record in state when there is one (a name changed in
    the configuration renames the object it records), else the configuration."""
    if item.prior is not None and isinstance(item.prior.get("name"), str):
        return item.prior
    return item.attrs


def _db_of(target: Client, attrs: dict[str, Any]) -> str:
    """The database an object lives in: its ``database``, else the provider's."""
    db = attrs.get("database")
    return str(db) if isinstance(db, str) and db else target.database


def existing_databases(target: Client, names: Sequence[str]) -> set[str]:
    """Which of ``names`` exist (one query on the maintenance database)."""
    rows = target.query(target.database, sql.SQL(
        "SELECT datname FROM pg_database WHERE datname = ANY(%s)"), [list(names)])
    return {str(r["datname"]) for r in rows}


class DatabaseType(ResourceType["Client"]):
    """A database (see the module docstring)."""

    name = "postgresql_database"
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True, validate=valid_name,
                     description="the database's name"),
        "owner": Attr(str, validate=valid_name, description="the owning role"),
        "encoding": Attr(str, force_new=True, description="character set, e.g. UTF8"),
        "lc_collate": Attr(str, force_new=True, description="collation order (LC_COLLATE)"),
        "lc_ctype": Attr(str, force_new=True, description="character classes (LC_CTYPE)"),
        "template": Attr(str, validate=valid_name,
                         description="the template database copied by CREATE DATABASE "
                                     "(default template1; never compared afterwards)"),
        "connection_limit": Attr(int, default=-1, validate=_limit,
                                 description="concurrent connections at most (-1: no limit)"),
        "allow_connections": Attr(bool, default=True,
                                  description="whether anyone may connect to it"),
    })
    unobserved = frozenset({"template"})

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        check_known(out, ("name", "owner", "template"))
        if isinstance(out.get("encoding"), str):
            out["encoding"] = str(out["encoding"]).upper().replace("-", "")
        return out

    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        name = attrs.get("name")
        return [("database", name)] if isinstance(name, str) else []

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        owner = attrs.get("owner")
        return [[("role", owner)]] if isinstance(owner, str) else []

    def read(self, target: Client, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        """Every database with one ``pg_database`` query. Raises :class:`ReadError`."""
        names = sorted({str(_where(i)["name"]) for i in items
                        if isinstance(_where(i).get("name"), str)})
        try:
            rows = target.query(target.database, sql.SQL(
                "SELECT datname, pg_get_userbyid(datdba) AS owner, "
                "pg_encoding_to_char(encoding) AS encoding, datcollate, datctype, "
                "datconnlimit, datallowconn FROM pg_database WHERE datname = ANY(%s)"),
                [names]) if names else []
        except PgError as exc:
            raise ReadError(str(exc)) from None
        found = {str(r["datname"]): r for r in rows}
        out: list[dict[str, Any] | None] = []
        for item in items:
            row = found.get(str(_where(item).get("name")))
            if row is None:
                out.append(None)
                continue
            observed = {"name": row["datname"], "owner": row["owner"],
                        "encoding": row["encoding"], "lc_collate": row["datcollate"],
                        "lc_ctype": row["datctype"],
                        "connection_limit": int(row["datconnlimit"]),
                        "allow_connections": bool(row["datallowconn"])}
            template = (item.prior or {}).get("template")
            if template is not None:
                observed["template"] = template
            out.append(observed)
        return out

    def diff(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[AttrChange]:
        """The base diff, ``template`` never forcing a new database: PostgreSQL keeps no
        record of it, so a database whose template is not known (imported, or made before
        the configuration set one) is never changed for it; a template changed since tectum
        made the database is an update of the record only (the plan view warns that the
        database stays as it is)."""
        return [c for c in super().diff(desired, observed)
                if c.name != "template" or c.before is not None]

    def warnings(self, change: ResourceChange) -> list[str]:
        out: list[str] = []
        if change.action in (Action.REPLACE, Action.DELETE):
            out.append("the database is dropped with all its data; undoing this makes it "
                       "anew, empty")
        before, after = change.prior or change.before, change.after
        if (change.action is Action.UPDATE and before is not None and after is not None
                and after.get("template") is not None and before.get("template") is not None
                and after.get("template") != before.get("template")):
            out.append("template only matters when a database is made: the existing "
                       "database is not changed (replace it by hand to remake it from "
                       f"{after.get('template')!r})")
        return out

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        return "drops the database and all its data; fails while others are connected to it"

    def apply(self, target: Client, change: ResourceChange) -> dict[str, Any] | None:
        """CREATE DATABASE / ALTER DATABASE / DROP DATABASE. Raises :class:`ApplyError`."""
        after = dict(change.after or {})
        try:
            if change.action in (Action.DELETE, Action.REPLACE):
                old = change.prior or change.before or {}
                if isinstance(old.get("name"), str):
                    target.forget(str(old["name"]))
                    target.execute(target.database, sql.SQL("DROP DATABASE IF EXISTS {}")
                                   .format(sql.Identifier(str(old["name"]))))
                if change.action is Action.DELETE:
                    return None
            name = sql.Identifier(str(after["name"]))
            if change.action is Action.UPDATE and change.before is not None:
                before = change.before
                if after.get("owner") and after["owner"] != before.get("owner"):
                    target.execute(target.database, sql.SQL("ALTER DATABASE {} OWNER TO {}")
                                   .format(name, sql.Identifier(str(after["owner"]))))
                if after.get("connection_limit") != before.get("connection_limit") or \
                        after.get("allow_connections") != before.get("allow_connections"):
                    target.execute(target.database, sql.SQL(
                        "ALTER DATABASE {} WITH CONNECTION LIMIT {} ALLOW_CONNECTIONS {}")
                        .format(name, sql.Literal(int(after.get("connection_limit", -1))),
                                sql.Literal(bool(after.get("allow_connections", True)))))
            else:
                parts: list[sql.Composable] = []
                if after.get("owner"):
                    parts.append(sql.SQL("OWNER {}").format(sql.Identifier(str(after["owner"]))))
                if after.get("template"):
                    parts.append(sql.SQL("TEMPLATE {}").format(
                        sql.Identifier(str(after["template"]))))
                for key, word in (("encoding", "ENCODING"), ("lc_collate", "LC_COLLATE"),
                                  ("lc_ctype", "LC_CTYPE")):
                    if after.get(key):
                        parts.append(sql.SQL(word + " {}").format(sql.Literal(str(after[key]))))
                parts.append(sql.SQL("CONNECTION LIMIT {} ALLOW_CONNECTIONS {}").format(
                    sql.Literal(int(after.get("connection_limit", -1))),
                    sql.Literal(bool(after.get("allow_connections", True)))))
                target.execute(target.database, sql.SQL("CREATE DATABASE {} WITH {}").format(
                    name, sql.SQL(" ").join(parts)))
            rows = target.query(target.database, sql.SQL(
                "SELECT pg_get_userbyid(datdba) AS owner, pg_encoding_to_char(encoding) AS "
                "encoding, datcollate, datctype FROM pg_database WHERE datname = %s"),
                [str(after["name"])])
        except PgError as exc:
            raise ApplyError(f"database {after.get('name') or _old_name(change)!r}: {exc}"
                             ) from None
        made = dict(after)
        if rows:  # (what the server chose where the configuration left it open)
            for key, col in (("owner", "owner"), ("encoding", "encoding"),
                             ("lc_collate", "datcollate"), ("lc_ctype", "datctype")):
                if made.get(key) is None:
                    made[key] = rows[0][col]
        return self.stored(made)


def _old_name(change: ResourceChange) -> Any:
    return (change.prior or change.before or {}).get("name")


def _split_import(import_id: str) -> tuple[str | None, str]:
    """``DATABASE.NAME`` → (DATABASE, NAME) (split at the first dot); ``NAME`` → (None,
    NAME); a JSON object ``{"database": ..., "name": ...}`` for a database name holding a
    dot. Raises :class:`DiagnosticError` for a JSON ID of another shape."""
    if import_id.lstrip().startswith("{"):
        try:
            data = json.loads(import_id)
        except ValueError as exc:
            raise _bad_id(import_id, f"not valid JSON ({exc})") from None
        if (not isinstance(data, dict) or set(data) - {"database", "name"}
                or not isinstance(data.get("name"), str) or not data["name"]
                or not isinstance(data.get("database"), str | None)):
            raise _bad_id(import_id, 'expected {"database": "DATABASE", "name": "NAME"} '
                                     "(database optional)")
        return data.get("database") or None, str(data["name"])
    db, dot, name = import_id.partition(".")
    if dot and not (db and name):
        raise _bad_id(import_id, "expected DATABASE.NAME, NAME, or a JSON object "
                                 '{"database": ..., "name": ...}')
    return (db, name) if dot else (None, import_id)


def _bad_id(import_id: str, why: str) -> DiagnosticError:
    return DiagnosticError(Diagnostic.error("Invalid import ID", f"{import_id!r}: {why}."))


class SchemaType(ResourceType["Client"]):
    """A schema in a database (see the module docstring)."""

    name = "postgresql_schema"
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True, validate=valid_name,
                     description="the schema's name"),
        "database": Attr(str, identity=True, force_new=True, validate=valid_name,
                         description="the database (default: the provider's database)"),
        "owner": Attr(str, validate=valid_name, description="the owning role"),
        "drop_cascade": Attr(bool, default=False,
                             description="drop the objects in it too when it is deleted"),
    })
    unobserved = frozenset({"drop_cascade"})

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        check_known(out, ("name", "database", "owner"))
        return out

    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        name = attrs.get("name")
        return [("schema", attrs.get("database"), name)] if isinstance(name, str) else []

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        needs: list[list[ImplicitKey]] = []
        if isinstance(attrs.get("database"), str):
            needs.append([("database", attrs["database"])])
        if isinstance(attrs.get("owner"), str):
            needs.append([("role", attrs["owner"])])
        return needs

    def import_item(self, import_id: str) -> ReadItem:
        db, name = _split_import(import_id)
        return ReadItem(None, {"name": name, "database": db})

    def read(self, target: Client, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        """One ``pg_namespace`` query per database. Raises :class:`ReadError`."""
        by_db: dict[str, set[str]] = {}
        for item in items:
            at = _where(item)
            if isinstance(at.get("name"), str):
                by_db.setdefault(_db_of(target, at), set()).add(str(at["name"]))
        found: dict[tuple[str, str], dict[str, Any]] = {}
        try:
            dbs = existing_databases(target, sorted(by_db)) if by_db else set()
            for db in sorted(dbs):
                try:
                    rows = target.query(db, sql.SQL(
                        "SELECT nspname, pg_get_userbyid(nspowner) AS owner FROM pg_namespace "
                        "WHERE nspname = ANY(%s)"), [sorted(by_db[db])])
                except MissingDatabase:
                    continue  # (dropped meanwhile)
                found.update({(db, str(r["nspname"])): r for r in rows})
        except PgError as exc:
            raise ReadError(str(exc)) from None
        out: list[dict[str, Any] | None] = []
        for item in items:
            at = _where(item)
            row = found.get((_db_of(target, at), str(at.get("name"))))
            if row is None:
                out.append(None)
                continue
            out.append({"name": row["nspname"], "database": at.get("database"),
                        "owner": row["owner"],
                        "drop_cascade": (item.desired or item.prior or {}).get(
                            "drop_cascade", False)})
        return out

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        if prior.get("drop_cascade"):
            return "drops the schema with every object in it (drop_cascade)"
        return "fails while the schema holds objects (drop_cascade is false)"

    def apply(self, target: Client, change: ResourceChange) -> dict[str, Any] | None:
        """CREATE SCHEMA / ALTER SCHEMA OWNER / DROP SCHEMA [CASCADE]. Raises
        :class:`ApplyError`."""
        after = dict(change.after or {})
        try:
            if change.action in (Action.DELETE, Action.REPLACE):
                old = change.prior or change.before or {}
                if isinstance(old.get("name"), str):
                    word = "CASCADE" if old.get("drop_cascade") else "RESTRICT"
                    try:
                        target.execute(_db_of(target, old), sql.SQL(
                            "DROP SCHEMA IF EXISTS {} " + word).format(
                                sql.Identifier(str(old["name"]))))
                    except MissingDatabase:
                        pass  # (its database is gone: so is the schema)
                if change.action is Action.DELETE:
                    return None
            db, name = _db_of(target, after), sql.Identifier(str(after["name"]))
            before = change.before
            if change.action is Action.UPDATE and before is not None:
                if after.get("owner") and after["owner"] != before.get("owner"):
                    target.execute(db, sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(
                        name, sql.Identifier(str(after["owner"]))))
            else:
                owner = (sql.SQL(" AUTHORIZATION {}").format(sql.Identifier(str(after["owner"])))
                         if after.get("owner") else sql.SQL(""))
                target.execute(db, sql.SQL("CREATE SCHEMA {}{}").format(name, owner))
        except PgError as exc:
            raise ApplyError(f"schema {after.get('name') or _old_name(change)!r}: {exc}"
                             ) from None
        return self.stored(after)


class ExtensionType(ResourceType["Client"]):
    """An extension in a database (see the module docstring)."""

    name = "postgresql_extension"
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True, validate=valid_name,
                     description="the extension, e.g. pg_trgm"),
        "database": Attr(str, identity=True, force_new=True, validate=valid_name,
                         description="the database (default: the provider's database)"),
        "schema": Attr(str, validate=valid_name,
                       description="the schema its objects go in (default: the first of "
                                   "the search path)"),
        "version": Attr(str, description="the version (default: the newest installed)"),
        "drop_cascade": Attr(bool, default=False,
                             description="drop objects that depend on it when it is deleted"),
    })
    unobserved = frozenset({"drop_cascade"})

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        check_known(out, ("name", "database", "schema"))
        return out

    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        name = attrs.get("name")
        return [("extension", attrs.get("database"), name)] if isinstance(name, str) else []

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        needs: list[list[ImplicitKey]] = []
        if isinstance(attrs.get("database"), str):
            needs.append([("database", attrs["database"])])
        if isinstance(attrs.get("schema"), str):
            needs.append([("schema", attrs.get("database"), attrs["schema"])])
        return needs

    def import_item(self, import_id: str) -> ReadItem:
        db, name = _split_import(import_id)
        return ReadItem(None, {"name": name, "database": db})

    def read(self, target: Client, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        """One ``pg_extension`` query per database. Raises :class:`ReadError`."""
        by_db: dict[str, set[str]] = {}
        for item in items:
            if isinstance(item.attrs.get("name"), str):
                by_db.setdefault(_db_of(target, item.attrs), set()).add(str(item.attrs["name"]))
        found: dict[tuple[str, str], dict[str, Any]] = {}
        try:
            dbs = existing_databases(target, sorted(by_db)) if by_db else set()
            for db in sorted(dbs):
                try:
                    rows = target.query(db, sql.SQL(
                        "SELECT e.extname, e.extversion, n.nspname FROM pg_extension e "
                        "JOIN pg_namespace n ON n.oid = e.extnamespace "
                        "WHERE e.extname = ANY(%s)"), [sorted(by_db[db])])
                except MissingDatabase:
                    continue
                found.update({(db, str(r["extname"])): r for r in rows})
        except PgError as exc:
            raise ReadError(str(exc)) from None
        out: list[dict[str, Any] | None] = []
        for item in items:
            row = found.get((_db_of(target, item.attrs), str(item.attrs.get("name"))))
            if row is None:
                out.append(None)
                continue
            out.append({"name": row["extname"], "database": item.attrs.get("database"),
                        "schema": row["nspname"], "version": row["extversion"],
                        "drop_cascade": (item.desired or item.prior or {}).get(
                            "drop_cascade", False)})
        return out

    def apply(self, target: Client, change: ResourceChange) -> dict[str, Any] | None:
        """CREATE EXTENSION / ALTER EXTENSION (UPDATE TO, SET SCHEMA) / DROP EXTENSION.
        Raises :class:`ApplyError`."""
        after = dict(change.after or {})
        try:
            if change.action in (Action.DELETE, Action.REPLACE):
                old = change.prior or change.before or {}
                if isinstance(old.get("name"), str):
                    word = "CASCADE" if old.get("drop_cascade") else "RESTRICT"
                    try:
                        target.execute(_db_of(target, old), sql.SQL(
                            "DROP EXTENSION IF EXISTS {} " + word).format(
                                sql.Identifier(str(old["name"]))))
                    except MissingDatabase:
                        pass
                if change.action is Action.DELETE:
                    return None
            db, name = _db_of(target, after), sql.Identifier(str(after["name"]))
            if change.action is Action.UPDATE and change.before is not None:
                before = change.before
                if after.get("version") and after["version"] != before.get("version"):
                    target.execute(db, sql.SQL("ALTER EXTENSION {} UPDATE TO {}").format(
                        name, sql.Literal(str(after["version"]))))
                if after.get("schema") and after["schema"] != before.get("schema"):
                    target.execute(db, sql.SQL("ALTER EXTENSION {} SET SCHEMA {}").format(
                        name, sql.Identifier(str(after["schema"]))))
            else:
                parts: list[sql.Composable] = []
                if after.get("schema"):
                    parts.append(sql.SQL(" SCHEMA {}").format(
                        sql.Identifier(str(after["schema"]))))
                if after.get("version"):
                    parts.append(sql.SQL(" VERSION {}").format(
                        sql.Literal(str(after["version"]))))
                target.execute(db, sql.SQL("CREATE EXTENSION {} WITH{}").format(
                    name, sql.SQL("").join(parts)))
            rows = target.query(db, sql.SQL(
                "SELECT e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON "
                "n.oid = e.extnamespace WHERE e.extname = %s"), [str(after["name"])])
        except PgError as exc:
            raise ApplyError(f"extension {after.get('name') or _old_name(change)!r}: {exc}"
                             ) from None
        made = dict(after)
        if rows:  # (what the server chose when the configuration left it open)
            made.setdefault("version", rows[0]["extversion"])
            made.setdefault("schema", rows[0]["nspname"])
            if made.get("version") is None:
                made["version"] = rows[0]["extversion"]
            if made.get("schema") is None:
                made["schema"] = rows[0]["nspname"]
        return self.stored(made)
