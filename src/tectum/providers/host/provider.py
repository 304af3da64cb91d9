"""The built-in ``host`` provider: files, packages, users, services and commands on hosts.

Its targets are :class:`~tectum.providers.host.connector.Connector` s, one per host, made on
first use and kept for the session (one SSH connection per host for the whole run): the local
machine (resources outside a role, and every inventory host with ``connector = "local"``) or
an :class:`~tectum.providers.host.ssh.SSHConnector`. Its types keep their short names
(``file``, ``package``...: :attr:`~tectum.providers.base.Provider.short_names`).

Settings (``[providers.host]`` in ``tectum.toml``, or ``TECTUM_PROVIDER_HOST_<SETTING>``):
``accept_new_host_keys`` (trust on first use, as ``--accept-new-host-keys``) and
``concurrency`` (operations at once on one host).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

from tectum.config.inventory import LOCAL
from tectum.diagnostics import Diagnostic, DiagnosticError, SourceLocation
from tectum.providers.base import Provider, ReadItem, ResourceType
from tectum.providers.host.base import HostType
from tectum.providers.host.connector import (
    Connector,
    ConnectorError,
    FactRequest,
    LocalConnector,
    merge_facts,
)
from tectum.providers.host.facts import FACTS_ARGV, parse_facts
from tectum.schema import Attr, Schema

if TYPE_CHECKING:
    from tectum.config.inventory import Connection, Inventory


def _concurrency(value: Any) -> str | None:
    return None if 1 <= value <= 1000 else "must be 1 to 1000"


def ssh_connector(name: str, conn: Connection, inventory_path: str, *,
                  trust_unknown: bool) -> Connector:
    """The SSH connector of inventory host ``name`` with connection settings ``conn`` (of the
    inventory at ``inventory_path``): what the ``host`` provider and ``tectum bootstrap``
    reach hosts with. Raises :class:`DiagnosticError` when the host's become password is
    to come from an environment variable that is not set."""
    from tectum.providers.host.ssh import SSHConnector

    password = None
    if conn.become_password_env:
        password = os.environ.get(conn.become_password_env)
        if password is None:
            raise DiagnosticError(Diagnostic.error(
                "Become password not set",
                f"Host {name!r} takes its sudo password from the environment variable "
                f"{conn.become_password_env}, which is not set. Export it (from a secret "
                "store), or use passwordless sudo.", address=f'host["{name}"]',
                source=SourceLocation(inventory_path)))
    return SSHConnector(
        name, conn.address, port=conn.port, user=conn.user, key_path=conn.key,
        known_hosts=conn.known_hosts, trust_unknown=trust_unknown,
        become=conn.become, become_password=password,
        connect_timeout=conn.connect_timeout, command_timeout=conn.command_timeout,
        connect_retries=conn.connect_retries, keepalive_interval=conn.keepalive_interval,
        keepalive_count_max=conn.keepalive_count_max, fail_fast=True)


class HostProvider(Provider):
    """Hosts: the local machine and the inventory's hosts (see the module docstring)."""

    name = "host"
    short_names = True
    offers_facts = True
    resource_types = {
        "file": "tectum.providers.host.files:FileType",
        "directory": "tectum.providers.host.files:DirectoryType",
        "symlink": "tectum.providers.host.files:SymlinkType",
        "package": "tectum.providers.host.apt:PackageType",
        "apt_repository": "tectum.providers.host.apt_repository:AptRepositoryType",
        "user": "tectum.providers.host.users:UserType",
        "group": "tectum.providers.host.users:GroupType",
        "service": "tectum.providers.host.service:ServiceType",
        "command": "tectum.providers.host.command:CommandType",
        "git_checkout": "tectum.providers.host.git:GitCheckoutType",
        "pip_packages": "tectum.providers.host.pip:PipPackagesType",
        "sysctl": "tectum.providers.host.sysctl:SysctlType",
        "cron": "tectum.providers.host.cron:CronType",
        "download": "tectum.providers.host.download:DownloadType",
        "archive": "tectum.providers.host.download:ArchiveType",
        "line_in_file": "tectum.providers.host.lines:LineInFileType",
        "block_in_file": "tectum.providers.host.lines:BlockInFileType",
        "ini_value": "tectum.providers.host.lines:IniValueType",
    }
    settings = Schema({
        "accept_new_host_keys": Attr(bool, default=False, description=(
            "trust the key of a host not yet in known_hosts and record it (trust on first "
            "use; a changed key is always refused), as --accept-new-host-keys")),
        "concurrency": Attr(int, default=10, validate=_concurrency,
                            description="operations at once on one host"),
    })

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._local: LocalConnector | None = None
        self._targets: dict[str, Connector] = {}
        #: connectors (by id) whose next read also reads the host's facts, and what it read
        self._want: set[int] = set()
        self._observed: dict[int, dict[str, Any]] = {}

    # -- targets -------------------------------------------------------------------------
    def target(self, host: str | None) -> Connector:
        """The connector of ``host`` (None or ``local``: this machine), made on first use and
        kept until :meth:`close`. Raises :class:`DiagnosticError` for a host the inventory does
        not declare, or whose become password is not set."""
        with self._lock:
            if host is None or host == LOCAL:
                if self._local is None:
                    self._local = LocalConnector()
                return self._local
            found = self._targets.get(host)
            if found is None:
                found = self._make(host)
                self._targets[host] = found
            return found

    def made(self, host: str | None) -> Connector | None:
        with self._lock:
            if host is None or host == LOCAL:
                return self._local
            return self._targets.get(host)

    def _make(self, name: str) -> Connector:
        if self.context is None:
            raise RuntimeError("the host provider is used before it is configured")
        inventory = self.context.inventory
        entry = inventory.hosts.get(name)
        kind, _, ident = name.partition(":")
        from tectum.providers.registry import registry

        maker = registry.provider_class(kind) if entry is None and ident else None
        if maker is not None and maker.offers_connector and self.context.provider is not None:
            # a provisioned host (``podman:web1``: a container a role is applied to)
            from tectum.config.inventory import Connection

            made: Connector = self.context.provider(kind).connector(name, Connection(
                kind, ident, 0, "root", None, None, False, None, 10.0, 600.0))
            return made
        if entry is None:
            raise DiagnosticError(Diagnostic.error(
                "Unknown host",
                f"Host {name!r} is not in the inventory ({inventory.path}). Add "
                f"[hosts.{name}] to it, or remove its resources from state with "
                "`tectum state rm`.", address=f'host["{name}"]'))
        conn = entry.connection
        if conn.connector == "local":
            local = LocalConnector()
            local.host = name
            return local
        if conn.connector != "ssh":
            # a container (connector = "podman"): the provider of that name makes it
            if self.context.provider is None:
                raise RuntimeError("no session to find the provider of a connector in")
            other: Connector = self.context.provider(conn.connector).connector(name, conn)
            return other
        trust = bool(self.config.get("accept_new_host_keys")
                     or self.context.options.get("accept_new_host_keys"))
        return ssh_connector(name, conn, inventory.path, trust_unknown=trust)

    @classmethod
    def target_key(cls, host: str | None, inventory: Inventory) -> Hashable:
        """None for this machine (resources outside a role, ``local``, and every inventory
        host with ``connector = "local"``), else the host's name: two names for this machine
        are one machine to implicit dependencies and to the check that no object is managed
        twice."""
        if host is None or host == LOCAL:
            return None
        entry = inventory.hosts.get(host)
        if entry is not None and entry.connection.connector == "local":
            return None
        return host

    def concurrency(self, target: Any) -> int:
        return int(self.config.get("concurrency", 10) or 10)

    # -- reads ---------------------------------------------------------------------------
    def begin_read(self, target: Any,
                   batches: Sequence[tuple[ResourceType[Any], Sequence[ReadItem]]]) -> None:
        """Fetch the facts every read of this host will ask for, in one round trip
        (:meth:`Connector.prefetch`; DESIGN decision 3) — with the host's own facts
        (:mod:`~tectum.providers.host.facts`) when :meth:`want_facts` asked for them."""
        wanted = id(target) in self._want
        requests = [rt.facts([i.attrs for i in items])
                    for rt, items in batches if isinstance(rt, HostType)]
        requests += [rt.plan_facts(items) for rt, items in batches if isinstance(rt, HostType)]
        # owners and groups named are checked at plan time (HostType.missing)
        requests += [rt.account_facts(items) for rt, items in batches
                     if isinstance(rt, HostType) and rt.account_attrs]
        if wanted:
            requests.append(FactRequest(commands=(FACTS_ARGV,)))
        target.prefetch(merge_facts(requests))
        if wanted:
            self._observed[id(target)] = self._facts(target)

    # -- facts ---------------------------------------------------------------------------
    def _facts(self, conn: Connector) -> dict[str, Any]:
        result = conn.run(FACTS_ARGV, mutating=False)
        if not result.ok:
            raise ConnectorError(f"cannot read the facts of {conn.host}: "
                                 f"{result.error_text()}")
        try:
            return parse_facts(result.stdout.decode("utf-8", "replace"))
        except ValueError as exc:
            raise ConnectorError(f"cannot read the facts of {conn.host}: {exc}") from None

    def gather_facts(self, host: str | None) -> dict[str, Any]:
        """The facts of ``host`` now: one command, one round trip
        (:data:`~tectum.providers.host.facts.FACTS_ARGV`). Raises :class:`ConnectorError`
        (or a connection error: see :meth:`down`)."""
        return self._facts(self.target(host))

    def want_facts(self, host: str | None) -> None:
        target = self.target(host)
        with self._lock:
            self._want.add(id(target))

    def observed_facts(self, host: str | None) -> dict[str, Any] | None:
        made = self.made(host)
        return self._observed.get(id(made)) if made is not None else None

    def end_read(self, target: Any) -> None:
        target.forget_facts()

    def close(self) -> None:
        """Close every connector made (flushing the command logs)."""
        with self._lock:
            made: list[Any] = [*([self._local] if self._local is not None else []),
                               *self._targets.values()]
            self._local = None
            self._targets.clear()
        for conn in made:
            close = getattr(conn, "close", None)
            if close is not None:
                close()
