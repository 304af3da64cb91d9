"""The built-in ``etcd`` provider: keys of an etcd v3 cluster (``aetcd``, gRPC).

Settings (``[providers.etcd]`` in ``tectum.toml``, or ``TECTUM_PROVIDER_ETCD_<SETTING>``):

``endpoints``    ``["host:port", ...]`` of the cluster's client URLs (default
                 ``["127.0.0.1:2379"]``); tried in order, the first that answers is used
``timeout``      seconds per etcd call (default 5)
``concurrency``  etcd operations at once (default 8)
``username``     etcd user (etcd's ``--auth``); its password comes **only** from the
                 environment variable ``TECTUM_PROVIDER_ETCD_PASSWORD`` — a ``password`` in
                 ``tectum.toml`` is refused
``ca_cert``      PEM file of the CA that signed the server's certificate: TLS
``cert``, ``key`` PEM client certificate and key (etcd's ``--client-cert-auth``)

Paths are relative to the project directory. Every etcd resource, on whatever host it is
declared, shares one target: the :class:`~tectum.providers.etcd.client.EtcdClient` of the
session (one event-loop thread, one gRPC channel per endpoint), closed by :meth:`close`.

An etcd that does not answer makes the plan fail with a diagnostic naming every endpoint
("etcd is unreachable at ...": the reads fail, and :meth:`EtcdProvider.down` reports the
target down, so the planner stops: "Cannot reach a provider's server") — it is never taken
for an empty etcd. During an apply the first call that finds it unreachable waits its
timeout; the calls after it fail at once with the same sentence (state keeps what was done).
"""

from __future__ import annotations

import os
import re
import threading
import tomllib
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.masking import REDACTOR
from tectum.providers.base import Provider, ProviderContext, ReadItem, ResourceType
from tectum.providers.etcd.client import EtcdClient
from tectum.schema import Attr, Schema

if TYPE_CHECKING:
    from tectum.config.inventory import Inventory

#: the only place the password of ``username`` comes from
PASSWORD_ENV = "TECTUM_PROVIDER_ETCD_PASSWORD"
_ENDPOINT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}")


def _endpoints(value: Any) -> str | None:
    if isinstance(value, str):  # (TECTUM_PROVIDER_ETCD_ENDPOINTS="a:1,b:2")
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of \"host:port\" strings, e.g. [\"127.0.0.1:2379\"]"
    for item in value:
        if not isinstance(item, str):
            return f"{item!r} is not a \"host:port\" string"
        text = item.removeprefix("http://").removeprefix("https://")
        if not _ENDPOINT.fullmatch(text) or not 0 < int(text.rsplit(":", 1)[1]) < 65536:
            return (f"{item!r} is not an endpoint: write \"host:port\" (e.g. "
                    "\"127.0.0.1:2379\"), the port 1 to 65535")
    return None


def _timeout(value: Any) -> str | None:
    return None if 0 < float(value) <= 600 else "must be more than 0 and at most 600 seconds"


def _concurrency(value: Any) -> str | None:
    return None if 1 <= value <= 64 else "must be 1 to 64"


def _written_password(root: str) -> bool:
    """Whether ``tectum.toml`` in ``root`` writes ``[providers.etcd] password`` (refused
    even when the environment variable holds the same text)."""
    try:
        with open(os.path.join(root, "tectum.toml"), "rb") as fh:
            table = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return False
    etcd = table.get("providers", {}).get("etcd", {}) if isinstance(table, dict) else {}
    return isinstance(etcd, dict) and "password" in etcd


