"""``postgresql_role``: a role (a user or a group), Terraform's ``postgresql_role``.

Attributes (Terraform's names): ``name`` (identity: tectum's engine replaces an object whose
identity changes, so a new name makes a new role — Terraform's provider renames it),
``login``, ``superuser``, ``create_database``, ``create_role``, ``inherit``,
``replication``, ``bypass_row_level_security``, ``connection_limit`` (-1: no limit),
``valid_until`` (a timestamp, ``"infinity"`` by default; compared in UTC), ``roles`` (the
roles it is a member of, as a set) and ``password``
(**sensitive**: from ``secret("NAME")`` or a reference to ``random_password.result``).

The password never travels to the server: libpq makes its SCRAM-SHA-256 verifier on the
client (``PQencryptPasswordConn``) and ``CREATE/ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'``
stores that verifier, so neither a statement log (``log_statement = all``) nor
``pg_stat_activity`` ever holds the password. A read checks the stored verifier against the
desired password (and the recorded one) with PBKDF2 (:mod:`.scram`): a password changed by
hand is drift, shown only as "(sensitive value)". Reading verifiers needs ``pg_authid``
(superuser); for another connecting role the password cannot be observed and is kept from
state. A role's password that the configuration does not set is not managed.

Reads: one query over ``pg_authid`` (or ``pg_roles``) with the memberships
(``pg_auth_members``) for every role at once. A role offers the implicit key
``("role", NAME)``: databases it owns, grants to it and roles that are its members depend on
it, and are deleted before it. Deleting a role that still owns objects fails with
PostgreSQL's message naming them (Terraform's provider would ``REASSIGN OWNED``; tectum does
only what the plan shows).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tectum.masking import REDACTOR
from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey, ReadError, ReadItem, ResourceType
from tectum.providers.postgresql.common import (
    PgError,
    check_known,
    sorted_unique,
    sql,
    valid_name,
    valid_names,
)
from tectum.providers.postgresql.scram import verifies
from tectum.schema import Attr, Schema
from tectum.values import is_known

if TYPE_CHECKING:
    from tectum.providers.postgresql.client import Client

#: what a read reports for a password that is set but is not the desired or recorded one
CHANGED = "(changed outside tectum)"

#: boolean attribute → (catalog column, keyword when true, keyword when false)
FLAGS: dict[str, tuple[str, str, str]] = {
    "login": ("rolcanlogin", "LOGIN", "NOLOGIN"),
    "superuser": ("rolsuper", "SUPERUSER", "NOSUPERUSER"),
    "create_database": ("rolcreatedb", "CREATEDB", "NOCREATEDB"),
    "create_role": ("rolcreaterole", "CREATEROLE", "NOCREATEROLE"),
    "inherit": ("rolinherit", "INHERIT", "NOINHERIT"),
    "replication": ("rolreplication", "REPLICATION", "NOREPLICATION"),
    "bypass_row_level_security": ("rolbypassrls", "BYPASSRLS", "NOBYPASSRLS"),
}


def canonical_time(value: Any) -> Any:
    """``valid_until`` in one form: ``"infinity"``, or ``YYYY-MM-DD HH:MM:SS[.ffffff]+00:00``
    in UTC (a time without a zone is taken as UTC). Raises ``ValueError``."""
    if not isinstance(value, str) or not is_known(value):
        return value
    text = value.strip()
    if text.lower() in ("infinity", "+infinity"):
        return "infinity"
    if text.lower() == "-infinity":
        return "-infinity"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"Attribute 'valid_until': {value!r} is not a timestamp (write "
                         "\"2030-01-01 00:00:00+00\" or \"infinity\")") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(sep=" ")


def _connection_limit(value: Any) -> str | None:
    return None if isinstance(value, int) and value >= -1 else "must be -1 (no limit) or more"


class RoleType(ResourceType["Client"]):
    """A PostgreSQL role (see the module docstring)."""

    name = "postgresql_role"
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True, validate=valid_name,
                     description="the role's name (a new one makes a new role)"),
        "login": Attr(bool, default=False, description="may log in (a user)"),
        "superuser": Attr(bool, default=False, description="is a superuser"),
        "create_database": Attr(bool, default=False, description="may create databases"),
        "create_role": Attr(bool, default=False, description="may create roles"),
        "inherit": Attr(bool, default=True,
                        description="inherits the privileges of roles it is a member of"),
        "replication": Attr(bool, default=False, description="may start streaming replication"),
        "bypass_row_level_security": Attr(bool, default=False,
                                          description="bypasses row level security"),
        "connection_limit": Attr(int, default=-1, validate=_connection_limit,
                                 description="concurrent connections at most (-1: no limit)"),
        "valid_until": Attr(str, default="infinity",
                            description="when the password stops being valid (UTC)"),
        "roles": Attr(list, default=[], validate=valid_names,
                      description="roles this role is a member of"),
        "password": Attr(str, sensitive=True,
                         description="the password (stored as a SCRAM-SHA-256 verifier)"),
    })

    # -- configuration -------------------------------------------------------------------
    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        check_known(out, ("name", "roles"))
        out["valid_until"] = canonical_time(out.get("valid_until"))
        roles = out.get("roles")
        if isinstance(roles, list) and all(is_known(r) for r in roles):
            out["roles"] = sorted_unique(roles)
        password = out.get("password")
        if isinstance(password, str) and is_known(password):
            REDACTOR.add(password)
        return out

    def check(self, attrs: dict[str, Any]) -> list[str]:
        name, roles = attrs.get("name"), attrs.get("roles")
        if isinstance(roles, list) and isinstance(name, str) and any(
                isinstance(r, str) and r == name for r in roles):
            return [f"role {name!r} cannot be a member of itself (roles)"]
        return []

    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        name = attrs.get("name")
        return [("role", name)] if isinstance(name, str) else []

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        return [[("role", r)] for r in attrs.get("roles") or [] if isinstance(r, str)]

    # -- refresh -------------------------------------------------------------------------
    def read(self, target: Client, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        """Every role with one catalog query. Raises :class:`ReadError`."""
        names = sorted({str(_where(i)["name"]) for i in items
                        if isinstance(_where(i).get("name"), str)})
        try:
            rows = _roles(target, names) if names else {}
        except PgError as exc:
            raise ReadError(str(exc)) from None
        out: list[dict[str, Any] | None] = []
        for item in items:
            row = rows.get(str(_where(item).get("name")))
            out.append(None if row is None else _observed(row, item))
        return out

    def journal_identity(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"name": attrs.get("name")}

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        return "fails while the role owns objects or holds privileges elsewhere"

    # -- apply ---------------------------------------------------------------------------
    def apply(self, target: Client, change: ResourceChange) -> dict[str, Any] | None:
        """CREATE / UPDATE (``ALTER ROLE``, memberships granted and revoked) / DELETE (``DROP
        ROLE``) / REPLACE. Raises :class:`ApplyError` with PostgreSQL's message."""
        try:
            if change.action in (Action.DELETE, Action.REPLACE):
                old = change.prior or change.before or {}
                if isinstance(old.get("name"), str):
                    target.execute(target.database, sql.SQL("DROP ROLE IF EXISTS {}").format(
                        sql.Identifier(str(old["name"]))))
                if change.action is Action.DELETE:
                    return None
            after = dict(change.after or {})
            name = str(after["name"])
            if change.action is Action.UPDATE and change.before is not None:
                stmts = self._alter(target, name, after, change.before)
            else:
                stmts = [sql.SQL("CREATE ROLE {} WITH {}").format(
                    sql.Identifier(name), self._options(target, name, after, None))]
                stmts += [sql.SQL("GRANT {} TO {}").format(sql.Identifier(r),
                                                           sql.Identifier(name))
                          for r in after.get("roles") or []]
            if stmts:
                target.transaction(target.database, stmts)
        except PgError as exc:
            raise ApplyError(f"role {after_name(change)}: {exc}") from None
        return self.stored(after)

    def _options(self, target: Client, name: str, after: dict[str, Any],
                 before: dict[str, Any] | None) -> sql.Composable:
        parts: list[sql.Composable] = []
        for key, (_col, yes, no) in FLAGS.items():
            if key in after and (before is None or before.get(key) != after[key]):
                parts.append(sql.SQL(yes if after[key] else no))
        limit = after.get("connection_limit")
        if limit is not None and (before is None or before.get("connection_limit") != limit):
            parts.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(int(limit))))
        until = after.get("valid_until")
        if until is not None and (before is None or before.get("valid_until") != until):
            parts.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(str(until))))
        password = after.get("password")
        if password is not None and (before is None or before.get("password") != password):
            parts.append(sql.SQL("PASSWORD {}").format(
                sql.Literal(target.encrypt_password(str(password), name))))
        return sql.SQL(" ").join(parts) if parts else sql.SQL("NOLOGIN" if not after.get(
            "login") else "LOGIN")

    def _alter(self, target: Client, name: str, after: dict[str, Any],
               before: dict[str, Any]) -> list[sql.Composable]:
        stmts: list[sql.Composable] = []
        changed = any(after.get(k) != before.get(k) for k in
                      (*FLAGS, "connection_limit", "valid_until", "password")
                      if k in after and after.get(k) is not None)
        if changed:
            stmts.append(sql.SQL("ALTER ROLE {} WITH {}").format(
                sql.Identifier(name), self._options(target, name, after, before)))
        if "roles" in after and after.get("roles") is not None:
            want, have = set(after["roles"]), set(before.get("roles") or [])
            stmts += [sql.SQL("GRANT {} TO {}").format(sql.Identifier(r), sql.Identifier(name))
                      for r in sorted(want - have)]
            for r in sorted(have - want):
                stmts += _revoke_membership(target, r, name)
        return stmts


