"""``postgresql_grant`` and ``postgresql_default_privileges`` (Terraform's
``cyrilgdn/postgresql`` names and attributes).

``postgresql_grant``: ``role`` (the grantee; exactly ``public`` for PUBLIC), ``database``,
``schema``, ``object_type`` (``database``, ``schema``, ``table``, ``sequence``,
``function``), ``objects`` (names in ``schema``; empty: every object of that type in it —
``ALL TABLES IN SCHEMA``), ``privileges`` (a set, e.g. ``["SELECT", "INSERT"]``; ``["ALL"]``
stands for every privilege of the type) and ``with_grant_option``. The grant is
authoritative for the role on those objects, as Terraform's is: applying it revokes what the
role holds there (``REVOKE ALL``) and grants exactly ``privileges``, in one transaction;
deleting it revokes only the privileges its state record holds. Two grants of one role on
the same objects, or one on named objects and one on all objects of that type in the schema,
are refused at plan time (:meth:`GrantType.identity_key`, :meth:`GrantType.part_of`).
``privileges = []`` is refused.

A read (one ``aclexplode`` query per object type per database, over ``pg_database``,
``pg_namespace``, ``pg_class`` or ``pg_proc``) finds what the role holds on every *current*
object: when every object holds the same privileges, those are reported; when they differ
(a table made since, without the grant) something other than the desired set is reported,
so the plan re-grants. No perpetual diff for ``ALL TABLES`` grants: the comparison is over
the objects that exist now, as a set, in one canonical order. A schema with no object of the
type holds a recorded ALL-grant vacuously. A role revoked by hand is drift, and the next
apply repairs it. Import ID: ``ROLE:DATABASE:OBJECT_TYPE[:SCHEMA[:OBJ1,OBJ2]]`` or a JSON
object of those attributes.

``postgresql_default_privileges``: ``role`` (grantee), ``database``, ``owner`` (whose future
objects), ``schema`` (empty: every schema), ``object_type`` (``table``, ``sequence``,
``function``, ``type``, ``schema``), ``privileges``, ``with_grant_option``. Reads: one
``pg_default_acl`` query per database, which for a global entry (no ``schema``) without a row
gives PostgreSQL's built-in default (``acldefault``: PUBLIC's EXECUTE on functions, USAGE on
types). Applied with ``ALTER DEFAULT PRIVILEGES FOR ROLE OWNER [IN SCHEMA S] REVOKE ALL ... ;
... GRANT ...`` in one transaction; deleted by revoking the recorded privileges that the
built-in default does not give (so the default comes back).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey, ReadError, ReadItem, ResourceType
from tectum.providers.postgresql.common import (
    MissingDatabase,
    PgError,
    check_known,
    grantee,
    is_public,
    sorted_unique,
    sql,
    valid_name,
    valid_names,
)
from tectum.providers.postgresql.database import existing_databases
from tectum.schema import Attr, Schema
from tectum.values import is_known

if TYPE_CHECKING:
    from tectum.providers.postgresql.client import Client

#: the privileges of each object type (PostgreSQL 15's ``GRANT``)
PRIVILEGES: dict[str, tuple[str, ...]] = {
    "database": ("CONNECT", "CREATE", "TEMPORARY"),
    "schema": ("CREATE", "USAGE"),
    "table": ("DELETE", "INSERT", "REFERENCES", "SELECT", "TRIGGER", "TRUNCATE", "UPDATE"),
    "sequence": ("SELECT", "UPDATE", "USAGE"),
    "function": ("EXECUTE",),
    "type": ("USAGE",),
}
#: the keyword of each type in ``GRANT ... ON {ALL} <word> [IN SCHEMA]`` / default privileges
_WORDS = {"table": ("TABLE", "TABLES"), "sequence": ("SEQUENCE", "SEQUENCES"),
          "function": ("FUNCTION", "FUNCTIONS"), "type": ("TYPE", "TYPES"),
          "schema": ("SCHEMA", "SCHEMAS")}
#: ``pg_class.relkind`` of tables (tables, views, materialized views, foreign and
#: partitioned tables: what ``ALL TABLES IN SCHEMA`` covers) and sequences
_RELKINDS = {"table": ("r", "v", "m", "f", "p"), "sequence": ("S",)}
#: ``pg_default_acl.defaclobjtype`` of each type
_DEFACL = {"table": "r", "sequence": "S", "function": "f", "type": "T", "schema": "n"}


#: the problem of ``privileges = []``
_EMPTY = ("privileges is empty: a grant of nothing is no grant (to take the privileges away, "
          "remove the resource: deleting it revokes what it granted)")


def _schema_key(attrs: dict[str, Any]) -> Any:
    schema = attrs.get("schema")
    return "" if schema is None else schema


def _objects_key(objects: Any) -> Any:
    """``objects`` as one string (a JSON list, sorted), or as given while it holds values
    not known yet."""
    if objects is None:
        return "[]"
    if isinstance(objects, list) and all(isinstance(o, str) and is_known(o) for o in objects):
        return json.dumps(sorted(set(objects)))
    return objects


def _bad_id(import_id: str, why: str) -> DiagnosticError:
    return DiagnosticError(Diagnostic.error("Invalid import ID", f"{import_id!r}: {why}."))


def _json_id(import_id: str, keys: tuple[str, ...], form: str) -> dict[str, Any]:
    """The JSON object form of an import ID: its string attributes ``keys`` (``objects``:
    a list of strings). Raises :class:`DiagnosticError`."""
    try:
        data = json.loads(import_id)
    except ValueError as exc:
        raise _bad_id(import_id, f"not valid JSON ({exc}); expected {form}") from None
    if not isinstance(data, dict):
        raise _bad_id(import_id, f"the JSON is not an object; expected {form}")
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise _bad_id(import_id, f"unknown key(s) {', '.join(map(repr, unknown))} (keys: "
                                 f"{', '.join(keys)})")
    for key, value in data.items():
        ok = (isinstance(value, list) and all(isinstance(v, str) for v in value)
              if key == "objects" else value is None or isinstance(value, str))
        if not ok:
            raise _bad_id(import_id, f"{key!r} must be "
                          + ("a list of names" if key == "objects" else "a string"))
    return {k: data.get(k) for k in keys}


def _check_id(import_id: str, attrs: dict[str, Any], required: tuple[str, ...],
              kinds: tuple[str, ...]) -> None:
    """Raise :class:`DiagnosticError` for a missing attribute or an unknown object type."""
    for key in required:
        if not attrs.get(key):
            raise _bad_id(import_id, f"{key} is missing")
        problem = valid_name(attrs[key]) if key != "object_type" else None
        if problem is not None:
            raise _bad_id(import_id, f"{key}: {problem}")
    if attrs.get("object_type") not in kinds:
        raise _bad_id(import_id, f"object type {attrs.get('object_type')!r} is none of "
                                 f"{', '.join(kinds)}")


def _privileges(object_type: Any, values: Any) -> Any:
    """``values`` upper-cased, ``ALL`` expanded for ``object_type``, sorted, each once;
    ``TEMP`` is ``TEMPORARY``. Raises ``ValueError`` for a privilege the type does not have."""
    if not isinstance(values, list) or not all(isinstance(v, str) and is_known(v)
                                               for v in values):
        return values
    known = PRIVILEGES.get(str(object_type), ())
    out: set[str] = set()
    for value in values:
        word = value.strip().upper().replace(" PRIVILEGES", "")
        word = "TEMPORARY" if word == "TEMP" else word
        if word == "ALL":
            out.update(known)
        elif word in known:
            out.add(word)
        else:
            raise ValueError(f"Attribute 'privileges': {value!r} is not a privilege of a "
                             f"{object_type} (one of {', '.join(known)}, or ALL)")
    return sorted(out)


def _summarise(per_object: list[tuple[set[str], bool]], desired: list[str]
               ) -> tuple[list[str], bool] | None:
    """What a role holds over several objects, as one value to compare with ``desired``:
    the common set when every object holds the same; otherwise a set that differs from
    ``desired`` (the intersection, or the union when the intersection is ``desired``), so a
    partly granted ALL-grant is a change. None when nothing is held anywhere."""
    if not per_object or all(not privs for privs, _ in per_object):
        return None
    sets = [frozenset(p) for p, _ in per_object]
    grantable = all(g for privs, g in per_object if privs)
    if all(s == sets[0] for s in sets):
        return sorted(sets[0]), grantable
    common = sorted(frozenset.intersection(*sets))
    if common != desired:
        return common, grantable
    return sorted(frozenset.union(*sets)), grantable


class GrantType(ResourceType["Client"]):
    """Privileges of a role on objects (see the module docstring)."""

    name = "postgresql_grant"
    schema = Schema({
        "role": Attr(str, required=True, identity=True, force_new=True, validate=valid_name,
                     description="the role granted to (public: PUBLIC)"),
        "database": Attr(str, required=True, identity=True, force_new=True,
                         validate=valid_name, description="the database"),
        "schema": Attr(str, identity=True, force_new=True, validate=valid_name,
                       description="the schema (object_type schema: the schema granted on)"),
        "object_type": Attr(str, required=True, identity=True, force_new=True,
                            choices=("database", "schema", "table", "sequence", "function"),
                            description="database, schema, table, sequence or function"),
        "objects": Attr(list, default=[], identity=True, force_new=True, validate=valid_names,
                        description="object names in schema (empty: all of them)"),
        "privileges": Attr(list, required=True, description="privileges, e.g. [\"SELECT\"]"),
        "with_grant_option": Attr(bool, default=False,
                                  description="the role may grant them on"),
    })

    def check(self, attrs: dict[str, Any]) -> list[str]:
        kind, schema, objects = attrs.get("object_type"), attrs.get("schema"), attrs.get(
            "objects")
        problems = []
        if attrs.get("privileges") == []:
            problems.append(_EMPTY)
        has_objects = isinstance(objects, list) and len(objects) > 0
        if kind in ("schema", "table", "sequence", "function") and (schema is None
                                                                     or schema == ""):
            problems.append(f"a {kind} grant needs schema")
        if kind in ("database", "schema") and has_objects:
            problems.append(f"a {kind} grant takes no objects (it is on the {kind} itself)")
        if kind == "database" and schema is not None:
            problems.append("a database grant takes no schema")
        return problems

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        check_known(out, ("role", "database", "schema", "objects"))
        out["privileges"] = _privileges(out.get("object_type"), out.get("privileges"))
        objects = out.get("objects")
        if isinstance(objects, list) and all(is_known(o) for o in objects):
            out["objects"] = sorted_unique(objects)
        return out

    def identity(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        """``(role, database, schema, object_type, objects)``, each a string so the planner
        compares them (schema ``""`` when unset; the objects as a JSON list, ``[]`` for
        every object of the type)."""
        return (attrs.get("role"), attrs.get("database"), _schema_key(attrs),
                attrs.get("object_type"), _objects_key(attrs.get("objects")))

    def identity_key(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        """Two grants of one role on the same objects (or both on every object of the type
        in one schema) are refused at plan time: each apply would undo the other."""
        return (self.name, *self.identity(attrs))

    def part_of(self, attrs: dict[str, Any]) -> tuple[Any, ...] | None:
        """A grant on named objects is part of the grant of the same role on every object
        of that type in the schema (``objects = []``): both in one stack are refused at plan
        time (each apply's ``REVOKE ALL ... ON ALL TABLES`` would undo the other)."""
        objects = attrs.get("objects")
        if not isinstance(objects, list) or not objects:
            return None
        return (self.name, attrs.get("role"), attrs.get("database"), _schema_key(attrs),
                attrs.get("object_type"), "[]")

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        needs: list[list[ImplicitKey]] = []
        role = attrs.get("role")
        if isinstance(role, str) and not is_public(role):
            needs.append([("role", role)])
        db = attrs.get("database")
        if isinstance(db, str):
            needs.append([("database", db)])
            if isinstance(attrs.get("schema"), str):
                needs.append([("schema", db, attrs["schema"]), ("schema", None, attrs["schema"])])
        return needs

    def journal_identity(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {k: attrs.get(k) for k in ("role", "database", "schema", "object_type",
                                          "objects")}

    def import_item(self, import_id: str) -> ReadItem:
        """``ROLE:DATABASE:OBJECT_TYPE[:SCHEMA[:OBJ1,OBJ2]]``, or a JSON object of
        ``role``, ``database``, ``object_type``, ``schema``, ``objects`` (names holding ``:``
        or ``,``)."""
        form = "ROLE:DATABASE:OBJECT_TYPE[:SCHEMA[:OBJ1,OBJ2]] or a JSON object of those"
        if import_id.lstrip().startswith("{"):
            prior = _json_id(import_id, ("role", "database", "schema", "object_type",
                                         "objects"), form)
        else:
            parts = import_id.split(":", 4)
            if len(parts) < 3:
                raise _bad_id(import_id, f"expected {form}")
            prior = {"role": parts[0], "database": parts[1], "object_type": parts[2],
                     "schema": parts[3] if len(parts) > 3 and parts[3] else None,
                     "objects": [o for o in parts[4].split(",") if o] if len(parts) > 4
                     else []}
        prior["objects"] = sorted_unique(prior.get("objects") or [])
        _check_id(import_id, prior, ("role", "database", "object_type"),
                  self.schema.attrs["object_type"].choices or ())
        problems = [p for p in self.check(prior) if p != _EMPTY]
        if problems:
            raise _bad_id(import_id, "; ".join(problems))
        return ReadItem(None, prior)

    def describe(self, attrs: dict[str, Any]) -> str:
        what = attrs.get("object_type")
        where = ".".join(str(p) for p in (attrs.get("database"), attrs.get("schema")) if p)
        objects = ",".join(attrs.get("objects") or []) or "all"
        if what not in ("table", "sequence", "function"):
            objects = ""
        return f"{attrs.get('role')} on {what} {where} {objects}".strip()

    # -- refresh -------------------------------------------------------------------------
    def read(self, target: Client, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        """One ``aclexplode`` query per object type per database. Raises
        :class:`ReadError`, also for two desired grants of one role whose object lists share
        an object (the planner's managed-twice check catches equal lists and a list beside
        ``objects = []``; partly shared lists only show here, where every grant is seen)."""
        _refuse_shared_objects(items)
        by_db: dict[str, dict[str, set[str]]] = {}
        for item in items:
            a = item.attrs
            if not isinstance(a.get("database"), str):
                continue
            kinds = by_db.setdefault(str(a["database"]), {})
            kinds.setdefault(str(a.get("object_type")), set()).add(str(a.get("schema")))
        acl: dict[tuple[str, str], list[dict[str, Any]]] = {}
        try:
            dbs = existing_databases(target, sorted(by_db)) if by_db else set()
            if any("database" in by_db[db] for db in dbs):
                rows = target.query(target.database, sql.SQL(
                    "SELECT d.datname AS schema, d.datname AS object, "
                    "COALESCE(g.rolname, 'public') AS grantee, a.privilege_type, "
                    "a.is_grantable FROM pg_database d, "
                    "aclexplode(COALESCE(d.datacl, acldefault('d', d.datdba))) a "
                    "LEFT JOIN pg_roles g ON g.oid = a.grantee WHERE d.datname = ANY(%s)"),
                    [sorted(db for db in dbs if "database" in by_db[db])])
                for row in rows:
                    acl.setdefault((str(row["schema"]), "database"), []).append(row)
            for db in sorted(dbs):
                for kind, schemas in sorted(by_db[db].items()):
                    if kind == "database":
                        continue
                    try:
                        rows = target.query(db, _acl_query(kind), [sorted(schemas)])
                    except MissingDatabase:
                        continue
                    acl[(db, kind)] = rows
        except PgError as exc:
            raise ReadError(str(exc)) from None
        return [self._observed(item, acl) for item in items]

    def _observed(self, item: ReadItem, acl: dict[tuple[str, str], list[dict[str, Any]]]
                  ) -> dict[str, Any] | None:
        a = item.attrs
        kind, db, schema = str(a.get("object_type")), str(a.get("database")), a.get("schema")
        role = str(a.get("role"))
        rows = acl.get((db, kind))
        if rows is None:
            return None  # (the database is gone)
        if kind == "database":
            rows = [r for r in rows if r["object"] == db]
        elif kind == "schema":
            rows = [r for r in rows if r["object"] == schema]
        else:
            rows = [r for r in rows if r["schema"] == schema]
        objects = [o for o in (a.get("objects") or []) if isinstance(o, str)]
        names = set(objects) if objects else {str(r["object"]) for r in rows}
        per: dict[str, tuple[set[str], bool]] = {n: (set(), True) for n in names}
        for row in rows:
            if str(row["object"]) not in per or row["grantee"] is None:
                continue
            if str(row["grantee"]) != role:  # (PUBLIC reads as "public", a name no role has)
                continue
            privs, grantable = per[str(row["object"])]
            privs.add(str(row["privilege_type"]))
            per[str(row["object"])] = (privs, grantable and bool(row["is_grantable"]))
        desired = (item.desired or item.prior or {}).get("privileges") or []
        base = {"role": a.get("role"), "database": a.get("database"), "object_type": kind,
                "objects": sorted(objects)}
        if schema is not None:
            base["schema"] = schema
        if not names:
            # no object of the type exists: a recorded ALL-grant holds vacuously
            if item.prior is None:
                return None
            return {**base, "privileges": item.prior.get("privileges"),
                    "with_grant_option": item.prior.get("with_grant_option", False)}
        summary = _summarise(list(per.values()), list(desired))
        if summary is None:
            return None
        return {**base, "privileges": summary[0], "with_grant_option": summary[1]}

    # -- apply ---------------------------------------------------------------------------
    def apply(self, target: Client, change: ResourceChange) -> dict[str, Any] | None:
        """REVOKE ALL + GRANT in one transaction (CREATE, UPDATE, REPLACE: authoritative for
        the role on the objects); a DELETE (and the old half of a REPLACE) revokes only the
        recorded ``privileges``. Raises :class:`ApplyError`."""
        after = dict(change.after or {})
        try:
            if change.action in (Action.DELETE, Action.REPLACE):
                old = change.prior or change.before or {}
                self._run(target, old, revoke_only=True)
                if change.action is Action.DELETE:
                    return None
            self._run(target, after, revoke_only=False)
        except PgError as exc:
            raise ApplyError(f"grant to {(after or change.prior or {}).get('role')!r}: {exc}"
                             ) from None
        return self.stored(after)

    def _run(self, target: Client, attrs: dict[str, Any], revoke_only: bool) -> None:
        kind = str(attrs.get("object_type"))
        db = str(attrs.get("database"))
        who = grantee(str(attrs.get("role")))
        on = _on(kind, attrs)
        privileges = [p for p in attrs.get("privileges") or [] if p in PRIVILEGES[kind]]
        stmts: list[sql.Composable] = []
        if revoke_only:
            # only what the record holds (its grant option goes with each privilege): what
            # others granted the role on these objects stays
            if not privileges:
                return
            stmts.append(sql.SQL("REVOKE {} ON {} FROM {}").format(
                sql.SQL(", ").join(sql.SQL(p) for p in privileges), on, who))
        else:
            stmts.append(sql.SQL("REVOKE ALL PRIVILEGES ON {} FROM {}").format(on, who))
        if not revoke_only and privileges:
            stmts.append(sql.SQL("GRANT {} ON {} TO {}{}").format(
                sql.SQL(", ").join(sql.SQL(p) for p in privileges if p in PRIVILEGES[kind]),
                on, who, sql.SQL(" WITH GRANT OPTION" if attrs.get("with_grant_option")
                                 else "")))
        where = target.database if kind == "database" else db
        if revoke_only and not _present(target, attrs):
            return  # (the role, database or schema is gone, or was renamed: nothing to revoke)
        try:
            target.transaction(where, stmts)
        except MissingDatabase:
            if not revoke_only:
                raise


def _refuse_shared_objects(items: Sequence[ReadItem]) -> None:
    """Raise :class:`ReadError` when two desired grants of one role, database, schema and
    object type list the same object (each apply would undo the other's privileges on it)."""
    seen: dict[tuple[Any, ...], dict[str, list[str]]] = {}
    for item in items:
        want = item.desired
        objects = (want or {}).get("objects")
        if want is None or not isinstance(objects, list) or not objects:
            continue
        if not all(isinstance(o, str) and is_known(o) for o in objects):
            continue
        key = (want.get("role"), want.get("database"), want.get("schema"),
               want.get("object_type"))
        mine = sorted(set(objects))
        for other in seen.get(key, {}).values():
            shared = sorted(set(other) & set(mine))
            if shared and other != mine:
                raise ReadError(
                    f"two grants to role {key[0]!r} on {key[3]}s in {key[1]}.{key[2]} share "
                    f"{', '.join(map(repr, shared))} (objects {other} and {mine}): each "
                    "apply would undo the other's privileges there. List each object in one "
                    "grant of the role only")
        seen.setdefault(key, {})[json.dumps(mine)] = mine


def _present(target: Client, attrs: dict[str, Any]) -> bool:
    """Whether the roles (``role``, ``owner``), the database and the schema of ``attrs``
    all exist: what a REVOKE names must (after a rename they are gone, and the privileges
    went with the renamed object)."""
    roles = [str(attrs[k]) for k in ("role", "owner")
             if isinstance(attrs.get(k), str) and not is_public(attrs[k])]
    if roles:
        found = target.query(target.database, sql.SQL(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)"), [roles])
        if len(found) < len(set(roles)):
            return False
    db = str(attrs.get("database"))
    if not existing_databases(target, [db]):
        return False
    schema = attrs.get("schema")
    if isinstance(schema, str) and attrs.get("object_type") != "database":
        try:
            if not target.query(db, sql.SQL("SELECT 1 FROM pg_namespace WHERE nspname = %s"),
                                [schema]):
                return False
        except MissingDatabase:
            return False
    return True


def _on(kind: str, attrs: dict[str, Any]) -> sql.Composable:
    """The ``ON ...`` part of a GRANT/REVOKE for ``attrs``."""
    if kind == "database":
        return sql.SQL("DATABASE {}").format(sql.Identifier(str(attrs["database"])))
    schema = sql.Identifier(str(attrs.get("schema")))
    if kind == "schema":
        return sql.SQL("SCHEMA {}").format(schema)
    one, many = _WORDS[kind]
    objects = attrs.get("objects") or []
    if not objects:
        return sql.SQL("ALL " + many + " IN SCHEMA {}").format(schema)
    return sql.SQL(one + " {}").format(sql.SQL(", ").join(
        sql.Identifier(str(attrs["schema"]), str(o)) for o in objects))


def _acl_query(kind: str) -> sql.Composable:
    """``(schema, object, grantee, privilege_type, is_grantable)`` of every object of
    ``kind`` in the schemas ``%s`` (PUBLIC as ``public``)."""
    if kind == "schema":
        return sql.SQL(
            "SELECT n.nspname AS schema, n.nspname AS object, "
            "COALESCE(g.rolname, 'public') AS grantee, a.privilege_type, a.is_grantable "
            "FROM pg_namespace n, aclexplode(COALESCE(n.nspacl, acldefault('n', n.nspowner))) a "
            "LEFT JOIN pg_roles g ON g.oid = a.grantee WHERE n.nspname = ANY(%s)")
    if kind == "function":
        return sql.SQL(
            "SELECT n.nspname AS schema, p.proname AS object, "
            "COALESCE(g.rolname, 'public') AS grantee, a.privilege_type, a.is_grantable "
            "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, "
            "aclexplode(COALESCE(p.proacl, acldefault('f', p.proowner))) a "
            "LEFT JOIN pg_roles g ON g.oid = a.grantee "
            "WHERE n.nspname = ANY(%s) AND p.prokind IN ('f', 'a', 'w')")
    letter = "s" if kind == "sequence" else "r"
    return sql.SQL(
        "SELECT n.nspname AS schema, c.relname AS object, "
        "COALESCE(g.rolname, 'public') AS grantee, a.privilege_type, a.is_grantable "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, "
        "aclexplode(COALESCE(c.relacl, acldefault({letter}, c.relowner))) a "
        "LEFT JOIN pg_roles g ON g.oid = a.grantee "
        "WHERE n.nspname = ANY(%s) AND c.relkind = ANY({kinds})").format(
            letter=sql.Literal(letter), kinds=sql.Literal(list(_RELKINDS[kind])))


class DefaultPrivilegesType(ResourceType["Client"]):
    """Privileges a role gets on objects another role makes in future (see the module
    docstring)."""

    name = "postgresql_default_privileges"
    schema = Schema({
        "role": Attr(str, required=True, identity=True, force_new=True, validate=valid_name,
                     description="the role granted to (public: PUBLIC)"),
        "database": Attr(str, required=True, identity=True, force_new=True,
                         validate=valid_name, description="the database"),
        "owner": Attr(str, required=True, identity=True, force_new=True, validate=valid_name,
                      description="the role whose new objects get the privileges"),
        "schema": Attr(str, identity=True, force_new=True, validate=valid_name,
                       description="the schema (unset: every schema)"),
        "object_type": Attr(str, required=True, identity=True, force_new=True,
                            choices=("table", "sequence", "function", "type", "schema"),
                            description="table, sequence, function, type or schema"),
        "privileges": Attr(list, required=True, description="privileges, e.g. [\"SELECT\"]"),
        "with_grant_option": Attr(bool, default=False,
                                  description="the role may grant them on"),
    })

    def check(self, attrs: dict[str, Any]) -> list[str]:
        problems = []
        if attrs.get("privileges") == []:
            problems.append(_EMPTY)
        if attrs.get("object_type") == "schema" and attrs.get("schema") is not None:
            problems.append("default privileges on schemas take no schema")
        return problems

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        check_known(out, ("role", "database", "owner", "schema"))
        out["privileges"] = _privileges(out.get("object_type"), out.get("privileges"))
        return out

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        needs: list[list[ImplicitKey]] = []
        for key in ("role", "owner"):
            value = attrs.get(key)
            if isinstance(value, str) and not is_public(value):
                needs.append([("role", value)])
        db = attrs.get("database")
        if isinstance(db, str):
            needs.append([("database", db)])
            if isinstance(attrs.get("schema"), str):
                needs.append([("schema", db, attrs["schema"]), ("schema", None, attrs["schema"])])
        return needs

    def journal_identity(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {k: attrs.get(k) for k in ("role", "database", "owner", "schema", "object_type")}

    def import_item(self, import_id: str) -> ReadItem:
        """``ROLE:DATABASE:OWNER:OBJECT_TYPE[:SCHEMA]`` (or a JSON object of those)."""
        form = "ROLE:DATABASE:OWNER:OBJECT_TYPE[:SCHEMA] or a JSON object of those"
        if import_id.lstrip().startswith("{"):
            prior = _json_id(import_id, ("role", "database", "owner", "object_type",
                                         "schema"), form)
        else:
            parts = import_id.split(":", 4)
            if len(parts) < 4:
                raise _bad_id(import_id, f"expected {form}")
            prior = {"role": parts[0], "database": parts[1], "owner": parts[2],
                     "object_type": parts[3],
                     "schema": parts[4] if len(parts) > 4 and parts[4] else None}
        _check_id(import_id, prior, ("role", "database", "owner", "object_type"),
                  self.schema.attrs["object_type"].choices or ())
        problems = [p for p in self.check(prior) if p != _EMPTY]
        if problems:
            raise _bad_id(import_id, "; ".join(problems))
        return ReadItem(None, prior)

    def read(self, target: Client, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        """One ``pg_default_acl`` query per database. Raises :class:`ReadError`."""
        dbs_wanted = sorted({str(i.attrs["database"]) for i in items
                             if isinstance(i.attrs.get("database"), str)})
        owners = sorted({str(i.attrs["owner"]) for i in items
                         if isinstance(i.attrs.get("owner"), str)})
        rows_of: dict[str, list[dict[str, Any]]] = {}
        try:
            for db in sorted(existing_databases(target, dbs_wanted)) if dbs_wanted else []:
                try:
                    rows_of[db] = target.query(db, _DEFACL_QUERY, [owners])
                except MissingDatabase:
                    continue
        except PgError as exc:
            raise ReadError(str(exc)) from None
        out: list[dict[str, Any] | None] = []
        for item in items:
            a = item.attrs
            rows = rows_of.get(str(a.get("database")))
            if rows is None:
                out.append(None)
                continue
            letter = _DEFACL.get(str(a.get("object_type")))
            role = str(a.get("role"))
            privs: set[str] = set()
            grantable = True
            for row in rows:
                if (row["owner"] == a.get("owner") and row["schema"] == a.get("schema")
                        and row["objtype"] == letter
                        and row["grantee"] == role):
                    privs.add(str(row["privilege_type"]))
                    grantable = grantable and bool(row["is_grantable"])
            if not privs:
                out.append(None)
                continue
            found = {"role": a.get("role"), "database": a.get("database"),
                     "owner": a.get("owner"), "schema": a.get("schema"),
                     "object_type": a.get("object_type"), "privileges": sorted(privs),
                     "with_grant_option": grantable}
            out.append({k: v for k, v in found.items() if v is not None})
        return out

    def apply(self, target: Client, change: ResourceChange) -> dict[str, Any] | None:
        """``ALTER DEFAULT PRIVILEGES`` REVOKE ALL + GRANT in one transaction (authoritative
        for the role on the owner's future objects); a DELETE (and the old half of a REPLACE)
        revokes only the recorded ``privileges`` — but never a built-in default (PUBLIC's
        EXECUTE on functions, USAGE on types, when ``schema`` is unset): deleting returns to
        PostgreSQL's default. Raises :class:`ApplyError`."""
        after = dict(change.after or {})
        try:
            if change.action in (Action.DELETE, Action.REPLACE):
                old = change.prior or change.before or {}
                if _present(target, old):
                    db = str(old.get("database"))
                    revoke = [p for p in old.get("privileges") or []
                              if p not in _builtin(target, db, old)]
                    if revoke:
                        target.transaction(db, [_default(old, revoke, revoke=True)])
                if change.action is Action.DELETE:
                    return None
            stmts = [_default(after, None, revoke=True)]
            if after.get("privileges"):
                stmts.append(_default(after, after["privileges"]))
            target.transaction(str(after.get("database")), stmts)
        except PgError as exc:
            raise ApplyError(f"default privileges for {after.get('role')!r}: {exc}") from None
        return self.stored(after)


#: ``(owner, schema, objtype, grantee, privilege_type, is_grantable)`` of every default
#: privilege in a database: the ``pg_default_acl`` rows, and for the owners ``%s`` the
#: built-in defaults (``acldefault``) of each object type that has no global row (PostgreSQL
#: deletes a global row that comes back to the built-in default)
_DEFACL_QUERY = sql.SQL(
    "SELECT pg_get_userbyid(d.defaclrole) AS owner, n.nspname AS schema, "
    "d.defaclobjtype::text AS objtype, COALESCE(g.rolname, 'public') AS grantee, "
    "a.privilege_type, a.is_grantable FROM pg_default_acl d "
    "LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a "
    "LEFT JOIN pg_roles g ON g.oid = a.grantee "
    "UNION ALL "
    "SELECT o.rolname, NULL, t.objtype, COALESCE(g.rolname, 'public'), a.privilege_type, "
    "a.is_grantable FROM pg_roles o "
    "CROSS JOIN (VALUES ('r', 'r'), ('S', 's'), ('f', 'f'), ('T', 'T'), ('n', 'n')) "
    "AS t(objtype, letter), aclexplode(acldefault(t.letter::\"char\", o.oid)) a "
    "LEFT JOIN pg_roles g ON g.oid = a.grantee "
    "WHERE o.rolname = ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_default_acl d "
    "WHERE d.defaclrole = o.oid AND d.defaclnamespace = 0 "
    "AND d.defaclobjtype = t.objtype::\"char\")")


def _builtin(target: Client, db: str, attrs: dict[str, Any]) -> set[str]:
    """The privileges PostgreSQL's built-in default (``acldefault``) gives ``role`` on
    ``owner``'s new objects of the type: only for a global entry (``schema`` unset), the one
    a deletion returns to (PUBLIC: EXECUTE on functions, USAGE on types)."""
    if attrs.get("schema"):
        return set()
    letter = {"sequence": "s"}.get(str(attrs.get("object_type")),
                                   _DEFACL.get(str(attrs.get("object_type")), ""))
    rows = target.query(db, sql.SQL(
        "SELECT a.privilege_type FROM pg_roles o, "
        "aclexplode(acldefault(%s::\"char\", o.oid)) a "
        "LEFT JOIN pg_roles g ON g.oid = a.grantee "
        "WHERE o.rolname = %s AND COALESCE(g.rolname, 'public') = %s"),
        [letter, str(attrs.get("owner")), str(attrs.get("role"))])
    return {str(r["privilege_type"]) for r in rows}


def _default(attrs: dict[str, Any], privileges: list[str] | None,
             revoke: bool = False) -> sql.Composable:
    """``ALTER DEFAULT PRIVILEGES FOR ROLE OWNER [IN SCHEMA S] GRANT|REVOKE ...`` (REVOKE
    with ``privileges`` None: ``REVOKE ALL``)."""
    kind = str(attrs.get("object_type"))
    head = sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {}").format(
        sql.Identifier(str(attrs.get("owner"))))
    if attrs.get("schema"):
        head = sql.SQL("{} IN SCHEMA {}").format(head, sql.Identifier(str(attrs["schema"])))
    many = sql.SQL(_WORDS[kind][1])
    who = grantee(str(attrs.get("role")))
    if revoke:
        what = sql.SQL("ALL") if privileges is None else sql.SQL(", ").join(
            sql.SQL(p) for p in privileges if p in PRIVILEGES[kind])
        return sql.SQL("{} REVOKE {} ON {} FROM {}").format(head, what, many, who)
    return sql.SQL("{} GRANT {} ON {} TO {}{}").format(
        head, sql.SQL(", ").join(sql.SQL(p) for p in privileges or [] if p in PRIVILEGES[kind]),
        many, who, sql.SQL(" WITH GRANT OPTION" if attrs.get("with_grant_option") else ""))
