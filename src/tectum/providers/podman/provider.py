"""The built-in ``podman`` provider: images, containers and volumes on this machine's podman.

Settings (``[providers.podman]`` in ``tectum.toml``, or ``TECTUM_PROVIDER_PODMAN_<SETTING>``):

``podman``          the podman binary (default ``podman`` on PATH)
``root``            podman's ``--root`` (image and container storage); default: podman's own
``runroot``         podman's ``--runroot``
``runtime``         the OCI runtime (``--runtime``), e.g. ``runc`` where crun cannot start
                    containers (hybrid cgroups)
``cgroup_manager``  ``cgroupfs`` or ``systemd`` (``--cgroup-manager``)
``storage_driver``  ``--storage-driver`` (e.g. ``overlay``, ``vfs``)
``tmpdir``          podman's ``--tmpdir`` (libpod's runtime state; set it with ``root`` to keep
                    a storage wholly apart)
``ulimits``         ulimits every container gets unless it sets its own, ``{nofile =
                    "1024:20000"}`` (where podman may not raise rlimits itself)
``concurrency``     podman operations at once (default 4)

Every resource of the provider, on whatever host it is declared, shares one target: the
:class:`~tectum.providers.podman.client.Podman` of this machine. The provider also makes
connectors into running containers (:meth:`PodmanProvider.connector`): an inventory host with
``connector = "podman"`` and ``address = "CONTAINER"``, and every host a role is applied to with
``apply_role(role, container)``, is configured through ``podman exec`` (Ansible's ``podman``
connection plugin).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from tectum.providers.base import Provider
from tectum.providers.podman.client import Podman, parse_ulimit
from tectum.schema import Attr, Schema

if TYPE_CHECKING:
    from tectum.config.inventory import Connection, Inventory
    from tectum.providers.host.connector import Connector


def _ulimits(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be a table of NAME = \"SOFT:HARD\""
    for name, limit in value.items():
        try:
            parse_ulimit(str(name), limit)
        except ValueError as exc:
            return str(exc)
    return None


def _concurrency(value: Any) -> str | None:
    return None if 1 <= value <= 64 else "must be 1 to 64"


def _cgroup_manager(value: Any) -> str | None:
    return None if value in ("cgroupfs", "systemd") else "must be \"cgroupfs\" or \"systemd\""


class PodmanProvider(Provider):
    """``podman_image``, ``podman_container``, ``podman_volume`` (see the module docstring)."""

    name = "podman"
    offers_connector = True
    resource_types = {
        "podman_image": "tectum.providers.podman.image:ImageType",
        "podman_container": "tectum.providers.podman.container:ContainerType",
        "podman_volume": "tectum.providers.podman.volume:VolumeType",
    }
    settings = Schema({
        "podman": Attr(str, default="podman", description="the podman binary"),
        "root": Attr(str, description="podman --root: where images and containers are stored"),
        "runroot": Attr(str, description="podman --runroot: podman's runtime state"),
        "runtime": Attr(str, description="the OCI runtime, e.g. runc"),
        "cgroup_manager": Attr(str, validate=_cgroup_manager,
                               description="cgroupfs or systemd"),
        "storage_driver": Attr(str, description="podman --storage-driver"),
        "tmpdir": Attr(str, description="podman --tmpdir: libpod's runtime state"),
        "ulimits": Attr(dict, default={}, validate=_ulimits,
                        description="ulimits of every container that sets none itself"),
        "concurrency": Attr(int, default=4, validate=_concurrency,
                            description="podman operations at once"),
    })

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._podman: Podman | None = None
        self._connectors: list[Any] = []

    def podman(self) -> Podman:
        """This machine's podman with the provider's settings (made on first use)."""
        with self._lock:
            if self._podman is None:
                c = self.config
                self._podman = Podman(
                    c.get("podman") or "podman", root=c.get("root"), runroot=c.get("runroot"),
                    runtime=c.get("runtime"), cgroup_manager=c.get("cgroup_manager"),
                    storage_driver=c.get("storage_driver"), tmpdir=c.get("tmpdir"),
                    ulimits=c.get("ulimits") or {})
                # (an image built records the project's git revision: tectum.revision)
                self._podman.project_root = self.context.root if self.context else None
            return self._podman

    def target(self, host: str | None) -> Podman:
        return self.podman()

    def made(self, host: str | None) -> Podman | None:
        return self._podman

    @classmethod
    def target_key(cls, host: str | None, inventory: Inventory) -> Hashable:
        """One target for every resource: the podman of this machine."""
        return None

    def concurrency(self, target: Any) -> int:
        return int(self.config.get("concurrency", 4) or 4)

    def connector(self, host: str, connection: Connection) -> Connector:
        """A connector into the running container ``connection.address`` (its name), for the
        host resources of ``host``: the SSH connector's scripts over ``podman exec``."""
        from tectum.providers.podman.connector import PodmanConnector

        conn = PodmanConnector(host, connection.address, self.podman(),
                               command_timeout=connection.command_timeout, fail_fast=True)
        with self._lock:
            self._connectors.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            made, self._connectors = self._connectors, []
            podman = self._podman
        for conn in made:
            conn.close()
        if podman is not None:
            podman.close()
