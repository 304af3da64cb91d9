"""What the ``postgresql`` types share: name checks, list normalisation, the PUBLIC role."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tectum.values import is_known

try:
    from psycopg import sql as sql
except ImportError:  # (psycopg is optional: PostgresqlProvider.client() reports it missing)
    sql = None  # type: ignore[assignment]

class PgError(Exception):
    """A PostgreSQL call failed; the message is a sentence for the user (never a statement)."""


class MissingDatabase(PgError):
    """The database a statement is for does not exist."""

    def __init__(self, db: str) -> None:
        super().__init__(f"database {db!r} does not exist")
        self.db = db


#: PostgreSQL's identifier length limit (NAMEDATALEN - 1), in bytes
MAX_NAME = 63


def valid_name(value: Any) -> str | None:
    """Validator for a PostgreSQL object name: non-empty, at most 63 bytes, no NUL byte.
    Any other character (quotes, ``;``, spaces) is fine: names are always quoted
    (``psycopg.sql.Identifier``)."""
    if not isinstance(value, str) or not is_known(value):
        return None
    if not value:
        return "a PostgreSQL name cannot be empty"
    if "\x00" in value:
        return f"{value!r} holds a NUL byte, which no PostgreSQL name can"
    if len(value.encode()) > MAX_NAME:
        return (f"{value!r} is longer than PostgreSQL's {MAX_NAME}-byte limit for names "
                "(it would be cut short)")
    return None


def valid_names(value: Any) -> str | None:
    """Validator for a list of names (see :func:`valid_name`)."""
    if not isinstance(value, list):
        return None
    for item in value:
        if not isinstance(item, str):
            return f"expected a list of names (strings), got {item!r}"
        problem = valid_name(item)
        if problem is not None:
            return problem
    return None


def sorted_unique(values: Iterable[Any]) -> list[Any]:
    """``values`` sorted, each once (lists compared as sets are stored in this form)."""
    return sorted(set(values))


def grantee(role: str) -> sql.Composable:
    """A grantee in a GRANT/REVOKE: ``PUBLIC`` for the role name ``public`` exactly
    (Terraform's convention; PostgreSQL reserves only that spelling, so a role named
    ``Public`` is that role), else the quoted role name."""
    return sql.SQL("PUBLIC") if is_public(role) else sql.Identifier(role)


def is_public(role: object) -> bool:
    """Whether ``role`` names PUBLIC: the exact name ``public`` (never ``Public``/``PUBLIC``,
    which are ordinary role names once quoted)."""
    return role == "public"


def check_known(attrs: dict[str, Any], keys: Iterable[str]) -> None:
    """Raise ``ValueError`` when a resolved attribute of ``keys`` fails its name check."""
    for key in keys:
        value = attrs.get(key)
        problem = valid_names(value) if isinstance(value, list) else valid_name(value)
        if problem is not None:
            raise ValueError(f"Attribute {key!r}: {problem}")
