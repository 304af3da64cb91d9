"""What every resource type of the host provider shares: :class:`HostType`.

A host type works on a :class:`~tectum.providers.host.connector.Connector` (the local machine
or an SSH host). Its objects are read from plain attribute dicts (:meth:`HostType.read_objects`:
desired attributes, else the ones state recorded), and it says ahead of a read which facts the
read will ask for (:meth:`HostType.facts`), so the provider fetches every fact of a host in one
round trip before the reads (DESIGN decision 3; :meth:`HostProvider.begin_read
<tectum.providers.host.provider.HostProvider.begin_read>`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

from tectum.providers.base import ReadItem, ResourceType
from tectum.providers.host.connector import Connector, FactRequest
from tectum.values import is_known


class HostType(ResourceType[Connector]):
    """A resource type of the host provider: objects on one host, reached through a
    :class:`~tectum.providers.host.connector.Connector`."""

    #: attributes that name accounts the object needs on its host (``"user"`` or
    #: ``"group"``; a list value names several): a name that is no account there is
    #: reported at plan time (:meth:`missing`), read in the host's one round trip
    account_attrs: ClassVar[Mapping[str, str]] = {}

    def accounts_named(self, attrs: dict[str, Any] | None) -> list[tuple[str, str, str]]:
        """``(attribute, kind, name)`` for every account ``attrs`` names by name (numeric ids
        and unknown values left out)."""
        out: list[tuple[str, str, str]] = []
        if (attrs or {}).get("ensure") == "absent":
            return out
        for attr, kind in self.account_attrs.items():
            value = (attrs or {}).get(attr)
            for name in value if isinstance(value, list) else [value]:
                if isinstance(name, str) and name and is_known(name) and not name.isdigit():
                    out.append((attr, kind, name))
        return out

    def account_facts(self, items: Sequence[ReadItem]) -> FactRequest:
        """``getent passwd NAME...`` and ``getent group NAME...`` of the accounts the desired
        objects name (only those: a directory service that does not enumerate its users
        still answers for one), fetched with the host's other facts."""
        users: set[str] = set()
        groups: set[str] = set()
        for item in items:
            for _attr, kind, name in self.accounts_named(item.desired):
                (users if kind == "user" else groups).add(name)
        return FactRequest(commands=tuple(
            ("getent", database, *sorted(names))
            for database, names in (("passwd", users), ("group", groups)) if names))

    def missing(self, target: Connector, items: Sequence[ReadItem]
                ) -> list[list[tuple[Hashable | None, str]]]:
        """Accounts :attr:`account_attrs` name that the host does not have (``getent`` of
        those names, fetched with the host's other facts: :meth:`account_facts`)."""
        named = [self.accounts_named(i.desired) for i in items]
        if not any(named):
            return [[] for _ in items]
        found: dict[str, set[str]] = {"passwd": set(), "group": set()}
        for argv in self.account_facts(items).commands:
            result = target.run(argv, mutating=False)
            if result.returncode not in (0, 2):  # 2: some name not found
                return [[] for _ in items]  # (cannot tell: the apply will)
            found[argv[1]] = {line.split(":", 1)[0]
                              for line in result.text().splitlines() if ":" in line}
        out: list[list[tuple[Hashable | None, str]]] = []
        for names in named:
            need: list[tuple[Hashable | None, str]] = []
            for attr, kind, name in names:
                known = found["passwd"] if kind == "user" else found["group"]
                if name not in known:
                    where = ("this machine" if target.host in ("local", "") else
                             f"host {target.host}")
                    need.append(((kind, name), f"{attr} {name!r} is no {kind} on {where}."))
            out.append(need)
        return out

    def read(self, target: Connector, items: Sequence[ReadItem]
             ) -> list[dict[str, Any] | None]:
        """Read every item from the attributes that find it (desired, else prior)."""
        return self.read_objects(target, [i.attrs for i in items])

    @abstractmethod
    def read_objects(self, conn: Connector, objects: Sequence[dict[str, Any]]
                     ) -> list[dict[str, Any] | None]:
        """Read every object at once. ``objects`` are attribute dicts (desired or from state;
        identity attributes are always known). Returns, per object, its attributes as found in
        the world, or None when it does not exist. Keys starting with ``_`` are transient (used
        for display, never stored)."""

    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        """What :meth:`read_objects` of ``objects`` will ask the connector for, so a host's
        facts for every type can be fetched in one round trip (DESIGN decision 3). The default
        asks for nothing ahead: reads then make their own round trips."""
        return FactRequest()

    def plan_facts(self, items: Sequence[ReadItem]) -> FactRequest:
        """Facts :meth:`missing` will ask for, given what is desired and what state recorded
        (e.g. whether apt knows a package about to be installed), fetched in the same round
        trip as :meth:`facts`. Default: none."""
        return FactRequest()

    def exists(self, observed: dict[str, Any]) -> bool:
        """An object found present (not ``ensure="absent"``) and of this type's kind (not a
        directory where a file is declared)."""
        return observed.get("ensure", "present") != "absent" and not observed.get("_kind")