def _revoke_membership(target: Client, group: str, member: str) -> list[sql.Composable]:
    """``REVOKE group FROM member``; from PostgreSQL 16 on, where a membership may be granted
    by several roles (one ``pg_auth_members`` row each) and a plain REVOKE takes back only
    the current role's, one ``REVOKE ... GRANTED BY`` per grantor."""
    plain = sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), sql.Identifier(member))
    if target.server_version() < 160000:
        return [plain]
    rows = target.query(target.database, sql.SQL(
        "SELECT DISTINCT pg_get_userbyid(m.grantor) AS grantor FROM pg_auth_members m "
        "WHERE m.roleid = (SELECT oid FROM pg_roles WHERE rolname = %s) "
        "AND m.member = (SELECT oid FROM pg_roles WHERE rolname = %s) ORDER BY 1"),
        [group, member])
    return [sql.SQL("{} GRANTED BY {}").format(plain, sql.Identifier(str(r["grantor"])))
            for r in rows] or [plain]


def _where(item: ReadItem) -> dict[str, Any]:
    """What finds an item's object: the record in state when there is one (a name changed in
    the configuration renames the object it records), else the configuration."""
    if item.prior is not None and isinstance(item.prior.get("name"), str):
        return item.prior
    return item.attrs


def after_name(change: ResourceChange) -> str:
    attrs = change.after or change.prior or change.before or {}
    return repr(attrs.get("name"))


