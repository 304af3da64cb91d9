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
from collections.abc import Sequence
from typing import Any

from tectum.providers.base import ReadItem, ResourceType
from tectum.providers.host.connector import Connector, FactRequest


class HostType(ResourceType[Connector]):
    """A resource type of the host provider: objects on one host, reached through a
    :class:`~tectum.providers.host.connector.Connector`."""

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

    def exists(self, observed: dict[str, Any]) -> bool:
        """An object found present (not ``ensure="absent"``) and of this type's kind (not a
        directory where a file is declared)."""
        return observed.get("ensure", "present") != "absent" and not observed.get("_kind")
