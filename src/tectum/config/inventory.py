"""The inventory: the hosts a project manages, their groups, variables and connection settings.

``inventory.toml`` in the project directory (``--inventory FILE`` names another)::

    [defaults]                     # connection settings for every host
    user = "deploy"
    key = "~/.ssh/id_ed25519"      # private key; relative paths are relative to the project
    become = true                  # run as root with sudo
    become_password_env = "TECTUM_BECOME_PASSWORD"   # the password's environment variable

    [hosts.web-1]
    address = "10.0.0.11"          # default: the host's name
    port = 2222
    vars = { weight = 10 }

    [hosts.db-1]
    address = "10.0.0.21"

    [hosts.controller]
    connector = "local"            # this machine, without SSH

    [groups.web]
    hosts = ["web-1"]
    vars = { port = 8080 }
    become = false                 # a group may set connection settings too

Connection settings (``[defaults]``, ``[groups.G]``, ``[hosts.H]``; a host's own setting wins,
then its groups' in the order they are declared, then the defaults — Ansible's host-over-group
precedence): ``connector`` (``ssh``, the default, ``local``, or ``podman``: ``address`` is then
a running container's name, reached with ``podman exec``), ``address``, ``port`` (22),
``user`` (``root``), ``key``, ``known_hosts`` (``~/.ssh/known_hosts``), ``become`` (false),
``become_password_env``, ``connect_timeout`` (10 s: one connection attempt, not a command),
``command_timeout`` (600 s), ``connect_retries`` (3: further attempts after one that reached the
host but did not finish in time), ``keepalive_interval`` (10 s) and ``keepalive_count_max`` (3:
a host is given up after about (count + 1) x interval seconds without answering SSH keepalives,
however slow its commands are; OpenSSH's ``ServerAliveInterval`` / ``ServerAliveCountMax``).
Variables merge the same way: defaults' ``vars`` < groups' ``vars`` < the host's ``vars``.

Host and group names follow resource names (letters, digits, ``_``, ``-``); ``all`` is every host
and ``local`` the machine tectum runs on, so neither can name a group or host. A become password is
never written in the inventory: it is read from the named environment variable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from tectum.addrs import valid_name
from tectum.diagnostics import Diagnostic, DiagnosticError, SourceLocation

INVENTORY_FILE = "inventory.toml"
#: the pseudo-host of resources declared outside any role: the machine tectum runs on
LOCAL = "local"
ALL = "all"

_SETTINGS: dict[str, type | tuple[type, ...]] = {
    "connector": str,
    "address": str,
    "port": int,
    "user": str,
    "key": str,
    "known_hosts": str,
    "become": bool,
    "become_password_env": str,
    "connect_timeout": (int, float),
    "command_timeout": (int, float),
    "connect_retries": int,
    "keepalive_interval": (int, float),
    "keepalive_count_max": int,
}
_DEFAULTS: dict[str, Any] = {
    "connector": "ssh",
    "port": 22,
    "user": "root",
    "key": None,
    "known_hosts": None,
    "become": False,
    "become_password_env": None,
    "connect_timeout": 10.0,
    "command_timeout": 600.0,
    "connect_retries": 3,
    "keepalive_interval": 10.0,
    "keepalive_count_max": 3,
}


class Connection(NamedTuple):
    """How to reach one host. ``key``/``known_hosts`` are absolute paths or None (asyncssh's
    defaults: the user's keys and agent, ``~/.ssh/known_hosts``)."""

    connector: str
    address: str
    port: int
    user: str
    key: str | None
    known_hosts: str | None
    become: bool
    become_password_env: str | None
    connect_timeout: float
    command_timeout: float
    connect_retries: int = 3
    keepalive_interval: float = 10.0
    keepalive_count_max: int = 3


class InventoryHost(NamedTuple):
    """One host: its ``groups`` (declaration order), merged ``vars`` and ``connection``."""

    name: str
    groups: tuple[str, ...]
    vars: dict[str, Any]
    connection: Connection


class Inventory:
    """Hosts by name (file order) and groups (name → host names). ``path`` is the file read."""

    __slots__ = ("path", "hosts", "groups")

    def __init__(self, path: str, hosts: dict[str, InventoryHost],
                 groups: dict[str, list[str]]) -> None:
        self.path = path
        self.hosts = hosts
        self.groups = groups

    def select(self, pattern: str) -> list[str]:
        """Host names matched by ``pattern``: comma-separated host names, group names, ``all``
        and ``local`` (Ansible's ``--limit`` patterns without globs), in inventory order.
        Raises :class:`DiagnosticError` naming what is unknown."""
        wanted: set[str] = set()
        unknown: list[str] = []
        for part in (p.strip() for p in pattern.split(",")):
            if not part:
                continue
            if part == ALL:
                wanted.update(self.hosts)
            elif part == LOCAL:
                wanted.add(LOCAL)
            elif part in self.groups:
                wanted.update(self.groups[part])
            elif part in self.hosts:
                wanted.add(part)
            else:
                unknown.append(part)
        if unknown:
            raise DiagnosticError(Diagnostic.error(
                "Unknown host or group",
                f"{', '.join(repr(u) for u in unknown)} names no host or group in {self.path}. "
                f"Groups: {', '.join(self.groups) or 'none'}; hosts: "
                f"{_few(self.hosts)}; or 'all', 'local'.",
                source=SourceLocation(self.path)))
        order = [LOCAL, *self.hosts]
        return [h for h in order if h in wanted]


def _provider_connectors() -> list[str]:
    """Providers that make host connectors (``connector = "podman"``: a container)."""
    from tectum.providers.registry import registry

    return sorted(n for n, cls in registry.providers().items() if cls.offers_connector)


def _few(names: Iterable[str], limit: int = 8) -> str:
    items = list(names)
    text = ", ".join(items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "") or "none"


def empty_inventory(root: str) -> Inventory:
    return Inventory(os.path.join(root, INVENTORY_FILE), {}, {})


def load_inventory(root: str, path: str | None = None) -> Inventory:
    """Read the inventory (``path``, else ``ROOT/inventory.toml``; a project without one has no
    hosts but ``local``). Raises :class:`DiagnosticError` "Invalid inventory" with the file and
    the offending key for every mistake — a file that is not TOML or not UTF-8 text (a binary
    file) included — or "Cannot read inventory" when the file cannot be read."""
    from tectum.config.project import _read_toml

    file = os.path.abspath(path) if path else os.path.join(root, INVENTORY_FILE)
    if path is None and not os.path.isfile(file):
        return empty_inventory(root)
    data = _read_toml(file, "inventory")
    problems: list[str] = []
    where = SourceLocation(file)

    def table(value: Any, name: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            problems.append(f"{name} must be a table")
            return {}
        return value

    for key in data:
        if key not in ("defaults", "hosts", "groups"):
            problems.append(f"unknown table [{key}]; an inventory has [defaults], "
                            "[hosts.NAME] and [groups.NAME]")
    defaults = table(data.get("defaults"), "[defaults]")
    hosts_t = table(data.get("hosts"), "[hosts]")
    groups_t = table(data.get("groups"), "[groups]")

    def settings(tbl: Mapping[str, Any], name: str, extra: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in tbl.items():
            if key in extra:
                continue
            want = _SETTINGS.get(key)
            if want is None:
                allowed = ", ".join([*extra, *_SETTINGS])
                problems.append(f"{name}: unknown setting {key!r} (settings: {allowed})")
                continue
            if isinstance(value, bool) and want is not bool or not isinstance(value, want):
                kind = want.__name__ if isinstance(want, type) else "number"
                problems.append(f"{name}: {key} must be a {kind}, not {value!r}")
                continue
            out[key] = value
        if "connector" in out and out["connector"] not in ("ssh", "local") \
                and out["connector"] not in _provider_connectors():
            others = "".join(f", \"{c}\"" for c in _provider_connectors())
            problems.append(f"{name}: connector must be \"ssh\", \"local\"{others}, not "
                            f"{out['connector']!r}")
        if "port" in out and not 0 < out["port"] < 65536:
            problems.append(f"{name}: port {out['port']} is not a TCP port")
        for key in ("connect_timeout", "command_timeout", "keepalive_interval"):
            if key in out and not 0 < out[key] < math.inf:  # (TOML has inf and nan)
                problems.append(f"{name}: {key} must be positive and finite (seconds), "
                                f"not {out[key]!r}")
        for key in ("connect_retries", "keepalive_count_max"):
            if key in out and not 0 <= out[key] <= 100:
                problems.append(f"{name}: {key} must be 0 to 100, not {out[key]!r}")
        return out

    def vars_of(tbl: Mapping[str, Any], name: str) -> dict[str, Any]:
        value = tbl.get("vars", {})
        if not isinstance(value, dict):
            problems.append(f"{name}: vars must be a table")
            return {}
        return value

    base = settings(defaults, "[defaults]", ("vars",))
    base_vars = vars_of(defaults, "[defaults]")
    group_members: dict[str, list[str]] = {}
    group_settings: dict[str, dict[str, Any]] = {}
    group_vars: dict[str, dict[str, Any]] = {}
    for gname, gtbl in groups_t.items():
        label = f"[groups.{gname}]"
        if not valid_name(gname) or gname in (ALL, LOCAL):
            problems.append(f"{label}: {gname!r} cannot name a group (letters, digits, '_', '-';"
                            " not 'all' or 'local')")
        gtbl = table(gtbl, label)
        members = gtbl.get("hosts", [])
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            problems.append(f"{label}: hosts must be a list of host names")
            members = []
        group_members[gname] = list(dict.fromkeys(members))
        group_settings[gname] = settings(gtbl, label, ("hosts", "vars"))
        group_vars[gname] = vars_of(gtbl, label)
    hosts: dict[str, InventoryHost] = {}
    for hname, htbl in hosts_t.items():
        label = f"[hosts.{hname}]"
        if not valid_name(hname) or hname in (ALL, LOCAL):
            problems.append(f"{label}: {hname!r} cannot name a host (letters, digits, '_', '-';"
                            " not 'all' or 'local')")
        if hname in group_members:
            problems.append(f"{label}: {hname!r} names a group too; a name means one thing")
        htbl = table(htbl, label)
        own = settings(htbl, label, ("vars", "groups"))
        extra_groups = htbl.get("groups", [])
        if not isinstance(extra_groups, list) or not all(isinstance(g, str)
                                                         for g in extra_groups):
            problems.append(f"{label}: groups must be a list of group names")
            extra_groups = []
        for g in extra_groups:
            if g not in group_members:
                problems.append(f"{label}: group {g!r} is not declared; add [groups.{g}]")
            elif hname not in group_members[g]:
                group_members[g].append(hname)
        member_of = tuple(g for g in group_members if hname in group_members[g])
        merged = dict(_DEFAULTS)
        merged.update(base)
        variables = dict(base_vars)
        for g in member_of:
            merged.update(group_settings[g])
            variables.update(group_vars[g])
        merged.update(own)
        variables.update(vars_of(htbl, label))
        env = merged["become_password_env"]
        if env is not None and not env.replace("_", "a").isalnum():
            problems.append(f"{label}: become_password_env {env!r} is not a variable name")
        hosts[hname] = InventoryHost(hname, member_of, variables, Connection(
            connector=merged["connector"],
            address=merged.get("address") or hname,
            port=merged["port"],
            user=merged["user"],
            key=_path(merged["key"], root),
            known_hosts=_path(merged["known_hosts"], root),
            become=merged["become"],
            become_password_env=env,
            connect_timeout=float(merged["connect_timeout"]),
            command_timeout=float(merged["command_timeout"]),
            connect_retries=int(merged["connect_retries"]),
            keepalive_interval=float(merged["keepalive_interval"]),
            keepalive_count_max=int(merged["keepalive_count_max"]),
        ))
    for gname, members in group_members.items():
        for m in members:
            if m not in hosts:
                problems.append(f"[groups.{gname}]: host {m!r} is not declared; add "
                                f"[hosts.{m}]")
    if problems:
        raise DiagnosticError([Diagnostic.error(
            "Invalid inventory", f"{file}: {p}.", source=where) for p in problems])
    return Inventory(file, hosts, {g: [m for m in ms if m in hosts]
                                   for g, ms in group_members.items()})


def _path(value: str | None, root: str) -> str | None:
    if value is None:
        return None
    path = os.path.expanduser(value)
    return path if os.path.isabs(path) else os.path.join(root, path)