_QUERY = """
SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
       r.rolreplication, r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil::text AS validuntil,
       {password} AS rolpassword,
       ARRAY(SELECT DISTINCT g.rolname FROM pg_auth_members m
             JOIN pg_roles g ON g.oid = m.roleid
             WHERE m.member = r.oid ORDER BY 1)::text[] AS memberof
FROM {table} r WHERE r.rolname = ANY(%s)
"""


def _roles(target: Client, names: list[str]) -> dict[str, dict[str, Any]]:
    """The catalog rows of the roles ``names`` by name (one query)."""
    if target.is_superuser():
        stmt = sql.SQL(_QUERY).format(password=sql.SQL("r.rolpassword"),
                                      table=sql.SQL("pg_authid"))
    else:
        stmt = sql.SQL(_QUERY).format(password=sql.SQL("NULL::text"),
                                      table=sql.SQL("pg_roles"))
    rows = target.query(target.database, stmt, [names])
    for row in rows:
        row["_observable"] = target.is_superuser()
    return {str(r["rolname"]): r for r in rows}


def _observed(row: dict[str, Any], item: ReadItem) -> dict[str, Any]:
    out: dict[str, Any] = {"name": row["rolname"]}
    for key, (col, _yes, _no) in FLAGS.items():
        out[key] = bool(row[col])
    out["connection_limit"] = int(row["rolconnlimit"])
    try:
        out["valid_until"] = canonical_time(row["validuntil"] or "infinity")
    except ValueError:  # (a date Python cannot hold, e.g. BC: shown as the server has it)
        out["valid_until"] = str(row["validuntil"])
    out["roles"] = sorted(row["memberof"] or [])
    candidates = [p for p in ((item.desired or {}).get("password"),
                              (item.prior or {}).get("password"))
                  if isinstance(p, str) and is_known(p)]
    managed = any(isinstance((a or {}).get("password"), str)
                  for a in (item.desired, item.prior))
    if managed:
        if not row["_observable"]:
            out["password"] = (item.prior or {}).get("password")
        else:
            stored = row["rolpassword"]
            found = next((p for p in candidates if verifies(stored, p, str(row["rolname"]))),
                         None)
            out["password"] = found if found is not None else (
                None if stored is None else CHANGED)
    return out
