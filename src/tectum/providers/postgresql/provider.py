"""The built-in ``postgresql`` provider (psycopg 3): roles, databases, schemas, grants,
extensions and default privileges on one PostgreSQL server (Terraform's ``cyrilgdn/postgresql``
provider is the peer for names).

Settings (``[providers.postgresql]`` in ``tectum.toml``, or
``TECTUM_PROVIDER_POSTGRESQL_<SETTING>`` in the environment):

``host``             the server's host name or address, or a socket directory (default:
                     libpq's — ``PGHOST``, else the local socket)
``port``             its port (default 5432)
``database``         the maintenance database connected to for roles and databases
                     (default ``postgres``); also the default ``database`` of schemas and
                     extensions
``username``         the role tectum connects as (default ``postgres``); reading whether a
                     role's password drifted needs a superuser
``sslmode``          libpq's ``sslmode`` (``disable``, ``allow``, ``prefer`` — the default,
                     ``require``, ``verify-ca``, ``verify-full``)
``connect_timeout``  seconds to wait for a connection (default 15)
``concurrency``      changes at once (default 4; statements on one database still run one
                     after another on its connection)

The password is never written in ``tectum.toml`` (a ``password`` there is refused with a
diagnostic, also when the environment variable below is set: the file itself is looked at):
libpq reads ``PGPASSWORD`` or ``~/.pgpass`` as usual, and
``TECTUM_PROVIDER_POSTGRESQL_PASSWORD`` overrides both.

Every resource shares one target, a :class:`~tectum.providers.postgresql.client.Client`
holding one autocommit connection per database it works in, opened on first use. A server
that cannot be reached fails the read (a diagnostic naming ``host:port`` and the settings to
check) — nothing is planned from an unread server — and fails the changes of an apply, which
reports them and keeps in state what was done before.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import tomllib
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, ClassVar

from tectum.diagnostics import Diagnostic, DiagnosticError, SourceLocation
from tectum.masking import REDACTOR
from tectum.providers.base import Provider, ProviderContext
from tectum.schema import Attr, Schema

if TYPE_CHECKING:
    from tectum.config.inventory import Inventory
    from tectum.providers.postgresql.client import Client

#: the environment variable that may hold the password (never tectum.toml)
PASSWORD_ENV = "TECTUM_PROVIDER_POSTGRESQL_PASSWORD"
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _port(value: Any) -> str | None:
    return None if isinstance(value, int) and 1 <= value <= 65535 else "must be 1 to 65535"


def _positive(value: Any) -> str | None:
    return None if isinstance(value, int) and 1 <= value <= 3600 else "must be 1 to 3600"


def _concurrency(value: Any) -> str | None:
    return None if isinstance(value, int) and 1 <= value <= 64 else "must be 1 to 64"


def _password_in_toml(root: str) -> bool:
    """Whether ``tectum.toml`` in ``root`` sets ``[providers.postgresql] password`` (looked
    at in the file itself: the environment override must not hide it)."""
    try:
        with open(os.path.join(root, "tectum.toml"), "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return False  # (no file, or one the configuration loader reports)
    table = data.get("providers", {}) if isinstance(data, dict) else {}
    pg = table.get("postgresql") if isinstance(table, dict) else None
    return isinstance(pg, dict) and "password" in pg


class PostgresqlProvider(Provider):
    """PostgreSQL resource types (see the module docstring)."""

    name = "postgresql"
    resource_types: ClassVar[dict[str, str]] = {
        "postgresql_role": "tectum.providers.postgresql.role:RoleType",
        "postgresql_database": "tectum.providers.postgresql.database:DatabaseType",
        "postgresql_schema": "tectum.providers.postgresql.database:SchemaType",
        "postgresql_extension": "tectum.providers.postgresql.database:ExtensionType",
        "postgresql_grant": "tectum.providers.postgresql.grant:GrantType",
        "postgresql_default_privileges":
            "tectum.providers.postgresql.grant:DefaultPrivilegesType",
    }
    settings = Schema({
        "host": Attr(str, description="host name, address or socket directory"),
        "port": Attr(int, default=5432, validate=_port, description="the server's port"),
        "database": Attr(str, default="postgres", description="the maintenance database"),
        "username": Attr(str, default="postgres", description="the role to connect as"),
        "sslmode": Attr(str, default="prefer", choices=SSLMODES, description="libpq sslmode"),
        "connect_timeout": Attr(int, default=15, validate=_positive,
                                description="seconds to wait for a connection"),
        "concurrency": Attr(int, default=4, validate=_concurrency,
                            description="changes at once"),
        # only from the environment (refused in tectum.toml by configure)
        "password": Attr(object, sensitive=True,
                         description=f"only from {PASSWORD_ENV}, PGPASSWORD or ~/.pgpass"),
    })

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._password: str | None = None

    def configure(self, config: dict[str, Any], context: ProviderContext) -> None:
        """Take the settings. Raises :class:`DiagnosticError` for a password written in
        ``tectum.toml``."""
        password = config.pop("password", None)
        if _password_in_toml(context.root):
            raise DiagnosticError(Diagnostic.error(
                "Password in tectum.toml",
                "[providers.postgresql] sets password: a password is never kept in "
                "tectum.toml (it is committed with the project). Remove it and give it in "
                f"the environment as PGPASSWORD or {PASSWORD_ENV}, or in ~/.pgpass.",
                address="providers.postgresql",
                source=SourceLocation(os.path.join(context.root, "tectum.toml"))))
        if isinstance(password, str):
            REDACTOR.add(password)
            self._password = password
        super().configure(config, context)

    def client(self) -> Client:
        """The server's client (made on first use; it connects on its first call)."""
        if importlib.util.find_spec("psycopg") is None:
            raise DiagnosticError(Diagnostic.error(
                "psycopg is not installed",
                "The postgresql provider needs psycopg 3: pip install 'tectum[postgres]' (or "
                "pip install 'psycopg[binary]').", address="providers.postgresql"))
        from tectum.providers.postgresql.client import Client  # (psycopg: on first use)

        with self._lock:
            if self._client is None:
                self._client = Client(dict(self.config), self._password)
            return self._client

    def target(self, host: str | None) -> Client:
        return self.client()

    def made(self, host: str | None) -> Client | None:
        return self._client

    @classmethod
    def target_key(cls, host: str | None, inventory: Inventory) -> Hashable:
        """One target for every resource: the configured server."""
        return None

    def concurrency(self, target: Any) -> int:
        return int(self.config.get("concurrency", 4) or 4)

    def down(self, target: Any) -> tuple[str, str] | None:
        """``("unreachable", reason)`` once a change could not reach the server."""
        inner = getattr(target, "inner", target)
        down = getattr(inner, "down", None)
        return down if isinstance(down, tuple) else None

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
