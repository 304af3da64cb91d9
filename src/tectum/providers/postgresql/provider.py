"""The built-in ``postgresql`` provider (skeleton: its types land with issue 14)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, ClassVar

from tectum.providers.base import Provider

if TYPE_CHECKING:
    from tectum.config.inventory import Inventory


class PostgresqlProvider(Provider):
    """PostgreSQL resource types."""

    name = "postgresql"
    resource_types: ClassVar[dict[str, str]] = {}

    def target(self, host: str | None) -> Any:
        raise NotImplementedError

    @classmethod
    def target_key(cls, host: str | None, inventory: Inventory) -> Hashable:
        return None
