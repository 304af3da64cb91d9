"""The built-in ``random`` provider (Terraform's ``random``): values made by tectum itself.

Its objects live in state alone: there is nothing to connect to, so every resource, whatever
host it is declared on, shares one trivial target (:data:`NO_TARGET`).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from tectum.providers.base import Provider

if TYPE_CHECKING:
    from tectum.config.inventory import Inventory


class _NoTarget:
    """The target of a provider whose objects live in state alone."""

    def __repr__(self) -> str:
        return "NO_TARGET"


#: the one target of the random provider
NO_TARGET = _NoTarget()


class RandomProvider(Provider):
    """``random_password``."""

    name = "random"
    resource_types = {
        "random_password": "tectum.providers.random.password:PasswordType",
    }

    def target(self, host: str | None) -> Any:
        return NO_TARGET

    def made(self, host: str | None) -> Any | None:
        return NO_TARGET

    @classmethod
    def target_key(cls, host: str | None, inventory: Inventory) -> Hashable:
        """One target for every resource: nothing is read from a host."""
        return None