def endpoint_list(value: Any) -> list[str]:
    """The ``endpoints`` setting as ``host:port`` strings (a comma-separated string from the
    environment is split; an ``http://``/``https://`` scheme is dropped)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(v).strip().removeprefix("http://").removeprefix("https://")
            for v in items if str(v).strip()]


class EtcdProvider(Provider):
    """``etcd_key``, ``etcd_key_prefix`` and the read-only ``etcd_data_key``,
    ``etcd_data_key_prefix`` (see the module docstring and ``docs/etcd.md``)."""

    name = "etcd"
    resource_types = {
        "etcd_key": "tectum.providers.etcd.keys:KeyType",
        "etcd_key_prefix": "tectum.providers.etcd.keys:KeyPrefixType",
        "etcd_data_key": "tectum.providers.etcd.data:DataKeyType",
        "etcd_data_key_prefix": "tectum.providers.etcd.data:DataKeyPrefixType",
    }
    settings = Schema({
        "endpoints": Attr((list, str), default=["127.0.0.1:2379"], validate=_endpoints,
                          description="the cluster's client endpoints, [\"host:port\", ...]"),
        "timeout": Attr((int, float), default=5, validate=_timeout,
                        description="seconds per etcd call"),
        "concurrency": Attr(int, default=8, validate=_concurrency,
                            description="etcd operations at once"),
        "username": Attr(str, description="etcd user; the password only from "
                                          f"{PASSWORD_ENV}"),
        "password": Attr(str, sensitive=True,
                         description=f"only from the environment ({PASSWORD_ENV})"),
        "ca_cert": Attr(str, description="PEM file of the CA of the server's certificate"),
        "cert": Attr(str, description="PEM client certificate (with key)"),
        "key": Attr(str, description="PEM client key (with cert)"),
    })

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._client: EtcdClient | None = None

    def configure(self, config: dict[str, Any], context: ProviderContext) -> None:
        """Check the settings together: a password only from :data:`PASSWORD_ENV`, a username
        with it, ``cert`` with ``key``, TLS files that exist. Raises :class:`DiagnosticError`."""
        super().configure(config, context)
        problems: list[str] = []
        password = config.get("password")
        if isinstance(password, str) and len(password) >= 4:
            REDACTOR.add(password)  # (never in an output, whatever says it)
        if password is not None and os.environ.get(PASSWORD_ENV) != password \
                or _written_password(context.root):
            problems.append(f"a password is never written in tectum.toml: remove "
                            f"[providers.etcd] password and set {PASSWORD_ENV} in the "
                            "environment instead")
        if (config.get("username") is None) != (password is None) and not problems:
            problems.append(f"username and password go together: set [providers.etcd] "
                            f"username and {PASSWORD_ENV}, or neither")
        if bool(config.get("cert")) != bool(config.get("key")):
            problems.append("cert and key go together (a client certificate and its key)")
        for name in ("ca_cert", "cert", "key"):
            path = config.get(name)
            if path:
                full = os.path.join(context.root, str(path))
                if not os.path.isfile(full):
                    problems.append(f"{name} {path!r}: no such file ({full})")
                config[name] = full
        if problems:
            raise DiagnosticError(Diagnostic.error(
                "Invalid provider settings", "Provider 'etcd': " + "; ".join(problems) + ".",
                address="providers.etcd"))
        config["endpoints"] = endpoint_list(config.get("endpoints") or ["127.0.0.1:2379"])

    def client(self) -> EtcdClient:
        """The session's client (made on first use; connects on its first call)."""
        with self._lock:
            if self._client is None:
                c = self.config
                self._client = EtcdClient(
                    endpoint_list(c.get("endpoints") or ["127.0.0.1:2379"]),
                    timeout=float(c.get("timeout") or 5), username=c.get("username"),
                    password=c.get("password"), ca_cert=c.get("ca_cert"),
                    cert=c.get("cert"), key=c.get("key"))
            return self._client

    def target(self, host: str | None) -> EtcdClient:
        return self.client()

    def made(self, host: str | None) -> EtcdClient | None:
        return self._client

    @classmethod
    def target_key(cls, host: str | None, inventory: Inventory) -> Hashable:
        """One target for every resource: the configured cluster."""
        return None

    def concurrency(self, target: Any) -> int:
        return int(self.config.get("concurrency", 8) or 8)

    def down(self, target: Any) -> tuple[str, str] | None:
        """``("unreachable", reason)`` once a call found no endpoint answering (until a call
        succeeds: :attr:`EtcdClient.unreachable`), else None. The planner then stops the plan
        ("Cannot reach a provider's server"): etcd's objects could not be read."""
        found = getattr(target, "unreachable", None)
        return found if isinstance(found, tuple) else None

    def begin_read(self, target: Any,
                   batches: Sequence[tuple[ResourceType[Any], Sequence[ReadItem]]]) -> None:
        """Every key and prefix the reads of this plan need, in **one** etcd transaction
        (:meth:`EtcdClient.prefetch`): the types' reads are then answered from it."""
        keys: list[str] = []
        prefixes: list[str] = []
        for rt, items in batches:
            for item in items:
                key, prefix = item.attrs.get("key"), item.attrs.get("prefix")
                if rt.name in ("etcd_key", "etcd_data_key") and isinstance(key, str):
                    keys.append(key)
                elif isinstance(prefix, str):
                    prefixes.append(prefix)
        target.prefetch(keys, prefixes)

    def end_read(self, target: Any) -> None:
        target.forget()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
