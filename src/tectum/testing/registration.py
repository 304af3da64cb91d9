"""Registering providers for a test without installing a package (no entry point).

The registry (:data:`tectum.providers.registry.registry`) is process-wide and loads the
``tectum.providers`` entry points once. :func:`registered` adds provider classes to it for
the duration of a ``with`` block; :func:`fresh_registry` makes it look for entry points again
(after a test put a plug-in on ``sys.path``) and restores what it held afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tectum.providers.base import Provider

__all__ = ["fresh_registry", "registered"]


@contextmanager
def registered(*providers: type[Provider]) -> Iterator[None]:
    """Add ``providers`` to :data:`tectum.providers.registry.registry` for the duration of
    the ``with`` block, as if an entry point declared them
    (:meth:`~tectum.providers.base.Registry.add`); removed again afterwards (with the resource
    type singletons they made). For tests only: the registry is process-wide. Raises
    :class:`~tectum.providers.base.ProviderError` for a provider whose name or type names are
    taken or break the naming rule (``PROVIDER_`` prefix)."""
    from tectum.providers.registry import registry

    added: list[type[Provider]] = []
    try:
        for cls in providers:
            if registry.add(cls):
                added.append(cls)
        yield
    finally:
        for cls in added:
            registry.remove(cls)


@contextmanager
def fresh_registry() -> Iterator[None]:
    """Inside the block the registry forgets what it loaded, so its next use looks for
    providers again (``tectum.providers`` entry points on the current ``sys.path``: a
    plug-in put on the path in a test is found); afterwards what it held before is back
    (:meth:`~tectum.providers.base.Registry.reloaded`)."""
    from tectum.providers.registry import registry

    with registry.reloaded():
        yield
