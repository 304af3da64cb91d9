"""The provider contract: a :class:`ResourceType` reads, diffs and applies one kind of object.

The shape follows Terraform's resource lifecycle (``docs/resource-instance-change-lifecycle.md``)
and Pulumi's dynamic provider (check / diff / create / read / update / delete), with one
difference that matters for speed: :meth:`ResourceType.read` takes *every* object of the type on a
connection at once, so a provider can read them in one pass (one ``dpkg-query`` for all packages,
one remote script per host).

Deciding and doing are separate methods the engine calls: :meth:`diff` decides (plan), and
:meth:`apply` does what the plan decided (apply). No method does both.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.schema import MISSING, Schema

if TYPE_CHECKING:
    from tectum.providers.host.connector import Connector, FactRequest


class ApplyError(Exception):
    """A resource's apply failed; the message is shown to the user as the failure reason."""


class ReadError(Exception):
    """Reading objects failed (refresh); the planner reports it as a diagnostic."""


class ResourceType(ABC):
    """One resource type (``file``, ``package``...). Instances are stateless singletons."""

    name: ClassVar[str]
    schema: ClassVar[Schema]
    #: attributes kept in state besides the settable ones (e.g. ``content_sha256``)
    stored_computed: ClassVar[tuple[str, ...]] = ()
    #: True when :meth:`apply_batch` groups several changes into one operation
    batches: ClassVar[bool] = False
    #: attributes a read cannot observe in the world (e.g. a command's text): never reported
    #: as drift; a no-op keeps their value from prior state (as Terraform keeps
    #: unobservable attributes)
    unobserved: ClassVar[frozenset[str]] = frozenset()
    #: True when applying may change other objects too (a package's install scripts chown a
    #: directory, a command writes files): after such a change the applier re-reads what the
    #: run changed on that host, so state records what the world holds when the run ends
    side_effects: ClassVar[bool] = False
    #: False for a type whose objects cannot be deleted (what a command did stays done): when
    #: such a resource goes, it is only forgotten (planned as ``forget``)
    deletable: ClassVar[bool] = True

    # -- configuration -------------------------------------------------------------------
    def check(self, attrs: dict[str, Any]) -> list[str]:
        """Cross-attribute validation of configured ``attrs``; returns problems (sentences)."""
        return []

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        """Normalise resolved desired attributes (fill defaults, canonical forms, render
        templates). Values may still hold tokens. Raises ``ValueError`` for a bad value."""
        out = dict(attrs)
        for key, attr in self.schema.attrs.items():
            if key not in out and attr.default is not MISSING and not attr.computed:
                out[key] = attr.default
        return out

    def identity(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(attrs.get(k) for k in self.schema.identity)

    # -- refresh -------------------------------------------------------------------------
    @abstractmethod
    def read(
        self, conn: Connector, objects: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any] | None]:
        """Read every object at once. ``objects`` are attribute dicts (desired or from state;
        identity attributes are always known). Returns, per object, its attributes as found in
        the world, or None when it does not exist. Keys starting with ``_`` are transient (used
        for display, never stored)."""

    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        """What :meth:`read` of ``objects`` will ask the connector for, so the planner can fetch
        a host's facts for every type in one round trip (DESIGN decision 3). The default asks
        for nothing ahead: reads then make their own round trips."""
        from tectum.providers.host.connector import FactRequest

        return FactRequest()

    # -- plan ----------------------------------------------------------------------------
    def managed(self, desired: dict[str, Any]) -> list[str]:
        """Attributes this configuration manages (compared with the world)."""
        return [k for k in self.schema.settable if desired.get(k) is not None]

    def diff(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[AttrChange]:
        """The attribute changes needed to turn ``observed`` into ``desired``."""
        out: list[AttrChange] = []
        for key in self.managed(desired):
            want = desired[key]
            have = observed.get(key)
            if want != have:
                attr = self.schema.attrs[key]
                out.append(AttrChange(key, have, want, attr.force_new, attr.sensitive))
        return out

    def plan(
        self,
        desired: dict[str, Any],
        observed: dict[str, Any] | None,
        prior: dict[str, Any] | None,
    ) -> tuple[Action, list[AttrChange]]:
        """Decide the action for one object: ``desired`` attributes (resolved, prepared; may
        hold tokens), ``observed`` as read (None: absent), ``prior`` the attributes recorded in
        state by the last apply (None: not in state). Returns the action and attribute changes.
        """
        if observed is None:
            return Action.CREATE, [
                AttrChange(k, None, desired[k], sensitive=self.schema.attrs[k].sensitive)
                for k in self.managed(desired) if k in self.schema.attrs
            ]
        changes = self.diff(desired, observed)
        if any(c.force_new for c in changes):
            return Action.REPLACE, changes
        return (Action.UPDATE if changes else Action.NOOP), changes

    def stored(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The part of ``attrs`` kept in state."""
        keep = self._keep
        return {k: v for k, v in attrs.items() if k in keep}

    @cached_property
    def _keep(self) -> frozenset[str]:
        return frozenset(self.schema.settable) | frozenset(self.stored_computed)

    def takes_over_as_created(self, found: dict[str, Any] | None,
                              desired: dict[str, Any]) -> bool:
        """Whether tectum counts as the creator of an object not yet in state that it found
        as ``found`` (stored attributes; None: absent) and makes ``desired``. The default: only
        an object that was absent. (A service that was stopped and that tectum starts counts
        as created: destroying it stops it again.) What tectum created is deleted when its
        resource goes; what it found is forgotten (:mod:`tectum.state.model`)."""
        return found is None

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        """What deleting the object recorded as ``prior`` does besides removing it, for the
        plan view (e.g. "stops the service"); None: nothing to say."""
        return None

    def describe(self, attrs: dict[str, Any]) -> str:
        """A short label for plan output (a path, a package name)."""
        ident = self.identity(attrs)
        return " ".join(str(v) for v in ident if v is not None)

    # -- apply ---------------------------------------------------------------------------
    @abstractmethod
    def apply(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
        """Carry out ``change`` (its ``after`` is fully resolved). Returns the attributes to keep
        in state, or None after a delete. Raises :class:`ApplyError` on failure."""

    def apply_batch(
        self, conn: Connector, changes: Sequence[ResourceChange]
    ) -> list[dict[str, Any] | None | Exception]:
        """Apply several changes together (only called when ``batches`` is True)."""
        out: list[dict[str, Any] | None | Exception] = []
        for change in changes:
            try:
                out.append(self.apply(conn, change))
            except Exception as exc:  # noqa: BLE001 - reported per change
                out.append(exc)
        return out


# Built-in resource types, imported on first use so start-up stays lean.
_BUILTIN: dict[str, str] = {
    "file": "tectum.providers.host.files:FileType",
    "directory": "tectum.providers.host.files:DirectoryType",
    "symlink": "tectum.providers.host.files:SymlinkType",
    "package": "tectum.providers.host.apt:PackageType",
    "user": "tectum.providers.host.users:UserType",
    "group": "tectum.providers.host.users:GroupType",
    "service": "tectum.providers.host.service:ServiceType",
    "command": "tectum.providers.host.command:CommandType",
    "random_password": "tectum.providers.random.password:PasswordType",
}


class Registry:
    """Maps resource type names to :class:`ResourceType` singletons.

    Built-in types are listed above; third-party providers register through the
    ``tectum.resource_types`` entry point group (name = type name, value = ``module:Class``).
    """

    def __init__(self) -> None:
        self._types: dict[str, ResourceType] = {}
        self._entry_points: dict[str, str] | None = None

    def names(self) -> list[str]:
        return sorted(set(_BUILTIN) | set(self._plugins()))

    def _plugins(self) -> dict[str, str]:
        if self._entry_points is None:
            from importlib.metadata import entry_points

            self._entry_points = {
                ep.name: ep.value for ep in entry_points(group="tectum.resource_types")
            }
        return self._entry_points

    def get(self, name: str) -> ResourceType | None:
        found = self._types.get(name)
        if found is not None:
            return found
        target = _BUILTIN.get(name) or self._plugins().get(name)
        if target is None:
            return None
        module, _, cls_name = target.partition(":")
        cls = getattr(importlib.import_module(module), cls_name)
        inst: ResourceType = cls()
        self._types[name] = inst
        return inst
