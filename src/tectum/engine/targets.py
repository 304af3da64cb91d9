"""The configured providers of one session, and the targets the engine works on through them.

The engine never builds a connection itself: it asks :class:`Targets` for the target of a
resource (its type's provider, the host it is declared on) and for that target's concurrency
limit. Providers are configured on first use, from ``[providers.NAME]`` in ``tectum.toml`` and
``TECTUM_PROVIDER_<NAME>_<SETTING>`` (:func:`tectum.providers.base.provider_settings`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable, Mapping
from typing import Any

from tectum.config.inventory import Inventory
from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.providers.base import Provider, ProviderContext, ResourceType, provider_settings
from tectum.providers.registry import registry

#: where a resource lives: (provider name, the provider's target key)
Where = tuple[str, Hashable]


def where(rt: ResourceType[Any], host: str | None, inventory: Inventory) -> Where:
    """Which target a resource of type ``rt`` declared on ``host`` is on, without configuring
    anything (used to group reads and to match implicit dependencies)."""
    name = registry.provider_of(rt.name) or rt.name
    cls = registry.provider_class(name)
    key = cls.target_key(host, inventory) if cls is not None else host
    return name, key


class Places:
    """:func:`where` for one inventory, remembered per (type, host): asked once per resource
    and more, it is answered from a dict after the first time."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self._known: dict[tuple[str, str | None], Where] = {}

    def __call__(self, rt: ResourceType[Any], host: str | None) -> Where:
        found = self._known.get((rt.name, host))
        if found is None:
            found = self._known[(rt.name, host)] = where(rt, host, self.inventory)
        return found


class Targets:
    """``Targets(root, workspace, inventory, settings, options)``: ``settings`` are the
    ``[providers]`` tables of ``tectum.toml`` (read from ``source``), ``options`` session
    options a provider may read (``accept_new_host_keys``). Thread-safe; :meth:`close` closes
    every provider configured."""

    def __init__(self, root: str, workspace: str, inventory: Inventory,
                 settings: Mapping[str, Mapping[str, Any]] | None = None,
                 options: Mapping[str, Any] | None = None, source: str = "") -> None:
        self.inventory = inventory
        self._places = Places(inventory)
        self._context = ProviderContext(root, workspace, inventory, dict(options or {}),
                                        self.provider)
        self._settings = dict(settings or {})
        self._source = source or os.path.join(root, "tectum.toml")
        self._providers: dict[str, Provider] = {}
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, Hashable], threading.BoundedSemaphore] = {}
        unknown = sorted(n for n in self._settings if registry.provider_class(n) is None)
        if unknown:
            raise DiagnosticError(Diagnostic.error(
                "Unknown provider",
                f"[providers.{unknown[0]}] in {self._source}: no installed provider is named "
                f"{unknown[0]!r} (installed: {', '.join(sorted(registry.providers()))}). "
                "Install the package that provides it, or fix the name."))

    def provider(self, name: str) -> Provider:
        """The configured provider ``name`` (configured on first use). Raises
        :class:`DiagnosticError` for bad settings or a provider that is not installed."""
        with self._lock:
            found = self._providers.get(name)
            if found is not None:
                return found
            cls = registry.provider_class(name)
            if cls is None:
                raise DiagnosticError(Diagnostic.error(
                    "Unknown provider", f"No installed provider is named {name!r}."))
            inst = cls()
            inst.configure(provider_settings(name, cls, self._settings.get(name, {}),
                                             self._source), self._context)
            self._providers[name] = inst
            return inst

    def provider_of(self, rt: ResourceType[Any]) -> Provider:
        return self.provider(registry.provider_of(rt.name) or rt.name)

    def where(self, rt: ResourceType[Any], host: str | None) -> Where:
        return self._places(rt, host)

    def target(self, rt: ResourceType[Any], host: str | None) -> Any:
        """The target resources of ``rt`` on ``host`` are read and applied on."""
        return self.provider_of(rt).target(host)

    def slot(self, rt: ResourceType[Any], host: str | None) -> threading.BoundedSemaphore:
        """The semaphore that bounds operations at once on the target of ``rt`` on ``host``
        (the provider's :meth:`~tectum.providers.base.Provider.concurrency`)."""
        key = self.where(rt, host)
        with self._lock:
            found = self._slots.get(key)
        if found is None:
            limit = self.limit(rt, host)
            with self._lock:
                found = self._slots.setdefault(key, threading.BoundedSemaphore(limit))
        return found

    def limit(self, rt: ResourceType[Any], host: str | None) -> int:
        """Operations at most at once on the target of ``rt`` on ``host`` (at least 1)."""
        provider = self.provider_of(rt)
        return max(1, provider.concurrency(provider.target(host)))

    def down(self, host: str | None) -> tuple[str, str] | None:
        """``(kind, reason)`` when a target made for ``host`` was found unreachable."""
        with self._lock:
            providers = list(self._providers.values())
        for provider in providers:
            made = getattr(provider, "made", None)
            target = made(host) if callable(made) else None
            if target is not None:
                down = provider.down(target)
                if down is not None:
                    return down
        return None

    def facts_provider(self) -> Provider | None:
        """The provider that knows facts about hosts (one with
        :attr:`~tectum.providers.base.Provider.offers_facts`), configured; None if none is
        installed."""
        for name, cls in sorted(registry.providers().items()):
            if cls.offers_facts:
                return self.provider(name)
        return None

    def close(self) -> None:
        with self._lock:
            providers = list(self._providers.values())
            self._providers.clear()
        for provider in providers:
            provider.close()
